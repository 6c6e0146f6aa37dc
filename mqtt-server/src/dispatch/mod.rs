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
//! - Every segment carries the leader epoch ([`Dispatcher::set_epoch`], from
//!   [`crate::leadership`]) when its Pi speaks protocol version 3, and none (epoch 0, as the
//!   version 2 encoding requires) otherwise. While the server is not the leader (epoch None) no
//!   segment is re-sent: unacknowledged ones fail at their usual deadline; a re-send after a
//!   new lead carries the new epoch under the same id.
//! - At most `max_in_flight` segments are tracked; finished ones are kept for `grace` to
//!   recognise duplicate acks, then forgotten.
//!
//! Files: [`api`] (the public types), [`segment`] (one segment's lifecycle, an explicit state
//! machine), this file (the tracker: ids, indices, retries, acks), `tests.rs`.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use common::ratelimit::RateLimiter;
use common::wire::NO_DEADLINE;
use common::{AckOutcome, ClientId, Message, RejectReason, Segment, SegmentAck, TopicKind};
use log::{debug, info, warn};
use mqtt_link::Held;

use crate::counters::Counters;
use crate::fleet::{Fleet, PiState};

pub mod api;
pub mod journal;
pub mod segment;
#[cfg(test)]
mod tests;

pub use api::{
    ACK_GRACE, DispatchConfig, DispatchError, FailReason, Order, Publisher, SegmentOutcome,
    SegmentSpec, SegmentTicket, pi_deadline_ms, send_order,
};
use journal::{Journal, SegmentState, fail_label, reject_label};
use segment::{Ending, Phase, Tracked};

/// The first segment id: the server's clock in ms (mod 2^32), odd, so never 0.
pub fn seed_segment_id() -> u32 {
    (mqtt_link::daemon::wall_ms() as u32) | 1
}

/// The tracker: every segment sent and not forgotten, with indices derived from their phases.
pub struct Dispatcher {
    cfg: DispatchConfig,
    next_id: u32,
    tracked: HashMap<u32, Tracked>,
    /// Unfinished segments per Pi, to settle them when it goes offline.
    by_client: HashMap<String, BTreeSet<u32>>,
    /// Ack deadlines (lazy: stale entries are skipped when popped).
    deadlines: BinaryHeap<Reverse<(Instant, u32)>>,
    /// The segments in [`Phase::Stranded`], settled by the Pi's later word
    /// ([`Dispatcher::settle_stranded`]).
    stranded: BTreeSet<u32>,
    /// Finished segments in the order they finished, forgotten after `grace`.
    finished: VecDeque<(Instant, u32)>,
    publish_limit: RateLimiter,
    noack_limit: RateLimiter,
    ack_limit: RateLimiter,
    reject_limit: RateLimiter,
    /// The last segments sent and what became of them (for the HTTP API and its events).
    pub journal: Journal,
    /// Why the next segment to finish failed or was rejected: set just before `enter`.
    reason: Option<&'static str>,
    /// The epoch segments are stamped with: Some while this server leads (0: unfenced, a
    /// dispatcher without leadership, as in unit tests); None on a standby (no re-sends).
    epoch: Option<u32>,
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
            journal: Journal::new(Instant::now(), mqtt_link::daemon::wall_ms()),
            reason: None,
            epoch: Some(0),
        }
    }

    /// The leader epoch to stamp segments with from now on; None: not the leader.
    pub fn set_epoch(&mut self, epoch: Option<u32>) {
        self.epoch = epoch;
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

    /// Moves segment `id` to phase `to`: the one place a segment's phase changes. Keeps the
    /// indices in step: the stranded set, the unfinished segments per Pi, the finished queue
    /// (a finished segment hears nothing more).
    fn enter(&mut self, now: Instant, id: u32, to: Phase) {
        let Some(t) = self.tracked.get_mut(&id) else {
            return;
        };
        let from = std::mem::replace(&mut t.phase, to);
        let state = match to {
            Phase::Sent { .. } => None,
            Phase::Accepted | Phase::Stranded { .. } => Some(SegmentState::Accepted),
            Phase::Finished(Ending::Completed) => Some(SegmentState::Completed),
            Phase::Finished(Ending::Rejected) => Some(SegmentState::Rejected),
            Phase::Finished(Ending::Failed) => Some(SegmentState::Failed),
        };
        if let Some(state) = state {
            let reason = std::mem::take(&mut self.reason);
            self.journal.enter(now, id, state, reason);
        }
        match (
            matches!(from, Phase::Stranded { .. }),
            matches!(to, Phase::Stranded { .. }),
        ) {
            (false, true) => {
                self.stranded.insert(id);
            }
            (true, false) => {
                self.stranded.remove(&id);
            }
            _ => {}
        }
        if to.is_finished() && !from.is_finished() {
            t.notify = None;
            if let Some(set) = self.by_client.get_mut(t.client.as_str()) {
                set.remove(&id);
                if set.is_empty() {
                    self.by_client.remove(t.client.as_str());
                }
            }
            self.finished.push_back((now, id));
        }
    }

    /// Checks the target, assigns an id and publishes. `order.notify` hears the outcomes.
    pub fn dispatch(
        &mut self,
        order: Order,
        now: Instant,
        wall_ms: u64,
        fleet: &Fleet,
        counters: &mut Counters,
        out: &mut dyn Publisher,
    ) -> Result<u32, DispatchError> {
        let Order {
            client_id,
            spec,
            notify,
        } = order;
        let (client, version, offset) = match self.check(fleet, &client_id, spec.entity_id, out) {
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
            epoch: self.epoch.unwrap_or(0),
        };
        self.send(now, &client, &segment, version, counters, out);
        counters.segments_sent += 1;
        self.journal.sent(
            now,
            client.as_str(),
            spec.entity_id,
            spec.start,
            spec.end,
            id,
        );
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
                expires,
                phase: Phase::Sent {
                    attempts: 1,
                    next_check,
                    pi_offline: false,
                },
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
        Ok((pi.id.clone(), pi.protocol, pi.clock.for_deadlines_ms()))
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
        let mut segment = *segment;
        if version < 3 {
            // Versions 1 and 2 carry no epoch (their encoder refuses one): not fenced.
            segment.epoch = 0;
        }
        send_order(
            out,
            &client.topic(TopicKind::Segment),
            Message::Segment(segment),
            version,
            now,
            &mut self.publish_limit,
            counters,
            format_args!("segment {} for {client}", segment.segment_id),
        );
    }

    /// An ack from `client`.
    pub fn on_ack(&mut self, now: Instant, client: &str, ack: SegmentAck, counters: &mut Counters) {
        let Some(t) = self.tracked.get(&ack.segment_id) else {
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
                    Held(held).note("similar")
                );
            }
            return;
        }
        let id = ack.segment_id;
        let phase = t.phase;
        if let Phase::Finished(ending) = phase {
            let failed = ending == Ending::Failed;
            match ack.outcome {
                AckOutcome::Rejected(RejectReason::Expired) if failed => {
                    counters.late_refused += 1;
                    debug!(
                        "{client}: segment {} arrived after its deadline and was refused, as \
                         intended (reported failed already)",
                        ack.segment_id
                    );
                }
                AckOutcome::Accepted | AckOutcome::Completed if failed => {
                    counters.late_outcomes += 1;
                    if let Some(held) = self.ack_limit.check(now) {
                        info!(
                            "{client}: segment {} {:?} after it was reported failed (an ack \
                             later than the deadline's grace){}",
                            ack.segment_id,
                            ack.outcome,
                            Held(held).note("similar")
                        );
                    }
                }
                _ => counters.acks_duplicate += 1,
            }
            return;
        }
        match ack.outcome {
            AckOutcome::Accepted => {
                if phase.is_accepted() {
                    counters.acks_duplicate += 1;
                } else {
                    self.accept(now, id, counters, true);
                }
            }
            AckOutcome::Completed => {
                if !phase.is_accepted() {
                    // The Accepted was lost or overtaken; the round trip is unknown.
                    self.accept(now, id, counters, false);
                }
                counters.segments_completed += 1;
                if let Some(t) = self.tracked.get(&id) {
                    let after = now.saturating_duration_since(t.first_sent);
                    t.tell(SegmentOutcome::Completed { after });
                    debug!("segment {id} completed after {after:?}");
                }
                self.enter(now, id, Phase::Finished(Ending::Completed));
            }
            AckOutcome::Rejected(reason) => {
                counters.segments_rejected += 1;
                if let Some(t) = self.tracked.get(&id) {
                    t.tell(SegmentOutcome::Rejected(reason));
                    self.reason = Some(reject_label(reason));
                    if let Some(held) = self.reject_limit.check(now) {
                        info!(
                            "segment {id} rejected by {}/{}: {reason:?}{}",
                            t.client,
                            t.segment.entity_id,
                            Held(held).note("similar")
                        );
                    }
                }
                self.enter(now, id, Phase::Finished(Ending::Rejected));
            }
        }
    }

    /// `Sent` -> `Accepted`: reports the round trip (kept in the statistics `with_rtt`).
    fn accept(&mut self, now: Instant, id: u32, counters: &mut Counters, with_rtt: bool) {
        let Some(t) = self.tracked.get(&id) else {
            return;
        };
        let Phase::Sent { attempts, .. } = t.phase else {
            return;
        };
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
            attempts
        );
        t.tell(SegmentOutcome::Accepted {
            round_trip,
            attempts,
        });
        self.enter(now, id, Phase::Accepted);
    }

    /// Any unfinished phase -> `Finished(Failed)`, reported as `why`.
    fn fail(&mut self, now: Instant, id: u32, why: FailReason, counters: &mut Counters) {
        let Some(t) = self.tracked.get(&id) else {
            return;
        };
        if t.phase.is_finished() {
            return;
        }
        counters.segments_failed += 1;
        t.tell(SegmentOutcome::Failed(why));
        self.reason = Some(fail_label(why));
        debug!(
            "segment {id} to {}/{} failed: {why:?}",
            t.client, t.segment.entity_id
        );
        self.enter(now, id, Phase::Finished(Ending::Failed));
    }

    /// A Pi went offline: its accepted segments are stranded (the Pi keeps driving them), its
    /// unaccepted ones without a deadline fail now, the others fail at their deadline plus
    /// [`ACK_GRACE`] unless the Pi takes them in time.
    pub fn on_pi_offline(&mut self, now: Instant, client: &str, counters: &mut Counters) {
        let Some(ids) = self.by_client.get(client) else {
            return;
        };
        let mut changes = Vec::new();
        for id in ids {
            let Some(t) = self.tracked.get(id) else {
                continue;
            };
            match t.phase {
                Phase::Accepted => {
                    debug!(
                        "segment {id}: {} went offline while driving it; waiting for its word",
                        t.client
                    );
                    changes.push((*id, Some(Phase::Stranded { idle_since: None })));
                }
                Phase::Sent { .. } if t.expires.is_none() => changes.push((*id, None)),
                Phase::Sent {
                    attempts,
                    next_check,
                    ..
                } => changes.push((
                    *id,
                    Some(Phase::Sent {
                        attempts,
                        next_check,
                        pi_offline: true,
                    }),
                )),
                Phase::Stranded { .. } | Phase::Finished(_) => {}
            }
        }
        for (id, to) in changes {
            match to {
                Some(phase) => self.enter(now, id, phase),
                None => self.fail(now, id, FailReason::PiOffline, counters),
            }
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
            let Some(t) = self.tracked.get(&id) else {
                continue;
            };
            let Phase::Sent {
                attempts,
                next_check,
                pi_offline,
            } = t.phase
            else {
                continue;
            };
            if next_check != deadline {
                continue;
            }
            let expired = t.expires.is_some_and(|e| now >= e);
            if attempts > self.cfg.retries || expired {
                // Not before the Pi can no longer take it (plus the time its ack may need).
                if let Some(give_up) = t.expires.map(|e| e + ACK_GRACE) {
                    if now < give_up {
                        self.deadlines.push(Reverse((give_up, id)));
                        self.enter(
                            now,
                            id,
                            Phase::Sent {
                                attempts,
                                next_check: give_up,
                                pi_offline,
                            },
                        );
                        continue;
                    }
                }
                let why = if pi_offline {
                    FailReason::PiOffline
                } else {
                    if let Some(held) = self.noack_limit.check(now) {
                        warn!(
                            "segment {id} to {}/{}: no ack after {attempts} attempt(s); giving up{}",
                            t.client,
                            t.segment.entity_id,
                            Held(held).note("similar")
                        );
                    }
                    FailReason::NoAck { attempts }
                };
                self.fail(now, id, why, counters);
                continue;
            }
            let attempts = attempts + 1;
            let next_check = now + self.cfg.ack_timeout;
            self.deadlines.push(Reverse((next_check, id)));
            let (client, mut segment, version) = (t.client.clone(), t.segment, t.version);
            self.enter(
                now,
                id,
                Phase::Sent {
                    attempts,
                    next_check,
                    pi_offline,
                },
            );
            let Some(epoch) = self.epoch else {
                debug!("segment {id}: not re-sent, this server no longer leads");
                continue;
            };
            if segment.epoch != epoch {
                segment.epoch = epoch;
                if let Some(t) = self.tracked.get_mut(&id) {
                    t.segment.epoch = epoch;
                }
            }
            debug!("segment {id} re-sent to {client} (attempt {attempts})");
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
    pub fn settle_stranded(&mut self, now: Instant, fleet: &Fleet, counters: &mut Counters) {
        if self.stranded.is_empty() {
            return;
        }
        // First look (the fleet and the other segments), then update.
        let mut changes = Vec::with_capacity(self.stranded.len());
        for id in &self.stranded {
            let Some(t) = self.tracked.get(id) else {
                continue;
            };
            let Phase::Stranded { idle_since } = t.phase else {
                continue;
            };
            let Some(pi) = fleet.pi(t.client.as_str()) else {
                changes.push((*id, None)); // forgotten by the registry
                continue;
            };
            let without_it = match pi.state {
                PiState::Online { since } => pi
                    .entities
                    .get(&t.segment.entity_id)
                    .is_some_and(|e| e.updated > since && self.moved_past(t, e.report.segment_id)),
                PiState::Offline { .. } => false,
            };
            let idle_since = if without_it {
                let since = idle_since.unwrap_or(now);
                if now.saturating_duration_since(since) >= ACK_GRACE {
                    changes.push((*id, None));
                    continue;
                }
                Some(since)
            } else {
                None
            };
            changes.push((*id, Some(Phase::Stranded { idle_since })));
        }
        for (id, to) in changes {
            match to {
                Some(phase) => self.enter(now, id, phase),
                None => {
                    if let Some(t) = self.tracked.get(&id) {
                        info!(
                            "segment {id}: {}/{} is back without it (no Completed): failed",
                            t.client, t.segment.entity_id
                        );
                    }
                    self.fail(now, id, FailReason::PiOffline, counters);
                }
            }
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
