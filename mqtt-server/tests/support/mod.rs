//! Shared helpers of the mqtt-server integration tests: run the server in-process against a
//! testkit broker, with real `rpi-client` daemons ([`testkit::daemons`]) as the Pis: a test
//! that needs a Pi to crash kills it (`kill -9`: the broker sends its will), one that needs it
//! to hang stops it (`SIGSTOP`: the connection stays up, only the heartbeat timeout tells), one
//! that needs a clean shutdown sends `SIGTERM`. A Pi that must misbehave in a way rpi-client
//! cannot (never ack) is a probe in the test itself (`dispatch.rs`, `mute_pi`).

#![allow(dead_code, unused_imports)]

use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use common::Point;
use mqtt_server::{Server, ServerConfig};
use testkit::{Broker, Daemon};

pub use testkit::daemons::spawn_pi;

/// This crate's `mqtt-server`, as cargo built it for these tests.
pub fn server_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mqtt-server"))
}

/// Starts the `mqtt-server` binary against `broker` with no config file and `extra` flags.
pub fn spawn_server(broker: &Broker, extra: &[&str]) -> Daemon {
    testkit::daemons::server_with(&server_bin(), &broker.addr(), extra)
}

/// The server binary with its operator interface on a free loopback port, the planner and
/// the table off, once the interface answers.
pub fn server_with_http(broker: &Broker, extra: &[&str]) -> (Daemon, testkit::http::Client) {
    let addr = format!("127.0.0.1:{}", testkit::broker::free_port());
    let mut args = vec![
        "--http-listen",
        addr.as_str(),
        "--segment-interval",
        "0s",
        "--status-interval",
        "0s",
    ];
    args.extend_from_slice(extra);
    let server = spawn_server(broker, &args);
    let http = testkit::http::Client::new(addr);
    // Alone on its broker, the server leads about 1.5 s after connecting; until then it
    // refuses orders (503 "not the leader").
    testkit::wait_for(Duration::from_secs(10), || {
        let r = http.get("/api/leader").ok()?;
        (r.status == 200 && r.json()["role"] == "leader").then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the HTTP interface answers and the server leads; stderr:\n{}",
            server.stderr()
        )
    });
    (server, http)
}

/// A real Pi `id` driving `entities` (e.g. "1,2,3") against `broker`.
pub fn start_pi(broker: &Broker, id: &str, entities: &str) -> Daemon {
    spawn_pi(&broker.addr(), id, entities, &[])
}

/// Stops a Pi with SIGTERM (it publishes `Offline` and disconnects) and waits for its exit.
pub fn shut_down(mut pi: Daemon) {
    let status = pi.terminate(Duration::from_secs(5));
    assert!(status.success(), "{status}\n{}", pi.stderr());
}

/// A config for an in-process server: table and planner off unless the test turns them on.
pub fn config(broker: &Broker) -> ServerConfig {
    let mut cfg = ServerConfig::default();
    cfg.apply("broker", &broker.addr()).unwrap();
    cfg.apply("client_id", &format!("server-{}", broker.port()))
        .unwrap();
    cfg.segment_interval = Duration::ZERO;
    cfg.status_interval = Duration::ZERO;
    cfg.http_listen = None;
    cfg.state_dir = None;
    cfg
}

/// Starts a server in-process and waits until it is connected and leads (alone on its
/// broker, it claims after the 1 s wait for retained messages and settles 500 ms later).
pub fn start_server(cfg: &ServerConfig) -> Server {
    let server = Server::start(cfg).expect("server starts");
    let h = server.handle();
    h.wait_leading(Duration::from_secs(10))
        .expect("server connected and leading within 10 s");
    server
}

pub use mqtt_link::daemon::wall_ms as now_ms;

// ---------------------------------------------------------------------------------------
// The status table (parsed by testkit)

pub use testkit::table::{ActiveRow, EntityRow, Table, next_table, wait_table};

/// Distance (mm) from `p` to the segment `a`-`b`.
pub fn distance_to_segment(p: (i32, i32), a: Point, b: Point) -> f64 {
    let (px, py) = (f64::from(p.0), f64::from(p.1));
    let (ax, ay) = (f64::from(a.x), f64::from(a.y));
    let (bx, by) = (f64::from(b.x), f64::from(b.y));
    let (dx, dy) = (bx - ax, by - ay);
    let len2 = dx * dx + dy * dy;
    let t = if len2 == 0.0 {
        0.0
    } else {
        (((px - ax) * dx + (py - ay) * dy) / len2).clamp(0.0, 1.0)
    };
    let (cx, cy) = (ax + t * dx, ay + t * dy);
    ((px - cx).powi(2) + (py - cy).powi(2)).sqrt()
}
