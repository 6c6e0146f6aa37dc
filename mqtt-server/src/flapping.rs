//! Duplicate client id detection. Two devices configured with one client id take the MQTT
//! connection from each other: every connect of one makes the broker close the other's (and
//! publish its will), which reconnects at once, and so on. To the server that Pi flaps:
//! a live `Online` (one per connection) several times a second, and its session numbers,
//! which grow with every connect of one process, repeat or go backwards.
//!
//! Per Pi, [`Flapping`] counts new connections (live `Online` statuses) in a sliding window.
//! [`THRESHOLD`] of them within [`WINDOW`] makes the Pi suspected of a duplicate id: the server
//! then logs one warning per window (instead of a presence line per flap), counts
//! `suspected_duplicate_id` and marks the Pi in the table. The suspicion ends after a whole
//! window without a new connection. A Pi on a bad network can trip it too (reconnecting every
//! 5 s for a minute); the warning says which kind it looks like from the sessions.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The window in which connections are counted, and the period of the warning.
pub const WINDOW: Duration = Duration::from_secs(30);
/// Connections within [`WINDOW`] that make a Pi suspected.
pub const THRESHOLD: usize = 6;

/// What the registry should do after a connection of a Pi.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to report.
    Quiet,
    /// Log the warning now (the Pi just became suspected, or a window passed since the last
    /// warning). `newly` is true on the first one.
    Warn {
        newly: bool,
        connects: usize,
        session_repeats: u64,
    },
}

/// One Pi's recent connections.
#[derive(Debug, Clone, Default)]
pub struct Flapping {
    /// Times of the last [`THRESHOLD`] connections, oldest first.
    recent: VecDeque<Instant>,
    last_session: Option<u32>,
    /// Live `Online`s whose session was not above the previous one (a single process's
    /// sessions only grow): strong evidence of two processes.
    session_repeats: u64,
    /// Connections since the suspicion began.
    connects_while_suspected: usize,
    suspected_since: Option<Instant>,
    last_warning: Option<Instant>,
    /// Presence lines not logged because the Pi is suspected.
    pub quiet_lines: u64,
}

impl Flapping {
    /// A new connection of this Pi (a live `Online` with its session).
    pub fn on_connect(&mut self, now: Instant, session: u32) -> Verdict {
        if self.last_session.is_some_and(|last| session <= last) {
            self.session_repeats += 1;
        }
        self.last_session = Some(session);
        if self.recent.len() == THRESHOLD {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        if self.suspected_since.is_some() {
            self.connects_while_suspected += 1;
        }
        let full = self.recent.len() == THRESHOLD
            && self
                .recent
                .front()
                .is_some_and(|first| now.saturating_duration_since(*first) <= WINDOW);
        if !full {
            return Verdict::Quiet;
        }
        let newly = self.suspected_since.is_none();
        if newly {
            self.suspected_since = Some(now);
            self.connects_while_suspected = THRESHOLD;
        }
        let due = self
            .last_warning
            .is_none_or(|t| now.saturating_duration_since(t) >= WINDOW);
        if !due {
            return Verdict::Quiet;
        }
        self.last_warning = Some(now);
        let connects = self.connects_while_suspected;
        self.connects_while_suspected = 0;
        Verdict::Warn {
            newly,
            connects,
            session_repeats: self.session_repeats,
        }
    }

    /// True while the Pi is suspected (a connection within the last window after tripping).
    pub fn is_suspected(&self) -> bool {
        self.suspected_since.is_some()
    }

    /// Ends the suspicion after a whole window without a new connection; true when it ended
    /// now (the caller logs that the Pi is stable again).
    pub fn settle(&mut self, now: Instant) -> bool {
        let quiet = self
            .recent
            .back()
            .is_some_and(|last| now.saturating_duration_since(*last) > WINDOW);
        if self.suspected_since.is_some() && quiet {
            self.suspected_since = None;
            self.last_warning = None;
            self.session_repeats = 0;
            self.connects_while_suspected = 0;
            self.recent.clear();
            return true;
        }
        false
    }

    /// Connections counted in the current window (for the table).
    pub fn recent_connects(&self, now: Instant) -> usize {
        self.recent
            .iter()
            .filter(|t| now.saturating_duration_since(**t) <= WINDOW)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_pi_reconnecting_now_and_then_is_not_suspected() {
        let t0 = Instant::now();
        let mut f = Flapping::default();
        // One reconnect every 7 s: 5 in 30 s at most.
        for i in 0..20u32 {
            assert_eq!(
                f.on_connect(t0 + ms(7000 * u64::from(i)), 100 + i),
                Verdict::Quiet
            );
        }
        assert!(!f.is_suspected());
    }

    #[test]
    fn two_processes_with_one_id_are_suspected_and_warned_once_per_window() {
        let t0 = Instant::now();
        let mut f = Flapping::default();
        let mut warnings = Vec::new();
        // Two processes, same seed second: sessions 500, 500, 501, 501, ... every 300 ms.
        for i in 0..200u32 {
            let now = t0 + ms(300 * u64::from(i));
            if let Verdict::Warn {
                newly,
                connects,
                session_repeats,
            } = f.on_connect(now, 500 + i / 2)
            {
                warnings.push((i, newly, connects, session_repeats));
            }
        }
        assert!(f.is_suspected());
        // Tripped at the 6th connect, then once per 30 s (every 100 connects at 300 ms).
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert_eq!(warnings[0].0, 5);
        assert!(warnings[0].1 && !warnings[1].1);
        assert_eq!(warnings[0].2, THRESHOLD);
        assert_eq!(warnings[1].2, 100);
        assert!(warnings[0].3 >= 2, "sessions repeat: {warnings:?}");
    }

    #[test]
    fn the_suspicion_ends_after_a_quiet_window() {
        let t0 = Instant::now();
        let mut f = Flapping::default();
        for i in 0..THRESHOLD as u32 {
            f.on_connect(t0 + ms(100 * u64::from(i)), i);
        }
        assert!(f.is_suspected());
        let last = t0 + ms(100 * (THRESHOLD as u64 - 1));
        assert_eq!(f.recent_connects(last), THRESHOLD);
        assert!(!f.settle(last + WINDOW));
        assert!(f.settle(last + WINDOW + ms(1)));
        assert!(!f.is_suspected());
        assert!(!f.settle(last + WINDOW + ms(2)), "ends once");
        // Quiet again: a later reconnect is just a reconnect.
        assert_eq!(f.on_connect(last + WINDOW * 2, 99), Verdict::Quiet);
    }

    #[test]
    fn the_registry_counts_marks_and_quiets_a_flapping_pi() {
        use crate::fleet::{FleetConfig, TestFleet};
        use common::{Presence, Status};
        let t0 = Instant::now();
        let mut fleet = TestFleet::new(FleetConfig::new(ms(1500), 10, Duration::from_secs(600)));
        let status = |presence, session| Status {
            presence,
            session,
            timestamp_ms: 0,
        };
        // Two processes with one id and the same session seed: Online, will, Online, ...
        for i in 0..20u32 {
            let now = t0 + ms(250 * u64::from(i));
            let session = 700 + i / 2;
            fleet.on_status(now, "twin", status(Presence::Online, session), false);
            fleet.on_status(
                now + ms(5),
                "twin",
                status(Presence::ConnectionLost, session),
                false,
            );
            fleet.on_status(
                now + ms(6),
                "twin",
                status(Presence::Online, session),
                false,
            );
        }
        let c = fleet.counters();
        assert_eq!(c.registry_of("suspected_duplicate_id"), 1);
        assert!(c.registry_of("went_online") >= 20);
        let pi = fleet.pi("twin").unwrap();
        assert!(pi.flapping.is_suspected());
        assert!(pi.flapping.quiet_lines > 0, "presence lines held back");
        let now = t0 + ms(5000);
        let table = crate::table::render(&fleet, now);
        assert!(table.contains("SUSPECTED DUPLICATE ID"), "{table}");
        // A well-behaved Pi next to it is not marked.
        fleet.on_status(now, "solo", status(Presence::Online, 1), false);
        let table = crate::table::render(&fleet, now);
        let solo = table.lines().find(|l| l.contains("solo:")).unwrap();
        assert!(!solo.contains("SUSPECTED"), "{table}");
        // Once the twin is gone for a whole window, the mark goes.
        fleet.tick(now + WINDOW + ms(100));
        assert!(!fleet.pi("twin").unwrap().flapping.is_suspected());
    }
}
