//! The mqtt-server status table as the tests read it from the daemon's stdout (format in
//! mqtt-server/src/table.rs): parsing one table, and reading the next one from a running
//! [`Daemon`].
//!
//! ```text
//! === Active Clients: 1 ===
//!   pi-a: last_hb=127ms ago, entities=2, lost_hb=0, clock_offset=+3ms, session=1764000000
//!     Entity 1: pos=(123, 456), angle=45000, vel=(250, -250), seg=7@50.0%, age=12ms
//! === Offline Clients: 1 ===
//!   pi-b: offline (will) for 3.2s, entities=2, lost_hb=0
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use testkit::Daemon;

/// One entity line of an active Pi.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityRow {
    pub x: i32,
    pub y: i32,
    /// The `seg=` column: the segment id, or None when idle.
    pub segment: Option<u32>,
    pub age_ms: u64,
}

/// One active Pi.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ActivePi {
    pub last_hb_ms: u64,
    pub entities_count: usize,
    pub lost_hb: u64,
    /// None while unknown (`?`).
    pub clock_offset_ms: Option<i64>,
    pub session: Option<u32>,
    pub entities: BTreeMap<u32, EntityRow>,
}

/// One whole table.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub active_count: usize,
    pub active: BTreeMap<String, ActivePi>,
    pub offline_count: usize,
    /// Pi id -> the reason in parentheses (`will`, `clean shutdown`, ...).
    pub offline: BTreeMap<String, String>,
    /// The text as printed, for failure messages.
    pub text: String,
}

/// The value after `key` up to the next `,` or space (`last_hb=127ms ago` -> `127ms`).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(key)? + key.len();
    let rest = &line[start..];
    Some(&rest[..rest.find([',', ' ']).unwrap_or(rest.len())])
}

fn ms(v: &str) -> Option<u64> {
    v.strip_suffix("ms")?.parse().ok()
}

/// Parses one table; an error names the line it did not understand.
pub fn parse(text: &str) -> Result<Table, String> {
    let mut t = Table {
        text: text.to_owned(),
        ..Table::default()
    };
    let mut section = "";
    let mut current: Option<String> = None;
    for line in text.lines() {
        let bad = || format!("unexpected status table line {line:?} in:\n{text}");
        if let Some(n) = line
            .strip_prefix("=== Active Clients: ")
            .and_then(|r| r.strip_suffix(" ==="))
        {
            t.active_count = n.parse().map_err(|_| bad())?;
            section = "active";
        } else if let Some(n) = line
            .strip_prefix("=== Offline Clients: ")
            .and_then(|r| r.strip_suffix(" ==="))
        {
            t.offline_count = n.parse().map_err(|_| bad())?;
            section = "offline";
        } else if line.trim().is_empty() || line.starts_with("  ... and ") {
        } else if let Some(rest) = line.strip_prefix("    Entity ") {
            let pi = current.as_ref().ok_or_else(bad)?;
            let (id, rest) = rest.split_once(": ").ok_or_else(bad)?;
            let (x, y) = rest
                .strip_prefix("pos=(")
                .and_then(|r| r.split_once(')'))
                .and_then(|(p, _)| p.split_once(", "))
                .ok_or_else(bad)?;
            let seg = field(line, "seg=").ok_or_else(bad)?;
            let segment = if seg == "idle" {
                None
            } else {
                let (id, _) = seg.split_once('@').ok_or_else(bad)?;
                Some(id.parse().map_err(|_| bad())?)
            };
            let row = EntityRow {
                x: x.parse().map_err(|_| bad())?,
                y: y.parse().map_err(|_| bad())?,
                segment,
                age_ms: field(line, "age=").and_then(ms).ok_or_else(bad)?,
            };
            let id: u32 = id.parse().map_err(|_| bad())?;
            t.active
                .get_mut(pi)
                .ok_or_else(bad)?
                .entities
                .insert(id, row);
        } else if let Some(rest) = line.strip_prefix("  ") {
            let (id, rest) = rest.split_once(": ").ok_or_else(bad)?;
            match section {
                "active" => {
                    let num = |k: &str| field(rest, k).and_then(|v| v.parse::<u64>().ok());
                    let pi = ActivePi {
                        last_hb_ms: field(rest, "last_hb=").and_then(ms).ok_or_else(bad)?,
                        entities_count: num("entities=").ok_or_else(bad)? as usize,
                        lost_hb: num("lost_hb=").ok_or_else(bad)?,
                        clock_offset_ms: match field(rest, "clock_offset=").ok_or_else(bad)? {
                            "?" => None,
                            v => Some(
                                v.strip_suffix("ms")
                                    .and_then(|v| v.trim_start_matches('+').parse().ok())
                                    .ok_or_else(bad)?,
                            ),
                        },
                        session: field(rest, "session=").and_then(|v| v.parse().ok()),
                        entities: BTreeMap::new(),
                    };
                    t.active.insert(id.to_owned(), pi);
                    current = Some(id.to_owned());
                }
                "offline" => {
                    let reason = rest
                        .strip_prefix("offline (")
                        .and_then(|r| r.split_once(')'))
                        .map(|(r, _)| r)
                        .ok_or_else(bad)?;
                    t.offline.insert(id.to_owned(), reason.to_owned());
                    current = None;
                }
                _ => return Err(bad()),
            }
        } else {
            return Err(bad());
        }
    }
    if section != "offline" {
        return Err(format!("incomplete status table:\n{text}"));
    }
    Ok(t)
}

/// Reads the next whole table the server prints (skipping anything before a table header),
/// or None if none is complete within `timeout`. Panics on a table it cannot parse.
pub fn next_table(server: &Daemon, timeout: Duration) -> Option<Table> {
    let mut lines: Vec<String> = Vec::new();
    server.wait_stdout(timeout, |l| {
        if lines.is_empty() && !l.starts_with("=== Active Clients: ") {
            return false;
        }
        if l.is_empty() {
            return true;
        }
        lines.push(l.to_owned());
        false
    })?;
    Some(parse(&lines.join("\n")).unwrap_or_else(|e| panic!("{e}")))
}

/// Reads tables until one satisfies `pred`, within `timeout`. Err carries the last table
/// read (if any), for the failure message.
pub fn wait_table(
    server: &Daemon,
    timeout: Duration,
    mut pred: impl FnMut(&Table) -> bool,
) -> Result<Table, Option<Table>> {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(last);
        }
        match next_table(server, left) {
            Some(t) if pred(&t) => return Ok(t),
            Some(t) => last = Some(t),
            None => return Err(last),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_format() {
        let text = "\
=== Active Clients: 1 ===
  pi-a: last_hb=127ms ago, entities=2, lost_hb=4, clock_offset=-3ms, session=1764000000
    Entity 1: pos=(123, -456), angle=45000, vel=(250, -250), seg=7@50.0%, age=12ms
    Entity 3: pos=(5, 456), angle=45000, vel=(250, -250), seg=idle, age=27ms
=== Offline Clients: 2 ===
  pi-b: offline (will) for 3.2s, entities=2, lost_hb=0
  pi-c: offline (clean shutdown) for 0ms, entities=0, lost_hb=0";
        let t = parse(text).unwrap();
        assert_eq!((t.active_count, t.offline_count), (1, 2));
        let a = &t.active["pi-a"];
        assert_eq!(
            (
                a.last_hb_ms,
                a.entities_count,
                a.lost_hb,
                a.clock_offset_ms,
                a.session
            ),
            (127, 2, 4, Some(-3), Some(1_764_000_000))
        );
        assert_eq!(
            a.entities[&1],
            EntityRow {
                x: 123,
                y: -456,
                segment: Some(7),
                age_ms: 12
            }
        );
        assert_eq!(a.entities[&3].segment, None);
        assert_eq!(t.offline["pi-b"], "will");
        assert_eq!(t.offline["pi-c"], "clean shutdown");
        assert!(parse("=== Active Clients: 0 ===\n  garbage").is_err());
        assert!(parse("=== Active Clients: 0 ===").is_err());
    }
}
