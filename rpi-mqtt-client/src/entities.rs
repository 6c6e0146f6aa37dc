//! Segment routing to the entity handlers: finds the entity of a segment, answers duplicates
//! from memory, and turns what the handlers do into acks and state reports. No MQTT here.

use std::time::Duration;

use common::{AckOutcome, RejectReason, Segment, SegmentAck, StateReport};

use crate::seen::{HISTORY, SeenSegments};
use crate::vehicle::Vehicle;

struct Slot {
    id: u32,
    vehicle: Box<dyn Vehicle>,
    seen: SeenSegments,
}

/// What became of one delivered segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routed {
    pub ack: SegmentAck,
    /// The segment id was seen before for this entity: `ack` repeats its latest outcome and
    /// nothing was executed.
    pub duplicate: bool,
}

/// The entities of this Pi and their handlers.
pub struct Entities {
    slots: Vec<Slot>,
}

fn ack(entity_id: u32, segment_id: u32, outcome: AckOutcome) -> SegmentAck {
    SegmentAck {
        entity_id,
        segment_id,
        outcome,
    }
}

impl Entities {
    /// `queue_depth` bounds what each handler may hold pending, which sizes the memory of
    /// segment ids.
    pub fn new(vehicles: Vec<(u32, Box<dyn Vehicle>)>, queue_depth: usize) -> Entities {
        Entities {
            slots: vehicles
                .into_iter()
                .map(|(id, vehicle)| Slot {
                    id,
                    vehicle,
                    seen: SeenSegments::new(HISTORY, queue_depth + 1),
                })
                .collect(),
        }
    }

    pub fn ids(&self) -> Vec<u32> {
        self.slots.iter().map(|s| s.id).collect()
    }

    /// Hands a segment to its entity (at most once per segment id) and says what to ack.
    /// `now_ms` is the Pi's wall clock: a segment past its deadline is refused (`Expired`),
    /// unless it is a repeat of one already taken, which is answered from memory.
    pub fn on_segment(&mut self, seg: &Segment, now_ms: u64) -> Routed {
        let Some(slot) = self.slots.iter_mut().find(|s| s.id == seg.entity_id) else {
            return Routed {
                ack: ack(
                    seg.entity_id,
                    seg.segment_id,
                    AckOutcome::Rejected(RejectReason::UnknownEntity),
                ),
                duplicate: false,
            };
        };
        if let Some(outcome) = slot.seen.get(seg.segment_id) {
            return Routed {
                ack: ack(slot.id, seg.segment_id, outcome),
                duplicate: true,
            };
        }
        let outcome = if seg.expired_by(now_ms).is_some() {
            AckOutcome::Rejected(RejectReason::Expired)
        } else {
            match slot.vehicle.accept(seg) {
                Ok(()) => AckOutcome::Accepted,
                Err(reason) => AckOutcome::Rejected(reason),
            }
        };
        slot.seen.record(seg.segment_id, outcome);
        Routed {
            ack: ack(slot.id, seg.segment_id, outcome),
            duplicate: false,
        }
    }

    /// True when no entity has anything to do (see [`Vehicle::is_idle`]).
    pub fn all_idle(&self) -> bool {
        self.slots.iter().all(|s| s.vehicle.is_idle())
    }

    /// Advances every entity by `dt`; pushes a `Completed` ack per finished segment.
    pub fn step(&mut self, dt: Duration, acks: &mut Vec<SegmentAck>) {
        for slot in &mut self.slots {
            if let Some(done) = slot.vehicle.step(dt) {
                slot.seen.record(done, AckOutcome::Completed);
                acks.push(ack(slot.id, done, AckOutcome::Completed));
            }
        }
    }

    /// Drops every unfinished segment (shutdown); pushes a `Rejected(ShuttingDown)` ack each.
    pub fn abandon(&mut self, acks: &mut Vec<SegmentAck>) {
        let outcome = AckOutcome::Rejected(RejectReason::ShuttingDown);
        for slot in &mut self.slots {
            for id in slot.vehicle.abandon() {
                slot.seen.record(id, outcome);
                acks.push(ack(slot.id, id, outcome));
            }
        }
    }

    /// Every entity's state, stamped `timestamp_ms`, written into `out` (cleared first).
    pub fn reports(&self, timestamp_ms: u64, out: &mut Vec<StateReport>) {
        out.clear();
        out.extend(
            self.slots
                .iter()
                .map(|slot| StateReport::new(slot.id, timestamp_ms, slot.vehicle.state())),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulator::fleet;
    use common::Point;

    fn seg(entity: u32, id: u32, len: i32) -> Segment {
        Segment {
            entity_id: entity,
            segment_id: id,
            start: Point::new(0, 0),
            end: Point::new(len, 0),
            velocity_start: 1000,
            velocity_end: 1000,
            segment_type: 0,
            deadline_ms: common::wire::NO_DEADLINE,
            epoch: 0,
        }
    }

    /// The Pi's clock in the tests.
    const NOW: u64 = 1_764_000_000_000;

    fn outcome(r: Routed) -> (AckOutcome, bool) {
        (r.ack.outcome, r.duplicate)
    }

    #[test]
    fn duplicates_are_answered_not_executed() {
        let mut e = Entities::new(fleet(&[1, 2], 1), 1);
        assert_eq!(
            outcome(e.on_segment(&seg(1, 10, 100), NOW)),
            (AckOutcome::Accepted, false)
        );
        assert_eq!(
            outcome(e.on_segment(&seg(1, 10, 100), NOW)),
            (AckOutcome::Accepted, true)
        );
        // The same id for another entity is another segment.
        assert_eq!(
            outcome(e.on_segment(&seg(2, 10, 100), NOW)),
            (AckOutcome::Accepted, false)
        );
        let mut acks = Vec::new();
        for _ in 0..20 {
            e.step(Duration::from_millis(20), &mut acks);
        }
        assert_eq!(
            acks,
            vec![
                ack(1, 10, AckOutcome::Completed),
                ack(2, 10, AckOutcome::Completed)
            ]
        );
        // Delivered again after it completed: the outcome is repeated, nothing moves.
        assert_eq!(
            outcome(e.on_segment(&seg(1, 10, 100), NOW)),
            (AckOutcome::Completed, true)
        );
        let mut reports = Vec::new();
        e.reports(5, &mut reports);
        assert_eq!(reports[0].segment_id, 0);
        assert_eq!((reports[0].x, reports[0].timestamp_ms), (100, 5));
    }

    #[test]
    fn rejections_are_remembered_and_unknown_entities_refused() {
        let mut e = Entities::new(fleet(&[1], 1), 1);
        let r = e.on_segment(&seg(9, 1, 100), NOW);
        assert_eq!(
            outcome(r),
            (AckOutcome::Rejected(RejectReason::UnknownEntity), false)
        );
        assert_eq!(r.ack.entity_id, 9);
        e.on_segment(&seg(1, 1, 100_000), NOW);
        e.on_segment(&seg(1, 2, 100_000), NOW);
        let full = AckOutcome::Rejected(RejectReason::QueueFull);
        assert_eq!(outcome(e.on_segment(&seg(1, 3, 100), NOW)), (full, false));
        assert_eq!(outcome(e.on_segment(&seg(1, 3, 100), NOW)), (full, true));
        let mut acks = Vec::new();
        e.abandon(&mut acks);
        let down = AckOutcome::Rejected(RejectReason::ShuttingDown);
        assert_eq!(acks, vec![ack(1, 1, down), ack(1, 2, down)]);
        assert_eq!(outcome(e.on_segment(&seg(1, 2, 100), NOW)), (down, true));
    }

    #[test]
    fn late_segments_are_refused_but_repeats_answered_from_memory() {
        let mut e = Entities::new(fleet(&[1], 1), 4);
        let mut on_time = seg(1, 1, 100);
        on_time.deadline_ms = NOW;
        assert_eq!(
            outcome(e.on_segment(&on_time, NOW)),
            (AckOutcome::Accepted, false),
            "due at the deadline itself"
        );
        // Delivered again after the deadline: it was taken, so it is not refused now.
        assert_eq!(
            outcome(e.on_segment(&on_time, NOW + 5000)),
            (AckOutcome::Accepted, true)
        );
        let mut late = seg(1, 2, 100);
        late.deadline_ms = NOW - 1;
        let expired = AckOutcome::Rejected(RejectReason::Expired);
        assert_eq!(outcome(e.on_segment(&late, NOW)), (expired, false));
        // Not queued: only segment 1 is driven, and a repeat says Expired again.
        let mut acks = Vec::new();
        for _ in 0..20 {
            e.step(Duration::from_millis(20), &mut acks);
        }
        assert_eq!(acks, vec![ack(1, 1, AckOutcome::Completed)]);
        assert_eq!(outcome(e.on_segment(&late, NOW - 10)), (expired, true));
    }
}
