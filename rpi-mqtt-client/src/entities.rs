//! Segment and action routing to the entity handlers: finds the entity of a segment, answers
//! duplicates from memory, fences orders by leader epoch, executes instant actions (stop,
//! pause, resume, cancel; docs/protocol.md "Instant actions"), and turns what the handlers do
//! into acks and state reports. No MQTT here.

use std::time::Duration;

use common::{
    AckOutcome, Action, ActionAck, ActionKind, ActionOutcome, EntityFlags, RejectReason, Segment,
    SegmentAck, StateReport, Target,
};

use crate::fence::SharedFence;
use crate::seen::{HISTORY, SeenSegments};
use crate::seen_actions::{ACTION_HISTORY, SeenActions};
use crate::vehicle::{Sampler, Vehicle, VehicleState};

/// The `action_id` of the pause the Pi's server-lost rule hands to its vehicles (bridge
/// processes see it; docs/vehicle-bridge.md): no server sends it (ids are the leader's own).
pub const SERVER_LOST_ACTION_ID: u32 = u32::MAX;

struct Slot {
    id: u32,
    vehicle: Box<dyn Vehicle>,
    seen: SeenSegments,
    /// PAUSED (not stepped, velocity 0 in its reports) and STOPPED (its segments dropped by a
    /// `stop`); only actions and the server-lost rule set them.
    flags: EntityFlags,
}

impl Slot {
    fn paused(&self) -> bool {
        self.flags.contains(EntityFlags::PAUSED)
    }
}

/// What one action did: its ack, the `Rejected(Cancelled)` acks of the segments it dropped
/// (to publish before it), and whether it changed any entity (its state is then published
/// at once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionResult {
    pub ack: ActionAck,
    pub cancelled: Vec<SegmentAck>,
    pub changed: bool,
}

/// What became of one delivered segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routed {
    pub ack: SegmentAck,
    /// The segment id was seen before for this entity: `ack` repeats its latest outcome and
    /// nothing was executed.
    pub duplicate: bool,
    /// Handed to a handler that answers later ([`Vehicle::answers_later`]): `ack` is not to
    /// be sent; the handler's answer comes from [`Entities::step`].
    pub deferred: bool,
}

/// The entities of this Pi and their handlers.
pub struct Entities {
    slots: Vec<Slot>,
    fence: SharedFence,
    actions: SeenActions,
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
                    flags: EntityFlags::NONE,
                })
                .collect(),
            fence: SharedFence::default(),
            actions: SeenActions::new(ACTION_HISTORY),
        }
    }

    /// Shares the Pi's fence (the main loop raises it with servers' `Online` statuses).
    pub fn with_fence(mut self, fence: SharedFence) -> Entities {
        self.fence = fence;
        self
    }

    pub fn ids(&self) -> Vec<u32> {
        self.slots.iter().map(|s| s.id).collect()
    }

    /// Hands a segment to its entity (at most once per segment id) and says what to ack.
    /// `now_ms` is the Pi's wall clock: a segment past its deadline is refused (`Expired`),
    /// unless it is a repeat of one already taken, which is answered from memory. The checks
    /// run in the documented order: UnknownEntity, repeat, StaleLeader, Expired, the handler's.
    pub fn on_segment(&mut self, seg: &Segment, now_ms: u64) -> Routed {
        // Every order raises the fence, even one rejected later for another reason.
        let fresh_epoch = self.fence.admit(seg.epoch);
        let Some(slot) = self.slots.iter_mut().find(|s| s.id == seg.entity_id) else {
            return Routed {
                ack: ack(
                    seg.entity_id,
                    seg.segment_id,
                    AckOutcome::Rejected(RejectReason::UnknownEntity),
                ),
                duplicate: false,
                deferred: false,
            };
        };
        if let Some(outcome) = slot.seen.get(seg.segment_id) {
            return Routed {
                ack: ack(slot.id, seg.segment_id, outcome),
                duplicate: true,
                deferred: false,
            };
        }
        let mut deferred = false;
        let outcome = if !fresh_epoch {
            AckOutcome::Rejected(RejectReason::StaleLeader)
        } else if seg.expired_by(now_ms).is_some() {
            AckOutcome::Rejected(RejectReason::Expired)
        } else if !slot.vehicle.available() {
            AckOutcome::Rejected(RejectReason::VehicleUnavailable)
        } else {
            match slot.vehicle.accept(seg) {
                Ok(()) => {
                    slot.flags = slot.flags.without(EntityFlags::STOPPED);
                    // A repeat delivered before the handler's answer is answered Accepted;
                    // a later rejection follows it.
                    deferred = slot.vehicle.answers_later();
                    AckOutcome::Accepted
                }
                Err(reason) => AckOutcome::Rejected(reason),
            }
        };
        slot.seen.record(seg.segment_id, outcome);
        Routed {
            ack: ack(slot.id, seg.segment_id, outcome),
            duplicate: false,
            deferred,
        }
    }

    /// Executes an instant action at most once per (`epoch`, `action_id`), in the documented
    /// order of checks: repeat, StaleLeader, UnknownEntity, then the handlers' (Unsupported,
    /// UnknownSegment). With every entity as the target the outcome is `Done` if each took it,
    /// else the first failure; a cancel of one segment id is `Done` if some entity dropped it.
    pub fn on_action(&mut self, action: &Action) -> ActionResult {
        let fresh_epoch = self.fence.admit(action.epoch);
        if let Some(first) = self.actions.get(action.epoch, action.action_id) {
            let ack = ActionAck {
                repeat: true,
                fence: self.fence.highest(),
                ..first
            };
            return ActionResult {
                ack,
                cancelled: Vec::new(),
                changed: false,
            };
        }
        let mut cancelled = Vec::new();
        let outcome = if !fresh_epoch {
            ActionOutcome::StaleLeader
        } else {
            match action.target {
                Target::Entity(id) => match self.slots.iter_mut().find(|s| s.id == id) {
                    None => ActionOutcome::UnknownEntity,
                    Some(slot) => apply(slot, action, &mut cancelled),
                },
                Target::All => {
                    let mut outcome = ActionOutcome::Done;
                    let mut dropped_one = false;
                    for slot in &mut self.slots {
                        match apply(slot, action, &mut cancelled) {
                            ActionOutcome::Done => dropped_one = true,
                            // One segment id lives on one entity: the others do not know it.
                            ActionOutcome::UnknownSegment if action.segment_id != 0 => {}
                            failed if outcome == ActionOutcome::Done => outcome = failed,
                            _ => {}
                        }
                    }
                    if action.action == ActionKind::Cancel
                        && action.segment_id != 0
                        && !dropped_one
                        && outcome == ActionOutcome::Done
                    {
                        outcome = ActionOutcome::UnknownSegment;
                    }
                    outcome
                }
            }
        };
        let ack = ActionAck {
            action_id: action.action_id,
            target: action.target,
            action: action.action,
            outcome,
            repeat: false,
            cancelled: cancelled.len().min(255) as u8,
            fence: self.fence.highest(),
        };
        self.actions.record(action.epoch, ack);
        ActionResult {
            ack,
            changed: outcome == ActionOutcome::Done || !cancelled.is_empty(),
            cancelled,
        }
    }

    /// The server-lost rule: pauses every entity (queues kept) until a `resume` action.
    /// Returns true if some entity was not paused yet.
    pub fn pause_all(&mut self) -> bool {
        let mut changed = false;
        for slot in &mut self.slots {
            if !slot.paused() {
                // A bridge vehicle's process must halt too (told with the Pi's own action id);
                // a simulator needs nothing. No driver: nothing moves anyway.
                let _ = slot.vehicle.act(&Action {
                    action_id: SERVER_LOST_ACTION_ID,
                    epoch: 0,
                    target: Target::Entity(slot.id),
                    action: ActionKind::Pause,
                    segment_id: 0,
                });
            }
            changed |= !slot.paused();
            slot.flags = slot.flags.with(EntityFlags::PAUSED);
        }
        changed
    }

    /// True when no entity has anything to do (see [`Vehicle::is_idle`]); a paused entity
    /// is not stepped, so it counts as idle.
    pub fn all_idle(&self) -> bool {
        self.slots.iter().all(|s| s.paused() || s.vehicle.is_idle())
    }

    /// The soonest [`Vehicle::next_event`] of the entities that are not paused: when the
    /// `vehicles` thread must step them next if nothing else happens.
    pub fn next_event(&self) -> Option<Duration> {
        self.slots
            .iter()
            .filter(|s| !s.paused())
            .filter_map(|s| s.vehicle.next_event())
            .min()
    }

    /// Advances every entity that is not paused by `dt`; pushes a `Completed` ack per
    /// finished segment, and the answers of handlers that answer later (paused or not).
    pub fn step(&mut self, dt: Duration, acks: &mut Vec<SegmentAck>) {
        let mut answers = Vec::new();
        for slot in &mut self.slots {
            if !slot.paused() {
                if let Some(done) = slot.vehicle.step(dt) {
                    slot.seen.record(done, AckOutcome::Completed);
                    acks.push(ack(slot.id, done, AckOutcome::Completed));
                }
            }
            slot.vehicle.answers(&mut answers);
            for (id, outcome) in answers.drain(..) {
                slot.seen.record(id, outcome);
                acks.push(ack(slot.id, id, outcome));
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
        out.extend(self.slots.iter().map(|slot| {
            report(
                slot.id,
                slot.flags.with(slot.vehicle.flags()),
                slot.vehicle.state(),
                timestamp_ms,
            )
        }));
    }

    /// What the reports show until the next call ([`crate::rounds::Board`]): every entity's
    /// flags and [`Sampler`], taken now (when the entities were last stepped).
    pub fn board(&self) -> Vec<Sampled> {
        self.slots
            .iter()
            .map(|slot| Sampled {
                id: slot.id,
                flags: slot.flags,
                sampler: slot.vehicle.sampler(),
            })
            .collect()
    }
}

/// One entity on the [`crate::rounds::Board`].
pub struct Sampled {
    pub id: u32,
    /// The entity's own flags (PAUSED, STOPPED); the handler's come from the sampler.
    pub flags: EntityFlags,
    pub sampler: Box<dyn Sampler>,
}

impl Sampled {
    /// Its report `elapsed` after the board was taken (a paused entity does not move).
    pub fn report(&self, elapsed: Duration, timestamp_ms: u64) -> StateReport {
        let paused = self.flags.contains(EntityFlags::PAUSED);
        let (state, flags) = self
            .sampler
            .sample(if paused { Duration::ZERO } else { elapsed });
        report(self.id, self.flags.with(flags), state, timestamp_ms)
    }
}

/// An entity's state report: a paused entity, or one with no driver, reports no velocity.
fn report(id: u32, flags: EntityFlags, state: VehicleState, timestamp_ms: u64) -> StateReport {
    let mut r = StateReport::new(id, timestamp_ms, state);
    r.flags = flags;
    if flags.contains(EntityFlags::PAUSED) || flags.contains(EntityFlags::NO_DRIVER) {
        (r.vx, r.vy) = (0, 0);
    }
    r
}

/// Applies `action` to one entity (past the repeat and fence checks); pushes the acks of the
/// segments it drops.
fn apply(slot: &mut Slot, action: &Action, cancelled: &mut Vec<SegmentAck>) -> ActionOutcome {
    if !slot.vehicle.available() {
        return ActionOutcome::VehicleUnavailable;
    }
    if let Err(outcome) = slot.vehicle.act(action) {
        return outcome;
    }
    let dropped = match action.action {
        ActionKind::Stop => {
            slot.flags = slot.flags.with(EntityFlags::STOPPED);
            slot.vehicle.abandon()
        }
        ActionKind::Pause => {
            slot.flags = slot.flags.with(EntityFlags::PAUSED);
            Vec::new()
        }
        ActionKind::Resume => {
            slot.flags = slot
                .flags
                .without(EntityFlags::PAUSED)
                .without(EntityFlags::STOPPED);
            Vec::new()
        }
        ActionKind::Cancel => {
            let which = (action.segment_id != 0).then_some(action.segment_id);
            match slot.vehicle.cancel(which) {
                Ok(ids) => ids,
                Err(outcome) => return outcome,
            }
        }
    };
    let outcome = AckOutcome::Rejected(RejectReason::Cancelled);
    for id in dropped {
        slot.seen.record(id, outcome);
        cancelled.push(ack(slot.id, id, outcome));
    }
    ActionOutcome::Done
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
        let mut e = Entities::new(fleet(&[1, 2], 1, (0, 0)), 1);
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
        let mut e = Entities::new(fleet(&[1], 1, (0, 0)), 1);
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
        let mut e = Entities::new(fleet(&[1], 1, (0, 0)), 4);
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

    fn action(id: u32, epoch: u32, target: Target, kind: ActionKind, seg: u32) -> Action {
        Action {
            action_id: id,
            epoch,
            target,
            action: kind,
            segment_id: seg,
        }
    }

    #[test]
    fn stop_pause_resume_cancel_and_the_fence() {
        let mut e = Entities::new(fleet(&[1, 2], 4, (0, 0)), 4);
        for id in 1..=3 {
            e.on_segment(&seg(1, id, 100_000), NOW);
        }
        let mut acks = Vec::new();
        e.step(Duration::from_millis(100), &mut acks);
        // Pause: halted, velocity 0, segment kept, nothing moves.
        let r = e.on_action(&action(1, 0, Target::Entity(1), ActionKind::Pause, 0));
        assert_eq!(
            (r.ack.outcome, r.cancelled.len(), r.changed),
            (ActionOutcome::Done, 0, true)
        );
        let mut reports = Vec::new();
        e.reports(1, &mut reports);
        let before = reports[0];
        assert_eq!(
            (before.vx, before.segment_id, before.flags),
            (0, 1, EntityFlags::PAUSED)
        );
        e.step(Duration::from_millis(100), &mut acks);
        e.reports(1, &mut reports);
        assert_eq!(reports[0].x, before.x, "a paused entity does not move");
        // Resume: the same segment goes on.
        e.on_action(&action(2, 0, Target::All, ActionKind::Resume, 0));
        e.step(Duration::from_millis(100), &mut acks);
        e.reports(1, &mut reports);
        assert!(reports[0].x > before.x && reports[0].vx > 0);
        assert_eq!(
            (reports[0].segment_id, reports[0].flags),
            (1, EntityFlags::NONE)
        );
        // Cancel one queued segment, then an unknown one.
        let r = e.on_action(&action(3, 0, Target::Entity(1), ActionKind::Cancel, 3));
        assert_eq!(
            r.cancelled,
            vec![ack(1, 3, AckOutcome::Rejected(RejectReason::Cancelled))]
        );
        let r = e.on_action(&action(4, 0, Target::Entity(1), ActionKind::Cancel, 3));
        assert_eq!(r.ack.outcome, ActionOutcome::UnknownSegment);
        // Stop drops the running one first; a repeat is answered from memory.
        let stop = action(5, 0, Target::All, ActionKind::Stop, 0);
        let r = e.on_action(&stop);
        let cancelled = AckOutcome::Rejected(RejectReason::Cancelled);
        assert_eq!(
            r.cancelled,
            vec![ack(1, 1, cancelled), ack(1, 2, cancelled)]
        );
        assert_eq!((r.ack.cancelled, r.ack.repeat), (2, false));
        let again = e.on_action(&stop);
        assert_eq!(
            (again.ack.repeat, again.ack.cancelled, again.changed),
            (true, 2, false)
        );
        assert!(again.cancelled.is_empty());
        e.reports(1, &mut reports);
        assert_eq!((reports[0].vx, reports[0].segment_id), (0, 0));
        assert_eq!(reports[0].flags, EntityFlags::STOPPED);
        assert_eq!(
            outcome(e.on_segment(&seg(1, 2, 100), NOW)),
            (cancelled, true)
        );
        assert_eq!(
            e.on_action(&action(6, 0, Target::Entity(9), ActionKind::Stop, 0))
                .ack
                .outcome,
            ActionOutcome::UnknownEntity
        );
        // A leader's epoch fences out epoch 0 and lower epochs, for segments and actions.
        assert_eq!(
            outcome(e.on_segment(
                &Segment {
                    epoch: 0x205,
                    ..seg(2, 50, 10)
                },
                NOW
            ))
            .0,
            AckOutcome::Accepted
        );
        let stale = e.on_segment(&seg(2, 51, 10), NOW);
        assert_eq!(
            outcome(stale),
            (AckOutcome::Rejected(RejectReason::StaleLeader), false)
        );
        let r = e.on_action(&action(7, 0x104, Target::All, ActionKind::Stop, 0));
        assert_eq!(
            (r.ack.outcome, r.ack.fence),
            (ActionOutcome::StaleLeader, 0x205)
        );
    }
}
