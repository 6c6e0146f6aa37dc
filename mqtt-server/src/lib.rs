//! mqtt-server: the fleet monitor and segment dispatcher.
//!
//! It subscribes to the four Pi leaves (`rpi/+/status` first, then `heartbeat`, `state`, `ack`), keeps a registry of every Pi (presence, heartbeat age, lost
//! heartbeats, clock offset) and entity (pose, velocity, segment progress) ([`fleet`],
//! [`clock_offset`]), routes what it receives on the `registry` thread ([`registry`]), prints
//! it as a table on stdout ([`table`]), sends segments and tracks their acks ([`dispatch`]),
//! and drives every online entity around a square in demo mode ([`planner`]). Bad input is
//! counted per kind and never fatal ([`ingest`], [`counters`]). Instant actions (stop, pause,
//! resume, cancel; protocol version 3) are sent and tracked by [`actions`]. The threads are wired in
//! [`server`]; [`run`] is what `main` calls, [`Server`] what tests and other code embed.

pub mod actions;
pub mod broker_sys;
pub mod budget;
pub mod clock_offset;
pub mod config;
pub mod counters;
pub mod dispatch;
pub mod feed;
pub mod flapping;
pub mod fleet;
pub mod fleet_list;
pub mod http;
pub mod ingest;
pub mod leadership;
pub mod planner;
pub mod registry;
pub mod server;
pub mod snapshot;
pub mod standing;
pub mod table;

pub use actions::{
    ActionError, ActionFailReason, ActionRecord, ActionReport, ActionSpec, ActionTicket,
    StopAllResults,
};
pub use config::{Command, ServerConfig};
pub use counters::{Counters, RttSummary};
pub use dispatch::{
    ACK_GRACE, DispatchError, FailReason, Order, SegmentOutcome, SegmentSpec, SegmentTicket,
};
pub use fleet::OfflineReason;
pub use server::{FleetHandle, Server, StartError};
pub use snapshot::{EntityView, PiView, Snapshot};

use crossbeam_channel::Receiver;
use log::{error, info};

/// Runs the server until `shutdown` receives (or its senders are gone), then stops cleanly,
/// logs the counters and returns the final registry state. If the registry thread dies first
/// (a panic), stops the rest and re-raises the panic, instead of waiting for a signal.
pub fn run(config: ServerConfig, shutdown: Receiver<()>) -> Result<Snapshot, StartError> {
    let server = Server::start(&config)?;
    run_until(server, &shutdown)
}

/// The part of [`run`] after the start: wait, stop, report.
pub fn run_until(server: Server, shutdown: &Receiver<()>) -> Result<Snapshot, StartError> {
    if let Some(name) = server.wait(shutdown) {
        error!("thread {name} stopped unexpectedly; shutting down");
        server.shutdown();
        return Err(StartError::Stopped(name));
    }
    info!("shutting down");
    let last = server.shutdown();
    info!(
        "final fleet: {} Pi(s) tracked, {} online",
        last.registry_len, last.online
    );
    for line in last.counters.summary_lines() {
        info!("{line}");
    }
    Ok(last)
}
