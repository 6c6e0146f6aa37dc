//! The status table printed on stdout every status interval, in the seed's line format so
//! scripts can read it (extra columns come after the seed's ones):
//!
//! ```text
//! === Leader: mqtt-server-a, epoch 0x1f2 (this server mqtt-server-b: standby) ===
//! === Active Clients: 1 ===
//!   rpi_client_001: last_hb=127ms ago, entities=3, lost_hb=0, clock_offset=+3ms, session=1764000000
//!     Entity 1: pos=(123, 456), angle=45000, vel=(250, -250), seg=7@50.0%, age=12ms
//! === Offline Clients: 1 ===
//!   rpi_client_002: offline (will) for 3.2s, entities=3, lost_hb=0
//! ```
//!
//! A Pi that still speaks protocol version 1 (not upgraded yet; its segments carry no
//! deadline) has `, protocol=1 (no segment deadlines)` after its columns. A Pi suspected of
//! sharing its client id with another device ([`crate::flapping`]) has
//! `, SUSPECTED DUPLICATE ID (N connections in 30.0s)` at the end of its line. A Pi whose
//! last heartbeat carried an absurd timestamp ([`crate::clock_offset::SANE_OFFSET_MS`]) has
//! `, clock out of range (no segment deadlines)` after its columns. An entity that no vehicle
//! process drives (the NO_DRIVER flag, docs/vehicle-bridge.md) has `, no driver` at the end of
//! its line.
//!
//! The first line is the leadership ([`leader_line`]): who leads (`none` while nobody does,
//! as far as this server knows), the highest epoch, and this server's id and role.
//!
//! Pis sorted by id, entities by id; an empty line ends the table. Each section stays
//! readable however big the registry (5,000 Pis printed 5,005 lines every second): the
//! active section lists at most [`MAX_ACTIVE_LINES`] Pis, the offline section at most
//! [`MAX_OFFLINE_LINES`] (the most recently gone), each then `  ... and N more`. The active
//! Pis listed are those of highest [`crate::standing::Standing`] (fleet list, then completed
//! handshakes, then ids only heard by heartbeat), and among those the ones with a problem
//! first (suspected duplicate id, heartbeat lagging, clock out of range, old protocol).
//!
//! On a terminal ([`Screen::Terminal`]) each table is written as one frame: cursor home, clear
//! screen, the table; so the screen never shows half a table (no pipe through `awk`, whose
//! Debian flavour buffers).

use std::fmt::Write;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use crate::fleet::{Fleet, Pi, PiState};

/// Offline Pis listed by name; a flood of made-up ids must not make the table huge.
pub const MAX_OFFLINE_LINES: usize = 100;
/// Active Pis listed by name (each with its entity lines).
pub const MAX_ACTIVE_LINES: usize = 100;

/// Where the tables go: decides how each one is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    /// A pipe or a file: tables one after the other, line-oriented, exactly as rendered.
    Lines,
    /// A terminal: each table clears the screen and replaces the last one.
    Terminal,
}

/// Cursor to the top-left corner, then clear the whole screen (ANSI / VT100).
pub const CLEAR_SCREEN: &str = "\x1b[H\x1b[2J";

impl Screen {
    /// [`Screen::Terminal`] when `out` is a terminal.
    pub fn detect(out: &impl IsTerminal) -> Screen {
        if out.is_terminal() {
            Screen::Terminal
        } else {
            Screen::Lines
        }
    }

    /// The text of one refresh, to be written in one write. `title` (e.g. where the web map
    /// is) heads the screen on a terminal; piped, only the table goes out.
    pub fn frame(self, title: &str, table: String) -> String {
        match self {
            Screen::Lines => table,
            Screen::Terminal => {
                let mut out = String::with_capacity(CLEAR_SCREEN.len() + title.len() + table.len());
                out.push_str(CLEAR_SCREEN);
                out.push_str(title);
                out.push_str(&table);
                out
            }
        }
    }
}

/// A short human duration: `850ms`, `3.2s`, `4m05s`, `2h10m`.
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else if ms < 3_600_000 {
        let s = d.as_secs();
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        let m = d.as_secs() / 60;
        format!("{}h{:02}m", m / 60, m % 60)
    }
}

/// `, clock out of range (no segment deadlines)` for a Pi whose timestamps are nonsense.
fn clock_marker(pi: &Pi) -> &'static str {
    if pi.clock.out_of_range() {
        ", clock out of range (no segment deadlines)"
    } else {
        ""
    }
}

fn active_line(out: &mut String, pi: &Pi, since: Instant, now: Instant) {
    let age = now.saturating_duration_since(pi.last_alive.unwrap_or(since));
    let offset = match pi.clock.smoothed_ms() {
        Some(o) => format!("{o:+}ms"),
        None => "?".into(),
    };
    let session = pi
        .session
        .map(|s| s.to_string())
        .unwrap_or_else(|| "?".into());
    let _ = writeln!(
        out,
        "  {}: last_hb={}ms ago, entities={}, lost_hb={}, clock_offset={offset}, session={session}{}{}{}",
        pi.id,
        age.as_millis(),
        pi.entities.len(),
        pi.heartbeats_lost,
        protocol_marker(pi),
        clock_marker(pi),
        flapping_marker(pi, now),
    );
    for (id, e) in &pi.entities {
        let r = &e.report;
        let seg = if r.segment_id == 0 {
            "idle".to_string()
        } else {
            format!("{}@{:.1}%", r.segment_id, f64::from(r.progress) / 100.0)
        };
        let _ = writeln!(
            out,
            "    Entity {id}: pos=({}, {}), angle={}, vel=({}, {}), seg={seg}, age={}ms{}",
            r.x,
            r.y,
            r.angle,
            r.vx,
            r.vy,
            now.saturating_duration_since(e.updated).as_millis(),
            if r.flags.contains(common::EntityFlags::NO_DRIVER) {
                ", no driver"
            } else {
                ""
            },
        );
    }
}

/// `, protocol=1 (no segment deadlines)` for a Pi not upgraded to the current version yet.
fn protocol_marker(pi: &Pi) -> String {
    if pi.protocol >= common::wire::VERSION {
        return String::new();
    }
    format!(", protocol={} (no segment deadlines)", pi.protocol)
}

/// `, SUSPECTED DUPLICATE ID (N connections in 30s)` after a flapping Pi's columns.
fn flapping_marker(pi: &Pi, now: Instant) -> String {
    if !pi.flapping.is_suspected() {
        return String::new();
    }
    format!(
        ", SUSPECTED DUPLICATE ID ({} connections in {})",
        pi.flapping.recent_connects(now),
        human(crate::flapping::WINDOW)
    )
}

/// The whole table as one string (printed with one write).
/// `=== Leader: {leader}, epoch {H} (this server {id}: {role}) ===`.
pub fn leader_line(l: &crate::leadership::LeaderView) -> String {
    format!(
        "=== Leader: {}, epoch {:#x} (this server {}: {}) ===\n",
        l.leader.as_deref().unwrap_or("none"),
        l.highest_epoch,
        l.server_id,
        l.role
    )
}

pub fn render(fleet: &Fleet, now: Instant) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "=== Active Clients: {} ===", fleet.online_count());
    let mut active: Vec<(Instant, &Pi)> = fleet
        .pis()
        .filter_map(|p| match p.state {
            PiState::Online { since } => Some((since, p)),
            PiState::Offline { .. } => None,
        })
        .collect();
    let hidden = active.len().saturating_sub(MAX_ACTIVE_LINES);
    if hidden > 0 {
        // Keep the fleet's own Pis, problems first, then back to id order.
        let lagging = fleet.config().heartbeat_timeout / 2;
        active.sort_by_key(|(_, p)| {
            let problem = p.flapping.is_suspected()
                || p.last_alive_age(now).is_some_and(|a| a > lagging)
                || p.clock.out_of_range()
                || p.protocol < common::wire::VERSION;
            (std::cmp::Reverse((p.standing, problem)), p.id.as_str())
        });
        active.truncate(MAX_ACTIVE_LINES);
        active.sort_by(|a, b| a.1.id.cmp(&b.1.id));
    }
    for (since, pi) in active {
        active_line(&mut out, pi, since, now);
    }
    if hidden > 0 {
        let _ = writeln!(out, "  ... and {hidden} more");
    }
    let mut offline: Vec<(Instant, &Pi)> = fleet
        .pis()
        .filter_map(|p| match p.state {
            PiState::Offline { since, .. } => Some((since, p)),
            PiState::Online { .. } => None,
        })
        .collect();
    let _ = writeln!(out, "=== Offline Clients: {} ===", offline.len());
    let hidden = offline.len().saturating_sub(MAX_OFFLINE_LINES);
    if hidden > 0 {
        // Keep the most recently gone, then back to id order.
        offline.sort_by_key(|p| std::cmp::Reverse(p.0));
        offline.truncate(MAX_OFFLINE_LINES);
        offline.sort_by(|a, b| a.1.id.cmp(&b.1.id));
    }
    for (since, pi) in offline {
        let reason = pi.offline_reason().map(|r| r.as_str()).unwrap_or("?");
        let _ = writeln!(
            out,
            "  {}: offline ({reason}) for {}, entities={}, lost_hb={}{}",
            pi.id,
            human(now.saturating_duration_since(since)),
            pi.entities.len(),
            pi.heartbeats_lost,
            flapping_marker(pi, now),
        );
    }
    if hidden > 0 {
        let _ = writeln!(out, "  ... and {hidden} more");
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::{FleetConfig, TestFleet};
    use common::{Heartbeat, Message, Presence, StateReport, Status};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn fleet() -> TestFleet {
        TestFleet::new(FleetConfig::new(ms(1500), 1000, Duration::from_secs(600)))
    }

    #[test]
    fn active_section_is_capped_and_lists_the_fleet_and_its_problems_first() {
        let t0 = Instant::now();
        let mut f = fleet();
        // Current-version heartbeats, as the registry thread hands them over.
        let beat = |f: &mut TestFleet, at: Instant, id: &str, seq| {
            let hb = Heartbeat {
                seq,
                timestamp_ms: 0,
            };
            f.on_live(
                at,
                0,
                &format!("rpi/{id}/heartbeat"),
                hb.encode().as_slice(),
            );
        };
        let online = |session| Status {
            presence: Presence::Online,
            session,
            timestamp_ms: 0,
        };
        // 300 ids that only heartbeat (the last one lagging), two real Pis (handshake) of
        // which one lags.
        for i in 0..300u64 {
            let at = if i == 299 { t0 } else { t0 + ms(500) };
            beat(&mut f, at, &format!("fake-{i:04}"), 1);
        }
        for id in ["real-lagging", "real-ok"] {
            f.on_status(t0, id, online(1), false);
            beat(&mut f, t0, id, 1);
        }
        beat(&mut f, t0 + ms(900), "real-ok", 2);
        let got = render(&f, t0 + ms(1000));
        assert!(got.starts_with("=== Active Clients: 302 ===\n"), "{got}");
        assert!(got.contains("\n  ... and 202 more\n=== Offline Clients: 0 ===\n"));
        assert_eq!(got.lines().count(), 1 + MAX_ACTIVE_LINES + 1 + 1 + 1);
        assert!(
            got.contains("\n  real-lagging: last_hb=1000ms ago"),
            "{got}"
        );
        assert!(got.contains("\n  real-ok: last_hb=100ms ago"), "{got}");
        // Then the lagging made-up id, then the rest in id order: the first 97.
        assert!(got.contains("\n  fake-0299: last_hb=1000ms ago"), "{got}");
        assert!(got.contains("\n  fake-0096: ") && !got.contains("fake-0097"));
        let ids: Vec<&str> = got
            .lines()
            .filter_map(|l| l.strip_prefix("  ")?.split_once(": ").map(|p| p.0))
            .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted, "listed in id order");
        // Under the cap: everyone, no "more" line.
        let mut small = fleet();
        beat(&mut small, t0, "a", 1);
        assert!(!render(&small, t0).contains("more"));
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(ms(127)), "127ms");
        assert_eq!(human(ms(3217)), "3.2s");
        assert_eq!(human(ms(245_000)), "4m05s");
        assert_eq!(human(Duration::from_secs(7800)), "2h10m");
    }

    #[test]
    fn a_terminal_frame_clears_first_and_a_pipe_gets_the_table_as_is() {
        let table = render(&fleet(), Instant::now());
        let title = "Web map: http://127.0.0.1:8080/\n\n";
        assert_eq!(Screen::Lines.frame(title, table.clone()), table);
        let framed = Screen::Terminal.frame(title, table.clone());
        assert_eq!(framed, format!("\x1b[H\x1b[2J{title}{table}"));
        // Tests and cargo capture stdout: not a terminal.
        let file = std::fs::File::open("Cargo.toml").unwrap();
        assert_eq!(Screen::detect(&file), Screen::Lines);
    }

    #[test]
    fn empty_fleet() {
        assert_eq!(
            render(&fleet(), Instant::now()),
            "=== Active Clients: 0 ===\n=== Offline Clients: 0 ===\n\n"
        );
    }

    #[test]
    fn seed_format_with_extra_columns_sorted() {
        let t0 = Instant::now();
        let mut f = fleet();
        let wall = 1_764_000_000_000;
        for id in ["rpi_client_002", "rpi_client_001"] {
            f.on_status(
                t0,
                id,
                Status {
                    presence: Presence::Online,
                    session: 1_764_000_000,
                    timestamp_ms: wall,
                },
                false,
            );
            let hb = Heartbeat {
                seq: 1,
                timestamp_ms: wall - 3,
            };
            let topic = format!("rpi/{id}/heartbeat");
            f.on_live(t0, wall, &topic, hb.encode().as_slice());
        }
        // A Pi not upgraded yet: version 1 heartbeats.
        let old = Message::Heartbeat(Heartbeat {
            seq: 1,
            timestamp_ms: wall,
        });
        let v1 = old.encode_as(1).unwrap();
        f.on_live(t0, wall, "rpi/rpi_old/heartbeat", v1.as_slice());
        for (entity_id, x, segment_id) in [(3, 5, 0), (1, 123, 7)] {
            f.on_state(
                t0 + ms(100),
                "rpi_client_001",
                StateReport {
                    entity_id,
                    timestamp_ms: wall,
                    x,
                    y: 456,
                    angle: 45_000,
                    vx: 250,
                    vy: -250,
                    segment_id,
                    progress: 5_000,
                    flags: common::EntityFlags::NONE,
                },
            );
        }
        f.on_status(
            t0 + ms(200),
            "rpi_client_003",
            Status {
                presence: Presence::ConnectionLost,
                session: 9,
                timestamp_ms: wall,
            },
            false,
        );
        f.on_status(
            t0 + ms(300),
            "rpi_client_002",
            Status {
                presence: Presence::Offline,
                session: 1_764_000_000,
                timestamp_ms: wall,
            },
            false,
        );
        let got = render(&f, t0 + ms(127));
        let want = "\
=== Active Clients: 2 ===
  rpi_client_001: last_hb=127ms ago, entities=2, lost_hb=0, clock_offset=+3ms, session=1764000000
    Entity 1: pos=(123, 456), angle=45000, vel=(250, -250), seg=7@50.0%, age=27ms
    Entity 3: pos=(5, 456), angle=45000, vel=(250, -250), seg=idle, age=27ms
  rpi_old: last_hb=127ms ago, entities=0, lost_hb=0, clock_offset=+0ms, session=?, protocol=1 (no segment deadlines)
=== Offline Clients: 2 ===
  rpi_client_002: offline (clean shutdown) for 0ms, entities=0, lost_hb=0
  rpi_client_003: offline (will) for 0ms, entities=0, lost_hb=0

";
        // Offline times are measured from later events than `now` here: saturating to 0.
        assert_eq!(got, want);
    }

    #[test]
    fn offline_section_is_capped() {
        let t0 = Instant::now();
        let mut f = fleet();
        for i in 0..(MAX_OFFLINE_LINES as u64 + 5) {
            f.on_status(
                t0 + ms(i),
                &format!("pi-{i:04}"),
                Status {
                    presence: Presence::Offline,
                    session: 1,
                    timestamp_ms: 0,
                },
                false,
            );
        }
        let got = render(&f, t0 + ms(1000));
        assert!(got.contains(&format!(
            "=== Offline Clients: {} ===",
            MAX_OFFLINE_LINES + 5
        )));
        assert!(got.contains("  ... and 5 more\n"));
        assert!(!got.contains("pi-0000:"), "the oldest are hidden");
        assert!(got.contains("pi-0104: offline (clean shutdown) for 896ms"));
        assert_eq!(got.lines().count(), 1 + 1 + MAX_OFFLINE_LINES + 1 + 1);
    }
}
