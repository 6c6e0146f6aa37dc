//! The status table printed on stdout every status interval, in the seed's line format so
//! scripts can read it (extra columns come after the seed's ones):
//!
//! ```text
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
//! `, clock out of range (no segment deadlines)` after its columns.
//!
//! Pis sorted by id, entities by id; an empty line ends the table. The offline section lists
//! at most [`MAX_OFFLINE_LINES`] Pis (the most recently gone), then `  ... and N more`.
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
            "    Entity {id}: pos=({}, {}), angle={}, vel=({}, {}), seg={seg}, age={}ms",
            r.x,
            r.y,
            r.angle,
            r.vx,
            r.vy,
            now.saturating_duration_since(e.updated).as_millis(),
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
pub fn render(fleet: &Fleet, now: Instant) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "=== Active Clients: {} ===", fleet.online_count());
    for pi in fleet.pis() {
        if let PiState::Online { since } = pi.state {
            active_line(&mut out, pi, since, now);
        }
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
