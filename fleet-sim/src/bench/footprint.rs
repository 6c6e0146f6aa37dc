//! The Pi's footprint: a real release `rpi-client` with 3 entities at 10 Hz against the local
//! broker, in three modes ([`Mode`]): driving its simulator (the server's demo planner sends
//! segments), driving through the vehicle bridge (the Python reference vehicle, not counted),
//! and idle (no segments); each measured over a window (RSS sampled every second, peak from
//! VmHWM, CPU from the threads' schedstat in ns, wake-ups as the voluntary context switches
//! of all its threads); beside it in the same window, the baseline: a small C client on
//! libmosquitto publishing the same heartbeats and state reports
//! (`bench/baseline/pi_baseline.c`, built by scripts/bench.sh), and the floor of a client on
//! rumqttc: `pi-floor` (fleet-sim/src/bin/pi-floor.rs), the same messages from one thread
//! woken once per round, nothing else; and the sizes of the stripped release binaries.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::procs::CpuMark;
use super::{Bench, stop_server};

/// What the Pi does while it is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The built-in simulator, driving the segments of the demo planner (one per entity every
    /// 3 s).
    Driving,
    /// `vehicle = bridge`, driven by `examples/python/vehicle.py` (its CPU not counted), the
    /// same segments.
    Bridge,
    /// The simulator, no segments: heartbeats and state reports only.
    Idle,
}

impl Mode {
    pub fn label(self) -> &'static str {
        match self {
            Mode::Driving => "driving 3 entities (simulator)",
            Mode::Bridge => "driving 3 entities (bridge, daemon only)",
            Mode::Idle => "idle (3 entities, no segments)",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FootprintResult {
    /// [`Mode::label`].
    #[serde(default)]
    pub mode: String,
    pub window_s: f64,
    pub entities: u32,
    pub cpu_share: f64,
    pub rss_avg_kib: u64,
    pub rss_max_kib: u64,
    pub hwm_kib: u64,
    pub threads: u64,
    /// Segments the Pi acknowledged as completed during the run (it was really driving).
    pub segments_completed: Option<u64>,
    /// Voluntary context switches per second, all threads: how often it sleeps and is woken.
    #[serde(default)]
    pub wakeups_per_s: f64,
    /// The C client on libmosquitto in the same window (None: not built).
    #[serde(default)]
    pub baseline: Option<BaselineFootprint>,
    /// `pi-floor` in the same window: what any client on rumqttc pays (None: not built).
    #[serde(default)]
    pub floor: Option<BaselineFootprint>,
}

/// The baseline client's figures over the same window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BaselineFootprint {
    pub cpu_share: f64,
    pub wakeups_per_s: f64,
    pub rss_kib: u64,
}

/// Voluntary context switches of every thread of `pid` so far.
pub fn wakeups(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0;
    for t in tasks.flatten() {
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        total += status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(total)
}

/// The baseline client, next to the benchmark's binaries (`pi_baseline`), or where
/// `FLEET_BENCH_PI_BASELINE` says.
fn baseline_bin(b: &Bench) -> Option<std::path::PathBuf> {
    std::env::var_os("FLEET_BENCH_PI_BASELINE")
        .map(std::path::PathBuf::from)
        .or_else(|| Some(b.bins.join("pi_baseline")))
        .filter(|p| p.is_file())
}

fn threads(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Threads:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// `pi-floor`, next to the benchmark's binaries (built with fleet-sim).
fn floor_bin(b: &Bench) -> Option<std::path::PathBuf> {
    Some(b.bins.join("pi-floor")).filter(|p| p.is_file())
}

/// The reference vehicle (the checkout's, found from where fleet-sim was built, or where
/// `FLEET_BENCH_VEHICLE_PY` says).
fn vehicle_py() -> std::path::PathBuf {
    std::env::var_os("FLEET_BENCH_VEHICLE_PY")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python/vehicle.py")
        })
}

pub fn run(b: &Bench, window: Duration, mode: Mode) -> FootprintResult {
    eprintln!(
        "== rpi-client footprint, {}: 3 entities at 10 Hz for {window:?}",
        mode.label()
    );
    let broker = b.broker();
    let planner = if mode == Mode::Idle { "0s" } else { "3s" };
    let mut server = b.server(
        &broker,
        "footprint-server",
        &["--segment-interval", planner],
    );
    let dir = testkit::TempDir::new("footprint");
    let socket = dir.path().join("vehicle.sock");
    let socket_s = socket.display().to_string();
    let bridge_args: &[&str] = if mode == Mode::Bridge {
        &["--vehicle", "bridge", "--bridge-socket", &socket_s]
    } else {
        &[]
    };
    let mut pi = b.pi_with(&broker, "bench-foot", bridge_args);
    let mut vehicle = (mode == Mode::Bridge).then(|| {
        let py = vehicle_py();
        b.run(
            "footprint-vehicle",
            Path::new("python3"),
            &[
                py.display().to_string().as_str(),
                "--socket",
                socket_s.as_str(),
                "--entities",
                "1,2,3",
            ],
        )
    });
    let base_bin = baseline_bin(b);
    if base_bin.is_none() {
        eprintln!(
            "   baseline not built: scripts/bench.sh builds bench/baseline/pi_baseline.c \
             (needs cc and libmosquitto-dev; FLEET_BENCH_PI_BASELINE overrides the path)"
        );
    }
    let secs = (window + Duration::from_secs(10)).as_secs().to_string();
    let port = broker.port().to_string();
    let mut base = base_bin.map(|bin| {
        b.run(
            "footprint-baseline",
            &bin,
            &[
                "127.0.0.1",
                port.as_str(),
                "bench-foot-c",
                "3",
                secs.as_str(),
            ],
        )
    });
    let floor_bin = floor_bin(b);
    if floor_bin.is_none() {
        eprintln!("   pi-floor not built: cargo build --release -p fleet-sim builds it");
    }
    let mut floor = floor_bin.map(|bin| {
        b.run(
            "footprint-floor",
            &bin,
            &[
                "127.0.0.1",
                port.as_str(),
                "bench-foot-floor",
                "3",
                secs.as_str(),
            ],
        )
    });
    std::thread::sleep(Duration::from_secs(2));
    let c0 = CpuMark::take_precise(pi.pid()).expect("read rpi-client cpu");
    let w0 = wakeups(pi.pid());
    let mark = |d: &testkit::Daemon| Some((CpuMark::take_precise(d.pid())?, wakeups(d.pid())?));
    let base0 = base.as_ref().and_then(mark);
    let floor0 = floor.as_ref().and_then(mark);
    let start = Instant::now();
    let mut rss = Vec::new();
    while start.elapsed() < window {
        std::thread::sleep(Duration::from_secs(1).min(window.saturating_sub(start.elapsed())));
        if let Some(m) = pi.memory() {
            rss.push(m.rss_kib);
        }
    }
    let c1 = CpuMark::take_precise(pi.pid()).expect("read rpi-client cpu");
    let w1 = wakeups(pi.pid());
    let per_s = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => b.saturating_sub(a) as f64 / window.as_secs_f64(),
        _ => f64::NAN,
    };
    let figures = |d: &mut testkit::Daemon, at0: Option<(CpuMark, u64)>| {
        let (c0, w0) = at0?;
        let r = BaselineFootprint {
            cpu_share: c0.share_to(&CpuMark::take_precise(d.pid())?),
            wakeups_per_s: per_s(Some(w0), wakeups(d.pid())),
            rss_kib: d.memory().map_or(0, |m| m.rss_kib),
        };
        d.stop(Duration::from_secs(2));
        Some(r)
    };
    let baseline = base.as_mut().and_then(|d| figures(d, base0));
    let floor = floor.as_mut().and_then(|d| figures(d, floor0));
    let hwm = pi.memory().map(|m| m.hwm_kib).unwrap_or(0);
    let threads = threads(pi.pid());
    pi.stop(Duration::from_secs(5));
    if let Some(v) = vehicle.as_mut() {
        v.stop(Duration::from_secs(2));
    }
    let stats = stop_server(&mut server);
    let r = FootprintResult {
        mode: mode.label().into(),
        window_s: window.as_secs_f64(),
        entities: 3,
        cpu_share: c0.share_to(&c1),
        rss_avg_kib: if rss.is_empty() {
            0
        } else {
            rss.iter().sum::<u64>() / rss.len() as u64
        },
        rss_max_kib: rss.iter().copied().max().unwrap_or(0),
        hwm_kib: hwm,
        threads,
        segments_completed: stats.and_then(|s| s.segments.get("completed").copied()),
        wakeups_per_s: per_s(w0, w1),
        baseline,
        floor,
    };
    eprintln!(
        "   cpu {:.3}% of a core, {:.1} wake-ups/s, rss avg {} KiB max {} KiB, peak {} KiB, {} threads",
        r.cpu_share * 100.0,
        r.wakeups_per_s,
        r.rss_avg_kib,
        r.rss_max_kib,
        r.hwm_kib,
        r.threads
    );
    r
}

/// Sizes in bytes of the release binaries present under `dir` (`rpi-client`, `mqtt-server`).
pub fn sizes(dir: &Path) -> BTreeMap<String, u64> {
    ["rpi-client", "mqtt-server"]
        .iter()
        .filter_map(|n| {
            let m = std::fs::metadata(dir.join(n)).ok()?;
            Some((n.to_string(), m.len()))
        })
        .collect()
}

/// Whether an ELF file has no symbol table (`.symtab`), i.e. is stripped.
pub fn is_stripped(path: &Path) -> Option<bool> {
    let data = std::fs::read(path).ok()?;
    Some(!data.windows(8).any(|w| w == b".symtab\0"))
}
