//! `GET /api/events`: Server-Sent Events. One `http-events` thread (the hub) takes the
//! registry's [`FeedEvent`]s, limits `state` events to one per [`STATE_INTERVAL`] per entity,
//! encodes each event once into a pending chunk, and every [`FLUSH_INTERVAL`] (or when the
//! chunk reaches [`CHUNK_BYTES`]) offers the chunk to every stream's bounded queue with
//! `try_send`: a stream whose queue is full is dropped (its connection closes), never buffered
//! without bound. Each stream is written by its own connection thread, one `write` per chunk,
//! with the socket's write timeout: a reader that stops reading is cut off too.
//!
//! Why chunks: at 1000 Pis x 4 entities the state limit still lets 20,000 events a second
//! through. Handed over one by one, every stream thread woke and wrote once per event (10
//! viewers: 200,000 wake-ups and writes a second, +38 points of a core at only 100 Pis);
//! in chunks it is about 20 per stream a second whatever the rate, for at most 50 ms of
//! added delay (the map draws a few times a second).

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded, select, tick};
use serde::Serialize;

use super::response::Response;
use crate::feed::{FeedEvent, FeedShared};

/// Chunks waiting in one stream's queue; a reader this far behind is dropped. At most
/// `STREAM_QUEUE` x ([`CHUNK_BYTES`] + one event) bytes per stream (about 4 MiB).
pub const STREAM_QUEUE: usize = 64;
/// Pending events are handed to the streams at least this often.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// ... or as soon as this many bytes are pending.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Event streams open at once.
pub const MAX_STREAMS: usize = 16;
/// At most one `state` event per entity per this interval (5 per second).
pub const STATE_INTERVAL: Duration = Duration::from_millis(200);
/// A comment line after this long without an event, so proxies and readers see the stream alive.
pub const KEEPALIVE: Duration = Duration::from_secs(15);
/// Entities remembered for the state limit (entries older than the interval are pruned).
const MAX_LIMITED: usize = 100_000;

/// Encoded events (one or more, whole), shared by every stream.
pub type Encoded = Arc<str>;

/// Figures about the streams, for the metrics.
#[derive(Debug, Default)]
pub struct EventsShared {
    pub open: AtomicUsize,
    /// Streams cut off because their reader fell behind (queue full or a write timed out).
    pub dropped_streams: AtomicU64,
}

/// Appends one event to `out`; nothing when `data` does not serialise.
fn encode(out: &mut String, name: &str, data: &impl Serialize) {
    let Ok(json) = serde_json::to_string(data) else {
        return;
    };
    out.push_str("event: ");
    out.push_str(name);
    out.push_str("\ndata: ");
    out.push_str(&json);
    out.push_str("\n\n");
}

/// The hub's state.
struct Hub {
    streams: Vec<Sender<Encoded>>,
    /// Encoded events not yet handed to the streams.
    pending: String,
    /// When each entity's last `state` event went out.
    last_state: HashMap<(String, u32), Instant>,
    shared: Arc<EventsShared>,
    feed: Arc<FeedShared>,
}

impl Hub {
    /// Encodes `e` into the pending chunk (a `state` only if its entity is due); hands the
    /// chunk over when it is full.
    fn publish(&mut self, now: Instant, e: FeedEvent) {
        if self.streams.is_empty() {
            return;
        }
        match e {
            FeedEvent::Presence(p) => encode(&mut self.pending, "presence", &p),
            FeedEvent::Segment(s) => encode(&mut self.pending, "segment", &s),
            FeedEvent::Action(a) => encode(&mut self.pending, "action", &a),
            FeedEvent::State(mut s) => {
                // The id moves into the key and back: a skipped state costs no allocation.
                let mut key = (std::mem::take(&mut s.pi), s.entity);
                match self.last_state.get(&key) {
                    Some(t) if now.saturating_duration_since(*t) < STATE_INTERVAL => return,
                    _ => {}
                }
                if self.last_state.len() < MAX_LIMITED || self.last_state.contains_key(&key) {
                    s.pi = key.0.clone();
                    self.last_state.insert(key, now);
                } else {
                    s.pi = std::mem::take(&mut key.0);
                }
                encode(&mut self.pending, "state", &s)
            }
        }
        if self.pending.len() >= CHUNK_BYTES {
            self.flush();
        }
    }

    /// Hands the pending chunk to every stream; a stream whose queue is full is dropped.
    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let chunk: Encoded = std::mem::take(&mut self.pending).into();
        let shared = &self.shared;
        self.streams.retain(|tx| match tx.try_send(chunk.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                shared.dropped_streams.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        });
        self.listened();
    }

    fn listened(&self) {
        self.feed
            .listened
            .store(!self.streams.is_empty(), Ordering::Relaxed);
    }

    fn prune(&mut self, now: Instant) {
        self.last_state
            .retain(|_, t| now.saturating_duration_since(*t) < STATE_INTERVAL);
        self.listened();
    }
}

/// The `http-events` thread, until `stop` disconnects.
pub fn run_hub(
    feed: Receiver<Vec<FeedEvent>>,
    subscribe: Receiver<Sender<Encoded>>,
    shared: Arc<EventsShared>,
    feed_shared: Arc<FeedShared>,
    stop: Receiver<()>,
) {
    let mut hub = Hub {
        streams: Vec::new(),
        pending: String::new(),
        last_state: HashMap::new(),
        shared,
        feed: feed_shared,
    };
    let pruner = tick(Duration::from_secs(1));
    let flusher = tick(FLUSH_INTERVAL);
    loop {
        select! {
            recv(stop) -> _ => break,
            recv(flusher) -> _ => hub.flush(),
            recv(feed) -> batch => match batch {
                Ok(batch) => {
                    let now = Instant::now();
                    for e in batch {
                        hub.publish(now, e);
                    }
                }
                Err(_) => break,
            },
            recv(subscribe) -> s => match s {
                Ok(tx) => {
                    hub.streams.push(tx);
                    hub.listened();
                }
                Err(_) => break,
            },
            recv(pruner) -> _ => hub.prune(Instant::now()),
        }
    }
    hub.feed.listened.store(false, Ordering::Relaxed);
}

/// Decrements the open-stream count when a stream ends.
struct Slot<'a>(&'a EventsShared);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one event stream on `stream` until the reader goes, falls behind, or the hub stops.
pub fn serve(
    stream: &mut TcpStream,
    shared: &EventsShared,
    subscribe: &Sender<Sender<Encoded>>,
) -> u16 {
    if shared.open.fetch_add(1, Ordering::Relaxed) >= MAX_STREAMS {
        shared.open.fetch_sub(1, Ordering::Relaxed);
        let _ = Response::error(503, "too many event streams open", None).write_to(stream);
        return 503;
    }
    let _slot = Slot(shared);
    let (tx, rx) = bounded(STREAM_QUEUE);
    if subscribe.try_send(tx).is_err() {
        let _ = Response::error(503, "event streams are not available", None).write_to(stream);
        return 503;
    }
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n\
                Connection: close\r\nX-Content-Type-Options: nosniff\r\n\r\n: connected\n\n";
    if stream.write_all(head.as_bytes()).is_err() {
        return 200;
    }
    let mut buf = String::new();
    loop {
        buf.clear();
        match rx.recv_timeout(KEEPALIVE) {
            Ok(chunk) => buf.push_str(&chunk),
            Err(RecvTimeoutError::Timeout) => buf.push_str(": keep-alive\n\n"),
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if let Err(e) = stream.write_all(buf.as_bytes()) {
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                shared.dropped_streams.fetch_add(1, Ordering::Relaxed);
            }
            break;
        }
    }
    200
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::{EntityState, Presence};

    fn hub() -> Hub {
        Hub {
            streams: Vec::new(),
            pending: String::new(),
            last_state: HashMap::new(),
            shared: Arc::default(),
            feed: Arc::default(),
        }
    }

    fn state(entity: u32) -> FeedEvent {
        FeedEvent::State(EntityState {
            pi: "a".into(),
            entity,
            motion: common::Motion::default(),
            flags: crate::snapshot::FlagsView::default(),
        })
    }

    #[test]
    fn states_are_limited_per_entity_and_full_streams_dropped() {
        let mut h = hub();
        let (tx, rx) = bounded(3);
        h.streams.push(tx);
        let t0 = Instant::now();
        h.publish(t0, state(1));
        h.publish(t0 + Duration::from_millis(100), state(1));
        h.publish(t0 + Duration::from_millis(100), state(2));
        assert!(rx.is_empty(), "nothing is handed over before a flush");
        h.flush();
        let got: Vec<Encoded> = rx.try_iter().collect();
        assert_eq!(got.len(), 1, "one chunk per flush");
        assert_eq!(
            got[0].matches("event: state\n").count(),
            2,
            "the second state of entity 1 within 200 ms is skipped: {}",
            got[0]
        );
        assert!(
            got[0].starts_with("event: state\ndata: {\"pi\":\"a\",\"entity\":1,\"x\":0"),
            "{}",
            got[0]
        );
        assert!(got[0].contains("\"entity\":2"), "{}", got[0]);
        h.flush();
        assert!(rx.is_empty(), "an empty chunk is not sent");
        h.publish(
            t0,
            FeedEvent::Presence(Presence {
                pi: "a".into(),
                online: true,
                reason: None,
                protocol: 2,
                suspected_duplicate: false,
            }),
        );
        h.flush();
        for i in 0..3 {
            h.publish(t0 + Duration::from_secs(1 + i), state(1));
            h.flush();
        }
        assert!(h.streams.is_empty(), "a full queue drops the stream");
        assert_eq!(h.shared.dropped_streams.load(Ordering::Relaxed), 1);
        assert!(!h.feed.listened.load(Ordering::Relaxed));
        drop(rx);
    }

    #[test]
    fn a_full_chunk_is_handed_over_before_the_flush_interval() {
        let mut h = hub();
        let (tx, rx) = bounded(STREAM_QUEUE);
        h.streams.push(tx);
        let t0 = Instant::now();
        let mut entity = 0;
        while rx.is_empty() {
            entity += 1;
            assert!(entity < 10_000, "a chunk was handed over by size");
            h.publish(t0, state(entity));
        }
        let chunk = rx.try_recv().unwrap();
        assert!(chunk.len() >= CHUNK_BYTES, "{}", chunk.len());
        assert!(chunk.ends_with("\n\n"), "whole events only");
        assert_eq!(chunk.matches("event: state\n").count(), entity as usize);
    }
}
