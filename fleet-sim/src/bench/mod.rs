//! The benchmark runner behind `make bench` (binary `fleet-bench`): starts a local mosquitto
//! (TCP_NODELAY, via testkit), the release `mqtt-server`, real `rpi-client`s, the simulator
//! and a bare `mosquitto_sub` baseline, measures, and writes `bench-out/results.json`, a
//! table and SVG plots. One module per scenario; this file holds what they share.

pub mod action;
pub mod api;
pub mod cluster;
pub mod codec;
pub mod failure;
pub mod footprint;
pub mod ingest;
pub mod latency;
pub mod map;
pub mod procs;
pub mod report;
pub mod svg;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use testkit::{Broker, Probe};

use procs::{Daemon, Line, Stdout, Stream, TopicCounts};

/// Settings of one benchmark run.
#[derive(Debug, Clone)]
pub struct Bench {
    /// Short scenarios for smoke tests (`BENCH_QUICK=1`).
    pub quick: bool,
    /// `bench-out/`: results, logs, plots.
    pub out: PathBuf,
    /// Where `mqtt-server`, `rpi-client` and `fleet-sim` are (`target/release`).
    pub bins: PathBuf,
    /// Threads of the simulator.
    pub sim_threads: usize,
}

impl Bench {
    pub fn logs(&self) -> PathBuf {
        self.out.join("logs")
    }

    pub fn bin(&self, name: &str) -> PathBuf {
        let p = self.bins.join(name);
        assert!(
            p.is_file(),
            "{} is missing: run `cargo build --release --workspace` first",
            p.display()
        );
        p
    }

    /// Starts `bin args` as child `name` with its stdout as lines, logged in [`Bench::logs`].
    pub fn run<S: AsRef<str>>(&self, name: &str, bin: &Path, args: &[S]) -> Daemon {
        procs::spawn(name, bin, args, Stdout::Lines, &self.logs())
    }

    /// The arguments of a `fleet-sim` run against `broker`: `pis` Pis x 4 entities at the
    /// daemons' default rates (state 100 ms, heartbeat 500 ms), for `duration` after a `ramp`,
    /// with ids `{prefix}-N`, on the benchmark's simulator threads; callers append their own.
    pub fn sim_args(
        &self,
        broker: &Broker,
        pis: usize,
        duration: Duration,
        ramp: Duration,
        prefix: &str,
    ) -> Vec<String> {
        self.sim_args_at(&broker.addr(), pis, duration, ramp, prefix)
    }

    /// [`Bench::sim_args`] against any broker address (e.g. one node of a NATS cluster).
    pub fn sim_args_at(
        &self,
        addr: &str,
        pis: usize,
        duration: Duration,
        ramp: Duration,
        prefix: &str,
    ) -> Vec<String> {
        vec![
            "--broker".into(),
            addr.into(),
            "--pis".into(),
            pis.to_string(),
            "--entities".into(),
            "4".into(),
            "--state-interval".into(),
            "100ms".into(),
            "--heartbeat-interval".into(),
            "500ms".into(),
            "--duration".into(),
            format!("{}ms", duration.as_millis()),
            "--ramp".into(),
            format!("{}ms", ramp.as_millis()),
            "--id-prefix".into(),
            prefix.into(),
            "--threads".into(),
            self.sim_threads.to_string(),
            "--log-level".into(),
            "warn".into(),
        ]
    }

    /// The ramp of a `pis`-Pi simulator run: 2 ms a Pi, within 0.2 to 2 s.
    pub fn ramp(pis: usize) -> Duration {
        Duration::from_millis((pis as u64 * 2).clamp(200, 2000))
    }

    /// Starts a measured simulator run, `tag-sim`, of [`Bench::sim_args`] writing its summary to
    /// `tag-sim.json`; returns it, the summary's path and its `phase steady` line (the start
    /// of its publishing window).
    pub fn start_sim(
        &self,
        broker: &Broker,
        tag: &str,
        pis: usize,
        duration: Duration,
        prefix: &str,
    ) -> (Daemon, PathBuf, Line) {
        self.start_sim_at(&broker.addr(), tag, pis, duration, prefix)
    }

    /// [`Bench::start_sim`] against any broker address.
    pub fn start_sim_at(
        &self,
        addr: &str,
        tag: &str,
        pis: usize,
        duration: Duration,
        prefix: &str,
    ) -> (Daemon, PathBuf, Line) {
        let json = self.out.join(format!("{tag}-sim.json"));
        let ramp = Bench::ramp(pis);
        let mut args = self.sim_args_at(addr, pis, duration, ramp, prefix);
        args.extend(["--json".into(), json.display().to_string()]);
        let sim = self.run(
            &format!("{tag}-sim"),
            &procs::bin_dir().join("fleet-sim"),
            &args,
        );
        let steady = sim
            .wait_line(Stream::Stdout, ramp + Duration::from_secs(30), |l| {
                l.starts_with("phase steady")
            })
            .expect("the simulator did not start its window");
        (sim, json, steady)
    }

    /// A fresh broker (TCP_NODELAY on) that also logs subscriptions, so the benchmark can
    /// tell when a client is ready.
    pub fn broker(&self) -> Broker {
        Broker::start_with("log_type subscribe\n")
    }

    /// The release server with the benchmark's settings plus `extra` flags; returns once it
    /// has subscribed to its last topic (`rpi/+/ack`).
    pub fn server(&self, broker: &Broker, name: &str, extra: &[&str]) -> Daemon {
        let addr = broker.addr();
        let mut args = vec![
            "--broker",
            &addr,
            "--client-id",
            "bench-server",
            "--status-interval",
            "0s",
            "--segment-interval",
            "0s",
            "--log-level",
            "info",
            // Off unless `extra` asks for it (a later flag wins).
            "--http-listen",
            "off",
        ];
        args.extend_from_slice(extra);
        let p = self.run(name, &self.bin("mqtt-server"), &args);
        wait_subscribed(
            broker,
            "bench-server",
            common::topic::SERVER_SUBSCRIPTIONS[3],
            Duration::from_secs(10),
        )
        .unwrap_or_else(|| {
            panic!(
                "mqtt-server did not subscribe; see {}",
                self.logs().display()
            )
        });
        p
    }

    /// `mosquitto_sub` on `rpi/+/+` printing only the topic of each message, counted per
    /// leaf; returns once it is subscribed.
    pub fn baseline(&self, broker: &Broker, name: &str) -> (Daemon, Arc<TopicCounts>) {
        const READY: &str = "bench/ready";
        let counts = Arc::new(TopicCounts::default());
        // A retained marker the baseline receives right after its SUBACK.
        let marker = Probe::connect(broker.port(), "bench-marker", &[]);
        marker.publish(READY, b"1", rumqttc::QoS::AtLeastOnce, true);
        let port = broker.port().to_string();
        let args = [
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-i",
            "bench-baseline",
            "-q",
            "1",
            "-t",
            "rpi/+/+",
            "-t",
            READY,
            "-F",
            "%t",
        ];
        let p = procs::spawn(
            name,
            Path::new("mosquitto_sub"),
            &args,
            TopicCounts::stdout(counts.clone(), READY),
            &self.logs(),
        );
        p.wait_line(Stream::Stdout, Duration::from_secs(10), |l| l == READY)
            .expect("mosquitto_sub did not subscribe within 10 s");
        drop(marker);
        (p, counts)
    }

    /// A real `rpi-client` with entities 1,2,3 at 10 Hz; returns once it has subscribed.
    pub fn pi(&self, broker: &Broker, id: &str) -> Daemon {
        self.pi_with(broker, id, &[])
    }

    /// [`Bench::pi`] with more arguments (a later flag wins).
    pub fn pi_with(&self, broker: &Broker, id: &str, extra: &[&str]) -> Daemon {
        let addr = broker.addr();
        let mut args = vec![
            "--broker",
            &addr,
            "--client-id",
            id,
            "--entities",
            "1,2,3",
            "--state-interval",
            "100ms",
            "--heartbeat-interval",
            "500ms",
            "--log-level",
            "info",
        ];
        args.extend_from_slice(extra);
        let p = self.run(id, &self.bin("rpi-client"), &args);
        wait_subscribed(
            broker,
            id,
            &format!("server/{id}/segment"),
            Duration::from_secs(10),
        )
        .unwrap_or_else(|| panic!("rpi-client {id} did not subscribe"));
        p
    }
}

/// Waits until the broker's log shows `client` subscribing to `topic`.
pub fn wait_subscribed(
    broker: &Broker,
    client: &str,
    topic: &str,
    timeout: Duration,
) -> Option<()> {
    let needle = format!(" {client} ");
    testkit::wait_for(timeout, || {
        broker
            .log()
            .lines()
            .any(|l| l.contains(&needle) && l.trim_end().ends_with(topic))
            .then_some(())
    })
}

/// The server's counters, parsed from the summary it logs at shutdown
/// (`messages: heartbeat=N state=N ...`, `segment round trip: n=N last=.. p50=1.2ms ...`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerStats {
    pub messages: BTreeMap<String, u64>,
    pub input_errors: BTreeMap<String, u64>,
    pub registry: BTreeMap<String, u64>,
    /// `segments: sent=.. acked=.. completed=..`.
    pub segments: BTreeMap<String, u64>,
    pub rtt_n: Option<u64>,
    pub rtt_p50_ms: Option<f64>,
    pub rtt_p99_ms: Option<f64>,
}

fn key_values(s: &str) -> BTreeMap<String, u64> {
    s.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

impl ServerStats {
    pub fn parse(lines: &[Line]) -> Option<ServerStats> {
        let mut st = ServerStats::default();
        let mut found = false;
        for l in lines {
            let t = &l.text;
            if let Some(i) = t.find("messages: ") {
                st.messages = key_values(&t[i + "messages: ".len()..]);
                found = true;
            } else if let Some(i) = t.find("input errors: ") {
                st.input_errors = key_values(&t[i + "input errors: ".len()..]);
            } else if let Some(i) = t.find("registry: ") {
                st.registry = key_values(&t[i + "registry: ".len()..]);
            } else if let Some(i) = t.find("segments: ") {
                st.segments = key_values(&t[i + "segments: ".len()..]);
            } else if let Some(i) = t.find("segment round trip: ") {
                for kv in t[i..].split_whitespace() {
                    let ms = |v: &str| v.strip_suffix("ms").and_then(|x| x.parse().ok());
                    match kv.split_once('=') {
                        Some(("n", v)) => st.rtt_n = v.parse().ok(),
                        Some(("p50", v)) => st.rtt_p50_ms = ms(v),
                        Some(("p99", v)) => st.rtt_p99_ms = ms(v),
                        _ => {}
                    }
                }
            }
        }
        found.then_some(st)
    }

    pub fn count(&self, kind: &str) -> u64 {
        self.messages.get(kind).copied().unwrap_or(0)
    }
}

/// Stops the server with SIGTERM and reads its shutdown counters.
pub fn stop_server(server: &mut Daemon) -> Option<ServerStats> {
    server.stop(Duration::from_secs(10));
    let lines: Vec<Line> = server.stderr_lines();
    ServerStats::parse(&lines)
}

/// The machine the figures come from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub mosquitto: String,
    pub memory_mib: u64,
    pub load_before: String,
}

pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let mosquitto = std::process::Command::new(testkit::broker::mosquitto_path())
        .arg("-h")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let memory_mib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map(|kib| kib / 1024)
        .unwrap_or(0);
    Machine {
        nproc: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        cpu_model,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        mosquitto,
        memory_mib,
        load_before: std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// Nearest-rank quantile of sorted samples.
pub fn quantile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Sleeps until `t` (no-op if it passed).
pub fn sleep_until(t: Instant) {
    let d = t.saturating_duration_since(Instant::now());
    if !d.is_zero() {
        std::thread::sleep(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_server_summary() {
        let at = Instant::now();
        let lines: Vec<Line> = [
            "2026-01-01T00:00:00Z INFO final fleet: 3 Pi(s) tracked, 0 online",
            "2026-01-01T00:00:00Z INFO messages: ack=4 heartbeat=100 state=2000 status=6",
            "2026-01-01T00:00:00Z INFO input errors: none",
            "2026-01-01T00:00:00Z INFO registry: went_offline=3 went_online=3",
            "2026-01-01T00:00:00Z INFO segments: sent=5 acked=5 completed=4",
            "2026-01-01T00:00:00Z INFO segment round trip: n=12 last=0.9ms p50=0.8ms p99=1.7ms",
        ]
        .iter()
        .map(|t| Line {
            at,
            text: t.to_string(),
        })
        .collect();
        let s = ServerStats::parse(&lines).unwrap();
        assert_eq!(s.count("state"), 2000);
        assert_eq!(s.count("heartbeat"), 100);
        assert!(s.input_errors.is_empty());
        assert_eq!(s.registry["went_offline"], 3);
        assert_eq!(s.segments["completed"], 4);
        assert_eq!(
            (s.rtt_n, s.rtt_p50_ms, s.rtt_p99_ms),
            (Some(12), Some(0.8), Some(1.7))
        );
        assert!(ServerStats::parse(&lines[..1]).is_none());
    }

    #[test]
    fn nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), Some(50));
        assert_eq!(quantile(&v, 0.99), Some(99));
        assert_eq!(quantile(&v, 1.0), Some(100));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
