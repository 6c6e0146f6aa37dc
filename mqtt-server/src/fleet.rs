//! The fleet registry: every Pi's presence (online, or offline and why), heartbeat age, lost
//! heartbeats, clock offset ([`crate::clock_offset`]) and session, and every entity's last
//! state. A plain struct whose methods take `now` and the shared [`Counters`], so every rule is
//! unit-tested without threads or a broker. It holds presence only: the registry thread
//! ([`crate::registry`]) routes each message here or to the dispatcher, and hands the
//! dispatcher each [`WentOffline`] these methods return.
//!
//! Presence rules:
//! - A heartbeat from an unknown or offline Pi brings it online; so does a live (not
//!   retained) `Online` status, which is sent right after the Pi connected.
//! - A retained `Online` (what the broker hands a server that (re)subscribes) is not proof of
//!   life: the Pi is recorded as offline "awaiting heartbeat" and comes online with its first
//!   heartbeat, at most one heartbeat interval (500 ms) later.
//! - `Offline` -> offline (clean shutdown), `ConnectionLost` -> offline (will), at once.
//! - One rule for stale statuses ([`stale_session`]): any status (`Online`, `Offline` or
//!   `ConnectionLost`) whose session is lower than the newest seen for that Pi is ignored (a
//!   late will of an older connection, a replayed `Online`); an equal session is applied. The
//!   leadership tracker applies the same rule per server id ([`crate::leadership`]).
//! - A live heartbeat stream wins over any status: a retained `Offline`/`ConnectionLost` (history
//!   from the broker) does not take offline a Pi heard by heartbeat since the server's link
//!   came up, and a heartbeat that contradicts an offline status (no `Online` came between)
//!   drops that status's session, so a bogus session (say `u32::MAX`) cannot make the Pi's
//!   later real will look stale.
//! - No heartbeat for `heartbeat_timeout` (measured from the last heartbeat or live Online) ->
//!   offline (heartbeat timeout), checked by [`Fleet::tick`].
//! - A Pi that connects again and again (live `Online`s) is suspected of sharing its client id
//!   with another device ([`crate::flapping`]): one warning per window instead of a presence
//!   line per flap, a `suspected_duplicate_id` counter and a marker in the table.
//!
//! Memory is bounded: at most `max_pis` Pis, Pis offline for `evict_after` are dropped, and at
//! most `max_entities` entities per Pi are tracked. State reports of unknown Pis are not
//! stored. When the registry is full, a newcomer takes the place of a Pi of lower
//! [`Standing`] (or an offline one of the same standing), else it is refused and counted
//! (`registry_full`): a stranger that only heartbeats never evicts a Pi that completed an
//! `Online` handshake or is in the fleet list (see [`crate::standing`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::ratelimit::RateLimiter;
use common::{ClientId, Heartbeat, Message, Presence, StateReport, Status};
use log::{debug, info, warn};
use mqtt_link::Held;

use crate::budget::LineBudget;
use crate::clock_offset::ClockOffset;
use crate::counters::Counters;
use crate::flapping::{Flapping, Verdict};
use crate::ingest::Incoming;
use crate::standing::{Standing, may_evict, victim_key};

/// The Pi's own limit of entities; the server tracks no more per Pi.
pub const MAX_ENTITIES_PER_PI: usize = 64;
/// A forward jump in heartbeat `seq` larger than this is a reset (Pi restart), not loss:
/// at 500 ms per heartbeat it would be 80+ minutes of heartbeats lost.
pub const MAX_PLAUSIBLE_GAP: u32 = 10_000;

/// A Pi that was online has just gone offline: the registry thread hands it to the
/// dispatcher ([`crate::dispatch::Dispatcher::on_pi_offline`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WentOffline(pub ClientId);

/// Why a Pi is offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OfflineReason {
    /// The broker published the Pi's Last Will (`ConnectionLost`): the connection died.
    Will,
    /// No heartbeat for the heartbeat timeout.
    HeartbeatTimeout,
    /// The Pi said `Offline` before disconnecting.
    CleanShutdown,
    /// Only a retained `Online` is known (e.g. after a server restart); waiting for a heartbeat.
    AwaitingHeartbeat,
}

impl OfflineReason {
    pub fn as_str(self) -> &'static str {
        match self {
            OfflineReason::Will => "will",
            OfflineReason::HeartbeatTimeout => "heartbeat timeout",
            OfflineReason::CleanShutdown => "clean shutdown",
            OfflineReason::AwaitingHeartbeat => "retained online, awaiting heartbeat",
        }
    }
}

impl std::fmt::Display for OfflineReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Pi's presence, with the server-clock time it began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PiState {
    Online {
        since: Instant,
    },
    Offline {
        since: Instant,
        reason: OfflineReason,
    },
}

/// One entity as last reported.
#[derive(Debug, Clone)]
pub struct Entity {
    pub report: StateReport,
    /// When the server received the report (its own clock; the Pi's may drift).
    pub updated: Instant,
}

/// One Pi.
#[derive(Debug, Clone)]
pub struct Pi {
    pub id: ClientId,
    pub state: PiState,
    /// The last heartbeat, or live `Online` status, on the server's clock.
    pub last_alive: Option<Instant>,
    /// The last heartbeat itself (not a live Online, nor the link coming back), server clock.
    pub last_heartbeat: Option<Instant>,
    pub last_seq: Option<u32>,
    pub heartbeats: u64,
    /// Heartbeats missing from the sequence (gaps), since the server first saw the Pi.
    pub heartbeats_lost: u64,
    /// The Pi's clock offset (`server - pi`), learnt from its heartbeats.
    pub clock: ClockOffset,
    /// The newest session seen in a status.
    pub session: Option<u32>,
    /// The protocol version of the Pi's last heartbeat; segments are sent in it (and carry a
    /// deadline from version 2 on). 1 until a heartbeat says otherwise.
    pub protocol: u8,
    /// Recent connections, to spot two devices sharing this id ([`crate::flapping`]).
    pub flapping: Flapping,
    /// How sure the server is that this Pi belongs to the fleet (who may evict whom).
    pub standing: Standing,
    pub entities: BTreeMap<u32, Entity>,
}

impl Pi {
    fn new(id: ClientId, now: Instant, standing: Standing) -> Pi {
        Pi {
            id,
            state: PiState::Offline {
                since: now,
                reason: OfflineReason::AwaitingHeartbeat,
            },
            last_alive: None,
            last_heartbeat: None,
            last_seq: None,
            heartbeats: 0,
            heartbeats_lost: 0,
            clock: ClockOffset::default(),
            session: None,
            protocol: 1,
            flapping: Flapping::default(),
            standing,
            entities: BTreeMap::new(),
        }
    }

    pub fn is_online(&self) -> bool {
        matches!(self.state, PiState::Online { .. })
    }

    pub fn offline_reason(&self) -> Option<OfflineReason> {
        match self.state {
            PiState::Offline { reason, .. } => Some(reason),
            PiState::Online { .. } => None,
        }
    }

    /// Time since the last heartbeat (or live Online), on the server's clock.
    pub fn last_alive_age(&self, now: Instant) -> Option<Duration> {
        self.last_alive.map(|t| now.saturating_duration_since(t))
    }
}

/// The registry's limits.
#[derive(Debug, Clone, Copy)]
pub struct FleetConfig {
    pub heartbeat_timeout: Duration,
    pub max_pis: usize,
    pub max_entities: usize,
    pub evict_after: Duration,
}

impl FleetConfig {
    pub fn new(heartbeat_timeout: Duration, max_pis: usize, evict_after: Duration) -> Self {
        FleetConfig {
            heartbeat_timeout,
            max_pis: max_pis.max(1),
            max_entities: MAX_ENTITIES_PER_PI,
            evict_after,
        }
    }
}

/// Presence bookkeeping and log limits, apart from the map so that a `&mut Pi` and this can
/// be borrowed together.
struct Book {
    online: usize,
    /// Presence changes: each one logged, up to a budget per second.
    transitions: LineBudget,
    /// Registry problems (full, too many entities): one line per kind per 10 s.
    registry_limits: BTreeMap<&'static str, RateLimiter>,
}

impl Book {
    fn set_online(&mut self, c: &mut Counters, pi: &mut Pi, now: Instant, why: &str) {
        if pi.is_online() {
            return;
        }
        pi.state = PiState::Online { since: now };
        self.online += 1;
        c.registry_event("went_online", 1);
        if pi.flapping.is_suspected() {
            pi.flapping.quiet_lines += 1;
        } else if self.transitions.allow(now) {
            match pi.session {
                Some(s) => info!("{}: online ({why}, session {s})", pi.id),
                None => info!("{}: online ({why})", pi.id),
            }
        }
    }

    /// Takes `pi` offline; a Pi that was online is returned as a [`WentOffline`].
    fn set_offline(
        &mut self,
        c: &mut Counters,
        pi: &mut Pi,
        now: Instant,
        reason: OfflineReason,
    ) -> Option<WentOffline> {
        match pi.state {
            PiState::Online { .. } => {
                pi.state = PiState::Offline { since: now, reason };
                self.online -= 1;
                c.registry_event("went_offline", 1);
                if pi.flapping.is_suspected() {
                    pi.flapping.quiet_lines += 1;
                } else if self.transitions.allow(now) {
                    let age = pi
                        .last_alive_age(now)
                        .map(|d| format!(", last heartbeat {} ago", crate::table::human(d)))
                        .unwrap_or_default();
                    info!("{}: offline ({reason}{age})", pi.id);
                }
                Some(WentOffline(pi.id.clone()))
            }
            PiState::Offline { since, reason: old } if old != reason => {
                // Already gone: keep when, refine why (e.g. the will after a timeout).
                pi.state = PiState::Offline { since, reason };
                debug!("{}: still offline, now known why: {reason}", pi.id);
                None
            }
            PiState::Offline { .. } => None,
        }
    }

    /// A new connection of `pi` (a live `Online`): flapping detection.
    fn on_connect(&mut self, c: &mut Counters, pi: &mut Pi, now: Instant, session: u32) {
        if let Verdict::Warn {
            newly,
            connects,
            session_repeats,
        } = pi.flapping.on_connect(now, session)
        {
            if newly {
                c.registry_event("suspected_duplicate_id", 1);
            }
            let looks = if session_repeats > 0 {
                format!(
                    "its session numbers repeated {session_repeats} times: two devices with this id?"
                )
            } else {
                "sessions keep growing: one device on a bad link, or two with this id".to_string()
            };
            let held = match std::mem::take(&mut pi.flapping.quiet_lines) {
                0 => String::new(),
                n => format!(", {} since the last warning", Held(n).count("")),
            };
            warn!(
                "{}: suspected duplicate client id: {connects} connections within {} ({looks}); \
                 its presence changes are not logged while it flaps{held}",
                pi.id,
                crate::table::human(crate::flapping::WINDOW),
            );
        }
    }

    fn registry_warn(
        &mut self,
        c: &mut Counters,
        now: Instant,
        label: &'static str,
        line: impl FnOnce() -> String,
    ) {
        c.registry_event(label, 1);
        let lim = self
            .registry_limits
            .entry(label)
            .or_insert_with(|| RateLimiter::new(Duration::from_secs(10)));
        if let Some(held) = lim.check(now) {
            warn!("{}{}", line(), Held(held).note("more like this"));
        }
    }
}

/// The registry.
pub struct Fleet {
    cfg: FleetConfig,
    pis: BTreeMap<String, Pi>,
    book: Book,
    /// The earliest heartbeat deadline of an online Pi, as of the last [`Fleet::tick`].
    next_expiry: Option<Instant>,
    /// Set while the server's own broker link is down: no heartbeat can arrive then, so
    /// silence says nothing about the Pis and heartbeat timeouts are held.
    link_down_since: Option<Instant>,
    /// When the server's link last came up: a heartbeat since then is live proof of life
    /// that no retained status can contradict.
    link_up_at: Option<Instant>,
    /// The fleet list (`fleet_file`): these ids are [`Standing::Listed`].
    listed: BTreeSet<String>,
    /// Online Pis evicted to make room for a Pi of higher standing, handed to the dispatcher
    /// by the next [`Fleet::tick`] (their segments are settled as for a Pi gone offline).
    evicted_online: Vec<WentOffline>,
}

impl Fleet {
    pub fn new(cfg: FleetConfig) -> Fleet {
        Fleet {
            cfg,
            pis: BTreeMap::new(),
            book: Book {
                online: 0,
                transitions: LineBudget::new(50, Duration::from_secs(1)),
                registry_limits: BTreeMap::new(),
            },
            next_expiry: None,
            link_down_since: None,
            link_up_at: None,
            listed: BTreeSet::new(),
            evicted_online: Vec::new(),
        }
    }

    /// Sets the fleet list: these ids rank above every other ([`Standing::Listed`]).
    pub fn with_fleet_list(mut self, ids: BTreeSet<String>) -> Fleet {
        self.listed = ids;
        for pi in self.pis.values_mut() {
            if self.listed.contains(pi.id.as_str()) {
                pi.standing = Standing::Listed;
            }
        }
        self
    }

    /// Ids in the fleet list.
    pub fn listed_count(&self) -> usize {
        self.listed.len()
    }

    /// The server lost the broker: hold heartbeat timeouts (the Pis are not known to be gone,
    /// only unheard), instead of declaring the whole fleet offline 1.5 s later.
    pub fn link_down(&mut self, now: Instant) {
        self.link_down_since.get_or_insert(now);
        self.next_expiry = None;
    }

    /// The link is back: every Pi still listed online gets a fresh heartbeat timeout to prove
    /// it is alive, counted from now. Wills published meanwhile were lost with the clean
    /// session; the retained statuses that arrive with the new subscription carry them.
    pub fn link_up(&mut self, now: Instant) {
        self.link_up_at = Some(now);
        if self.link_down_since.take().is_some() {
            for pi in self.pis.values_mut() {
                if pi.is_online() {
                    pi.last_alive = Some(now);
                }
            }
        }
    }

    /// When the next heartbeat timeout may fire, as of the last [`Fleet::tick`]: the registry
    /// ticks again right then, so a silent Pi goes offline on time rather than on the next
    /// 50 ms tick. (Heartbeats only move deadlines later; a Pi that comes online later has a
    /// later deadline than every Pi already online.)
    pub fn next_expiry(&self) -> Option<Instant> {
        self.next_expiry
    }

    pub fn config(&self) -> &FleetConfig {
        &self.cfg
    }

    /// Pis tracked (online and offline).
    pub fn len(&self) -> usize {
        self.pis.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pis.is_empty()
    }

    pub fn online_count(&self) -> usize {
        self.book.online
    }

    pub fn pi(&self, id: &str) -> Option<&Pi> {
        self.pis.get(id)
    }

    /// Every Pi, sorted by id.
    pub fn pis(&self) -> impl Iterator<Item = &Pi> {
        self.pis.values()
    }

    /// A heartbeat, state report or status (the registry thread routes acks to the
    /// dispatcher); returns the Pi if it has just gone offline.
    pub fn on_message(
        &mut self,
        now: Instant,
        wall_ms: u64,
        m: &Incoming<'_>,
        retained: bool,
        c: &mut Counters,
    ) -> Option<WentOffline> {
        let id = m.client_id;
        match m.message {
            Message::Heartbeat(hb) => {
                self.on_heartbeat(now, wall_ms, id, hb, c);
                if let Some(pi) = self.pis.get_mut(id) {
                    pi.protocol = m.version;
                }
                None
            }
            Message::State(s) => {
                self.on_state(now, id, s, c);
                None
            }
            Message::Status(s) => self.on_status(now, wall_ms, id, s, retained, c),
            Message::Ack(_)
            | Message::Segment(_)
            | Message::Action(_)
            | Message::ActionAck(_)
            | Message::ServerStatus(_)
            | Message::Lease(_) => None,
        }
    }

    /// The Pi with this id, added if new and there is room; `claim` is what the message
    /// shows of it ([`Standing::Stranger`] for a heartbeat, [`Standing::Claimed`] for an
    /// `Online` status), raised to [`Standing::Listed`] for an id in the fleet list. When
    /// full, a Pi it outranks makes room ([`Fleet::evict_one_for`]); None if there is none:
    /// the newcomer is refused.
    fn entry(
        &mut self,
        now: Instant,
        id: &str,
        claim: Standing,
        c: &mut Counters,
    ) -> Option<&mut Pi> {
        if !self.pis.contains_key(id) {
            let client = ClientId::new(id).ok()?; // ids come from `parse_topic`: always valid
            let standing = if self.listed.contains(id) {
                Standing::Listed
            } else {
                claim
            };
            if self.pis.len() >= self.cfg.max_pis && !self.evict_one_for(now, id, standing, c) {
                return None;
            }
            self.pis
                .insert(id.to_owned(), Pi::new(client, now, standing));
            c.registry_event("pis_added", 1);
        }
        self.pis.get_mut(id)
    }

    /// Makes room for `newcomer` (of standing `standing`) by evicting the Pi of lowest
    /// standing it may replace ([`may_evict`]): offline before online, gone or unheard
    /// longest first. False (refused, counted `registry_full`) if there is none.
    fn evict_one_for(
        &mut self,
        now: Instant,
        newcomer: &str,
        standing: Standing,
        c: &mut Counters,
    ) -> bool {
        // A stranger may only replace an offline stranger: when every Pi is online, no scan.
        let victim = if standing == Standing::Stranger && self.pis.len() == self.book.online {
            None
        } else {
            self.pis
                .values()
                .filter(|p| may_evict(standing, p.standing, p.is_online()))
                .map(|p| {
                    let since = match p.state {
                        PiState::Offline { since, .. } => since,
                        PiState::Online { since } => p.last_alive.unwrap_or(since),
                    };
                    (victim_key(p.standing, p.is_online(), since), p.id.as_str())
                })
                .min()
                .map(|(key, id)| (key, id.to_owned()))
        };
        let Some(((victim_standing, online, _), victim)) = victim else {
            let (max, online) = (self.cfg.max_pis, self.book.online);
            self.book.registry_warn(c, now, "registry_full", || {
                format!(
                    "registry full ({max} Pis, {online} online, none a {} may replace): not \
                     tracking {newcomer} (raise max_pis if the fleet is really this big, or \
                     list the fleet in fleet_file)",
                    standing.as_str()
                )
            });
            return false;
        };
        if let Some(gone) = self.pis.remove(&victim) {
            if online {
                self.book.online -= 1;
                self.evicted_online.push(WentOffline(gone.id));
            }
        }
        c.registry_event("pis_evicted", 1);
        if self.book.transitions.allow(now) {
            let what = if online {
                "online, heard least recently"
            } else {
                "offline longest"
            };
            info!(
                "{victim}: forgotten (registry full; {} {what}) to track {newcomer} ({})",
                victim_standing.as_str(),
                standing.as_str()
            );
        }
        true
    }

    pub fn on_heartbeat(
        &mut self,
        now: Instant,
        wall_ms: u64,
        id: &str,
        hb: Heartbeat,
        c: &mut Counters,
    ) {
        if self.entry(now, id, Standing::Stranger, c).is_none() {
            return;
        }
        let Fleet { pis, book, .. } = self;
        let Some(pi) = pis.get_mut(id) else {
            return;
        };
        if let Some(last) = pi.last_seq {
            let gap = hb.seq.wrapping_sub(last);
            if gap == 0 {
                // A repeat of the last one; nothing new about the sequence.
            } else if gap <= MAX_PLAUSIBLE_GAP {
                let lost = u64::from(gap - 1);
                pi.heartbeats_lost += lost;
                if lost > 0 {
                    c.registry_event("heartbeats_lost", lost);
                }
            } else {
                // Backwards or an absurd jump: the Pi restarted its counter.
                c.registry_event("seq_resets", 1);
            }
        }
        pi.last_seq = Some(hb.seq);
        pi.heartbeats += 1;
        pi.standing = pi.standing.on_heartbeat();
        pi.clock.sample(wall_ms, hb.timestamp_ms);
        pi.last_alive = Some(now);
        pi.last_heartbeat = Some(now);
        if let PiState::Offline {
            reason: OfflineReason::CleanShutdown | OfflineReason::Will,
            ..
        } = pi.state
        {
            // Alive after all: the status that said otherwise was wrong, its session too.
            pi.session = None;
        }
        book.set_online(c, pi, now, "heartbeat");
    }

    pub fn on_state(&mut self, now: Instant, id: &str, s: StateReport, c: &mut Counters) {
        let max_entities = self.cfg.max_entities;
        let Fleet { pis, book, .. } = self;
        let Some(pi) = pis.get_mut(id) else {
            // Heartbeats announce Pis; a state report alone does not grow the registry.
            c.registry_event("state_from_unknown_pi", 1);
            return;
        };
        if let Some(e) = pi.entities.get_mut(&s.entity_id) {
            e.report = s;
            e.updated = now;
        } else if pi.entities.len() >= max_entities {
            let pid = pi.id.clone();
            book.registry_warn(c, now, "entities_full", || {
                format!(
                    "{pid}: more than {max_entities} entities; not tracking entity {}",
                    s.entity_id
                )
            });
        } else {
            pi.entities.insert(
                s.entity_id,
                Entity {
                    report: s,
                    updated: now,
                },
            );
        }
    }

    /// A status; returns the Pi if it has just gone offline.
    pub fn on_status(
        &mut self,
        now: Instant,
        wall_ms: u64,
        id: &str,
        st: Status,
        retained: bool,
        c: &mut Counters,
    ) -> Option<WentOffline> {
        let is_new = !self.pis.contains_key(id);
        // A session from the future (seeded from a clock far ahead, or forged, e.g.
        // u32::MAX) applies its presence but never becomes the newest session: otherwise
        // the Pi's later real will would count as stale (offline only by timeout).
        let trusted = !session_from_the_future(st.session, wall_ms);
        if !trusted {
            c.registry_event("future_session", 1);
            debug!(
                "{id}: {:?} of session {} is more than a day ahead of this server's clock: its session is not kept",
                st.presence, st.session
            );
        }
        let claim = match st.presence {
            Presence::Online => Standing::Claimed,
            Presence::Offline | Presence::ConnectionLost => Standing::Stranger,
        };
        self.entry(now, id, claim, c)?;
        let link_up_at = self.link_up_at;
        let Fleet { pis, book, .. } = self;
        let pi = pis.get_mut(id)?;
        if stale_session(pi.session, st.session) {
            c.registry_event("stale_status", 1);
            debug!(
                "{id}: ignored a stale {:?} of session {} (newest is {:?})",
                st.presence, st.session, pi.session
            );
            return None;
        }
        match st.presence {
            Presence::Online => {
                if trusted {
                    pi.session = Some(st.session);
                }
                pi.standing = pi.standing.on_online_status();
                if retained {
                    // Not proof of life: wait for a heartbeat (see the module comment).
                    if !pi.is_online() {
                        // Offline already: never a transition.
                        book.set_offline(c, pi, now, OfflineReason::AwaitingHeartbeat);
                        if is_new {
                            debug!(
                                "{id}: retained online (session {}); awaiting heartbeat",
                                st.session
                            );
                        }
                    }
                } else {
                    pi.last_alive = Some(now);
                    book.on_connect(c, pi, now, st.session);
                    book.set_online(c, pi, now, "online status");
                }
                None
            }
            Presence::Offline | Presence::ConnectionLost => {
                let heard_live = pi.is_online()
                    && pi
                        .last_heartbeat
                        .is_some_and(|hb| link_up_at.is_none_or(|up| hb >= up));
                if retained && heard_live {
                    c.registry_event("stale_status", 1);
                    debug!(
                        "{id}: ignored a retained {:?} of session {}: heartbeating since the link came up",
                        st.presence, st.session
                    );
                    return None;
                }
                if trusted {
                    pi.session = Some(st.session);
                }
                let reason = if st.presence == Presence::Offline {
                    OfflineReason::CleanShutdown
                } else {
                    OfflineReason::Will
                };
                if is_new {
                    pi.state = PiState::Offline { since: now, reason };
                    debug!("{id}: known offline ({reason}) from a retained status");
                    None
                } else {
                    book.set_offline(c, pi, now, reason)
                }
            }
        }
    }

    /// Heartbeat timeouts and eviction of Pis offline for `evict_after`; call every ~50 ms.
    /// Returns the Pis that timed out.
    pub fn tick(&mut self, now: Instant, c: &mut Counters) -> Vec<WentOffline> {
        let timeout = self.cfg.heartbeat_timeout;
        let evict_after = self.cfg.evict_after;
        let held = self.link_down_since.is_some();
        let Fleet {
            pis,
            book,
            next_expiry,
            evicted_online,
            ..
        } = self;
        let mut evict = Vec::new();
        let mut gone = std::mem::take(evicted_online);
        *next_expiry = None;
        for pi in pis.values_mut() {
            if pi.flapping.settle(now) {
                info!(
                    "{}: no new connection for {}; no longer suspected of a duplicate client id",
                    pi.id,
                    crate::table::human(crate::flapping::WINDOW)
                );
            }
            match pi.state {
                PiState::Online { .. } if held => {}
                PiState::Online { since } => {
                    let alive = pi.last_alive.unwrap_or(since);
                    if now.saturating_duration_since(alive) > timeout {
                        gone.extend(book.set_offline(c, pi, now, OfflineReason::HeartbeatTimeout));
                    } else {
                        let deadline = alive + timeout;
                        *next_expiry = Some(next_expiry.map_or(deadline, |d| d.min(deadline)));
                    }
                }
                PiState::Offline { since, .. } => {
                    if now.saturating_duration_since(since) >= evict_after {
                        evict.push(pi.id.as_str().to_owned());
                    }
                }
            }
        }
        if !evict.is_empty() {
            for id in &evict {
                pis.remove(id);
            }
            c.registry_event("pis_evicted", evict.len() as u64);
            info!(
                "forgot {} Pi(s) offline for more than {}: {}{}",
                evict.len(),
                crate::table::human(evict_after),
                evict
                    .iter()
                    .take(10)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                if evict.len() > 10 { ", ..." } else { "" }
            );
        }
        if let Some(n) = book.transitions.flush(now) {
            info!("{} (too many at once)", Held(n).count("presence changes"));
        }
        gone
    }
}

/// A [`Fleet`] with its own counters and a record of the Pis that went offline, so unit tests
/// (here, in the dispatcher and the table) drive it as the registry thread does.
/// The one stale-status rule (docs/protocol.md, "Status and sessions"), for Pis and servers
/// alike: a status whose session is lower than the newest seen for its sender is stale and
/// ignored, whatever its presence; an equal session is applied.
pub fn stale_session(newest: Option<u32>, session: u32) -> bool {
    newest.is_some_and(|newest| session < newest)
}

/// How far ahead of the server's wall clock a session may be (sessions count seconds from
/// the Pi's clock, persisted across restarts): the same day's window as clock offsets
/// ([`crate::clock_offset::SANE_OFFSET_MS`]).
pub const SESSION_AHEAD_S: u64 = crate::clock_offset::SANE_OFFSET_MS / 1000;

/// Whether `session` is further ahead of `wall_ms` (the server's clock) than
/// [`SESSION_AHEAD_S`].
pub fn session_from_the_future(session: u32, wall_ms: u64) -> bool {
    u64::from(session) > wall_ms / 1000 + SESSION_AHEAD_S
}

/// The server's wall clock in [`TestFleet::on_status`]: 2025-11-25, so test sessions
/// (small numbers, or today's seconds) are not from the future.
#[cfg(test)]
pub(crate) const TEST_WALL_MS: u64 = 1_764_000_000_000;

#[cfg(test)]
pub(crate) struct TestFleet {
    pub fleet: Fleet,
    pub counters: Counters,
    went_offline: Vec<String>,
}

#[cfg(test)]
impl TestFleet {
    pub fn new(cfg: FleetConfig) -> TestFleet {
        TestFleet {
            fleet: Fleet::new(cfg),
            counters: Counters::default(),
            went_offline: Vec::new(),
        }
    }

    fn record(&mut self, gone: impl IntoIterator<Item = WentOffline>) {
        self.went_offline
            .extend(gone.into_iter().map(|w| w.0.as_str().to_owned()));
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn counters_mut(&mut self) -> &mut Counters {
        &mut self.counters
    }

    /// Pis that went offline since the last call.
    pub fn take_went_offline(&mut self) -> Vec<String> {
        std::mem::take(&mut self.went_offline)
    }

    pub fn on_heartbeat(&mut self, now: Instant, wall_ms: u64, id: &str, hb: Heartbeat) {
        self.fleet
            .on_heartbeat(now, wall_ms, id, hb, &mut self.counters);
    }

    pub fn on_state(&mut self, now: Instant, id: &str, s: StateReport) {
        self.fleet.on_state(now, id, s, &mut self.counters);
    }

    pub fn on_status(&mut self, now: Instant, id: &str, st: Status, retained: bool) {
        let gone = self
            .fleet
            .on_status(now, TEST_WALL_MS, id, st, retained, &mut self.counters);
        self.record(gone);
    }

    pub fn tick(&mut self, now: Instant) {
        let gone = self.fleet.tick(now, &mut self.counters);
        self.record(gone);
    }

    /// A valid live (not retained) publish, as the registry thread hands it over.
    pub fn on_live(&mut self, now: Instant, wall_ms: u64, topic: &str, payload: &[u8]) {
        let m = crate::ingest::classify(topic, payload).expect("a valid publish");
        let gone = self
            .fleet
            .on_message(now, wall_ms, &m, false, &mut self.counters);
        self.record(gone);
    }
}

#[cfg(test)]
impl std::ops::Deref for TestFleet {
    type Target = Fleet;
    fn deref(&self) -> &Fleet {
        &self.fleet
    }
}

#[cfg(test)]
impl std::ops::DerefMut for TestFleet {
    fn deref_mut(&mut self) -> &mut Fleet {
        &mut self.fleet
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HB_TIMEOUT: Duration = Duration::from_millis(1500);

    fn fleet(max_pis: usize) -> TestFleet {
        TestFleet::new(FleetConfig::new(
            HB_TIMEOUT,
            max_pis,
            Duration::from_secs(600),
        ))
    }

    fn hb(seq: u32, ts: u64) -> Heartbeat {
        Heartbeat {
            seq,
            timestamp_ms: ts,
        }
    }

    fn status(p: Presence, session: u32) -> Status {
        Status {
            presence: p,
            session,
            timestamp_ms: 0,
        }
    }

    fn state(entity_id: u32, x: i32) -> StateReport {
        StateReport::at_rest(entity_id, 0, common::Point::new(x, 0), 0)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn heartbeat_brings_online_and_timeout_takes_offline() {
        let t0 = Instant::now();
        let mut f = fleet(10);
        f.on_heartbeat(t0, 1000, "pi-1", hb(1, 1000));
        assert!(f.pi("pi-1").unwrap().is_online());
        assert_eq!(f.online_count(), 1);
        f.tick(t0 + ms(1500));
        assert!(
            f.pi("pi-1").unwrap().is_online(),
            "exactly the timeout is still online"
        );
        f.tick(t0 + ms(1501));
        let pi = f.pi("pi-1").unwrap();
        assert_eq!(pi.offline_reason(), Some(OfflineReason::HeartbeatTimeout));
        assert_eq!(f.online_count(), 0);
        assert_eq!(f.take_went_offline(), vec!["pi-1".to_string()]);
        // Further ticks do not repeat the transition.
        f.tick(t0 + ms(3000));
        assert!(f.take_went_offline().is_empty());
        assert_eq!(f.counters().registry_of("went_offline"), 1);
        // Back with the next heartbeat.
        f.on_heartbeat(t0 + ms(4000), 5000, "pi-1", hb(2, 5000));
        assert!(f.pi("pi-1").unwrap().is_online());
        assert_eq!(f.counters().registry_of("went_online"), 2);
    }

    #[test]
    fn timeouts_are_held_while_the_server_link_is_down() {
        let t0 = Instant::now();
        let mut f = fleet(10);
        f.on_heartbeat(t0, 1000, "pi-1", hb(1, 1000));
        f.link_down(t0 + ms(100));
        f.tick(t0 + ms(5000));
        assert!(f.pi("pi-1").unwrap().is_online(), "unheard is not gone");
        assert_eq!(f.next_expiry(), None);
        // Back at 6 s: a fresh timeout from then on.
        f.link_up(t0 + ms(6000));
        f.tick(t0 + ms(7400));
        assert!(f.pi("pi-1").unwrap().is_online());
        f.tick(t0 + ms(7501));
        assert_eq!(
            f.pi("pi-1").unwrap().offline_reason(),
            Some(OfflineReason::HeartbeatTimeout)
        );
    }

    #[test]
    fn next_expiry_is_the_earliest_heartbeat_deadline() {
        let t0 = Instant::now();
        let mut f = fleet(10);
        f.tick(t0);
        assert_eq!(f.next_expiry(), None);
        f.on_heartbeat(t0, 0, "a", hb(1, 0));
        f.on_heartbeat(t0 + ms(200), 0, "b", hb(1, 0));
        f.tick(t0 + ms(300));
        assert_eq!(f.next_expiry(), Some(t0 + HB_TIMEOUT));
        f.on_heartbeat(t0 + ms(400), 0, "a", hb(2, 0));
        f.tick(t0 + ms(450));
        assert_eq!(f.next_expiry(), Some(t0 + ms(200) + HB_TIMEOUT));
    }

    #[test]
    fn will_and_clean_shutdown_take_offline_at_once() {
        let t0 = Instant::now();
        let mut f = fleet(10);
        f.on_status(t0, "a", status(Presence::Online, 5), false);
        f.on_status(t0, "b", status(Presence::Online, 7), false);
        assert_eq!(f.online_count(), 2);
        f.on_status(t0 + ms(10), "a", status(Presence::ConnectionLost, 5), false);
        f.on_status(t0 + ms(10), "b", status(Presence::Offline, 7), false);
        assert_eq!(
            f.pi("a").unwrap().offline_reason(),
            Some(OfflineReason::Will)
        );
        assert_eq!(
            f.pi("b").unwrap().offline_reason(),
            Some(OfflineReason::CleanShutdown)
        );
        assert_eq!(f.online_count(), 0);
        let mut gone = f.take_went_offline();
        gone.sort();
        assert_eq!(gone, vec!["a", "b"]);
    }

    #[test]
    fn late_will_of_an_older_session_is_ignored_and_so_is_an_older_online() {
        let t0 = Instant::now();
        let mut f = fleet(10);
        f.on_status(t0, "a", status(Presence::Online, 100), false);
        f.on_status(t0, "a", status(Presence::Online, 101), false);
        f.on_status(t0, "a", status(Presence::ConnectionLost, 100), false);
        assert!(f.pi("a").unwrap().is_online());
        assert_eq!(f.counters().registry_of("stale_status"), 1);
        // Same session applies.
        f.on_status(t0, "a", status(Presence::ConnectionLost, 101), false);
        assert!(!f.pi("a").unwrap().is_online());
        // Issue #14's case: Online 1000, Online 500, ConnectionLost 500 leaves the Pi online.
        f.on_status(t0, "b", status(Presence::Online, 1000), false);
        f.on_status(t0, "b", status(Presence::Online, 500), false);
        f.on_status(t0, "b", status(Presence::ConnectionLost, 500), false);
        assert!(f.pi("b").unwrap().is_online());
        assert_eq!(f.pi("b").unwrap().session, Some(1000));
        // A Pi whose session went back (no stored counter, clock behind) is brought online by
        // its heartbeats, which also drop the session its old will set.
        f.on_heartbeat(t0, 0, "a", hb(1, 0));
        assert!(f.pi("a").unwrap().is_online());
        f.on_status(t0, "a", status(Presence::Offline, 3), false);
        assert_eq!(
            f.pi("a").unwrap().offline_reason(),
            Some(OfflineReason::CleanShutdown)
        );
    }

    /// Every order of two live statuses, the second with a lower, equal or higher session:
    /// a lower one is ignored whatever the presences, an equal or higher one is applied.
    #[test]
    fn one_stale_status_rule_for_every_order_of_presences_and_sessions() {
        let presences = [
            Presence::Online,
            Presence::Offline,
            Presence::ConnectionLost,
        ];
        let expect = |p: Presence| match p {
            Presence::Online => None,
            Presence::Offline => Some(OfflineReason::CleanShutdown),
            Presence::ConnectionLost => Some(OfflineReason::Will),
        };
        let t0 = Instant::now();
        for first in presences {
            for second in presences {
                for (delta, applied) in [(-1i64, false), (0, true), (1, true)] {
                    let mut f = fleet(10);
                    let s1 = 1_000u32;
                    let s2 = (i64::from(s1) + delta) as u32;
                    f.on_status(t0, "a", status(first, s1), false);
                    f.on_status(t0 + ms(10), "a", status(second, s2), false);
                    let pi = f.pi("a").unwrap();
                    let case = format!("{first:?} {s1} then {second:?} {s2}");
                    let (want, session) = if applied {
                        (expect(second), s2)
                    } else {
                        (expect(first), s1)
                    };
                    assert_eq!(pi.offline_reason(), want, "{case}");
                    assert_eq!(pi.is_online(), want.is_none(), "{case}");
                    assert_eq!(pi.session, Some(session), "{case}");
                    assert_eq!(
                        f.counters().registry_of("stale_status"),
                        u64::from(!applied),
                        "{case}"
                    );
                }
            }
        }
    }

    #[test]
    fn retained_online_waits_for_a_heartbeat() {
        let t0 = Instant::now();
        let mut f = fleet(10);
        f.on_status(t0, "a", status(Presence::Online, 9), true);
        let pi = f.pi("a").unwrap();
        assert_eq!(pi.offline_reason(), Some(OfflineReason::AwaitingHeartbeat));
        assert_eq!(pi.session, Some(9));
        f.on_heartbeat(t0 + ms(300), 0, "a", hb(1, 0));
        assert!(f.pi("a").unwrap().is_online());
        // A retained offline status rebuilds the offline view.
        f.on_status(t0, "b", status(Presence::ConnectionLost, 4), true);
        assert_eq!(
            f.pi("b").unwrap().offline_reason(),
            Some(OfflineReason::Will)
        );
        assert!(f.take_went_offline().is_empty(), "b was never online here");
    }

    #[test]
    fn will_after_timeout_refines_the_reason_without_a_new_transition() {
        let t0 = Instant::now();
        let mut f = fleet(10);
        f.on_heartbeat(t0, 0, "a", hb(1, 0));
        f.tick(t0 + ms(2000));
        assert_eq!(f.take_went_offline().len(), 1);
        f.on_status(
            t0 + ms(2100),
            "a",
            status(Presence::ConnectionLost, 1),
            false,
        );
        assert_eq!(
            f.pi("a").unwrap().offline_reason(),
            Some(OfflineReason::Will)
        );
        assert!(f.take_went_offline().is_empty());
        assert_eq!(f.counters().registry_of("went_offline"), 1);
    }

    #[test]
    fn lost_heartbeats_count_gaps_and_survive_restarts() {
        let t0 = Instant::now();
        let mut f = fleet(10);
        for seq in [1, 2, 3, 6, 7, 10] {
            f.on_heartbeat(t0, 0, "a", hb(seq, 0));
        }
        assert_eq!(f.pi("a").unwrap().heartbeats_lost, 2 + 2);
        // The Pi restarts: its counter begins again. Not four billion lost.
        f.on_heartbeat(t0, 0, "a", hb(0, 0));
        f.on_heartbeat(t0, 0, "a", hb(1, 0));
        assert_eq!(f.pi("a").unwrap().heartbeats_lost, 4);
        assert_eq!(f.counters().registry_of("seq_resets"), 1);
        // Wrapping past u32::MAX is a gap of one.
        f.on_heartbeat(t0, 0, "b", hb(u32::MAX - 1, 0));
        f.on_heartbeat(t0, 0, "b", hb(u32::MAX, 0));
        f.on_heartbeat(t0, 0, "b", hb(0, 0));
        assert_eq!(f.pi("b").unwrap().heartbeats_lost, 0);
        // An absurd jump forward is a reset too.
        f.on_heartbeat(t0, 0, "b", hb(3_000_000, 0));
        assert_eq!(f.pi("b").unwrap().heartbeats_lost, 0);
        assert_eq!(f.counters().registry_of("heartbeats_lost"), 4);
    }

    #[test]
    fn entities_are_tracked_per_pi_and_capped() {
        let t0 = Instant::now();
        let mut f = fleet(10);
        f.on_state(t0, "ghost", state(1, 5));
        assert!(f.pi("ghost").is_none());
        assert_eq!(f.counters().registry_of("state_from_unknown_pi"), 1);
        f.on_heartbeat(t0, 0, "a", hb(1, 0));
        f.on_state(t0, "a", state(1, 5));
        f.on_state(t0 + ms(100), "a", state(1, 7));
        let e = &f.pi("a").unwrap().entities[&1];
        assert_eq!(e.report.x, 7);
        assert_eq!(e.updated, t0 + ms(100));
        for id in 2..=(MAX_ENTITIES_PER_PI as u32 + 10) {
            f.on_state(t0, "a", state(id, 0));
        }
        assert_eq!(f.pi("a").unwrap().entities.len(), MAX_ENTITIES_PER_PI);
        assert_eq!(f.counters().registry_of("entities_full"), 10);
    }

    #[test]
    fn full_registry_evicts_the_pi_offline_longest_or_refuses() {
        let t0 = Instant::now();
        let mut f = fleet(3);
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            f.on_heartbeat(t0 + ms(i as u64), 0, id, hb(1, 0));
        }
        // All online: a newcomer is refused.
        f.on_heartbeat(t0 + ms(10), 0, "d", hb(1, 0));
        assert!(f.pi("d").is_none());
        assert_eq!(f.len(), 3);
        assert_eq!(f.counters().registry_of("registry_full"), 1);
        // b then a go offline; the newcomer replaces b, the one offline longest.
        f.on_status(t0 + ms(20), "b", status(Presence::Offline, 1), false);
        f.on_status(t0 + ms(30), "a", status(Presence::Offline, 1), false);
        f.on_heartbeat(t0 + ms(40), 0, "d", hb(1, 0));
        assert!(f.pi("d").is_some() && f.pi("b").is_none() && f.pi("a").is_some());
        assert_eq!(f.len(), 3);
        assert_eq!(f.counters().registry_of("pis_evicted"), 1);
    }

    #[test]
    fn flood_of_made_up_ids_stays_within_the_cap() {
        let t0 = Instant::now();
        let mut f = fleet(100);
        for i in 0..10_000u64 {
            let now = t0 + ms(i / 5); // 5000 per second for two seconds
            f.on_heartbeat(now, 0, &format!("fake-{i}"), hb(1, 0));
            if i % 50 == 0 {
                f.tick(now);
            }
            assert!(f.len() <= 100);
        }
        let c = f.counters();
        assert_eq!(
            c.registry_of("pis_added"),
            100 + c.registry_of("pis_evicted")
        );
        assert_eq!(
            c.registry_of("pis_added") + c.registry_of("registry_full"),
            10_000
        );
    }

    /// A real Pi's handshake: a live `Online` status, then a heartbeat.
    fn handshake(f: &mut TestFleet, now: Instant, id: &str) {
        f.on_status(now, id, status(Presence::Online, 1), false);
        f.on_heartbeat(now, 0, id, hb(1, 0));
    }

    #[test]
    fn a_stranger_never_evicts_a_pi_that_completed_the_handshake() {
        let t0 = Instant::now();
        let mut f = fleet(3);
        handshake(&mut f, t0, "real");
        assert_eq!(f.pi("real").unwrap().standing, Standing::Known);
        f.on_heartbeat(t0, 0, "fake-1", hb(1, 0));
        f.on_heartbeat(t0, 0, "fake-2", hb(1, 0));
        assert_eq!(f.pi("fake-1").unwrap().standing, Standing::Stranger);
        // The real Pi is killed: its will takes it offline, the only offline Pi.
        f.on_status(
            t0 + ms(10),
            "real",
            status(Presence::ConnectionLost, 1),
            false,
        );
        for i in 3..50 {
            f.on_heartbeat(t0 + ms(20), 0, &format!("fake-{i}"), hb(1, 0));
        }
        assert!(
            f.pi("real").is_some(),
            "a known Pi is never forgotten for a stranger"
        );
        assert_eq!(f.counters().registry_of("registry_full"), 47);
        assert_eq!(f.counters().registry_of("pis_evicted"), 0);
        // An offline stranger still makes room for another stranger.
        f.tick(t0 + ms(1600));
        assert_eq!(f.online_count(), 0, "the fakes timed out");
        f.on_heartbeat(t0 + ms(1700), 0, "fake-99", hb(1, 0));
        assert!(f.pi("fake-99").is_some() && f.pi("real").is_some());
        let ids: Vec<&str> = f.pis().map(|p| p.id.as_str()).collect();
        assert!(f.pi("fake-1").is_none(), "{ids:?}");
        // The real Pi restarts: still tracked, still known.
        handshake(&mut f, t0 + ms(1800), "real");
        let real = f.pi("real").unwrap();
        assert!(real.is_online());
        assert_eq!(real.standing, Standing::Known);
    }

    #[test]
    fn a_pi_starting_its_handshake_may_replace_an_online_stranger() {
        let t0 = Instant::now();
        let mut f = fleet(2);
        f.on_heartbeat(t0, 0, "fake-1", hb(1, 0));
        f.on_heartbeat(t0 + ms(10), 0, "fake-2", hb(1, 0));
        f.on_heartbeat(t0 + ms(20), 0, "fake-1", hb(2, 0));
        // A full registry of online strangers: a new stranger is refused ...
        f.on_heartbeat(t0 + ms(30), 0, "fake-3", hb(1, 0));
        assert!(f.pi("fake-3").is_none());
        // ... a Pi announcing itself with Online takes the place of the one unheard longest.
        f.on_status(t0 + ms(40), "real", status(Presence::Online, 7), false);
        assert!(f.pi("real").unwrap().is_online());
        assert_eq!(f.pi("real").unwrap().standing, Standing::Claimed);
        assert!(f.pi("fake-2").is_none() && f.pi("fake-1").is_some());
        assert_eq!(f.online_count(), 2);
        assert_eq!(f.counters().registry_of("pis_evicted"), 1);
        // The dispatcher hears of the evicted online Pi with the next tick.
        f.tick(t0 + ms(50));
        assert_eq!(f.take_went_offline(), vec!["fake-2".to_string()]);
        f.on_heartbeat(t0 + ms(60), 0, "real", hb(1, 0));
        assert_eq!(f.pi("real").unwrap().standing, Standing::Known);
        // A retained Online, then a heartbeat, completes a handshake too (server restart).
        let mut f = fleet(2);
        f.on_status(t0, "old", status(Presence::Online, 3), true);
        assert_eq!(f.pi("old").unwrap().standing, Standing::Claimed);
        f.on_heartbeat(t0 + ms(10), 0, "old", hb(9, 0));
        assert_eq!(f.pi("old").unwrap().standing, Standing::Known);
    }

    #[test]
    fn when_full_of_known_pis_newcomers_are_refused_and_counted() {
        let t0 = Instant::now();
        let mut f = fleet(2);
        handshake(&mut f, t0, "a");
        handshake(&mut f, t0, "b");
        f.on_status(t0 + ms(10), "b", status(Presence::Offline, 1), false);
        f.on_heartbeat(t0 + ms(20), 0, "stranger", hb(1, 0));
        f.on_status(t0 + ms(20), "claimer", status(Presence::Online, 1), false);
        f.on_status(
            t0 + ms(20),
            "gone",
            status(Presence::ConnectionLost, 1),
            true,
        );
        assert_eq!(f.len(), 2);
        assert!(f.pi("a").is_some() && f.pi("b").is_some());
        assert_eq!(f.counters().registry_of("registry_full"), 3);
        assert_eq!(f.counters().registry_of("pis_evicted"), 0);
        // Time-based forgetting still applies to a known Pi.
        f.tick(t0 + ms(10) + Duration::from_secs(600));
        assert!(f.pi("b").is_none());
    }

    #[test]
    fn a_listed_pi_always_finds_room_and_keeps_it() {
        let t0 = Instant::now();
        let listed: BTreeSet<String> = ["yard-1".to_string()].into();
        let mut f = fleet(2);
        f.fleet = Fleet::new(*f.config()).with_fleet_list(listed);
        assert_eq!(f.listed_count(), 1);
        handshake(&mut f, t0, "a");
        handshake(&mut f, t0, "b");
        f.on_status(t0 + ms(10), "a", status(Presence::Offline, 1), false);
        // Listed, even by a bare heartbeat: it replaces the known Pi offline (not the online one).
        f.on_heartbeat(t0 + ms(20), 0, "yard-1", hb(1, 0));
        assert_eq!(f.pi("yard-1").unwrap().standing, Standing::Listed);
        assert!(f.pi("a").is_none() && f.pi("b").is_some());
        // Offline, it is replaced by no one unlisted.
        f.on_status(
            t0 + ms(30),
            "yard-1",
            status(Presence::ConnectionLost, 1),
            false,
        );
        handshake(&mut f, t0 + ms(40), "c");
        f.on_heartbeat(t0 + ms(40), 0, "d", hb(1, 0));
        assert!(f.pi("yard-1").is_some());
        assert!(f.pi("c").is_none() && f.pi("d").is_none());
        // c's Online and heartbeat, d's heartbeat.
        assert_eq!(f.counters().registry_of("registry_full"), 3);
    }

    #[test]
    fn long_offline_pis_are_forgotten() {
        let t0 = Instant::now();
        let mut f = TestFleet::new(FleetConfig::new(HB_TIMEOUT, 10, Duration::from_secs(60)));
        f.on_heartbeat(t0, 0, "a", hb(1, 0));
        f.on_heartbeat(t0 + ms(59_000), 0, "b", hb(1, 0));
        f.tick(t0 + ms(2000)); // a times out at ~1.5 s
        f.tick(t0 + ms(61_999));
        assert!(f.pi("a").is_some());
        f.tick(t0 + ms(62_000));
        assert!(f.pi("a").is_none());
        assert!(f.pi("b").is_some());
        assert_eq!(f.counters().registry_of("pis_evicted"), 1);
        assert_eq!(f.online_count(), 0);
    }

    #[test]
    fn a_session_from_the_future_never_makes_the_real_will_stale() {
        let t0 = Instant::now();
        let real = (TEST_WALL_MS / 1000) as u32;
        let mut f = fleet(10);
        f.on_status(t0, "a", status(Presence::Online, real), false);
        f.on_heartbeat(t0 + ms(10), 0, "a", hb(1, 0));
        // A forged live Online of session u32::MAX: applied, but its session is not kept.
        f.on_status(t0 + ms(20), "a", status(Presence::Online, u32::MAX), false);
        assert!(f.pi("a").unwrap().is_online());
        assert_eq!(f.pi("a").unwrap().session, Some(real));
        assert_eq!(f.counters().registry_of("future_session"), 1);
        // The Pi dies: its will (the real session) takes it offline at once, not by timeout.
        f.on_status(
            t0 + ms(100),
            "a",
            status(Presence::ConnectionLost, real),
            false,
        );
        assert_eq!(
            f.pi("a").unwrap().offline_reason(),
            Some(OfflineReason::Will),
            "the real will is not stale"
        );
        assert_eq!(f.take_went_offline(), vec!["a".to_string()]);
        // A session within a day ahead (a Pi clock a little fast) is still trusted.
        let ahead = real + 3600;
        f.on_status(t0 + ms(200), "b", status(Presence::Online, ahead), false);
        assert_eq!(f.pi("b").unwrap().session, Some(ahead));
    }

    #[test]
    fn a_live_heartbeat_stream_wins_over_any_status() {
        let t0 = Instant::now();
        // A bogus live Offline of session u32::MAX: the Pi heartbeats on, and its real will
        // later is not "stale".
        let mut f = fleet(10);
        f.on_status(t0, "a", status(Presence::Online, 100), false);
        f.on_heartbeat(t0 + ms(10), 0, "a", hb(1, 0));
        f.on_status(t0 + ms(20), "a", status(Presence::Offline, u32::MAX), false);
        assert!(
            !f.pi("a").unwrap().is_online(),
            "a live status applies at once"
        );
        f.on_heartbeat(t0 + ms(500), 0, "a", hb(2, 0));
        assert!(f.pi("a").unwrap().is_online());
        assert_eq!(
            f.pi("a").unwrap().session,
            None,
            "the bogus session is dropped"
        );
        f.on_status(
            t0 + ms(600),
            "a",
            status(Presence::ConnectionLost, 100),
            false,
        );
        assert_eq!(
            f.pi("a").unwrap().offline_reason(),
            Some(OfflineReason::Will),
            "the real will counts"
        );
        // A new server: a retained Offline(u32::MAX) does not take a heartbeating Pi offline.
        let mut f = fleet(10);
        f.link_up(t0);
        f.on_heartbeat(t0 + ms(10), 0, "b", hb(1, 0));
        f.on_status(t0 + ms(20), "b", status(Presence::Offline, u32::MAX), true);
        assert!(f.pi("b").unwrap().is_online());
        assert!(f.take_went_offline().is_empty());
        assert_eq!(f.counters().registry_of("stale_status"), 1);
        // Retained first (the usual order), then heartbeats: online, and no poisoned session.
        f.on_status(
            t0 + ms(30),
            "c",
            status(Presence::ConnectionLost, u32::MAX),
            true,
        );
        f.on_heartbeat(t0 + ms(40), 0, "c", hb(1, 0));
        assert!(f.pi("c").unwrap().is_online());
        f.on_status(t0 + ms(50), "c", status(Presence::ConnectionLost, 7), false);
        assert_eq!(
            f.pi("c").unwrap().offline_reason(),
            Some(OfflineReason::Will)
        );
        // A retained will of a Pi not heard since the link came back still counts.
        f.link_down(t0 + ms(100));
        f.link_up(t0 + ms(3000));
        f.on_status(
            t0 + ms(3010),
            "b",
            status(Presence::ConnectionLost, u32::MAX),
            true,
        );
        assert_eq!(
            f.pi("b").unwrap().offline_reason(),
            Some(OfflineReason::Will)
        );
    }
}
