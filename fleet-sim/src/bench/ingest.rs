//! Ingest: the simulator offers N Pis x 4 entities x 10 Hz to a fresh broker while the
//! server and a bare `mosquitto_sub` (the baseline) are both subscribed to `rpi/+/+`, in the
//! same run. Processed = the server's own per-kind message counters (logged at shutdown);
//! baseline = lines printed by mosquitto_sub; sent = what the simulator queued. CPU shares
//! are measured over the simulator's publishing window only (between its `phase steady`
//! and `phase end` lines).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::procs::{CpuMark, MachineMark, Stream, TopicCounts};
use super::{Bench, ServerStats, latency, stop_server};
use crate::Summary;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IngestResult {
    pub pis: usize,
    /// False for a server-only run (no mosquitto_sub): then the baseline figures are zero.
    pub with_baseline: bool,
    pub entities: u32,
    pub duration_s: f64,
    /// Heartbeats + state reports per second the schedule asks for.
    pub offered_per_s: f64,
    /// What the simulator queued per second during its window.
    pub sent_per_s: f64,
    pub sent: u64,
    pub sim: Summary,
    /// Heartbeats + states counted by the server, per second of the window, and in total.
    pub processed_per_s: f64,
    pub processed: u64,
    pub lost: i64,
    pub server: Option<ServerStats>,
    pub server_cpu_share: f64,
    pub server_rss_max_kib: u64,
    pub server_hwm_kib: u64,
    pub baseline_per_s: f64,
    pub baseline: u64,
    pub baseline_lost: i64,
    pub baseline_cpu_share: f64,
    /// processed / baseline: 1.0 means the server kept up exactly as well as mosquitto_sub.
    pub ratio: f64,
    pub broker_cpu_share: f64,
    /// Busy share of the whole machine (all cores) during the window.
    pub machine_busy: f64,
    /// Seconds from the end of the simulator's window until the baseline's count stopped
    /// moving: the broker's backlog (a delivery delay) at the end of the run.
    pub drain_s: f64,
    /// False if the broker had not finished within the wait (60 s).
    pub drained: bool,
    /// Status messages (QoS 1, retained): sent by the simulator, counted by the server and
    /// by the baseline.
    pub status_sent: u64,
    pub status_server: u64,
    pub status_baseline: u64,
    /// Lines where mosquitto says it drops outgoing messages for a slow client.
    pub broker_drop_warnings: Vec<String>,
    /// Command latency measured during this run, if asked for (then a real rpi-client
    /// takes part too, and its messages are in the server's and baseline's counts).
    pub latency: Option<latency::LatencyResult>,
}

/// One ingest run of `pis` simulated Pis for `duration`; with `latency` = (samples,
/// spacing), a real rpi-client joins and its command latency is measured in the window.
pub fn run(
    b: &Bench,
    pis: usize,
    duration: Duration,
    latency: Option<(u64, Duration)>,
    with_baseline: bool,
) -> IngestResult {
    let tag = match (latency.is_some(), with_baseline) {
        (true, _) => format!("load-{pis}"),
        (false, true) => format!("ingest-{pis}"),
        (false, false) => format!("solo-{pis}"),
    };
    eprintln!("== {tag}: {pis} Pis x 4 entities x 10 Hz for {duration:?}");
    let broker = b.broker();
    let mut server = b.server(&broker, &format!("{tag}-server"), &[]);
    let (mut baseline, counts) = if with_baseline {
        let (p, c) = b.baseline(&broker, &format!("{tag}-baseline"));
        (Some(p), c)
    } else {
        (None, Arc::new(TopicCounts::default()))
    };
    let pi = latency.map(|_| b.pi(&broker, "bench-pi"));

    let (mut sim, json, steady) = b.start_sim(&broker, &tag, pis, duration, &format!("b{pis}"));
    eprintln!("   {}", steady.text);
    let marks0 = (
        CpuMark::take(&server),
        baseline.as_ref().and_then(CpuMark::take),
        broker.pid().and_then(CpuMark::take_pid),
        MachineMark::take(),
    );

    let lat_thread = latency.map(|(n, spacing)| {
        let port = broker.port();
        std::thread::Builder::new()
            .name("bench-latency".into())
            .spawn(move || {
                // Let the window settle a moment first.
                std::thread::sleep(Duration::from_millis(500));
                latency::measure(port, "bench-latency", "bench-pi", &[1, 2, 3], n, spacing)
            })
            .expect("spawn the latency probe")
    });

    let mut rss_max = 0;
    let end_line = loop {
        if let Some(m) = server.memory() {
            rss_max = rss_max.max(m.rss_kib);
        }
        match sim.wait_line(Stream::Stdout, Duration::from_secs(1), |l| {
            l.starts_with("phase end")
        }) {
            Some(l) => break l,
            None if Instant::now() > steady.at + duration + Duration::from_secs(30) => {
                panic!("the simulator did not end its window")
            }
            None => {}
        }
    };
    let marks1 = (
        CpuMark::take(&server),
        baseline.as_ref().and_then(CpuMark::take),
        broker.pid().and_then(CpuMark::take_pid),
        MachineMark::take(),
    );
    let share = |a: Option<CpuMark>, b: Option<CpuMark>| match (a, b) {
        (Some(a), Some(b)) => a.share_to(&b),
        _ => f64::NAN,
    };
    let server_cpu_share = share(marks0.0, marks1.0);
    let baseline_cpu_share = share(marks0.1, marks1.1);
    let broker_cpu_share = share(marks0.2, marks1.2);
    let machine_busy = match (marks0.3, marks1.3) {
        (Some(a), Some(b)) => a.busy_to(&b),
        _ => f64::NAN,
    };
    let latency = lat_thread.map(|h| h.join().expect("latency probe"));

    assert!(
        sim.wait_exit(Duration::from_secs(60)).is_some(),
        "the simulator did not exit"
    );
    let summary: Summary = serde_json::from_str(
        &std::fs::read_to_string(&json).expect("read the simulator's summary"),
    )
    .expect("parse the simulator's summary");
    // The real Pi would keep the baseline's count moving: stop it first.
    let pi_stopped = pi.map(|mut p| {
        p.stop(Duration::from_secs(5));
    });
    // The broker may still be working through a backlog: wait until it has seen every
    // simulated Pi disconnect and the baseline's count has stopped moving, and say how long
    // that took after the window closed (seconds of backlog = seconds of delivery delay).
    let drain = drain(&broker, &counts, &format!("b{pis}-"), pis, end_line.at);
    eprintln!(
        "   broker drained {:.2}s after the window closed{}",
        drain.0,
        if drain.1 { "" } else { " (gave up waiting)" }
    );
    let hwm = server.memory().map(|m| m.hwm_kib).unwrap_or(0);
    let _ = pi_stopped;
    if let Some(p) = baseline.as_mut() {
        p.stop(Duration::from_secs(5));
    }
    let stats = stop_server(&mut server);
    let broker_log = broker.log();
    let _ = std::fs::write(b.logs().join(format!("{tag}-broker.log")), &broker_log);
    let broker_drop_warnings: Vec<String> = broker_log
        .lines()
        .filter(|l| l.contains("dropped") || l.contains("dropping"))
        .map(str::to_string)
        .collect();

    let sent = summary.sent.heartbeat + summary.sent.state;
    let processed = stats
        .as_ref()
        .map(|s| s.count("heartbeat") + s.count("state"))
        .unwrap_or(0);
    let stats_status = stats.as_ref().map(|s| s.count("status")).unwrap_or(0);
    let base = TopicCounts::get(&counts.heartbeat) + TopicCounts::get(&counts.state);
    let window = summary.window_s.max(1e-9);
    let r = IngestResult {
        pis,
        with_baseline,
        entities: summary.entities,
        duration_s: summary.duration_s,
        offered_per_s: summary.offered_per_s,
        sent_per_s: summary.sent_per_s,
        sent,
        // Heartbeats sent before the window (between connect and the first state tick) are in
        // the totals; leave them out of the rates.
        processed_per_s: processed.saturating_sub(summary.early_heartbeats) as f64 / window,
        processed,
        lost: sent as i64 - processed as i64,
        server: stats,
        server_cpu_share,
        server_rss_max_kib: rss_max,
        server_hwm_kib: hwm,
        baseline_per_s: base.saturating_sub(summary.early_heartbeats) as f64 / window,
        baseline: base,
        baseline_lost: sent as i64 - base as i64,
        baseline_cpu_share,
        ratio: if base == 0 {
            0.0
        } else {
            processed as f64 / base as f64
        },
        broker_cpu_share,
        machine_busy,
        drain_s: drain.0,
        drained: drain.1,
        status_sent: summary.sent.status,
        status_server: stats_status,
        status_baseline: TopicCounts::get(&counts.status),
        broker_drop_warnings,
        latency,
        sim: summary,
    };
    eprintln!(
        "   sent {} processed {} (lost {}) baseline {} (lost {}); server cpu {:.1}% rss {} KiB; sim {}",
        r.sent,
        r.processed,
        r.lost,
        r.baseline,
        r.baseline_lost,
        r.server_cpu_share * 100.0,
        r.server_rss_max_kib,
        if r.sim.behind_schedule {
            "BEHIND SCHEDULE"
        } else {
            "on schedule"
        }
    );
    r
}

fn baseline_total(c: &TopicCounts) -> u64 {
    TopicCounts::get(&c.heartbeat) + TopicCounts::get(&c.state) + TopicCounts::get(&c.status)
}

/// Waits (at most 60 s) until the broker log shows `pis` clients with ids `prefix*`
/// disconnected and the baseline count has not changed for a second; returns the seconds
/// from `since` to the last change seen, and whether it finished.
fn drain(
    broker: &testkit::Broker,
    counts: &TopicCounts,
    prefix: &str,
    pis: usize,
    since: Instant,
) -> (f64, bool) {
    let needle = format!("Client {prefix}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = baseline_total(counts);
    let mut last_change = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now_count = baseline_total(counts);
        if now_count != last {
            last = now_count;
            last_change = Instant::now();
        }
        let gone = broker
            .log()
            .lines()
            .filter(|l| {
                l.contains(&needle)
                    && (l.contains(" disconnected") || l.contains(" closed its connection"))
            })
            .count();
        let quiet = last_change.elapsed() >= Duration::from_secs(1);
        if gone >= pis && quiet {
            return (
                last_change.saturating_duration_since(since).as_secs_f64(),
                true,
            );
        }
        if Instant::now() >= deadline {
            return (
                last_change.saturating_duration_since(since).as_secs_f64(),
                false,
            );
        }
    }
}
