//! The `vehicles` thread: owns the entity handlers. It takes the segments and instant actions
//! the main loop routes to it (an action's effect is published at once: the segment acks it
//! caused, its ActionAck, then the state of every entity) and publishes the acks (QoS 1,
//! through a bounded outbox that survives a full queue and outages). On stop, unfinished
//! segments are acked `Rejected(ShuttingDown)`.
//!
//! The rounds of state reports and heartbeats are not sent from here: the `mqtt-link` thread
//! publishes them itself ([`crate::rounds`]), sampling the board this thread leaves at each
//! of its wake-ups; after a (re)connect this thread sends a heartbeat and the states at once.
//!
//! It sleeps unless there is work: it wakes for an input, the soonest
//! [`crate::vehicle::Vehicle::next_event`] (a simulated segment's end, computed exactly, not
//! found by stepping on a fine tick; while something drives, at least every half
//! [`max_dt`]), and every [`STEP`] only while acks wait to be published or a handler asks to
//! be polled. Before any input it brings every entity up to now, so an action acts on the
//! pose of the moment.

use std::time::{Duration, Instant};

use common::ratelimit::RateLimiter;
use common::{AckOutcome, Action, RejectReason, Segment, SegmentAck, StateReport};
use crossbeam_channel::{Receiver, at, select};
use log::{debug, info, warn};
use mqtt_link::QoS;

use crate::clock;
use crate::entities::Entities;
use crate::link_change::LinkChange;
use crate::outbox::{Ack, Acks};
use crate::publisher::encode;
use crate::reject_budget::{REJECTS_PER_SECOND, RejectBudget};
use crate::rounds::SharedRounds;
use crate::state::StatePublisher;
use mqtt_link::{Held, Publisher};

/// The polling step of a handler without a known next event (and the retry period of acks
/// waiting in the outbox).
pub const STEP: Duration = Duration::from_millis(20);
/// A longer pause (machine suspended, process stopped) is not simulated as driving (at least
/// two state intervals are; the thread wakes at least every half of it while one drives).
const MAX_DT: Duration = Duration::from_secs(1);
/// The longest step simulated as driving: [`MAX_DT`], or two state intervals if longer.
pub fn max_dt(state_interval: Duration) -> Duration {
    MAX_DT.max(state_interval * 2)
}
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
    /// A timer: a report or heartbeat due, a handler's next event, or the outbox retry.
    Wake,
    Stop,
}

pub struct VehiclesLoop {
    pub entities: Entities,
    pub publisher: Publisher,
    pub ack_topic: String,
    /// The state reports sent from here: at once after an action or a reconnect (those of
    /// every `state_interval` are the `mqtt-link` thread's, [`crate::rounds`]).
    pub states: StatePublisher,
    pub state_interval: Duration,
    /// The rounds of reports and heartbeats the `mqtt-link` thread publishes: this thread
    /// keeps their board and restarts them after a connect.
    pub rounds: SharedRounds,
    /// Handlers that answer later (the vehicle bridge) ask for a step through this; never
    /// fires for the simulator.
    pub wakes: Receiver<()>,
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
        let max_dt = max_dt(self.state_interval);
        let mut last = Instant::now();
        loop {
            // The reports between now and the next wake-up sample this; here, at the top, so
            // that no branch below can skip it.
            self.rounds.lock().set_board(last, self.entities.board());
            // Woken for a handler's next event (while one drives, at least every half
            // `max_dt`: a longer gap is not simulated as driving); every STEP while acks wait
            // to be published.
            let next = match (self.entities.next_event(), outbox.is_empty()) {
                (next, true) => next.map(|d| d.min(max_dt / 2)),
                (Some(t), false) => Some(t.min(STEP)),
                (None, false) => Some(STEP),
            };
            let wake = next.map_or_else(crossbeam_channel::never, |d| at(Instant::now() + d));
            let event = select! {
                recv(stop) -> _ => Event::Stop,
                recv(inputs) -> s => s.map(Event::Input).unwrap_or(Event::Stop),
                recv(link) -> c => c.map(Event::Link).unwrap_or(Event::Stop),
                recv(wake) -> _ => Event::Wake,
                recv(self.wakes) -> _ => Event::Wake,
            };
            if matches!(event, Event::Stop) {
                break;
            }
            // Every entity up to now first: inputs act on the pose of the moment, reports
            // carry it.
            let now = Instant::now();
            let dt = now.saturating_duration_since(last).min(max_dt);
            last = now;
            self.entities.step(dt, &mut acks);
            for ack in acks.drain(..) {
                debug!(
                    "entity {} segment {}: {:?}",
                    ack.entity_id, ack.segment_id, ack.outcome
                );
                self.queue(&mut outbox, Ack::Segment(ack), &mut overflow);
            }
            match event {
                Event::Stop => break,
                Event::Input(Input::Action(action)) => {
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
                        self.publish_states(&mut reports);
                    }
                }
                Event::Input(Input::ServerLost) => {
                    if self.entities.pause_all() {
                        self.publish_states(&mut reports);
                    }
                }
                Event::Input(Input::Segment(seg)) => {
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
                    // The heartbeat and the state at once, and the rounds restarted from
                    // there.
                    self.flush(&mut outbox);
                    self.entities.reports(clock::now_ms(), &mut reports);
                    let mut rounds = self.rounds.lock();
                    self.states.publish(Some(&mut rounds.heartbeat), &reports);
                    rounds.restart(Instant::now());
                }
                Event::Link(LinkChange::Down) => {
                    self.rounds.lock().pause();
                    let n = outbox.on_disconnect(Instant::now());
                    if n > 0 {
                        debug!("{n} recent acks queued again after the disconnect");
                    }
                }
                Event::Wake => self.flush(&mut outbox),
            }
        }
        debug!("{} heartbeats sent", self.rounds.lock().heartbeat.count());
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

    /// Every entity sampled now and published at once (after an action; QoS 0, dropped if
    /// it cannot be sent: the next round carries it).
    fn publish_states(&mut self, reports: &mut Vec<StateReport>) {
        self.entities.reports(clock::now_ms(), reports);
        self.states.publish(None, reports);
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
