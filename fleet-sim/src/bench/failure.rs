//! Failure detection, with a real rpi-client and the server at idle:
//! - kill -9 of the Pi process: the kernel closes its socket, mosquitto publishes the Last
//!   Will (seen by a probe on `rpi/{id}/status`), the server marks the Pi offline (its
//!   `{id}: offline (...)` log line, time-stamped when the benchmark reads it).
//! - SIGSTOP of the Pi process (a hung Pi whose connection stays open): only the heartbeat
//!   timeout can notice it.

use std::time::{Duration, Instant};

use common::{Message, Presence};
use serde::{Deserialize, Serialize};
use testkit::Probe;

use super::procs::{Daemon, Line, Stream};
use super::{Bench, stop_server};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KillSample {
    /// kill -9 -> the will seen by a probe subscribed to the Pi's status.
    pub kill_to_will_ms: Option<f64>,
    /// The will seen by the probe -> the server's offline line.
    pub will_to_offline_ms: Option<f64>,
    /// kill -9 -> the server's offline line.
    pub kill_to_offline_ms: Option<f64>,
    /// The server's line, for the reason it gives.
    pub line: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HangSample {
    /// SIGSTOP -> the server's offline line.
    pub stop_to_offline_ms: Option<f64>,
    pub line: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FailureResult {
    pub heartbeat_timeout_ms: f64,
    pub kill: Vec<KillSample>,
    pub hang: Vec<HangSample>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn wait_offline(server: &Daemon, id: &str, timeout: Duration) -> Option<Line> {
    let needle = format!("{id}: offline");
    server.wait_line(Stream::Stderr, timeout, |l| l.contains(&needle))
}

fn start_online(b: &Bench, broker: &testkit::Broker, server: &Daemon, id: &str) -> Daemon {
    let pi = b.pi(broker, id);
    let needle = format!("{id}: online");
    server
        .wait_line(Stream::Stderr, Duration::from_secs(10), |l| {
            l.contains(&needle)
        })
        .unwrap_or_else(|| panic!("the server did not see {id} online"));
    // A few heartbeats, so the Pi is in its steady state.
    std::thread::sleep(Duration::from_millis(1200));
    pi
}

pub fn run(b: &Bench, kills: usize, hangs: usize) -> FailureResult {
    eprintln!("== failure detection: {kills} x kill -9, {hangs} x SIGSTOP");
    let broker = b.broker();
    let mut server = b.server(
        &broker,
        "failure-server",
        &["--heartbeat-timeout", "1500ms"],
    );
    let mut res = FailureResult {
        heartbeat_timeout_ms: 1500.0,
        ..Default::default()
    };
    for i in 0..kills {
        let id = format!("bench-kill-{i}");
        let probe = Probe::connect(
            broker.port(),
            "bench-fail-probe",
            &[&format!("rpi/{id}/status")],
        );
        let mut pi = start_online(b, &broker, &server, &id);
        probe.drain();
        let t_kill = Instant::now();
        pi.kill9();
        let will = probe.wait_for(Duration::from_secs(5), |s| {
            matches!(Message::decode(&s.payload),
                Ok(Message::Status(st)) if st.presence == Presence::ConnectionLost)
        });
        let off = wait_offline(&server, &id, Duration::from_secs(5));
        let sample = KillSample {
            kill_to_will_ms: will.as_ref().map(|w| ms(w.at - t_kill)),
            will_to_offline_ms: match (&will, &off) {
                (Some(w), Some(o)) => Some(ms(o.at.saturating_duration_since(w.at))),
                _ => None,
            },
            kill_to_offline_ms: off.as_ref().map(|o| ms(o.at - t_kill)),
            line: off.map(|o| o.text),
        };
        eprintln!(
            "   kill -9: will after {:?} ms, offline after {:?} ms",
            sample.kill_to_will_ms, sample.kill_to_offline_ms
        );
        res.kill.push(sample);
    }
    for i in 0..hangs {
        let id = format!("bench-hang-{i}");
        let mut pi = start_online(b, &broker, &server, &id);
        let t_stop = Instant::now();
        pi.signal("STOP");
        let off = wait_offline(&server, &id, Duration::from_secs(5));
        let sample = HangSample {
            stop_to_offline_ms: off.as_ref().map(|o| ms(o.at - t_stop)),
            line: off.map(|o| o.text),
        };
        eprintln!(
            "   SIGSTOP: offline after {:?} ms",
            sample.stop_to_offline_ms
        );
        res.hang.push(sample);
        pi.kill9();
    }
    let _ = stop_server(&mut server);
    res
}
