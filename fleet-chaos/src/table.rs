//! The server's status table, read from its stdout: which Pis are active (with heartbeat age
//! and entities) and which are offline (with the reason). Lenient about extra columns: each
//! Pi keeps its raw line for markers a scenario looks for.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use testkit::Daemon;

/// One entity line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityRow {
    pub x: i32,
    pub y: i32,
    /// The `seg=` column: `Some((segment id, "12.5%"))`, None when idle.
    pub seg: Option<(u32, String)>,
    /// Since the server received the entity's last report.
    pub age_ms: u64,
}

/// One active Pi.
#[derive(Debug, Clone, Default)]
pub struct ActiveRow {
    pub last_hb_ms: u64,
    pub entities: BTreeMap<u32, EntityRow>,
    pub line: String,
}

/// One table, and when the test read it.
#[derive(Debug, Clone)]
pub struct Table {
    pub at: Instant,
    pub active_count: usize,
    pub active: BTreeMap<String, ActiveRow>,
    pub offline_count: usize,
    /// id -> (reason, raw line)
    pub offline: BTreeMap<String, (String, String)>,
    pub text: String,
}

impl Table {
    /// True when every id in `ids` is active with `entities` entities.
    pub fn all_active(&self, ids: &[&str], entities: usize) -> bool {
        ids.iter().all(|id| {
            self.active
                .get(*id)
                .is_some_and(|p| p.entities.len() == entities)
        })
    }
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(key)? + key.len();
    let rest = &line[start..];
    let end = rest.find([',', ' ']).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Parses one table; panics with the text on a line it does not understand.
pub fn parse(text: &str, at: Instant) -> Table {
    let mut t = Table {
        at,
        active_count: 0,
        active: BTreeMap::new(),
        offline_count: 0,
        offline: BTreeMap::new(),
        text: text.to_owned(),
    };
    let mut section = "";
    let mut current: Option<String> = None;
    let bad = |l: &str| -> ! { panic!("unexpected table line {l:?} in:\n{text}") };
    for line in text.lines() {
        if let Some(n) = line
            .strip_prefix("=== Active Clients: ")
            .and_then(|r| r.strip_suffix(" ==="))
        {
            t.active_count = n.parse().unwrap_or_else(|_| bad(line));
            section = "active";
        } else if let Some(n) = line
            .strip_prefix("=== Offline Clients: ")
            .and_then(|r| r.strip_suffix(" ==="))
        {
            t.offline_count = n.parse().unwrap_or_else(|_| bad(line));
            section = "offline";
        } else if line.is_empty() {
        } else if let Some(rest) = line.strip_prefix("    Entity ") {
            let (id, rest) = rest.split_once(": ").unwrap_or_else(|| bad(line));
            let pos = rest
                .strip_prefix("pos=(")
                .and_then(|r| r.split_once(')'))
                .map(|(p, _)| p)
                .unwrap_or_else(|| bad(line));
            let (x, y) = pos.split_once(", ").unwrap_or_else(|| bad(line));
            let seg = match field(line, "seg=").unwrap_or_else(|| bad(line)) {
                "idle" => None,
                s => {
                    let (id, pct) = s.split_once('@').unwrap_or_else(|| bad(line));
                    Some((id.parse().unwrap_or_else(|_| bad(line)), pct.to_owned()))
                }
            };
            let row = EntityRow {
                x: x.parse().unwrap_or_else(|_| bad(line)),
                y: y.parse().unwrap_or_else(|_| bad(line)),
                seg,
                age_ms: field(line, "age=")
                    .and_then(|v| v.strip_suffix("ms"))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| bad(line)),
            };
            let pi = current.as_ref().unwrap_or_else(|| bad(line));
            if let Some(p) = t.active.get_mut(pi) {
                p.entities
                    .insert(id.parse().unwrap_or_else(|_| bad(line)), row);
            }
        } else if let Some(rest) = line.strip_prefix("  ") {
            if rest.starts_with("... and ") {
                continue;
            }
            let (id, rest) = rest.split_once(": ").unwrap_or_else(|| bad(line));
            match section {
                "active" => {
                    let hb = field(rest, "last_hb=")
                        .and_then(|v| v.strip_suffix("ms"))
                        .and_then(|v| v.parse().ok())
                        .unwrap_or_else(|| bad(line));
                    t.active.insert(
                        id.to_owned(),
                        ActiveRow {
                            last_hb_ms: hb,
                            entities: BTreeMap::new(),
                            line: line.to_owned(),
                        },
                    );
                    current = Some(id.to_owned());
                }
                "offline" => {
                    let reason = rest
                        .strip_prefix("offline (")
                        .and_then(|r| r.split_once(") for "))
                        .map(|(r, _)| r)
                        .unwrap_or_else(|| bad(line));
                    t.offline
                        .insert(id.to_owned(), (reason.to_owned(), line.to_owned()));
                    current = None;
                }
                _ => bad(line),
            }
        } else {
            bad(line);
        }
    }
    t
}

/// The next complete table on the server's stdout (a table ends with an empty line). Lines
/// before the first header (the tail of a table cut by [`skip_backlog`]) are skipped.
pub fn next_table(server: &Daemon, timeout: Duration) -> Option<Table> {
    let mut buf = String::new();
    server.wait_stdout(timeout, |l| {
        if l.is_empty() {
            return !buf.is_empty();
        }
        if l.starts_with("=== Active Clients") {
            buf.clear();
        } else if buf.is_empty() {
            return false;
        }
        buf.push_str(l);
        buf.push('\n');
        false
    })?;
    Some(parse(&buf, Instant::now()))
}

/// Drops every table printed so far and not read yet, so the next one read is fresh (tables
/// pile up while a scenario sleeps; a stale one would satisfy a wait at once).
pub fn skip_backlog(server: &Daemon) {
    let _ = server.stdout_lines();
}

/// Reads tables until one satisfies `pred`, for at most `timeout`. Tables read are in the
/// order printed: call [`skip_backlog`] first after a pause.
pub fn wait_table(
    server: &Daemon,
    timeout: Duration,
    mut pred: impl FnMut(&Table) -> bool,
) -> Option<Table> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let t = next_table(server, left)?;
        if pred(&t) {
            return Some(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_server_format() {
        let text = "=== Active Clients: 1 ===\n  pi-1: last_hb=127ms ago, entities=2, lost_hb=0, \
                    clock_offset=+3ms, session=17\n    Entity 1: pos=(123, 456), angle=45000, \
                    vel=(250, -250), seg=7@50.0%, age=12ms\n    Entity 2: pos=(0, -1), angle=0, \
                    vel=(0, 0), seg=idle, age=12ms\n=== Offline Clients: 1 ===\n  pi-2: offline \
                    (will) for 3.2s, entities=3, lost_hb=0\n\n";
        let t = parse(text, Instant::now());
        assert_eq!((t.active_count, t.offline_count), (1, 1));
        let p = &t.active["pi-1"];
        assert_eq!(p.last_hb_ms, 127);
        assert_eq!(p.entities[&1].seg, Some((7, "50.0%".into())));
        assert_eq!(p.entities[&2].seg, None);
        assert_eq!(p.entities[&2].y, -1);
        assert_eq!(p.entities[&1].age_ms, 12);
        assert_eq!(t.offline["pi-2"].0, "will");
        assert!(t.all_active(&["pi-1"], 2));
        assert!(!t.all_active(&["pi-1", "pi-2"], 2));
    }
}
