//! Instant actions (protocol version 3, issue #14): the tracker owned by the registry thread.
//! It assigns action ids, publishes each [`Action`] at QoS 1 on `server/{id}/action`, waits
//! for its [`ActionAck`] on `rpi/{id}/ack`, re-publishes it (same id and epoch: the Pi answers
//! a repeat from memory and executes nothing twice) when no ack came within the ack timeout,
//! gives up after the last retry, and keeps the last [`JOURNAL_CAPACITY`] actions and what
//! became of them for `GET /api/actions/{id}` and the `action` events.
//!
//! Rules:
//! - Only to a Pi that is online and speaks version 3 (by its heartbeats): a version 1 or 2
//!   Pi gets nothing, the request fails at once `unsupported (protocol 2)`
//!   ([`ActionError::Unsupported`]). An entity-targeted action needs an entity the Pi has
//!   reported (as a segment does).
//! - Ids are a u32 counter seeded from the server's clock, never 0, never one still pending
//!   or in the journal: never reused within an epoch while it may still matter to a Pi (a Pi
//!   remembers its last 64 actions).
//! - At most [`MAX_IN_FLIGHT`] actions wait for their ack; more fail at once
//!   ([`ActionError::TooManyInFlight`]), except a `stop` of every entity of a Pi (the fleet
//!   stop's), which has [`STOP_RESERVE`] more places: a stop must not fail because the fleet
//!   is busy with other actions.
//! - An ack whose id is unknown, or that does not match what was sent to that Pi, is counted
//!   (`action_acks_unknown`), logged at most once per 10 s. A second ack of a finished action
//!   (a QoS 1 duplicate, a re-publication answered from memory) is counted
//!   (`action_acks_duplicate`).
//! - The segments an action dropped come back as `Rejected(Cancelled)` segment acks, before
//!   the ActionAck; the dispatcher finalises them as any rejection.
//!
//! A plain struct whose methods take `now` and a [`Publisher`], unit-tested without a broker.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use common::ratelimit::RateLimiter;
use common::wire::{Kind, LATEST};
use common::{Action, ActionAck, ActionKind, ActionOutcome, ClientId, Message, Target, TopicKind};
use crossbeam_channel::{Receiver, Sender};
use log::{debug, info, warn};
use mqtt_link::Held;
use serde::Serialize;

use crate::counters::Counters;
use crate::dispatch::{Publisher, send_order};
use crate::fleet::Fleet;

/// Actions waiting for their ack at most.
pub const MAX_IN_FLIGHT: usize = 1024;
/// Beyond [`MAX_IN_FLIGHT`], room kept for `stop` of every entity of a Pi (what the fleet stop
/// sends, one per Pi): a stop is never refused because other actions are pending, up to this
/// many more (above any realistic `max_pis`).
pub const STOP_RESERVE: usize = 16_384;
/// Actions remembered for the API; older ones are forgotten first.
pub const JOURNAL_CAPACITY: usize = 4096;
/// Finished actions held for the event feed between two drains.
const CHANGED_CAPACITY: usize = 1024;

/// The first action id: the server's clock in ms (mod 2^32), odd, so never 0.
pub fn seed_action_id() -> u32 {
    (mqtt_link::daemon::wall_ms() as u32) | 1
}

/// The tracker's settings.
#[derive(Debug, Clone, Copy)]
pub struct ActionConfig {
    /// How long to wait for an ack before re-publishing.
    pub ack_timeout: Duration,
    /// Re-publications after the first one, before giving up.
    pub retries: u32,
    pub max_in_flight: usize,
}

impl ActionConfig {
    pub fn new(ack_timeout: Duration, retries: u32) -> ActionConfig {
        ActionConfig {
            ack_timeout,
            retries,
            max_in_flight: MAX_IN_FLIGHT,
        }
    }
}

/// What to do: an action without its id and epoch (the tracker and the registry add them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionSpec {
    pub target: Target,
    pub action: ActionKind,
    /// `Cancel` only: the segment to drop, 0 = every queued one; 0 for the other actions.
    pub segment_id: u32,
}

/// Why an action was not sent at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionError {
    /// The server is not connected to the broker.
    NotConnected,
    /// The server has never heard of this Pi (or forgot it).
    UnknownPi,
    /// The Pi is known but offline.
    PiOffline,
    /// The Pi speaks this protocol version (below 3): it has no instant actions.
    Unsupported { protocol: u8 },
    /// The Pi is online but has not reported this entity.
    UnknownEntity,
    /// A `segment_id` with an action other than `Cancel`.
    SegmentIdNotCancel,
    /// [`MAX_IN_FLIGHT`] actions wait for their acks already.
    TooManyInFlight,
    /// The server is stopping.
    ShuttingDown,
    /// This server is a standby: only the leader gives orders (docs/protocol.md,
    /// "Leadership"); the HTTP API names the leader.
    NotLeader,
}

impl ActionError {
    /// A stable label (counters, metrics).
    pub fn label(self) -> &'static str {
        match self {
            ActionError::NotConnected => "not_connected",
            ActionError::UnknownPi => "unknown_pi",
            ActionError::PiOffline => "pi_offline",
            ActionError::Unsupported { .. } => "unsupported_protocol",
            ActionError::UnknownEntity => "unknown_entity",
            ActionError::SegmentIdNotCancel => "segment_id_not_cancel",
            ActionError::TooManyInFlight => "too_many_in_flight",
            ActionError::ShuttingDown => "shutting_down",
            ActionError::NotLeader => "not_leader",
        }
    }
}

impl std::fmt::Display for ActionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ActionError::NotConnected => f.write_str("server not connected to the broker"),
            ActionError::UnknownPi => f.write_str("unknown Pi"),
            ActionError::PiOffline => f.write_str("Pi is offline"),
            ActionError::Unsupported { protocol } => {
                write!(f, "unsupported (protocol {protocol})")
            }
            ActionError::UnknownEntity => f.write_str("the Pi has not reported this entity"),
            ActionError::SegmentIdNotCancel => f.write_str("segment_id is for cancel only"),
            ActionError::TooManyInFlight => f.write_str("too many actions in flight"),
            ActionError::ShuttingDown => f.write_str("server shutting down"),
            ActionError::NotLeader => f.write_str("not the leader"),
        }
    }
}

impl std::error::Error for ActionError {}

/// Why a sent action has no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionFailReason {
    /// No ack after this many publications.
    NoAck { attempts: u32 },
    /// The server stopped before the ack came.
    ShuttingDown,
}

impl ActionFailReason {
    pub fn label(self) -> &'static str {
        match self {
            ActionFailReason::NoAck { .. } => "no_ack",
            ActionFailReason::ShuttingDown => "shutting_down",
        }
    }
}

/// What became of a sent action: exactly one per action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionReport {
    /// The Pi's answer.
    Acked {
        outcome: ActionOutcome,
        /// The answer came from the Pi's memory (the action had been executed before).
        repeat: bool,
        /// Segments the action dropped (each reported `Rejected(Cancelled)`).
        cancelled: u8,
        /// The highest epoch the Pi has seen.
        fence: u32,
        /// First publication -> this ack.
        after: Duration,
        attempts: u32,
    },
    Failed(ActionFailReason),
}

/// A sent action's id and where its report arrives.
#[derive(Debug)]
pub struct ActionTicket {
    pub id: u32,
    pub report: Receiver<ActionReport>,
}

impl ActionTicket {
    /// Waits for the report.
    pub fn wait(&self, timeout: Duration) -> Option<ActionReport> {
        self.report.recv_timeout(timeout).ok()
    }
}

/// A fleet-wide stop's results: one per Pi known, sorted by id.
pub type StopAllResults = Vec<(String, Result<ActionTicket, ActionError>)>;

/// The snake_case name of an action kind.
pub fn kind_label(k: ActionKind) -> &'static str {
    match k {
        ActionKind::Stop => "stop",
        ActionKind::Pause => "pause",
        ActionKind::Resume => "resume",
        ActionKind::Cancel => "cancel",
    }
}

/// An action kind from its snake_case name.
pub fn parse_kind(s: &str) -> Option<ActionKind> {
    ActionKind::ALL.into_iter().find(|k| kind_label(*k) == s)
}

/// The snake_case name of an outcome.
pub fn outcome_label(o: ActionOutcome) -> &'static str {
    match o {
        ActionOutcome::Done => "done",
        ActionOutcome::UnknownEntity => "unknown_entity",
        ActionOutcome::UnknownSegment => "unknown_segment",
        ActionOutcome::Unsupported => "unsupported",
        ActionOutcome::VehicleUnavailable => "vehicle_unavailable",
        ActionOutcome::StaleLeader => "stale_leader",
    }
}

/// Every label of `fleet_actions_total{outcome=...}`: the Pi's outcomes, then the server's.
pub const OUTCOME_LABELS: [&str; 8] = [
    "done",
    "unknown_entity",
    "unknown_segment",
    "unsupported",
    "vehicle_unavailable",
    "stale_leader",
    "no_ack",
    "shutting_down",
];

/// One action as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionRecord {
    pub action_id: u32,
    pub pi: String,
    /// `entity` or `all`.
    pub target: &'static str,
    /// The entity, for `target` = `entity`.
    pub entity: Option<u32>,
    /// `stop`, `pause`, `resume` or `cancel`.
    pub action: &'static str,
    /// `cancel` only: the segment to drop, 0 = every queued one.
    pub segment_id: Option<u32>,
    pub epoch: u32,
    /// `sent` while waiting, the outcome once answered (`done`, `unknown_entity`, ...),
    /// `failed` without an answer.
    pub state: &'static str,
    /// The Pi's outcome, once answered.
    pub outcome: Option<&'static str>,
    /// Why it failed (`no_ack`, `shutting_down`).
    pub reason: Option<&'static str>,
    pub repeat: Option<bool>,
    pub cancelled: Option<u8>,
    pub fence: Option<u32>,
    /// Publications so far.
    pub attempts: u32,
    /// Wall clock, Unix ms.
    pub sent_at: u64,
    pub acked_at: Option<u64>,
}

/// An action waiting for its ack.
struct Pending {
    client: ClientId,
    action: Action,
    version: u8,
    notify: Option<Sender<ActionReport>>,
    first_sent: Instant,
    attempts: u32,
    next_check: Instant,
}

/// The tracker.
pub struct ActionTracker {
    cfg: ActionConfig,
    next_id: u32,
    pending: HashMap<u32, Pending>,
    /// Ack deadlines (lazy: entries of finished actions are skipped when popped).
    deadlines: BinaryHeap<Reverse<(Instant, u32)>>,
    records: HashMap<u32, ActionRecord>,
    /// Journal ids, oldest first.
    order: VecDeque<u32>,
    /// Finished actions since the last drain, for the event feed.
    changed: VecDeque<ActionRecord>,
    /// Wall clock at `base`, to put Instants on the wall clock.
    base: Instant,
    base_wall_ms: u64,
    ack_limit: RateLimiter,
    publish_limit: RateLimiter,
    noack_limit: RateLimiter,
}

impl ActionTracker {
    pub fn new(cfg: ActionConfig, first_id: u32) -> ActionTracker {
        ActionTracker {
            cfg,
            next_id: first_id.max(1),
            pending: HashMap::new(),
            deadlines: BinaryHeap::new(),
            records: HashMap::new(),
            order: VecDeque::new(),
            changed: VecDeque::new(),
            base: Instant::now(),
            base_wall_ms: mqtt_link::daemon::wall_ms(),
            ack_limit: RateLimiter::new(Duration::from_secs(10)),
            publish_limit: RateLimiter::new(Duration::from_secs(10)),
            noack_limit: RateLimiter::new(Duration::from_secs(10)),
        }
    }

    /// Actions waiting for their ack.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// One of the last actions.
    pub fn get(&self, id: u32) -> Option<&ActionRecord> {
        self.records.get(&id)
    }

    pub fn has_changes(&self) -> bool {
        !self.changed.is_empty()
    }

    /// The actions finished since the last call.
    pub fn take_changed(&mut self) -> Vec<ActionRecord> {
        self.changed.drain(..).collect()
    }

    fn wall(&self, now: Instant) -> u64 {
        self.base_wall_ms + now.saturating_duration_since(self.base).as_millis() as u64
    }

    fn allocate_id(&mut self) -> u32 {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1).max(1);
            if !self.pending.contains_key(&id) && !self.records.contains_key(&id) {
                return id;
            }
        }
    }

    /// Whether `spec` may go to Pi `pi` now: the Pi's id and protocol version.
    pub fn check(
        &self,
        fleet: &Fleet,
        pi: &str,
        spec: &ActionSpec,
        out: &dyn Publisher,
    ) -> Result<(ClientId, u8), ActionError> {
        if spec.segment_id != 0 && spec.action != ActionKind::Cancel {
            return Err(ActionError::SegmentIdNotCancel);
        }
        if !out.connected() {
            return Err(ActionError::NotConnected);
        }
        let p = fleet.pi(pi).ok_or(ActionError::UnknownPi)?;
        if !p.is_online() {
            return Err(ActionError::PiOffline);
        }
        if p.protocol < Kind::Action.since_version() {
            return Err(ActionError::Unsupported {
                protocol: p.protocol,
            });
        }
        if let Target::Entity(e) = spec.target {
            if !p.entities.contains_key(&e) {
                return Err(ActionError::UnknownEntity);
            }
        }
        let pi_stop = spec.action == ActionKind::Stop && spec.target == Target::All;
        let cap = if pi_stop {
            self.cfg.max_in_flight + STOP_RESERVE
        } else {
            self.cfg.max_in_flight
        };
        if self.pending.len() >= cap {
            return Err(ActionError::TooManyInFlight);
        }
        Ok((p.id.clone(), p.protocol.min(LATEST)))
    }

    /// Checks the target, assigns an id and publishes, stamped with `epoch`. `notify` hears
    /// the report. A refusal is counted by reason.
    #[allow(clippy::too_many_arguments)]
    pub fn send(
        &mut self,
        now: Instant,
        fleet: &Fleet,
        pi: &str,
        spec: ActionSpec,
        epoch: u32,
        notify: Option<Sender<ActionReport>>,
        counters: &mut Counters,
        out: &mut dyn Publisher,
    ) -> Result<u32, ActionError> {
        let (client, version) = match self.check(fleet, pi, &spec, out) {
            Ok(c) => c,
            Err(e) => {
                counters.action_refused(e.label());
                return Err(e);
            }
        };
        let id = self.allocate_id();
        let action = Action {
            action_id: id,
            epoch,
            target: spec.target,
            action: spec.action,
            segment_id: spec.segment_id,
        };
        self.publish(now, &client, &action, version, counters, out);
        counters.actions_sent += 1;
        let (target, entity) = match spec.target {
            Target::Entity(e) => ("entity", Some(e)),
            Target::All => ("all", None),
        };
        self.remember(ActionRecord {
            action_id: id,
            pi: client.to_string(),
            target,
            entity,
            action: kind_label(spec.action),
            segment_id: (spec.action == ActionKind::Cancel).then_some(spec.segment_id),
            epoch,
            state: "sent",
            outcome: None,
            reason: None,
            repeat: None,
            cancelled: None,
            fence: None,
            attempts: 1,
            sent_at: self.wall(now),
            acked_at: None,
        });
        debug!(
            "action {id} ({} {:?}, epoch {epoch}) -> {client}",
            kind_label(spec.action),
            spec.target
        );
        let next_check = now + self.cfg.ack_timeout;
        self.deadlines.push(Reverse((next_check, id)));
        self.pending.insert(
            id,
            Pending {
                client,
                action,
                version,
                notify,
                first_sent: now,
                attempts: 1,
                next_check,
            },
        );
        Ok(id)
    }

    fn remember(&mut self, r: ActionRecord) {
        if self.order.len() >= JOURNAL_CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.records.remove(&old);
            }
        }
        self.order.push_back(r.action_id);
        self.records.insert(r.action_id, r);
    }

    fn publish(
        &mut self,
        now: Instant,
        client: &ClientId,
        action: &Action,
        version: u8,
        counters: &mut Counters,
        out: &mut dyn Publisher,
    ) {
        send_order(
            out,
            &client.topic(TopicKind::Action),
            Message::Action(*action),
            version,
            now,
            &mut self.publish_limit,
            counters,
            format_args!("action {} for {client}", action.action_id),
        );
    }

    /// Finishes action `id`: journal, feed, counters, report.
    fn finish(&mut self, now: Instant, id: u32, report: ActionReport, counters: &mut Counters) {
        let Some(p) = self.pending.remove(&id) else {
            return;
        };
        let wall = self.wall(now);
        if let Some(r) = self.records.get_mut(&id) {
            r.attempts = p.attempts;
            match report {
                ActionReport::Acked {
                    outcome,
                    repeat,
                    cancelled,
                    fence,
                    ..
                } => {
                    r.state = outcome_label(outcome);
                    r.outcome = Some(outcome_label(outcome));
                    r.repeat = Some(repeat);
                    r.cancelled = Some(cancelled);
                    r.fence = Some(fence);
                    r.acked_at = Some(wall);
                }
                ActionReport::Failed(why) => {
                    r.state = "failed";
                    r.reason = Some(why.label());
                }
            }
            if self.changed.len() == CHANGED_CAPACITY {
                self.changed.pop_front();
            }
            self.changed.push_back(r.clone());
        }
        counters.action_outcome(match report {
            ActionReport::Acked { outcome, .. } => outcome_label(outcome),
            ActionReport::Failed(why) => why.label(),
        });
        if let Some(n) = &p.notify {
            let _ = n.try_send(report);
        }
    }

    /// An ActionAck from `client`.
    pub fn on_ack(&mut self, now: Instant, client: &str, ack: ActionAck, counters: &mut Counters) {
        let id = ack.action_id;
        let Some(p) = self.pending.get(&id) else {
            let ours = self
                .records
                .get(&id)
                .is_some_and(|r| r.pi == client && r.action == kind_label(ack.action));
            if ours {
                counters.action_acks_duplicate += 1;
            } else {
                counters.action_acks_unknown += 1;
                if let Some(held) = self.ack_limit.check(now) {
                    debug!(
                        "{client}: ack for action {id} that is not tracked{}",
                        Held(held).note("similar")
                    );
                }
            }
            return;
        };
        if p.client.as_str() != client
            || p.action.target != ack.target
            || p.action.action != ack.action
        {
            counters.action_acks_unknown += 1;
            if let Some(held) = self.ack_limit.check(now) {
                warn!(
                    "{client}: ack for action {id} ({:?} {:?}), which was {:?} {:?} to {}{}",
                    ack.action,
                    ack.target,
                    p.action.action,
                    p.action.target,
                    p.client,
                    Held(held).note("similar")
                );
            }
            return;
        }
        let after = now.saturating_duration_since(p.first_sent);
        counters.action_rtt.record(after);
        if ack.outcome == ActionOutcome::Done {
            debug!(
                "action {id} done by {client} after {:.1}ms ({} cancelled{})",
                after.as_secs_f64() * 1000.0,
                ack.cancelled,
                if ack.repeat { ", from memory" } else { "" }
            );
        } else {
            info!(
                "action {id} ({} {:?}) answered {:?} by {client}",
                kind_label(ack.action),
                ack.target,
                ack.outcome
            );
        }
        let report = ActionReport::Acked {
            outcome: ack.outcome,
            repeat: ack.repeat,
            cancelled: ack.cancelled,
            fence: ack.fence,
            after,
            attempts: p.attempts,
        };
        self.finish(now, id, report, counters);
    }

    /// Re-publishes what has no ack in time, fails what has no retries left. Call every tick.
    pub fn tick(&mut self, now: Instant, counters: &mut Counters, out: &mut dyn Publisher) {
        while let Some(&Reverse((deadline, id))) = self.deadlines.peek() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            let Some(p) = self.pending.get_mut(&id) else {
                continue;
            };
            if p.next_check != deadline {
                continue;
            }
            if p.attempts > self.cfg.retries {
                let attempts = p.attempts;
                if let Some(held) = self.noack_limit.check(now) {
                    warn!(
                        "action {id} to {}: no ack after {attempts} attempt(s); giving up{}",
                        p.client,
                        Held(held).note("similar")
                    );
                }
                self.finish(
                    now,
                    id,
                    ActionReport::Failed(ActionFailReason::NoAck { attempts }),
                    counters,
                );
                continue;
            }
            p.attempts += 1;
            p.next_check = now + self.cfg.ack_timeout;
            self.deadlines.push(Reverse((p.next_check, id)));
            let (client, action, version, attempts) =
                (p.client.clone(), p.action, p.version, p.attempts);
            if let Some(r) = self.records.get_mut(&id) {
                r.attempts = attempts;
            }
            debug!("action {id} re-sent to {client} (attempt {attempts})");
            self.publish(now, &client, &action, version, counters, out);
            counters.actions_retried += 1;
        }
    }

    /// Fails everything unanswered (the server is stopping).
    pub fn shutdown(&mut self, now: Instant, counters: &mut Counters) {
        let ids: Vec<u32> = self.pending.keys().copied().collect();
        for id in ids {
            self.finish(
                now,
                id,
                ActionReport::Failed(ActionFailReason::ShuttingDown),
                counters,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::FleetConfig;
    use common::{Heartbeat, Motion, StateReport};

    /// Records what would be published.
    #[derive(Default)]
    struct Recorder {
        sent: Vec<(String, Vec<u8>)>,
        down: bool,
    }

    impl Publisher for Recorder {
        fn connected(&self) -> bool {
            !self.down
        }
        fn publish(&mut self, topic: &str, payload: &[u8]) -> Result<(), String> {
            self.sent.push((topic.to_owned(), payload.to_vec()));
            Ok(())
        }
        fn publish_retained(&mut self, topic: &str, payload: &[u8]) -> Result<(), String> {
            self.publish(topic, payload)
        }
    }

    const TIMEOUT: Duration = Duration::from_millis(100);

    fn tracker() -> ActionTracker {
        ActionTracker::new(ActionConfig::new(TIMEOUT, 2), 7)
    }

    /// A fleet with Pi `a` (protocol `version`, entities 1 and 2) online.
    fn fleet(now: Instant, version: u8) -> Fleet {
        let mut f = Fleet::new(FleetConfig::new(
            Duration::from_secs(5),
            10,
            Duration::from_secs(600),
        ));
        let mut c = Counters::default();
        let hb = Message::Heartbeat(Heartbeat {
            seq: 1,
            timestamp_ms: 1,
        })
        .encode_as(version)
        .unwrap();
        let i = crate::ingest::classify("rpi/a/heartbeat", hb.as_slice()).unwrap();
        f.on_message(now, 1, &i, false, &mut c);
        for e in [1, 2] {
            let st = StateReport::new(e, 1, Motion::default()).encode();
            let i = crate::ingest::classify("rpi/a/state", st.as_slice()).unwrap();
            f.on_message(now, 1, &i, false, &mut c);
        }
        assert!(f.pi("a").unwrap().is_online());
        f
    }

    fn stop(target: Target) -> ActionSpec {
        ActionSpec {
            target,
            action: ActionKind::Stop,
            segment_id: 0,
        }
    }

    fn ack(id: u32, target: Target, repeat: bool) -> ActionAck {
        ActionAck {
            action_id: id,
            target,
            action: ActionKind::Stop,
            outcome: ActionOutcome::Done,
            repeat,
            cancelled: 3,
            fence: 0,
        }
    }

    #[test]
    fn an_action_is_published_acked_and_journaled() {
        let t0 = Instant::now();
        let f = fleet(t0, 3);
        let mut t = tracker();
        let mut c = Counters::default();
        let mut out = Recorder::default();
        let (tx, rx) = crossbeam_channel::bounded(1);
        let id = t
            .send(
                t0,
                &f,
                "a",
                stop(Target::Entity(1)),
                0,
                Some(tx),
                &mut c,
                &mut out,
            )
            .unwrap();
        assert_eq!(id, 7);
        assert_eq!(out.sent.len(), 1);
        assert_eq!(out.sent[0].0, "server/a/action");
        let Message::Action(a) = Message::decode(&out.sent[0].1).unwrap() else {
            panic!("an action");
        };
        assert_eq!((a.action_id, a.epoch, a.target), (7, 0, Target::Entity(1)));
        assert_eq!(t.get(7).unwrap().state, "sent");
        assert_eq!(t.in_flight(), 1);
        t.on_ack(
            t0 + Duration::from_millis(3),
            "a",
            ack(7, Target::Entity(1), false),
            &mut c,
        );
        let Some(ActionReport::Acked {
            outcome: ActionOutcome::Done,
            repeat: false,
            cancelled: 3,
            after,
            attempts: 1,
            ..
        }) = rx.try_recv().ok()
        else {
            panic!("a Done report");
        };
        assert_eq!(after, Duration::from_millis(3));
        let r = t.get(7).unwrap();
        assert_eq!(
            (r.state, r.cancelled, r.repeat),
            ("done", Some(3), Some(false))
        );
        assert!(r.acked_at.is_some());
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.take_changed().len(), 1);
        assert_eq!(c.actions.get("done"), Some(&1));
        // A QoS 1 duplicate of the ack: counted, nothing changes.
        t.on_ack(t0, "a", ack(7, Target::Entity(1), false), &mut c);
        assert_eq!(c.action_acks_duplicate, 1);
        // An id never sent, and an id sent to another Pi: unknown.
        t.on_ack(t0, "a", ack(99, Target::All, false), &mut c);
        t.on_ack(t0, "b", ack(7, Target::Entity(1), false), &mut c);
        assert_eq!(c.action_acks_unknown, 2);
        assert!(!t.has_changes());
    }

    #[test]
    fn an_unanswered_action_is_resent_and_a_repeat_answer_finishes_it() {
        let t0 = Instant::now();
        let f = fleet(t0, 3);
        let mut t = tracker();
        let mut c = Counters::default();
        let mut out = Recorder::default();
        let (tx, rx) = crossbeam_channel::bounded(1);
        let id = t
            .send(
                t0,
                &f,
                "a",
                stop(Target::All),
                0,
                Some(tx),
                &mut c,
                &mut out,
            )
            .unwrap();
        t.tick(t0 + TIMEOUT / 2, &mut c, &mut out);
        assert_eq!(out.sent.len(), 1, "not before the ack timeout");
        t.tick(t0 + TIMEOUT, &mut c, &mut out);
        assert_eq!(out.sent.len(), 2, "re-published at the ack timeout");
        assert_eq!(out.sent[0], out.sent[1], "the same id and epoch");
        assert_eq!(c.actions_retried, 1);
        // The first ack was lost; the Pi answers the second delivery from memory.
        t.on_ack(t0 + TIMEOUT, "a", ack(id, Target::All, true), &mut c);
        let Ok(ActionReport::Acked {
            repeat: true,
            attempts: 2,
            ..
        }) = rx.try_recv()
        else {
            panic!("a repeat report");
        };
        let r = t.get(id).unwrap();
        assert_eq!((r.state, r.repeat, r.attempts), ("done", Some(true), 2));
    }

    #[test]
    fn retries_are_bounded() {
        let t0 = Instant::now();
        let f = fleet(t0, 3);
        let mut t = tracker();
        let mut c = Counters::default();
        let mut out = Recorder::default();
        let (tx, rx) = crossbeam_channel::bounded(1);
        let id = t
            .send(
                t0,
                &f,
                "a",
                stop(Target::All),
                0,
                Some(tx),
                &mut c,
                &mut out,
            )
            .unwrap();
        for i in 1..=10 {
            t.tick(t0 + TIMEOUT * i, &mut c, &mut out);
        }
        assert_eq!(out.sent.len(), 3, "the first publication and 2 retries");
        assert_eq!(
            rx.try_recv().unwrap(),
            ActionReport::Failed(ActionFailReason::NoAck { attempts: 3 })
        );
        let r = t.get(id).unwrap();
        assert_eq!((r.state, r.reason), ("failed", Some("no_ack")));
        assert_eq!(c.actions.get("no_ack"), Some(&1));
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn refusals_send_nothing() {
        let t0 = Instant::now();
        let mut t = tracker();
        let mut c = Counters::default();
        let mut out = Recorder::default();
        let v2 = fleet(t0, 2);
        let e = t
            .send(t0, &v2, "a", stop(Target::All), 0, None, &mut c, &mut out)
            .unwrap_err();
        assert_eq!(e, ActionError::Unsupported { protocol: 2 });
        assert_eq!(e.to_string(), "unsupported (protocol 2)");
        let v3 = fleet(t0, 3);
        for (pi, spec, want) in [
            ("b", stop(Target::All), ActionError::UnknownPi),
            ("a", stop(Target::Entity(9)), ActionError::UnknownEntity),
            (
                "a",
                ActionSpec {
                    segment_id: 4,
                    ..stop(Target::All)
                },
                ActionError::SegmentIdNotCancel,
            ),
        ] {
            assert_eq!(
                t.send(t0, &v3, pi, spec, 0, None, &mut c, &mut out),
                Err(want)
            );
        }
        out.down = true;
        assert_eq!(
            t.send(t0, &v3, "a", stop(Target::All), 0, None, &mut c, &mut out),
            Err(ActionError::NotConnected)
        );
        assert!(out.sent.is_empty());
        assert_eq!(c.actions_refused.get("unsupported_protocol"), Some(&1));
        assert_eq!(c.actions_refused.values().sum::<u64>(), 5);
    }

    #[test]
    fn in_flight_is_bounded_and_ids_are_never_0_nor_reused() {
        let t0 = Instant::now();
        let f = fleet(t0, 3);
        let mut t = ActionTracker::new(
            ActionConfig {
                max_in_flight: 3,
                ..ActionConfig::new(TIMEOUT, 0)
            },
            u32::MAX,
        );
        let mut c = Counters::default();
        let mut out = Recorder::default();
        let ids: Vec<u32> = (0..3)
            .map(|_| {
                t.send(
                    t0,
                    &f,
                    "a",
                    stop(Target::Entity(1)),
                    0,
                    None,
                    &mut c,
                    &mut out,
                )
                .unwrap()
            })
            .collect();
        assert_eq!(ids, [u32::MAX, 1, 2], "0 is skipped");
        assert_eq!(
            t.send(
                t0,
                &f,
                "a",
                stop(Target::Entity(1)),
                0,
                None,
                &mut c,
                &mut out
            ),
            Err(ActionError::TooManyInFlight)
        );
        // A stop of the whole Pi (the fleet stop's) still goes, within its reserve.
        assert_eq!(
            t.send(t0, &f, "a", stop(Target::All), 0, None, &mut c, &mut out),
            Ok(3)
        );
        assert_eq!(t.in_flight(), 4);
        t.shutdown(t0, &mut c);
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.get(1).unwrap().reason, Some("shutting_down"));
    }
}
