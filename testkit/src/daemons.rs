//! Starting the real daemons against a broker ("127.0.0.1:PORT"): `rpi-client` Pis and the
//! `mqtt-server` binary ([`crate::bins`]), with no config file (tests choose every setting
//! with flags). The one way every test crate starts a real Pi.

use std::path::Path;

use crate::Daemon;
use crate::bins;

/// The `rpi-client` binary `bin` as `id` against `broker` with `extra` flags (its default
/// entities unless `extra` names them). rpi-client's own tests pass
/// `env!("CARGO_BIN_EXE_rpi-client")`, other crates [`bins::rpi_client`].
pub fn pi_with(bin: &Path, broker: &str, id: &str, extra: &[&str]) -> Daemon {
    let mut args = vec![
        "--config",
        "/dev/null",
        "--broker",
        broker,
        "--client-id",
        id,
    ];
    args.extend_from_slice(extra);
    Daemon::spawn(bin, &args, &[])
}

/// A Pi `id` driving `entities` (e.g. "1,2,3") against `broker`, plus `extra` flags.
pub fn spawn_pi(broker: &str, id: &str, entities: &str, extra: &[&str]) -> Daemon {
    let mut args = vec!["--entities", entities];
    args.extend_from_slice(extra);
    pi_with(&bins::rpi_client(), broker, id, &args)
}

/// The `mqtt-server` binary `bin` against `broker` with `extra` flags (e.g.
/// `--status-interval 100ms`).
/// No operator interface unless `extra` asks for one (a later flag wins): tests run in
/// parallel and would all want 127.0.0.1:8080.
pub fn server_with(bin: &Path, broker: &str, extra: &[&str]) -> Daemon {
    let mut args = vec![
        "--config",
        "/dev/null",
        "--broker",
        broker,
        "--http-listen",
        "off",
    ];
    args.extend_from_slice(extra);
    Daemon::spawn(bin, &args, &[])
}

/// The server binary ([`bins::mqtt_server`]) against `broker` with `extra` flags.
pub fn spawn_server(broker: &str, extra: &[&str]) -> Daemon {
    server_with(&bins::mqtt_server(), broker, extra)
}

/// Lines of `text` containing `needle`.
pub fn count_lines(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

/// Waits until a daemon has logged its first connection to the broker (`connected to ...`,
/// mqtt-link's line at the ConnAck), so that signals sent next find its handlers installed.
pub fn wait_connected(daemon: &Daemon, timeout: std::time::Duration) {
    crate::wait_for(timeout, || {
        daemon.stderr().contains("connected to ").then_some(())
    })
    .unwrap_or_else(|| panic!("not connected within {timeout:?}:\n{}", daemon.stderr()));
}
