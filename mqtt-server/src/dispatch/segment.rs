//! One tracked segment and its lifecycle, an explicit state machine:
//!
//! ```text
//!            ack timeout: re-sent (attempts + 1)
//!             ┌──────┐
//!             v      │   Accepted                     Pi offline
//!   dispatch ─> Sent ─┴──────────────> Accepted ───────────────────> Stranded
//!               │  │ Pi offline:        │                              │  │ back without it
//!               │  │ Sent{pi_offline}   │ Completed / Rejected         │  │ for ACK_GRACE,
//!               │  │                    v                              │  │ or forgotten
//!               │  └─ Completed ──> Finished(Completed) <─ Completed ──┘  v
//!               ├─ Rejected ─────> Finished(Rejected)             Finished(Failed)
//!               └─ no ack by deadline + grace, no Pi, shutdown ──> Finished(Failed)
//! ```
//!
//! [`Phase`] is the whole state; the dispatcher changes it only through
//! `Dispatcher::enter`, which also keeps its indices (unfinished per Pi, stranded, finished
//! in order) in step. A finished segment is remembered for the grace period, to tell late and
//! duplicate acks apart from unknown ones.

use std::time::Instant;

use common::{ClientId, Segment};
use crossbeam_channel::Sender;

use super::api::SegmentOutcome;

/// How a segment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Completed,
    Rejected,
    /// Reported failed (no ack, Pi gone, server stopping).
    Failed,
}

/// Where a segment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Published `attempts` times, not accepted yet; `next_check` is when the next retry or
    /// give-up is due (heap entries for other instants are stale). `pi_offline`: its Pi went
    /// offline meanwhile, the reason if it fails.
    Sent {
        attempts: u32,
        next_check: Instant,
        pi_offline: bool,
    },
    /// The Pi took it and drives it.
    Accepted,
    /// Accepted, then its Pi went offline: only the Pi's word settles it. `idle_since`: since
    /// when, back online, its entity has shown that it no longer has it.
    Stranded { idle_since: Option<Instant> },
    /// The final outcome was reported.
    Finished(Ending),
}

impl Phase {
    /// Accepted by the Pi (driving it, or stranded with it).
    pub fn is_accepted(&self) -> bool {
        matches!(self, Phase::Accepted | Phase::Stranded { .. })
    }

    pub fn is_finished(&self) -> bool {
        matches!(self, Phase::Finished(_))
    }
}

/// A segment the dispatcher remembers.
pub struct Tracked {
    pub client: ClientId,
    pub segment: Segment,
    /// The protocol version the Pi speaks (the segment is encoded in it).
    pub version: u8,
    pub notify: Option<Sender<SegmentOutcome>>,
    pub first_sent: Instant,
    /// The segment's deadline on the server's clock; None when it carries none.
    pub expires: Option<Instant>,
    pub phase: Phase,
}

impl Tracked {
    pub fn tell(&self, outcome: SegmentOutcome) {
        if let Some(tx) = &self.notify {
            // Never block the registry on a slow or gone listener.
            let _ = tx.try_send(outcome);
        }
    }
}
