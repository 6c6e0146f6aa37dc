//! The `vehicles` thread: owns the entity handlers. It takes the segments and instant actions
//! the main loop routes to it (an action's effect is published at once: the segment acks it
//! caused, its ActionAck, then the state of every entity), steps the simulation on a fixed tick (slower while every entity is idle), publishes the acks (QoS 1, through a
//! bounded outbox that survives a full queue and outages) and keeps the state snapshot that
//! the state publisher reads. On stop, unfinished segments are acked `Rejected(ShuttingDown)`.

use std::time::{Duration, Instant};

use common::ratelimit::RateLimiter;
use common::{AckOutcome, Action, Message, RejectReason, Segment, SegmentAck};
use crossbeam_channel::{Receiver, select, tick};
use log::{debug, info, warn};
use mqtt_link::QoS;

use crate::clock;
use crate::entities::Entities;
use crate::link_change::LinkChange;
use crate::outbox::{Ack, Acks};
use crate::publisher::encode;
use crate::reject_budget::{REJECTS_PER_SECOND, RejectBudget};
use crate::state::Snapshot;
use mqtt_link::{Held, Publisher};

/// The simulation step; the state snapshot is at most this old when published.
pub const STEP: Duration = Duration::from_millis(20);
/// A longer pause (machine suspended, process stopped) is not simulated as driving.
const MAX_DT: Duration = Duration::from_secs(1);
/// Acks waiting to be published.
pub const OUTBOX_CAPACITY: usize = 256;
/// Acks remembered after publishing, to resend after a disconnect.
pub const RECENT_ACKS: usize = 64;

/// What the main loop hands to the `vehicles` thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    Segment(Segment),
    Action(Action),
    /// The server has been gone for `server_lost_stop_after`: pause every entity.
    ServerLost,
}

enum Event {
    Input(Input),
    Link(LinkChange),
    Step,
    Stop,
}

pub struct VehiclesLoop {
    pub entities: Entities,
    pub publisher: Publisher,
    pub ack_topic: String,
    /// Where the state after an action is published at once.
    pub state_topic: String,
    pub snapshot: Snapshot,
    /// Simulation step (at most [`STEP`]; shorter with a very short state interval).
    pub step: Duration,
    /// The step while every entity is idle and no ack waits: the state interval, so the
    /// snapshot stays as fresh as the reports that carry it.
    pub idle_step: Duration,
    /// How far back acks are resent after a disconnect: about how long a dead connection
    /// can go unnoticed (1.5-2x the MQTT keep-alive).
    pub resend_window: Duration,
}

/// Rate-limited logging of rejected segments, one limiter per reason.
struct RejectLog {
    limiters: Vec<(RejectReason, RateLimiter)>,
}

impl RejectLog {
    fn new() -> RejectLog {
        RejectLog {
            limiters: RejectReason::ALL
                .iter()
                .map(|r| (*r, RateLimiter::new(Duration::from_secs(10))))
                .collect(),
        }
    }

    fn log(&mut self, ack: &SegmentAck, reason: RejectReason) {
        self.log_with(ack, reason, String::new());
    }

    /// A segment that arrived after its deadline (e.g. held in the socket while the Pi or
    /// its link was frozen): the server has given up on it, so it must not be driven.
    fn log_late(&mut self, ack: &SegmentAck, late_ms: u64) {
        let why = format!(" (arrived {late_ms} ms after its deadline; the server gave up on it)");
        self.log_with(ack, RejectReason::Expired, why);
    }

    fn log_with(&mut self, ack: &SegmentAck, reason: RejectReason, why: String) {
        let Some((_, limiter)) = self.limiters.iter_mut().find(|(r, _)| *r == reason) else {
            return;
        };
        if let Some(held) = limiter.check(Instant::now()) {
            let more = Held(held).note(format_args!("more {reason:?} rejections"));
            warn!(
                "segment {} for entity {} rejected: {reason:?}{why}{more}",
                ack.segment_id, ack.entity_id
            );
        }
    }
}

impl VehiclesLoop {
    /// Runs until `stop` disconnects (or the segment channel closes).
    pub fn run(mut self, stop: Receiver<()>, inputs: Receiver<Input>, link: Receiver<LinkChange>) {
        let mut outbox = Acks::new(OUTBOX_CAPACITY, RECENT_ACKS, self.resend_window);
        let mut rejects = RejectLog::new();
        let mut budget = RejectBudget::default();
        let mut unanswered_log = RateLimiter::new(Duration::from_secs(10));
        let mut overflow = RateLimiter::new(Duration::from_secs(30));
        let mut acks: Vec<SegmentAck> = Vec::new();
        let mut reports = Vec::new();
        let busy_ticker = tick(self.step);
        let idle_ticker = tick(self.idle_step.max(self.step));
        let mut last = Instant::now();
        loop {
            let idle = self.entities.all_idle() && outbox.is_empty();
            let ticker = if idle { &idle_ticker } else { &busy_ticker };
            let event = select! {
                recv(stop) -> _ => Event::Stop,
                recv(inputs) -> s => s.map(Event::Input).unwrap_or(Event::Stop),
                recv(link) -> c => c.map(Event::Link).unwrap_or(Event::Stop),
                recv(ticker) -> _ => Event::Step,
            };
            match event {
                Event::Stop => break,
                Event::Input(Input::Action(action)) => {
                    if idle {
                        last = Instant::now();
                    }
                    let done = self.entities.on_action(&action);
                    let a = done.ack;
                    if a.repeat {
                        debug!(
                            "action {} delivered again: answered from memory",
                            a.action_id
                        );
                    } else {
                        info!(
                            "action {} ({:?} {:?}, epoch {}): {:?}, {} segments cancelled",
                            a.action_id, a.action, a.target, action.epoch, a.outcome, a.cancelled
                        );
                    }
                    for ack in done.cancelled {
                        self.queue(&mut outbox, Ack::Segment(ack), &mut overflow);
                    }
                    self.queue(&mut outbox, Ack::Action(a), &mut overflow);
                    self.flush(&mut outbox);
                    if done.changed {
                        self.publish_state_now(&mut reports);
                    }
                }
                Event::Input(Input::ServerLost) => {
                    if self.entities.pause_all() {
                        self.publish_state_now(&mut reports);
                    }
                }
                Event::Input(Input::Segment(seg)) => {
                    if idle {
                        // Time spent idle is not driving time for the new segment.
                        last = Instant::now();
                    }
                    let now_ms = clock::now_ms();
                    let routed = self.entities.on_segment(&seg, now_ms);
                    let ack = routed.ack;
                    if routed.deferred {
                        debug!(
                            "segment {} for entity {}: handed to its vehicle process",
                            ack.segment_id, ack.entity_id
                        );
                        continue;
                    }
                    if let AckOutcome::Rejected(reason) = ack.outcome {
                        if !budget.allow(reason, Instant::now()) {
                            if let Some(held) = unanswered_log.check(Instant::now()) {
                                warn!(
                                    "more than {REJECTS_PER_SECOND}/s segments rejected: \
                                     {} {reason:?} rejections not answered since start \
                                     ({} in all; {held} lines not logged)",
                                    budget.unanswered(reason),
                                    budget.unanswered_total()
                                );
                            }
                            continue;
                        }
                    }
                    match ack.outcome {
                        _ if routed.duplicate => debug!(
                            "segment {} for entity {} delivered again: answered {:?}, not executed",
                            ack.segment_id, ack.entity_id, ack.outcome
                        ),
                        AckOutcome::Rejected(RejectReason::Expired) => {
                            rejects.log_late(&ack, seg.expired_by(now_ms).unwrap_or(0))
                        }
                        AckOutcome::Rejected(reason) => rejects.log(&ack, reason),
                        outcome => debug!(
                            "segment {} for entity {}: {outcome:?}",
                            ack.segment_id, ack.entity_id
                        ),
                    }
                    self.queue(&mut outbox, Ack::Segment(ack), &mut overflow);
                    self.flush(&mut outbox);
                }
                Event::Link(LinkChange::Up) => {
                    self.flush(&mut outbox);
                }
                Event::Link(LinkChange::Down) => {
                    let n = outbox.on_disconnect(Instant::now());
                    if n > 0 {
                        debug!("{n} recent acks queued again after the disconnect");
                    }
                }
                Event::Step => {
                    let now = Instant::now();
                    let dt = now.saturating_duration_since(last).min(MAX_DT);
                    last = now;
                    self.entities.step(dt, &mut acks);
                    for ack in acks.drain(..) {
                        debug!(
                            "entity {} segment {}: {:?}",
                            ack.entity_id, ack.segment_id, ack.outcome
                        );
                        self.queue(&mut outbox, Ack::Segment(ack), &mut overflow);
                    }
                    self.flush(&mut outbox);
                    self.update_snapshot(&mut reports);
                }
            }
        }
        self.entities.abandon(&mut acks);
        if !acks.is_empty() {
            info!("shutting down: {} unfinished segments dropped", acks.len());
        }
        for ack in acks.drain(..) {
            self.queue(&mut outbox, Ack::Segment(ack), &mut overflow);
        }
        self.flush(&mut outbox);
        if !outbox.is_empty() {
            warn!(
                "{} acks could not be published before shutdown",
                outbox.len()
            );
        }
    }

    /// Samples every entity into `reports` and the shared snapshot.
    fn update_snapshot(&self, reports: &mut Vec<common::StateReport>) {
        self.entities.reports(clock::now_ms(), reports);
        let mut snap = self.snapshot.lock().unwrap_or_else(|p| p.into_inner());
        snap.clone_from(reports);
    }

    /// After an action: the snapshot, and every entity's state published now (QoS 0, like
    /// the state ticker's; dropped if it cannot be sent, the next tick carries it).
    fn publish_state_now(&self, reports: &mut Vec<common::StateReport>) {
        self.update_snapshot(reports);
        if !self.publisher.is_connected() {
            return;
        }
        for r in reports.iter() {
            let payload = encode(Message::State(*r));
            if self
                .publisher
                .try_send(
                    &self.state_topic,
                    QoS::AtMostOnce,
                    false,
                    payload.as_slice(),
                )
                .is_err()
            {
                return;
            }
        }
    }

    fn queue(&self, outbox: &mut Acks, ack: Ack, overflow: &mut RateLimiter) {
        if let Some(lost) = outbox.push(ack) {
            if let Some(held) = overflow.check(Instant::now()) {
                let what = match lost {
                    Ack::Segment(a) => {
                        format!("segment {} for entity {}", a.segment_id, a.entity_id)
                    }
                    Ack::Action(a) => format!("action {}", a.action_id),
                };
                warn!(
                    "ack outbox full ({OUTBOX_CAPACITY}): dropped the ack of {what} \
                     ({} dropped in all, {})",
                    outbox.dropped,
                    Held(held).count("")
                );
            }
        }
    }

    fn flush(&self, outbox: &mut Acks) {
        if outbox.is_empty() || !self.publisher.is_connected() {
            return;
        }
        outbox.flush(Instant::now(), |ack| {
            self.publisher
                .try_send(
                    &self.ack_topic,
                    QoS::AtLeastOnce,
                    false,
                    encode(ack.message()).as_slice(),
                )
                .is_ok()
        });
    }
}
