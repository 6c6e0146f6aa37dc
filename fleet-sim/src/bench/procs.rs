//! Child processes of the benchmark (server, Pi client, simulator, baseline subscriber): their
//! output lines time-stamped on arrival (or, for the baseline, only counted per topic leaf),
//! copied to a log file, with signals, exit waits and CPU/memory readings from /proc.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::procfs::{self, Memory};

/// One line of output and when the benchmark read it.
#[derive(Debug, Clone)]
pub struct Line {
    pub at: Instant,
    pub text: String,
}

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
}

/// What to do with a child's stdout.
pub enum Stdout {
    /// Time-stamped lines on a channel (and in the log).
    Lines,
    /// Count topic lines; a line equal to `ready` is sent on the channel instead.
    CountTopics(Arc<TopicCounts>, &'static str),
}

pub struct Proc {
    pub name: String,
    child: Child,
    pub stdout: Receiver<Line>,
    pub stderr: Receiver<Line>,
    readers: Vec<JoinHandle<()>>,
    /// Every stdout/stderr line seen (not for counted stdout), for the log file.
    log: Arc<Mutex<File>>,
    exited: bool,
}

fn reader(
    stream: impl Read + Send + 'static,
    tag: &'static str,
    tx: Sender<Line>,
    log: Arc<Mutex<File>>,
) -> JoinHandle<()> {
    thread::Builder::new()
        .name(format!("bench-{tag}"))
        .spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(text) = line else { break };
                let at = Instant::now();
                if let Ok(mut f) = log.lock() {
                    let _ = writeln!(f, "{tag}: {text}");
                }
                let _ = tx.send(Line { at, text });
            }
        })
        .expect("spawn an output reader")
}

fn counter(
    stream: impl Read + Send + 'static,
    counts: Arc<TopicCounts>,
    ready: &'static str,
    tx: Sender<Line>,
) -> JoinHandle<()> {
    thread::Builder::new()
        .name("bench-count".into())
        .spawn(move || {
            let mut r = BufReader::with_capacity(1 << 16, stream);
            let mut buf = Vec::with_capacity(256);
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                if buf.strip_suffix(b"\n").unwrap_or(&buf) == ready.as_bytes() {
                    let _ = tx.send(Line {
                        at: Instant::now(),
                        text: ready.to_owned(),
                    });
                } else {
                    counts.count(&buf);
                }
            }
        })
        .expect("spawn a topic counter")
}

impl Proc {
    /// Starts `bin args`, with `MQTT_SERVER_*`/`RPI_CLIENT_*`/`FLEET_SIM_*` removed from the
    /// environment so only the benchmark's settings count.
    pub fn spawn(name: &str, bin: &Path, args: &[String], out: Stdout, log_dir: &Path) -> Proc {
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, _) in std::env::vars() {
            if k.starts_with("RPI_CLIENT_")
                || k.starts_with("MQTT_SERVER_")
                || k.starts_with("FLEET_SIM_")
            {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        let _ = std::fs::create_dir_all(log_dir);
        let log_path = log_dir.join(format!("{name}.log"));
        let log =
            Arc::new(Mutex::new(File::create(&log_path).unwrap_or_else(|e| {
                panic!("cannot create {}: {e}", log_path.display())
            })));
        if let Ok(mut f) = log.lock() {
            let _ = writeln!(f, "$ {} {}", bin.display(), args.join(" "));
        }
        let (out_tx, out_rx) = crossbeam_channel::unbounded();
        let (err_tx, err_rx) = crossbeam_channel::unbounded();
        let so = child.stdout.take().expect("piped stdout");
        let se = child.stderr.take().expect("piped stderr");
        let mut readers = vec![reader(se, "stderr", err_tx, log.clone())];
        readers.push(match out {
            Stdout::Lines => reader(so, "stdout", out_tx, log.clone()),
            Stdout::CountTopics(c, ready) => counter(so, c, ready, out_tx),
        });
        Proc {
            name: name.to_owned(),
            child,
            stdout: out_rx,
            stderr: err_rx,
            readers,
            log,
            exited: false,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn cpu(&self) -> Option<Duration> {
        procfs::cpu_time(self.pid())
    }

    pub fn memory(&self) -> Option<Memory> {
        procfs::memory(self.pid())
    }

    /// The first line on `rx` (stdout or stderr) for which `pred` holds, within `timeout`.
    pub fn wait_line(
        rx: &Receiver<Line>,
        timeout: Duration,
        mut pred: impl FnMut(&str) -> bool,
    ) -> Option<Line> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if pred(&l.text) => return Some(l),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status();
    }

    /// Waits for the exit and for the output readers to drain; false on timeout.
    pub fn wait(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                self.exited = true;
                for r in self.readers.drain(..) {
                    let _ = r.join();
                }
                return true;
            }
            thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub fn stop(&mut self, grace: Duration) {
        if self.exited {
            return;
        }
        self.signal("TERM");
        if !self.wait(grace) {
            self.note(&format!("did not exit {grace:?} after SIGTERM: killed"));
            self.kill9();
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.exited = true;
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }

    /// A line of the benchmark's own in the process's log.
    pub fn note(&self, text: &str) {
        if let Ok(mut f) = self.log.lock() {
            let _ = writeln!(f, "bench: {text}");
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// CPU share of one core used by a process between two readings.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    at: Instant,
    cpu: Duration,
}

impl CpuMark {
    pub fn take(p: &Proc) -> Option<CpuMark> {
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
