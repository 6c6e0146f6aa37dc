//! Child processes of the tests and of the benchmark, the one process runner of the
//! workspace: start a binary with a clean environment ([`Spawn`]), read its stdout lines
//! time-stamped on arrival (or hand them to a counter), keep its stderr in a log file (and,
//! when asked, as lines too), send signals, wait for the exit or stop it, read its CPU time and
//! memory, and show its stderr log when a test fails.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::TempDir;
use crate::procfs::{self, Memory};

/// Settings prefixes removed from a child's environment: tests and the benchmark choose
/// every setting, no developer environment leaks in.
const OWN_ENV_PREFIXES: [&str; 3] = ["RPI_CLIENT_", "MQTT_SERVER_", "FLEET_SIM_"];

/// One line of output and when it was read.
#[derive(Debug, Clone)]
pub struct Line {
    pub at: Instant,
    pub text: String,
}

/// A filter of a child's stdout lines (their bytes, without the newline): true to pass one on.
pub type LineFilter = Box<dyn FnMut(&[u8]) -> bool + Send>;

/// What a reader thread does with each line (its bytes, without the newline).
type EachLine = Box<dyn FnMut(&[u8]) + Send>;

/// What to do with a child's stdout.
pub enum Stdout {
    /// Time-stamped lines on a channel ([`Daemon::wait_stdout`]).
    Lines,
    /// Each line (its bytes, without the newline) to a function on the reader thread, for
    /// output too fast for a channel of strings; the lines it returns true for go on the
    /// channel too.
    Filter(LineFilter),
}

/// One of a child's two outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// How to start a [`Daemon`]. Tests use [`Daemon::spawn`]; the benchmark names the log file
/// and reads stderr lines.
pub struct Spawn {
    bin: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: Option<PathBuf>,
    stdout: Stdout,
    stderr_lines: bool,
}

impl Spawn {
    pub fn new(bin: &Path) -> Spawn {
        Spawn {
            bin: bin.to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            log: None,
            stdout: Stdout::Lines,
            stderr_lines: false,
        }
    }

    pub fn args<S: AsRef<str>>(mut self, args: &[S]) -> Spawn {
        self.args.extend(args.iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Spawn {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// A log file at `path` with the command line, every stdout and stderr line tagged with
    /// its stream, and [`Daemon::note`]s (without it: the raw stderr in a temp dir).
    pub fn log_to(mut self, path: &Path) -> Spawn {
        self.log = Some(path.to_owned());
        self
    }

    pub fn stdout(mut self, stdout: Stdout) -> Spawn {
        self.stdout = stdout;
        self
    }

    /// Also send the stderr lines, time-stamped, to a channel ([`Daemon::wait_line`]).
    pub fn stderr_lines(mut self) -> Spawn {
        self.stderr_lines = true;
        self
    }

    pub fn start(self) -> Daemon {
        let (dir, path, tagged) = match &self.log {
            Some(p) => {
                if let Some(parent) = p.parent() {
                    let _ = fs::create_dir_all(parent);
                }
                (None, p.clone(), true)
            }
            None => {
                let dir = TempDir::new("daemon");
                let p = dir.path().join("stderr.log");
                (Some(dir), p, false)
            }
        };
        let file =
            File::create(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        let log = Arc::new(Log {
            path,
            file: Mutex::new(file),
            tagged,
        });
        if tagged {
            let mut f = log.file.lock().unwrap_or_else(|p| p.into_inner());
            let _ = writeln!(f, "$ {} {}", self.bin.display(), self.args.join(" "));
        }
        // Without tags or a channel, the child writes its stderr straight to the log.
        let pipe_stderr = tagged || self.stderr_lines;
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        if pipe_stderr {
            cmd.stderr(Stdio::piped());
        } else {
            let f = log.file.lock().unwrap_or_else(|p| p.into_inner());
            cmd.stderr(f.try_clone().expect("clone the stderr log"));
        }
        for (k, _) in std::env::vars() {
            if OWN_ENV_PREFIXES.iter().any(|p| k.starts_with(p)) {
                cmd.env_remove(k);
            }
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display()));
        let name = self
            .bin
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (out_tx, out_rx) = crossbeam_channel::unbounded();
        let (err_tx, err_rx) = crossbeam_channel::unbounded();
        let mut readers = Vec::new();
        let out = child.stdout.take().expect("piped stdout");
        let each_out: EachLine = match self.stdout {
            Stdout::Lines => {
                let log = log.clone();
                Box::new(move |l| {
                    if log.tagged {
                        log.write_line("stdout", l);
                    }
                    send(&out_tx, l);
                })
            }
            Stdout::Filter(mut f) => Box::new(move |l| {
                if f(l) {
                    send(&out_tx, l);
                }
            }),
        };
        readers.push(reader(out, format!("{name}-stdout"), each_out));
        if pipe_stderr {
            let err = child.stderr.take().expect("piped stderr");
            let log = log.clone();
            let lines = self.stderr_lines;
            readers.push(reader(
                err,
                format!("{name}-stderr"),
                Box::new(move |l| {
                    log.write_line("stderr", l);
                    if lines {
                        send(&err_tx, l);
                    }
                }),
            ));
        }
        Daemon {
            name,
            child,
            stdout: out_rx,
            stderr: err_rx,
            readers,
            log,
            _dir: dir,
            status: None,
        }
    }
}

/// The log file of a child: its raw stderr, or (when `tagged`) the command line, both streams
/// tagged and the runner's notes.
struct Log {
    path: PathBuf,
    file: Mutex<File>,
    tagged: bool,
}

impl Log {
    fn write_line(&self, tag: &str, line: &[u8]) {
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if self.tagged {
            let _ = write!(f, "{tag}: ");
        }
        let _ = f.write_all(line);
        let _ = f.write_all(b"\n");
    }
}

fn send(tx: &Sender<Line>, line: &[u8]) {
    let _ = tx.send(Line {
        at: Instant::now(),
        text: String::from_utf8_lossy(line).into_owned(),
    });
}

/// A thread reading `stream` line by line (bytes, without the newline) into `each`.
fn reader(stream: impl Read + Send + 'static, name: String, mut each: EachLine) -> JoinHandle<()> {
    thread::Builder::new()
        .name(name)
        .spawn(move || {
            let mut r = BufReader::with_capacity(1 << 16, stream);
            let mut buf = Vec::with_capacity(256);
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => each(buf.strip_suffix(b"\n").unwrap_or(&buf)),
                }
            }
        })
        .expect("spawn an output reader")
}

/// The first line on `rx` for which `pred` holds, within `timeout`.
fn wait_line(
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

/// A running child process. Killed on drop; its stderr is printed if the test is failing.
pub struct Daemon {
    name: String,
    child: Child,
    stdout: Receiver<Line>,
    /// Empty unless started with [`Spawn::stderr_lines`].
    stderr: Receiver<Line>,
    readers: Vec<JoinHandle<()>>,
    log: Arc<Log>,
    /// Holds the log when no path was given; removed with the daemon.
    _dir: Option<TempDir>,
    status: Option<ExitStatus>,
}

impl Daemon {
    /// Runs `bin` with `args` and extra environment; stderr goes to a file, stdout to lines.
    pub fn spawn(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        env.iter()
            .fold(Spawn::new(bin).args(args), |s, (k, v)| s.env(k, v))
            .start()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The stdout lines printed so far and not yet taken.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.try_iter().map(|l| l.text).collect()
    }

    /// Waits for a stdout line for which `pred` holds.
    pub fn wait_stdout(&self, timeout: Duration, pred: impl FnMut(&str) -> bool) -> Option<String> {
        self.wait_line(Stream::Stdout, timeout, pred)
            .map(|l| l.text)
    }

    /// Waits for a line of `stream` for which `pred` holds, with the time it was read
    /// (stderr lines only with [`Spawn::stderr_lines`]).
    pub fn wait_line(
        &self,
        stream: Stream,
        timeout: Duration,
        pred: impl FnMut(&str) -> bool,
    ) -> Option<Line> {
        let rx = match stream {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        };
        wait_line(rx, timeout, pred)
    }

    /// The stderr lines read so far and not yet taken ([`Spawn::stderr_lines`] only).
    pub fn stderr_lines(&self) -> Vec<Line> {
        self.stderr.try_iter().collect()
    }

    /// Everything in the log so far: the stderr (see [`Spawn::log_to`] for a tagged log).
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.log.path).unwrap_or_default()
    }

    pub fn stderr_path(&self) -> PathBuf {
        self.log.path.clone()
    }

    /// A line of the runner's own in a [`Spawn::log_to`] log.
    pub fn note(&self, text: &str) {
        self.log.write_line("note", text.as_bytes());
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`, `STOP`, `CONT`); false if `kill` failed
    /// (the process is gone).
    pub fn try_signal(&self, sig: &str) -> bool {
        Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Sends a signal by name; panics if the process is gone.
    pub fn signal(&self, sig: &str) {
        assert!(self.try_signal(sig), "kill -{sig} {} failed", self.pid());
    }

    /// Waits for the process to exit (and its output to be read); None if it is still
    /// running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.status.is_some() {
            return self.status;
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                self.exited(s);
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// SIGTERM and the exit status; panics (showing the log) if it has not exited within
    /// `timeout`.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit(timeout).unwrap_or_else(|| {
            panic!(
                "{} did not exit within {timeout:?} of SIGTERM\n{}",
                self.name,
                self.stderr()
            )
        })
    }

    /// SIGTERM, then kill -9 if it has not exited within `grace` (noted in the log).
    pub fn stop(&mut self, grace: Duration) {
        if self.status.is_some() {
            return;
        }
        self.try_signal("TERM");
        if self.wait_exit(grace).is_none() {
            self.note(&format!("did not exit {grace:?} after SIGTERM: killed"));
            self.kill9();
        }
    }

    /// kill -9 and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        if let Ok(s) = self.child.wait() {
            self.exited(s);
        }
    }

    fn exited(&mut self, status: ExitStatus) {
        self.status = Some(status);
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }

    /// Resident set size in KiB, from /proc.
    pub fn rss_kib(&self) -> Option<u64> {
        procfs::rss_kib(self.pid())
    }

    /// Resident memory and its peak, from /proc.
    pub fn memory(&self) -> Option<Memory> {
        procfs::memory(self.pid())
    }

    /// User + system CPU time so far, from /proc.
    pub fn cpu(&self) -> Option<Duration> {
        procfs::cpu_time(self.pid())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            eprintln!(
                "---- {} stderr ----\n{}---- end of {} stderr ----",
                self.name,
                self.stderr(),
                self.name
            );
        }
    }
}
