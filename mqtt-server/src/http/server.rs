//! The listener: an `http-accept` thread takes connections and gives each its own
//! `http-conn` thread, at most [`MAX_CONNECTIONS`] at once (more are answered 503 and closed).
//! Every socket has read and write timeouts, so a slow or silent client holds its thread for
//! a bounded time; one request per connection.

use std::io::Read;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use log::{debug, warn};

use super::HttpShared;
use super::request::{ReadError, read_request};
use super::response::Response;
use super::router::{Route, route};

/// Connections served at once (event streams included).
pub const MAX_CONNECTIONS: usize = 64;
/// Reading a request (and each read of it) may take this long.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Each write may block this long (a reader that does not read is cut off).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// After a 413, the rest of the body is read and discarded for at most this long (and this
/// much), so the client sees the answer instead of a reset.
const DRAIN_TIME: Duration = Duration::from_secs(2);
const DRAIN_BYTES: u64 = 2 << 20;
/// After a failed accept (out of file descriptors, ...), a pause before the next.
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

/// Decrements the connection count when a connection thread ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The `http-accept` thread, until `stop` disconnects (then a connection wakes it: see
/// [`super::Http::stop`]).
pub fn accept_loop(listener: TcpListener, ctx: Arc<HttpShared>, stop: Receiver<()>) {
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = listener.accept();
        if !matches!(stop.try_recv(), Err(TryRecvError::Empty)) {
            break;
        }
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                debug!("http: accept failed: {e}");
                std::thread::sleep(ACCEPT_PAUSE);
                continue;
            }
        };
        let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
        let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
        let _ = stream.set_nodelay(true);
        if active.fetch_add(1, Ordering::Relaxed) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::Relaxed);
            refuse(stream, &ctx);
            continue;
        }
        let slot = Slot(active.clone());
        let ctx = ctx.clone();
        let spawned = std::thread::Builder::new()
            .name("http-conn".into())
            .spawn(move || {
                let _slot = slot;
                serve(stream, &ctx);
            });
        if let Err(e) = spawned {
            warn!("http: cannot start a connection thread: {e}");
        }
    }
}

/// Too many connections: a 503, written with a short timeout, and closed.
fn refuse(mut stream: TcpStream, ctx: &HttpShared) {
    let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
    let _ = Response::error(503, "too many connections", None).write_to(&mut stream);
    ctx.requests.count(503);
}

/// One connection: one request, one answer (or an event stream).
fn serve(mut stream: TcpStream, ctx: &HttpShared) {
    let req = match read_request(&mut stream) {
        Ok(r) => r,
        Err(ReadError::Gone) => return,
        Err(ReadError::HeadTooLarge) => {
            return answer(
                &mut stream,
                ctx,
                &Response::error(431, "request head larger than 8 KiB", None),
            );
        }
        Err(ReadError::BodyTooLarge) => {
            answer(
                &mut stream,
                ctx,
                &Response::error(413, "request body larger than 4 KiB", None),
            );
            return drain(stream);
        }
        Err(ReadError::Bad(why)) => {
            return answer(&mut stream, ctx, &Response::error(400, why, None));
        }
    };
    match route(&req, ctx) {
        Route::Respond(r) => {
            let r = if req.method == "HEAD" {
                Response {
                    body: Vec::new(),
                    ..r
                }
            } else {
                r
            };
            answer(&mut stream, ctx, &r);
        }
        Route::Events => {
            let code = super::sse::serve(&mut stream, &ctx.events, &ctx.subscribe);
            ctx.requests.count(code);
        }
    }
}

fn answer(stream: &mut TcpStream, ctx: &HttpShared, r: &Response) {
    ctx.requests.count(r.status);
    let _ = r.write_to(stream);
}

/// Reads and discards what the client still sends, within bounds, then closes.
fn drain(mut stream: TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + DRAIN_TIME;
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut sink = [0u8; 8192];
    let mut left = DRAIN_BYTES;
    while Instant::now() < deadline && left > 0 {
        match stream.read(&mut sink) {
            Ok(0) => break,
            Ok(n) => left = left.saturating_sub(n as u64),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
    }
}
