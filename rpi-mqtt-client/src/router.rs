//! The main loop: turns link events into work. After every ConnAck it publishes the retained
//! `Online` status and tells the workers; segments and instant actions are decoded and routed
//! to the `vehicles` thread; servers' statuses feed [`ServerPresence`] (and the fence), whose
//! `server_lost_stop_after` deadline pauses every vehicle; bad input gets a counted, rate-limited log line. It ends on a shutdown signal, or
//! when the link or a worker thread stops unexpectedly.

use std::time::{Duration, Instant};

use common::ratelimit::RateLimiter;
use common::topic::{SERVER_STATUS_PREFIX, parse_server_status_topic};
use common::{Action, Presence, Segment, ServerStatus};
use crossbeam_channel::{Receiver, Sender, at, never, select};
use log::{debug, error, info, warn};
use mqtt_link::{LinkEvent, QoS};

use crate::fence::SharedFence;
use crate::link_change::LinkChange;
use crate::presence;
use crate::publisher::Topics;
use crate::server_presence::{Change, ServerPresence};
use crate::session_store::SessionStore;
use crate::vehicles::Input;
use mqtt_link::{Held, Publisher};

/// How soon a failed `Online` publish is tried again.
const ONLINE_RETRY: Duration = Duration::from_millis(50);

/// Decodes one kind of order into what the `vehicles` thread takes.
type Decoder = fn(&[u8]) -> Result<Input, common::DecodeError>;

enum Event {
    Link(LinkEvent),
    LinkGone,
    Shutdown,
    WorkerExit(&'static str),
    RetryOnline,
    ServerLostDue,
}

/// Why the main loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Shutdown,
    LinkStopped,
    WorkerStopped(&'static str),
}

pub struct Router {
    pub publisher: Publisher,
    pub topics: Topics,
    pub inputs: Sender<Input>,
    pub watchers: Vec<Sender<LinkChange>>,
    /// The session of the current (or last) connection.
    pub session: u32,
    /// Bad payloads on the segment and action topics since start.
    pub malformed: u64,
    /// Retained segments dropped since start. The server never retains a segment, so one
    /// delivered with the retain flag was left by someone else (or by a bug) and would be
    /// executed again after every restart of the Pi: stale by definition.
    pub retained: u64,
    online_due: Option<Instant>,
    bad_input: RateLimiter,
    pub fence: SharedFence,
    pub server: ServerPresence,
    /// Where each connection's session is kept for the next run.
    pub sessions: SessionStore,
}

impl Router {
    pub fn new(
        publisher: Publisher,
        topics: Topics,
        inputs: Sender<Input>,
        watchers: Vec<Sender<LinkChange>>,
        fence: SharedFence,
        server_lost_stop_after: Option<Duration>,
        sessions: SessionStore,
    ) -> Router {
        Router {
            publisher,
            topics,
            inputs,
            watchers,
            session: sessions.first,
            malformed: 0,
            retained: 0,
            online_due: None,
            bad_input: RateLimiter::new(Duration::from_secs(10)),
            fence,
            server: ServerPresence::new(server_lost_stop_after, Instant::now()),
            sessions,
        }
    }

    pub fn run(
        &mut self,
        events: &Receiver<LinkEvent>,
        shutdown: &Receiver<()>,
        exits: &Receiver<&'static str>,
    ) -> Exit {
        loop {
            let retry = match self.online_due {
                Some(t) => at(t),
                None => never(),
            };
            let lost = match self.server.stop_due() {
                Some(t) => at(t),
                None => never(),
            };
            let event = select! {
                recv(shutdown) -> _ => Event::Shutdown,
                recv(events) -> e => e.map(Event::Link).unwrap_or(Event::LinkGone),
                recv(exits) -> n => n.map(Event::WorkerExit).unwrap_or(Event::WorkerExit("?")),
                recv(retry) -> _ => Event::RetryOnline,
                recv(lost) -> _ => Event::ServerLostDue,
            };
            match event {
                Event::Shutdown => return Exit::Shutdown,
                Event::LinkGone => {
                    error!("the mqtt-link thread stopped");
                    return Exit::LinkStopped;
                }
                Event::WorkerExit(name) => {
                    error!("thread {name} stopped unexpectedly");
                    return Exit::WorkerStopped(name);
                }
                Event::RetryOnline => self.publish_online(),
                Event::ServerLostDue => {
                    let now = Instant::now();
                    if self.server.take_stop(now) {
                        let gone = self.server.gone_for(now).unwrap_or_default();
                        warn!(
                            "no server for {}: every vehicle paused (server_lost_stop_after); \
                             only a resume action moves them again",
                            common::duration::format_duration(gone)
                        );
                        if self.inputs.send(Input::ServerLost).is_err() {
                            return Exit::WorkerStopped("vehicles");
                        }
                    }
                }
                Event::Link(LinkEvent::Connected { session }) => {
                    self.session = session;
                    self.publish_online();
                    self.tell(LinkChange::Up);
                    // After Online: an fsync must not delay it.
                    self.sessions.save(session);
                    let change = self
                        .server
                        .on_link(true, self.fence.highest(), Instant::now());
                    self.server_changed(change);
                }
                Event::Link(LinkEvent::Disconnected { reason }) => {
                    // The link logged it already (one line per state change).
                    debug!("link down: {reason}");
                    self.online_due = None;
                    self.tell(LinkChange::Down);
                    let change = self
                        .server
                        .on_link(false, self.fence.highest(), Instant::now());
                    self.server_changed(change);
                }
                Event::Link(LinkEvent::Message(p)) if p.topic.starts_with(SERVER_STATUS_PREFIX) => {
                    self.on_server_status(&p.topic, &p.payload);
                }
                Event::Link(LinkEvent::Message(p)) => {
                    let (what, decode): (&str, Decoder) = if p.topic == self.topics.segment {
                        ("segment", |b| Segment::decode(b).map(Input::Segment))
                    } else if p.topic == self.topics.action {
                        ("action", |b| Action::decode(b).map(Input::Action))
                    } else {
                        self.bad(format_args!(
                            "message on unexpected topic {:?} ignored",
                            p.topic
                        ));
                        continue;
                    };
                    if p.retain {
                        self.retained += 1;
                        let total = self.retained;
                        self.bad(format_args!(
                            "retained {what} on {} ({} bytes) dropped: the server never \
                             retains one, so it is stale ({total} retained since start; \
                             clear it with an empty retained publish)",
                            p.topic,
                            p.payload.len()
                        ));
                        continue;
                    }
                    match decode(&p.payload) {
                        Ok(input) => {
                            if self.inputs.send(input).is_err() {
                                return Exit::WorkerStopped("vehicles");
                            }
                        }
                        Err(e) => {
                            self.malformed += 1;
                            let total = self.malformed;
                            self.bad(format_args!(
                                "malformed {what} on {} ({} bytes) ignored: {e} \
                                 ({total} malformed since start)",
                                p.topic,
                                p.payload.len()
                            ));
                        }
                    }
                }
            }
        }
    }

    /// A message on `server/@status/{server_id}` (retained or live; empty = cleared). An
    /// `Online` status raises the fence with its epoch.
    fn on_server_status(&mut self, topic: &str, payload: &[u8]) {
        let Ok(server_id) = parse_server_status_topic(topic) else {
            self.bad(format_args!(
                "server status on a bad topic {topic:?} ignored"
            ));
            return;
        };
        let status = if payload.is_empty() {
            None
        } else {
            match ServerStatus::decode(payload) {
                Ok(s) => Some(s),
                Err(e) => {
                    self.malformed += 1;
                    self.bad(format_args!(
                        "malformed server status on {topic} ({} bytes) ignored: {e}",
                        payload.len()
                    ));
                    return;
                }
            }
        };
        if let Some(s) = status.filter(|s| s.presence == Presence::Online) {
            self.fence.raise(s.epoch);
        }
        let now = Instant::now();
        let change = self
            .server
            .on_status(server_id, status, self.fence.highest(), now);
        self.server_changed(change);
    }

    /// Logs what matters of a presence change: the return of a server after the vehicles
    /// were paused (once per event); the pause itself is logged when it happens.
    fn server_changed(&self, change: Change) {
        match change {
            Change::Back { after_stop: true } => {
                info!("a server is back; the vehicles stay paused until a resume action")
            }
            Change::Back { after_stop: false } => debug!("a server is online"),
            Change::Gone => debug!("no server online"),
            Change::None => {}
        }
    }

    fn publish_online(&mut self) {
        self.online_due = None;
        let payload = presence::status(Presence::Online, self.session);
        if self
            .publisher
            .try_send(&self.topics.status, QoS::AtLeastOnce, true, &payload)
            .is_err()
        {
            if self.publisher.is_connected() {
                self.online_due = Some(Instant::now() + ONLINE_RETRY);
            }
        } else {
            debug!("online, session {}", self.session);
        }
    }

    fn tell(&self, change: LinkChange) {
        for w in &self.watchers {
            let _ = w.try_send(change);
        }
    }

    /// One warning per 10 s for bad input, with the count of the ones held back.
    fn bad(&mut self, what: std::fmt::Arguments<'_>) {
        if let Some(held) = self.bad_input.check(Instant::now()) {
            warn!("{what}{}", Held(held).note("similar lines"));
        }
    }
}
