//! The `registry` thread: the only owner of the [`Fleet`] (presence), the [`Dispatcher`]
//! (segments), the [`ActionTracker`] (instant actions) and the [`Counters`] they share. It
//! routes every incoming publish itself: classified by [`crate::ingest`], segment acks go to
//! the dispatcher, action acks to the action tracker, heartbeats, states and statuses
//! to the fleet, bad input is counted and logged (rate-limited). A Pi that goes offline, by a
//! status or a heartbeat timeout, is handed to the dispatcher in one place
//! ([`Registry::went_offline`]).
//!
//! It also owns this server's [`Leadership`] (active/standby, docs/protocol.md
//! "Leadership"): fed by the link's connects, the servers' statuses and the lease, and the
//! Pis' `StaleLeader` refusals; [`Registry::order_epoch`] is the epoch orders are stamped
//! with, None on a standby (which dispatches nothing: [`DispatchError::NotLeader`]). It
//! publishes this server's `Online` after every ConnAck and stores each session
//! ([`mqtt_link::session_store`]).
//!
//! It selects over link events, requests from [`crate::FleetHandle`]s, a 50 ms tick
//! (heartbeat timeouts, eviction, retries), a timer armed for the next heartbeat deadline (so
//! a timeout is on time, not up to a tick late) and its stop channel.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::ratelimit::RateLimiter;
use common::topic::SERVER_SUBSCRIPTIONS;
use common::topic::{LEASE_TOPIC, server_status_topic};
use common::{AckOutcome, ClientId, Message, RejectReason};
use crossbeam_channel::{Receiver, Sender, after, never, select, tick};
use log::{debug, warn};
use mqtt_link::daemon::wall_ms;
use mqtt_link::session_store::SessionStore;
use mqtt_link::{Held, LinkEvent};

use crate::actions::{
    ActionConfig, ActionError, ActionRecord, ActionSpec, ActionTicket, ActionTracker,
    StopAllResults,
};
use crate::broker_sys::BrokerSys;
use crate::counters::Counters;
use crate::dispatch::journal::SegmentRecord;
use crate::dispatch::{DispatchError, Dispatcher, Order, Publisher};
use crate::feed::{EntityState, Feed, FeedEvent, Presence};
use crate::fleet::{Fleet, OfflineReason, WentOffline};
use crate::ingest::{InputError, ServerIncoming, classify, classify_server, printable_topic};
use crate::leadership::{Change, LeaderView, Leadership, Out};
use crate::snapshot::{EntityPose, PiView, Snapshot, Stats, online_poses};

/// The registry's housekeeping period (retries, eviction, and heartbeat timeouts of Pis that
/// came online since the last deadline timer was armed).
pub const TICK: Duration = Duration::from_millis(50);

/// A request to the registry thread.
pub(crate) enum Request {
    Dispatch {
        order: Order,
        reply: Sender<Result<u32, DispatchError>>,
    },
    Snapshot(Sender<Snapshot>),
    Render(Sender<String>),
    Poses(Sender<Vec<EntityPose>>),
    /// One Pi's view (None: unknown).
    Pi(String, Sender<Option<PiView>>),
    /// One segment of the journal (None: not among the last ones).
    Segment(u32, Sender<Option<SegmentRecord>>),
    /// The counters and gauges for the metrics.
    Stats(Sender<Stats>),
    /// An instant action to one Pi.
    Action {
        pi: String,
        spec: ActionSpec,
        reply: Sender<Result<ActionTicket, ActionError>>,
    },
    /// `stop` to every entity of every Pi: one result per Pi known (sorted by id), or why
    /// nothing was sent.
    StopAll(Sender<Result<StopAllResults, ActionError>>),
    /// One action of the journal (None: not among the last ones).
    ActionRecord(u32, Sender<Option<ActionRecord>>),
    /// This server's leadership.
    Leader(Sender<LeaderView>),
    /// Unit tests only: the registry thread panics, as a bug would make it.
    #[cfg(test)]
    Crash,
}

/// The registry thread's state.
pub(crate) struct Registry<P> {
    pub fleet: Fleet,
    pub dispatcher: Dispatcher,
    /// Instant actions sent and their answers.
    pub actions: ActionTracker,
    pub counters: Counters,
    /// Where segments go: the link's gated publisher.
    pub out: P,
    /// Bad input: one line per error kind per 10 s.
    input_limits: BTreeMap<&'static str, RateLimiter>,
    /// Where presence, states and segment changes go (the HTTP event stream), if anywhere.
    feed: Option<Feed>,
    /// The broker's `$SYS` figures.
    broker_sys: BrokerSys,
    /// Active or standby, and the epoch orders carry.
    leadership: Leadership,
    /// `server/@status/{this server}`.
    status_topic: String,
    /// Where each session is stored, so the counter grows across restarts.
    sessions: Option<SessionStore>,
    /// The current session, shared with [`crate::Server`] for the `Offline` at shutdown.
    session: Arc<AtomicU32>,
}

/// What wakes the registry.
enum Event {
    Link(LinkEvent),
    LinkGone,
    Request(Request),
    RequestsGone,
    Tick,
    Stop,
}

impl<P: Publisher> Registry<P> {
    pub fn new(fleet: Fleet, dispatcher: Dispatcher, out: P) -> Self {
        Registry {
            fleet,
            dispatcher,
            actions: ActionTracker::new(
                ActionConfig::new(Duration::from_secs(1), 2),
                crate::actions::seed_action_id(),
            ),
            counters: Counters::default(),
            out,
            input_limits: BTreeMap::new(),
            feed: None,
            broker_sys: BrokerSys::default(),
            leadership: Leadership::new(crate::config::FALLBACK_CLIENT_ID),
            status_topic: server_status_topic(
                &ClientId::new(crate::config::FALLBACK_CLIENT_ID).expect("a valid id"),
            ),
            sessions: None,
            session: Arc::new(AtomicU32::new(0)),
        }
        .not_leading()
    }

    /// This server's id (its status topic and epoch tag), session store and shared session.
    pub fn with_identity(
        mut self,
        server_id: &ClientId,
        sessions: SessionStore,
        session: Arc<AtomicU32>,
    ) -> Self {
        self.leadership = Leadership::new(server_id.as_str());
        self.status_topic = server_status_topic(server_id);
        self.sessions = Some(sessions);
        self.session = session;
        self
    }

    fn not_leading(mut self) -> Self {
        self.dispatcher.set_epoch(None);
        self
    }

    /// The epoch orders are stamped with: Some while this server leads, None on a standby.
    pub fn order_epoch(&self) -> Option<u32> {
        self.leadership.order_epoch()
    }

    /// Publishes what the leadership asks for and applies a change of role.
    fn lead(&mut self, (outs, change): (Vec<Out>, Option<Change>)) {
        for out in outs {
            let sent = match out {
                Out::Status(st) => self.out.publish_retained(
                    &self.status_topic,
                    Message::ServerStatus(st).encode().as_slice(),
                ),
                Out::Lease(l) => self
                    .out
                    .publish_retained(LEASE_TOPIC, Message::Lease(l).encode().as_slice()),
            };
            if let Err(e) = sent {
                self.counters.publish_failures += 1;
                warn!("could not publish {out:?}: {e}");
            }
        }
        if change.is_some() {
            self.dispatcher.set_epoch(self.order_epoch());
        }
    }

    /// Actions are tracked by `actions` (its settings) from now on.
    pub fn with_actions(mut self, actions: ActionTracker) -> Self {
        self.actions = actions;
        self
    }

    /// Presence, states and segment changes go to `feed` from now on.
    pub fn with_feed(mut self, feed: Feed) -> Self {
        self.feed = Some(feed);
        self
    }

    /// The feed, when someone listens to it.
    fn listened_feed(&self) -> Option<&Feed> {
        self.feed.as_ref().filter(|f| f.is_listened())
    }

    fn presence(&self, id: &str) -> Option<Presence> {
        self.fleet.pi(id).map(|p| Presence {
            pi: p.id.to_string(),
            online: p.is_online(),
            reason: p.offline_reason(),
            protocol: p.protocol,
            suspected_duplicate: p.flapping.is_suspected(),
        })
    }

    /// What [`Registry::presence`] reports, without building it (no allocation): compared
    /// before and after every message while someone listens.
    fn presence_key(&self, id: &str) -> Option<(bool, Option<OfflineReason>, u8, bool)> {
        self.fleet.pi(id).map(|p| {
            (
                p.is_online(),
                p.offline_reason(),
                p.protocol,
                p.flapping.is_suspected(),
            )
        })
    }

    /// Finished actions since the last call go to the feed (or are discarded).
    fn flush_actions(&mut self) {
        if !self.actions.has_changes() {
            return;
        }
        let changes = self.actions.take_changed();
        if let Some(feed) = self.listened_feed() {
            for r in changes {
                feed.send(FeedEvent::Action(r));
            }
        }
    }

    /// Segment changes since the last call go to the feed (or are discarded).
    fn flush_segments(&mut self) {
        if !self.dispatcher.journal.has_changes() {
            return;
        }
        let changes = self.dispatcher.journal.take_changed();
        if let Some(feed) = self.listened_feed() {
            for r in changes {
                feed.send(FeedEvent::Segment(r));
            }
        }
    }

    fn stats(&self) -> Stats {
        Stats {
            online: self.fleet.online_count(),
            known: self.fleet.len(),
            segments_in_flight: self.dispatcher.in_flight(),
            segments_stranded: self.dispatcher.stranded(),
            actions_in_flight: self.actions.in_flight(),
            broker_connected: self.out.connected(),
            counters: self.counters.clone(),
            broker_sys: self.broker_sys,
            leader: self.leadership.view(),
        }
    }

    /// The thread's loop, until `stop` receives or disconnects; returns the final state after
    /// failing unfinished segments with `ShuttingDown`.
    pub fn run(
        mut self,
        events: Receiver<LinkEvent>,
        requests: Receiver<Request>,
        stop: Receiver<()>,
    ) -> Snapshot {
        let mut events = events;
        let mut requests = requests;
        let ticker = tick(TICK);
        // Fires at the next heartbeat deadline, so timeouts are not late by up to a tick.
        let mut expiry: Receiver<Instant> = never();
        loop {
            let event = select! {
                recv(stop) -> _ => Event::Stop,
                recv(events) -> e => e.map_or(Event::LinkGone, Event::Link),
                recv(requests) -> r => r.map_or(Event::RequestsGone, Event::Request),
                recv(ticker) -> _ => Event::Tick,
                recv(expiry) -> _ => Event::Tick,
            };
            let now = Instant::now();
            match event {
                Event::Stop => break,
                Event::Link(e) => self.on_link(now, e),
                Event::LinkGone => events = never(),
                Event::Request(r) => self.on_request(now, r),
                Event::RequestsGone => requests = never(),
                Event::Tick => {
                    self.tick(now);
                    if let Some(feed) = &self.feed {
                        feed.flush();
                    }
                    expiry = match self.fleet.next_expiry() {
                        // Just past the deadline: the timeout is "more than".
                        Some(t) => {
                            after(t.saturating_duration_since(now) + Duration::from_millis(1))
                        }
                        None => never(),
                    };
                }
            }
            self.flush_segments();
            self.flush_actions();
        }
        let now = Instant::now();
        self.dispatcher.shutdown(now, &mut self.counters);
        self.actions.shutdown(now, &mut self.counters);
        self.snapshot(now)
    }

    fn snapshot(&self, now: Instant) -> Snapshot {
        Snapshot::of(
            &self.fleet,
            &self.dispatcher,
            &self.counters,
            self.out.connected(),
            now,
        )
        .with_leader(self.leadership.view())
    }

    /// Timeouts, retries, stranded segments.
    fn tick(&mut self, now: Instant) {
        let led = self.leadership.tick(now, wall_ms());
        self.lead(led);
        let gone = self.fleet.tick(now, &mut self.counters);
        self.went_offline(now, gone);
        self.dispatcher.tick(now, &mut self.counters, &mut self.out);
        self.actions.tick(now, &mut self.counters, &mut self.out);
        self.dispatcher
            .settle_stranded(now, &self.fleet, &mut self.counters);
    }

    /// The one place a presence transition reaches the dispatcher.
    fn went_offline(&mut self, now: Instant, gone: impl IntoIterator<Item = WentOffline>) {
        for WentOffline(id) in gone {
            if let Some(feed) = self.listened_feed() {
                if let Some(p) = self.presence(id.as_str()) {
                    feed.send(FeedEvent::Presence(p));
                }
            }
            self.dispatcher
                .on_pi_offline(now, id.as_str(), &mut self.counters);
        }
    }

    fn on_link(&mut self, now: Instant, e: LinkEvent) {
        match e {
            LinkEvent::Connected { session } => {
                self.counters.broker_connects += 1;
                self.fleet.link_up(now);
                self.session.store(session, Ordering::Release);
                if let Some(store) = &mut self.sessions {
                    store.save(session);
                }
                let online = self.leadership.on_connected(now, wall_ms(), session);
                self.lead((online, None));
                debug!(
                    "link session {session}: subscribed to {SERVER_SUBSCRIPTIONS:?}; retained statuses rebuild the fleet view"
                );
            }
            LinkEvent::Disconnected { reason } => {
                self.counters.broker_disconnects += 1;
                self.fleet.link_down(now);
                let change = self.leadership.on_disconnected();
                self.lead((Vec::new(), change));
                debug!("link down ({reason}); heartbeat timeouts held until it is back");
            }
            LinkEvent::Message(p) => {
                self.on_publish(now, wall_ms(), &p.topic, &p.payload, p.retain);
            }
        }
    }

    /// Routes one publish received on one of the Pi leaves (`rpi/+/{status,heartbeat,state,ack}`). Bad input is counted and logged
    /// (rate-limited), never fatal.
    fn on_publish(
        &mut self,
        now: Instant,
        wall_ms: u64,
        topic: &str,
        payload: &[u8],
        retained: bool,
    ) {
        if BrokerSys::is_sys(topic) {
            return self.broker_sys.on_publish(topic, payload);
        }
        if let Some(server) = classify_server(topic, payload) {
            let led = match server {
                Err(e) => return self.bad_input(now, topic, &e),
                Ok(ServerIncoming::Status { server_id, status }) => {
                    self.counters.message("server_status");
                    self.leadership.on_status(now, wall_ms, server_id, status)
                }
                Ok(ServerIncoming::Lease(lease)) => {
                    self.counters.message("lease");
                    self.leadership.on_lease(now, wall_ms, lease, retained)
                }
            };
            return self.lead(led);
        }
        let incoming = match classify(topic, payload) {
            Ok(i) => i,
            Err(e) => return self.bad_input(now, topic, &e),
        };
        let before = self
            .listened_feed()
            .map(|_| self.presence_key(incoming.client_id));
        let c = &mut self.counters;
        match incoming.message {
            Message::Heartbeat(_) => c.message("heartbeat"),
            Message::State(_) => c.message("state"),
            Message::Status(_) => c.message("status"),
            Message::Ack(ack) => {
                c.message("ack");
                self.dispatcher.on_ack(now, incoming.client_id, ack, c);
                if ack.outcome == AckOutcome::Rejected(RejectReason::StaleLeader) {
                    let led = self.leadership.on_stale_leader(now, wall_ms);
                    self.lead(led);
                }
                return;
            }
            Message::ActionAck(ack) => {
                c.message("action_ack");
                self.actions.on_ack(now, incoming.client_id, ack, c);
                // The Pi's fence: a higher epoch than ours means another server leads.
                let led = self.leadership.on_fence(now, wall_ms, ack.fence);
                self.lead(led);
                return;
            }
            // `classify` only lets through the kinds that belong on the topic.
            Message::Segment(_)
            | Message::Action(_)
            | Message::ServerStatus(_)
            | Message::Lease(_) => return self.bad_input(now, topic, &InputError::BadTopic),
        }
        let gone = self.fleet.on_message(now, wall_ms, &incoming, retained, c);
        let went = gone.is_some();
        self.went_offline(now, gone);
        let Some(feed) = self.listened_feed() else {
            return;
        };
        if let Message::State(s) = incoming.message {
            if self.fleet.pi(incoming.client_id).is_some() {
                feed.send(FeedEvent::State(EntityState {
                    pi: incoming.client_id.to_owned(),
                    entity: s.entity_id,
                    motion: s.motion(),
                    flags: crate::snapshot::FlagsView::of(s.flags),
                }));
            }
        }
        // An offline transition was sent by `went_offline` already.
        if !went && before.is_some_and(|b| b != self.presence_key(incoming.client_id)) {
            if let Some(p) = self.presence(incoming.client_id) {
                feed.send(FeedEvent::Presence(p));
            }
        }
    }

    fn bad_input(&mut self, now: Instant, topic: &str, e: &InputError) {
        let label = e.label();
        self.counters.input_error(label);
        let lim = self
            .input_limits
            .entry(label)
            .or_insert_with(|| RateLimiter::new(Duration::from_secs(10)));
        if let Some(held) = lim.check(now) {
            warn!(
                "dropped a message on topic {}: {e}{}",
                printable_topic(topic),
                Held(held).note(format_args!("more {label}"))
            );
        }
    }

    /// Sends one action, stamped with [`Registry::order_epoch`].
    fn action(
        &mut self,
        now: Instant,
        pi: &str,
        spec: ActionSpec,
    ) -> Result<ActionTicket, ActionError> {
        let Some(epoch) = self.order_epoch() else {
            self.counters.action_refused(ActionError::NotLeader.label());
            return Err(ActionError::NotLeader);
        };
        let (notify, report) = crossbeam_channel::bounded(1);
        let id = self.actions.send(
            now,
            &self.fleet,
            pi,
            spec,
            epoch,
            Some(notify),
            &mut self.counters,
            &mut self.out,
        )?;
        Ok(ActionTicket { id, report })
    }

    /// `stop` to every entity of every Pi: sent to each online version 3 Pi; the others are
    /// listed with why not (offline, `unsupported (protocol 2)`).
    fn stop_all(&mut self, now: Instant) -> Result<StopAllResults, ActionError> {
        if self.order_epoch().is_none() {
            self.counters.action_refused(ActionError::NotLeader.label());
            return Err(ActionError::NotLeader);
        }
        if !self.out.connected() {
            self.counters
                .action_refused(ActionError::NotConnected.label());
            return Err(ActionError::NotConnected);
        }
        let ids: Vec<String> = self.fleet.pis().map(|p| p.id.to_string()).collect();
        let spec = ActionSpec {
            target: common::Target::All,
            action: common::ActionKind::Stop,
            segment_id: 0,
        };
        Ok(ids
            .into_iter()
            .map(|id| {
                let r = self.action(now, &id, spec);
                (id, r)
            })
            .collect())
    }

    fn on_request(&mut self, now: Instant, r: Request) {
        match r {
            Request::Dispatch { reply, .. }
                if self.out.connected() && self.order_epoch().is_none() =>
            {
                self.counters.dispatch_refused += 1;
                let _ = reply.send(Err(DispatchError::NotLeader {
                    leader: self.leadership.leader(),
                }));
            }
            Request::Dispatch { order, reply } => {
                let result = self.dispatcher.dispatch(
                    order,
                    now,
                    wall_ms(),
                    &self.fleet,
                    &mut self.counters,
                    &mut self.out,
                );
                let _ = reply.send(result);
            }
            Request::Snapshot(reply) => {
                let _ = reply.send(self.snapshot(now));
            }
            Request::Render(reply) => {
                let mut table = crate::table::leader_line(&self.leadership.view());
                table.push_str(&crate::table::render(&self.fleet, now));
                let _ = reply.send(table);
            }
            Request::Poses(reply) => {
                let _ = reply.send(online_poses(&self.fleet));
            }
            Request::Pi(id, reply) => {
                let _ = reply.send(self.fleet.pi(&id).map(|p| PiView::of(p, now)));
            }
            Request::Segment(id, reply) => {
                let _ = reply.send(self.dispatcher.journal.get(id).cloned());
            }
            Request::Stats(reply) => {
                let _ = reply.send(self.stats());
            }
            Request::Action { pi, spec, reply } => {
                let _ = reply.send(self.action(now, &pi, spec));
            }
            Request::StopAll(reply) => {
                let _ = reply.send(self.stop_all(now));
            }
            Request::ActionRecord(id, reply) => {
                let _ = reply.send(self.actions.get(id).cloned());
            }
            Request::Leader(reply) => {
                let _ = reply.send(self.leadership.view());
            }
            #[cfg(test)]
            Request::Crash => panic!("registry crash, asked for by a test"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::DispatchConfig;
    use crate::fleet::FleetConfig;
    use common::SegmentAck;

    /// A publisher with no broker behind it.
    struct Nowhere;

    impl Publisher for Nowhere {
        fn connected(&self) -> bool {
            false
        }
        fn publish(&mut self, _: &str, _: &[u8]) -> Result<(), String> {
            Err("not connected".into())
        }
        fn publish_retained(&mut self, _: &str, _: &[u8]) -> Result<(), String> {
            Err("not connected".into())
        }
    }

    fn registry() -> Registry<Nowhere> {
        Registry::new(
            Fleet::new(FleetConfig::new(
                Duration::from_millis(1500),
                10,
                Duration::from_secs(600),
            )),
            Dispatcher::new(DispatchConfig::new(Duration::from_secs(1), 2), 41),
            Nowhere,
        )
    }

    #[test]
    fn garbage_is_counted_by_kind_and_acks_are_passed_on() {
        let t0 = Instant::now();
        let mut r = registry();
        r.on_publish(t0, 0, "rpi/a/heartbeat", b"text", false);
        r.on_publish(t0, 0, "rpi/a/state", &[0u8; 10_000], false);
        r.on_publish(t0, 0, "rpi/bad id/ack", &[], false);
        r.on_publish(t0, 0, "rpi/a/state", &[], false);
        let c = &r.counters;
        assert_eq!(c.input_errors_of("unknown_version"), 1);
        assert_eq!(c.input_errors_of("oversized"), 1);
        assert_eq!(c.input_errors_of("bad_client_id"), 1);
        assert_eq!(c.input_errors_of("empty"), 1);
        assert!(r.fleet.is_empty());
        let ack = SegmentAck {
            entity_id: 1,
            segment_id: 9,
            outcome: common::AckOutcome::Accepted,
        };
        r.on_publish(t0, 0, "rpi/a/ack", ack.encode().as_slice(), false);
        assert_eq!(r.counters.messages_of("ack"), 1);
        // Passed on to the dispatcher, which does not know segment 9.
        assert_eq!(r.counters.acks_unknown, 1);
        assert!(r.fleet.is_empty(), "an ack is not presence");
    }

    #[test]
    fn action_acks_go_to_the_action_tracker_not_to_bad_input() {
        let t0 = Instant::now();
        let mut r = registry();
        let ack = common::ActionAck {
            action_id: 5,
            target: common::Target::All,
            action: common::ActionKind::Stop,
            outcome: common::ActionOutcome::Done,
            repeat: false,
            cancelled: 0,
            fence: 0,
        };
        for _ in 0..3 {
            r.on_publish(t0, 0, "rpi/a/ack", ack.encode().as_slice(), false);
        }
        assert_eq!(r.counters.messages_of("action_ack"), 3);
        assert_eq!(r.counters.action_acks_unknown, 3, "not ours: counted");
        assert_eq!(r.counters.input_errors_total(), 0);
        assert_eq!(r.order_epoch(), None, "not connected: no leader, no orders");
    }
}
