//! The built-in demo planner (the seed's behaviour): every segment interval, each online
//! entity whose previous segment is finished gets the next leg of a closed square route
//! (1 m sides, counter-clockwise) anchored where the entity was when the planner first saw it,
//! speeding up from 300 to 500 mm/s. A leg starts at the entity's reported position, so a
//! vehicle that drifted or restarted still heads for the next corner. A rejected or failed leg
//! is sent again (with a new id) at the next interval; a completed one advances the route.
//! An entity that reports driving a segment the planner is not waiting for (one the server
//! reported failed while its Pi was offline, and the Pi kept driving; or another caller's)
//! gets no leg until it is idle: a leg queued behind it would start from a stale position.
//! An entity halted by an instant action (STOPPED or PAUSED in its state report) gets no leg
//! until it is resumed: an operator's stop must hold against the demo.
//!
//! It runs only on the leader (docs/protocol.md, "Leadership"): on a standby a step does
//! nothing. A new leader's planner skips entities still driving the old leader's segments (as
//! above), so nothing is sent twice.
//!
//! It uses the same API as any other caller ([`SegmentSink`], implemented by
//! [`crate::FleetHandle`]), and runs on its own thread (`planner`).

use std::collections::HashMap;
use std::time::Duration;

use common::Point;
use crossbeam_channel::{Receiver, TryRecvError, select, tick};
use log::{debug, info};

use crate::dispatch::{DispatchError, SegmentOutcome, SegmentSpec, SegmentTicket};
use crate::snapshot::EntityPose;

pub const SIDE_MM: i32 = 1000;
pub const VELOCITY_START: i32 = 300;
pub const VELOCITY_END: i32 = 500;

/// What the planner needs from the server.
pub trait SegmentSink {
    /// Every entity of every online Pi; None when the server is gone.
    fn poses(&self) -> Option<Vec<EntityPose>>;
    fn dispatch(&self, client_id: &str, spec: SegmentSpec) -> Result<SegmentTicket, DispatchError>;
    /// Whether this server leads (only the leader plans); None when the server is gone.
    fn leads(&self) -> Option<bool> {
        Some(true)
    }
}

/// A closed square route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    corners: [Point; 4],
    /// The corner the entity heads for next.
    next: usize,
}

impl Route {
    /// Corners `anchor`, `+x`, `+x+y`, `+y`; the first leg heads for `+x`.
    pub fn around(anchor: Point) -> Route {
        let (x, y) = (anchor.x, anchor.y);
        let s = SIDE_MM;
        Route {
            corners: [
                anchor,
                Point::new(x.saturating_add(s), y),
                Point::new(x.saturating_add(s), y.saturating_add(s)),
                Point::new(x, y.saturating_add(s)),
            ],
            next: 1,
        }
    }

    /// The leg from `from` to the next corner.
    pub fn leg(&self, entity_id: u32, from: Point) -> SegmentSpec {
        SegmentSpec::line(
            entity_id,
            from,
            self.corners[self.next],
            VELOCITY_START,
            VELOCITY_END,
        )
    }

    pub fn advance(&mut self) {
        self.next = (self.next + 1) % self.corners.len();
    }

    pub fn corners(&self) -> [Point; 4] {
        self.corners
    }
}

struct Plan {
    route: Route,
    pending: Option<SegmentTicket>,
}

/// The planner's state: one route per (Pi, entity) seen online at the last step.
#[derive(Default)]
pub struct Planner {
    plans: HashMap<(String, u32), Plan>,
}

impl Planner {
    pub fn new() -> Planner {
        Planner::default()
    }

    /// Entities with a route.
    pub fn len(&self) -> usize {
        self.plans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.plans.is_empty()
    }

    /// One round: read outcomes, send the next legs. Returns the number of segments sent,
    /// or None when the server is gone.
    pub fn step(&mut self, sink: &dyn SegmentSink) -> Option<usize> {
        if !sink.leads()? {
            // A standby plans nothing; when it leads, it starts from where the entities are.
            self.plans.clear();
            return Some(0);
        }
        let poses = sink.poses()?;
        let mut sent = 0;
        let mut seen = std::collections::HashSet::with_capacity(poses.len());
        for pose in poses {
            let key = (pose.client_id.clone(), pose.entity_id);
            seen.insert(key.clone());
            let plan = self.plans.entry(key).or_insert_with(|| Plan {
                route: Route::around(pose.pos),
                pending: None,
            });
            let mut completed = None;
            if let Some(ticket) = &plan.pending {
                match latest_final(ticket) {
                    Pending::Waiting => continue,
                    Pending::Done(SegmentOutcome::Completed { .. }) => {
                        plan.route.advance();
                        completed = Some(ticket.id);
                    }
                    Pending::Done(_) | Pending::Lost => {}
                }
                plan.pending = None;
            }
            // The report may still show the leg that just completed; anything else running
            // is finished first. A halted entity waits for its `resume`.
            if (pose.segment_id != 0 && Some(pose.segment_id) != completed) || pose.halted {
                continue;
            }
            match sink.dispatch(&pose.client_id, plan.route.leg(pose.entity_id, pose.pos)) {
                Ok(ticket) => {
                    plan.pending = Some(ticket);
                    sent += 1;
                }
                Err(e) => debug!(
                    "planner: no leg for {}/{}: {e}",
                    pose.client_id, pose.entity_id
                ),
            }
        }
        // Forget entities no longer online: the map stays as small as the online fleet.
        self.plans.retain(|k, _| seen.contains(k));
        Some(sent)
    }
}

enum Pending {
    Waiting,
    Done(SegmentOutcome),
    /// The outcome channel closed without a final outcome (should not happen).
    Lost,
}

fn latest_final(ticket: &SegmentTicket) -> Pending {
    loop {
        match ticket.outcomes.try_recv() {
            Ok(o) if o.is_final() => return Pending::Done(o),
            Ok(_) => {}
            Err(TryRecvError::Empty) => return Pending::Waiting,
            Err(TryRecvError::Disconnected) => return Pending::Lost,
        }
    }
}

/// The `planner` thread's loop: a step every `interval` until `stop` fires or closes.
pub fn run(sink: &dyn SegmentSink, interval: Duration, stop: &Receiver<()>) {
    info!(
        "demo planner: a {SIDE_MM} mm square per entity, a leg every {}",
        crate::table::human(interval)
    );
    let mut planner = Planner::new();
    let ticker = tick(interval);
    loop {
        select! {
            recv(stop) -> _ => break,
            recv(ticker) -> _ => {
                if planner.step(sink).is_none() {
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::Sender;
    use std::cell::RefCell;

    #[derive(Default)]
    struct Fake {
        poses: RefCell<Vec<EntityPose>>,
        sent: RefCell<Vec<(String, SegmentSpec, Sender<SegmentOutcome>)>>,
        refuse: RefCell<bool>,
        standby: RefCell<bool>,
    }

    impl SegmentSink for Fake {
        fn poses(&self) -> Option<Vec<EntityPose>> {
            Some(self.poses.borrow().clone())
        }
        fn leads(&self) -> Option<bool> {
            Some(!*self.standby.borrow())
        }
        fn dispatch(
            &self,
            client_id: &str,
            spec: SegmentSpec,
        ) -> Result<SegmentTicket, DispatchError> {
            if *self.refuse.borrow() {
                return Err(DispatchError::PiOffline);
            }
            let (tx, rx) = crossbeam_channel::unbounded();
            let id = self.sent.borrow().len() as u32 + 1;
            self.sent
                .borrow_mut()
                .push((client_id.to_owned(), spec, tx));
            Ok(SegmentTicket { id, outcomes: rx })
        }
    }

    fn pose(x: i32, y: i32) -> EntityPose {
        EntityPose {
            client_id: "pi".into(),
            entity_id: 1,
            pos: Point::new(x, y),
            segment_id: 0,
            halted: false,
        }
    }

    #[test]
    fn a_halted_entity_gets_no_leg_until_resumed() {
        let fake = Fake::default();
        *fake.poses.borrow_mut() = vec![EntityPose {
            halted: true,
            ..pose(0, 0)
        }];
        let mut p = Planner::new();
        assert_eq!(p.step(&fake), Some(0), "stopped or paused: left alone");
        fake.poses.borrow_mut()[0].halted = false;
        assert_eq!(p.step(&fake), Some(1), "resumed: the next leg");
    }

    #[test]
    fn an_entity_still_driving_something_else_gets_no_leg() {
        let fake = Fake::default();
        // Back from an outage, still driving segment 77 (reported failed, driven anyway).
        *fake.poses.borrow_mut() = vec![EntityPose {
            segment_id: 77,
            ..pose(10, 0)
        }];
        let mut p = Planner::new();
        assert_eq!(p.step(&fake), Some(0));
        *fake.poses.borrow_mut() = vec![pose(1010, 0)];
        assert_eq!(p.step(&fake), Some(1), "idle: the route goes on");
        // Its own leg completed while the report still shows it: no wait.
        fake.sent.borrow()[0]
            .2
            .send(SegmentOutcome::Completed {
                after: Duration::from_secs(2),
            })
            .unwrap();
        *fake.poses.borrow_mut() = vec![EntityPose {
            segment_id: 1,
            ..pose(2000, 0)
        }];
        assert_eq!(p.step(&fake), Some(1));
    }

    #[test]
    fn square_route_is_closed() {
        let mut r = Route::around(Point::new(100, -50));
        let mut ends = Vec::new();
        for _ in 0..5 {
            ends.push(r.leg(1, Point::new(0, 0)).end);
            r.advance();
        }
        assert_eq!(
            ends,
            vec![
                Point::new(1100, -50),
                Point::new(1100, 950),
                Point::new(100, 950),
                Point::new(100, -50),
                Point::new(1100, -50),
            ]
        );
        let leg = r.leg(7, Point::new(3, 4));
        assert_eq!(
            (leg.entity_id, leg.start, leg.segment_type),
            (7, Point::new(3, 4), 0)
        );
        assert_eq!((leg.velocity_start, leg.velocity_end), (300, 500));
    }

    #[test]
    fn next_leg_only_after_completion_and_retry_after_failure() {
        let fake = Fake::default();
        *fake.poses.borrow_mut() = vec![pose(0, 0)];
        let mut p = Planner::new();
        assert_eq!(p.step(&fake), Some(1));
        assert_eq!(fake.sent.borrow()[0].1.end, Point::new(1000, 0));
        // Still driving: nothing new.
        fake.sent.borrow()[0]
            .2
            .send(SegmentOutcome::Accepted {
                round_trip: Duration::from_millis(3),
                attempts: 1,
            })
            .unwrap();
        assert_eq!(p.step(&fake), Some(0));
        // Completed: the next corner, from where the entity is now.
        fake.sent.borrow()[0]
            .2
            .send(SegmentOutcome::Completed {
                after: Duration::from_secs(2),
            })
            .unwrap();
        *fake.poses.borrow_mut() = vec![pose(998, 1)];
        assert_eq!(p.step(&fake), Some(1));
        let leg = fake.sent.borrow()[1].1;
        assert_eq!(
            (leg.start, leg.end),
            (Point::new(998, 1), Point::new(1000, 1000))
        );
        // Rejected: the same corner again.
        fake.sent.borrow()[1]
            .2
            .send(SegmentOutcome::Rejected(common::RejectReason::QueueFull))
            .unwrap();
        assert_eq!(p.step(&fake), Some(1));
        assert_eq!(fake.sent.borrow()[2].1.end, Point::new(1000, 1000));
    }

    #[test]
    fn entities_that_leave_are_forgotten() {
        let fake = Fake::default();
        *fake.poses.borrow_mut() = vec![pose(0, 0)];
        let mut p = Planner::new();
        p.step(&fake);
        assert_eq!(p.len(), 1);
        fake.poses.borrow_mut().clear();
        p.step(&fake);
        assert!(p.is_empty());
        // Refusals are not fatal.
        *fake.poses.borrow_mut() = vec![pose(0, 0)];
        *fake.refuse.borrow_mut() = true;
        assert_eq!(p.step(&fake), Some(0));
    }

    #[test]
    fn a_standby_plans_nothing_and_a_new_leader_starts_from_where_entities_are() {
        let sink = Fake::default();
        sink.poses.borrow_mut().push(pose(0, 0));
        *sink.standby.borrow_mut() = true;
        let mut p = Planner::new();
        assert_eq!(p.step(&sink), Some(0));
        assert!(p.is_empty() && sink.sent.borrow().is_empty());
        *sink.standby.borrow_mut() = false;
        sink.poses.borrow_mut()[0] = pose(300, 400);
        assert_eq!(p.step(&sink), Some(1));
        assert_eq!(sink.sent.borrow()[0].1.start, Point::new(300, 400));
        // Deposed: the plans are dropped.
        *sink.standby.borrow_mut() = true;
        assert_eq!(p.step(&sink), Some(0));
        assert!(p.is_empty());
    }
}
