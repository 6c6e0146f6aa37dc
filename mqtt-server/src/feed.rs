//! What the registry tells the outside as it happens: presence changes, entity states and
//! segment changes and action outcomes ([`FeedEvent`]), for the HTTP event stream. The registry collects events
//! into a batch and hands it over ([`Feed::flush`], on its tick or when [`BATCH`] events are
//! waiting) with `try_send` on a bounded channel, never waiting: when the channel is full the
//! batch is dropped and its events counted. Batches, not single events: one wake-up of the
//! fan-out thread per batch instead of one per state report (20,000 a second at 1000 Pis).
//! While nobody listens ([`Feed::is_listened`]), states are not even built.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::Motion;
use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use serde::Serialize;

use crate::actions::ActionRecord;
use crate::dispatch::journal::SegmentRecord;
use crate::fleet::OfflineReason;
use crate::snapshot::FlagsView;

/// Events per batch at most; a full batch is handed over at once.
pub const BATCH: usize = 512;
/// Batches waiting for the fan-out thread (up to 16,384 events).
pub const FEED_CAPACITY: usize = 32;

/// A Pi's presence as the events report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Presence {
    pub pi: String,
    pub online: bool,
    pub reason: Option<OfflineReason>,
    pub protocol: u8,
    pub suspected_duplicate: bool,
}

/// An entity's pose as the events report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntityState {
    pub pi: String,
    pub entity: u32,
    #[serde(flatten)]
    pub motion: Motion,
    #[serde(flatten)]
    pub flags: FlagsView,
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedEvent {
    Presence(Presence),
    State(EntityState),
    Segment(SegmentRecord),
    /// An instant action was answered or given up ([`crate::actions`]).
    Action(ActionRecord),
}

/// Shared between the registry (sender) and the fan-out (receiver).
#[derive(Debug, Default)]
pub struct FeedShared {
    /// Someone has an event stream open.
    pub listened: AtomicBool,
    /// Events the registry could not hand over (the channel was full).
    pub dropped: AtomicU64,
}

/// The registry's end (one owner: the registry thread).
pub struct Feed {
    tx: Sender<Vec<FeedEvent>>,
    /// The batch being collected: the registry sends through `&self` while it holds other
    /// borrows of itself, and only its thread touches this.
    pending: RefCell<Vec<FeedEvent>>,
    pub shared: Arc<FeedShared>,
}

impl Feed {
    /// A feed and the receiving end.
    pub fn new() -> (Feed, Receiver<Vec<FeedEvent>>, Arc<FeedShared>) {
        let (tx, rx) = bounded(FEED_CAPACITY);
        let shared = Arc::new(FeedShared::default());
        (
            Feed {
                tx,
                pending: RefCell::new(Vec::new()),
                shared: shared.clone(),
            },
            rx,
            shared,
        )
    }

    pub fn is_listened(&self) -> bool {
        self.shared.listened.load(Ordering::Relaxed)
    }

    /// Adds `e` to the batch; a full batch is handed over at once.
    pub fn send(&self, e: FeedEvent) {
        let full = {
            let mut pending = self.pending.borrow_mut();
            pending.push(e);
            pending.len() >= BATCH
        };
        if full {
            self.flush();
        }
    }

    /// Hands the batch over without waiting; counts its events dropped when the channel is
    /// full.
    pub fn flush(&self) {
        let batch = std::mem::take(&mut *self.pending.borrow_mut());
        if batch.is_empty() {
            return;
        }
        if let Err(TrySendError::Full(b)) = self.tx.try_send(batch) {
            self.shared
                .dropped
                .fetch_add(b.len() as u64, Ordering::Relaxed);
        }
    }
}
