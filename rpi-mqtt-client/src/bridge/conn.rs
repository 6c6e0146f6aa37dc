//! One vehicle process's connection: a `bridge-conn` thread reads its frames (the Hello first,
//! then states and answers into the entities' cells) and a `bridge-write` thread writes the
//! frames the `vehicles` thread queues for it (bounded). Bad input closes the connection with a
//! counted, rate-limited log line; the reader's exit frees the entities it claimed.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use log::{debug, info};

use super::frame::{
    BRIDGE_VERSION, Caps, Frame, Hello, HelloAck, HelloResult, MAX_PAYLOAD, Next, Reader,
};
use super::shared::{ANSWERS_CAP, ConnRef, Counters, Shared};

/// A process must say Hello this soon after connecting.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(2);
/// A write to a process that does not read gives up after this long.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// Frames queued for one process's writer.
pub const WRITE_QUEUE: usize = 256;

/// Why a connection ended.
enum End {
    /// The process closed it (or it was closed from this side: hung, not reading, shutdown).
    Closed,
    Bad(String),
}

/// Serves one connection until it ends; runs on its own `bridge-conn` thread.
pub fn serve(stream: UnixStream, id: u64, shared: Arc<Shared>) {
    let stream = Arc::new(stream);
    let end = match handshake(&stream, id, &shared) {
        Ok(Some((entities, rx, reader))) => {
            let writer = {
                let stream = stream.clone();
                std::thread::Builder::new()
                    .name("bridge-write".into())
                    .spawn({
                        let shared = shared.clone();
                        move || write_loop(&stream, &rx, &shared)
                    })
            };
            let end = match writer {
                Ok(w) => {
                    let end = read_loop(&stream, reader, id, &shared, &entities);
                    release(id, &shared);
                    let _ = stream.shutdown(Shutdown::Both);
                    let _ = w.join();
                    end
                }
                Err(e) => {
                    release(id, &shared);
                    End::Bad(format!("cannot start its writer thread: {e}"))
                }
            };
            info!("vehicle connection {id} (entities {entities:?}) ended");
            end
        }
        Ok(None) => End::Closed,
        Err(why) => {
            // Claims made before a late failure are given back.
            release(id, &shared);
            End::Bad(why)
        }
    };
    let _ = stream.shutdown(Shutdown::Both);
    match end {
        End::Closed => {}
        End::Bad(why) => shared.warn(format_args!("connection {id} closed: {why}")),
    }
    shared.live.fetch_sub(1, Ordering::Relaxed);
}

/// Frees the entities claimed by connection `id` (the `vehicles` thread notices at its next
/// step and fails what the process held) and stops its writer.
fn release(id: u64, shared: &Shared) {
    for cell in shared.cells().iter_mut() {
        if cell.conn.as_ref().is_some_and(|c| c.id == id) {
            if let Some(c) = cell.conn.take() {
                let _ = c.tx.try_send(Vec::new());
            }
        }
    }
    shared.wake();
}

fn refuse(stream: &UnixStream, shared: &Shared, result: HelloResult, entity_id: u32) {
    Counters::bump(&shared.counters.refused);
    let ack = Frame::HelloAck(HelloAck {
        version: BRIDGE_VERSION,
        result,
        entity_id,
    });
    let _ = (&*stream).write_all(&ack.encode());
}

/// A connection past its Hello: its entities, its writer's queue and the bytes read after
/// the Hello (a vehicle may send its first states without waiting for the HelloAck).
type Claimed = (Vec<u32>, Receiver<Vec<u8>>, Reader);

/// Reads the Hello and claims its entities. `Ok(None)`: refused (answered) or closed early.
fn handshake(
    stream: &Arc<UnixStream>,
    id: u64,
    shared: &Shared,
) -> Result<Option<Claimed>, String> {
    stream
        .set_read_timeout(Some(HELLO_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(WRITE_TIMEOUT)))
        .map_err(|e| format!("cannot set its timeouts: {e}"))?;
    let mut reader = Reader::default();
    let payload = match read_frame(stream, &mut reader, shared) {
        Ok(Some(p)) => p,
        Ok(None) => return Ok(None),
        Err(why) => return Err(why),
    };
    let hello = match Frame::decode(&payload) {
        Ok(Frame::Hello(h)) => h,
        Ok(other) => {
            Counters::bump(&shared.counters.malformed);
            refuse(stream, shared, HelloResult::BadHello, 0);
            return Err(format!("the first frame is not a Hello: {other:?}"));
        }
        Err(e) => {
            Counters::bump(&shared.counters.malformed);
            refuse(stream, shared, HelloResult::BadHello, 0);
            return Err(format!("the first frame is not a Hello: {e}"));
        }
    };
    if let Some(why) = bad_hello(&hello) {
        Counters::bump(&shared.counters.malformed);
        refuse(stream, shared, HelloResult::BadHello, 0);
        return Err(format!("bad Hello: {why}"));
    }
    let (tx, rx) = crossbeam_channel::bounded(WRITE_QUEUE);
    let ok = Frame::HelloAck(HelloAck {
        version: BRIDGE_VERSION,
        result: HelloResult::Ok,
        entity_id: 0,
    });
    // Queued before any entity is claimed, so it is the first frame the process reads.
    let _ = tx.try_send(ok.encode());
    let conn = ConnRef {
        id,
        caps: hello.caps,
        tx,
        stream: stream.clone(),
    };
    {
        let mut cells = shared.cells();
        for e in &hello.entities {
            match cells.iter().find(|c| c.entity_id == *e) {
                None => {
                    drop(cells);
                    refuse(stream, shared, HelloResult::UnknownEntity, *e);
                    return Err(format!(
                        "it claims entity {e}, which this Pi does not drive"
                    ));
                }
                Some(c) if c.conn.is_some() => {
                    let other = c.conn.as_ref().map_or(0, |c| c.id);
                    drop(cells);
                    refuse(stream, shared, HelloResult::Claimed, *e);
                    return Err(format!(
                        "it claims entity {e}, which connection {other} drives already"
                    ));
                }
                Some(_) => {}
            }
        }
        let now = Instant::now();
        for cell in cells.iter_mut() {
            if hello.entities.contains(&cell.entity_id) {
                cell.conn = Some(conn.clone());
                cell.last_state = now;
                cell.state = None;
                cell.answers.clear();
            }
        }
    }
    // The `vehicles` thread takes the entities over at once (it is not woken by reports).
    shared.wake();
    stream
        .set_read_timeout(None)
        .map_err(|e| format!("cannot clear its read timeout: {e}"))?;
    info!(
        "vehicle connection {id} drives entities {:?} (pause/resume: {}, cancel: {})",
        hello.entities,
        hello.caps.contains(Caps::PAUSE),
        hello.caps.contains(Caps::CANCEL)
    );
    Ok(Some((hello.entities, rx, reader)))
}

fn bad_hello(h: &Hello) -> Option<String> {
    if h.version != BRIDGE_VERSION {
        return Some(format!(
            "bridge version {} (this daemon speaks {BRIDGE_VERSION})",
            h.version
        ));
    }
    if h.caps.0 & !Caps::ALL.0 != 0 {
        return Some(format!("unknown capability bits {:#04x}", h.caps.0));
    }
    if h.entities.is_empty() {
        return Some("no entity".into());
    }
    for (i, e) in h.entities.iter().enumerate() {
        if h.entities[..i].contains(e) {
            return Some(format!("entity {e} listed twice"));
        }
    }
    None
}

/// The next frame's payload; `Ok(None)` when the stream ended cleanly between frames.
fn read_frame(
    mut stream: &UnixStream,
    reader: &mut Reader,
    shared: &Shared,
) -> Result<Option<Vec<u8>>, String> {
    let mut buf = [0u8; 512];
    loop {
        match reader.next_frame() {
            Next::Frame(p) => return Ok(Some(p)),
            Next::BadLength(n) => {
                let c = if n == 0 {
                    &shared.counters.malformed
                } else {
                    &shared.counters.oversized
                };
                Counters::bump(c);
                return Err(format!(
                    "a frame of {n} bytes (1 to {MAX_PAYLOAD} are allowed)"
                ));
            }
            Next::Incomplete => {}
        }
        // Every whole frame is taken before the next read: at most one partial frame and one
        // read are held.
        match stream.read(&mut buf) {
            Ok(0) => {
                return if reader.held() == 0 {
                    Ok(None)
                } else {
                    Err("it closed the connection in the middle of a frame".into())
                };
            }
            Ok(n) => reader.push(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!("no Hello within {} s", HELLO_TIMEOUT.as_secs()));
            }
            Err(_) => return Ok(None),
        }
    }
}

fn read_loop(
    stream: &UnixStream,
    mut reader: Reader,
    id: u64,
    shared: &Shared,
    entities: &[u32],
) -> End {
    loop {
        let payload = match read_frame(stream, &mut reader, shared) {
            Ok(Some(p)) => p,
            Ok(None) => {
                // Not when the daemon closed it (hung, not reading): those are counted there.
                let ours = shared
                    .cells()
                    .iter()
                    .any(|c| c.conn.as_ref().is_some_and(|c| c.id == id));
                if ours {
                    Counters::bump(&shared.counters.disconnected);
                }
                return End::Closed;
            }
            Err(why) => return End::Bad(why),
        };
        let frame = match Frame::decode(&payload) {
            Ok(f) => f,
            Err(e) => {
                Counters::bump(&shared.counters.malformed);
                return End::Bad(format!("malformed frame: {e}"));
            }
        };
        let (entity_id, state, answer) = match frame {
            Frame::State(s) => (s.entity_id, Some(s.motion()), None),
            Frame::Ack(a) => (a.entity_id, None, Some((a.segment_id, a.outcome))),
            other => {
                Counters::bump(&shared.counters.malformed);
                return End::Bad(format!("a vehicle may not send {other:?}"));
            }
        };
        if !entities.contains(&entity_id) {
            Counters::bump(&shared.counters.malformed);
            return End::Bad(format!(
                "a frame for entity {entity_id}, which it did not claim"
            ));
        }
        let mut cells = shared.cells();
        let Some(cell) = cells
            .iter_mut()
            .find(|c| c.entity_id == entity_id && c.conn.as_ref().is_some_and(|c| c.id == id))
        else {
            // Closed from the vehicles thread (hung, not reading) meanwhile.
            return End::Closed;
        };
        if let Some(m) = state {
            cell.state = Some(m);
            cell.last_state = Instant::now();
        }
        if let Some(a) = answer {
            if cell.answers.len() >= ANSWERS_CAP {
                drop(cells);
                Counters::bump(&shared.counters.malformed);
                return End::Bad(format!(
                    "more than {ANSWERS_CAP} segment answers for entity {entity_id} at once"
                ));
            }
            cell.answers.push_back(a);
            drop(cells);
            shared.wake();
        }
    }
}

fn write_loop(stream: &UnixStream, rx: &Receiver<Vec<u8>>, shared: &Shared) {
    let mut out = stream;
    while let Ok(frame) = rx.recv() {
        if frame.is_empty() {
            break;
        }
        if let Err(e) = out.write_all(&frame) {
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                Counters::bump(&shared.counters.not_reading);
                shared.warn(format_args!(
                    "a vehicle connection does not read: a write waited {} s",
                    WRITE_TIMEOUT.as_secs()
                ));
            } else {
                debug!("vehicle connection: write failed: {e}");
            }
            let _ = stream.shutdown(Shutdown::Both);
            break;
        }
    }
}
