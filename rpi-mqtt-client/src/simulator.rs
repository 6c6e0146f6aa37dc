//! The built-in entity handler: a simulated vehicle that really drives the segments it gets,
//! one after the other, in a bounded first-in-first-out queue.
//!
//! Choices where docs/protocol.md leaves room ("Open points"):
//! - Only `segment_type` 0 (straight line) is supported; others are `UnsupportedType`.
//! - A negative speed, or both speeds 0, is `InvalidSegment`.
//! - A zero-length segment (`start == end`) is accepted: the vehicle jumps there and the
//!   segment completes at the next step, heading unchanged.
//! - When a segment starts and the vehicle is not at `start`, it jumps there (a real vehicle
//!   would first drive there).
//! - The speed ramps linearly with distance from `velocity_start` to `velocity_end`, but never
//!   below [`MIN_SPEED`], so a 0 start or end speed still gets there in finite time. The
//!   vehicle stops exactly at `end` (velocity 0) and reports the segment completed.
//! - The motion is integrated exactly (dt = dd / v(d) in closed form), so a step of any length
//!   lands where driving would have: the daemon samples the vehicle when a report is due and
//!   wakes for a segment's end at the time [`Vehicle::next_event`] gives, instead of stepping
//!   it on a fine tick.
//! - `queue_depth` counts the segments waiting behind the running one; a segment arriving
//!   while the vehicle is idle starts at once.

use std::collections::VecDeque;
use std::time::Duration;

use common::{ActionOutcome, EntityFlags, RejectReason, Segment};

use crate::vehicle::{Sampler, Vehicle, VehicleState};

/// The slowest the simulated vehicle moves while executing a segment, mm/s.
pub const MIN_SPEED: f64 = 10.0;

/// A segment being driven.
#[derive(Debug, Clone)]
struct Run {
    id: u32,
    start: (f64, f64),
    end: (f64, f64),
    /// Unit vector from start to end ((1, 0) for a zero-length segment).
    dir: (f64, f64),
    len: f64,
    /// Distance already travelled, mm.
    done: f64,
    v0: f64,
    v1: f64,
}

impl Run {
    fn new(seg: &Segment) -> Run {
        let start = (f64::from(seg.start.x), f64::from(seg.start.y));
        let end = (f64::from(seg.end.x), f64::from(seg.end.y));
        let (dx, dy) = (end.0 - start.0, end.1 - start.1);
        let len = dx.hypot(dy);
        let dir = if len > 0.0 {
            (dx / len, dy / len)
        } else {
            (1.0, 0.0)
        };
        Run {
            id: seg.segment_id,
            start,
            end,
            dir,
            len,
            done: 0.0,
            v0: f64::from(seg.velocity_start),
            v1: f64::from(seg.velocity_end),
        }
    }

    /// The speed after travelling `d`: linear in distance, at least [`MIN_SPEED`].
    fn speed_at(&self, d: f64) -> f64 {
        (self.v0 + self.slope() * d.clamp(0.0, self.len)).max(MIN_SPEED)
    }

    /// Speed gained per mm travelled (0 for a zero-length segment).
    fn slope(&self) -> f64 {
        if self.len > 0.0 {
            (self.v1 - self.v0) / self.len
        } else {
            0.0
        }
    }

    /// The stretches `(from, to, clamped)` of `[0, len]` on which the speed law is one
    /// formula: the linear ramp, or [`MIN_SPEED`] where the ramp is below it (`clamped`).
    /// At most two.
    fn stretches(&self) -> [(f64, f64, bool); 2] {
        let k = self.slope();
        let ramp = |d: f64| self.v0 + k * d;
        // Where the ramp crosses MIN_SPEED, within [0, len] (the whole segment when it never does).
        let cross = if k == 0.0 {
            self.len
        } else {
            ((MIN_SPEED - self.v0) / k).clamp(0.0, self.len)
        };
        let below = |a: f64, b: f64| ramp((a + b) / 2.0) < MIN_SPEED;
        [
            (0.0, cross, below(0.0, cross)),
            (cross, self.len, below(cross, self.len)),
        ]
    }

    /// Time to travel from `a` to `b` within one stretch: dt = dd / v(d), integrated exactly.
    fn time_within(&self, a: f64, b: f64, clamped: bool) -> f64 {
        if b <= a {
            return 0.0;
        }
        let k = self.slope();
        if clamped {
            (b - a) / MIN_SPEED
        } else if k == 0.0 {
            (b - a) / self.v0
        } else {
            ((self.v0 + k * b) / (self.v0 + k * a)).ln() / k
        }
    }

    /// Where the vehicle is `t` seconds after being at `a`, within `a`'s stretch ending at
    /// `end` (the caller checked that it does not reach `end`): the inverse of
    /// [`Run::time_within`], v(d(t)) = v(a) e^(kt) on the ramp.
    fn position_within(&self, a: f64, end: f64, t: f64, clamped: bool) -> f64 {
        let k = self.slope();
        let d = if clamped {
            a + MIN_SPEED * t
        } else if k == 0.0 {
            a + self.v0 * t
        } else {
            a + (self.v0 + k * a) * ((k * t).exp() - 1.0) / k
        };
        d.clamp(a, end)
    }

    /// Seconds left to the end from `done`.
    fn time_to_end(&self) -> f64 {
        self.stretches()
            .iter()
            .map(|&(lo, hi, clamped)| self.time_within(self.done.max(lo), hi, clamped))
            .sum()
    }

    /// Drives `t` seconds from `done` along the exact motion, any `t`; true when the end is
    /// reached.
    fn advance(&mut self, mut t: f64) -> bool {
        for (lo, hi, clamped) in self.stretches() {
            if self.done >= hi {
                continue;
            }
            let from = self.done.max(lo);
            let need = self.time_within(from, hi, clamped);
            if t < need {
                self.done = self.position_within(from, hi, t, clamped);
                return false;
            }
            t -= need;
            self.done = hi;
        }
        self.done = self.len;
        true
    }
}

/// A simulated vehicle.
#[derive(Debug, Clone)]
pub struct Simulator {
    x: f64,
    y: f64,
    /// Millidegrees in `[0, 360000)`.
    angle: i32,
    speed: f64,
    run: Option<Run>,
    queue: VecDeque<Segment>,
    depth: usize,
}

/// Heading of a direction in millidegrees, normalised to `[0, 360000)`.
pub fn heading_mdeg(dx: f64, dy: f64) -> i32 {
    let a = (dy.atan2(dx).to_degrees() * 1000.0).round() as i64;
    a.rem_euclid(360_000) as i32
}

impl Simulator {
    /// A vehicle standing at `(x, y)` mm facing +x, with room for `queue_depth` waiting
    /// segments.
    pub fn new(x: i32, y: i32, queue_depth: usize) -> Simulator {
        Simulator {
            x: f64::from(x),
            y: f64::from(y),
            angle: 0,
            speed: 0.0,
            run: None,
            queue: VecDeque::with_capacity(queue_depth),
            depth: queue_depth,
        }
    }

    fn begin(&mut self, seg: &Segment) {
        let run = Run::new(seg);
        self.x = run.start.0;
        self.y = run.start.1;
        if run.len > 0.0 {
            self.angle = heading_mdeg(run.dir.0, run.dir.1);
        }
        self.speed = run.speed_at(0.0);
        self.run = Some(run);
    }

    /// Segments waiting behind the running one.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }
}

/// A copy of the simulator, stepped on when sampled: the motion is exact in closed form, so
/// sampling `elapsed` later is what the `vehicles` thread would see by stepping.
impl Sampler for Simulator {
    fn sample(&self, elapsed: Duration) -> (VehicleState, EntityFlags) {
        let mut ahead = self.clone();
        ahead.step(elapsed);
        (ahead.state(), EntityFlags::NONE)
    }
}

impl Vehicle for Simulator {
    fn is_idle(&self) -> bool {
        self.run.is_none() && self.queue.is_empty()
    }

    fn accept(&mut self, seg: &Segment) -> Result<(), RejectReason> {
        if seg.segment_type != 0 {
            return Err(RejectReason::UnsupportedType);
        }
        if seg.velocity_start < 0
            || seg.velocity_end < 0
            || (seg.velocity_start == 0 && seg.velocity_end == 0)
        {
            return Err(RejectReason::InvalidSegment);
        }
        if self.run.is_none() && self.queue.is_empty() {
            self.begin(seg);
            return Ok(());
        }
        if self.queue.len() >= self.depth {
            return Err(RejectReason::QueueFull);
        }
        self.queue.push_back(*seg);
        Ok(())
    }

    fn step(&mut self, dt: Duration) -> Option<u32> {
        if self.run.is_none() {
            match self.queue.pop_front() {
                Some(seg) => self.begin(&seg),
                None => {
                    self.speed = 0.0;
                    return None;
                }
            }
        }
        let run = self.run.as_mut()?;
        // The exact motion, whatever `dt`: the vehicle can be sampled when a report is due
        // instead of being stepped on a fine tick.
        if run.advance(dt.as_secs_f64()) {
            let id = run.id;
            self.x = run.end.0;
            self.y = run.end.1;
            self.speed = 0.0;
            self.run = None;
            return Some(id);
        }
        let d = run.done;
        self.x = run.start.0 + run.dir.0 * d;
        self.y = run.start.1 + run.dir.1 * d;
        self.speed = run.speed_at(d);
        None
    }

    fn next_event(&self) -> Option<Duration> {
        match &self.run {
            // Rounded up to the next millisecond, so a step then reaches the end.
            Some(run) => Some(Duration::from_secs_f64(
                (run.time_to_end() + 0.000_5).clamp(0.0, 86_400.0),
            )),
            // The next queued segment begins at the next step.
            None if !self.queue.is_empty() => Some(Duration::ZERO),
            None => None,
        }
    }

    fn sampler(&self) -> Box<dyn Sampler> {
        Box::new(self.clone())
    }

    fn state(&self) -> VehicleState {
        let (vx, vy, segment_id, progress) = match &self.run {
            Some(run) => (
                (self.speed * run.dir.0).round() as i32,
                (self.speed * run.dir.1).round() as i32,
                run.id,
                if run.len > 0.0 {
                    ((run.done / run.len) * 10_000.0)
                        .floor()
                        .clamp(0.0, 10_000.0) as u16
                } else {
                    0
                },
            ),
            None => (0, 0, 0, 0),
        };
        VehicleState {
            x: self.x.round() as i32,
            y: self.y.round() as i32,
            angle: self.angle,
            vx,
            vy,
            segment_id,
            progress,
        }
    }

    fn abandon(&mut self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.run.take().map(|r| r.id).into_iter().collect();
        ids.extend(self.queue.drain(..).map(|s| s.segment_id));
        self.speed = 0.0;
        ids
    }

    fn cancel(&mut self, segment_id: Option<u32>) -> Result<Vec<u32>, ActionOutcome> {
        let Some(id) = segment_id else {
            return Ok(self.queue.drain(..).map(|s| s.segment_id).collect());
        };
        if self.run.as_ref().is_some_and(|r| r.id == id) {
            self.run = None;
            self.speed = 0.0;
            return Ok(vec![id]);
        }
        match self.queue.iter().position(|s| s.segment_id == id) {
            Some(i) => {
                self.queue.remove(i);
                Ok(vec![id])
            }
            None => Err(ActionOutcome::UnknownSegment),
        }
    }
}

/// The default fleet of a Pi: one simulator per configured entity, entity `i` (0-based
/// position in the list) starting at `origin + (i * 1000, 0)` so that their poses differ.
pub fn fleet(
    entities: &[u32],
    queue_depth: usize,
    origin: (i32, i32),
) -> Vec<(u32, Box<dyn Vehicle>)> {
    entities
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let x = origin.0.saturating_add(i as i32 * 1000);
            let v: Box<dyn Vehicle> = Box::new(Simulator::new(x, origin.1, queue_depth));
            (*id, v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::Point;

    fn seg(id: u32, start: (i32, i32), end: (i32, i32), v0: i32, v1: i32) -> Segment {
        Segment {
            entity_id: 1,
            segment_id: id,
            start: Point::new(start.0, start.1),
            end: Point::new(end.0, end.1),
            velocity_start: v0,
            velocity_end: v1,
            segment_type: 0,
            deadline_ms: common::wire::NO_DEADLINE,
            epoch: 0,
        }
    }

    const DT: Duration = Duration::from_millis(20);

    /// Steps until a segment completes; returns (its id, simulated seconds).
    fn drive(sim: &mut Simulator, max_steps: usize) -> (u32, f64) {
        for i in 1..=max_steps {
            if let Some(id) = sim.step(DT) {
                return (id, i as f64 * DT.as_secs_f64());
            }
        }
        panic!(
            "no segment completed in {max_steps} steps: {:?}",
            sim.state()
        );
    }

    #[test]
    fn drives_to_the_end_and_stops_there() {
        let mut sim = Simulator::new(0, 0, 4);
        sim.accept(&seg(7, (0, 0), (1000, 0), 500, 500)).unwrap();
        let s = sim.state();
        assert_eq!((s.segment_id, s.progress, s.vx, s.vy), (7, 0, 500, 0));
        sim.step(Duration::from_secs(1));
        let s = sim.state();
        assert_eq!((s.x, s.y, s.progress, s.vx), (500, 0, 5000, 500));
        let (id, t) = drive(&mut sim, 100);
        assert_eq!(id, 7);
        assert!((t - 1.0).abs() < 0.03, "{t}");
        let s = sim.state();
        assert_eq!(
            s,
            VehicleState {
                x: 1000,
                y: 0,
                angle: 0,
                vx: 0,
                vy: 0,
                segment_id: 0,
                progress: 0
            }
        );
        assert_eq!(sim.step(DT), None);
        assert_eq!(sim.state(), s);
    }

    #[test]
    fn idle_only_without_running_or_queued_segments() {
        let mut sim = Simulator::new(0, 0, 4);
        assert!(sim.is_idle());
        sim.accept(&seg(1, (0, 0), (100, 0), 500, 500)).unwrap();
        sim.accept(&seg(2, (100, 0), (200, 0), 500, 500)).unwrap();
        assert!(!sim.is_idle());
        assert_eq!(drive(&mut sim, 100).0, 1);
        assert!(!sim.is_idle(), "segment 2 is still queued");
        assert_eq!(drive(&mut sim, 100).0, 2);
        assert!(sim.is_idle());
    }

    #[test]
    fn speed_ramps_linearly_with_distance() {
        let mut sim = Simulator::new(0, 0, 4);
        sim.accept(&seg(1, (0, 0), (0, 3000), 200, 600)).unwrap();
        let mut samples = Vec::new();
        let mut done = false;
        for _ in 0..2000 {
            if sim.step(Duration::from_millis(5)).is_some() {
                done = true;
                break;
            }
            samples.push(sim.state());
        }
        assert!(done);
        for s in &samples {
            // speed = 200 + 400 * d / 3000 along +y
            let expected = 200.0 + 400.0 * f64::from(s.y) / 3000.0;
            assert_eq!(s.vx, 0);
            assert!((f64::from(s.vy) - expected).abs() <= 1.5, "{s:?}");
            assert!(s.vy >= 200 && s.vy <= 600);
        }
        assert!(samples.windows(2).all(|w| w[1].vy >= w[0].vy));
        // Time to cover L with v = v0 + k d is ln(v1/v0) / k.
        let expected_t = (600.0f64 / 200.0).ln() / (400.0 / 3000.0);
        let t = samples.len() as f64 * 0.005;
        assert!((t - expected_t).abs() < 0.02, "{t} vs {expected_t}");
    }

    #[test]
    fn heading_follows_the_segment() {
        assert_eq!(heading_mdeg(1.0, 0.0), 0);
        assert_eq!(heading_mdeg(0.0, 1.0), 90_000);
        assert_eq!(heading_mdeg(-1.0, 0.0), 180_000);
        assert_eq!(heading_mdeg(0.0, -1.0), 270_000);
        assert_eq!(heading_mdeg(1.0, -1.0), 315_000);
        let mut sim = Simulator::new(0, 0, 4);
        sim.accept(&seg(1, (1000, 1000), (0, 0), 100, 100)).unwrap();
        let s = sim.state();
        assert_eq!((s.x, s.y, s.angle), (1000, 1000, 225_000));
        assert_eq!((s.vx, s.vy), (-71, -71));
        drive(&mut sim, 2000);
        // Idle afterwards, still facing the way it drove.
        assert_eq!(sim.state().angle, 225_000);
    }

    #[test]
    fn zero_speeds_still_complete_at_min_speed() {
        let mut sim = Simulator::new(0, 0, 4);
        sim.accept(&seg(1, (0, 0), (100, 0), 0, 100)).unwrap();
        assert_eq!(sim.state().vx, MIN_SPEED as i32);
        let (_, t) = drive(&mut sim, 10_000);
        assert!(t < 5.0, "{t}");
        sim.accept(&seg(2, (100, 0), (200, 0), 50, 0)).unwrap();
        let mut min_vx = i32::MAX;
        for _ in 0..10_000 {
            if sim.step(DT).is_some() {
                break;
            }
            min_vx = min_vx.min(sim.state().vx);
        }
        assert_eq!(sim.state().x, 200);
        assert!(min_vx >= MIN_SPEED as i32, "{min_vx}");
    }

    #[test]
    fn rejects_what_it_cannot_drive() {
        let mut sim = Simulator::new(0, 0, 4);
        let mut s = seg(1, (0, 0), (10, 0), 100, 100);
        s.segment_type = 1;
        assert_eq!(sim.accept(&s), Err(RejectReason::UnsupportedType));
        for (v0, v1) in [(0, 0), (-1, 100), (100, -5)] {
            assert_eq!(
                sim.accept(&seg(2, (0, 0), (10, 0), v0, v1)),
                Err(RejectReason::InvalidSegment),
                "{v0} {v1}"
            );
        }
        assert_eq!(sim.state().segment_id, 0);
    }

    #[test]
    fn zero_length_segment_completes_at_once() {
        let mut sim = Simulator::new(0, 0, 4);
        sim.accept(&seg(3, (500, 500), (500, 500), 100, 100))
            .unwrap();
        assert_eq!(sim.step(DT), Some(3));
        let s = sim.state();
        assert_eq!((s.x, s.y, s.angle, s.segment_id), (500, 500, 0, 0));
    }

    #[test]
    fn queue_is_fifo_and_bounded() {
        let mut sim = Simulator::new(0, 0, 2);
        // The first starts at once; two more wait; the fourth does not fit.
        for id in 1..=3 {
            sim.accept(&seg(id, (0, 0), (100 * id as i32, 0), 1000, 1000))
                .unwrap();
        }
        assert_eq!(sim.queued(), 2);
        assert_eq!(
            sim.accept(&seg(4, (0, 0), (1, 0), 1, 1)),
            Err(RejectReason::QueueFull)
        );
        let order: Vec<u32> = (0..3).map(|_| drive(&mut sim, 1000).0).collect();
        assert_eq!(order, vec![1, 2, 3]);
        // The second one jumped to its start before driving.
        assert_eq!(sim.state().x, 300);
        assert_eq!(sim.queued(), 0);
    }

    #[test]
    fn abandon_returns_running_then_queued() {
        let mut sim = Simulator::new(0, 0, 4);
        for id in [5, 6, 7] {
            sim.accept(&seg(id, (0, 0), (1000, 0), 10, 10)).unwrap();
        }
        sim.step(DT);
        assert_eq!(sim.abandon(), vec![5, 6, 7]);
        let s = sim.state();
        assert_eq!((s.segment_id, s.vx), (0, 0));
        assert!(sim.abandon().is_empty());
    }

    #[test]
    fn fleet_starts_at_distinct_poses() {
        let f = fleet(&[4, 9, 2], 8, (0, 0));
        let xs: Vec<(u32, i32)> = f.iter().map(|(id, v)| (*id, v.state().x)).collect();
        assert_eq!(xs, vec![(4, 0), (9, 1000), (2, 2000)]);
        let f = fleet(&[4, 9], 8, (-500, 7000));
        let at: Vec<(i32, i32)> = f.iter().map(|(_, v)| (v.state().x, v.state().y)).collect();
        assert_eq!(at, vec![(-500, 7000), (500, 7000)]);
    }

    /// The closed form against a fine numerical integration (1 ms midpoint steps), for each
    /// shape of the speed law: constant, ramp up and down, clamped at the start or the end,
    /// clamped throughout.
    #[test]
    fn exact_motion_matches_fine_integration_and_any_step_lands_alike() {
        let cases = [
            (500, 500),
            (100, 1000),
            (1000, 100),
            (0, 400),
            (400, 0),
            (5, 8),
            (1, 0),
        ];
        for (v0, v1) in cases {
            let s = seg(1, (0, 0), (2000, 0), v0, v1);
            // Reference: dd/dt = v(d), midpoint rule with 1 ms steps.
            let run = Run::new(&s);
            let (mut d, mut t) = (0.0f64, 0.0f64);
            let h = 0.001;
            while d < run.len {
                let mid = run.speed_at(d + run.speed_at(d) * h / 2.0);
                d += mid * h;
                t += h;
            }
            let mut sim = Simulator::new(0, 0, 4);
            sim.accept(&s).unwrap();
            let predicted = sim.next_event().unwrap().as_secs_f64();
            assert!(
                (predicted - t).abs() <= 0.002 + t * 1e-3,
                "v {v0}->{v1}: predicted end {predicted} s, integrated {t} s"
            );
            // One big step just short of the end does not finish; the rest does.
            let mut big = sim.clone();
            assert_eq!(big.step(Duration::from_secs_f64(predicted - 0.01)), None);
            let x_big = big.state().x;
            // The same time in 20 ms steps lands at the same place.
            let mut small = sim.clone();
            let mut left = predicted - 0.01;
            while left > 0.0 {
                let dt = left.min(0.02);
                assert_eq!(small.step(Duration::from_secs_f64(dt)), None);
                left -= dt;
            }
            assert!(
                (small.state().x - x_big).abs() <= 1,
                "v {v0}->{v1}: {} vs {x_big}",
                small.state().x
            );
            assert_eq!(big.step(Duration::from_millis(11)), Some(1), "v {v0}->{v1}");
            assert_eq!((big.state().x, big.state().vx), (2000, 0));
        }
    }

    #[test]
    fn next_event_is_none_when_idle_and_now_for_a_waiting_segment() {
        let mut sim = Simulator::new(0, 0, 4);
        assert_eq!(sim.next_event(), None);
        sim.accept(&seg(1, (0, 0), (100, 0), 100, 100)).unwrap();
        sim.accept(&seg(2, (100, 0), (200, 0), 100, 100)).unwrap();
        let first = sim.next_event().unwrap();
        assert!((first.as_secs_f64() - 1.0).abs() < 0.002, "{first:?}");
        assert_eq!(sim.step(first), Some(1));
        assert_eq!(
            sim.next_event(),
            Some(Duration::ZERO),
            "the queued one begins at the next step"
        );
        sim.step(Duration::ZERO);
        let second = sim.next_event().unwrap();
        assert!((second.as_secs_f64() - 1.0).abs() < 0.002, "{second:?}");
    }
}
