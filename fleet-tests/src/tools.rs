//! External tools the system tests run (openssl, mosquitto_passwd, systemd-analyze, the
//! project's scripts): finding them with a clear "install this package" failure, running a
//! command with a time limit, and whether the tests run as root.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The tool's path if it is on `PATH` (or in an `sbin` directory, where Debian puts mosquitto).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .filter(|d| !d.is_empty())
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// The tool's path, or a panic naming the Debian package that provides it. Tests never skip.
pub fn require_tool(name: &str, debian_package: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|| {
        panic!(
            "`{name}` is not installed, and these tests need it: install the Debian package \
             `{debian_package}` (apt-get install {debian_package}); scripts/install-deps.sh \
             (`make deps`) installs mosquitto, mosquitto-clients and openssl"
        )
    })
}

/// Whether the effective user is root (mosquitto then drops privileges to its own user
/// unless the config says `user root`).
pub fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// What a finished command printed.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// stdout and stderr together, for failure messages.
    pub fn text(&self) -> String {
        format!(
            "exit: {}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` with `stdin` as its input and waits at most `timeout` (then kills it and
/// panics: every test is bounded in time).
pub fn run(cmd: &mut Command, stdin: &[u8], timeout: Duration) -> Output {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let reader = |mut r: Box<dyn Read + Send>| {
        thread::Builder::new()
            .name("tool-output".into())
            .spawn(move || {
                let mut buf = Vec::new();
                let _ = r.read_to_end(&mut buf);
                String::from_utf8_lossy(&buf).into_owned()
            })
            .expect("spawn output reader")
    };
    let out = reader(Box::new(child.stdout.take().expect("piped stdout")));
    let err = reader(Box::new(child.stderr.take().expect("piped stderr")));
    {
        use std::io::Write;
        let mut input = child.stdin.take().expect("piped stdin");
        // A command that does not read its input closes the pipe: not an error here.
        let _ = input.write_all(stdin);
    }
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for command") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{shown} did not finish within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}
