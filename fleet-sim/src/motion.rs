//! A cheap stand-in for a vehicle: a bounded FIFO of segments per entity, each driven in a
//! straight line at constant speed for a fixed time, with the acks the protocol asks for
//! (Accepted at once, Accepted again for a duplicate, Completed at the end, Rejected with a
//! reason). Enough to exercise the server's dispatcher; not the real client's physics.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use common::wire::{ANGLE_FULL_TURN, PROGRESS_DONE};
use common::{AckOutcome, Point, RejectReason, Segment, StateReport};

/// Pending segments per entity (the one being driven not counted).
pub const QUEUE_CAP: usize = 8;
/// Executed segment ids remembered per entity, to answer a duplicate without re-running it.
const RECENT_CAP: usize = 32;

#[derive(Debug, Clone)]
pub struct Entity {
    pub id: u32,
    pos: Point,
    angle: i32,
    current: Option<(Segment, Instant)>,
    queue: VecDeque<Segment>,
    recent: VecDeque<u32>,
}

impl Entity {
    pub fn new(id: u32, pos: Point) -> Entity {
        Entity {
            id,
            pos,
            angle: 0,
            current: None,
            queue: VecDeque::new(),
            recent: VecDeque::new(),
        }
    }

    fn knows(&self, segment_id: u32) -> bool {
        self.current
            .is_some_and(|(s, _)| s.segment_id == segment_id)
            || self.queue.iter().any(|s| s.segment_id == segment_id)
            || self.recent.contains(&segment_id)
    }

    /// Takes a segment for this entity; the answer to send at once. `wall_ms` is this Pi's
    /// clock, for the segment's deadline.
    pub fn offer(&mut self, seg: Segment, now: Instant, wall_ms: u64) -> AckOutcome {
        if seg.segment_type != 0 {
            return AckOutcome::Rejected(RejectReason::UnsupportedType);
        }
        if seg.velocity_start < 0
            || seg.velocity_end < 0
            || (seg.velocity_start == 0 && seg.velocity_end == 0)
        {
            return AckOutcome::Rejected(RejectReason::InvalidSegment);
        }
        if self.knows(seg.segment_id) {
            return AckOutcome::Accepted;
        }
        if seg.expired_by(wall_ms).is_some() {
            return AckOutcome::Rejected(RejectReason::Expired);
        }
        if self.current.is_none() {
            self.current = Some((seg, now));
            return AckOutcome::Accepted;
        }
        if self.queue.len() >= QUEUE_CAP {
            return AckOutcome::Rejected(RejectReason::QueueFull);
        }
        self.queue.push_back(seg);
        AckOutcome::Accepted
    }

    /// The entity's report at `now` (wall clock `timestamp_ms`), and the id of a segment that
    /// was finished by then, if any. Each segment takes `segment_time`.
    pub fn sample(
        &mut self,
        now: Instant,
        timestamp_ms: u64,
        segment_time: Duration,
    ) -> (StateReport, Option<u32>) {
        let mut completed = None;
        if let Some((seg, started)) = self.current {
            if now.saturating_duration_since(started) >= segment_time {
                self.pos = seg.end;
                completed = Some(seg.segment_id);
                if self.recent.len() == RECENT_CAP {
                    self.recent.pop_front();
                }
                self.recent.push_back(seg.segment_id);
                self.current = self.queue.pop_front().map(|s| (s, now));
            }
        }
        let report = match self.current {
            None => StateReport::at_rest(self.id, timestamp_ms, self.pos, self.angle),
            Some((seg, started)) => {
                let t = now.saturating_duration_since(started).as_secs_f64()
                    / segment_time.as_secs_f64();
                let t = t.clamp(0.0, 1.0);
                let dx = f64::from(seg.end.x) - f64::from(seg.start.x);
                let dy = f64::from(seg.end.y) - f64::from(seg.start.y);
                if dx != 0.0 || dy != 0.0 {
                    let deg = dy.atan2(dx).to_degrees();
                    self.angle = ((deg * 1000.0).round() as i32).rem_euclid(ANGLE_FULL_TURN);
                }
                self.pos = Point::new(
                    (f64::from(seg.start.x) + dx * t).round() as i32,
                    (f64::from(seg.start.y) + dy * t).round() as i32,
                );
                let secs = segment_time.as_secs_f64();
                StateReport {
                    entity_id: self.id,
                    timestamp_ms,
                    x: self.pos.x,
                    y: self.pos.y,
                    angle: self.angle,
                    vx: (dx / secs).round() as i32,
                    vy: (dy / secs).round() as i32,
                    segment_id: seg.segment_id,
                    progress: ((t * f64::from(PROGRESS_DONE)).round() as u16).min(PROGRESS_DONE),
                    flags: common::EntityFlags::NONE,
                }
            }
        };
        (report, completed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(id: u32) -> Segment {
        Segment {
            entity_id: 1,
            segment_id: id,
            start: Point::new(0, 0),
            end: Point::new(1000, 1000),
            velocity_start: 100,
            velocity_end: 100,
            segment_type: 0,
            deadline_ms: common::wire::NO_DEADLINE,
            epoch: 0,
        }
    }

    #[test]
    fn drives_acks_and_completes_in_order() {
        let t0 = Instant::now();
        let st = Duration::from_millis(100);
        let mut e = Entity::new(1, Point::new(0, 0));
        assert_eq!(e.offer(seg(1), t0, 0), AckOutcome::Accepted);
        assert_eq!(e.offer(seg(2), t0, 0), AckOutcome::Accepted);
        assert_eq!(e.offer(seg(1), t0, 0), AckOutcome::Accepted, "duplicate");
        let (r, done) = e.sample(t0 + st / 2, 1, st);
        assert_eq!(
            (r.segment_id, r.progress, r.x, r.angle),
            (1, 5000, 500, 45_000)
        );
        assert_eq!(done, None);
        let (r, done) = e.sample(t0 + st, 2, st);
        assert_eq!(done, Some(1));
        assert_eq!((r.segment_id, r.progress), (2, 0));
        let (r, done) = e.sample(t0 + st * 3, 3, st);
        assert_eq!(done, Some(2));
        assert_eq!((r.segment_id, r.x, r.vx), (0, 1000, 0));
        assert_eq!(e.offer(seg(2), t0, 0), AckOutcome::Accepted, "remembered");
        // Every report is a valid payload.
        assert!(StateReport::decode(r.encode().as_slice()).is_ok());
    }

    #[test]
    fn rejects_with_reasons() {
        let t0 = Instant::now();
        let mut e = Entity::new(1, Point::new(0, 0));
        let mut odd = seg(5);
        odd.segment_type = 3;
        assert_eq!(
            e.offer(odd, t0, 0),
            AckOutcome::Rejected(RejectReason::UnsupportedType)
        );
        let mut still = seg(6);
        still.velocity_start = 0;
        still.velocity_end = 0;
        assert_eq!(
            e.offer(still, t0, 0),
            AckOutcome::Rejected(RejectReason::InvalidSegment)
        );
        for id in 10..10 + 1 + QUEUE_CAP as u32 {
            assert_eq!(e.offer(seg(id), t0, 0), AckOutcome::Accepted);
        }
        assert_eq!(
            e.offer(seg(99), t0, 0),
            AckOutcome::Rejected(RejectReason::QueueFull)
        );
    }
}
