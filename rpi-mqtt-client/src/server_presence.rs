//! Whether the fleet's server is there, as this Pi sees it (docs/protocol.md, "Server
//! presence"), and the `server_lost_stop_after` rule: when the server has been gone for that
//! long, every vehicle is paused once per such event (only a `resume` action moves them again).
//!
//! The server is *present* while the Pi's link is up and some server's latest status on
//! `server/@status/{server_id}` is `Online` with an epoch not lower than the Pi's fence (epoch 0
//! counts only while the fence is 0: a server that has not led yet, before any leader was
//! seen). Owned by the main loop; no I/O here.

use std::time::{Duration, Instant};

use common::{Presence, ServerStatus};

/// Servers remembered; statuses of further server ids are ignored (and counted).
pub const MAX_SERVERS: usize = 16;

/// What changed with an update, for the caller to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    None,
    /// The server is gone from now (link down, will, `Offline`, step-down, stale epoch).
    Gone,
    /// The server is back. `after_stop`: the vehicles were paused in this event, and stay so.
    Back {
        after_stop: bool,
    },
}

#[derive(Debug)]
pub struct ServerPresence {
    /// Latest status per server id.
    servers: Vec<(String, ServerStatus)>,
    link_up: bool,
    /// Since when the server is gone; None while present.
    gone_since: Option<Instant>,
    stop_after: Option<Duration>,
    /// The vehicles were paused in the current gone event.
    stopped: bool,
    /// Statuses ignored: a lower session than the server's latest, or one server too many.
    pub ignored: u64,
}

impl ServerPresence {
    /// At start the link is down: the server counts as gone from `now`.
    pub fn new(stop_after: Option<Duration>, now: Instant) -> ServerPresence {
        ServerPresence {
            servers: Vec::new(),
            link_up: false,
            gone_since: Some(now),
            stop_after,
            stopped: false,
            ignored: 0,
        }
    }

    pub fn is_present(&self) -> bool {
        self.gone_since.is_none()
    }

    /// The link came up or went down. Down forgets the statuses: the retained ones are
    /// delivered again after the next subscription.
    pub fn on_link(&mut self, up: bool, fence: u32, now: Instant) -> Change {
        self.link_up = up;
        if !up {
            self.servers.clear();
        }
        self.update(fence, now)
    }

    /// A status of `server_id` (None: its retained status was cleared). A status with a lower
    /// session than the latest of that server is stale and ignored.
    pub fn on_status(
        &mut self,
        server_id: &str,
        status: Option<ServerStatus>,
        fence: u32,
        now: Instant,
    ) -> Change {
        let known = self.servers.iter().position(|(id, _)| id == server_id);
        match (known, status) {
            (Some(i), None) => {
                self.servers.remove(i);
            }
            (None, None) => {}
            (Some(i), Some(s)) => {
                if s.session < self.servers[i].1.session {
                    self.ignored += 1;
                } else {
                    self.servers[i].1 = s;
                }
            }
            (None, Some(s)) => {
                if self.servers.len() >= MAX_SERVERS {
                    self.ignored += 1;
                } else {
                    self.servers.push((server_id.to_owned(), s));
                }
            }
        }
        self.update(fence, now)
    }

    /// Re-evaluates presence (also after the fence rose).
    pub fn update(&mut self, fence: u32, now: Instant) -> Change {
        let present = self.link_up
            && self
                .servers
                .iter()
                .any(|(_, s)| s.presence == Presence::Online && s.epoch >= fence);
        match (present, self.gone_since) {
            (true, Some(_)) => {
                self.gone_since = None;
                let after_stop = std::mem::replace(&mut self.stopped, false);
                Change::Back { after_stop }
            }
            (false, None) => {
                self.gone_since = Some(now);
                Change::Gone
            }
            _ => Change::None,
        }
    }

    /// When the vehicles must be paused if nothing changes; None when the rule is off, the
    /// server is present or this event already paused them.
    pub fn stop_due(&self) -> Option<Instant> {
        match (self.stop_after, self.gone_since) {
            (Some(after), Some(since)) if !self.stopped => Some(since + after),
            _ => None,
        }
    }

    /// Call when [`Self::stop_due`] has passed: true once per gone event (pause everything).
    pub fn take_stop(&mut self, now: Instant) -> bool {
        if self.stop_due().is_some_and(|due| now >= due) {
            self.stopped = true;
            true
        } else {
            false
        }
    }

    /// How long the server has been gone.
    pub fn gone_for(&self, now: Instant) -> Option<Duration> {
        self.gone_since.map(|s| now.saturating_duration_since(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(presence: Presence, session: u32, epoch: u32) -> Option<ServerStatus> {
        Some(ServerStatus {
            presence,
            session,
            epoch,
            timestamp_ms: 1,
        })
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn gone_then_back_and_one_stop_per_event() {
        let t = Instant::now();
        let mut p = ServerPresence::new(Some(2 * S), t);
        assert_eq!(p.stop_due(), Some(t + 2 * S), "gone from the start");
        assert_eq!(p.on_link(true, 0, t), Change::None);
        assert_eq!(
            p.on_status("a", st(Presence::Online, 5, 0), 0, t + S),
            Change::Back { after_stop: false }
        );
        assert_eq!(p.stop_due(), None);
        // The will: gone; the stop fires once after 2 s.
        let will = st(Presence::ConnectionLost, 5, 0);
        assert_eq!(p.on_status("a", will, 0, t + 3 * S), Change::Gone);
        assert!(!p.take_stop(t + 4 * S));
        assert!(p.take_stop(t + 5 * S));
        assert!(!p.take_stop(t + 9 * S), "once per event");
        assert_eq!(p.stop_due(), None);
        // A stale Online (lower session) does not bring it back; a new one does.
        assert_eq!(
            p.on_status("a", st(Presence::Online, 4, 0), 0, t + 9 * S),
            Change::None
        );
        assert_eq!(p.ignored, 1);
        assert_eq!(
            p.on_status("a", st(Presence::Online, 6, 0), 0, t + 9 * S),
            Change::Back { after_stop: true }
        );
        // The Pi's own link down is gone too, and forgets the statuses.
        assert_eq!(p.on_link(false, 0, t + 10 * S), Change::Gone);
        assert_eq!(p.on_link(true, 0, t + 10 * S), Change::None);
        assert!(!p.is_present());
    }

    #[test]
    fn a_server_below_the_fence_is_not_the_leader() {
        let t = Instant::now();
        let mut p = ServerPresence::new(None, t);
        p.on_link(true, 0, t);
        p.on_status("a", st(Presence::Online, 1, 0), 0, t);
        assert!(p.is_present());
        assert_eq!(
            p.update(0x205, t),
            Change::Gone,
            "a leader was seen: epoch 0 is no leader"
        );
        p.on_status("b", st(Presence::Online, 1, 0x205), 0x205, t);
        assert!(p.is_present());
        assert_eq!(p.stop_due(), None, "the rule is off");
    }
}
