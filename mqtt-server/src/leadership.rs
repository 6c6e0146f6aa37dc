//! Active/standby leadership (docs/protocol.md, "Server presence" and "Leadership"): which
//! server of the fleet gives orders, fenced by an epoch. A plain struct owned by the registry
//! thread, driven with `now` by the link's connects, the servers' statuses
//! (`server/@status/+`), the lease (`server/@lease`) and the Pis' fences (an ActionAck's
//! `fence`, a `Rejected(StaleLeader)`); it returns what to publish ([`Out`]) and answers
//! [`Leadership::order_epoch`]: the epoch to stamp orders with, or None on a standby.
//!
//! ```text
//!  Disconnected ─ConnAck─> Waiting{until: +1 s} ─> Standby ─not led─> Claiming{epoch}
//!       ^                     ^                      ^  ^                │ own lease back,
//!       └── link down (any) ──┘                      │  └─ higher lease ─┤ 500 ms quiet
//!                             └── step down (+1 s) ──┴─── higher epoch ─ Leader{epoch}
//! ```
//!
//! Rules, each from the protocol: statuses per server id follow the one stale-status rule
//! ([`crate::fleet::stale_session`]); `H` is the highest epoch known (lease, statuses, fences);
//! the fleet is *led* while some other server's latest status is `Online` with epoch `H`
//! (not 0); a standby claims `term(H) + 1` when it is not, unless a live (not retained) claim
//! is still settling, or a live server with the same tag and a greater id would claim the same
//! epoch; a claimant leads 500 ms after receiving its own lease if nothing higher came; a
//! leader re-publishes its lease over a lower one, and steps down (publishing `Online` with
//! epoch 0) on any higher epoch. The link going down ends any claim or lead: the broker
//! publishes this server's will, and another may take over.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::leader::{MAX_TERM, epoch_term, leader_epoch, server_tag};
use common::{Lease, Presence, ServerStatus};
use log::{info, warn};
use serde::Serialize;

use crate::fleet::stale_session;

/// After subscribing, how long a server waits for the retained lease and statuses.
pub const RETAINED_WAIT: Duration = Duration::from_secs(1);
/// How long a claimant waits after receiving its own lease before it leads.
pub const SETTLE: Duration = Duration::from_millis(500);
/// A live claim of another server that has not led after this long is abandoned: a standby
/// may claim over it.
pub const CLAIM_PATIENCE: Duration = Duration::from_secs(3);
/// A claimant that has not received its own lease after this long (the publish was lost with
/// the connection) starts over.
pub const CLAIM_TIMEOUT: Duration = Duration::from_secs(3);
/// At most this many servers are remembered (statuses come from the network).
pub const MAX_SERVERS: usize = 64;

/// Where this server is in the leadership lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No broker connection: no orders, no claims.
    Disconnected,
    /// Connected; collecting the retained lease and statuses until `until`.
    Waiting { until: Instant },
    /// Following: another server leads, or none does yet and a claim waits.
    Standby,
    /// Published `Lease{epoch}`; `own_seen`: when it came back from the broker.
    Claiming {
        epoch: u32,
        since: Instant,
        own_seen: Option<Instant>,
    },
    /// Gives the orders, stamped with `epoch`.
    Leader { epoch: u32 },
}

impl Phase {
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Disconnected => "disconnected",
            Phase::Waiting { .. } => "waiting",
            Phase::Standby => "standby",
            Phase::Claiming { .. } => "claiming",
            Phase::Leader { .. } => "leader",
        }
    }
}

/// What to publish (both retained, QoS 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Out {
    /// On `server/@status/{this server}`.
    Status(ServerStatus),
    /// On `server/@lease`.
    Lease(Lease),
}

/// The latest word of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ServerView {
    /// The newest session seen (the stale-status rule).
    session: u32,
    presence: Presence,
    epoch: u32,
}

/// The leadership as the operator interface shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaderView {
    /// This server's id.
    pub server_id: String,
    /// `disconnected`, `waiting`, `standby`, `claiming` or `leader`.
    pub role: &'static str,
    /// This server's epoch while it leads.
    pub epoch: Option<u32>,
    /// The server that leads now, as far as this one knows (itself when leading).
    pub leader: Option<String>,
    /// The highest epoch known in the fleet.
    pub highest_epoch: u32,
    /// New leader epochs seen taking over since this server started (its own included).
    pub changes: u64,
}

/// This server's leadership state.
pub struct Leadership {
    server_id: String,
    tag: u8,
    /// The session of the current (or last) connection.
    session: u32,
    phase: Phase,
    servers: BTreeMap<String, ServerView>,
    /// The highest epoch known: lease, statuses, fences.
    highest: u32,
    /// The highest live lease of another server, and when it arrived: a claim in progress.
    pending_claim: Option<(u32, Instant)>,
    /// The highest epoch seen leading (an `Online` status with it, or this server's lead).
    last_leader_epoch: u32,
    changes: u64,
}

/// When a phase changed in a way the dispatcher must hear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// This server now leads with this epoch.
    Leads(u32),
    /// This server stopped leading.
    SteppedDown,
}

impl Leadership {
    pub fn new(server_id: &str) -> Leadership {
        Leadership {
            server_id: server_id.to_owned(),
            tag: server_tag(server_id),
            session: 0,
            phase: Phase::Disconnected,
            servers: BTreeMap::new(),
            highest: 0,
            pending_claim: None,
            last_leader_epoch: 0,
            changes: 0,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The epoch to stamp orders with: Some while this server leads, None on a standby.
    pub fn order_epoch(&self) -> Option<u32> {
        match self.phase {
            Phase::Leader { epoch } => Some(epoch),
            _ => None,
        }
    }

    /// The highest epoch known in the fleet.
    pub fn highest(&self) -> u32 {
        self.highest
    }

    /// New leader epochs seen since start.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// The server leading now as far as this one knows: itself, or the server whose latest
    /// status is `Online` with the highest epoch.
    pub fn leader(&self) -> Option<String> {
        if self.order_epoch().is_some() {
            return Some(self.server_id.clone());
        }
        self.led_by().map(str::to_owned)
    }

    pub fn view(&self) -> LeaderView {
        LeaderView {
            server_id: self.server_id.clone(),
            role: self.phase.name(),
            epoch: self.order_epoch(),
            leader: self.leader(),
            highest_epoch: self.highest,
            changes: self.changes,
        }
    }

    /// This server's status now (`Online` with its epoch while leading, else 0).
    fn online(&self, wall_ms: u64) -> Out {
        Out::Status(ServerStatus {
            presence: Presence::Online,
            session: self.session,
            epoch: self.order_epoch().unwrap_or(0),
            timestamp_ms: wall_ms,
        })
    }

    /// Another server whose latest status is `Online` with the highest epoch (not 0).
    fn led_by(&self) -> Option<&str> {
        if self.highest == 0 {
            return None;
        }
        self.servers
            .iter()
            .find(|(id, v)| {
                id.as_str() != self.server_id
                    && v.presence == Presence::Online
                    && v.epoch == self.highest
            })
            .map(|(id, _)| id.as_str())
    }

    /// A new leader epoch took over (counted once per epoch).
    fn saw_leader(&mut self, epoch: u32) {
        if epoch > self.last_leader_epoch {
            self.last_leader_epoch = epoch;
            self.changes += 1;
        }
    }

    /// A ConnAck with `session`: publish `Online` (epoch 0) and wait for the retained state.
    pub fn on_connected(&mut self, now: Instant, wall_ms: u64, session: u32) -> Vec<Out> {
        self.session = session;
        self.phase = Phase::Waiting {
            until: now + RETAINED_WAIT,
        };
        vec![self.online(wall_ms)]
    }

    /// The link broke: the broker publishes this server's will; no more orders.
    pub fn on_disconnected(&mut self) -> Option<Change> {
        let was = self.order_epoch();
        self.phase = Phase::Disconnected;
        self.pending_claim = None;
        was.map(|epoch| {
            warn!("broker link lost: no longer the leader (epoch {epoch:#x})");
            Change::SteppedDown
        })
    }

    /// A status on `server/@status/{id}` (retained or live).
    pub fn on_status(
        &mut self,
        now: Instant,
        wall_ms: u64,
        id: &str,
        st: ServerStatus,
    ) -> (Vec<Out>, Option<Change>) {
        let newest = self.servers.get(id).map(|v| v.session);
        if stale_session(newest, st.session) {
            return (Vec::new(), None);
        }
        if newest.is_none() && self.servers.len() >= MAX_SERVERS {
            // Make room: forget a server that is not online, else ignore the newcomer.
            let gone = self
                .servers
                .iter()
                .find(|(_, v)| v.presence != Presence::Online)
                .map(|(k, _)| k.clone());
            match gone {
                Some(k) => {
                    self.servers.remove(&k);
                }
                None => return (Vec::new(), None),
            }
        }
        self.servers.insert(
            id.to_owned(),
            ServerView {
                session: st.session,
                presence: st.presence,
                epoch: st.epoch,
            },
        );
        if st.presence != Presence::Online || st.epoch == 0 {
            return (Vec::new(), None);
        }
        if id == self.server_id {
            // This server's own word (or a previous run's, not yet replaced by its will):
            // its epoch was claimed, so the next claim must be higher.
            self.highest = self.highest.max(st.epoch);
            return (Vec::new(), None);
        }
        if self
            .pending_claim
            .is_some_and(|(epoch, _)| epoch <= st.epoch)
        {
            self.pending_claim = None;
        }
        if st.epoch >= self.highest {
            self.saw_leader(st.epoch);
        }
        self.on_epoch(now, wall_ms, st.epoch, id)
    }

    /// The lease on `server/@lease`; `retained`: history from the broker, not a live claim.
    pub fn on_lease(
        &mut self,
        now: Instant,
        wall_ms: u64,
        lease: Lease,
        retained: bool,
    ) -> (Vec<Out>, Option<Change>) {
        let own = lease.session == self.session;
        match self.phase {
            Phase::Claiming {
                epoch,
                since,
                own_seen,
            } if own && lease.epoch == epoch => {
                if own_seen.is_none() {
                    self.phase = Phase::Claiming {
                        epoch,
                        since,
                        own_seen: Some(now),
                    };
                }
                self.highest = self.highest.max(epoch);
                return (Vec::new(), None);
            }
            Phase::Claiming {
                epoch,
                own_seen: Some(_),
                ..
            }
            | Phase::Leader { epoch }
                if lease.epoch < epoch =>
            {
                // Another claimant published later: the retained lease must end as the highest.
                return (vec![self.lease(epoch, wall_ms)], None);
            }
            _ => {}
        }
        if !retained && lease.epoch > self.highest {
            self.pending_claim = Some((lease.epoch, now));
        }
        self.on_epoch(now, wall_ms, lease.epoch, "the lease")
    }

    /// A Pi's fence (an ActionAck's `fence`): an epoch the Pi has seen.
    pub fn on_fence(
        &mut self,
        now: Instant,
        wall_ms: u64,
        fence: u32,
    ) -> (Vec<Out>, Option<Change>) {
        self.on_epoch(now, wall_ms, fence, "a Pi's fence")
    }

    /// A Pi refused one of this server's segments as `StaleLeader`: a higher epoch exists.
    pub fn on_stale_leader(&mut self, now: Instant, wall_ms: u64) -> (Vec<Out>, Option<Change>) {
        match self.phase {
            Phase::Leader { epoch } | Phase::Claiming { epoch, .. } => self.on_epoch(
                now,
                wall_ms,
                epoch.saturating_add(1),
                "a StaleLeader refusal",
            ),
            _ => (Vec::new(), None),
        }
    }

    /// Any epoch heard: raises `H`; a higher one than this server's claim or lead beats it.
    fn on_epoch(
        &mut self,
        now: Instant,
        wall_ms: u64,
        epoch: u32,
        from: &str,
    ) -> (Vec<Out>, Option<Change>) {
        self.highest = self.highest.max(epoch);
        match self.phase {
            Phase::Leader { epoch: mine } if epoch > mine => {
                warn!(
                    "stepping down: epoch {epoch:#x} from {from} is higher than this server's {mine:#x}"
                );
                self.phase = Phase::Waiting {
                    until: now + RETAINED_WAIT,
                };
                (vec![self.online(wall_ms)], Some(Change::SteppedDown))
            }
            Phase::Claiming { epoch: mine, .. } if epoch > mine => {
                info!("claim of epoch {mine:#x} lost to {epoch:#x} ({from}): standby");
                self.phase = Phase::Standby;
                (Vec::new(), None)
            }
            _ => (Vec::new(), None),
        }
    }

    fn lease(&self, epoch: u32, wall_ms: u64) -> Out {
        Out::Lease(Lease {
            epoch,
            session: self.session,
            timestamp_ms: wall_ms,
        })
    }

    /// Time passes: the end of the retained wait, claims, settling. Call every tick.
    pub fn tick(&mut self, now: Instant, wall_ms: u64) -> (Vec<Out>, Option<Change>) {
        match self.phase {
            Phase::Disconnected | Phase::Leader { .. } => (Vec::new(), None),
            Phase::Waiting { until } => {
                if now >= until {
                    self.phase = Phase::Standby;
                    return self.tick(now, wall_ms);
                }
                (Vec::new(), None)
            }
            Phase::Standby => (self.maybe_claim(now, wall_ms), None),
            Phase::Claiming {
                epoch,
                since,
                own_seen,
            } => match own_seen {
                Some(seen) if now.saturating_duration_since(seen) >= SETTLE => {
                    self.phase = Phase::Leader { epoch };
                    self.saw_leader(epoch);
                    info!(
                        "leader with epoch {epoch:#x} (term {}): this server gives the orders",
                        epoch_term(epoch)
                    );
                    (vec![self.online(wall_ms)], Some(Change::Leads(epoch)))
                }
                None if now.saturating_duration_since(since) >= CLAIM_TIMEOUT => {
                    warn!("claim of epoch {epoch:#x}: the lease never came back; starting over");
                    self.phase = Phase::Standby;
                    (Vec::new(), None)
                }
                _ => (Vec::new(), None),
            },
        }
    }

    fn maybe_claim(&mut self, now: Instant, wall_ms: u64) -> Vec<Out> {
        if self.led_by().is_some() {
            return Vec::new();
        }
        if let Some((_, at)) = self.pending_claim {
            if now.saturating_duration_since(at) < CLAIM_PATIENCE {
                return Vec::new();
            }
            self.pending_claim = None;
        }
        // Two live servers with one tag would claim equal epochs: only the greater id claims.
        let twin = self.servers.iter().any(|(id, v)| {
            v.presence == Presence::Online
                && id.as_str() > self.server_id.as_str()
                && server_tag(id) == self.tag
        });
        if twin {
            return Vec::new();
        }
        let term = epoch_term(self.highest) + 1;
        let Some(epoch) = leader_epoch(term.min(MAX_TERM), &self.server_id) else {
            return Vec::new();
        };
        if epoch <= self.highest {
            // The last term is used up: nothing higher can be claimed.
            return Vec::new();
        }
        info!(
            "no leader (highest epoch {:#x}): claiming epoch {epoch:#x} (term {term})",
            self.highest
        );
        self.phase = Phase::Claiming {
            epoch,
            since: now,
            own_seen: None,
        };
        vec![self.lease(epoch, wall_ms)]
    }
}

#[cfg(test)]
mod tests;
