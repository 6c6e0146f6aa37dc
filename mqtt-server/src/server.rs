//! The running server and its threads:
//!
//! ```text
//!  broker ─> [mqtt-link] ─LinkEvent (bounded 64k)─> [registry]  owns Fleet + Dispatcher
//!                 ^                                   │   ^
//!                 └───── try_publish segments ────────┘   │ Request (bounded 1024):
//!                                                         │ Dispatch, Snapshot, Render, Poses
//!  [status]  Render every status_interval ─> stdout ──────┤
//!  [planner] Poses + Dispatch every segment_interval ─────┤
//!  FleetHandle users (tests, the HTTP API to come) ───────┘
//! ```
//!
//! `registry` is the only owner of the [`Fleet`] and the [`Dispatcher`]: it selects over link
//! events, requests from [`FleetHandle`]s, a 50 ms tick (heartbeat timeouts, eviction,
//! retries), a timer armed for the next heartbeat deadline (so a timeout is on time, not up
//! to a tick late) and its stop channel. `status` renders the table through the registry and
//! writes it to stdout in one write, so a stuck stdout never stalls the registry. `planner` is
//! the demo planner, a client of the same API as everyone else.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::topic::SERVER_SUBSCRIPTIONS;
use crossbeam_channel::{Receiver, Sender, after, bounded, never, select, tick};
use log::{debug, info, warn};
use mqtt_link::daemon::wall_ms;
use mqtt_link::{Client, Link, LinkConfig, LinkEvent, QoS, SetupError};

use crate::config::ServerConfig;
use crate::dispatch::{
    DispatchConfig, DispatchError, Dispatcher, Publisher, SegmentOutcome, SegmentSpec,
    SegmentTicket, seed_segment_id,
};
use crate::fleet::{Fleet, FleetConfig};
use crate::planner::SegmentSink;
use crate::snapshot::{EntityPose, Snapshot, online_poses};

/// Link events waiting for the registry; when full, the link thread waits (no loss).
pub const EVENT_CAPACITY: usize = 65_536;
/// The registry's housekeeping period (retries, eviction, and heartbeat timeouts of Pis that
/// came online since the last deadline timer was armed).
pub const TICK: Duration = Duration::from_millis(50);
/// Largest incoming packet: far above the 64-byte payloads, so a garbage publish (even a
/// retained 2 MiB one, behind a broker without `max_packet_size`) is counted as `oversized`
/// instead of costing the connection.
pub const MAX_PACKET: usize = mqtt_link::link::MAX_INCOMING_PACKET;
/// rumqttc's request queue: segments waiting to be written to the socket.
pub const REQUEST_CAPACITY: usize = 4096;

/// A request to the registry thread.
enum Request {
    Dispatch {
        client_id: String,
        spec: SegmentSpec,
        notify: Sender<SegmentOutcome>,
        reply: Sender<Result<u32, DispatchError>>,
    },
    Snapshot(Sender<Snapshot>),
    Render(Sender<String>),
    Poses(Sender<Vec<EntityPose>>),
}

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
    /// cannot be delivered (Pi unknown or offline, entity never reported, no broker); else
    /// the ticket's channel reports `Accepted`, then `Completed`, `Rejected` or `Failed`.
    pub fn dispatch(
        &self,
        client_id: &str,
        spec: SegmentSpec,
    ) -> Result<SegmentTicket, DispatchError> {
        let (notify, outcomes) = bounded(4);
        let id = self
            .ask(|reply| Request::Dispatch {
                client_id: client_id.to_owned(),
                spec,
                notify,
                reply,
            })
            .ok_or(DispatchError::ShuttingDown)??;
        Ok(SegmentTicket { id, outcomes })
    }

    /// A copy of the whole registry and the counters.
    pub fn snapshot(&self) -> Option<Snapshot> {
        self.ask(Request::Snapshot)
    }

    /// The status table as printed on stdout.
    pub fn render_table(&self) -> Option<String> {
        self.ask(Request::Render)
    }
}

impl SegmentSink for FleetHandle {
    fn poses(&self) -> Option<Vec<EntityPose>> {
        self.ask(Request::Poses)
    }

    fn dispatch(&self, client_id: &str, spec: SegmentSpec) -> Result<SegmentTicket, DispatchError> {
        FleetHandle::dispatch(self, client_id, spec)
    }
}

/// Publishes segments through the link, only while connected (nothing stale piles up).
struct LinkPublisher {
    client: Client,
    connected: Arc<AtomicBool>,
}

impl Publisher for LinkPublisher {
    fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    fn publish(&mut self, topic: &str, payload: &[u8]) -> Result<(), String> {
        if !self.connected() {
            return Err("not connected to the broker".into());
        }
        self.client
            .try_publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
            .map_err(|e| e.to_string())
    }
}

/// The registry thread's state.
struct Registry {
    fleet: Fleet,
    dispatcher: Dispatcher,
    out: LinkPublisher,
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

impl Registry {
    fn run(
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
                    self.fleet.tick(now);
                    self.fail_offline(now);
                    self.dispatcher
                        .tick(now, self.fleet.counters_mut(), &mut self.out);
                    self.dispatcher.settle_stranded(now, &mut self.fleet);
                    expiry = match self.fleet.next_expiry() {
                        // Just past the deadline: the timeout is "more than".
                        Some(t) => {
                            after(t.saturating_duration_since(now) + Duration::from_millis(1))
                        }
                        None => never(),
                    };
                }
            }
        }
        let now = Instant::now();
        self.dispatcher.shutdown(now, self.fleet.counters_mut());
        Snapshot::of(&self.fleet, &self.dispatcher, self.out.connected(), now)
    }

    fn fail_offline(&mut self, now: Instant) {
        for id in self.fleet.take_went_offline() {
            self.dispatcher
                .on_pi_offline(now, &id, self.fleet.counters_mut());
        }
    }

    fn on_link(&mut self, now: Instant, e: LinkEvent) {
        match e {
            LinkEvent::Connected { session } => {
                self.fleet.counters_mut().broker_connects += 1;
                self.fleet.link_up(now);
                debug!(
                    "link session {session}: subscribed to {SERVER_SUBSCRIPTIONS:?}; retained statuses rebuild the fleet view"
                );
            }
            LinkEvent::Disconnected { reason } => {
                self.fleet.counters_mut().broker_disconnects += 1;
                self.fleet.link_down(now);
                debug!("link down ({reason}); heartbeat timeouts held until it is back");
            }
            LinkEvent::Message(p) => {
                if let Some((client, ack)) =
                    self.fleet
                        .on_publish(now, wall_ms(), &p.topic, &p.payload, p.retain)
                {
                    self.dispatcher
                        .on_ack(now, &client, ack, self.fleet.counters_mut());
                }
                self.fail_offline(now);
            }
        }
    }

    fn on_request(&mut self, now: Instant, r: Request) {
        match r {
            Request::Dispatch {
                client_id,
                spec,
                notify,
                reply,
            } => {
                let result = self.dispatcher.dispatch(
                    now,
                    wall_ms(),
                    &mut self.fleet,
                    &client_id,
                    spec,
                    Some(notify),
                    &mut self.out,
                );
                let _ = reply.send(result);
            }
            Request::Snapshot(reply) => {
                let _ = reply.send(Snapshot::of(
                    &self.fleet,
                    &self.dispatcher,
                    self.out.connected(),
                    now,
                ));
            }
            Request::Render(reply) => {
                let _ = reply.send(crate::table::render(&self.fleet, now));
            }
            Request::Poses(reply) => {
                let _ = reply.send(online_poses(&self.fleet));
            }
        }
    }
}

/// Why the server could not start.
#[derive(Debug)]
pub enum StartError {
    Link(SetupError),
    Spawn(&'static str, std::io::Error),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Link(_) => write!(f, "cannot set up the broker connection"),
            StartError::Spawn(name, _) => write!(f, "cannot start thread {name}"),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Link(e) => Some(e),
            StartError::Spawn(_, e) => Some(e),
        }
    }
}

/// A named thread with a stop channel (dropping the sender stops it).
struct Worker<T> {
    stop: Option<Sender<()>>,
    handle: Option<JoinHandle<T>>,
}

impl<T: Send + 'static> Worker<T> {
    fn spawn(
        name: &'static str,
        f: impl FnOnce(Receiver<()>) -> T + Send + 'static,
    ) -> Result<Worker<T>, StartError> {
        let (stop_tx, stop_rx) = bounded::<()>(0);
        let handle = thread::Builder::new()
            .name(name.into())
            .spawn(move || f(stop_rx))
            .map_err(|e| StartError::Spawn(name, e))?;
        Ok(Worker {
            stop: Some(stop_tx),
            handle: Some(handle),
        })
    }

    /// Stops the thread and joins it, re-raising its panic.
    fn stop_join(&mut self) -> Option<T> {
        drop(self.stop.take());
        let handle = self.handle.take()?;
        match handle.join() {
            Ok(v) => Some(v),
            Err(panic) if !thread::panicking() => std::panic::resume_unwind(panic),
            Err(_) => None,
        }
    }
}

/// The running server.
pub struct Server {
    handle: FleetHandle,
    link: Option<Link>,
    registry: Option<Worker<Snapshot>>,
    status: Option<Worker<()>>,
    planner: Option<Worker<()>>,
}

impl Server {
    /// Connects (in the background: the link retries until the broker answers) and starts
    /// the threads.
    pub fn start(cfg: &ServerConfig) -> Result<Server, StartError> {
        let (event_tx, event_rx) = bounded(EVENT_CAPACITY);
        let mut lc = LinkConfig::new(cfg.client_id.clone(), cfg.broker.clone());
        lc.subscriptions = SERVER_SUBSCRIPTIONS
            .iter()
            .map(|t| ((*t).to_owned(), QoS::AtLeastOnce))
            .collect();
        lc.max_packet_size = MAX_PACKET;
        lc.request_capacity = REQUEST_CAPACITY;
        let link = Link::start(lc, event_tx).map_err(StartError::Link)?;
        let out = LinkPublisher {
            client: link.client(),
            connected: link.connected_flag(),
        };
        let (req_tx, req_rx) = bounded(1024);
        let mut server = Server {
            handle: FleetHandle { tx: req_tx },
            link: Some(link),
            registry: None,
            status: None,
            planner: None,
        };
        let registry = Registry {
            fleet: Fleet::new(FleetConfig::new(
                cfg.heartbeat_timeout,
                cfg.max_pis,
                cfg.evict_after,
            )),
            dispatcher: Dispatcher::new(
                DispatchConfig::new(cfg.ack_timeout, cfg.segment_retries),
                seed_segment_id(),
            ),
            out,
        };
        server.registry = Some(Worker::spawn("registry", move |stop| {
            registry.run(event_rx, req_rx, stop)
        })?);
        if !cfg.status_interval.is_zero() {
            let handle = server.handle.clone();
            let interval = cfg.status_interval;
            server.status = Some(Worker::spawn("status", move |stop| {
                status_loop(&handle, interval, &stop)
            })?);
        }
        if !cfg.segment_interval.is_zero() {
            let handle = server.handle.clone();
            let interval = cfg.segment_interval;
            server.planner = Some(Worker::spawn("planner", move |stop| {
                crate::planner::run(&handle, interval, &stop)
            })?);
        }
        info!(
            "mqtt-server {} started: broker {}, heartbeat timeout {}, table every {}, demo planner {}",
            env!("CARGO_PKG_VERSION"),
            cfg.broker.addr,
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

    /// A handle for the library API (dispatch, snapshot, table).
    pub fn handle(&self) -> FleetHandle {
        self.handle.clone()
    }

    /// Stops the planner and the table, disconnects cleanly, stops the registry (failing
    /// unfinished segments with `ShuttingDown`) and returns the final state and counters.
    pub fn shutdown(mut self) -> Snapshot {
        self.stop_all()
            .expect("the registry thread runs until shutdown")
    }

    fn stop_all(&mut self) -> Option<Snapshot> {
        if let Some(mut w) = self.planner.take() {
            w.stop_join();
        }
        if let Some(mut w) = self.status.take() {
            w.stop_join();
        }
        if let Some(link) = self.link.take() {
            link.shutdown(None, Duration::from_secs(2));
        }
        self.registry.take().and_then(|mut w| w.stop_join())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// The `status` thread: the table on stdout every `interval`, one write and flush each.
fn status_loop(handle: &FleetHandle, interval: Duration, stop: &Receiver<()>) {
    let ticker = tick(interval);
    loop {
        select! {
            recv(stop) -> _ => break,
            recv(ticker) -> _ => {
                let Some(text) = handle.render_table() else {
                    break;
                };
                let mut out = std::io::stdout().lock();
                if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                    warn!("cannot write the status table to stdout ({e}); no more tables");
                    break;
                }
            }
        }
    }
}
