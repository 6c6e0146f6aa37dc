//! A Pi's standing: how sure the server is that a client id belongs to the fleet. It decides
//! who may take whose place when the registry is full (`max_pis`), and which active Pis the
//! status table lists first.
//!
//! The rule (issue 16, item 3): eviction never favours a stranger over a Pi the server knows
//! to be part of the fleet.
//! - [`Standing::Listed`]: the id is in the optional fleet list (`fleet_file`). The operator
//!   said so; nothing else is as strong.
//! - [`Standing::Known`]: the Pi completed an `Online` handshake: an `Online` status (live, sent
//!   right after it connected; or retained, the broker's copy of the one it sent when it last
//!   connected) followed by a heartbeat. Every `rpi-client` does this on every connection; an
//!   id that only ever heartbeats does not.
//! - [`Standing::Claimed`]: an `Online` status came, no heartbeat since (yet): a handshake under
//!   way, or a Pi known only from a retained status after a server restart.
//! - [`Standing::Stranger`]: only heartbeats, or only offline statuses.
//!
//! Standing only ever rises while the Pi is tracked (a known Pi killed and offline is still
//! known). A newcomer that needs room when the registry is full may only take the place of a
//! Pi of lower standing, or of an offline Pi of the same standing ([`may_evict`]); of those the
//! one of lowest standing goes, offline before online, the one gone (or unheard) longest first
//! ([`victim_key`]). So a stranger only ever replaces an offline stranger (the old rule), a
//! Pi starting a handshake may also replace an online stranger, a listed Pi may replace any
//! unlisted one, and when the registry is full of known Pis a new stranger is refused and
//! counted (`registry_full`), never the reverse.
//!
//! Limits, on a broker without an ACL (development): anyone can publish an `Online` status
//! and heartbeats under any id, so made-up ids that mimic the handshake become known too; the
//! fleet list is the defence there (with the production ACL only a Pi can publish its status).
//! A listed Pi always finds room: the list may not hold more ids than `max_pis`.

use std::time::Instant;

use serde::Serialize;

/// How sure the server is that a Pi belongs to the fleet; ordered from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// Only heartbeats or offline statuses so far.
    Stranger,
    /// An `Online` status, and no heartbeat since yet.
    Claimed,
    /// An `Online` status followed by a heartbeat: a completed handshake.
    Known,
    /// In the fleet list (`fleet_file`).
    Listed,
}

impl Standing {
    /// The standing after an `Online` status (live or retained).
    pub fn on_online_status(self) -> Standing {
        self.max(Standing::Claimed)
    }

    /// The standing after a heartbeat: a pending handshake completes.
    pub fn on_heartbeat(self) -> Standing {
        match self {
            Standing::Claimed => Standing::Known,
            s => s,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Standing::Stranger => "stranger",
            Standing::Claimed => "claimed",
            Standing::Known => "known",
            Standing::Listed => "listed",
        }
    }
}

/// Whether a newcomer of standing `newcomer` may take the place of a tracked Pi of standing
/// `victim` (online or not) when the registry is full.
pub fn may_evict(newcomer: Standing, victim: Standing, victim_online: bool) -> bool {
    victim < newcomer || (victim == newcomer && !victim_online)
}

/// Orders the Pis a newcomer may replace: the smallest key goes first (lowest standing,
/// offline before online, then the earliest `since`: when it went offline, or when an
/// online Pi was last heard).
pub fn victim_key(standing: Standing, online: bool, since: Instant) -> (Standing, bool, Instant) {
    (standing, online, since)
}

#[cfg(test)]
mod tests {
    use super::Standing::*;
    use super::*;

    #[test]
    fn standing_rises_with_the_handshake_and_never_falls() {
        assert_eq!(Stranger.on_heartbeat(), Stranger);
        assert_eq!(Stranger.on_online_status(), Claimed);
        assert_eq!(Claimed.on_heartbeat(), Known);
        assert_eq!(Known.on_online_status(), Known);
        assert_eq!(Listed.on_online_status(), Listed);
        assert_eq!(Listed.on_heartbeat(), Listed);
    }

    #[test]
    fn a_stranger_never_takes_the_place_of_a_pi_known_to_the_fleet() {
        for online in [false, true] {
            assert!(!may_evict(Stranger, Known, online));
            assert!(!may_evict(Stranger, Listed, online));
            assert!(!may_evict(Stranger, Claimed, online));
            assert!(!may_evict(Claimed, Known, online));
            assert!(!may_evict(Known, Listed, online));
            assert!(may_evict(Listed, Known, online));
            assert!(may_evict(Claimed, Stranger, online));
        }
        assert!(may_evict(Stranger, Stranger, false), "an offline stranger");
        assert!(!may_evict(Stranger, Stranger, true), "an online one stays");
        assert!(!may_evict(Claimed, Claimed, true));
    }

    #[test]
    fn victims_are_ordered_by_standing_then_offline_then_age() {
        let t0 = Instant::now();
        let t1 = t0 + std::time::Duration::from_millis(5);
        let mut keys = [
            victim_key(Known, false, t0),
            victim_key(Stranger, true, t0),
            victim_key(Stranger, false, t1),
            victim_key(Stranger, false, t0),
        ];
        keys.sort();
        assert_eq!(
            keys,
            [
                victim_key(Stranger, false, t0),
                victim_key(Stranger, false, t1),
                victim_key(Stranger, true, t0),
                victim_key(Known, false, t0),
            ]
        );
    }
}
