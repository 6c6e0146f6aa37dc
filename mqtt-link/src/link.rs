//! The MQTT event-loop thread: drives rumqttc's blocking `Connection`, reconnects with capped
//! backoff and jitter, re-subscribes and renews the Last Will on every connect, and turns
//! what happens into [`LinkEvent`]s on a crossbeam channel.
//!
//! With a list of brokers, every failed or lost connection moves the link to the next address
//! (wrapping around), after the same backoff. rumqttc's blocking `Connection` reads its
//! `MqttOptions` at each connect, so the link swaps in the next broker's prebuilt options:
//! the `Client` handles the daemons hold stay valid (one request channel throughout).
//!
//! What rumqttc 0.25 does not do by itself, and this module does: it never backs off between
//! reconnect attempts (a refused port spins ~100k attempts/s), it never re-subscribes, it keeps
//! iterating (and so reconnects) after `disconnect()`, and TCP_NODELAY is off by default.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::backoff::{Backoff, fnv1a};
use common::ratelimit::RateLimiter;
use crossbeam_channel::{Receiver, Sender, select};
use log::{debug, error, info, warn};
use rumqttc::{
    Client, Connection, ConnectionError, Event, LastWill, MqttOptions, NetworkOptions, Outgoing,
    Packet, Publish, QoS, SubscribeReasonCode,
};

use crate::Held;
use crate::broker::{BrokerConfig, SetupError};
use crate::periodic::{Periodic, Waiter, Woke};
use crate::publisher::Burst;

/// Builds the Last Will for the connection with the given session number.
pub type WillFn = Box<dyn Fn(u32) -> LastWill + Send>;

/// The default [`LinkConfig::max_packet_size`]: 16 MiB. Every broker config the project
/// ships caps packets at 4 KiB (`max_packet_size 4096`), so this only matters behind a broker
/// without a cap: there a packet up to this size costs one transient buffer (affordable even
/// on a 512 MB Pi; the payload is freed as soon as it is counted and dropped) instead of the
/// connection. A larger one still costs a reconnect (docs/reliability.md, "Oversized").
pub const MAX_INCOMING_PACKET: usize = 16 << 20;

/// The default cap of the reconnect backoff ([`LinkConfig::backoff_max`]): both daemons are
/// back within about this long (plus a connect) of a broker's return, and with a list of
/// brokers each one is tried about this often. A refused attempt costs one SYN on loopback.
pub const BACKOFF_MAX: Duration = Duration::from_millis(500);

/// The QoS both daemons subscribe with: 0. A message keeps the QoS it was published with on
/// the hop to the broker (segments, actions, acks and statuses: 1, so the broker has it), and
/// is delivered at QoS 0. QoS 1 on the broker-to-client hop would add nothing that survives a
/// broken connection: the links use clean sessions, so the broker drops the session, and
/// what was in flight with it, at every disconnect. What makes delivery sure is the
/// application: segments and actions are answered (acks, ActionAcks) and re-sent until they
/// are, and the Pi re-sends its recent acks after a reconnect. QoS 1 there did cost a PUBACK
/// per message, and on a clustered broker (NATS) a JetStream consumer per subscription,
/// created at every connect: a Pi moving to another node after a node loss waited 4.6-10 s
/// for them, with its heartbeats unread (docs/scaling.md); at QoS 0 it is back in 0.6 s.
pub const SUBSCRIBE_QOS: QoS = QoS::AtMostOnce;

/// How to run a link.
pub struct LinkConfig {
    pub client_id: String,
    pub broker: BrokerConfig,
    /// Subscribed again after every ConnAck.
    pub subscriptions: Vec<(String, QoS)>,
    /// Renewed before every connection attempt with that connection's session number.
    pub will: Option<WillFn>,
    /// The session number of the first connection; it grows by one per ConnAck.
    pub first_session: u32,
    /// rumqttc's request channel. Small on a Pi: whatever waits in it is sent after a
    /// reconnect, and stale state reports are worth nothing.
    pub request_capacity: usize,
    /// Largest incoming packet accepted; a larger one costs rumqttc the connection (it drops
    /// it, and a retained one is delivered again at every reconnect). So this is set far above
    /// the 64-byte payloads ([`MAX_INCOMING_PACKET`]) and the daemons drop and count oversized
    /// payloads themselves.
    pub max_packet_size: usize,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Run the `mqtt-link` thread as `SCHED_BATCH` (Linux): woken by a publishing thread, it
    /// no longer preempts that thread on its core. Preempted, the publisher still held the
    /// request channel's lock (flume wakes the receiver under it), so the link thread slept on
    /// that lock and was woken a second time: about 1.8 wake-ups per burst instead of 1,
    /// measured. The cost: on a core that is busy with another thread, the link thread waits
    /// for that thread's slice (a few ms) instead of running at once; on an idle core, as on
    /// a Pi, it runs at once. Set by the rpi-client (its wake-ups are a target), not the server.
    pub batch_scheduling: bool,
    /// Work the link thread does itself on a schedule (the Pi's heartbeat and state reports):
    /// one wake-up of one thread per round ([`crate::periodic`]).
    pub periodic: Option<Box<dyn Periodic>>,
}

impl LinkConfig {
    pub fn new(client_id: impl Into<String>, broker: BrokerConfig) -> LinkConfig {
        LinkConfig {
            client_id: client_id.into(),
            broker,
            subscriptions: Vec::new(),
            will: None,
            first_session: 1,
            request_capacity: 64,
            max_packet_size: MAX_INCOMING_PACKET,
            backoff_min: Duration::from_millis(50),
            backoff_max: BACKOFF_MAX,
            batch_scheduling: false,
            periodic: None,
        }
    }
}

/// What the link thread reports.
#[derive(Debug)]
pub enum LinkEvent {
    /// A ConnAck arrived; subscriptions were re-issued.
    Connected { session: u32 },
    /// An established connection broke (not reported for failed attempts to connect).
    Disconnected { reason: String },
    /// An incoming publish (QoS 1 ones are acknowledged by rumqttc).
    Message(Publish),
}

/// A running link: the client handle to publish with, and the event-loop thread.
pub struct Link {
    client: Client,
    connected: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    /// Dropped to wake the thread from a backoff sleep or a blocked event send.
    stop_tx: Option<Sender<()>>,
    handle: Option<JoinHandle<()>>,
    /// The burst queue, shared with every [`Link::publisher`].
    burst: Arc<Burst>,
}

impl Link {
    /// Checks the settings (TLS files, password file) and starts the thread `mqtt-link`.
    pub fn start(cfg: LinkConfig, events: Sender<LinkEvent>) -> Result<Link, SetupError> {
        let mut targets = cfg.broker.mqtt_options_all(&cfg.client_id)?;
        for opts in &mut targets {
            opts.set_max_packet_size(cfg.max_packet_size, cfg.max_packet_size);
            opts.set_clean_session(true);
        }
        let (client, mut connection) = Client::new(targets[0].clone(), cfg.request_capacity.max(1));
        let mut net = NetworkOptions::new();
        net.set_tcp_nodelay(true);
        net.set_connection_timeout(5);
        connection.eventloop.set_network_options(net);

        let connected = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let burst = Burst::new(cfg.request_capacity);
        let runner = Runner {
            burst: burst.clone(),
            burst_dropped: 0,
            burst_log: RateLimiter::new(Duration::from_secs(30)),
            client: client.clone(),
            connected: connected.clone(),
            stop: stop.clone(),
            stop_rx,
            events,
            addrs: cfg
                .broker
                .addrs
                .all()
                .iter()
                .map(|a| a.to_string())
                .collect(),
            targets,
            current: 0,
            backoff: Backoff::new(
                cfg.backoff_min,
                cfg.backoff_max,
                fnv1a(cfg.client_id.as_bytes()),
            ),
            // Seeded with the process id too: two processes with one client id must not
            // wait in lockstep.
            // Every delay in [TAKEOVER_BACKOFF, 2 * TAKEOVER_BACKOFF] (Backoff waits half
            // to all of its current step).
            takeover_backoff: Backoff::new(
                2 * TAKEOVER_BACKOFF,
                2 * TAKEOVER_BACKOFF,
                fnv1a(cfg.client_id.as_bytes()) ^ u64::from(std::process::id()),
            ),
            client_id: cfg.client_id,
            next_session: cfg.first_session,
            subscriptions: cfg.subscriptions,
            will: cfg.will,
            waiter: None,
            periodic: cfg.periodic,
        };
        let batch = cfg.batch_scheduling;
        let handle = thread::Builder::new()
            .name("mqtt-link".into())
            .spawn(move || {
                if batch {
                    sched_batch();
                }
                runner.run(&mut connection)
            })
            .map_err(|source| SetupError::ReadFile {
                what: "thread",
                path: "mqtt-link".into(),
                source,
            })?;
        Ok(Link {
            client,
            connected,
            stop,
            stop_tx: Some(stop_tx),
            handle: Some(handle),
            burst,
        })
    }

    /// A handle to publish with; cheap to clone and share with other threads.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// True between a ConnAck and the next connection error.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// The flag behind [`Link::is_connected`], for tickers on other threads: they publish only
    /// while connected, so nothing stale piles up in rumqttc's queue during an outage.
    pub fn connected_flag(&self) -> Arc<AtomicBool> {
        self.connected.clone()
    }

    /// A publisher that sends only while this link is connected, without blocking.
    pub fn publisher(&self) -> crate::Publisher {
        crate::Publisher::new(self.client(), self.connected_flag(), self.burst.clone())
    }

    /// Publishes `last` (if connected), disconnects cleanly and joins the thread, waiting at
    /// most `timeout`. Returns false if the thread had to be left behind (stuck in a TCP
    /// connect to an unreachable host; the process is exiting anyway).
    pub fn shutdown(mut self, last: Option<(String, Vec<u8>)>, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        self.stop.store(true, Ordering::Release);
        if self.is_connected() {
            if let Some((topic, payload)) = last {
                if let Err(e) = self
                    .client
                    .try_publish(topic, QoS::AtLeastOnce, true, payload)
                {
                    warn!("could not queue the final status: {e}");
                }
            }
            if let Err(e) = self.client.try_disconnect() {
                warn!("could not queue the disconnect: {e}");
            }
        }
        drop(self.stop_tx.take());
        self.join_until(deadline)
    }

    fn join_until(&mut self, deadline: Instant) -> bool {
        let Some(handle) = self.handle.take() else {
            return true;
        };
        while !handle.is_finished() {
            if Instant::now() >= deadline {
                warn!("mqtt-link thread did not stop in time; leaving it");
                return false;
            }
            thread::sleep(Duration::from_millis(2));
        }
        if let Err(panic) = handle.join() {
            std::panic::resume_unwind(panic);
        }
        true
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if self.handle.is_some() {
            self.stop.store(true, Ordering::Release);
            let _ = self.client.try_disconnect();
            drop(self.stop_tx.take());
            let deadline = Instant::now() + Duration::from_secs(1);
            if !thread::panicking() {
                self.join_until(deadline);
            }
        }
    }
}

struct Runner {
    client: Client,
    connected: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    stop_rx: Receiver<()>,
    events: Sender<LinkEvent>,
    /// The broker addresses as logged, parallel to `targets`.
    addrs: Vec<String>,
    /// The rumqttc options for each broker of the list (at least one).
    targets: Vec<MqttOptions>,
    /// The broker being tried or connected to: an index into `targets`.
    current: usize,
    backoff: Backoff,
    /// The wait between attempts while the session looks taken over ([`TAKEOVER_AFTER`]).
    takeover_backoff: Backoff,
    client_id: String,
    next_session: u32,
    subscriptions: Vec<(String, QoS)>,
    will: Option<WillFn>,
    /// The rest of the bursts ([`crate::Publisher::try_send_many`]), handed to rumqttc by this
    /// thread before each poll.
    burst: Arc<Burst>,
    /// Burst messages dropped (link down, or rumqttc's queue full), and their log.
    burst_dropped: u64,
    burst_log: RateLimiter,
    /// How this thread waits (made on the thread: it owns a runtime).
    waiter: Option<Waiter>,
    periodic: Option<Box<dyn Periodic>>,
}

/// Makes the calling thread `SCHED_BATCH` ([`LinkConfig::batch_scheduling`]); a failure is
/// logged and changes nothing else (the thread keeps the normal policy).
fn sched_batch() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param for the call.
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
        if rc != 0 {
            warn!(
                "could not make the mqtt-link thread SCHED_BATCH: {} (it wakes a little more \
                 often)",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// A deadline this close counts as reached (timer slack): the periodic job and the
/// re-subscription, whose timers may fire a little early.
const TIMER_SLACK: Duration = Duration::from_millis(1);

/// A connection that breaks sooner than this after its ConnAck is short-lived: the backoff
/// is not reset. From the second short-lived connection in a row the link is flapping (e.g.
/// two clients with one id taking the session from each other) and its connection lines are
/// rate-limited, so neither the broker nor the log (an SD card) is flooded.
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// This many short-lived connections in a row (each closed by the broker within
/// [`STABLE_AFTER`] of its ConnAck) make the link conclude that its session is being taken
/// over: another client connects with the same client id, and the broker closes the older
/// connection each time. rumqttc 0.25 only reports "connection closed by peer", so this is a
/// heuristic (a broker that crashes right after every connect looks the same): the log says
/// "likely", names the id, and the link waits [`TAKEOVER_BACKOFF`] (to twice that, jittered
/// per process) between attempts instead of its normal backoff, so that two daemons with one
/// id take the session from each other about once per 5-10 s instead of several times a second.
pub const TAKEOVER_AFTER: u64 = 3;
/// The least wait between attempts while the session looks taken over.
pub const TAKEOVER_BACKOFF: Duration = Duration::from_secs(5);

/// The first wait before a refused subscription is asked for again; doubled per refusal.
/// Not shorter: NATS stops reading the client (heartbeats included) for up to 5 s while it
/// tries to create the subscription's consumer, so quick retries would keep a Pi silent.
pub const RESUBSCRIBE_FIRST: Duration = Duration::from_secs(5);
/// The longest wait between two attempts of a refused subscription.
pub const RESUBSCRIBE_MAX: Duration = Duration::from_secs(60);

/// Subscriptions the broker refused (SubAck failure) and when to ask again: a broker may
/// refuse for a moment (NATS answers a SUBSCRIBE with a failure while it cannot create the
/// subscription's JetStream consumer), and without asking again a Pi would stay deaf to its
/// segments until its next reconnect. A refusal that lasts (an ACL) is asked again at most
/// every [`RESUBSCRIBE_MAX`], its log line rate-limited.
#[derive(Debug, Clone, PartialEq)]
struct Resubscribe {
    filters: Vec<(String, QoS)>,
    at: Instant,
    delay: Duration,
    attempts: u32,
}

impl Resubscribe {
    /// After a SubAck of `codes` for `subscriptions` (a SUBSCRIBE carries them all, in order;
    /// a re-sent one only `pending`'s): what to ask again, and when. None: nothing refused.
    fn after_suback(
        now: Instant,
        codes: &[SubscribeReasonCode],
        asked: &[(String, QoS)],
        pending: Option<&Resubscribe>,
    ) -> Option<Resubscribe> {
        let refused = |c: &SubscribeReasonCode| matches!(c, SubscribeReasonCode::Failure);
        if !codes.iter().any(refused) {
            return None;
        }
        // Positional when the counts match; otherwise all of them again.
        let filters: Vec<(String, QoS)> = if codes.len() == asked.len() {
            asked
                .iter()
                .zip(codes)
                .filter(|(_, c)| refused(c))
                .map(|(f, _)| f.clone())
                .collect()
        } else {
            asked.to_vec()
        };
        let (delay, attempts) = match pending {
            Some(p) => ((p.delay * 2).min(RESUBSCRIBE_MAX), p.attempts + 1),
            None => (RESUBSCRIBE_FIRST, 1),
        };
        Some(Resubscribe {
            filters,
            at: now + delay,
            delay,
            attempts,
        })
    }
}

impl Runner {
    /// Hands the waiting burst messages to rumqttc. From this thread, that wakes nobody: the
    /// next poll finds them queued. Dropped (counted, logged at most every 30 s) while the
    /// link is down or rumqttc's queue is full: burst messages are QoS 0 reports, replaced
    /// at the next interval.
    fn take_burst(&mut self) {
        let connected = self.connected.load(Ordering::Acquire);
        let client = &self.client;
        let dropped = self.burst.drain(|topic, qos, retain, payload| {
            connected && client.try_publish(topic, qos, retain, payload).is_ok()
        });
        if dropped > 0 {
            self.burst_dropped += dropped;
            if let Some(held) = self.burst_log.check(Instant::now()) {
                warn!(
                    "{} queued reports dropped: link down or request queue full ({})",
                    self.burst_dropped,
                    Held(held).count("lines")
                );
            }
        }
    }

    /// Queues one SUBSCRIBE for `filters` (none when empty); returns what it asked for, which
    /// the next SubAck answers position by position.
    fn subscribe(&self, filters: &[(String, QoS)]) -> Vec<(String, QoS)> {
        if !filters.is_empty() {
            let subs = filters
                .iter()
                .map(|(t, q)| rumqttc::SubscribeFilter::new(t.clone(), *q));
            if let Err(e) = self.client.try_subscribe_many(subs) {
                error!("could not queue the subscription: {e}");
            }
        }
        filters.to_vec()
    }

    /// Runs the periodic job (if any) when it is due: what it publishes goes to rumqttc from
    /// this thread, so nobody is woken; the next poll writes it.
    fn run_periodic(&mut self) {
        // Shutting down: the final status is the last word.
        if self.stop.load(Ordering::Acquire) {
            return;
        }
        let Some(p) = self.periodic.as_mut() else {
            return;
        };
        let now = Instant::now();
        if now + TIMER_SLACK < p.next() {
            return;
        }
        let connected = self.connected.load(Ordering::Acquire);
        let client = &self.client;
        p.run(now, connected, &mut |m| {
            connected
                && client
                    .try_publish(m.topic, m.qos, m.retain, m.payload.to_vec())
                    .is_ok()
        });
    }

    /// Waits for rumqttc's next event, `until`, or the periodic job (only while connected: a
    /// wait that ends drops rumqttc's poll, and a connection attempt (TCP, TLS, CONNECT) cut
    /// off every round would never finish on a slow link).
    fn wait(&mut self, conn: &mut Connection, until: Option<Instant>) -> Woke {
        let connected = self.connected.load(Ordering::Acquire);
        let due = self
            .periodic
            .as_ref()
            .filter(|_| connected)
            .map(|p| p.next());
        let periodic = self.periodic.is_some();
        let waiter = self.waiter.get_or_insert_with(|| Waiter::new(periodic));
        waiter.wait(conn, until, due)
    }

    fn run(mut self, conn: &mut Connection) {
        let mut limiter = RateLimiter::new(Duration::from_secs(30));
        let mut failures: u64 = 0;
        let mut flap_log = RateLimiter::new(Duration::from_secs(30));
        // Its own limiter: the takeover line must not be held back by the flap lines.
        let mut takeover_log = RateLimiter::new(Duration::from_secs(30));
        let mut connected_at: Option<Instant> = None;
        let mut flapping = false;
        let mut flaps: u64 = 0;
        let mut refused_log = RateLimiter::new(Duration::from_secs(60));
        // Refused subscriptions to ask for again, and what the last SUBSCRIBE asked for.
        let mut resubscribe: Option<Resubscribe> = None;
        let mut asked: Vec<(String, QoS)> = Vec::new();
        self.renew_will(conn);
        loop {
            if self.stop.load(Ordering::Acquire) && !self.connected.load(Ordering::Acquire) {
                break;
            }
            self.take_burst();
            self.run_periodic();
            let event = match self.wait(conn, resubscribe.as_ref().map(|r| r.at)) {
                Woke::Event(e) => e,
                Woke::Done => break, // every Client handle is gone
                Woke::Due => continue,
                Woke::Timeout => {
                    if let Some(r) = resubscribe
                        .as_mut()
                        .filter(|r| r.at <= Instant::now() + TIMER_SLACK)
                    {
                        // Asked again; the SubAck decides (a failure doubles the wait).
                        // Until it comes, nothing else is re-sent.
                        r.at = Instant::now() + RESUBSCRIBE_MAX;
                        if self.connected.load(Ordering::Acquire) {
                            asked = self.subscribe(&r.filters);
                        }
                    }
                    continue;
                }
            };
            // Keep-alive pings give an event at least every keep-alive, so a connection that
            // outlives the short-lived ones is noticed (and reported, after flapping).
            if flaps > 0
                && event.is_ok()
                && connected_at.is_some_and(|t| t.elapsed() >= STABLE_AFTER)
            {
                if flapping {
                    info!(
                        "connection to {} stable again after {flaps} short-lived connections",
                        self.addr()
                    );
                }
                flapping = false;
                flaps = 0;
                flap_log.reset();
                takeover_log.reset();
                self.backoff.reset();
                self.takeover_backoff.reset();
            }
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let session = self.next_session;
                    self.next_session = self.next_session.wrapping_add(1);
                    self.connected.store(true, Ordering::Release);
                    connected_at = Some(Instant::now());
                    limiter.reset();
                    if flapping {
                        if let Some(held) = flap_log.check(Instant::now()) {
                            info!(
                                "connected to {} (session {session}); the connection keeps \
                                 breaking{}",
                                self.addr(),
                                not_logged(held)
                            );
                        }
                    } else if failures > 0 {
                        info!(
                            "connected to {} (session {session}) after {failures} failed attempts",
                            self.addr()
                        );
                    } else {
                        info!("connected to {} (session {session})", self.addr());
                    }
                    failures = 0;
                    // Every subscription is asked for anew on each connection.
                    resubscribe = None;
                    asked = self.subscribe(&self.subscriptions);
                    if !self.emit(LinkEvent::Connected { session }) {
                        break;
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if !self.emit(LinkEvent::Message(p)) {
                        break;
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    let next = Resubscribe::after_suback(
                        Instant::now(),
                        &ack.return_codes,
                        &asked,
                        resubscribe.as_ref(),
                    );
                    match (&next, &resubscribe) {
                        (Some(r), _) => {
                            if let Some(held) = refused_log.check(Instant::now()) {
                                let topics: Vec<&str> =
                                    r.filters.iter().map(|(t, _)| t.as_str()).collect();
                                error!(
                                    "broker refused the subscription to {topics:?} (an ACL, or \
                                     the broker could not take it now); asking again in {:?} \
                                     (attempt {}){}",
                                    r.delay,
                                    r.attempts,
                                    Held(held).note("more refusals")
                                );
                            }
                        }
                        (None, Some(r)) => info!(
                            "subscribed after {} refusals: {:?}",
                            r.attempts,
                            r.filters
                                .iter()
                                .map(|(t, _)| t.as_str())
                                .collect::<Vec<_>>()
                        ),
                        (None, None) => debug!("subscribed: {ack:?}"),
                    }
                    resubscribe = next;
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                    self.drain_until_closed(conn);
                    info!("disconnected from {}", self.addr());
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    if self.connected.swap(false, Ordering::AcqRel) {
                        let lasted = connected_at.take().map(|t| t.elapsed());
                        if lasted.is_some_and(|d| d < STABLE_AFTER) {
                            flaps += 1;
                        } else {
                            flaps = 0;
                            self.backoff.reset();
                            self.takeover_backoff.reset();
                            flap_log.reset();
                        }
                        flapping = flaps >= 2;
                        if flaps >= TAKEOVER_AFTER {
                            if let Some(held) = takeover_log.check(Instant::now()) {
                                warn!(
                                    "session taken over? the broker {} closed the connection \
                                     {flaps} times in a row within {STABLE_AFTER:?} of connecting \
                                     ({}): another client is likely using the same client id \
                                     \"{}\" (a duplicate id: give every device its own); \
                                     waiting {TAKEOVER_BACKOFF:?} to {:?} between attempts{}",
                                    self.addr(),
                                    chain(&e),
                                    self.client_id,
                                    2 * TAKEOVER_BACKOFF,
                                    if held > 0 {
                                        format!(" ({held} takeovers not logged)")
                                    } else {
                                        String::new()
                                    }
                                );
                            }
                        } else if !flapping {
                            warn!(
                                "connection to {} lost: {}; reconnecting",
                                self.addr(),
                                chain(&e)
                            );
                        } else if let Some(held) = flap_log.check(Instant::now()) {
                            warn!(
                                "connection to {} lost again after {:?}: {}; reconnecting{}",
                                self.addr(),
                                lasted.unwrap_or_default(),
                                chain(&e),
                                not_logged(held)
                            );
                        }
                        if !self.emit(LinkEvent::Disconnected { reason: chain(&e) }) {
                            break;
                        }
                    } else {
                        failures += 1;
                        if let Some(held) = limiter.check(Instant::now()) {
                            let more = Held(held).note("similar failures");
                            warn!(
                                "cannot connect to {}: {}; retrying{more}",
                                self.addr(),
                                chain(&e)
                            );
                        }
                    }
                    if self.stop.load(Ordering::Acquire) {
                        break;
                    }
                    self.next_broker(conn);
                    self.renew_will(conn);
                    let delay = if flaps >= TAKEOVER_AFTER {
                        self.takeover_backoff.next_delay()
                    } else {
                        self.backoff.next_delay()
                    };
                    // Sleep, but wake at once when the link is shut down.
                    if !matches!(
                        self.stop_rx.recv_timeout(delay),
                        Err(crossbeam_channel::RecvTimeoutError::Timeout)
                    ) {
                        break;
                    }
                }
            }
        }
        self.connected.store(false, Ordering::Release);
    }

    /// The address of the broker being tried or connected to.
    fn addr(&self) -> &str {
        &self.addrs[self.current]
    }

    /// After a failed or lost connection: the next broker of the list, if there are several.
    fn next_broker(&mut self, conn: &mut Connection) {
        if self.targets.len() < 2 {
            return;
        }
        self.current = (self.current + 1) % self.targets.len();
        conn.eventloop.mqtt_options = self.targets[self.current].clone();
        debug!("next attempt: broker {}", self.addr());
    }

    fn renew_will(&self, conn: &mut Connection) {
        if let Some(will) = &self.will {
            conn.eventloop
                .mqtt_options
                .set_last_will(will(self.next_session));
        }
    }

    /// Hands an event to the daemon, blocking while its channel is full (back-pressure, never
    /// loss) unless the link is shutting down, when the event is dropped so the clean
    /// disconnect can go through. False when the daemon's receiver is gone.
    fn emit(&self, event: LinkEvent) -> bool {
        if self.stop.load(Ordering::Acquire) {
            return !matches!(
                self.events.try_send(event),
                Err(crossbeam_channel::TrySendError::Disconnected(_))
            );
        }
        select! {
            send(self.events, event) -> r => r.is_ok(),
            recv(self.stop_rx) -> _ => true,
        }
    }
}

impl Runner {
    /// After our DISCONNECT, waits (briefly) for the broker to close the connection, reading
    /// whatever still arrives. Closing a socket with unread data in it (e.g. the PUBACK of a
    /// final QoS 1 publish) makes the kernel send a TCP RST, and a broker hit by an RST loses
    /// what it had not read yet: the final status and the DISCONNECT itself, so it would
    /// publish the will.
    fn drain_until_closed(&mut self, conn: &mut Connection) {
        let deadline = Instant::now() + DRAIN_AFTER_DISCONNECT;
        self.periodic = None;
        while Instant::now() < deadline {
            match self.wait(conn, Some(deadline)) {
                Woke::Event(Ok(_)) | Woke::Due => {}
                // Closed by the broker (the normal end), timed out, or every client handle gone.
                _ => return,
            }
        }
    }
}

/// How long [`Runner::drain_until_closed`] waits for the broker to close the connection.
const DRAIN_AFTER_DISCONNECT: Duration = Duration::from_millis(500);

/// ` (N connection lines not logged)` when the flap limiter held some back.
fn not_logged(held: u64) -> String {
    Held(held).note("connection lines")
}

/// An error with its causes, `a: b: c`.
fn chain(e: &ConnectionError) -> String {
    crate::daemon::error_chain(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subs() -> Vec<(String, QoS)> {
        vec![
            ("server/pi/segment".into(), QoS::AtLeastOnce),
            ("server/pi/action".into(), QoS::AtLeastOnce),
            ("server/@status/+".into(), QoS::AtLeastOnce),
        ]
    }

    #[test]
    fn refused_subscriptions_are_asked_again_with_a_doubling_wait() {
        let t0 = Instant::now();
        let ok = SubscribeReasonCode::Success(QoS::AtLeastOnce);
        let no = SubscribeReasonCode::Failure;
        assert_eq!(
            Resubscribe::after_suback(t0, &[ok, ok, ok], &subs(), None),
            None,
            "nothing refused"
        );
        // Positional: only the refused one is asked again, after RESUBSCRIBE_FIRST.
        let r = Resubscribe::after_suback(t0, &[ok, no, ok], &subs(), None).unwrap();
        assert_eq!(r.filters, vec![subs()[1].clone()]);
        assert_eq!(
            (r.at, r.delay, r.attempts),
            (t0 + RESUBSCRIBE_FIRST, RESUBSCRIBE_FIRST, 1)
        );
        // Refused again: twice the wait, up to RESUBSCRIBE_MAX.
        let mut p = r;
        let mut delays = Vec::new();
        for _ in 0..8 {
            p = Resubscribe::after_suback(t0, &[no], &p.filters.clone(), Some(&p)).unwrap();
            delays.push(p.delay.as_secs());
        }
        assert_eq!(delays, [10, 20, 40, 60, 60, 60, 60, 60]);
        assert_eq!(p.attempts, 9);
        // A SubAck that does not match what was asked: everything again.
        let r = Resubscribe::after_suback(t0, &[no], &subs(), None).unwrap();
        assert_eq!(r.filters, subs());
    }
}
