//! The `vehicles` thread: owns the entity handlers. It takes the segments and instant actions
//! the main loop routes to it (an action's effect is published at once: the segment acks it
//! caused, its ActionAck, then the state of every entity), publishes the acks (QoS 1, through
//! a bounded outbox that survives a full queue and outages) and the state reports, every
//! state interval, each entity sampled right then. On stop, unfinished segments are acked
//! `Rejected(ShuttingDown)`.
//!
//! It also sends the Pi's heartbeat ([`crate::heartbeat`]), in the same burst as the state
//! reports when both are due (their ticks start together, and the heartbeat interval is a
//! multiple of the state interval by default): one wake-up of the `mqtt-link` thread for both.
//!
//! It sleeps unless there is work: it wakes for an input, a state report or heartbeat that is due, the
//! soonest [`crate::vehicle::Vehicle::next_event`] (a simulated segment's end, computed exactly, not found by
//! stepping on a fine tick), and every [`STEP`] only while acks wait to be published or a
//! handler asks to be polled. Before any input it brings every entity up to now, so an
//! action acts on the pose of the moment.

use std::time::{Duration, Instant};

use common::ratelimit::RateLimiter;
use common::{AckOutcome, Action, RejectReason, Segment, SegmentAck, StateReport};
use crossbeam_channel::{Receiver, at, select};
use log::{debug, info, warn};
use mqtt_link::QoS;

use crate::clock;
use crate::entities::Entities;
use crate::heartbeat::Heartbeats;
use crate::link_change::LinkChange;
use crate::outbox::{Ack, Acks};
use crate::publisher::encode;
use crate::reject_budget::{REJECTS_PER_SECOND, RejectBudget};
use crate::state::StatePublisher;
use mqtt_link::{Held, Publisher};

/// The polling step of a handler without a known next event (and the retry period of acks
/// waiting in the outbox).
pub const STEP: Duration = Duration::from_millis(20);
/// A longer pause (machine suspended, process stopped) is not simulated as driving (at least
/// two state intervals are: the thread wakes at least that often).
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
    /// A timer: a report or heartbeat due, a handler's next event, or the outbox retry.
    Wake,
    Stop,
}

pub struct VehiclesLoop {
    pub entities: Entities,
    pub publisher: Publisher,
    pub ack_topic: String,
    /// The state reports, every `state_interval` and at once after an action or a reconnect.
    pub states: StatePublisher,
    pub state_interval: Duration,
    pub heartbeat: Heartbeats,
    /// Handlers that answer later (the vehicle bridge) ask for a step through this; never
    /// fires for the simulator.
    pub wakes: Receiver<()>,
    /// How far back acks are resent after a disconnect: about how long a dead connection
    /// can go unnoticed (1.5-2x the MQTT keep-alive).
    pub resend_window: Duration,
}

/// When the next state reports and heartbeat are due: fixed schedules from one origin (a
/// start or a reconnect), so with the heartbeat interval a multiple of the state interval
/// (500 ms and 100 ms by default) every heartbeat goes out with a round of reports, in one
/// burst. Missed times are skipped, never caught up. (`crossbeam_channel::tick` schedules
/// each tick from the previous delivery: two tickers drift apart by the wake-up latency.)
#[derive(Debug, Clone, Copy)]
struct Schedule {
    report: Instant,
    beat: Instant,
    report_every: Duration,
    beat_every: Duration,
}

/// A time this close ahead counts as due (timer slack), so two schedules that meet are
/// served by one wake-up.
const SLACK: Duration = Duration::from_millis(2);

impl Schedule {
    fn new(now: Instant, report_every: Duration, beat_every: Duration) -> Schedule {
        let report_every = report_every.max(Duration::from_millis(1));
        let beat_every = beat_every.max(Duration::from_millis(1));
        Schedule {
            report: now + report_every,
            beat: now + beat_every,
            report_every,
            beat_every,
        }
    }

    /// The sooner of the two.
    fn next(&self) -> Instant {
        self.report.min(self.beat)
    }

    /// Whether the reports and the heartbeat are due at `now`; those due move on to their
    /// next time after `now`.
    fn due(&mut self, now: Instant) -> (bool, bool) {
        fn take(at: &mut Instant, every: Duration, now: Instant) -> bool {
            if now + SLACK < *at {
                return false;
            }
            while *at <= now + SLACK {
                *at += every;
            }
            true
        }
        (
            take(&mut self.report, self.report_every, now),
            take(&mut self.beat, self.beat_every, now),
        )
    }
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
        let mut schedule =
            Schedule::new(Instant::now(), self.state_interval, self.heartbeat.interval);
        let max_dt = MAX_DT.max(self.state_interval * 2);
        let mut last = Instant::now();
        loop {
            // Whatever woke it last, what is due goes now, in one burst; here, at the top, so
            // that no branch below can skip it: a flood of inputs holds neither the reports
            // nor the heartbeat back by more than one event (every input brought the
            // entities up to its time).
            let (report, beat) = schedule.due(Instant::now());
            if report {
                self.flush(&mut outbox);
                self.publish(beat, &mut reports);
            } else if beat {
                self.states.publish(Some(&mut self.heartbeat), &[]);
            }
            // Woken for a handler's next event; every STEP while acks wait to be published.
            let next = match (self.entities.next_event(), outbox.is_empty()) {
                (next, true) => next,
                (Some(t), false) => Some(t.min(STEP)),
                (None, false) => Some(STEP),
            };
            let wake =
                at(next.map_or(schedule.next(), |d| schedule.next().min(Instant::now() + d)));
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
                    // The heartbeat and the state at once, and both schedules restarted from
                    // there, together.
                    self.flush(&mut outbox);
                    self.publish(true, &mut reports);
                    schedule =
                        Schedule::new(Instant::now(), self.state_interval, self.heartbeat.interval);
                }
                Event::Link(LinkChange::Down) => {
                    let n = outbox.on_disconnect(Instant::now());
                    if n > 0 {
                        debug!("{n} recent acks queued again after the disconnect");
                    }
                }
                Event::Wake => self.flush(&mut outbox),
            }
        }
        debug!("{} heartbeats sent", self.heartbeat.count());
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

    /// Every entity sampled now and published (QoS 0; dropped if it cannot be sent, the
    /// next interval carries it).
    fn publish_states(&mut self, reports: &mut Vec<StateReport>) {
        self.publish(false, reports);
    }

    /// The state of every entity, and the heartbeat first if `beat`: one burst.
    fn publish(&mut self, beat: bool, reports: &mut Vec<StateReport>) {
        self.entities.reports(clock::now_ms(), reports);
        let heartbeat = beat.then_some(&mut self.heartbeat);
        self.states.publish(heartbeat, reports);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heartbeat_goes_with_every_fifth_round_of_reports() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, ms(100), ms(500));
        let mut beats = Vec::new();
        for k in 1..=10u64 {
            // Woken a little late (timer slack), or a little early.
            let now = t0 + ms(100 * k) + if k % 2 == 0 { ms(1) } else { Duration::ZERO };
            assert_eq!(s.next(), t0 + ms(100 * k));
            let (report, beat) = s.due(now);
            assert!(report, "round {k}");
            if beat {
                beats.push(k);
            }
        }
        assert_eq!(beats, [5, 10]);
        // Nothing is due between rounds; a long stall skips the missed rounds.
        assert_eq!(s.due(t0 + ms(1050)), (false, false));
        assert_eq!(s.due(t0 + ms(2310)), (true, true));
        assert_eq!(s.next(), t0 + ms(2400));
        assert_eq!(s.due(t0 + ms(2399)), (true, false));
        assert_eq!(s.due(t0 + ms(2499)), (true, true));
    }
}
