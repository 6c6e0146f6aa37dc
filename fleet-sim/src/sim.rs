//! A simulator run: lays out the schedule (connections spread over the ramp, then every Pi
//! ticking from one common start with its phase spread over a period), runs the Pis on a few
//! threads, prints progress and phase lines, and returns the summary.
//!
//! Stdout lines a driver can rely on: `phase steady ...` when the publishing window opens,
//! `phase end ...` when it closes, and `phase done` after the summary; everything else on
//! stdout is for people.

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use serde::{Deserialize, Serialize};

use crate::config::SimConfig;
use crate::pi::{PiTimes, ShardCtx, run_pi};
use crate::stats::{KindCounts, LagSummary, Progress, ShardStats};

/// Time between the last connection of the ramp and the first tick.
pub const SETTLE: Duration = Duration::from_millis(1000);

/// What a run did, as written to `--json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub pis: usize,
    pub entities: u32,
    pub threads: usize,
    pub state_interval_ms: f64,
    pub heartbeat_interval_ms: f64,
    /// The publishing window, seconds (from the first tick to the end of the schedule).
    pub duration_s: f64,
    /// The wall time the window really took (later if the run was stopped early: shorter).
    pub window_s: f64,
    /// Pis connected when the window opened.
    pub connected_at_start: u64,
    pub connects: u64,
    pub connect_failures: u64,
    pub disconnects: u64,
    /// Messages queued for sending, per kind, over the whole run.
    pub sent: KindCounts,
    /// Of `sent.heartbeat`, those sent before the window opened (between connect and the
    /// first state tick), so a server's heartbeat timeout does not fire during the ramp.
    pub early_heartbeats: u64,
    /// Publishes rumqttc wrote to the socket, all kinds together.
    pub written: u64,
    pub publish_failed: u64,
    pub segments_received: u64,
    pub malformed: u64,
    /// State reports and heartbeats per second the schedule asks for.
    pub offered_per_s: f64,
    /// State reports and heartbeats per second actually queued during the window (early
    /// heartbeats not counted).
    pub sent_per_s: f64,
    pub lag: LagSummary,
    pub late_ticks: u64,
    pub skipped_ticks: u64,
    /// True when ticks were skipped or the 99th percentile of lateness passed half a state
    /// interval: the simulator could not keep its schedule, so its load is below the offer.
    pub behind_schedule: bool,
    /// The simulator's own CPU over the whole run, seconds, and as a share of one core.
    pub cpu_s: f64,
    pub cpu_share: f64,
    pub unfinished: u64,
}

fn share(total: Duration, i: usize, n: usize) -> Duration {
    total.mul_f64(i as f64 / n as f64)
}

/// Runs the whole fleet; returns when every Pi said Offline and disconnected (or gave up),
/// or soon after `shutdown` fires.
pub fn run(cfg: SimConfig, shutdown: Receiver<()>) -> Summary {
    let cfg = Arc::new(cfg);
    let cpu0 = testkit::procfs::cpu_time(std::process::id()).unwrap_or_default();
    let start = Instant::now();
    let t0 = start + cfg.ramp + SETTLE;
    let end = t0 + cfg.duration;
    let progress = Arc::new(Progress::default());
    let stop = Arc::new(AtomicBool::new(false));
    let first_session = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(1);

    let threads = cfg.threads.min(cfg.pis).max(1);
    let mut handles = Vec::new();
    for shard in 0..threads {
        let cfg = cfg.clone();
        let progress = progress.clone();
        let stop = stop.clone();
        let h = thread::Builder::new()
            .name(format!("sim-{shard}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("build a current-thread tokio runtime");
                let local = tokio::task::LocalSet::new();
                let ctx = Rc::new(ShardCtx {
                    cfg: cfg.clone(),
                    stats: Default::default(),
                    progress,
                    first_session,
                    stop,
                });
                let n = cfg.pis;
                local.block_on(&rt, async {
                    let mut tasks = Vec::new();
                    for i in (shard..n).step_by(threads) {
                        let connect_at = start + share(cfg.ramp, i, n);
                        let times = PiTimes {
                            connect_at,
                            first_state: t0 + share(cfg.state_interval, i, n),
                            first_heartbeat: connect_at + share(cfg.heartbeat_interval, i, n),
                            window_start: t0,
                            end,
                        };
                        tasks.push(tokio::task::spawn_local(run_pi(ctx.clone(), i, times)));
                    }
                    for t in tasks {
                        // A panicking Pi task is a bug: re-raise it.
                        if let Err(e) = t.await {
                            if e.is_panic() {
                                std::panic::resume_unwind(e.into_panic());
                            }
                        }
                    }
                });
                ctx.stats.take()
            })
            .expect("spawn a simulator thread");
        handles.push(h);
    }

    // Progress, phases, early stop.
    let mut steady_printed = false;
    let mut connected_at_start = 0;
    let mut last = (Instant::now(), 0u64, 0u64);
    let tick = if cfg.progress_interval.is_zero() {
        Duration::from_millis(100)
    } else {
        cfg.progress_interval
    };
    let mut next_progress = start + tick;
    let mut stopped_at = None;
    loop {
        let now = Instant::now();
        if !steady_printed && now >= t0 {
            steady_printed = true;
            connected_at_start = Progress::get(&progress.connected);
            println!(
                "phase steady connected={connected_at_start}/{} offered_per_s={:.0}",
                cfg.pis,
                offered(&cfg)
            );
        }
        if now >= end {
            break;
        }
        let wake = [next_progress, end, if steady_printed { end } else { t0 }]
            .into_iter()
            .min()
            .unwrap_or(end);
        if shutdown
            .recv_timeout(wake.saturating_duration_since(now))
            .is_ok()
        {
            stop.store(true, Ordering::Relaxed);
            stopped_at = Some(Instant::now());
            log::info!("stopping early");
            break;
        }
        if Instant::now() >= next_progress {
            next_progress += tick;
            if !cfg.progress_interval.is_zero() {
                last = print_progress(&cfg, &progress, start, last);
            }
        }
    }
    let window_end = stopped_at.unwrap_or(end);
    println!(
        "phase end t={:.3}",
        window_end.saturating_duration_since(start).as_secs_f64()
    );

    let mut total = ShardStats::default();
    for h in handles {
        match h.join() {
            Ok(s) => total.merge(&s),
            Err(p) => std::panic::resume_unwind(p),
        }
    }
    let cpu = testkit::procfs::cpu_time(std::process::id())
        .unwrap_or_default()
        .saturating_sub(cpu0);
    let elapsed = start.elapsed();
    let window = window_end.saturating_duration_since(t0);
    let lag = total.lag.summary();
    let behind = total.skipped_ticks > 0
        || lag
            .p99_us
            .is_some_and(|p| p as u128 * 2 > cfg.state_interval.as_micros());
    Summary {
        pis: cfg.pis,
        entities: cfg.entities,
        threads,
        state_interval_ms: cfg.state_interval.as_secs_f64() * 1e3,
        heartbeat_interval_ms: cfg.heartbeat_interval.as_secs_f64() * 1e3,
        duration_s: cfg.duration.as_secs_f64(),
        window_s: window.as_secs_f64(),
        connected_at_start,
        connects: total.connects,
        connect_failures: total.connect_failures,
        disconnects: total.disconnects,
        sent: total.sent,
        early_heartbeats: total.early_heartbeats,
        written: total.written,
        publish_failed: total.publish_failed,
        segments_received: total.segments_received,
        malformed: total.malformed,
        offered_per_s: offered(&cfg),
        sent_per_s: if window.is_zero() {
            0.0
        } else {
            (total.sent.state + total.sent.heartbeat - total.early_heartbeats) as f64
                / window.as_secs_f64()
        },
        lag,
        late_ticks: total.late_ticks,
        skipped_ticks: total.skipped_ticks,
        behind_schedule: behind,
        cpu_s: cpu.as_secs_f64(),
        cpu_share: cpu.as_secs_f64() / elapsed.as_secs_f64().max(1e-9),
        unfinished: total.unfinished,
    }
}

fn offered(cfg: &SimConfig) -> f64 {
    let (s, h) = cfg.offered_rates();
    s + h
}

/// One progress line; warns on stderr when ticks were late or skipped in the last interval.
fn print_progress(
    cfg: &SimConfig,
    p: &Progress,
    start: Instant,
    last: (Instant, u64, u64),
) -> (Instant, u64, u64) {
    let now = Instant::now();
    let sent = Progress::get(&p.sent);
    let late = Progress::get(&p.late_ticks) + Progress::get(&p.skipped_ticks);
    let dt = now
        .saturating_duration_since(last.0)
        .as_secs_f64()
        .max(1e-9);
    let lag_max = p.lag_max_us.swap(0, Ordering::Relaxed);
    println!(
        "[{:7.1}s] connected {}/{}  sent {:.0}/s  lag max {:.1}ms  late+skipped {}  failed {}",
        now.saturating_duration_since(start).as_secs_f64(),
        Progress::get(&p.connected),
        cfg.pis,
        (sent - last.1) as f64 / dt,
        lag_max as f64 / 1000.0,
        late,
        Progress::get(&p.publish_failed),
    );
    if late > last.2 {
        log::warn!(
            "behind schedule: {} ticks late by more than half a period or skipped in the last {:.1}s (worst {:.1}ms late)",
            late - last.2,
            dt,
            lag_max as f64 / 1000.0
        );
    }
    (now, sent, late)
}

impl Summary {
    /// A few lines for people.
    pub fn lines(&self) -> Vec<String> {
        let ms = |v: Option<u64>| v.map_or("-".into(), |u| format!("{:.2}ms", u as f64 / 1e3));
        vec![
            format!(
                "{} Pis x {} entities, {} thread(s), window {:.1}s; connected at start {}, connects {}, failures {}, disconnects {}",
                self.pis,
                self.entities,
                self.threads,
                self.window_s,
                self.connected_at_start,
                self.connects,
                self.connect_failures,
                self.disconnects
            ),
            format!(
                "sent: state {} heartbeat {} status {} acks {}/{}/{} (accepted/completed/rejected); written {}; failed {}",
                self.sent.state,
                self.sent.heartbeat,
                self.sent.status,
                self.sent.ack_accepted,
                self.sent.ack_completed,
                self.sent.ack_rejected,
                self.written,
                self.publish_failed
            ),
            format!(
                "rate: offered {:.0}/s, sent {:.0}/s; segments received {}",
                self.offered_per_s, self.sent_per_s, self.segments_received
            ),
            format!(
                "tick lateness: p50 {} p99 {} max {}; late {} skipped {}; cpu {:.1}s ({:.0}% of a core)",
                ms(self.lag.p50_us),
                ms(self.lag.p99_us),
                ms(self.lag.max_us),
                self.late_ticks,
                self.skipped_ticks,
                self.cpu_s,
                self.cpu_share * 100.0
            ),
            if self.behind_schedule {
                "BEHIND SCHEDULE: the load sent is below the offer (see lateness above)".into()
            } else {
                "on schedule".into()
            },
        ]
    }
}
