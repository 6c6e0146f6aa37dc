//! What the registry tells the outside as it happens: presence changes, entity states and
//! segment changes and action outcomes ([`FeedEvent`]), for the HTTP event stream. The registry hands events over
//! with `try_send` on a bounded channel and never waits: when the channel is full the event is
//! dropped and counted. While nobody listens ([`Feed::is_listened`]), states are not even
//! built.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::Motion;
use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use serde::Serialize;

use crate::actions::ActionRecord;
use crate::dispatch::journal::SegmentRecord;
use crate::fleet::OfflineReason;
use crate::snapshot::FlagsView;

/// Events waiting for the fan-out thread.
pub const FEED_CAPACITY: usize = 16_384;

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

/// The registry's end.
#[derive(Clone)]
pub struct Feed {
    tx: Sender<FeedEvent>,
    pub shared: Arc<FeedShared>,
}

impl Feed {
    /// A feed and the receiving end.
    pub fn new() -> (Feed, Receiver<FeedEvent>, Arc<FeedShared>) {
        let (tx, rx) = bounded(FEED_CAPACITY);
        let shared = Arc::new(FeedShared::default());
        (
            Feed {
                tx,
                shared: shared.clone(),
            },
            rx,
            shared,
        )
    }

    pub fn is_listened(&self) -> bool {
        self.shared.listened.load(Ordering::Relaxed)
    }

    /// Hands `e` over without waiting; counts it dropped when the channel is full.
    pub fn send(&self, e: FeedEvent) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(e) {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}
