//! The record of the last [`JOURNAL_CAPACITY`] segments sent, for the HTTP API
//! (`GET /api/segments/{id}`) and the `segment` events: who, where to, what state, why, and
//! when (wall clock). Written by the dispatcher at each phase change; changes since the last
//! [`Journal::take_changed`] are handed to the registry's event feed.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use common::{Point, RejectReason};
use serde::Serialize;

use super::api::FailReason;

/// Segments remembered; older ones are forgotten first.
pub const JOURNAL_CAPACITY: usize = 10_000;
/// Changes held for the feed between two drains (the registry drains after every event).
const CHANGED_CAPACITY: usize = 4096;

/// Where a segment is, as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentState {
    Sent,
    Accepted,
    Completed,
    Rejected,
    Failed,
}

/// One segment as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SegmentRecord {
    pub segment_id: u32,
    pub pi: String,
    pub entity: u32,
    #[serde(serialize_with = "pair")]
    pub start: Point,
    #[serde(serialize_with = "pair")]
    pub end: Point,
    pub state: SegmentState,
    /// Why it was rejected or failed (snake_case), else None.
    pub reason: Option<&'static str>,
    /// Wall clock, Unix ms.
    pub sent_at: u64,
    pub accepted_at: Option<u64>,
    pub finished_at: Option<u64>,
}

/// Points are `[x, y]` in the API.
fn pair<S: serde::Serializer>(p: &Point, s: S) -> Result<S::Ok, S::Error> {
    [p.x, p.y].serialize(s)
}

pub fn reject_label(r: RejectReason) -> &'static str {
    match r {
        RejectReason::UnknownEntity => "unknown_entity",
        RejectReason::UnsupportedType => "unsupported_type",
        RejectReason::InvalidSegment => "invalid_segment",
        RejectReason::QueueFull => "queue_full",
        RejectReason::ShuttingDown => "shutting_down",
        RejectReason::Expired => "expired",
        RejectReason::VehicleUnavailable => "vehicle_unavailable",
        RejectReason::Cancelled => "cancelled",
        RejectReason::StaleLeader => "stale_leader",
    }
}

pub fn fail_label(f: FailReason) -> &'static str {
    match f {
        FailReason::NoAck { .. } => "no_ack",
        FailReason::PiOffline => "pi_offline",
        FailReason::ShuttingDown => "shutting_down",
    }
}

/// The bounded record of recent segments.
pub struct Journal {
    records: HashMap<u32, SegmentRecord>,
    /// Ids in the order they were sent, oldest first.
    order: VecDeque<u32>,
    /// Each change since the last drain, as it was then (bounded: the oldest is dropped).
    changed: VecDeque<SegmentRecord>,
    /// Wall clock at `base`, to put Instants on the wall clock.
    base: Instant,
    base_wall_ms: u64,
}

impl Journal {
    pub fn new(base: Instant, base_wall_ms: u64) -> Journal {
        Journal {
            records: HashMap::new(),
            order: VecDeque::new(),
            changed: VecDeque::new(),
            base,
            base_wall_ms,
        }
    }

    fn wall(&self, now: Instant) -> u64 {
        self.base_wall_ms + now.saturating_duration_since(self.base).as_millis() as u64
    }

    fn changed(&mut self, id: u32) {
        let Some(r) = self.records.get(&id) else {
            return;
        };
        if self.changed.len() == CHANGED_CAPACITY {
            self.changed.pop_front();
        }
        self.changed.push_back(r.clone());
    }

    /// A segment was published for the first time.
    pub fn sent(&mut self, now: Instant, pi: &str, entity: u32, start: Point, end: Point, id: u32) {
        if self.order.len() == JOURNAL_CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.records.remove(&old);
            }
        }
        let rec = SegmentRecord {
            segment_id: id,
            pi: pi.to_owned(),
            entity,
            start,
            end,
            state: SegmentState::Sent,
            reason: None,
            sent_at: self.wall(now),
            accepted_at: None,
            finished_at: None,
        };
        if self.records.insert(id, rec).is_none() {
            self.order.push_back(id);
        }
        self.changed(id);
    }

    /// The segment moved to `state` (with `reason` when rejected or failed).
    pub fn enter(
        &mut self,
        now: Instant,
        id: u32,
        state: SegmentState,
        reason: Option<&'static str>,
    ) {
        let at = self.wall(now);
        let Some(r) = self.records.get_mut(&id) else {
            return;
        };
        if r.state == state {
            return;
        }
        r.state = state;
        match state {
            SegmentState::Sent => {}
            SegmentState::Accepted => r.accepted_at = Some(at),
            SegmentState::Completed | SegmentState::Rejected | SegmentState::Failed => {
                r.finished_at = Some(at);
                r.reason = reason;
            }
        }
        self.changed(id);
    }

    pub fn get(&self, id: u32) -> Option<&SegmentRecord> {
        self.records.get(&id)
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The records changed since the last call, each as it was at its change, in order.
    pub fn take_changed(&mut self) -> Vec<SegmentRecord> {
        std::mem::take(&mut self.changed).into()
    }

    /// True when changes wait for [`Journal::take_changed`].
    pub fn has_changes(&self) -> bool {
        !self.changed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn keeps_the_last_segments_with_their_times() {
        let t0 = Instant::now();
        let mut j = Journal::new(t0, 1_000_000);
        let p = Point::new(1, 2);
        j.sent(t0, "a", 1, p, p, 7);
        j.enter(
            t0 + Duration::from_millis(5),
            7,
            SegmentState::Accepted,
            None,
        );
        j.enter(
            t0 + Duration::from_millis(9),
            7,
            SegmentState::Failed,
            Some(fail_label(FailReason::PiOffline)),
        );
        let r = j.get(7).unwrap();
        assert_eq!(
            (r.sent_at, r.accepted_at, r.finished_at, r.reason),
            (
                1_000_000,
                Some(1_000_005),
                Some(1_000_009),
                Some("pi_offline")
            )
        );
        let changes: Vec<_> = j.take_changed().iter().map(|r| r.state).collect();
        assert_eq!(
            changes,
            [
                SegmentState::Sent,
                SegmentState::Accepted,
                SegmentState::Failed
            ]
        );
        assert!(!j.has_changes());
        let json = serde_json::to_value(j.get(7).unwrap()).unwrap();
        assert_eq!(json["state"], "failed");
        assert_eq!(json["start"], serde_json::json!([1, 2]));
        for id in 100..100 + JOURNAL_CAPACITY as u32 {
            j.sent(t0, "a", 1, p, p, id);
        }
        assert_eq!(j.len(), JOURNAL_CAPACITY);
        assert!(j.get(7).is_none(), "the oldest is forgotten");
        assert!(j.get(100).is_some());
        assert!(j.take_changed().len() <= CHANGED_CAPACITY);
    }
}
