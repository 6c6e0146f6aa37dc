//! Segment dispatch: assigns segment ids, publishes segments at QoS 1 to
//! `server/{client_id}/segment`, tracks their acks, re-sends an unacknowledged segment up to
//! `segment_retries` times (one `ack_timeout` apart) and reports what became of each segment.
//! A plain struct whose methods take `now` and a [`Publisher`], unit-tested without a broker.
//!
//! Rules:
//! - A segment is only sent to a Pi that is online and to an entity that Pi has reported in a
//!   state report; otherwise dispatch fails at once ([`DispatchError`]). The server must know
//!   an entity before ordering it around (the Pi would answer `Rejected(UnknownEntity)`
//!   anyway, and a planner needs the entity's pose).
//! - Ids are a u32 counter seeded from the server's clock, never 0, so a restarted server
//!   does not reuse recent ids (a Pi executes a given id at most once per entity).
//! - The round trip is first publication -> `Accepted`; it is logged at debug and kept in the
//!   counters (last, p50, p99 over a window).
//! - Every segment to a Pi that speaks protocol version 2 carries a deadline: the moment the
//!   server gives up on delivering it (`ack_timeout x (segment_retries + 1)` after the first
//!   publication), converted to the Pi's clock with the offset learnt from its heartbeats
//!   (erring early, never late). A Pi refuses a segment that arrives later (`Rejected(Expired)`).
//!   The server reports an unaccepted segment failed only [`ACK_GRACE`] after its deadline, so
//!   a segment reported failed is one the Pi can no longer take: a segment stuck in a silent
//!   Pi's socket or in the broker is never executed behind the server's back.
//! - When a Pi goes offline, its accepted segments are *stranded*, not failed: the Pi keeps
//!   driving them (a vehicle does not stop on a Wi-Fi gap) and reports `Completed` when it is
//!   back. A stranded segment fails (`PiOffline`) only when the Pi shows it no longer has it:
//!   back online, the entity reports idle, or driving a segment sent after it, for
//!   [`ACK_GRACE`] without a `Completed` (the Pi restarted, or dropped it), or the Pi is
//!   forgotten by the registry. Unaccepted segments fail (`PiOffline`) at their deadline plus
//!   grace, unless the Pi comes back and takes them in time; those without a deadline
//!   (version 1 Pis) fail at once.
//! - At most `max_in_flight` segments are tracked; finished ones are kept for `grace` to
//!   recognise duplicate acks, then forgotten.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use common::ratelimit::RateLimiter;
use common::wire::NO_DEADLINE;
use common::{AckOutcome, ClientId, Message, Point, RejectReason, Segment, SegmentAck, TopicKind};
use crossbeam_channel::{Receiver, Sender};
use log::{debug, info, warn};

use crate::counters::Counters;
use crate::fleet::{Fleet, PiState};

/// After a segment's deadline, how long the server still waits for an `Accepted` the Pi may
/// have sent just before it: the time an ack may take to come back through the broker.
pub const ACK_GRACE: Duration = Duration::from_millis(500);

/// What to drive: a segment without its id (the dispatcher assigns it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SegmentSpec {
    pub entity_id: u32,
    pub start: Point,
    pub end: Point,
    pub velocity_start: i32,
    pub velocity_end: i32,
    pub segment_type: u8,
}

impl SegmentSpec {
    /// A straight line (`segment_type` 0).
    pub fn line(entity_id: u32, start: Point, end: Point, v_start: i32, v_end: i32) -> Self {
        SegmentSpec {
            entity_id,
            start,
            end,
            velocity_start: v_start,
            velocity_end: v_end,
            segment_type: 0,
        }
    }
}

/// Why a segment was not sent at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DispatchError {
    /// The server has never heard of this Pi (or forgot it).
    UnknownPi,
    /// The Pi is known but offline.
    PiOffline,
    /// The Pi is online but has not reported this entity.
    UnknownEntity,
    /// The server is not connected to the broker.
    NotConnected,
    /// Too many segments are being tracked already.
    TooManyInFlight,
    /// The server is stopping.
    ShuttingDown,
}

impl std::fmt::Display for DispatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DispatchError::UnknownPi => "unknown Pi",
            DispatchError::PiOffline => "Pi is offline",
            DispatchError::UnknownEntity => "the Pi has not reported this entity",
            DispatchError::NotConnected => "server not connected to the broker",
            DispatchError::TooManyInFlight => "too many segments in flight",
            DispatchError::ShuttingDown => "server shutting down",
        })
    }
}

impl std::error::Error for DispatchError {}

/// Why a sent segment could not be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    /// No ack after this many publications.
    NoAck { attempts: u32 },
    /// The Pi went offline and cannot have the segment any more: an unaccepted one whose
    /// deadline passed, or an accepted one the Pi came back without (or never came back).
    PiOffline,
    /// The server stopped before the segment finished.
    ShuttingDown,
}

/// What became of a segment, as it happens: `Accepted` first (unless the Pi refused it),
/// then exactly one final outcome (`Completed`, `Rejected` or `Failed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentOutcome {
    /// The Pi queued it. `round_trip` is first publication -> this ack.
    Accepted {
        round_trip: Duration,
        attempts: u32,
    },
    /// The entity reached the end; `after` is measured from the first publication.
    Completed {
        after: Duration,
    },
    Rejected(RejectReason),
    Failed(FailReason),
}

impl SegmentOutcome {
    pub fn is_final(&self) -> bool {
        !matches!(self, SegmentOutcome::Accepted { .. })
    }
}

/// A dispatched segment's id and where its outcomes arrive.
#[derive(Debug)]
pub struct SegmentTicket {
    pub id: u32,
    pub outcomes: Receiver<SegmentOutcome>,
}

impl SegmentTicket {
    /// Waits for the final outcome (Completed, Rejected or Failed), skipping `Accepted`.
    pub fn wait_final(&self, timeout: Duration) -> Option<SegmentOutcome> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.outcomes.recv_timeout(left) {
                Ok(o) if o.is_final() => return Some(o),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }
}

/// Where segments go: the MQTT client in the server, a recorder in tests.
pub trait Publisher {
    /// False while the server has no broker connection.
    fn connected(&self) -> bool;
    /// Queues a QoS 1, non-retained publish without blocking.
    fn publish(&mut self, topic: &str, payload: &[u8]) -> Result<(), String>;
}

/// The dispatcher's settings.
#[derive(Debug, Clone, Copy)]
pub struct DispatchConfig {
    pub ack_timeout: Duration,
    pub retries: u32,
    /// Finished segments are remembered this long, to recognise duplicate acks.
    pub grace: Duration,
    pub max_in_flight: usize,
}

impl DispatchConfig {
    pub fn new(ack_timeout: Duration, retries: u32) -> Self {
        DispatchConfig {
            ack_timeout,
            retries,
            grace: Duration::from_secs(10),
            max_in_flight: 65_536,
        }
    }

    /// How long after its first publication a segment may still be taken by the Pi: as long
    /// as the server keeps trying to deliver it.
    pub fn ttl(&self) -> Duration {
        self.ack_timeout
            .saturating_mul(self.retries.saturating_add(1))
    }
}

/// The deadline of a segment in the Pi's clock: `server_wall_ms + ttl`, less the Pi's clock
/// offset (`server - pi`, see [`crate::fleet::Pi::deadline_offset_ms`]). Heartbeats arrive
/// after their timestamp, so the offset is over-estimated by the one-way delay and the
/// deadline errs early.
pub fn pi_deadline_ms(server_wall_ms: u64, ttl: Duration, clock_offset_ms: i64) -> u64 {
    let d = i128::from(server_wall_ms) + ttl.as_millis() as i128 - i128::from(clock_offset_ms);
    d.clamp(0, i128::from(NO_DEADLINE - 1)) as u64
}

struct Tracked {
    client: ClientId,
    segment: Segment,
    /// The protocol version the Pi speaks (the segment is encoded in it).
    version: u8,
    notify: Option<Sender<SegmentOutcome>>,
    first_sent: Instant,
    /// When the next retry or give-up is due; heap entries for other instants are stale.
    next_check: Instant,
    /// The segment's deadline on the server's clock; None when it carries none.
    expires: Option<Instant>,
    attempts: u32,
    accepted_at: Option<Instant>,
    /// The Pi went offline while the segment was unaccepted: the reason if it fails.
    pi_offline: bool,
    /// Since when the entity of a stranded segment (see [`Dispatcher::settle_stranded`]) has
    /// shown, back online, that it no longer has it.
    idle_since: Option<Instant>,
    /// Reported failed (kept until `grace` to recognise late acks).
    failed: bool,
    done: bool,
}

impl Tracked {
    fn tell(&self, outcome: SegmentOutcome) {
        if let Some(tx) = &self.notify {
            // Never block the registry on a slow or gone listener.
            let _ = tx.try_send(outcome);
        }
    }
}

/// ` (N similar not logged)` after a rate-limited line, or nothing.
fn held_note(held: u64) -> String {
    if held > 0 {
        format!(" ({held} similar not logged)")
    } else {
        String::new()
    }
}

/// The first segment id: the server's clock in ms (mod 2^32), odd, so never 0.
pub fn seed_segment_id() -> u32 {
    (mqtt_link::daemon::wall_ms() as u32) | 1
}

pub struct Dispatcher {
    cfg: DispatchConfig,
    next_id: u32,
    tracked: HashMap<u32, Tracked>,
    /// Unfinished segments per Pi, to fail them when it goes offline.
    by_client: HashMap<String, BTreeSet<u32>>,
    /// Ack deadlines (lazy: stale entries are skipped when popped).
    deadlines: BinaryHeap<Reverse<(Instant, u32)>>,
    /// Accepted segments whose Pi went offline, until they are settled: settled by the Pi's
    /// later word ([`Dispatcher::settle_stranded`]).
    stranded: BTreeSet<u32>,
    /// Finished segments in the order they finished, forgotten after `grace`.
    finished: VecDeque<(Instant, u32)>,
    publish_limit: RateLimiter,
    noack_limit: RateLimiter,
    ack_limit: RateLimiter,
    reject_limit: RateLimiter,
}

impl Dispatcher {
    pub fn new(cfg: DispatchConfig, first_id: u32) -> Dispatcher {
        Dispatcher {
            cfg,
            next_id: first_id.max(1),
            tracked: HashMap::new(),
            by_client: HashMap::new(),
            deadlines: BinaryHeap::new(),
            stranded: BTreeSet::new(),
            finished: VecDeque::new(),
            publish_limit: RateLimiter::new(Duration::from_secs(10)),
            noack_limit: RateLimiter::new(Duration::from_secs(10)),
            ack_limit: RateLimiter::new(Duration::from_secs(10)),
            reject_limit: RateLimiter::new(Duration::from_secs(10)),
        }
    }

    /// Segments tracked (unfinished, and finished within the grace period).
    pub fn tracked(&self) -> usize {
        self.tracked.len()
    }

    /// Accepted segments whose Pi went offline, not settled yet.
    pub fn stranded(&self) -> usize {
        self.stranded.len()
    }

    /// Segments sent and not finished.
    pub fn in_flight(&self) -> usize {
        self.by_client.values().map(BTreeSet::len).sum()
    }

    fn allocate_id(&mut self) -> u32 {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1).max(1);
            if !self.tracked.contains_key(&id) {
                return id;
            }
        }
    }

    /// Checks the target, assigns an id and publishes. `notify` hears the outcomes.
    #[allow(clippy::too_many_arguments)]
    pub fn dispatch(
        &mut self,
        now: Instant,
        wall_ms: u64,
        fleet: &mut Fleet,
        client: &str,
        spec: SegmentSpec,
        notify: Option<Sender<SegmentOutcome>>,
        out: &mut dyn Publisher,
    ) -> Result<u32, DispatchError> {
        let checked = self.check(fleet, client, spec.entity_id, out);
        let counters = fleet.counters_mut();
        let (client, version, offset) = match checked {
            Ok(c) => c,
            Err(e) => {
                counters.dispatch_refused += 1;
                return Err(e);
            }
        };
        let id = self.allocate_id();
        let ttl = self.cfg.ttl();
        let (deadline_ms, expires) = match offset {
            Some(off) if version >= 2 => (pi_deadline_ms(wall_ms, ttl, off), Some(now + ttl)),
            _ => (NO_DEADLINE, None),
        };
        let segment = Segment {
            entity_id: spec.entity_id,
            segment_id: id,
            start: spec.start,
            end: spec.end,
            velocity_start: spec.velocity_start,
            velocity_end: spec.velocity_end,
            segment_type: spec.segment_type,
            deadline_ms,
            epoch: 0,
        };
        self.send(now, &client, &segment, version, counters, out);
        counters.segments_sent += 1;
        if expires.is_none() {
            counters.segments_without_deadline += 1;
        }
        debug!(
            "segment {id} -> {client}/{}: ({}, {}) -> ({}, {}), {}",
            spec.entity_id,
            spec.start.x,
            spec.start.y,
            spec.end.x,
            spec.end.y,
            if expires.is_some() {
                format!("deadline {deadline_ms} on the Pi's clock (in {ttl:?})")
            } else {
                format!("no deadline (protocol version {version})")
            }
        );
        self.by_client
            .entry(client.as_str().to_owned())
            .or_default()
            .insert(id);
        let next_check = now + self.cfg.ack_timeout;
        self.deadlines.push(Reverse((next_check, id)));
        self.tracked.insert(
            id,
            Tracked {
                client,
                segment,
                version,
                notify,
                first_sent: now,
                next_check,
                expires,
                attempts: 1,
                accepted_at: None,
                pi_offline: false,
                idle_since: None,
                failed: false,
                done: false,
            },
        );
        Ok(id)
    }

    fn check(
        &self,
        fleet: &Fleet,
        client: &str,
        entity_id: u32,
        out: &dyn Publisher,
    ) -> Result<(ClientId, u8, Option<i64>), DispatchError> {
        if !out.connected() {
            return Err(DispatchError::NotConnected);
        }
        let pi = fleet.pi(client).ok_or(DispatchError::UnknownPi)?;
        if !pi.is_online() {
            return Err(DispatchError::PiOffline);
        }
        if !pi.entities.contains_key(&entity_id) {
            return Err(DispatchError::UnknownEntity);
        }
        if self.tracked.len() >= self.cfg.max_in_flight {
            return Err(DispatchError::TooManyInFlight);
        }
        Ok((pi.id.clone(), pi.protocol, pi.deadline_offset_ms()))
    }

    fn send(
        &mut self,
        now: Instant,
        client: &ClientId,
        segment: &Segment,
        version: u8,
        counters: &mut Counters,
        out: &mut dyn Publisher,
    ) {
        let topic = client.topic(TopicKind::Segment);
        let sent = Message::Segment(*segment)
            .encode_as(version)
            .map_err(|e| e.to_string())
            .and_then(|payload| out.publish(&topic, payload.as_slice()));
        if let Err(e) = sent {
            counters.publish_failures += 1;
            if let Some(held) = self.publish_limit.check(now) {
                warn!(
                    "could not queue segment {} for {client}: {e}; will retry{}",
                    segment.segment_id,
                    held_note(held)
                );
            }
        }
    }

    /// An ack from `client`.
    pub fn on_ack(&mut self, now: Instant, client: &str, ack: SegmentAck, counters: &mut Counters) {
        let Some(t) = self.tracked.get_mut(&ack.segment_id) else {
            counters.acks_unknown += 1;
            if self.ack_limit.check(now).is_some() {
                debug!(
                    "{client}: ack for segment {} that is not tracked (expired or not ours)",
                    ack.segment_id
                );
            }
            return;
        };
        if t.client.as_str() != client || t.segment.entity_id != ack.entity_id {
            counters.acks_unknown += 1;
            if let Some(held) = self.ack_limit.check(now) {
                warn!(
                    "{client}: ack for segment {} of entity {}, which was sent to {}/{}{}",
                    ack.segment_id,
                    ack.entity_id,
                    t.client,
                    t.segment.entity_id,
                    held_note(held)
                );
            }
            return;
        }
        if t.done {
            match ack.outcome {
                AckOutcome::Rejected(RejectReason::Expired) if t.failed => {
                    counters.late_refused += 1;
                    debug!(
                        "{client}: segment {} arrived after its deadline and was refused, as \
                         intended (reported failed already)",
                        ack.segment_id
                    );
                }
                AckOutcome::Accepted | AckOutcome::Completed if t.failed => {
                    counters.late_outcomes += 1;
                    if let Some(held) = self.ack_limit.check(now) {
                        info!(
                            "{client}: segment {} {:?} after it was reported failed (an ack \
                             later than the deadline's grace){}",
                            ack.segment_id,
                            ack.outcome,
                            held_note(held)
                        );
                    }
                }
                _ => counters.acks_duplicate += 1,
            }
            return;
        }
        let id = ack.segment_id;
        let accept = |t: &mut Tracked, counters: &mut Counters, with_rtt: bool| {
            t.accepted_at = Some(now);
            counters.segments_acked += 1;
            let round_trip = now.saturating_duration_since(t.first_sent);
            if with_rtt {
                counters.rtt.record(round_trip);
            }
            debug!(
                "segment {id} accepted by {}/{}: round trip {:.1}ms ({} attempt(s))",
                t.client,
                t.segment.entity_id,
                round_trip.as_secs_f64() * 1000.0,
                t.attempts
            );
            t.tell(SegmentOutcome::Accepted {
                round_trip,
                attempts: t.attempts,
            });
        };
        match ack.outcome {
            AckOutcome::Accepted => {
                if t.accepted_at.is_some() {
                    counters.acks_duplicate += 1;
                } else {
                    accept(t, counters, true);
                }
            }
            AckOutcome::Completed => {
                if t.accepted_at.is_none() {
                    // The Accepted was lost or overtaken; the round trip is unknown.
                    accept(t, counters, false);
                }
                counters.segments_completed += 1;
                let after = now.saturating_duration_since(t.first_sent);
                t.tell(SegmentOutcome::Completed { after });
                debug!("segment {id} completed after {after:?}");
                self.finish(now, id);
            }
            AckOutcome::Rejected(reason) => {
                counters.segments_rejected += 1;
                t.tell(SegmentOutcome::Rejected(reason));
                if let Some(held) = self.reject_limit.check(now) {
                    info!(
                        "segment {id} rejected by {}/{}: {reason:?}{}",
                        t.client,
                        t.segment.entity_id,
                        held_note(held)
                    );
                }
                self.finish(now, id);
            }
        }
    }

    /// Marks `id` finished: no more retries or outcomes, kept for `grace`.
    fn finish(&mut self, now: Instant, id: u32) {
        let Some(t) = self.tracked.get_mut(&id) else {
            return;
        };
        t.done = true;
        t.notify = None;
        self.stranded.remove(&id);
        if let Some(set) = self.by_client.get_mut(t.client.as_str()) {
            set.remove(&id);
            if set.is_empty() {
                self.by_client.remove(t.client.as_str());
            }
        }
        self.finished.push_back((now, id));
    }

    fn fail(&mut self, now: Instant, id: u32, why: FailReason, counters: &mut Counters) {
        if let Some(t) = self.tracked.get_mut(&id) {
            if t.done {
                return;
            }
            t.failed = true;
            counters.segments_failed += 1;
            t.tell(SegmentOutcome::Failed(why));
            debug!(
                "segment {id} to {}/{} failed: {why:?}",
                t.client, t.segment.entity_id
            );
        }
        self.finish(now, id);
    }

    /// A Pi went offline: its accepted segments are stranded (the Pi keeps driving them), its
    /// unaccepted ones without a deadline fail now, the others fail at their deadline plus
    /// [`ACK_GRACE`] unless the Pi takes them in time.
    pub fn on_pi_offline(&mut self, now: Instant, client: &str, counters: &mut Counters) {
        let Some(ids) = self.by_client.get(client) else {
            return;
        };
        let mut now_failing = Vec::new();
        for id in ids {
            let Some(t) = self.tracked.get_mut(id) else {
                continue;
            };
            if t.accepted_at.is_some() {
                if self.stranded.insert(*id) {
                    t.idle_since = None;
                    debug!(
                        "segment {id}: {} went offline while driving it; waiting for its word",
                        t.client
                    );
                }
            } else if t.expires.is_none() {
                now_failing.push(*id);
            } else {
                t.pi_offline = true;
            }
        }
        for id in now_failing {
            self.fail(now, id, FailReason::PiOffline, counters);
        }
    }

    /// Re-sends what is unacknowledged past its deadline, fails what has no retries left,
    /// and forgets finished segments after the grace period. Call every ~50 ms.
    pub fn tick(&mut self, now: Instant, counters: &mut Counters, out: &mut dyn Publisher) {
        while let Some(&Reverse((deadline, id))) = self.deadlines.peek() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            let Some(t) = self.tracked.get_mut(&id) else {
                continue;
            };
            if t.done || t.accepted_at.is_some() || t.next_check != deadline {
                continue;
            }
            let expired = t.expires.is_some_and(|e| now >= e);
            if t.attempts > self.cfg.retries || expired {
                // Not before the Pi can no longer take it (plus the time its ack may need).
                if let Some(give_up) = t.expires.map(|e| e + ACK_GRACE) {
                    if now < give_up {
                        t.next_check = give_up;
                        self.deadlines.push(Reverse((give_up, id)));
                        continue;
                    }
                }
                let attempts = t.attempts;
                let why = if t.pi_offline {
                    FailReason::PiOffline
                } else {
                    if let Some(held) = self.noack_limit.check(now) {
                        warn!(
                            "segment {id} to {}/{}: no ack after {attempts} attempt(s); giving up{}",
                            t.client,
                            t.segment.entity_id,
                            held_note(held)
                        );
                    }
                    FailReason::NoAck { attempts }
                };
                self.fail(now, id, why, counters);
                continue;
            }
            t.attempts += 1;
            t.next_check = now + self.cfg.ack_timeout;
            self.deadlines.push(Reverse((t.next_check, id)));
            let (client, segment, version) = (t.client.clone(), t.segment, t.version);
            debug!("segment {id} re-sent to {client} (attempt {})", t.attempts);
            self.send(now, &client, &segment, version, counters, out);
            counters.segments_retried += 1;
        }
        while let Some(&(at, id)) = self.finished.front() {
            if now.saturating_duration_since(at) < self.cfg.grace {
                break;
            }
            self.finished.pop_front();
            self.tracked.remove(&id);
        }
    }

    /// Settles stranded segments (accepted, then their Pi went offline) that the Pi no longer
    /// has: for [`ACK_GRACE`], in reports received since the Pi came back, its entity is idle
    /// or drives a segment sent after it, with no `Completed` (the Pi restarted or dropped
    /// it); or the Pi was forgotten by the registry. They fail `PiOffline`. Call every tick.
    pub fn settle_stranded(&mut self, now: Instant, fleet: &mut Fleet) {
        if self.stranded.is_empty() {
            return;
        }
        // First look (the fleet and the other segments), then update.
        let mut seen = Vec::with_capacity(self.stranded.len());
        for id in &self.stranded {
            let Some(t) = self.tracked.get(id) else {
                continue;
            };
            let Some(pi) = fleet.pi(t.client.as_str()) else {
                seen.push((*id, None)); // forgotten by the registry
                continue;
            };
            let without_it = match pi.state {
                PiState::Online { since } => pi
                    .entities
                    .get(&t.segment.entity_id)
                    .is_some_and(|e| e.updated > since && self.moved_past(t, e.report.segment_id)),
                PiState::Offline { .. } => false,
            };
            seen.push((*id, Some(without_it)));
        }
        let mut lost = Vec::new();
        for (id, without_it) in seen {
            let Some(t) = self.tracked.get_mut(&id) else {
                continue;
            };
            match without_it {
                None => lost.push(id),
                Some(false) => t.idle_since = None,
                Some(true) => {
                    let since = *t.idle_since.get_or_insert(now);
                    if now.saturating_duration_since(since) >= ACK_GRACE {
                        lost.push(id);
                    }
                }
            }
        }
        let counters = fleet.counters_mut();
        for id in lost {
            if let Some(t) = self.tracked.get(&id) {
                info!(
                    "segment {id}: {}/{} is back without it (no Completed): failed",
                    t.client, t.segment.entity_id
                );
            }
            self.fail(now, id, FailReason::PiOffline, counters);
        }
    }

    /// The entity of `t` reports driving `current` (0: idle): is `t` behind it? Idle, or a
    /// segment this server sent the entity after `t` (an entity's queue is first in, first out,
    /// so `t` is done or dropped).
    fn moved_past(&self, t: &Tracked, current: u32) -> bool {
        if current == 0 {
            return true;
        }
        self.tracked.get(&current).is_some_and(|later| {
            later.client == t.client
                && later.segment.entity_id == t.segment.entity_id
                && later.first_sent > t.first_sent
        })
    }

    /// Fails everything unfinished (the server is stopping).
    pub fn shutdown(&mut self, now: Instant, counters: &mut Counters) {
        let ids: Vec<u32> = self.by_client.values().flatten().copied().collect();
        for id in ids {
            self.fail(now, id, FailReason::ShuttingDown, counters);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::FleetConfig;
    use common::{Heartbeat, Message, StateReport};

    #[derive(Default)]
    struct Recorder {
        down: bool,
        full: bool,
        sent: Vec<(String, Segment)>,
        raw: Vec<Vec<u8>>,
    }

    impl Publisher for Recorder {
        fn connected(&self) -> bool {
            !self.down
        }
        fn publish(&mut self, topic: &str, payload: &[u8]) -> Result<(), String> {
            if self.full {
                return Err("queue full".into());
            }
            let Ok(Message::Segment(s)) = Message::decode(payload) else {
                panic!("not a segment: {payload:?}");
            };
            self.sent.push((topic.to_owned(), s));
            self.raw.push(payload.to_vec());
            Ok(())
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The server's wall clock at `t0`, ms since the epoch.
    const WALL: u64 = 1_764_000_000_000;

    fn fleet_with(t0: Instant, pis: &[(&str, &[u32])]) -> Fleet {
        let mut f = Fleet::new(FleetConfig::new(ms(1500), 100, Duration::from_secs(600)));
        for (id, entities) in pis {
            f.on_heartbeat(
                t0,
                0,
                id,
                Heartbeat {
                    seq: 1,
                    timestamp_ms: 0,
                },
            );
            for e in *entities {
                f.on_state(t0, id, report(*e, 0));
            }
        }
        f
    }

    fn spec(entity: u32) -> SegmentSpec {
        SegmentSpec::line(entity, Point::new(0, 0), Point::new(1000, 0), 300, 500)
    }

    fn ack(entity_id: u32, segment_id: u32, outcome: AckOutcome) -> SegmentAck {
        SegmentAck {
            entity_id,
            segment_id,
            outcome,
        }
    }

    fn dispatcher() -> Dispatcher {
        Dispatcher::new(DispatchConfig::new(ms(1000), 2), 41)
    }

    #[test]
    fn refuses_what_cannot_be_delivered() {
        let t0 = Instant::now();
        let mut f = fleet_with(t0, &[("a", &[1])]);
        let mut d = dispatcher();
        let mut out = Recorder::default();
        let go = |f: &mut Fleet, d: &mut Dispatcher, out: &mut Recorder, pi: &str, e: u32| {
            d.dispatch(t0, WALL, f, pi, spec(e), None, out)
        };
        assert_eq!(
            go(&mut f, &mut d, &mut out, "nope", 1),
            Err(DispatchError::UnknownPi)
        );
        assert_eq!(
            go(&mut f, &mut d, &mut out, "a", 2),
            Err(DispatchError::UnknownEntity)
        );
        out.down = true;
        assert_eq!(
            go(&mut f, &mut d, &mut out, "a", 1),
            Err(DispatchError::NotConnected)
        );
        out.down = false;
        f.tick(t0 + ms(2000));
        assert_eq!(
            go(&mut f, &mut d, &mut out, "a", 1),
            Err(DispatchError::PiOffline)
        );
        assert!(out.sent.is_empty());
        assert_eq!(f.counters().dispatch_refused, 4);
        assert_eq!(d.tracked(), 0);
    }

    #[test]
    fn accepted_then_completed_with_round_trip() {
        let t0 = Instant::now();
        let mut f = fleet_with(t0, &[("a", &[1, 2])]);
        let mut d = dispatcher();
        let mut out = Recorder::default();
        let (tx, rx) = crossbeam_channel::bounded(4);
        let id = d
            .dispatch(t0, WALL, &mut f, "a", spec(2), Some(tx), &mut out)
            .unwrap();
        assert_eq!(id, 41);
        assert_eq!(out.sent.len(), 1);
        assert_eq!(out.sent[0].0, "server/a/segment");
        assert_eq!(out.sent[0].1.segment_id, 41);
        assert_eq!(out.sent[0].1.entity_id, 2);
        let c = f.counters_mut();
        d.on_ack(t0 + ms(7), "a", ack(2, id, AckOutcome::Accepted), c);
        d.on_ack(t0 + ms(9), "a", ack(2, id, AckOutcome::Accepted), c); // duplicate
        assert_eq!(
            rx.try_recv(),
            Ok(SegmentOutcome::Accepted {
                round_trip: ms(7),
                attempts: 1
            })
        );
        assert!(rx.try_recv().is_err());
        d.on_ack(t0 + ms(3000), "a", ack(2, id, AckOutcome::Completed), c);
        assert_eq!(
            rx.try_recv(),
            Ok(SegmentOutcome::Completed { after: ms(3000) })
        );
        d.on_ack(t0 + ms(3001), "a", ack(2, id, AckOutcome::Completed), c);
        assert_eq!(c.segments_acked, 1);
        assert_eq!(c.segments_completed, 1);
        assert_eq!(c.acks_duplicate, 2);
        assert_eq!(c.rtt.last(), Some(ms(7)));
        // No retries after the ack, even long after.
        d.tick(t0 + ms(5000), c, &mut out);
        assert_eq!(out.sent.len(), 1);
        assert_eq!(d.in_flight(), 0);
        // Forgotten after the grace period; a late ack is then unknown.
        d.tick(t0 + ms(3000) + Duration::from_secs(10), c, &mut out);
        assert_eq!(d.tracked(), 0);
        d.on_ack(t0 + ms(20_000), "a", ack(2, id, AckOutcome::Completed), c);
        assert_eq!(c.acks_unknown, 1);
    }

    #[test]
    fn retries_then_fails_without_ack() {
        let t0 = Instant::now();
        let mut f = fleet_with(t0, &[("a", &[1])]);
        let mut d = dispatcher(); // 2 retries, 1 s apart
        let mut out = Recorder::default();
        let (tx, rx) = crossbeam_channel::bounded(4);
        let id = d
            .dispatch(t0, WALL, &mut f, "a", spec(1), Some(tx), &mut out)
            .unwrap();
        let c = f.counters_mut();
        d.tick(t0 + ms(999), c, &mut out);
        assert_eq!(out.sent.len(), 1);
        d.tick(t0 + ms(1000), c, &mut out);
        d.tick(t0 + ms(2000), c, &mut out);
        assert_eq!(out.sent.len(), 3);
        assert!(
            out.sent.iter().all(|(_, s)| s.segment_id == id),
            "same id re-sent"
        );
        assert!(rx.try_recv().is_err());
        d.tick(t0 + ms(3000), c, &mut out);
        assert_eq!(out.sent.len(), 3);
        assert_eq!(
            rx.try_recv(),
            Ok(SegmentOutcome::Failed(FailReason::NoAck { attempts: 3 }))
        );
        assert_eq!(
            (c.segments_sent, c.segments_retried, c.segments_failed),
            (1, 2, 1)
        );
        // A late Accepted after failure is counted, not a new outcome.
        d.on_ack(t0 + ms(3100), "a", ack(1, id, AckOutcome::Accepted), c);
        assert_eq!((c.late_outcomes, c.acks_duplicate), (1, 0));
        assert_eq!(c.segments_acked, 0);
    }

    #[test]
    fn ack_on_a_retry_reports_attempts_and_publish_failures_are_retried() {
        let t0 = Instant::now();
        let mut f = fleet_with(t0, &[("a", &[1])]);
        let mut d = dispatcher();
        let mut out = Recorder {
            full: true,
            ..Default::default()
        };
        let (tx, rx) = crossbeam_channel::bounded(4);
        let id = d
            .dispatch(t0, WALL, &mut f, "a", spec(1), Some(tx), &mut out)
            .unwrap();
        assert_eq!(f.counters().publish_failures, 1);
        out.full = false;
        let c = f.counters_mut();
        d.tick(t0 + ms(1000), c, &mut out);
        assert_eq!(out.sent.len(), 1);
        d.on_ack(t0 + ms(1010), "a", ack(1, id, AckOutcome::Accepted), c);
        assert_eq!(
            rx.try_recv(),
            Ok(SegmentOutcome::Accepted {
                round_trip: ms(1010),
                attempts: 2
            })
        );
    }

    #[test]
    fn rejection_and_acks_from_the_wrong_pi() {
        let t0 = Instant::now();
        let mut f = fleet_with(t0, &[("a", &[1]), ("b", &[1])]);
        let mut d = dispatcher();
        let mut out = Recorder::default();
        let (tx, rx) = crossbeam_channel::bounded(4);
        let id = d
            .dispatch(t0, WALL, &mut f, "a", spec(1), Some(tx), &mut out)
            .unwrap();
        let c = f.counters_mut();
        d.on_ack(t0, "b", ack(1, id, AckOutcome::Accepted), c);
        d.on_ack(t0, "a", ack(9, id, AckOutcome::Accepted), c);
        assert_eq!(c.acks_unknown, 2);
        assert!(rx.try_recv().is_err());
        d.on_ack(
            t0,
            "a",
            ack(1, id, AckOutcome::Rejected(RejectReason::QueueFull)),
            c,
        );
        assert_eq!(
            rx.try_recv(),
            Ok(SegmentOutcome::Rejected(RejectReason::QueueFull))
        );
        assert_eq!(c.segments_rejected, 1);
        assert_eq!(d.in_flight(), 0);
    }

    #[test]
    fn pi_going_offline_strands_accepted_segments_and_fails_undeliverable_ones() {
        let t0 = Instant::now();
        let mut f = fleet_with(t0, &[("a", &[1, 2]), ("b", &[1])]);
        let mut d = dispatcher();
        let mut out = Recorder::default();
        let (tx, rx) = crossbeam_channel::unbounded();
        let a1 = d
            .dispatch(t0, WALL, &mut f, "a", spec(1), Some(tx.clone()), &mut out)
            .unwrap();
        let a2 = d
            .dispatch(t0, WALL, &mut f, "a", spec(2), Some(tx.clone()), &mut out)
            .unwrap();
        let b1 = d
            .dispatch(t0, WALL, &mut f, "b", spec(1), Some(tx), &mut out)
            .unwrap();
        assert!(a1 != a2 && a2 != b1);
        let c = f.counters_mut();
        d.on_ack(t0, "a", ack(2, a2, AckOutcome::Accepted), c);
        let _ = rx.try_recv();
        d.on_pi_offline(t0 + ms(5), "a", c);
        let got: Vec<_> = rx.try_iter().collect();
        assert_eq!(
            got,
            vec![SegmentOutcome::Failed(FailReason::PiOffline)],
            "the unaccepted one (no deadline: version 1) fails; the accepted one is the Pi's"
        );
        assert_eq!(d.in_flight(), 2);
        // The Pi reports Completed when it is back: the outcome is reported as it happened.
        d.on_ack(t0 + ms(9000), "a", ack(2, a2, AckOutcome::Completed), c);
        assert!(matches!(
            rx.try_recv(),
            Ok(SegmentOutcome::Completed { .. })
        ));
        assert_eq!(c.late_outcomes, 0);
        d.shutdown(t0 + ms(9001), c);
        assert_eq!(d.in_flight(), 0);
        assert_eq!(c.segments_failed, 2);
    }

    /// Entity `entity_id` standing at the origin, reporting `segment_id` (0: idle).
    fn report(entity_id: u32, segment_id: u32) -> StateReport {
        StateReport {
            segment_id,
            ..StateReport::at_rest(entity_id, 0, Point::new(0, 0), 0)
        }
    }

    /// Pi "a" with entity 1 has accepted a segment sent at `t0`.
    fn accepted_by_a(t0: Instant) -> (Fleet, Dispatcher, Receiver<SegmentOutcome>, u32) {
        let mut f = fleet_with(t0, &[("a", &[1])]);
        let mut d = dispatcher();
        let (tx, rx) = crossbeam_channel::unbounded();
        let id = d
            .dispatch(
                t0,
                WALL,
                &mut f,
                "a",
                spec(1),
                Some(tx),
                &mut Recorder::default(),
            )
            .unwrap();
        d.on_ack(t0, "a", ack(1, id, AckOutcome::Accepted), f.counters_mut());
        let _ = rx.try_recv();
        (f, d, rx, id)
    }

    /// Pi "a" heartbeats again at `at`.
    fn heartbeat_again(f: &mut Fleet, at: Instant) {
        let hb = Heartbeat {
            seq: 9,
            timestamp_ms: 0,
        };
        f.on_heartbeat(at, 0, "a", hb);
    }

    #[test]
    fn a_stranded_segment_fails_when_the_pi_is_back_without_it() {
        let t0 = Instant::now();
        let (mut f, mut d, rx, _) = accepted_by_a(t0);
        // Silent: offline at the heartbeat timeout; the old report (driving) is still there.
        f.tick(t0 + ms(1600));
        for went in f.take_went_offline() {
            d.on_pi_offline(t0 + ms(1600), &went, f.counters_mut());
        }
        for t in [2000, 5000, 60_000] {
            d.settle_stranded(t0 + ms(t), &mut f);
        }
        assert!(rx.try_recv().is_err(), "offline: only the Pi can tell");
        assert_eq!(d.stranded(), 1);
        // Back (a restarted process): its entity reports idle, and no Completed comes.
        let back = t0 + ms(60_000);
        heartbeat_again(&mut f, back);
        d.settle_stranded(back, &mut f);
        f.on_state(back + ms(100), "a", report(1, 0));
        d.settle_stranded(back + ms(100), &mut f);
        d.settle_stranded(back + ms(599), &mut f);
        assert!(
            rx.try_recv().is_err(),
            "a Completed may still be on its way"
        );
        f.on_state(back + ms(600), "a", report(1, 0));
        d.settle_stranded(back + ms(600), &mut f);
        assert_eq!(
            rx.try_recv(),
            Ok(SegmentOutcome::Failed(FailReason::PiOffline))
        );
        assert_eq!(d.in_flight(), 0);
    }

    #[test]
    fn a_stranded_segment_fails_when_the_entity_drives_a_later_one() {
        let t0 = Instant::now();
        let (mut f, mut d, rx, first) = accepted_by_a(t0);
        d.on_pi_offline(t0 + ms(1600), "a", f.counters_mut());
        // Back as a new process, and at once busy with a segment sent after the first.
        let back = t0 + ms(5000);
        heartbeat_again(&mut f, back);
        let mut out = Recorder::default();
        let later = d
            .dispatch(back, WALL, &mut f, "a", spec(1), None, &mut out)
            .unwrap();
        for t in 1..=5 {
            f.on_state(back + ms(100 * t), "a", report(1, later));
            d.settle_stranded(back + ms(100 * t), &mut f);
        }
        assert!(rx.try_recv().is_err(), "within the grace");
        f.on_state(back + ms(600), "a", report(1, later));
        d.settle_stranded(back + ms(600), &mut f);
        assert_eq!(
            rx.try_recv(),
            Ok(SegmentOutcome::Failed(FailReason::PiOffline)),
            "segment {first} cannot be queued behind {later}"
        );
    }

    #[test]
    fn a_stranded_segment_still_driven_waits_and_a_forgotten_pi_fails_it() {
        let t0 = Instant::now();
        let (mut f, mut d, rx, id) = accepted_by_a(t0);
        d.on_pi_offline(t0 + ms(1600), "a", f.counters_mut());
        // Back and still driving it: nothing to settle.
        let back = t0 + ms(3000);
        heartbeat_again(&mut f, back);
        for t in 1..=10 {
            f.on_state(back + ms(100 * t), "a", report(1, id));
            d.settle_stranded(back + ms(100 * t), &mut f);
        }
        assert!(rx.try_recv().is_err());
        // Gone again, for good: the registry forgets it, and the segment fails.
        f.tick(back + ms(3000));
        assert!(rx.try_recv().is_err());
        f.tick(back + Duration::from_secs(700));
        assert!(f.pi("a").is_none(), "evicted");
        d.settle_stranded(back + Duration::from_secs(700), &mut f);
        assert_eq!(
            rx.try_recv(),
            Ok(SegmentOutcome::Failed(FailReason::PiOffline))
        );
    }

    /// A fleet of version 2 Pis whose clocks run `pi_behind_ms` behind the server's, as the
    /// server learns it from their heartbeats (sent `delay_ms` before they are received).
    fn v2_fleet(t0: Instant, pis: &[&str], pi_behind_ms: u64, delay_ms: u64) -> Fleet {
        let mut f = Fleet::new(FleetConfig::new(ms(1500), 100, Duration::from_secs(600)));
        for id in pis {
            let hb = Heartbeat {
                seq: 1,
                timestamp_ms: WALL - pi_behind_ms - delay_ms,
            };
            let topic = format!("rpi/{id}/heartbeat");
            f.on_publish(t0, WALL, &topic, hb.encode().as_slice(), false);
            let st = report(1, 0);
            let topic = format!("rpi/{id}/state");
            f.on_publish(t0, WALL, &topic, st.encode().as_slice(), false);
            assert_eq!(f.pi(id).unwrap().protocol, 2);
        }
        f
    }

    #[test]
    fn version_1_pis_get_version_1_segments_without_deadline() {
        let t0 = Instant::now();
        let mut f = fleet_with(t0, &[("old", &[1])]);
        assert_eq!(f.pi("old").unwrap().protocol, 1);
        let mut d = dispatcher();
        let mut out = Recorder::default();
        d.dispatch(t0, WALL, &mut f, "old", spec(1), None, &mut out)
            .unwrap();
        assert_eq!(out.raw[0].len(), Segment::LEN_V1, "version 1 layout");
        assert_eq!(out.raw[0][0] >> 4, 1);
        assert_eq!(out.sent[0].1.deadline_ms, NO_DEADLINE);
        assert_eq!(f.counters().segments_without_deadline, 1);
    }

    #[test]
    fn deadline_is_the_give_up_time_on_the_pis_clock() {
        let t0 = Instant::now();
        // The Pi's clock is an hour behind; heartbeats take 20 ms to arrive.
        let mut f = v2_fleet(t0, &["a"], 3_600_000, 20);
        let mut d = dispatcher(); // 1 s x (2 retries + 1) = 3 s to live
        let mut out = Recorder::default();
        d.dispatch(t0, WALL, &mut f, "a", spec(1), None, &mut out)
            .unwrap();
        assert_eq!(out.raw[0].len(), Segment::LEN);
        assert_eq!(out.raw[0][0] >> 4, 2);
        let deadline = out.sent[0].1.deadline_ms;
        // The Pi's clock reads WALL - 1 h now; the deadline is 3 s later on it, earlier by
        // the heartbeat's delay (the offset is over-estimated by it, never under).
        assert_eq!(deadline, WALL - 3_600_000 + 3000 - 20);
        assert_eq!(f.counters().segments_without_deadline, 0);
        // Retries carry the same deadline (same bytes: the Pi sees duplicates).
        let c = f.counters_mut();
        d.tick(t0 + ms(1000), c, &mut out);
        assert_eq!(out.raw[1], out.raw[0]);
        assert_eq!(pi_deadline_ms(5, ms(10), 100), 0, "clamped at the epoch");
    }

    #[test]
    fn unaccepted_segment_fails_only_after_its_deadline_and_grace() {
        let t0 = Instant::now();
        let mut f = v2_fleet(t0, &["a"], 0, 0);
        let mut d = dispatcher(); // 3 s to live
        let mut out = Recorder::default();
        let (tx, rx) = crossbeam_channel::unbounded();
        let id = d
            .dispatch(t0, WALL, &mut f, "a", spec(1), Some(tx), &mut out)
            .unwrap();
        let c = f.counters_mut();
        // The Pi goes silent; the server marks it offline 1.5 s later.
        d.on_pi_offline(t0 + ms(1500), "a", c);
        assert!(rx.try_recv().is_err(), "the Pi could still take it");
        for t in [1000, 2000, 3000, 3499] {
            d.tick(t0 + ms(t), c, &mut out);
        }
        assert!(rx.try_recv().is_err(), "not before the deadline + grace");
        assert_eq!(out.sent.len(), 3, "retries go on: the Pi may be back");
        d.tick(t0 + ms(3500), c, &mut out);
        assert_eq!(
            rx.try_recv(),
            Ok(SegmentOutcome::Failed(FailReason::PiOffline))
        );
        // The Pi wakes up and refuses the late delivery: counted, not a new outcome.
        d.on_ack(
            t0 + ms(9000),
            "a",
            ack(1, id, AckOutcome::Rejected(RejectReason::Expired)),
            c,
        );
        assert_eq!((c.late_refused, c.acks_duplicate), (1, 0));
        assert!(rx.try_recv().is_err());
    }

    /// A segment (3 s to live) sent at `t0` to version 2 Pi "a", clocks in step.
    fn sent_to_v2_pi(t0: Instant) -> (Fleet, Dispatcher, Recorder, Receiver<SegmentOutcome>, u32) {
        let mut f = v2_fleet(t0, &["a"], 0, 0);
        let mut d = dispatcher();
        let mut out = Recorder::default();
        let (tx, rx) = crossbeam_channel::unbounded();
        let id = d
            .dispatch(t0, WALL, &mut f, "a", spec(1), Some(tx), &mut out)
            .unwrap();
        (f, d, out, rx, id)
    }

    #[test]
    fn pi_back_before_the_deadline_takes_the_segment() {
        let t0 = Instant::now();
        let (mut f, mut d, mut out, rx, id) = sent_to_v2_pi(t0);
        let c = f.counters_mut();
        d.tick(t0 + ms(1000), c, &mut out);
        d.on_pi_offline(t0 + ms(1500), "a", c);
        d.tick(t0 + ms(2000), c, &mut out);
        d.on_ack(t0 + ms(2600), "a", ack(1, id, AckOutcome::Accepted), c);
        assert!(matches!(
            rx.try_recv(),
            Ok(SegmentOutcome::Accepted { attempts: 3, .. })
        ));
        d.tick(t0 + ms(10_000), c, &mut out);
        assert!(
            rx.try_recv().is_err(),
            "accepted: no failure at the deadline"
        );
        d.on_ack(t0 + ms(12_000), "a", ack(1, id, AckOutcome::Completed), c);
        assert!(matches!(
            rx.try_recv(),
            Ok(SegmentOutcome::Completed { .. })
        ));
    }

    #[test]
    fn no_ack_failure_waits_for_the_deadline_too() {
        let t0 = Instant::now();
        let (mut f, mut d, mut out, rx, id) = sent_to_v2_pi(t0);
        let c = f.counters_mut();
        for t in [1000, 2000, 3000] {
            d.tick(t0 + ms(t), c, &mut out);
        }
        assert!(rx.try_recv().is_err());
        d.tick(t0 + ms(3500), c, &mut out);
        assert_eq!(
            rx.try_recv(),
            Ok(SegmentOutcome::Failed(FailReason::NoAck { attempts: 3 }))
        );
        // An Accepted that was on its way after all: reported in the counters and the log.
        d.on_ack(t0 + ms(3600), "a", ack(1, id, AckOutcome::Accepted), c);
        assert_eq!(c.late_outcomes, 1);
    }

    #[test]
    fn ids_never_zero_and_in_flight_is_bounded() {
        let t0 = Instant::now();
        let mut f = fleet_with(t0, &[("a", &[1])]);
        let mut d = Dispatcher::new(
            DispatchConfig {
                max_in_flight: 3,
                ..DispatchConfig::new(ms(1000), 0)
            },
            u32::MAX,
        );
        let mut out = Recorder::default();
        let ids: Vec<u32> = (0..3)
            .map(|_| {
                d.dispatch(t0, WALL, &mut f, "a", spec(1), None, &mut out)
                    .unwrap()
            })
            .collect();
        assert_eq!(ids, vec![u32::MAX, 1, 2]);
        assert_eq!(
            d.dispatch(t0, WALL, &mut f, "a", spec(1), None, &mut out),
            Err(DispatchError::TooManyInFlight)
        );
        // With no retries, they fail after one timeout and are forgotten after the grace.
        let c = f.counters_mut();
        d.tick(t0 + ms(1000), c, &mut out);
        assert_eq!(c.segments_failed, 3);
        d.tick(t0 + ms(1000) + Duration::from_secs(10), c, &mut out);
        assert_eq!(d.tracked(), 0);
        assert!(
            d.dispatch(t0, WALL, &mut f, "a", spec(1), None, &mut out)
                .is_ok()
        );
        assert!(seed_segment_id() % 2 == 1);
    }
}
