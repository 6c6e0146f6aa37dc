//! Owned, serialisable copies of the registry's state for readers on other threads: tests,
//! the demo planner, and the interfaces to come (HTTP API, metrics).

use std::time::Instant;

use common::{EntityFlags, Motion, Point};
use serde::Serialize;

use crate::broker_sys::BrokerSys;
use crate::counters::{Counters, RttSummary};
use crate::dispatch::Dispatcher;
use crate::fleet::{Fleet, OfflineReason, Pi, PiState};
use crate::leadership::LeaderView;

/// An entity's version 3 state flags (`StateReport.flags`): the byte and each flag by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct FlagsView {
    /// The byte as reported (0 from a version 1 or 2 Pi).
    pub flags: u8,
    /// Halted by `pause`, queue kept.
    pub paused: bool,
    /// Halted by `stop`, queue dropped.
    pub stopped: bool,
    /// No vehicle process drives it (bridge).
    pub no_driver: bool,
}

impl FlagsView {
    pub fn of(f: EntityFlags) -> FlagsView {
        FlagsView {
            flags: f.bits(),
            paused: f.contains(EntityFlags::PAUSED),
            stopped: f.contains(EntityFlags::STOPPED),
            no_driver: f.contains(EntityFlags::NO_DRIVER),
        }
    }
}

/// One entity as last reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntityView {
    pub id: u32,
    /// Pose, velocity, segment and progress (1/10000 of the segment).
    #[serde(flatten)]
    pub motion: Motion,
    #[serde(flatten)]
    pub flags: FlagsView,
    /// Since the server received the report.
    pub age_ms: u64,
}

/// One Pi.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PiView {
    pub id: String,
    pub online: bool,
    pub offline_reason: Option<OfflineReason>,
    /// Since the Pi came online or went offline.
    pub state_age_ms: u64,
    /// Since the last heartbeat (or live Online status), server clock.
    pub last_heartbeat_age_ms: Option<u64>,
    pub heartbeats: u64,
    pub heartbeats_lost: u64,
    pub clock_offset_ms: Option<i64>,
    /// The last heartbeat's timestamp was absurd: segments go without a deadline.
    pub clock_out_of_range: bool,
    pub session: Option<u32>,
    /// The protocol version of the Pi's heartbeats (1 until one says otherwise).
    pub protocol: u8,
    /// The id keeps reconnecting as two devices sharing it would ([`crate::flapping`]).
    pub suspected_duplicate: bool,
    pub entities: Vec<EntityView>,
}

fn ms(d: std::time::Duration) -> u64 {
    d.as_millis() as u64
}

impl PiView {
    pub fn of(p: &Pi, now: Instant) -> PiView {
        let since = match p.state {
            PiState::Online { since } | PiState::Offline { since, .. } => since,
        };
        PiView {
            id: p.id.to_string(),
            online: p.is_online(),
            offline_reason: p.offline_reason(),
            state_age_ms: ms(now.saturating_duration_since(since)),
            last_heartbeat_age_ms: p.last_alive_age(now).map(ms),
            heartbeats: p.heartbeats,
            heartbeats_lost: p.heartbeats_lost,
            clock_offset_ms: p.clock.smoothed_ms(),
            clock_out_of_range: p.clock.out_of_range(),
            session: p.session,
            protocol: p.protocol,
            suspected_duplicate: p.flapping.is_suspected(),
            entities: p
                .entities
                .iter()
                .map(|(id, e)| EntityView {
                    id: *id,
                    motion: e.report.motion(),
                    flags: FlagsView::of(e.report.flags),
                    age_ms: ms(now.saturating_duration_since(e.updated)),
                })
                .collect(),
        }
    }
}

/// The figures behind the metrics: the counters and gauges, without the per-Pi views.
#[derive(Debug, Clone)]
pub struct Stats {
    pub online: usize,
    pub known: usize,
    pub segments_in_flight: usize,
    pub segments_stranded: usize,
    /// Instant actions waiting for their ack.
    pub actions_in_flight: usize,
    pub broker_connected: bool,
    pub counters: Counters,
    pub broker_sys: BrokerSys,
    /// This server's leadership (leader or standby, epochs, changes).
    pub leader: LeaderView,
}

/// The whole registry at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// Sorted by id.
    pub pis: Vec<PiView>,
    pub online: usize,
    /// Pis tracked, online and offline; never more than `max_pis`.
    pub registry_len: usize,
    pub max_pis: usize,
    /// Segments sent and not finished.
    pub segments_in_flight: usize,
    /// Of those, accepted by a Pi that then went offline: waiting for its word.
    pub segments_stranded: usize,
    /// Segments remembered (in flight, plus finished ones within the grace period).
    pub segments_tracked: usize,
    pub broker_connected: bool,
    pub counters: Counters,
    pub rtt: RttSummary,
    /// This server's leadership: leader or standby, and who leads (docs/operator.md).
    pub leader: Option<LeaderView>,
}

impl Snapshot {
    pub fn of(
        fleet: &Fleet,
        dispatcher: &Dispatcher,
        counters: &Counters,
        connected: bool,
        now: Instant,
    ) -> Self {
        let pis = fleet.pis().map(|p| PiView::of(p, now)).collect();
        Snapshot {
            pis,
            online: fleet.online_count(),
            registry_len: fleet.len(),
            max_pis: fleet.config().max_pis,
            segments_in_flight: dispatcher.in_flight(),
            segments_stranded: dispatcher.stranded(),
            segments_tracked: dispatcher.tracked(),
            broker_connected: connected,
            counters: counters.clone(),
            rtt: counters.rtt.summary(),
            leader: None,
        }
    }

    /// With this server's leadership.
    pub fn with_leader(mut self, leader: LeaderView) -> Self {
        self.leader = Some(leader);
        self
    }

    pub fn pi(&self, id: &str) -> Option<&PiView> {
        self.pis.iter().find(|p| p.id == id)
    }

    /// Ids of the Pis online, sorted.
    pub fn online_ids(&self) -> Vec<&str> {
        self.pis
            .iter()
            .filter(|p| p.online)
            .map(|p| p.id.as_str())
            .collect()
    }
}

/// An online entity's position, for planners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityPose {
    pub client_id: String,
    pub entity_id: u32,
    pub pos: Point,
    /// The segment the entity reports driving, 0 when idle.
    pub segment_id: u32,
    /// Halted by an operator's `stop` or `pause` (or the Pi's server-lost rule): the
    /// entity's state report has the STOPPED or PAUSED flag.
    pub halted: bool,
}

/// Every entity of every online Pi.
pub fn online_poses(fleet: &Fleet) -> Vec<EntityPose> {
    fleet
        .pis()
        .filter(|p| p.is_online())
        .flat_map(|p| {
            p.entities.iter().map(move |(id, e)| EntityPose {
                client_id: p.id.to_string(),
                entity_id: *id,
                pos: Point::new(e.report.x, e.report.y),
                segment_id: e.report.segment_id,
                halted: e.report.flags.contains(EntityFlags::STOPPED)
                    || e.report.flags.contains(EntityFlags::PAUSED),
            })
        })
        .collect()
}
