//! The mqtt-server status table as tests read it from the server's stdout: one strict parser
//! into typed rows, and reading the next table from a running [`Daemon`].
//!
//! The format is documented (and rendered) in `mqtt-server/src/table.rs`:
//!
//! ```text
//! === Active Clients: 1 ===
//!   rpi_client_001: last_hb=127ms ago, entities=3, lost_hb=0, clock_offset=+3ms, session=1764000000
//!     Entity 1: pos=(123, 456), angle=45000, vel=(250, -250), seg=7@50.0%, age=12ms
//! === Offline Clients: 1 ===
//!   rpi_client_002: offline (will) for 3.2s, entities=3, lost_hb=0
//! ```
//!
//! An active Pi's line may end with `, protocol=1 (no segment deadlines)` and/or
//! `, SUSPECTED DUPLICATE ID (N connections in 30.0s)`; each section may end with
//! `  ... and N more` (Pis not listed; listed + N must then be the section's count). Columns are found by their key, so extra columns are fine; a line of an
//! unknown kind, or out of place, panics with the whole table text.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::Daemon;

/// One entity line of an active Pi.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityRow {
    pub x: i32,
    pub y: i32,
    pub angle: i32,
    pub vel: (i32, i32),
    /// The `seg=` column: `Some((segment id, "50.0%"))`, None when idle.
    pub seg: Option<(u32, String)>,
    /// Since the server received the entity's last report.
    pub age_ms: u64,
    /// `, no driver` at the end: no vehicle process drives it (bridge mode).
    pub no_driver: bool,
}

/// One active Pi.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ActiveRow {
    pub last_hb_ms: u64,
    /// The `entities=` column (the entity lines are in [`ActiveRow::entities`]).
    pub entities_count: usize,
    pub lost_hb: u64,
    /// None while unknown (`?`).
    pub clock_offset_ms: Option<i64>,
    /// None while unknown (`?`).
    pub session: Option<u32>,
    pub entities: BTreeMap<u32, EntityRow>,
    /// `Some(v)` for a Pi still on protocol version `v` (`, protocol=1 (no segment
    /// deadlines)`); None on the current version.
    pub protocol: Option<u8>,
    /// `Some(n)` for a Pi suspected of a duplicate client id (`, SUSPECTED DUPLICATE ID (n
    /// connections in 30.0s)`).
    pub suspected_duplicate: Option<u32>,
    /// The Pi's line as printed.
    pub line: String,
}

/// One whole table, and when it was parsed (for a table from [`next_table`]: when read).
#[derive(Debug, Clone)]
pub struct Table {
    pub at: Instant,
    pub active_count: usize,
    pub active: BTreeMap<String, ActiveRow>,
    /// The `N` of the active section's `  ... and N more` (active Pis not listed), 0 without
    /// that line.
    pub active_hidden: usize,
    pub offline_count: usize,
    /// Pi id -> the reason in parentheses (`will`, `clean shutdown`, ...).
    pub offline: BTreeMap<String, String>,
    /// The `N` of `  ... and N more` (offline Pis not listed), 0 without that line.
    pub offline_hidden: usize,
    /// The text as printed, for failure messages.
    pub text: String,
}

impl Table {
    /// The leadership line's text (`=== Leader: {this} ===`, before the active section), if
    /// the server printed one.
    pub fn leader(&self) -> Option<&str> {
        self.text
            .lines()
            .find_map(|l| l.strip_prefix("=== Leader: ")?.strip_suffix(" ==="))
    }

    /// True when every id in `ids` is active with `entities` entity lines.
    pub fn all_active(&self, ids: &[&str], entities: usize) -> bool {
        ids.iter().all(|id| {
            self.active
                .get(*id)
                .is_some_and(|p| p.entities.len() == entities)
        })
    }
}

/// The value after `key` up to the next `,` or space (`last_hb=127ms ago` -> `127ms`).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(key)? + key.len();
    let rest = &line[start..];
    Some(&rest[..rest.find([',', ' ']).unwrap_or(rest.len())])
}

/// `127ms` -> 127.
fn ms(v: &str) -> Option<u64> {
    v.strip_suffix("ms")?.parse().ok()
}

/// `?` -> Some(None), a number -> Some(Some(n)), anything else -> None.
fn unknown_or<T: std::str::FromStr>(v: &str) -> Option<Option<T>> {
    if v == "?" {
        return Some(None);
    }
    v.parse().ok().map(Some)
}

/// `(123, -456)` at the start of `v` (after the key) -> (123, -456).
fn pair(v: &str) -> Option<(i32, i32)> {
    let (a, b) = v.strip_prefix('(')?.split_once(')')?.0.split_once(", ")?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// The value of `key=(a, b)` in `line`.
fn pair_field(line: &str, key: &str) -> Option<(i32, i32)> {
    pair(&line[line.find(key)? + key.len()..])
}

/// The optional `, protocol=V (no segment deadlines)` column: None if malformed.
fn protocol_marker(rest: &str) -> Option<Option<u8>> {
    let Some(v) = field(rest, ", protocol=") else {
        return Some(None);
    };
    let v: u8 = v.parse().ok()?;
    rest.contains(&format!(", protocol={v} (no segment deadlines)"))
        .then_some(Some(v))
}

/// The optional `, SUSPECTED DUPLICATE ID (N connections in 30.0s)` at the end of a Pi's
/// line: None if malformed.
fn duplicate_marker(rest: &str) -> Option<Option<u32>> {
    let Some((_, m)) = rest.split_once(", SUSPECTED DUPLICATE ID (") else {
        return Some(None);
    };
    let (n, window) = m.strip_suffix(')')?.split_once(" connections in ")?;
    (!window.is_empty()).then_some(())?;
    n.parse().ok().map(Some)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Start,
    Active,
    /// After the active section's `  ... and N more`: only the offline header.
    ActiveEnd,
    Offline,
    /// After `  ... and N more`: nothing but empty lines.
    End,
}

/// Parses one table; an error names the line it did not understand, with the whole text.
pub fn try_parse(text: &str) -> Result<Table, String> {
    let mut t = Table {
        at: Instant::now(),
        active_count: 0,
        active: BTreeMap::new(),
        active_hidden: 0,
        offline_count: 0,
        offline: BTreeMap::new(),
        offline_hidden: 0,
        text: text.to_owned(),
    };
    let mut leader_seen = false;
    let mut section = Section::Start;
    let mut current: Option<String> = None;
    for line in text.lines() {
        let bad = || format!("unexpected status table line {line:?} in:\n{text}");
        if line.trim().is_empty() {
            continue;
        }
        if let Some(l) = line
            .strip_prefix("=== Leader: ")
            .and_then(|r| r.strip_suffix(" ==="))
        {
            if section != Section::Start || leader_seen || l.is_empty() {
                return Err(bad());
            }
            leader_seen = true;
        } else if let Some(n) = line
            .strip_prefix("=== Active Clients: ")
            .and_then(|r| r.strip_suffix(" ==="))
        {
            if section != Section::Start {
                return Err(bad());
            }
            t.active_count = n.parse().map_err(|_| bad())?;
            section = Section::Active;
        } else if let Some(n) = line
            .strip_prefix("=== Offline Clients: ")
            .and_then(|r| r.strip_suffix(" ==="))
        {
            if section != Section::Active && section != Section::ActiveEnd {
                return Err(bad());
            }
            t.offline_count = n.parse().map_err(|_| bad())?;
            section = Section::Offline;
            current = None;
        } else if let Some(rest) = line.strip_prefix("    Entity ") {
            let pi = current
                .as_ref()
                .filter(|_| section == Section::Active)
                .ok_or_else(bad)?;
            let (id, rest) = rest.split_once(": ").ok_or_else(bad)?;
            let (x, y) = rest.strip_prefix("pos=").and_then(pair).ok_or_else(bad)?;
            let seg = match field(rest, "seg=").ok_or_else(bad)? {
                "idle" => None,
                s => {
                    let (id, pct) = s.split_once('@').ok_or_else(bad)?;
                    if !pct.ends_with('%') {
                        return Err(bad());
                    }
                    Some((id.parse().map_err(|_| bad())?, pct.to_owned()))
                }
            };
            let row = EntityRow {
                x,
                y,
                angle: field(rest, "angle=")
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(bad)?,
                vel: pair_field(rest, "vel=").ok_or_else(bad)?,
                seg,
                age_ms: field(rest, "age=").and_then(ms).ok_or_else(bad)?,
                no_driver: rest.ends_with(", no driver"),
            };
            let id: u32 = id.parse().map_err(|_| bad())?;
            t.active
                .get_mut(pi)
                .ok_or_else(bad)?
                .entities
                .insert(id, row);
        } else if let Some(n) = line
            .strip_prefix("  ... and ")
            .and_then(|r| r.strip_suffix(" more"))
        {
            let n: usize = n.parse().map_err(|_| bad())?;
            match section {
                Section::Active if t.active.len() + n == t.active_count => {
                    t.active_hidden = n;
                    section = Section::ActiveEnd;
                }
                Section::Offline if t.offline.len() + n == t.offline_count => {
                    t.offline_hidden = n;
                    section = Section::End;
                }
                _ => return Err(bad()),
            }
        } else if let Some(rest) = line.strip_prefix("  ") {
            let (id, rest) = rest.split_once(": ").ok_or_else(bad)?;
            if id.is_empty() || id.starts_with(' ') {
                return Err(bad());
            }
            match section {
                Section::Active => {
                    let num = |k: &str| field(rest, k).and_then(|v| v.parse::<u64>().ok());
                    let pi = ActiveRow {
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
                        session: field(rest, "session=")
                            .and_then(unknown_or)
                            .ok_or_else(bad)?,
                        protocol: protocol_marker(rest).ok_or_else(bad)?,
                        suspected_duplicate: duplicate_marker(rest).ok_or_else(bad)?,
                        entities: BTreeMap::new(),
                        line: line.to_owned(),
                    };
                    t.active.insert(id.to_owned(), pi);
                    current = Some(id.to_owned());
                }
                Section::Offline => {
                    let reason = rest
                        .strip_prefix("offline (")
                        .and_then(|r| r.split_once(") for "))
                        .map(|(r, _)| r)
                        .ok_or_else(bad)?;
                    duplicate_marker(rest).ok_or_else(bad)?;
                    t.offline.insert(id.to_owned(), reason.to_owned());
                }
                Section::Start | Section::ActiveEnd | Section::End => return Err(bad()),
            }
        } else {
            return Err(bad());
        }
    }
    if matches!(
        section,
        Section::Start | Section::Active | Section::ActiveEnd
    ) {
        return Err(format!("incomplete status table:\n{text}"));
    }
    Ok(t)
}

/// Parses one table; panics (with the text) on anything unexpected.
pub fn parse(text: &str) -> Table {
    try_parse(text).unwrap_or_else(|e| panic!("{e}"))
}

/// Reads the next whole table the server prints (a table ends with an empty line), or None if
/// none is complete within `timeout`. Lines before a table header (the tail of a table cut by
/// [`skip_backlog`]) are skipped. Panics on a table it cannot parse.
pub fn next_table(server: &Daemon, timeout: Duration) -> Option<Table> {
    let mut buf = String::new();
    server.wait_stdout(timeout, |l| {
        if l.is_empty() {
            return !buf.is_empty();
        }
        // A table starts with its leader line, or (older servers) its active header.
        let leader_only = buf.starts_with("=== Leader") && buf.lines().count() == 1;
        if l.starts_with("=== Leader") || (l.starts_with("=== Active Clients") && !leader_only) {
            buf.clear();
        } else if buf.is_empty() {
            return false;
        }
        buf.push_str(l);
        buf.push('\n');
        false
    })?;
    Some(parse(&buf))
}

/// Drops every table printed so far and not read yet, so the next one read is fresh (tables
/// pile up while a test sleeps; a stale one would satisfy a wait at once).
pub fn skip_backlog(server: &Daemon) {
    let _ = server.stdout_lines();
}

/// Reads tables until one satisfies `pred`, for at most `timeout`. Tables are read in the
/// order printed: call [`skip_backlog`] first after a pause.
pub fn wait_table(
    server: &Daemon,
    timeout: Duration,
    pred: impl FnMut(&Table) -> bool,
) -> Option<Table> {
    wait_table_or_last(server, timeout, pred).ok()
}

/// [`wait_table`], but Err carries the last table read (if any), for the failure message.
pub fn wait_table_or_last(
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

    const TABLE: &str = "\
=== Active Clients: 3 ===
  pi-a: last_hb=127ms ago, entities=2, lost_hb=4, clock_offset=-3ms, session=1764000000
    Entity 1: pos=(123, -456), angle=45000, vel=(250, -250), seg=7@50.0%, age=12ms
    Entity 3: pos=(5, 456), angle=0, vel=(0, 0), seg=idle, age=27ms, no driver
  pi-old: last_hb=80ms ago, entities=0, lost_hb=0, clock_offset=+0ms, session=?, protocol=1 (no segment deadlines)
  pi-twin: last_hb=3ms ago, entities=1, lost_hb=0, clock_offset=?, session=17, protocol=1 (no segment deadlines), SUSPECTED DUPLICATE ID (12 connections in 30.0s)
    Entity 2: pos=(0, 0), angle=90000, vel=(0, 0), seg=9@100.0%, age=2500ms
=== Offline Clients: 104 ===
  pi-b: offline (will) for 3.2s, entities=2, lost_hb=0
  pi-c: offline (retained online, awaiting heartbeat) for 4m05s, entities=0, lost_hb=0, SUSPECTED DUPLICATE ID (5 connections in 30.0s)
  ... and 102 more

";

    #[test]
    fn parses_every_kind_of_line() {
        let t = parse(TABLE);
        assert_eq!((t.active_count, t.offline_count), (3, 104));
        assert_eq!(t.offline_hidden, 102);
        assert_eq!(t.text, TABLE);

        let a = &t.active["pi-a"];
        assert_eq!(
            (
                a.last_hb_ms,
                a.entities_count,
                a.lost_hb,
                a.clock_offset_ms,
                a.session,
                a.protocol,
                a.suspected_duplicate
            ),
            (127, 2, 4, Some(-3), Some(1_764_000_000), None, None)
        );
        assert!(a.line.starts_with("  pi-a: last_hb=127ms ago"));
        assert_eq!(
            a.entities[&1],
            EntityRow {
                x: 123,
                y: -456,
                angle: 45_000,
                vel: (250, -250),
                seg: Some((7, "50.0%".into())),
                age_ms: 12,
                no_driver: false,
            }
        );
        assert_eq!(a.entities[&3].seg, None, "idle");
        assert!(a.entities[&3].no_driver);
        assert_eq!(a.entities[&3].age_ms, 27);

        let old = &t.active["pi-old"];
        assert_eq!((old.protocol, old.suspected_duplicate), (Some(1), None));
        assert_eq!((old.clock_offset_ms, old.session), (Some(0), None));
        assert!(old.entities.is_empty());

        let twin = &t.active["pi-twin"];
        assert_eq!(
            (twin.protocol, twin.suspected_duplicate),
            (Some(1), Some(12))
        );
        assert_eq!((twin.clock_offset_ms, twin.session), (None, Some(17)));
        assert_eq!(twin.entities[&2].seg, Some((9, "100.0%".into())));

        assert_eq!(t.offline.len(), 2);
        assert_eq!(t.offline["pi-b"], "will");
        assert_eq!(t.offline["pi-c"], "retained online, awaiting heartbeat");
        assert!(t.all_active(&["pi-a"], 2));
        assert!(t.all_active(&["pi-old"], 0));
        assert!(!t.all_active(&["pi-a", "pi-b"], 2));
    }

    #[test]
    fn a_capped_active_section() {
        let text = "\
=== Active Clients: 5002 ===
  pi-a: last_hb=1ms ago, entities=1, lost_hb=0, clock_offset=?, session=?
    Entity 1: pos=(0, 0), angle=0, vel=(0, 0), seg=idle, age=1ms
  pi-b: last_hb=1ms ago, entities=0, lost_hb=0, clock_offset=?, session=?
  ... and 5000 more
=== Offline Clients: 0 ===

";
        let t = parse(text);
        assert_eq!((t.active_count, t.active_hidden), (5002, 5000));
        assert!(t.all_active(&["pi-a"], 1));
        assert_eq!((t.offline_count, t.offline_hidden), (0, 0));
        // Nothing but the offline header after it; the count must add up.
        for bad in [
            text.replace("  ... and 5000 more\n", "  ... and 5000 more\n  pi-c: last_hb=1ms ago, entities=0, lost_hb=0, clock_offset=?, session=?\n"),
            text.replace("  ... and 5000 more\n", "  ... and 5000 more\n    Entity 2: pos=(0, 0), angle=0, vel=(0, 0), seg=idle, age=1ms\n"),
            text.replace("5000 more", "4999 more"),
            text.replace("=== Offline Clients: 0 ===\n", ""),
        ] {
            assert!(try_parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn empty_table() {
        let led = parse(
            "=== Leader: srv-a, epoch 0x1f2 (this server srv-b: standby) ===\n\
             === Active Clients: 0 ===\n=== Offline Clients: 0 ===\n\n",
        );
        assert_eq!(
            led.leader(),
            Some("srv-a, epoch 0x1f2 (this server srv-b: standby)")
        );
        assert!(
            try_parse("=== Active Clients: 0 ===\n=== Leader: a ===\n=== Offline Clients: 0 ===\n")
                .is_err(),
            "the leader line comes first"
        );
        let t = parse("=== Active Clients: 0 ===\n=== Offline Clients: 0 ===\n\n");
        assert_eq!(
            (t.active_count, t.offline_count, t.offline_hidden),
            (0, 0, 0)
        );
        assert!(t.active.is_empty() && t.offline.is_empty());
    }

    #[test]
    fn rejects_anything_unexpected() {
        let ok_head = "=== Active Clients: 1 ===\n  pi-a: last_hb=1ms ago, entities=0, lost_hb=0, \
                       clock_offset=?, session=?\n";
        let tail = "=== Offline Clients: 0 ===\n";
        assert!(try_parse(&format!("{ok_head}{tail}")).is_ok());
        for bad in [
            "=== Active Clients: 0 ===\n  garbage\n=== Offline Clients: 0 ===\n",
            "=== Active Clients: 0 ===\n",
            "=== Offline Clients: 0 ===\n",
            "=== Active Clients: x ===\n=== Offline Clients: 0 ===\n",
            "something\n=== Active Clients: 0 ===\n=== Offline Clients: 0 ===\n",
            "=== Active Clients: 0 ===\n    Entity 1: pos=(0, 0), angle=0, vel=(0, 0), seg=idle, \
             age=1ms\n=== Offline Clients: 0 ===\n",
            "=== Active Clients: 0 ===\n=== Offline Clients: 1 ===\n  pi-b: online\n",
            "=== Active Clients: 0 ===\n  ... and 2 more\n=== Offline Clients: 0 ===\n",
            "=== Active Clients: 0 ===\n=== Offline Clients: 3 ===\n  ... and 3 more\n  pi-b: \
             offline (will) for 1s, entities=0, lost_hb=0\n",
        ] {
            let e = try_parse(bad).expect_err(bad);
            assert!(e.contains(bad), "the error shows the table: {e}");
        }
        for bad_line in [
            "    Entity 1: pos=(0 0), angle=0, vel=(0, 0), seg=idle, age=1ms\n",
            "    Entity 1: pos=(0, 0), angle=0, vel=(0, 0), seg=7@50.0, age=1ms\n",
            "    Entity 1: pos=(0, 0), angle=0, vel=(0, 0), seg=idle\n",
            "    Entity x: pos=(0, 0), angle=0, vel=(0, 0), seg=idle, age=1ms\n",
        ] {
            let text = format!("{ok_head}{bad_line}{tail}");
            assert!(try_parse(&text).is_err(), "{text}");
        }
        for bad_pi in [
            "  pi-x: last_hb=1ms ago, entities=0, lost_hb=0, clock_offset=?, session=abc\n",
            "  pi-x: last_hb=1ms ago, entities=0, lost_hb=0, clock_offset=?, session=?, \
             protocol=1\n",
            "  pi-x: last_hb=1ms ago, entities=0, lost_hb=0, clock_offset=?, session=?, \
             SUSPECTED DUPLICATE ID (many)\n",
        ] {
            let text = format!("=== Active Clients: 1 ===\n{bad_pi}{tail}");
            assert!(try_parse(&text).is_err(), "{text}");
        }
    }

    #[test]
    #[should_panic(expected = "unexpected status table line \"  garbage\" in:\n=== Active")]
    fn parse_panics_with_the_text() {
        parse("=== Active Clients: 0 ===\n  garbage\n=== Offline Clients: 0 ===\n");
    }
}
