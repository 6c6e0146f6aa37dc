//! Everything a benchmark run found, the targets checked against it, and its outputs:
//! `results.json`, a table (text on stdout, markdown in `table.md`) and the SVG plots.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::Machine;
use super::codec::CodecResult;
use super::failure::FailureResult;
use super::footprint::{BaselineFootprint, FootprintResult};
use super::ingest::IngestResult;
use super::latency::LatencyResult;
use super::svg::{BarGroup, Series, bar_plot_log_ms, line_plot};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IdleLatency {
    pub pi: LatencyResult,
    /// The same against one simulated Pi: the broker-and-machine baseline.
    pub sim_pi: Option<LatencyResult>,
    /// The server's own dispatch -> Accepted round trips (demo planner), from its summary.
    pub server_rtt_n: Option<u64>,
    pub server_rtt_p50_ms: Option<f64>,
    pub server_rtt_p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Results {
    pub machine: Option<Machine>,
    pub quick: bool,
    pub sim_threads: usize,
    pub ingest: Vec<IngestResult>,
    pub idle_latency: Option<IdleLatency>,
    /// The largest load again with the server alone (no baseline subscriber): what the
    /// machine can do when it does not also run mosquitto_sub and a second fan-out.
    pub solo: Option<IngestResult>,
    /// A separate full-load run with a real rpi-client whose command latency is measured.
    pub load: Option<IngestResult>,
    pub failure: Option<FailureResult>,
    /// Driving its simulator.
    pub footprint: Option<FootprintResult>,
    /// Driving through the vehicle bridge (the daemon only).
    #[serde(default)]
    pub footprint_bridge: Option<FootprintResult>,
    /// No segments.
    #[serde(default)]
    pub footprint_idle: Option<FootprintResult>,
    /// Release binary sizes in bytes, per target triple (absent: not built).
    pub sizes: BTreeMap<String, BTreeMap<String, u64>>,
    pub stripped: BTreeMap<String, bool>,
    pub codec: Vec<CodecResult>,
    /// The same built with `opt-level = "z"` (full runs only).
    pub sizes_opt_z: BTreeMap<String, u64>,
    pub codec_opt_z: Vec<CodecResult>,
    pub targets: Vec<Target>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    pub what: String,
    pub target: String,
    pub measured: String,
    /// None when not measured.
    pub met: Option<bool>,
}

fn ms(us: Option<u64>) -> String {
    us.map_or("-".into(), |u| format!("{:.2} ms", u as f64 / 1e3))
}

fn max_of(v: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let v: Vec<f64> = v.flatten().collect();
    if v.is_empty() {
        None
    } else {
        Some(v.into_iter().fold(f64::MIN, f64::max))
    }
}

impl Results {
    pub fn check_targets(&mut self) {
        let mut t = Vec::new();
        let mut add = |what: &str, target: &str, measured: String, met: Option<bool>| {
            t.push(Target {
                what: what.into(),
                target: target.into(),
                measured,
                met,
            })
        };
        let full = self.ingest.iter().max_by_key(|r| r.pis);
        match full {
            Some(r) => {
                let label = format!("{} Pis", r.pis);
                // Targets are set at 1000 Pis: a smaller (quick) run is reported, not judged.
                let at_scale = r.pis >= 1000;
                let judge = |ok: bool| at_scale.then_some(ok);
                add(
                    &format!("server loss at {label}"),
                    "0",
                    format!("{} of {}", r.lost, r.sent),
                    judge(r.lost <= 0),
                );
                add(
                    &format!("server CPU at {label}"),
                    "<= 50% of a core",
                    format!("{:.1}%", r.server_cpu_share * 100.0),
                    judge(r.server_cpu_share <= 0.5),
                );
                add(
                    &format!("server/baseline at {label}"),
                    ">= 0.95",
                    format!("{:.4}", r.ratio),
                    judge(r.ratio >= 0.95),
                );
                add(
                    &format!("simulator on schedule at {label}"),
                    "no skipped ticks, lag p99 < 50 ms",
                    format!(
                        "lag p99 {}, skipped {}",
                        ms(r.sim.lag.p99_us),
                        r.sim.skipped_ticks
                    ),
                    Some(!r.sim.behind_schedule),
                );
            }
            None => add("ingest", "-", "not run".into(), None),
        }
        match &self.idle_latency {
            Some(l) => add(
                "segment -> ack p99, idle",
                "<= 2 ms",
                ms(l.pi.p99_us),
                l.pi.p99_us.map(|p| p <= 2000 && l.pi.timeouts == 0),
            ),
            None => add(
                "segment -> ack p99, idle",
                "<= 2 ms",
                "not run".into(),
                None,
            ),
        }
        match self
            .load
            .as_ref()
            .and_then(|l| l.latency.as_ref().map(|x| (l.pis, x)))
        {
            Some((pis, l)) => add(
                &format!("segment -> ack p99, {pis} Pis load"),
                "<= 10 ms",
                ms(l.p99_us),
                l.p99_us
                    .filter(|_| pis >= 1000)
                    .map(|p| p <= 10_000 && l.timeouts == 0),
            ),
            None => add(
                "segment -> ack p99, load",
                "<= 10 ms",
                "not run".into(),
                None,
            ),
        }
        match &self.failure {
            Some(f) => {
                let k = max_of(f.kill.iter().map(|s| s.kill_to_offline_ms));
                let missing = f.kill.iter().any(|s| s.kill_to_offline_ms.is_none());
                add(
                    "kill -9 -> offline (max)",
                    "<= 1600 ms",
                    k.map_or("-".into(), |v| format!("{v:.1} ms")),
                    k.map(|v| v <= 1600.0 && !missing),
                );
                let w = max_of(f.kill.iter().map(|s| s.will_to_offline_ms));
                add(
                    "will -> offline (max)",
                    "<= 100 ms",
                    w.map_or("-".into(), |v| format!("{v:.1} ms")),
                    w.map(|v| v <= 100.0 && !missing),
                );
            }
            None => add("failure detection", "-", "not run".into(), None),
        }
        let beside = |v: Option<String>| v.map_or(String::new(), |v| format!(" (C baseline {v})"));
        let cpu = |f: &FootprintResult| {
            format!(
                "{:.3}%{}{}",
                f.cpu_share * 100.0,
                beside(
                    f.baseline
                        .as_ref()
                        .map(|b| format!("{:.3}%", b.cpu_share * 100.0))
                ),
                f.floor.as_ref().map_or(String::new(), |b| format!(
                    " (rumqttc floor {:.3}%)",
                    b.cpu_share * 100.0
                ))
            )
        };
        let wakeups = |f: &FootprintResult| {
            format!(
                "{:.1}/s{}",
                f.wakeups_per_s,
                beside(
                    f.baseline
                        .as_ref()
                        .map(|b| format!("{:.1}/s", b.wakeups_per_s))
                )
            )
        };
        for f in [&self.footprint, &self.footprint_bridge]
            .into_iter()
            .flatten()
        {
            add(
                &format!("rpi-client RSS (peak), {}", f.mode),
                "<= 4 MB (4096 KiB)",
                format!("{} KiB", f.hwm_kib),
                Some(f.hwm_kib <= 4096),
            );
            add(
                &format!("rpi-client CPU, {}", f.mode),
                "<= 0.15% of a core",
                cpu(f),
                Some(f.cpu_share <= 0.0015),
            );
            add(
                &format!("rpi-client wake-ups, {}", f.mode),
                "<= 30 per second",
                wakeups(f),
                (!f.wakeups_per_s.is_nan()).then_some(f.wakeups_per_s <= 30.0),
            );
        }
        if let Some(f) = &self.footprint_idle {
            add(
                &format!("rpi-client CPU, {}", f.mode),
                "<= the C baseline's",
                cpu(f),
                f.baseline.as_ref().map(|b| f.cpu_share <= b.cpu_share),
            );
        }
        match &self.footprint {
            Some(_) => {}
            None => add("rpi-client footprint", "-", "not run".into(), None),
        }
        self.targets = t;
    }

    /// The table, as markdown (also readable as text).
    pub fn table(&self) -> String {
        let mut s = String::new();
        let pct = |v: f64| format!("{:.1}%", v * 100.0);
        if !self.ingest.is_empty() {
            s.push_str("### Ingest (4 entities x 10 Hz + 2 Hz heartbeat per Pi)\n\n");
            s.push_str("| Pis | offered/s | sent/s | server processed/s | lost | baseline/s | baseline lost | server/baseline | server CPU | server RSS peak | broker CPU | sim CPU | machine busy | sim lag p99 | sim skipped | sim reconnects |\n");
            s.push_str(
                "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
            );
            for r in self.ingest.iter().chain(&self.solo) {
                let pis = if r.with_baseline {
                    r.pis.to_string()
                } else {
                    format!("{} (server only)", r.pis)
                };
                let _ = writeln!(
                    s,
                    "| {} | {:.0} | {:.0} | {:.0} | {} | {:.0} | {} | {:.4} | {} | {} KiB | {} | {} | {} | {} | {} | {} |",
                    pis,
                    r.offered_per_s,
                    r.sent_per_s,
                    r.processed_per_s,
                    r.lost,
                    r.baseline_per_s,
                    r.baseline_lost,
                    r.ratio,
                    pct(r.server_cpu_share),
                    r.server_hwm_kib,
                    pct(r.broker_cpu_share),
                    pct(r.sim.cpu_share),
                    pct(r.machine_busy),
                    ms(r.sim.lag.p99_us),
                    r.sim.skipped_ticks,
                    r.sim.disconnects
                );
            }
            s.push('\n');
            for r in self.ingest.iter().chain(&self.solo) {
                let _ = writeln!(
                    s,
                    "- {} Pis{}: broker backlog drained {:.2} s after the window closed{}; statuses (QoS 1) sent {}, server {}, baseline {}; mosquitto \"dropped\" warnings: {}",
                    r.pis,
                    if r.with_baseline {
                        ""
                    } else {
                        " (server only)"
                    },
                    r.drain_s,
                    if r.drained {
                        ""
                    } else {
                        " (still busy after 60 s)"
                    },
                    r.status_sent,
                    r.status_server,
                    r.status_baseline,
                    r.broker_drop_warnings.len()
                );
            }
            s.push('\n');
        }
        let lat_row = |s: &mut String, label: &str, l: &LatencyResult| {
            let _ = writeln!(
                s,
                "| {label} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                l.sent,
                l.accepted,
                if l.reject_reasons.is_empty() {
                    l.rejected.to_string()
                } else {
                    format!("{} {:?}", l.rejected, l.reject_reasons)
                },
                l.timeouts,
                ms(l.min_us),
                ms(l.p50_us),
                ms(l.p90_us),
                ms(l.p99_us),
                ms(l.max_us)
            );
        };
        if self.idle_latency.is_some() || self.load.is_some() {
            s.push_str("### Command latency (probe publishes segment -> rpi-client's Accepted ack arrives)\n\n");
            s.push_str("| load | sent | accepted | rejected | timeouts | min | p50 | p90 | p99 | max |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
            if let Some(l) = &self.idle_latency {
                lat_row(&mut s, "idle", &l.pi);
                if let Some(sp) = &l.sim_pi {
                    lat_row(&mut s, "idle, simulated Pi instead (baseline)", sp);
                }
            }
            if let Some(r) = &self.load {
                if let Some(l) = &r.latency {
                    lat_row(&mut s, &format!("{} Pis x 4 x 10 Hz", r.pis), l);
                }
            }
            if let Some(l) = &self.idle_latency {
                let _ = writeln!(
                    s,
                    "\nThe server's own dispatch -> Accepted round trip (demo planner, idle): n={} p50={} p99={}",
                    l.server_rtt_n.map_or("-".into(), |n| n.to_string()),
                    l.server_rtt_p50_ms
                        .map_or("-".into(), |v| format!("{v:.1} ms")),
                    l.server_rtt_p99_ms
                        .map_or("-".into(), |v| format!("{v:.1} ms")),
                );
            }
            s.push('\n');
        }
        if let Some(f) = &self.failure {
            s.push_str("### Failure detection (real rpi-client, server idle, heartbeat timeout 1.5 s)\n\n| event | samples (ms) |\n|---|---|\n");
            let list = |v: Vec<Option<f64>>| {
                v.iter()
                    .map(|x| x.map_or("-".into(), |x| format!("{x:.1}")))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(
                s,
                "| kill -9 -> will published (seen by a probe) | {} |",
                list(f.kill.iter().map(|k| k.kill_to_will_ms).collect())
            );
            let _ = writeln!(
                s,
                "| will -> server marks offline | {} |",
                list(f.kill.iter().map(|k| k.will_to_offline_ms).collect())
            );
            let _ = writeln!(
                s,
                "| kill -9 -> server marks offline | {} |",
                list(f.kill.iter().map(|k| k.kill_to_offline_ms).collect())
            );
            let _ = writeln!(
                s,
                "| SIGSTOP (hung Pi, socket open) -> offline by heartbeat timeout | {} |",
                list(f.hang.iter().map(|k| k.stop_to_offline_ms).collect())
            );
            s.push('\n');
        }
        let modes: Vec<&FootprintResult> = [
            &self.footprint,
            &self.footprint_bridge,
            &self.footprint_idle,
        ]
        .into_iter()
        .flatten()
        .collect();
        if let Some(first) = modes.first() {
            let _ = writeln!(
                s,
                "### rpi-client footprint ({} entities at 10 Hz, {:.0} s per mode)\n\n\
                 | mode | client | CPU (share of one core) | wake-ups/s | RSS avg | RSS max | peak (VmHWM) | threads | segments completed |\n\
                 |---|---|---:|---:|---:|---:|---:|---:|---:|",
                first.entities, first.window_s,
            );
            for f in &modes {
                let _ = writeln!(
                    s,
                    "| {} | rpi-client | {:.3}% | {:.1} | {} KiB | {} KiB | {} KiB | {} | {} |",
                    f.mode,
                    f.cpu_share * 100.0,
                    f.wakeups_per_s,
                    f.rss_avg_kib,
                    f.rss_max_kib,
                    f.hwm_kib,
                    f.threads,
                    f.segments_completed.map_or("-".into(), |n| n.to_string())
                );
                // A reference client's row and rpi-client's ratio to it.
                let reference = |s: &mut String, what: &str, short: &str, b: &BaselineFootprint| {
                    let _ = writeln!(
                        s,
                        "| | {what} | {:.3}% | {:.1} | {} KiB | - | - | 1 | - |\n\
                         | | rpi-client / {short} | {:.1}x | {:.1}x | | | | | |",
                        b.cpu_share * 100.0,
                        b.wakeups_per_s,
                        b.rss_kib,
                        f.cpu_share / b.cpu_share.max(1e-9),
                        f.wakeups_per_s / b.wakeups_per_s.max(1e-9)
                    );
                };
                match &f.baseline {
                    Some(b) => reference(
                        &mut s,
                        "baseline: C, libmosquitto, same messages, no driving",
                        "baseline",
                        b,
                    ),
                    None => {
                        let _ = writeln!(s, "| | baseline not built | | | | | | | |");
                    }
                }
                if let Some(b) = &f.floor {
                    reference(
                        &mut s,
                        "floor: pi-floor, rumqttc, one thread woken once per round, same messages",
                        "floor",
                        b,
                    );
                }
            }
            s.push('\n');
        }
        if !self.sizes.is_empty() {
            s.push_str("### Release binaries (stripped, bytes)\n\n| target | rpi-client | mqtt-server |\n|---|---:|---:|\n");
            for (triple, m) in &self.sizes {
                let get = |n: &str| m.get(n).map_or("not built".into(), |b| b.to_string());
                let _ = writeln!(
                    s,
                    "| {triple} | {} | {} |",
                    get("rpi-client"),
                    get("mqtt-server")
                );
            }
            if !self.sizes_opt_z.is_empty() {
                let get = |n: &str| {
                    self.sizes_opt_z
                        .get(n)
                        .map_or("not built".into(), |b| b.to_string())
                };
                let _ = writeln!(
                    s,
                    "| x86_64, opt-level \"z\" | {} | {} |",
                    get("rpi-client"),
                    get("mqtt-server")
                );
            }
            s.push('\n');
        }
        if !self.codec.is_empty() {
            s.push_str("### Codec (ns per message, median of 7 runs)\n\n| kind | bytes | encode | decode |");
            let z = !self.codec_opt_z.is_empty();
            if z {
                s.push_str(" encode (opt z) | decode (opt z) |\n|---|---:|---:|---:|---:|---:|\n");
            } else {
                s.push_str("\n|---|---:|---:|---:|\n");
            }
            for c in &self.codec {
                let _ = write!(
                    s,
                    "| {} | {} | {:.1} | {:.1} |",
                    c.kind, c.bytes, c.encode_ns, c.decode_ns
                );
                if let Some(cz) = self.codec_opt_z.iter().find(|x| x.kind == c.kind) {
                    let _ = write!(s, " {:.1} | {:.1} |", cz.encode_ns, cz.decode_ns);
                }
                s.push('\n');
            }
            s.push('\n');
        }
        if !self.targets.is_empty() {
            s.push_str("### Targets\n\n| what | target | measured | met |\n|---|---|---|---|\n");
            for t in &self.targets {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} |",
                    t.what,
                    t.target,
                    t.measured,
                    match t.met {
                        Some(true) => "yes",
                        Some(false) => "**NO**",
                        None => "-",
                    }
                );
            }
        }
        s
    }

    /// Writes results.json, table.md and the plots into `out`.
    pub fn write(&self, out: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(out)?;
        std::fs::write(
            out.join("results.json"),
            serde_json::to_string_pretty(self).unwrap_or_default() + "\n",
        )?;
        std::fs::write(out.join("table.md"), self.table())?;
        if !self.ingest.is_empty() {
            let mut rows: Vec<&IngestResult> = self.ingest.iter().collect();
            rows.sort_by_key(|r| r.pis);
            let pts = |f: &dyn Fn(&IngestResult) -> f64| -> Vec<(f64, f64)> {
                std::iter::once((0.0, 0.0))
                    .chain(rows.iter().map(|r| (r.offered_per_s, f(r))))
                    .collect()
            };
            let max = rows.last().map(|r| r.offered_per_s).unwrap_or(1.0);
            let svg = line_plot(
                "Processed vs offered (heartbeats + states per second)",
                "offered by the simulator (msg/s)",
                "received (msg/s)",
                &[
                    Series {
                        name: "offered (ideal)",
                        color: "#999",
                        points: vec![(0.0, 0.0), (max, max)],
                        dashed: true,
                        width: 1.5,
                    },
                    Series {
                        name: "sent by simulator",
                        color: "#2ca02c",
                        points: pts(&|r| r.sent_per_s),
                        dashed: false,
                        width: 9.0,
                    },
                    Series {
                        name: "mosquitto_sub (baseline)",
                        color: "#1f77b4",
                        points: pts(&|r| r.baseline_per_s),
                        dashed: false,
                        width: 5.0,
                    },
                    Series {
                        name: "mqtt-server alone, no baseline (processed)",
                        color: "#9467bd",
                        points: self
                            .solo
                            .iter()
                            .map(|r| (r.offered_per_s, r.processed_per_s))
                            .collect(),
                        dashed: false,
                        width: 2.0,
                    },
                    Series {
                        name: "mqtt-server (processed)",
                        color: "#d62728",
                        points: pts(&|r| r.processed_per_s),
                        dashed: false,
                        width: 2.0,
                    },
                ],
            );
            std::fs::write(out.join("ingest.svg"), svg)?;
        }
        let mut groups = Vec::new();
        let to_ms = |l: &LatencyResult| {
            [l.p50_us, l.p90_us, l.p99_us, l.max_us]
                .iter()
                .map(|v| v.map(|u| u as f64 / 1e3))
                .collect::<Vec<_>>()
        };
        if let Some(l) = &self.idle_latency {
            groups.push(("idle".to_string(), to_ms(&l.pi), Some(2.0)));
            if let Some(sp) = &l.sim_pi {
                groups.push(("idle, simulated Pi".to_string(), to_ms(sp), None));
            }
        }
        if let Some(r) = &self.load {
            if let Some(l) = &r.latency {
                groups.push((format!("{} Pis load", r.pis), to_ms(l), Some(10.0)));
            }
        }
        if !groups.is_empty() {
            let g: Vec<BarGroup<'_>> = groups
                .iter()
                .map(|(label, values, target)| BarGroup {
                    label,
                    values: values.clone(),
                    target: *target,
                })
                .collect();
            let svg = bar_plot_log_ms(
                "Segment -> Accepted ack round trip (rpi-client)",
                &g,
                &[
                    ("p50", "#2ca02c"),
                    ("p90", "#1f77b4"),
                    ("p99", "#ff7f0e"),
                    ("max", "#d62728"),
                ],
            );
            std::fs::write(out.join("latency.svg"), svg)?;
        }
        Ok(())
    }
}
