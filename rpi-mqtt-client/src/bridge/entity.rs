//! One bridge entity as the `vehicles` thread drives it: a [`Vehicle`] whose segments go to the
//! vehicle process that claimed the entity, whose answers and state come back from it, and
//! which fails every segment the process held when it disconnects or hangs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{AckOutcome, Action, ActionKind, ActionOutcome, EntityFlags, RejectReason, Segment};
use common::{Motion, Target};
use crossbeam_channel::TrySendError;
use log::{debug, info};

use super::frame::{Caps, Frame};
use super::shared::{ConnRef, Counters, Shared};
use crate::vehicle::{Sampler, Vehicle, VehicleState};

/// A segment handed to the process.
#[derive(Debug, Clone, Copy)]
struct Held {
    id: u32,
    /// When it was sent, while its answer (accepted or rejected) is awaited.
    unanswered_since: Option<Instant>,
}

/// A bridge entity's reports between two wake-ups of the `vehicles` thread: the latest
/// state its process sent (not yet taken by that thread), else the one it took last; no
/// driver when the process it drives by is gone.
struct BridgeSampler {
    shared: Arc<Shared>,
    index: usize,
    motion: Motion,
    /// The connection the entity was driven by when the sampler was taken.
    attached: Option<u64>,
}

impl Sampler for BridgeSampler {
    fn sample(&self, _: Duration) -> (VehicleState, EntityFlags) {
        let cells = self.shared.cells();
        let cell = cells.get(self.index);
        let conn = cell.and_then(|c| c.conn.as_ref().map(|c| c.id));
        let latest = cell.and_then(|c| c.state).unwrap_or(self.motion);
        match (self.attached, conn) {
            (Some(a), Some(c)) if a == c => (latest, EntityFlags::NONE),
            // What `BridgeEntity::lost` will make of it: the last pose kept, nothing driving.
            _ => (stopped(latest), EntityFlags::NO_DRIVER),
        }
    }
}

/// `m` with no driver: the pose kept, no velocity, no segment.
fn stopped(m: Motion) -> Motion {
    Motion {
        vx: 0,
        vy: 0,
        segment_id: 0,
        progress: 0,
        ..m
    }
}

pub struct BridgeEntity {
    shared: Arc<Shared>,
    index: usize,
    entity_id: u32,
    /// The connection as this thread last saw it.
    attached: Option<ConnRef>,
    /// Handed to the process and not finished, in the order sent (the first is running).
    held: Vec<Held>,
    /// At most this many held: the queue depth and the running one.
    capacity: usize,
    motion: Motion,
    /// Answers decided here (failures), given out with the process's at the next step.
    out: Vec<(u32, AckOutcome)>,
}

impl BridgeEntity {
    pub fn new(shared: Arc<Shared>, index: usize, entity_id: u32, queue_depth: usize) -> Self {
        BridgeEntity {
            shared,
            index,
            entity_id,
            attached: None,
            held: Vec::new(),
            capacity: queue_depth + 1,
            motion: Motion::default(),
            out: Vec::new(),
        }
    }

    /// Catches up with the connection threads: a new or lost process, its latest state, its
    /// answers, and whether it is hung.
    fn sync(&mut self) {
        let now = Instant::now();
        let timeout = self.shared.timeout;
        let mut answers = Vec::new();
        let mut hung = None;
        {
            let shared = self.shared.clone();
            let mut cells = shared.cells();
            let Some(cell) = cells.get_mut(self.index) else {
                return;
            };
            // The latest state first, also from a process just lost: its last pose is kept.
            if let Some(m) = cell.state.take() {
                self.motion = m;
            }
            let current = cell.conn.as_ref().map(|c| c.id);
            if self.attached.as_ref().map(|c| c.id) != current {
                if let Some(old) = self.attached.take() {
                    self.lost(&old, "its vehicle process disconnected");
                }
                self.attached = cell.conn.clone();
                if let Some(c) = &self.attached {
                    info!(
                        "entity {} is driven by vehicle connection {}",
                        self.entity_id, c.id
                    );
                }
            }
            if self.attached.is_none() {
                return;
            }
            answers.extend(cell.answers.drain(..));
            let silent = now.saturating_duration_since(cell.last_state);
            if silent > timeout {
                hung = Some(format!("no state for {} ms", silent.as_millis()));
            }
        }
        for (id, outcome) in answers {
            self.on_answer(id, outcome);
        }
        if hung.is_none() {
            if let Some(h) = self.held.iter().find(|h| {
                h.unanswered_since
                    .is_some_and(|t| now.saturating_duration_since(t) > timeout)
            }) {
                hung = Some(format!(
                    "segment {} not answered within {} ms",
                    h.id,
                    timeout.as_millis()
                ));
            }
        }
        if let Some(why) = hung {
            Counters::bump(&self.shared.counters.hung);
            self.drop_conn(&format!("hung: {why}"));
        }
    }

    fn on_answer(&mut self, id: u32, outcome: AckOutcome) {
        let Some(i) = self.held.iter().position(|h| h.id == id) else {
            debug!(
                "entity {}: answer {outcome:?} for segment {id}, which it does not hold: ignored",
                self.entity_id
            );
            return;
        };
        match outcome {
            AckOutcome::Accepted => {
                if self.held[i].unanswered_since.take().is_some() {
                    self.out.push((id, outcome));
                }
            }
            AckOutcome::Completed | AckOutcome::Rejected(_) => {
                self.held.remove(i);
                self.out.push((id, outcome));
            }
        }
    }

    /// The process is gone (or made to go): every segment it held fails.
    fn lost(&mut self, conn: &ConnRef, why: &str) {
        let n = self.held.len();
        for h in self.held.drain(..) {
            self.out
                .push((h.id, AckOutcome::Rejected(RejectReason::VehicleUnavailable)));
        }
        self.motion = stopped(self.motion);
        info!(
            "entity {} has no driver: connection {} {why}; {n} segments failed \
             (VehicleUnavailable)",
            self.entity_id, conn.id
        );
    }

    /// Closes the connection from this side (hung, not reading) and fails what it held.
    fn drop_conn(&mut self, why: &str) {
        let Some(conn) = self.attached.take() else {
            return;
        };
        conn.close();
        let _ = conn.tx.try_send(Vec::new());
        {
            let mut cells = self.shared.cells();
            if let Some(cell) = cells.get_mut(self.index) {
                if cell.conn.as_ref().map(|c| c.id) == Some(conn.id) {
                    cell.conn = None;
                }
            }
        }
        self.shared.warn(format_args!(
            "connection {} (entity {}) closed: {why}",
            conn.id, self.entity_id
        ));
        self.lost(&conn, why);
    }

    /// Queues a frame for the process; a full queue means it does not read.
    fn send(&mut self, frame: Frame) -> Result<(), ActionOutcome> {
        let Some(conn) = &self.attached else {
            return Err(ActionOutcome::VehicleUnavailable);
        };
        match conn.tx.try_send(frame.encode()) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                Counters::bump(&self.shared.counters.not_reading);
                self.drop_conn("its frame queue is full (it does not read)");
                Err(ActionOutcome::VehicleUnavailable)
            }
            Err(TrySendError::Disconnected(_)) => {
                self.drop_conn("its writer stopped");
                Err(ActionOutcome::VehicleUnavailable)
            }
        }
    }
}

impl Vehicle for BridgeEntity {
    fn accept(&mut self, seg: &Segment) -> Result<(), RejectReason> {
        self.sync();
        if self.attached.is_none() {
            return Err(RejectReason::VehicleUnavailable);
        }
        if self.held.len() >= self.capacity {
            return Err(RejectReason::QueueFull);
        }
        self.send(Frame::Segment(*seg))
            .map_err(|_| RejectReason::VehicleUnavailable)?;
        self.held.push(Held {
            id: seg.segment_id,
            unanswered_since: Some(Instant::now()),
        });
        Ok(())
    }

    fn step(&mut self, _dt: Duration) -> Option<u32> {
        None
    }

    /// Not polled: answers and a lost process wake the `vehicles` thread
    /// ([`Shared::wake`]), states are sampled at report time. While the process holds
    /// segments, the next event is when it would count as hung (no state, or a segment
    /// unanswered, for the bridge timeout).
    fn next_event(&self) -> Option<Duration> {
        if self.held.is_empty() || self.attached.is_none() {
            return None;
        }
        let last_state = self.shared.cells().get(self.index)?.last_state;
        let unanswered = self.held.iter().filter_map(|h| h.unanswered_since).min();
        let since = unanswered.map_or(last_state, |u| u.min(last_state));
        let hung_at = since + self.shared.timeout + Duration::from_millis(1);
        Some(hung_at.saturating_duration_since(Instant::now()))
    }

    fn state(&self) -> VehicleState {
        self.motion
    }

    fn abandon(&mut self) -> Vec<u32> {
        self.held.drain(..).map(|h| h.id).collect()
    }

    fn is_idle(&self) -> bool {
        self.held.is_empty()
    }

    fn cancel(&mut self, segment_id: Option<u32>) -> Result<Vec<u32>, ActionOutcome> {
        match segment_id {
            None => Ok(self
                .held
                .drain(1.min(self.held.len())..)
                .map(|h| h.id)
                .collect()),
            Some(id) => match self.held.iter().position(|h| h.id == id) {
                Some(i) => Ok(vec![self.held.remove(i).id]),
                None => Err(ActionOutcome::UnknownSegment),
            },
        }
    }

    fn answers_later(&self) -> bool {
        true
    }

    fn answers(&mut self, out: &mut Vec<(u32, AckOutcome)>) {
        self.sync();
        out.append(&mut self.out);
    }

    fn available(&self) -> bool {
        self.shared
            .cells()
            .get(self.index)
            .is_some_and(|c| c.conn.is_some())
    }

    fn flags(&self) -> EntityFlags {
        if self.attached.is_some() {
            EntityFlags::NONE
        } else {
            EntityFlags::NO_DRIVER
        }
    }

    fn sampler(&self) -> Box<dyn Sampler> {
        Box::new(BridgeSampler {
            shared: self.shared.clone(),
            index: self.index,
            motion: self.motion,
            attached: self.attached.as_ref().map(|c| c.id),
        })
    }

    fn act(&mut self, action: &Action) -> Result<(), ActionOutcome> {
        self.sync();
        let caps = match &self.attached {
            Some(c) => c.caps,
            None => return Err(ActionOutcome::VehicleUnavailable),
        };
        let needs = match action.action {
            ActionKind::Stop => Caps(0),
            ActionKind::Pause => Caps::PAUSE,
            // A vehicle that cannot pause has nothing to resume (a stopped one is idle): the
            // daemon clears its flags, the process hears nothing.
            ActionKind::Resume if !caps.contains(Caps::PAUSE) => return Ok(()),
            ActionKind::Resume => Caps::PAUSE,
            ActionKind::Cancel => Caps::CANCEL,
        };
        if !caps.contains(needs) {
            return Err(ActionOutcome::Unsupported);
        }
        self.send(Frame::Action(Action {
            target: Target::Entity(self.entity_id),
            ..*action
        }))
    }
}
