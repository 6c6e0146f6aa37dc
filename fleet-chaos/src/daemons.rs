//! Starting the real daemons against a broker: `rpi-client` Pis and the `mqtt-server` binary,
//! with no config file (tests choose every setting with flags).

use testkit::Daemon;

use crate::bins;

/// A Pi `id` driving `entities` (e.g. "1,2,3") against `broker` ("127.0.0.1:PORT"), plus
/// `extra` flags.
pub fn spawn_pi(broker: &str, id: &str, entities: &str, extra: &[&str]) -> Daemon {
    let mut args = vec![
        "--config",
        "/dev/null",
        "--broker",
        broker,
        "--client-id",
        id,
        "--entities",
        entities,
    ];
    args.extend_from_slice(extra);
    Daemon::spawn(&bins::rpi_client(), &args, &[])
}

/// The server binary against `broker` with `extra` flags (e.g. `--status-interval 100ms`).
pub fn spawn_server(broker: &str, extra: &[&str]) -> Daemon {
    // No operator interface unless `extra` asks for one (a later flag wins).
    let mut args = vec![
        "--config",
        "/dev/null",
        "--broker",
        broker,
        "--http-listen",
        "off",
    ];
    args.extend_from_slice(extra);
    Daemon::spawn(&bins::mqtt_server(), &args, &[])
}

/// Lines of `text` containing `needle`.
pub fn count_lines(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}
