//! Ingest on a clustered broker against one mosquitto, in the same run (docs/scaling.md):
//! the simulator offers N Pis x 4 entities x 10 Hz to node 1 of a 3-node NATS cluster
//! (`testkit::NatsCluster`, MQTT listeners) while the release server reads through node 2,
//! so every message crosses the cluster's routes; then the same against one mosquitto;
//! alternated for a few rounds, and the medians of each side compared. Processed = the
//! server's own heartbeat + state counters (`GET /api/fleet`) read at the start and the end
//! of the simulator's publishing window; delivered = the server's final count against what
//! the simulator sent. CPU shares over the window: the server's, and the broker's (the sum of
//! the three nodes for NATS).
//!
//! Not in `all`: run `fleet-bench cluster [--pis N] [--seconds S]` (needs nats-server, from
//! scripts/install-deps.sh).

use std::time::{Duration, Instant};

use common::Heartbeat;
use rumqttc::QoS;
use serde::{Deserialize, Serialize};
use testkit::{Broker, NatsCluster, Probe};

use super::procs::{CpuMark, Daemon, MachineMark, Stream};
use super::{Bench, stop_server};
use crate::Summary;

/// One measured run on one broker kind.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    /// `mosquitto` or `nats-3`.
    pub broker: String,
    pub round: u32,
    pub offered_per_s: f64,
    pub sent_per_s: f64,
    /// Heartbeats + states the server counted per second of the window.
    pub processed_per_s: f64,
    /// Heartbeats + states the server counted in all / what the simulator sent.
    pub delivered: f64,
    pub server_cpu_share: f64,
    /// Sum over the broker's processes (the three nodes for NATS), in cores.
    pub broker_cpu_share: f64,
    pub machine_busy: f64,
    pub sim_behind_schedule: bool,
}

/// The comparison: every run and the medians per broker kind.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterResult {
    pub pis: usize,
    pub entities: u32,
    pub seconds: u64,
    pub rounds: u32,
    pub runs: Vec<Run>,
    pub mosquitto_processed_per_s: f64,
    pub nats_processed_per_s: f64,
    /// nats / mosquitto of the medians of processed per second.
    pub ratio: f64,
    pub mosquitto_broker_cpu: f64,
    pub nats_broker_cpu: f64,
    pub mosquitto_delivered: f64,
    pub nats_delivered: f64,
}

/// What the server runs against.
enum Target {
    Mosquitto(Broker),
    Nats(NatsCluster),
}

impl Target {
    fn name(&self) -> &'static str {
        match self {
            Target::Mosquitto(_) => "mosquitto",
            Target::Nats(_) => "nats-3",
        }
    }

    /// Where the simulated Pis connect: node 1.
    fn sim_addr(&self) -> String {
        match self {
            Target::Mosquitto(b) => b.addr(),
            Target::Nats(c) => c.addr(0),
        }
    }

    /// The server's list: node 2 first (so every message crosses a route), then the others.
    fn server_list(&self) -> String {
        match self {
            Target::Mosquitto(b) => b.addr(),
            Target::Nats(c) => c.broker_list(1),
        }
    }

    fn server_port(&self) -> u16 {
        match self {
            Target::Mosquitto(b) => b.port(),
            Target::Nats(c) => c.mqtt_port(1),
        }
    }

    fn pids(&self) -> Vec<u32> {
        match self {
            Target::Mosquitto(b) => b.pid().into_iter().collect(),
            Target::Nats(c) => (0..c.len()).filter_map(|i| c.pid(i)).collect(),
        }
    }
}

/// The server's heartbeat + state counters from `GET /api/fleet`.
fn counted(api: &testkit::http::Client) -> Option<u64> {
    let r = match api.get("/api/fleet") {
        Ok(r) => r,
        Err(e) => {
            eprintln!("   GET /api/fleet: {e}");
            return None;
        }
    };
    if r.status != 200 {
        eprintln!("   GET /api/fleet: {} {}", r.status, r.text());
        return None;
    }
    let m = &r.json()["counters"]["messages"];
    // A kind not seen yet has no key.
    Some(m["heartbeat"].as_u64().unwrap_or(0) + m["state"].as_u64().unwrap_or(0))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn one(b: &Bench, target: &Target, round: u32, pis: usize, duration: Duration) -> Run {
    let tag = format!("cluster-{}-{round}", target.name());
    eprintln!("== {tag}: {pis} Pis x 4 entities x 10 Hz for {duration:?}");
    let http = format!("127.0.0.1:{}", testkit::broker::free_port());
    let list = target.server_list();
    let mut server: Daemon = b.run(
        &format!("{tag}-server"),
        &b.bin("mqtt-server"),
        &[
            "--broker",
            &list,
            "--client-id",
            "bench-server",
            "--status-interval",
            "0s",
            "--segment-interval",
            "0s",
            "--log-level",
            "info",
            "--http-listen",
            &http,
        ],
    );
    let api = testkit::http::Client::new(http);
    // Ready when a heartbeat published on the server's node reaches its fleet view (its
    // subscriptions are made, on NATS its JetStream consumers too).
    let probe = Probe::connect(target.server_port(), "bench-ready-probe", &[]);
    let hb = Heartbeat {
        seq: 1,
        timestamp_ms: mqtt_link::daemon::wall_ms(),
    }
    .encode()
    .to_vec();
    testkit::wait_for(Duration::from_secs(30), || {
        probe.publish("rpi/bench-ready/heartbeat", &hb, QoS::AtMostOnce, false);
        std::thread::sleep(Duration::from_millis(100));
        api.get("/api/pis/bench-ready")
            .ok()
            .filter(|r| r.status == 200)
            .map(|_| ())
    })
    .unwrap_or_else(|| panic!("{tag}: the server never saw the probe's heartbeat"));
    drop(probe);
    let before_sim = counted(&api).unwrap_or(0);

    let (mut sim, json, steady) = b.start_sim_at(
        &target.sim_addr(),
        &tag,
        pis,
        duration,
        &format!("c{round}"),
    );
    let c0 = counted(&api);
    let t0 = Instant::now();
    let marks0 = (
        CpuMark::take(&server),
        target
            .pids()
            .iter()
            .filter_map(|p| CpuMark::take_pid(*p))
            .collect::<Vec<_>>(),
        MachineMark::take(),
    );
    let end = sim
        .wait_line(Stream::Stdout, duration + Duration::from_secs(60), |l| {
            l.starts_with("phase end")
        })
        .unwrap_or_else(|| panic!("{tag}: the simulator did not end its window"));
    let c1 = counted(&api);
    let t1 = Instant::now();
    let marks1 = (
        CpuMark::take(&server),
        target
            .pids()
            .iter()
            .filter_map(|p| CpuMark::take_pid(*p))
            .collect::<Vec<_>>(),
        MachineMark::take(),
    );
    let _ = (steady, end);
    assert!(
        sim.wait_exit(Duration::from_secs(60)).is_some(),
        "{tag}: the simulator did not exit"
    );
    let summary: Summary = serde_json::from_str(
        &std::fs::read_to_string(&json).expect("read the simulator's summary"),
    )
    .expect("parse the simulator's summary");
    // Let the broker deliver what it still holds: until the count stops moving (at most 30 s).
    let mut last = counted(&api).unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        let now = counted(&api).unwrap_or(last);
        if now == last {
            break;
        }
        last = now;
    }
    let _ = stop_server(&mut server);

    let share = |a: &Option<CpuMark>, b: &Option<CpuMark>| match (a, b) {
        (Some(a), Some(b)) => a.share_to(b),
        _ => f64::NAN,
    };
    let broker_cpu: f64 = marks0
        .1
        .iter()
        .zip(&marks1.1)
        .map(|(a, b)| a.share_to(b))
        .sum();
    let sent = summary.sent.heartbeat + summary.sent.state;
    let run = Run {
        broker: target.name().into(),
        round,
        offered_per_s: summary.offered_per_s,
        sent_per_s: summary.sent_per_s,
        processed_per_s: match (c0, c1) {
            (Some(a), Some(b)) => b.saturating_sub(a) as f64 / (t1 - t0).as_secs_f64(),
            _ => f64::NAN,
        },
        delivered: if sent == 0 {
            f64::NAN
        } else {
            last.saturating_sub(before_sim) as f64 / sent as f64
        },
        server_cpu_share: share(&marks0.0, &marks1.0),
        broker_cpu_share: broker_cpu,
        machine_busy: match (marks0.2, marks1.2) {
            (Some(a), Some(b)) => a.busy_to(&b),
            _ => f64::NAN,
        },
        sim_behind_schedule: summary.behind_schedule,
    };
    eprintln!(
        "   sent {:.0}/s processed {:.0}/s delivered {:.2}%; server cpu {:.1}%, broker cpu {:.1}%; sim {}",
        run.sent_per_s,
        run.processed_per_s,
        run.delivered * 100.0,
        run.server_cpu_share * 100.0,
        run.broker_cpu_share * 100.0,
        if run.sim_behind_schedule {
            "BEHIND SCHEDULE"
        } else {
            "on schedule"
        }
    );
    run
}

/// `rounds` rounds of (mosquitto, NATS), `pis` Pis for `duration` each.
pub fn run(b: &Bench, pis: usize, duration: Duration, rounds: u32) -> ClusterResult {
    let mut runs = Vec::new();
    for round in 1..=rounds {
        for nats in [false, true] {
            let target = if nats {
                Target::Nats(NatsCluster::start(3))
            } else {
                Target::Mosquitto(Broker::start())
            };
            runs.push(one(b, &target, round, pis, duration));
        }
    }
    let of = |kind: &str, f: fn(&Run) -> f64| {
        median(runs.iter().filter(|r| r.broker == kind).map(f).collect())
    };
    let m = of("mosquitto", |r| r.processed_per_s);
    let n = of("nats-3", |r| r.processed_per_s);
    ClusterResult {
        pis,
        entities: 4,
        seconds: duration.as_secs(),
        rounds,
        mosquitto_processed_per_s: m,
        nats_processed_per_s: n,
        ratio: n / m,
        mosquitto_broker_cpu: of("mosquitto", |r| r.broker_cpu_share),
        nats_broker_cpu: of("nats-3", |r| r.broker_cpu_share),
        mosquitto_delivered: of("mosquitto", |r| r.delivered),
        nats_delivered: of("nats-3", |r| r.delivered),
        runs,
    }
}

impl ClusterResult {
    /// Writes `cluster.json` to the benchmark's output directory.
    pub fn write(&self, b: &Bench) {
        let path = b.out.join("cluster.json");
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("fleet-bench: cannot write {}: {e}", path.display());
        }
    }

    /// The side-by-side table: every run, then the medians and the ratio.
    pub fn table(&self) -> String {
        let mut t = format!(
            "Ingest on a 3-node NATS cluster vs one mosquitto: {} Pis x {} entities x 10 Hz, \
             {} s, {} rounds\n\
             {:<10} {:>5} {:>10} {:>12} {:>10} {:>11} {:>11} {:>8}\n",
            self.pis,
            self.entities,
            self.seconds,
            self.rounds,
            "broker",
            "round",
            "sent/s",
            "processed/s",
            "delivered",
            "server cpu",
            "broker cpu",
            "machine"
        );
        for r in &self.runs {
            t.push_str(&format!(
                "{:<10} {:>5} {:>10.0} {:>12.0} {:>9.2}% {:>10.1}% {:>10.1}% {:>7.0}%{}\n",
                r.broker,
                r.round,
                r.sent_per_s,
                r.processed_per_s,
                r.delivered * 100.0,
                r.server_cpu_share * 100.0,
                r.broker_cpu_share * 100.0,
                r.machine_busy * 100.0,
                if r.sim_behind_schedule {
                    "  (sim behind schedule)"
                } else {
                    ""
                }
            ));
        }
        t.push_str(&format!(
            "medians: mosquitto {:.0}/s (broker cpu {:.1}%, delivered {:.2}%), \
             nats-3 {:.0}/s (broker cpu {:.1}%, delivered {:.2}%); ratio nats/mosquitto {:.3}\n",
            self.mosquitto_processed_per_s,
            self.mosquitto_broker_cpu * 100.0,
            self.mosquitto_delivered * 100.0,
            self.nats_processed_per_s,
            self.nats_broker_cpu * 100.0,
            self.nats_delivered * 100.0,
            self.ratio
        ));
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_skip_nan_and_average_the_middle_pair() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(vec![f64::NAN, 5.0]), 5.0);
        assert!(median(vec![]).is_nan());
    }
}
