//! What the bridge's connection threads and the `vehicles` thread share: one cell per entity
//! (the connection that drives it, its latest state, the answers not yet taken), the counters
//! of bad input, and their rate-limited log.

use std::collections::VecDeque;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::ratelimit::RateLimiter;
use common::{AckOutcome, Motion};
use crossbeam_channel::{Receiver, Sender};
use log::warn;
use mqtt_link::Held;

use super::frame::Caps;

/// Answers held per entity until the `vehicles` thread takes them (at its next step). An
/// honest vehicle gives at most two per segment it holds; more means a broken one.
pub const ANSWERS_CAP: usize = 64;

/// One connected vehicle process, as an entity's cell names it.
#[derive(Debug, Clone)]
pub struct ConnRef {
    /// Unique per connection since the daemon started (a reconnect is a new connection).
    pub id: u64,
    pub caps: Caps,
    /// Its writer's bounded queue of whole frames; an empty frame stops the writer.
    pub tx: Sender<Vec<u8>>,
    /// For closing it from the `vehicles` thread (hung, not reading).
    pub stream: Arc<UnixStream>,
}

impl ConnRef {
    pub fn close(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// One entity as the bridge sees it.
#[derive(Debug)]
pub struct Cell {
    pub entity_id: u32,
    /// The process driving it, if any.
    pub conn: Option<ConnRef>,
    /// When its latest state arrived (or when the process claimed it).
    pub last_state: Instant,
    /// The latest state not yet taken by the `vehicles` thread (only the latest is kept).
    pub state: Option<Motion>,
    /// Segment answers not yet taken, oldest first, at most [`ANSWERS_CAP`].
    pub answers: VecDeque<(u32, AckOutcome)>,
}

/// Counters of what went wrong on the bridge (logged, rate-limited, and at shutdown).
#[derive(Debug, Default)]
pub struct Counters {
    pub connections: AtomicU64,
    pub refused: AtomicU64,
    pub malformed: AtomicU64,
    pub oversized: AtomicU64,
    pub not_reading: AtomicU64,
    pub hung: AtomicU64,
    pub disconnected: AtomicU64,
}

impl Counters {
    pub fn bump(counter: &AtomicU64) -> u64 {
        counter.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn summary(&self) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "{} connections, {} refused, {} malformed, {} oversized, {} not reading, {} hung, \
             {} closed by the vehicle",
            g(&self.connections),
            g(&self.refused),
            g(&self.malformed),
            g(&self.oversized),
            g(&self.not_reading),
            g(&self.hung),
            g(&self.disconnected)
        )
    }
}

pub struct Shared {
    cells: Mutex<Vec<Cell>>,
    pub counters: Counters,
    /// Connection threads alive (handshake included).
    pub live: AtomicUsize,
    /// One warning line per 5 s at most for all of the bridge's bad input.
    log: Mutex<RateLimiter>,
    /// No state for this long, or no answer to a segment for this long: the process is hung.
    pub timeout: Duration,
    /// Wakes the `vehicles` thread when there is something for it: answers, a lost process
    /// (bounded to one: a wake-up pending is enough). States wake nobody: they are sampled
    /// when a report is due.
    wake: (Sender<()>, Receiver<()>),
}

impl Shared {
    pub fn new(entities: &[u32], timeout: Duration) -> Arc<Shared> {
        let now = Instant::now();
        Arc::new(Shared {
            cells: Mutex::new(
                entities
                    .iter()
                    .map(|id| Cell {
                        entity_id: *id,
                        conn: None,
                        last_state: now,
                        state: None,
                        answers: VecDeque::new(),
                    })
                    .collect(),
            ),
            counters: Counters::default(),
            live: AtomicUsize::new(0),
            log: Mutex::new(RateLimiter::new(Duration::from_secs(5))),
            timeout,
            wake: crossbeam_channel::bounded(1),
        })
    }

    /// Asks the `vehicles` thread to catch up with the cells now.
    pub fn wake(&self) {
        let _ = self.wake.0.try_send(());
    }

    /// What the `vehicles` thread waits on besides its own inputs.
    pub fn wakes(&self) -> Receiver<()> {
        self.wake.1.clone()
    }

    pub fn cells(&self) -> MutexGuard<'_, Vec<Cell>> {
        self.cells.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A warning, at most one line per 5 s (the lines held back are counted in the next).
    pub fn warn(&self, what: std::fmt::Arguments<'_>) {
        let held = {
            let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
            log.check(Instant::now())
        };
        if let Some(held) = held {
            warn!(
                "vehicle bridge: {what} ({}; {})",
                self.counters.summary(),
                Held(held).count("lines")
            );
        }
    }

    /// Closes every connection (shutdown).
    pub fn close_all(&self) {
        for cell in self.cells().iter_mut() {
            if let Some(c) = cell.conn.take() {
                c.close();
                let _ = c.tx.try_send(Vec::new());
            }
        }
    }
}
