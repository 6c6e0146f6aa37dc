//! rpi-client, the daemon on every Raspberry Pi of the fleet: heartbeats, entity states and
//! presence to the server, segments from it to the entities this Pi drives.
//!
//! Threads (all named, all joined on shutdown):
//! `mqtt-link` (rumqttc event loop, see mqtt-link) -> the caller of [`run`] (main loop,
//! [`router`]: Online status, segment routing, waits for shutdown) -> `vehicles` (entity
//! handlers, acks, state reports at the state interval and the heartbeat, in one burst when
//! both are due; asleep otherwise, see [`vehicles`]).
//! Workers publish with `try_publish`, only while connected, so none blocks on a dead broker.

pub mod bridge;
pub mod clock;
pub mod config;
pub mod entities;
pub mod fence;
pub mod heartbeat;
pub mod link_change;
pub mod outbox;
pub mod presence;
pub mod publisher;
pub mod reject_budget;
pub mod rounds;
pub mod router;
pub mod seen;
pub mod seen_actions;
pub mod server_presence;
/// The session counter kept in `state_dir`, shared with the server.
pub use mqtt_link::session_store;
pub mod simulator;
pub mod state;
pub mod vehicle;
pub mod vehicles;

use std::fmt;
use std::time::Duration;

use common::Presence;
use crossbeam_channel::Receiver;
use log::{info, warn};
use mqtt_link::{Link, LinkConfig, SetupError, Worker};

pub use config::Config;
pub use vehicle::{Vehicle, VehicleState};

use crate::entities::Entities;
use crate::heartbeat::Heartbeats;
use crate::publisher::Topics;
use crate::router::{Exit, Router};
use crate::state::StatePublisher;
use crate::vehicles::VehiclesLoop;

/// The link's final publish and disconnect must fit in the 1 s a shutdown may take.
pub const LINK_SHUTDOWN_TIMEOUT: Duration = Duration::from_millis(800);
/// Reconnect delays: capped so heartbeats resume within 1 s of the broker's return.
pub const BACKOFF_MIN: Duration = Duration::from_millis(50);
pub const BACKOFF_MAX: Duration = mqtt_link::BACKOFF_MAX;

/// Why the daemon stopped other than by a shutdown signal.
#[derive(Debug)]
pub enum RunError {
    Link(SetupError),
    Spawn(&'static str, std::io::Error),
    /// The vehicle bridge's socket cannot be set up.
    Bridge(std::io::Error),
    LinkStopped,
    WorkerStopped(&'static str),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Link(_) => write!(f, "cannot start the MQTT link"),
            RunError::Spawn(name, _) => write!(f, "cannot start thread {name}"),
            RunError::Bridge(_) => write!(f, "cannot set up the vehicle bridge socket"),
            RunError::LinkStopped => write!(f, "the mqtt-link thread stopped unexpectedly"),
            RunError::WorkerStopped(name) => write!(f, "thread {name} stopped unexpectedly"),
        }
    }
}

impl std::error::Error for RunError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RunError::Link(e) => Some(e),
            RunError::Spawn(_, e) => Some(e),
            RunError::Bridge(e) => Some(e),
            _ => None,
        }
    }
}

/// Runs the daemon until `shutdown` receives (or disconnects), with simulated entities or,
/// with `vehicle = bridge`, the vehicle processes that connect to the bridge socket.
pub fn run(config: Config, shutdown: Receiver<()>) -> Result<(), RunError> {
    match config.vehicle {
        config::VehicleKind::Simulator => {
            let vehicles =
                simulator::fleet(&config.entities, config.queue_depth, config.sim_origin);
            run_with(config, shutdown, vehicles)
        }
        config::VehicleKind::Bridge => {
            let bridge =
                bridge::Bridge::bind(&config.bridge, &config.entities).map_err(RunError::Bridge)?;
            let vehicles = bridge.vehicles(&config.entities, config.queue_depth);
            run_inner(config, shutdown, vehicles, Some(bridge))
        }
    }
}

/// Runs the daemon with the given entity handlers (`config.entities` is then only
/// informational). Returns after a clean shutdown: workers stopped and joined, unfinished
/// segments acked `Rejected(ShuttingDown)`, `Offline` published, MQTT disconnected.
pub fn run_with(
    config: Config,
    shutdown: Receiver<()>,
    vehicles: Vec<(u32, Box<dyn Vehicle>)>,
) -> Result<(), RunError> {
    run_inner(config, shutdown, vehicles, None)
}

fn run_inner(
    config: Config,
    shutdown: Receiver<()>,
    vehicles: Vec<(u32, Box<dyn Vehicle>)>,
    bridge: Option<bridge::Bridge>,
) -> Result<(), RunError> {
    let closer = bridge.as_ref().map(bridge::Bridge::closer);
    let topics = Topics::new(&config.client_id);
    let session_store =
        session_store::SessionStore::open(config.state_dir.as_deref(), clock::now_secs_u32());
    let first_session = session_store.first;
    let fence = fence::SharedFence::default();
    let entities = Entities::new(vehicles, config.queue_depth).with_fence(fence.clone());
    let ids = entities.ids();
    info!(
        "rpi-client {} starting as {}: entities {:?}, broker {}, heartbeat every {}, state every {}",
        env!("CARGO_PKG_VERSION"),
        config.client_id,
        ids,
        config.broker.addrs,
        common::duration::format_duration(config.heartbeat_interval),
        common::duration::format_duration(config.state_interval),
    );

    let mut link_cfg = LinkConfig::new(config.client_id.as_str(), config.broker.clone());
    link_cfg.subscriptions = [
        topics.segment.as_str(),
        topics.action.as_str(),
        common::topic::SERVER_STATUS_SUBSCRIPTION,
    ]
    .map(|t| (t.to_owned(), mqtt_link::SUBSCRIBE_QOS))
    .to_vec();
    link_cfg.will = Some(presence::will(topics.status.clone()));
    link_cfg.first_session = first_session;
    link_cfg.request_capacity = 16 + 4 * ids.len();
    link_cfg.backoff_min = BACKOFF_MIN;
    link_cfg.backoff_max = BACKOFF_MAX;
    // One wake-up of the link thread per burst of reports (LinkConfig::batch_scheduling).
    link_cfg.batch_scheduling = true;
    // The rounds of reports and heartbeats: run by the link thread (rounds.rs).
    let rounds = rounds::SharedRounds::new(
        Heartbeats::new(config.heartbeat_interval, topics.heartbeat.clone()),
        config.state_interval,
        topics.state.clone(),
        vehicles::max_dt(config.state_interval),
    );
    link_cfg.periodic = Some(rounds.job());
    let (event_tx, event_rx) = crossbeam_channel::bounded(64);
    let link = Link::start(link_cfg, event_tx).map_err(RunError::Link)?;
    let publisher = link.publisher();

    let (exit_tx, exit_rx) = crossbeam_channel::bounded(8);
    let (input_tx, input_rx) = crossbeam_channel::bounded(64);
    let mut workers: Vec<Worker> = Vec::new();
    let mut watchers = Vec::new();

    let spawned = (|| -> Result<(), RunError> {
        let (tx, link_rx) = link_change::channel();
        watchers.push(tx);
        let vl = VehiclesLoop {
            entities,
            publisher: publisher.clone(),
            ack_topic: topics.ack.clone(),
            states: StatePublisher::new(publisher.clone(), topics.state.clone()),
            state_interval: config.state_interval,
            rounds,
            wakes: bridge
                .as_ref()
                .map_or_else(crossbeam_channel::never, bridge::Bridge::wakes),
            resend_window: config.broker.keep_alive * 2 + Duration::from_secs(1),
        };
        workers.push(
            Worker::spawn("vehicles", &exit_tx, move |stop| {
                vl.run(stop, input_rx, link_rx)
            })
            .map_err(|e| RunError::Spawn("vehicles", e))?,
        );
        if let Some(b) = bridge {
            workers.push(
                Worker::spawn("bridge", &exit_tx, move |stop| b.run(stop))
                    .map_err(|e| RunError::Spawn("bridge", e))?,
            );
        }
        Ok(())
    })();

    let mut router = Router::new(
        publisher,
        topics.clone(),
        input_tx,
        watchers,
        fence,
        config.server_lost_stop_after,
        session_store,
    );
    let exit = match spawned {
        Ok(()) => router.run(&event_rx, &shutdown, &exit_rx),
        Err(e) => {
            stop(workers, closer.as_ref(), link, &topics, router.session);
            return Err(e);
        }
    };
    info!(
        "stopping; segment topic: {} malformed or oversized, {} retained dropped",
        router.malformed, router.retained
    );
    let session = router.session;
    drop(router);
    stop(workers, closer.as_ref(), link, &topics, session);
    match exit {
        Exit::Shutdown => {
            info!("stopped");
            Ok(())
        }
        Exit::LinkStopped => Err(RunError::LinkStopped),
        Exit::WorkerStopped(name) => Err(RunError::WorkerStopped(name)),
    }
}

/// Stops and joins the workers (the `vehicles` thread queues its last acks), then publishes
/// `Offline`, disconnects and joins the link. Re-raises the first panic of a thread.
fn stop(
    workers: Vec<Worker>,
    bridge: Option<&bridge::Closer>,
    link: Link,
    topics: &Topics,
    session: u32,
) {
    let mut workers = workers;
    for w in &mut workers {
        w.stop();
    }
    if let Some(b) = bridge {
        b.close();
    }
    let mut panic = None;
    for w in workers {
        let name = w.name();
        if let Err(p) = w.join() {
            warn!("thread {name} panicked");
            panic.get_or_insert(p);
        }
    }
    let offline = presence::status(Presence::Offline, session);
    link.shutdown(
        Some((topics.status.clone(), offline)),
        LINK_SHUTDOWN_TIMEOUT,
    );
    if let Some(p) = panic {
        std::panic::resume_unwind(p);
    }
}
