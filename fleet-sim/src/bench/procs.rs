//! The benchmark's child processes (server, Pi client, simulator, baseline subscriber), run by
//! testkit's process runner with a log file each; the baseline's stdout only counted per
//! topic leaf; CPU shares of a process and of the whole machine between two readings.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use testkit::process::{Daemon, Line, Spawn, Stdout, Stream};
use testkit::procfs;

/// Messages per topic leaf counted from `mosquitto_sub -F '%t'` output (one topic per line).
#[derive(Debug, Default)]
pub struct TopicCounts {
    pub heartbeat: AtomicU64,
    pub state: AtomicU64,
    pub status: AtomicU64,
    pub ack: AtomicU64,
    pub other: AtomicU64,
}

impl TopicCounts {
    fn count(&self, line: &[u8]) {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let c = if line.ends_with(b"/state") {
            &self.state
        } else if line.ends_with(b"/heartbeat") {
            &self.heartbeat
        } else if line.ends_with(b"/status") {
            &self.status
        } else if line.ends_with(b"/ack") {
            &self.ack
        } else {
            &self.other
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    /// A child's stdout counted here; the line `ready` goes on its channel instead.
    pub fn stdout(counts: Arc<TopicCounts>, ready: &'static str) -> Stdout {
        Stdout::Filter(Box::new(move |line| {
            if line == ready.as_bytes() {
                true
            } else {
                counts.count(line);
                false
            }
        }))
    }
}

/// Starts `bin args` as the benchmark's child `name`: stdout as `out` says, stderr lines on a
/// channel, both in `log_dir/<name>.log` with the command line and the benchmark's notes.
pub fn spawn<S: AsRef<str>>(
    name: &str,
    bin: &Path,
    args: &[S],
    out: Stdout,
    log_dir: &Path,
) -> Daemon {
    Spawn::new(bin)
        .args(args)
        .stdout(out)
        .stderr_lines()
        .log_to(&log_dir.join(format!("{name}.log")))
        .start()
}

/// CPU share of one core used by a process between two readings.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    at: Instant,
    cpu: Duration,
}

impl CpuMark {
    pub fn take(p: &Daemon) -> Option<CpuMark> {
        Some(CpuMark {
            at: Instant::now(),
            cpu: p.cpu()?,
        })
    }
    pub fn take_pid(pid: u32) -> Option<CpuMark> {
        Some(CpuMark {
            at: Instant::now(),
            cpu: procfs::cpu_time(pid)?,
        })
    }
    /// The on-CPU time of the threads alive now, to the nanosecond (the sum of
    /// `/proc/PID/task/*/schedstat`), where /proc/PID/stat counts 10 ms ticks: for a process
    /// that uses 0.1-0.3% of a core, a 60 s window is 6-18 ticks. Threads that exit during the
    /// window are not counted: for daemons whose threads live as long as they do.
    pub fn take_precise(pid: u32) -> Option<CpuMark> {
        let at = Instant::now();
        let mut ns: u64 = 0;
        for t in std::fs::read_dir(format!("/proc/{pid}/task"))
            .ok()?
            .flatten()
        {
            let text = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
            ns += text
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
        Some(CpuMark {
            at,
            cpu: Duration::from_nanos(ns),
        })
    }
    /// Share of one core from `self` to `later` (1.0 = one core busy all the time).
    pub fn share_to(&self, later: &CpuMark) -> f64 {
        let wall = later.at.saturating_duration_since(self.at).as_secs_f64();
        if wall <= 0.0 {
            return 0.0;
        }
        later.cpu.saturating_sub(self.cpu).as_secs_f64() / wall
    }
}

/// Whole-machine busy share (all cores, 0..=1) from /proc/stat.
#[derive(Debug, Clone, Copy)]
pub struct MachineMark {
    busy: u64,
    total: u64,
}

impl MachineMark {
    pub fn take() -> Option<MachineMark> {
        let s = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu = s.lines().next()?;
        let v: Vec<u64> = cpu
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal
        let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
        let total: u64 = v.iter().take(8).sum();
        Some(MachineMark {
            busy: total - idle,
            total,
        })
    }
    pub fn busy_to(&self, later: &MachineMark) -> f64 {
        let t = later.total.saturating_sub(self.total);
        if t == 0 {
            return 0.0;
        }
        later.busy.saturating_sub(self.busy) as f64 / t as f64
    }
}

/// `target/<profile>` holding the workspace binaries: next to the running `fleet-bench`.
pub fn bin_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("target/release"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_topics_by_leaf() {
        let c = TopicCounts::default();
        for l in [
            &b"rpi/a/state\n"[..],
            b"rpi/a/state",
            b"rpi/b/heartbeat\n",
            b"rpi/b/ack\n",
            b"rpi/b/status\n",
            b"bench/x\n",
        ] {
            c.count(l);
        }
        assert_eq!(TopicCounts::get(&c.state), 2);
        assert_eq!(TopicCounts::get(&c.heartbeat), 1);
        assert_eq!(TopicCounts::get(&c.ack), 1);
        assert_eq!(TopicCounts::get(&c.status), 1);
        assert_eq!(TopicCounts::get(&c.other), 1);
    }
}
