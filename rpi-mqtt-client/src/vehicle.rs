//! The entity handler interface: what the daemon needs from a vehicle, simulated or real.
//! It knows nothing of MQTT; the daemon routes segments to it and reports its state.

use std::time::Duration;

use common::{AckOutcome, Action, ActionOutcome, EntityFlags, RejectReason, Segment};

/// An entity's state in wire units, sampled by [`Vehicle::state`]: the motion a state report
/// carries.
pub type VehicleState = common::Motion;

/// An entity's state at a later time, without its handler: the `mqtt-link` thread samples it
/// when a round of reports is due ([`crate::rounds`]), while the handler stays with the
/// `vehicles` thread.
pub trait Sampler: Send {
    /// The state and the handler's flags `elapsed` after [`Vehicle::sampler`] was called,
    /// had nothing happened meanwhile.
    fn sample(&self, elapsed: Duration) -> (VehicleState, EntityFlags);
}

/// A state that does not move: the default [`Vehicle::sampler`].
struct Fixed(VehicleState, EntityFlags);

impl Sampler for Fixed {
    fn sample(&self, _: Duration) -> (VehicleState, EntityFlags) {
        (self.0, self.1)
    }
}

/// One entity's handler. Called from the single `vehicles` thread, so no locking is needed
/// inside; `Send` because it is moved there.
///
/// Contract: every segment `accept`ed is eventually returned exactly once, either by `step`
/// (completed), by `answers` (a handler that answers later: accepted, then completed or
/// rejected) or by `abandon`/`cancel` (dropped unfinished). Duplicates never reach a handler:
/// the daemon answers them from its memory of segment ids.
pub trait Vehicle: Send {
    /// Queues a segment (first in, first out), or says why it cannot be taken.
    fn accept(&mut self, seg: &Segment) -> Result<(), RejectReason>;
    /// Advances the vehicle by `dt` of wall time; returns the id of a segment that was
    /// completed during this step.
    fn step(&mut self, dt: Duration) -> Option<u32>;
    /// The current pose, velocity and segment progress.
    fn state(&self) -> VehicleState;
    /// Drops every queued and running segment (on shutdown) and stops; returns their ids,
    /// the running one first.
    fn abandon(&mut self) -> Vec<u32>;
    /// True when stepping would change nothing (no segment running or queued): the daemon
    /// then steps only at the state interval, which saves most of an idle Pi's CPU. A handler
    /// that must be polled all the time (sensors) keeps the default.
    fn is_idle(&self) -> bool {
        false
    }
    /// How long from now until stepping would change something the daemon acts on (a segment
    /// completes, the next queued one begins), if no input comes meanwhile; None: nothing will.
    /// A handler whose motion is known in closed form (the simulator) answers exactly, so the
    /// `vehicles` thread sleeps until then and samples it only when a report is due; the
    /// default asks to be stepped every [`crate::vehicles::STEP`] while it is not idle.
    fn next_event(&self) -> Option<Duration> {
        (!self.is_idle()).then_some(crate::vehicles::STEP)
    }
    /// Instant action `cancel` (protocol version 3): `Some(id)` drops that segment, running
    /// (the vehicle halts where it is; the next queued one begins at the next step) or queued;
    /// `None` drops every queued one, not the running one. Returns the ids dropped, or
    /// `UnknownSegment` when `id` is neither running nor queued. The default cannot cancel
    /// (`Unsupported`); `stop` uses [`Vehicle::abandon`], and `pause` needs nothing from the
    /// handler (the daemon simply stops stepping it).
    fn cancel(&mut self, segment_id: Option<u32>) -> Result<Vec<u32>, ActionOutcome> {
        let _ = segment_id;
        Err(ActionOutcome::Unsupported)
    }
    /// True when `accept`'s `Ok` is not an answer yet: the handler answers `Accepted` (or a
    /// rejection) later through [`Vehicle::answers`] (a bridge vehicle's process decides).
    fn answers_later(&self) -> bool {
        false
    }
    /// Segment outcomes decided since the last call (a bridge vehicle's process: accepted,
    /// completed, rejected), in order. Called after every step, also while paused.
    fn answers(&mut self, out: &mut Vec<(u32, AckOutcome)>) {
        let _ = out;
    }
    /// False when nothing drives the entity (a bridge entity without a vehicle process):
    /// segments are then `Rejected(VehicleUnavailable)`, actions answered `VehicleUnavailable`.
    fn available(&self) -> bool {
        true
    }
    /// Flags the handler adds to the entity's reports (NO_DRIVER).
    fn flags(&self) -> EntityFlags {
        EntityFlags::NONE
    }
    /// What the reports between two of the `vehicles` thread's wake-ups show ([`Sampler`]).
    /// The default is the state of now, unchanged until the next call: right for a handler
    /// whose state changes only when it is called. The simulator's motion is known in closed
    /// form; a bridge vehicle's latest state is read from its connection.
    fn sampler(&self) -> Box<dyn Sampler> {
        Box::new(Fixed(self.state(), self.flags()))
    }
    /// Every instant action for this entity, before the daemon executes it (past the repeat,
    /// fence, entity and availability checks): a handler that cannot perform it says
    /// `Unsupported`; a bridge vehicle forwards it to its process. The default takes all.
    fn act(&mut self, action: &Action) -> Result<(), ActionOutcome> {
        let _ = action;
        Ok(())
    }
}
