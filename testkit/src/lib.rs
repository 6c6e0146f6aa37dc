//! Dev-only test harness shared by every crate's integration tests: a real `mosquitto` per
//! test ([`broker`]) or a NATS cluster with MQTT listeners ([`nats`]), MQTT probes to publish and watch topics ([`probe`]), and daemon child
//! processes with signals and captured logs ([`process`]), the daemon binaries built on
//! demand ([`bins`]) and started against a broker ([`daemons`]), a process's CPU time and
//! memory ([`procfs`]) sampled over time ([`rss`]), the mqtt-server status table read from
//! its stdout ([`table`]), a tiny HTTP client for its operator interface ([`http`]), and a
//! headless Chromium driven over WebDriver ([`webdriver`]).

pub mod bins;
pub mod broker;
pub mod daemons;
pub mod http;
pub mod nats;
pub mod probe;
pub mod process;
pub mod procfs;
pub mod rss;
pub mod table;
pub mod webdriver;

pub use broker::Broker;
pub use daemons::{count_lines, spawn_pi, spawn_server};
pub use nats::NatsCluster;
pub use probe::Probe;
pub use process::Daemon;
pub use rss::RssSampler;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

/// A fresh directory under the system temp dir, removed on drop unless the test panicked.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "fleet-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Polls `f` every 5 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: std::time::Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
