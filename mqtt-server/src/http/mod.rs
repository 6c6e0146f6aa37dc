//! The operator interface (docs/operator.md): a small std-only HTTP/1.1 server with the web
//! map, the JSON API, the event stream and the metrics. Synchronous and thread-based like the
//! rest of the server: `http-accept` ([`server`]) hands each connection to its own thread,
//! `http-events` ([`sse`]) fans the registry's feed out to the event streams. Handlers read
//! and act through the [`FleetHandle`] only; the registry stays the sole owner of the state.
//!
//! Files: [`request`] (reading a bounded request), [`response`], [`router`], [`api`] (the JSON
//! handlers), [`sse`], [`metrics`], [`auth`] (the bearer token), [`server`] (the listener).

pub mod api;
pub mod auth;
pub mod metrics;
pub mod request;
pub mod response;
pub mod router;
pub mod server;
pub mod sse;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::{Receiver, Sender, bounded};
use mqtt_link::Worker;

use crate::feed::{FeedEvent, FeedShared};
use crate::server::FleetHandle;
use sse::{Encoded, EventsShared};

/// The status codes counted one by one; any other is counted as `other` (never sent today).
const CODES: [u16; 12] = [200, 202, 400, 401, 404, 405, 409, 413, 422, 431, 500, 503];

/// HTTP requests answered, by status code.
#[derive(Debug, Default)]
pub struct RequestCounters {
    by_code: [AtomicU64; CODES.len()],
}

impl RequestCounters {
    pub fn count(&self, status: u16) {
        if let Some(i) = CODES.iter().position(|c| *c == status) {
            self.by_code[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// (code, count) for every counted code.
    pub fn by_code(&self) -> Vec<(u16, u64)> {
        CODES
            .iter()
            .zip(&self.by_code)
            .map(|(c, n)| (*c, n.load(Ordering::Relaxed)))
            .collect()
    }
}

/// What every connection thread shares.
pub struct HttpShared {
    pub handle: FleetHandle,
    /// The bearer token every request must carry, if one is configured.
    pub token: Option<String>,
    pub requests: RequestCounters,
    pub events: Arc<EventsShared>,
    pub feed: Arc<FeedShared>,
    /// Where a new event stream registers its queue with the hub.
    pub subscribe: Sender<Sender<Encoded>>,
}

/// The running interface: its two threads.
pub struct Http {
    pub addr: SocketAddr,
    accept: Worker<()>,
    hub: Worker<()>,
}

impl Http {
    /// Binds `addr` and starts the threads.
    pub fn start(
        addr: SocketAddr,
        token: Option<String>,
        handle: FleetHandle,
        feed: (Receiver<Vec<FeedEvent>>, Arc<FeedShared>),
        exits: &Sender<&'static str>,
    ) -> std::io::Result<Http> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let (subscribe, subscriptions) = bounded(sse::MAX_STREAMS);
        let events = Arc::new(EventsShared::default());
        let (feed_rx, feed_shared) = feed;
        let hub = {
            let events = events.clone();
            let feed_shared = feed_shared.clone();
            Worker::spawn("http-events", exits, move |stop| {
                sse::run_hub(feed_rx, subscriptions, events, feed_shared, stop)
            })?
        };
        let ctx = Arc::new(HttpShared {
            handle,
            token,
            requests: RequestCounters::default(),
            events,
            feed: feed_shared,
            subscribe,
        });
        let accept = Worker::spawn("http-accept", exits, move |stop| {
            server::accept_loop(listener, ctx, stop)
        })?;
        Ok(Http { addr, accept, hub })
    }

    /// Stops accepting and ends the event streams (their threads end on their own, within
    /// the write timeout).
    pub fn stop(self) {
        let Http {
            addr,
            mut accept,
            hub,
        } = self;
        accept.stop();
        // Wake the blocking accept: it sees the stop after this connection.
        let mut wake = addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        match TcpStream::connect_timeout(&wake, std::time::Duration::from_secs(1)) {
            Ok(_) => {
                accept.stop_join();
            }
            Err(e) => {
                // Never hang the shutdown on it: the thread ends with the process.
                log::warn!("http: cannot wake the accept thread ({e}); leaving it");
                std::mem::forget(accept);
            }
        }
        hub.stop_join();
    }
}
