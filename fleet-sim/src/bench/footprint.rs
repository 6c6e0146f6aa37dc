//! The Pi's footprint: a real release `rpi-client` with 3 entities at 10 Hz against the local
//! broker, with the server's demo planner sending it segments, measured over a window (RSS
//! sampled every second, peak from VmHWM, CPU from /proc/PID/stat); and the sizes of the
//! stripped release binaries.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::procs::CpuMark;
use super::{Bench, stop_server};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FootprintResult {
    pub window_s: f64,
    pub entities: u32,
    pub cpu_share: f64,
    pub rss_avg_kib: u64,
    pub rss_max_kib: u64,
    pub hwm_kib: u64,
    pub threads: u64,
    /// Segments the Pi acknowledged as completed during the run (it was really driving).
    pub segments_completed: Option<u64>,
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

pub fn run(b: &Bench, window: Duration) -> FootprintResult {
    eprintln!("== rpi-client footprint: 3 entities at 10 Hz for {window:?}");
    let broker = b.broker();
    let mut server = b.server(&broker, "footprint-server", &["--segment-interval", "3s"]);
    let mut pi = b.pi(&broker, "bench-foot");
    std::thread::sleep(Duration::from_secs(2));
    let c0 = CpuMark::take(&pi).expect("read rpi-client cpu");
    let start = Instant::now();
    let mut rss = Vec::new();
    while start.elapsed() < window {
        std::thread::sleep(Duration::from_secs(1).min(window.saturating_sub(start.elapsed())));
        if let Some(m) = pi.memory() {
            rss.push(m.rss_kib);
        }
    }
    let c1 = CpuMark::take(&pi).expect("read rpi-client cpu");
    let hwm = pi.memory().map(|m| m.hwm_kib).unwrap_or(0);
    let threads = threads(pi.pid());
    pi.stop(Duration::from_secs(5));
    let stats = stop_server(&mut server);
    let r = FootprintResult {
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
    };
    eprintln!(
        "   cpu {:.3}% of a core, rss avg {} KiB max {} KiB, peak {} KiB, {} threads",
        r.cpu_share * 100.0,
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
