//! The running server and its threads:
//!
//! ```text
//!  broker ─> [mqtt-link] ─LinkEvent (bounded 64k)─> [registry]  owns Fleet + Dispatcher
//!                 ^                                   │   ^
//!                 └─ try_publish segments, actions ───┘   │ Request (bounded 1024):
//!                                                         │ Dispatch, Action, Snapshot, ...
//!  [status]  Render every status_interval ─> stdout ──────┤
//!  [planner] Poses + Dispatch every segment_interval ─────┤
//!  FleetHandle users (tests, the HTTP API) ───────────────┘
//!  [registry] ─Feed (bounded, try_send)─> [http-events] ─> event streams ([`crate::http`])
//! ```
//!
//! `registry` ([`crate::registry`]) is the only owner of the [`Fleet`], the [`Dispatcher`] and
//! the counters, and routes every incoming message itself. `status` renders the table through the registry and
//! writes it to stdout in one write, so a stuck stdout never stalls the registry. `planner` is
//! the demo planner, a client of the same API as everyone else.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::topic::{SERVER_SUBSCRIPTIONS, server_status_topic};
use common::{ClientId, Message, Presence, ServerStatus};
use crossbeam_channel::{Receiver, Sender, bounded, select, tick};
use log::{debug, info, warn};
use mqtt_link::session_store::SessionStore;
use mqtt_link::{LastWill, Link, LinkConfig, QoS, SetupError, WillFn, Worker};

use crate::actions::{
    ActionConfig, ActionError, ActionRecord, ActionSpec, ActionTicket, ActionTracker,
    StopAllResults, seed_action_id,
};
use crate::config::ServerConfig;
use crate::dispatch::journal::SegmentRecord;
use crate::dispatch::{
    DispatchConfig, DispatchError, Dispatcher, Order, Publisher, SegmentSpec, SegmentTicket,
    seed_segment_id,
};
use crate::feed::Feed;
use crate::fleet::{Fleet, FleetConfig};
use crate::http::Http;
use crate::leadership::LeaderView;
use crate::planner::SegmentSink;
use crate::registry::{Registry, Request};
use crate::snapshot::{EntityPose, PiView, Snapshot, Stats};

/// Link events waiting for the registry; when full, the link thread waits (no loss).
pub const EVENT_CAPACITY: usize = 65_536;
/// Largest incoming packet: far above the 64-byte payloads, so a garbage publish (even a
/// retained 2 MiB one, behind a broker without `max_packet_size`) is counted as `oversized`
/// instead of costing the connection.
pub const MAX_PACKET: usize = mqtt_link::link::MAX_INCOMING_PACKET;
/// rumqttc's request queue: segments waiting to be written to the socket.
pub const REQUEST_CAPACITY: usize = 4096;

/// The server's library API, cheap to clone and usable from any thread: send segments, read
/// the registry. Every call fails (None or `ShuttingDown`) once the server has stopped.
#[derive(Clone)]
pub struct FleetHandle {
    tx: Sender<Request>,
}

impl FleetHandle {
    fn ask<T>(&self, make: impl FnOnce(Sender<T>) -> Request) -> Option<T> {
        let (tx, rx) = bounded(1);
        self.tx.send(make(tx)).ok()?;
        rx.recv().ok()
    }

    /// Sends a segment to entity `spec.entity_id` of Pi `client_id`. Fails at once when it
    /// cannot be delivered (Pi unknown or offline, entity never reported, no broker) or when
    /// this server is a standby ([`DispatchError::NotLeader`], naming the leader); else
    /// the ticket's channel reports `Accepted`, then `Completed`, `Rejected` or `Failed`.
    pub fn dispatch(
        &self,
        client_id: &str,
        spec: SegmentSpec,
    ) -> Result<SegmentTicket, DispatchError> {
        let (notify, outcomes) = bounded(4);
        let id = self
            .ask(|reply| Request::Dispatch {
                order: Order {
                    client_id: client_id.to_owned(),
                    spec,
                    notify: Some(notify),
                },
                reply,
            })
            .ok_or(DispatchError::ShuttingDown)??;
        Ok(SegmentTicket { id, outcomes })
    }

    /// A copy of the whole registry and the counters.
    pub fn snapshot(&self) -> Option<Snapshot> {
        self.ask(Request::Snapshot)
    }

    /// One Pi; None when unknown or the server has stopped.
    pub fn pi(&self, id: &str) -> Option<PiView> {
        self.ask(|reply| Request::Pi(id.to_owned(), reply))
            .flatten()
    }

    /// One of the last segments sent ([`crate::dispatch::journal`]); None when not among them.
    pub fn segment(&self, id: u32) -> Option<SegmentRecord> {
        self.ask(|reply| Request::Segment(id, reply)).flatten()
    }

    /// The counters and gauges, without the per-Pi views (cheap: for the metrics).
    pub fn stats(&self) -> Option<Stats> {
        self.ask(Request::Stats)
    }

    /// Sends an instant action (protocol version 3) to `target` of Pi `pi`: `segment_id` is
    /// for `Cancel` only (0 = every queued segment). Fails at once when it cannot be sent (Pi
    /// unknown or offline, entity never reported, no broker) or the Pi speaks an older
    /// protocol (`unsupported (protocol 2)`: nothing is sent); else the ticket's channel
    /// reports the Pi's answer, or that none came.
    pub fn action(
        &self,
        pi: &str,
        target: common::Target,
        action: common::ActionKind,
        segment_id: u32,
    ) -> Result<ActionTicket, ActionError> {
        self.ask(|reply| Request::Action {
            pi: pi.to_owned(),
            spec: ActionSpec {
                target,
                action,
                segment_id,
            },
            reply,
        })
        .ok_or(ActionError::ShuttingDown)?
    }

    /// `stop` to every entity of every Pi the server knows: one result per Pi, sorted by id.
    /// Sent to the online version 3 Pis; the others fail (`PiOffline`, `Unsupported`).
    pub fn stop_all(&self) -> Result<StopAllResults, ActionError> {
        self.ask(Request::StopAll)
            .ok_or(ActionError::ShuttingDown)?
    }

    /// One of the last actions sent ([`crate::actions`]); None when not among them.
    pub fn action_record(&self, id: u32) -> Option<ActionRecord> {
        self.ask(|reply| Request::ActionRecord(id, reply)).flatten()
    }

    /// The status table as printed on stdout.
    pub fn render_table(&self) -> Option<String> {
        self.ask(Request::Render)
    }

    /// This server's leadership: leader or standby, its epoch, who leads.
    pub fn leader(&self) -> Option<LeaderView> {
        self.ask(Request::Leader)
    }

    /// Waits until this server leads, at most `timeout`; its epoch, or None. A server alone
    /// on its broker leads about 1.5 s after connecting (docs/protocol.md, "Leadership").
    pub fn wait_leading(&self, timeout: Duration) -> Option<u32> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(epoch) = self.leader()?.epoch {
                return Some(epoch);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl SegmentSink for FleetHandle {
    fn poses(&self) -> Option<Vec<EntityPose>> {
        self.ask(Request::Poses)
    }

    fn dispatch(&self, client_id: &str, spec: SegmentSpec) -> Result<SegmentTicket, DispatchError> {
        FleetHandle::dispatch(self, client_id, spec)
    }

    fn leads(&self) -> Option<bool> {
        self.leader().map(|l| l.epoch.is_some())
    }
}

/// A server status payload stamped now.
fn server_status(presence: Presence, session: u32) -> Vec<u8> {
    Message::ServerStatus(ServerStatus {
        presence,
        session,
        epoch: 0,
        timestamp_ms: mqtt_link::daemon::wall_ms(),
    })
    .encode()
    .to_vec()
}

/// The server's Last Will: `ConnectionLost` with the connection's session, epoch 0, retained
/// (docs/protocol.md, "Server presence").
fn server_will(topic: String) -> WillFn {
    Box::new(move |session| {
        LastWill::new(
            topic.clone(),
            server_status(Presence::ConnectionLost, session),
            QoS::AtLeastOnce,
            true,
        )
    })
}

/// Segments go out through the link's connection-gated publisher, at QoS 1, not retained;
/// the server's status and the lease retained.
impl Publisher for mqtt_link::Publisher {
    fn connected(&self) -> bool {
        self.is_connected()
    }

    fn publish(&mut self, topic: &str, payload: &[u8]) -> Result<(), String> {
        self.try_send(topic, QoS::AtLeastOnce, false, payload)
            .map_err(|e| e.to_string())
    }

    fn publish_retained(&mut self, topic: &str, payload: &[u8]) -> Result<(), String> {
        self.try_send(topic, QoS::AtLeastOnce, true, payload)
            .map_err(|e| e.to_string())
    }
}

/// Why the server could not start, or stopped without being asked to.
#[derive(Debug)]
pub enum StartError {
    Link(SetupError),
    /// A setting read at start (the fleet list) is bad.
    Config(common::ConfigError),
    Spawn(&'static str, std::io::Error),
    /// A thread the server cannot run without ended on its own.
    Stopped(&'static str),
    /// The operator interface could not listen (address in use, no permission, ...).
    Http(std::net::SocketAddr, std::io::Error),
    /// `http_token_file` could not be read (it was readable when the config was checked).
    Token(common::ConfigError),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Link(_) => write!(f, "cannot set up the broker connection"),
            StartError::Config(_) => write!(f, "bad configuration"),
            StartError::Spawn(name, _) => write!(f, "cannot start thread {name}"),
            StartError::Stopped(name) => write!(f, "thread {name} stopped unexpectedly"),
            StartError::Http(addr, _) => write!(f, "cannot listen on {addr} (http_listen)"),
            StartError::Token(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Link(e) => Some(e),
            StartError::Config(e) => Some(e),
            StartError::Spawn(_, e) => Some(e),
            StartError::Http(_, e) => Some(e),
            StartError::Stopped(_) | StartError::Token(_) => None,
        }
    }
}

/// The running server.
pub struct Server {
    handle: FleetHandle,
    /// Hears the name of each worker thread that ends (see [`Server::wait`]).
    exits: Receiver<&'static str>,
    link: Option<Link>,
    registry: Option<Worker<Snapshot>>,
    status: Option<Worker<()>>,
    planner: Option<Worker<()>>,
    /// The operator interface, unless `http_listen` is off.
    http: Option<Http>,
    /// `server/@status/{client_id}`, for the `Offline` of a clean shutdown.
    status_topic: String,
    /// The current connection's session (set by the registry at each ConnAck).
    session: Arc<AtomicU32>,
}

impl Server {
    /// Connects (in the background: the link retries until the broker answers) and starts
    /// the threads.
    pub fn start(cfg: &ServerConfig) -> Result<Server, StartError> {
        let fleet_list = cfg.fleet_list().map_err(StartError::Config)?;
        let (event_tx, event_rx) = bounded(EVENT_CAPACITY);
        let server_id = ClientId::new(&cfg.client_id).map_err(|e| {
            StartError::Config(common::ConfigError::new("client_id", "", e.to_string()))
        })?;
        let status_topic = server_status_topic(&server_id);
        let sessions = SessionStore::open(cfg.state_dir.as_deref(), wall_secs());
        let session = Arc::new(AtomicU32::new(sessions.first));
        let mut lc = LinkConfig::new(cfg.client_id.clone(), cfg.broker.clone());
        lc.subscriptions = SERVER_SUBSCRIPTIONS
            .iter()
            .map(|t| ((*t).to_owned(), mqtt_link::SUBSCRIBE_QOS))
            .collect();
        lc.will = Some(server_will(status_topic.clone()));
        lc.first_session = sessions.first;
        // The broker's own figures for the metrics; a broker that denies them costs nothing.
        lc.subscriptions.extend(
            crate::broker_sys::SYS_TOPICS
                .iter()
                .map(|t| ((*t).to_owned(), QoS::AtMostOnce)),
        );
        lc.max_packet_size = MAX_PACKET;
        lc.request_capacity = REQUEST_CAPACITY;
        let link = Link::start(lc, event_tx).map_err(StartError::Link)?;
        let out = link.publisher();
        let (req_tx, req_rx) = bounded(1024);
        let (exit_tx, exits) = bounded(8);
        let mut server = Server {
            handle: FleetHandle { tx: req_tx },
            exits,
            link: Some(link),
            registry: None,
            status: None,
            planner: None,
            http: None,
            status_topic,
            session: session.clone(),
        };
        let registry = Registry::new(
            Fleet::new(FleetConfig::new(
                cfg.heartbeat_timeout,
                cfg.max_pis,
                cfg.evict_after,
            ))
            .with_fleet_list(fleet_list),
            Dispatcher::new(
                DispatchConfig::new(cfg.ack_timeout, cfg.segment_retries),
                seed_segment_id(),
            ),
            out,
        )
        .with_actions(ActionTracker::new(
            ActionConfig::new(cfg.ack_timeout, cfg.segment_retries),
            seed_action_id(),
        ))
        .with_identity(&server_id, sessions, session);
        let registry = match cfg.http_listen {
            Some(addr) => {
                let token = cfg.http_token().map_err(StartError::Token)?;
                let (feed, feed_rx, shared) = Feed::new();
                let http = Http::start(
                    addr,
                    token,
                    server.handle.clone(),
                    (feed_rx, shared),
                    &exit_tx,
                )
                .map_err(|e| StartError::Http(addr, e))?;
                info!(
                    "operator interface on http://{} (docs/operator.md)",
                    http.addr
                );
                server.http = Some(http);
                registry.with_feed(feed)
            }
            None => registry,
        };
        server.registry = Some(spawn("registry", &exit_tx, move |stop| {
            registry.run(event_rx, req_rx, stop)
        })?);
        if !cfg.status_interval.is_zero() {
            let handle = server.handle.clone();
            let interval = cfg.status_interval;
            let title = match server.http_addr() {
                Some(addr) => format!("Web map: http://{addr}/   (Ctrl-C stops)\n\n"),
                None => String::new(),
            };
            server.status = Some(spawn("status", &exit_tx, move |stop| {
                status_loop(&handle, interval, &title, &stop)
            })?);
        }
        if !cfg.segment_interval.is_zero() {
            let handle = server.handle.clone();
            let interval = cfg.segment_interval;
            server.planner = Some(spawn("planner", &exit_tx, move |stop| {
                crate::planner::run(&handle, interval, &stop)
            })?);
        }
        info!(
            "mqtt-server {} started: broker {}, heartbeat timeout {}, table every {}, demo planner {}",
            env!("CARGO_PKG_VERSION"),
            cfg.broker.addrs,
            crate::table::human(cfg.heartbeat_timeout),
            if cfg.status_interval.is_zero() {
                "off".to_string()
            } else {
                crate::table::human(cfg.status_interval)
            },
            if cfg.segment_interval.is_zero() {
                "off".to_string()
            } else {
                format!("every {}", crate::table::human(cfg.segment_interval))
            },
        );
        Ok(server)
    }

    /// Where the operator interface listens (None: off).
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.http.as_ref().map(|h| h.addr)
    }

    /// A handle for the library API (dispatch, snapshot, table).
    pub fn handle(&self) -> FleetHandle {
        self.handle.clone()
    }

    /// Waits until `shutdown` receives (or its senders are gone): None; or until the
    /// registry thread ends on its own (a panic): its name. The table and the planner may end
    /// on their own (stdout closed, the planner's work done): the server runs on without them.
    pub fn wait(&self, shutdown: &Receiver<()>) -> Option<&'static str> {
        loop {
            select! {
                recv(shutdown) -> _ => return None,
                recv(self.exits) -> name => match name {
                    Ok("registry") => return Some("registry"),
                    Ok(other) => debug!("thread {other} ended"),
                    Err(_) => return None,
                },
            }
        }
    }

    /// Stops the planner and the table, disconnects cleanly, stops the registry (failing
    /// unfinished segments with `ShuttingDown`) and returns the final state and counters.
    /// Re-raises the panic of a thread.
    pub fn shutdown(mut self) -> Snapshot {
        self.stop_all()
            .expect("the registry thread runs until shutdown or panics")
    }

    fn stop_all(&mut self) -> Option<Snapshot> {
        if let Some(http) = self.http.take() {
            http.stop();
        }
        if let Some(w) = self.planner.take() {
            w.stop_join();
        }
        if let Some(w) = self.status.take() {
            w.stop_join();
        }
        if let Some(link) = self.link.take() {
            // `Offline` (epoch 0) before the DISCONNECT: a standby takes over at once.
            let offline = server_status(Presence::Offline, self.session.load(Ordering::Acquire));
            link.shutdown(
                Some((self.status_topic.clone(), offline)),
                Duration::from_secs(2),
            );
        }
        self.registry.take().and_then(Worker::stop_join)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// The wall clock in seconds, the floor of the session counter.
fn wall_secs() -> u32 {
    u32::try_from(mqtt_link::daemon::wall_ms() / 1000).unwrap_or(u32::MAX)
}

/// Starts a named worker whose exit `exits` hears.
fn spawn<T: Send + 'static>(
    name: &'static str,
    exits: &Sender<&'static str>,
    body: impl FnOnce(Receiver<()>) -> T + Send + 'static,
) -> Result<Worker<T>, StartError> {
    Worker::spawn(name, exits, body).map_err(|e| StartError::Spawn(name, e))
}

/// The `status` thread: the table on stdout every `interval`, one write and flush each. On a
/// terminal each table replaces the last one, under `title` ([`crate::table::Screen`]); piped
/// or redirected, tables follow each other line by line (scripts and tests read them).
fn status_loop(handle: &FleetHandle, interval: Duration, title: &str, stop: &Receiver<()>) {
    let screen = crate::table::Screen::detect(&std::io::stdout());
    let ticker = tick(interval);
    loop {
        select! {
            recv(stop) -> _ => break,
            recv(ticker) -> _ => {
                let Some(table) = handle.render_table() else {
                    break;
                };
                let text = screen.frame(title, table);
                let mut out = std::io::stdout().lock();
                if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                    warn!("cannot write the status table to stdout ({e}); no more tables");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operator_interface_answers_and_stops_with_the_server() {
        let mut cfg = ServerConfig::default();
        assert_eq!(cfg.apply("broker", "127.0.0.1:1"), Ok(()));
        assert_eq!(cfg.apply("http_listen", "127.0.0.1:0"), Ok(()));
        cfg.status_interval = Duration::ZERO;
        cfg.segment_interval = Duration::ZERO;
        let server = Server::start(&cfg).unwrap();
        let addr = server.http_addr().expect("listening").to_string();
        let http = testkit::http::Client::new(addr.clone());
        let r = http.get("/api/fleet").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["broker_connected"], false);
        let r = http
            .post_json(
                "/api/pis/a/entities/1/segments",
                r#"{"end": [1, 2], "velocity_start": 1, "velocity_end": 0, "segment_type": 0}"#,
            )
            .unwrap();
        assert_eq!(r.status, 404, "unknown Pi: checked before the broker");
        let t0 = std::time::Instant::now();
        server.shutdown();
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        assert!(
            std::net::TcpStream::connect(&addr).is_err(),
            "no longer listening"
        );
    }

    #[test]
    fn run_stops_when_the_registry_dies_instead_of_waiting_for_a_signal() {
        let mut cfg = ServerConfig::default();
        // Nothing listens there: the link keeps retrying in the background.
        assert_eq!(cfg.apply("broker", "127.0.0.1:1"), Ok(()));
        cfg.status_interval = Duration::ZERO;
        cfg.segment_interval = Duration::ZERO;
        cfg.http_listen = None;
        let server = Server::start(&cfg).unwrap();
        let handle = server.handle();
        // The signal never comes: the sender stays alive for the whole test.
        let (_signal, shutdown) = bounded::<()>(1);
        let (done_tx, done) = bounded(1);
        let runner = std::thread::spawn(move || {
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                crate::run_until(server, &shutdown)
            }));
            let _ = done_tx.send(ran.is_err());
        });
        assert!(handle.snapshot().is_some(), "the registry answers");
        let _ = handle.tx.send(Request::Crash);
        let panicked = done
            .recv_timeout(Duration::from_secs(10))
            .expect("run returned without a signal");
        assert!(panicked, "the registry's panic is re-raised by run");
        runner.join().unwrap();
        assert!(
            handle.snapshot().is_none(),
            "the API says the server is gone"
        );
    }
}
