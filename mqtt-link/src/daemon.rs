//! What every fleet daemon's `main` needs besides its own logic: logging to stderr that reads
//! well in journald, a shutdown channel fed by SIGINT/SIGTERM/SIGHUP, configuration loading
//! input (args + environment + files), errors printed with their cause chain, and the wall clock
//! in the protocol's unit.

use std::io::IsTerminal;

use crossbeam_channel::Receiver;
use log::LevelFilter;
use simplelog::{ConfigBuilder, LevelPadding, WriteLogger};

/// The wall clock in the wire protocol's unit: ms since the Unix epoch (0 before 1970).
/// Both daemons stamp and compare protocol timestamps with it.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Parses a log level name (`error`, `warn`, `info`, `debug`, `trace`, `off`).
pub fn parse_level(s: &str) -> Result<LevelFilter, String> {
    s.trim().parse::<LevelFilter>().map_err(|_| {
        format!("unknown log level {s:?} (use error, warn, info, debug, trace or off)")
    })
}

/// Logs go to stderr (stdout is for the server's status table). Under systemd
/// (`JOURNAL_STREAM` set) lines carry no timestamp, since journald adds its own; there are
/// never colours, so nothing odd lands in a log file.
pub fn init_logging(level: LevelFilter) {
    let mut b = ConfigBuilder::new();
    b.set_thread_level(LevelFilter::Off)
        .set_target_level(LevelFilter::Off)
        .set_location_level(LevelFilter::Off)
        .set_level_padding(LevelPadding::Off);
    // rumqttc logs every connection failure at warn/error with no rate limit; the link logs
    // its own rate-limited line instead.
    b.add_filter_ignore_str("rumqttc");
    if std::env::var_os("JOURNAL_STREAM").is_some() && !std::io::stderr().is_terminal() {
        b.set_time_level(LevelFilter::Off);
    } else {
        b.set_time_format_rfc3339();
    }
    // A second init (tests drive `run` in-process many times) is harmless.
    let _ = WriteLogger::init(level, b.build(), std::io::stderr());
}

/// A channel that receives `()` on SIGINT, SIGTERM or SIGHUP. A second signal while the
/// daemon is shutting down ends the process at once (exit 130), in case something hangs.
pub fn shutdown_on_signals() -> Result<Receiver<()>, ctrlc::Error> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let mut seen = false;
    ctrlc::set_handler(move || {
        if seen {
            std::process::exit(130);
        }
        seen = true;
        let _ = tx.try_send(());
    })?;
    Ok(rx)
}

/// What a program's configuration is read from (`common::conf::load`): its arguments after
/// the program name and its environment. Each program's loader takes these as values, so its
/// tests pass their own; `main` passes [`ProcessInput::read`].
#[derive(Debug, Clone, Default)]
pub struct ProcessInput {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl ProcessInput {
    /// This process's arguments and environment.
    pub fn read() -> ProcessInput {
        ProcessInput {
            args: std::env::args().skip(1).collect(),
            env: std::env::vars().collect(),
        }
    }
}

/// The most any daemon reads of a config, password or PEM file. Real ones are a few hundred
/// bytes (a certificate chain a few KiB); the cap turns `/dev/zero`, a log file or a disk
/// image named by mistake into a clear error instead of an out-of-memory kill.
pub const MAX_FILE_BYTES: u64 = 64 * 1024;

/// Reads at most [`MAX_FILE_BYTES`] of `path`; a longer file (or an endless one such as
/// `/dev/zero`) is an [`std::io::ErrorKind::InvalidData`] error that says so.
pub fn read_bytes(path: impl AsRef<std::path::Path>) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "larger than {} KiB: not a config file",
                MAX_FILE_BYTES / 1024
            ),
        ));
    }
    Ok(buf)
}

/// The hostname: the first line of `/etc/hostname`, else `/proc/sys/kernel/hostname`. The
/// Pi's client id defaults to it, the server's to `mqtt-server-{hostname}`.
pub fn system_hostname() -> Result<String, String> {
    for path in ["/etc/hostname", "/proc/sys/kernel/hostname"] {
        if let Ok(text) = read_file(path) {
            if let Some(line) = text
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'))
            {
                return Ok(line.to_owned());
            }
        }
    }
    Err("the hostname could not be read from /etc/hostname or /proc/sys/kernel/hostname".into())
}

/// The default client id `make(hostname)` of a daemon whose `client_id` is not set: the Pi's
/// is the hostname, the server's `mqtt-server-{hostname}`. An error naming `client_id` when the
/// hostname cannot be read or makes no valid id.
pub fn client_id_from_hostname(
    hostname: impl FnOnce() -> Result<String, String>,
    make: impl FnOnce(&str) -> String,
) -> Result<String, common::ConfigError> {
    let host = hostname().map_err(|m| {
        common::ConfigError::new(
            "client_id",
            "",
            format!("not set, and {m}; set one with --client-id ID"),
        )
    })?;
    let id = make(&host);
    common::topic::validate_client_id(&id).map_err(|e| {
        let what = if id == host {
            format!("the hostname {host:?}")
        } else {
            format!("{id:?} (from the hostname {host:?})")
        };
        common::ConfigError::new(
            "client_id",
            "hostname",
            format!(
                "not set, and {what} is not a valid client id ({e}); \
                 set one with --client-id ID (or client_id in the config file)"
            ),
        )
    })?;
    Ok(id)
}

/// Reads a config file from the file system (the `read_file` of `common::conf::load`):
/// [`read_bytes`] as UTF-8 text.
pub fn read_file(path: &str) -> std::io::Result<String> {
    String::from_utf8(read_bytes(path)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// `error: cause: cause`, for printing a fatal error.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let cs = c.to_string();
        if !s.contains(&cs) {
            s.push_str(": ");
            s.push_str(&cs);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn file_reads_are_capped() {
        let e = read_file("/dev/zero").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("larger than 64 KiB"), "{e}");
        assert_eq!(read_file("/dev/null").unwrap(), "");
        assert_eq!(
            read_file("/nonexistent/x.conf").unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}
