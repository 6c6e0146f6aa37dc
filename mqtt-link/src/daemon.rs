//! What every fleet daemon's `main` needs besides its own logic: logging to stderr that reads
//! well in journald, a shutdown channel fed by SIGINT/SIGTERM/SIGHUP, configuration loading
//! from args + environment + file, errors printed with their cause chain, and the wall clock
//! in the protocol's unit.

use std::io::IsTerminal;

use common::ConfigError;
use common::conf::{Loaded, Schema};
use crossbeam_channel::Receiver;
use log::LevelFilter;
use simplelog::{ConfigBuilder, LevelPadding, WriteLogger};

/// Parses a log level name (`error`, `warn`, `info`, `debug`, `trace`, `off`).
/// The wall clock in the wire protocol's unit: ms since the Unix epoch (0 before 1970).
/// Both daemons stamp and compare protocol timestamps with it.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

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

/// Reads args (after the program name), the environment and the config file for `schema`.
pub fn load_config(
    schema: &Schema<'_>,
    apply: impl FnMut(&str, &str) -> Result<(), String>,
) -> Result<Loaded, ConfigError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env: Vec<(String, String)> = std::env::vars().collect();
    common::conf::load(schema, &args, &env, common::conf::read_file, apply)
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
