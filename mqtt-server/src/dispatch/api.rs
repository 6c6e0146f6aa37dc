//! The dispatcher's public vocabulary: what to drive ([`SegmentSpec`], [`Order`]), why a
//! segment was not sent ([`DispatchError`]) or not delivered ([`FailReason`]), what became of
//! it ([`SegmentOutcome`], heard through a [`SegmentTicket`]), where segments go
//! ([`Publisher`]) and the settings ([`DispatchConfig`]).

use std::time::{Duration, Instant};

use common::ratelimit::RateLimiter;
use common::wire::NO_DEADLINE;
use common::{Message, Point, RejectReason};
use log::warn;
use mqtt_link::Held;

use crate::counters::Counters;
use crossbeam_channel::{Receiver, Sender};

/// After a segment's deadline, how long the server still waits for an `Accepted` the Pi may
/// have sent just before it: the time an ack may take to come back through the broker.
pub const ACK_GRACE: Duration = Duration::from_millis(500);

/// What to drive: a segment without its id (the dispatcher assigns it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SegmentSpec {
    pub entity_id: u32,
    pub start: Point,
    pub end: Point,
    pub velocity_start: i32,
    pub velocity_end: i32,
    pub segment_type: u8,
}

impl SegmentSpec {
    /// A straight line (`segment_type` 0).
    pub fn line(entity_id: u32, start: Point, end: Point, v_start: i32, v_end: i32) -> Self {
        SegmentSpec {
            entity_id,
            start,
            end,
            velocity_start: v_start,
            velocity_end: v_end,
            segment_type: 0,
        }
    }
}

/// A dispatch request: which Pi, what to drive, and who hears the outcomes.
#[derive(Debug, Clone)]
pub struct Order {
    pub client_id: String,
    pub spec: SegmentSpec,
    /// Hears `Accepted`, then the final outcome; None: nobody listens.
    pub notify: Option<Sender<SegmentOutcome>>,
}

/// Why a segment was not sent at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DispatchError {
    /// The server has never heard of this Pi (or forgot it).
    UnknownPi,
    /// The Pi is known but offline.
    PiOffline,
    /// The Pi is online but has not reported this entity.
    UnknownEntity,
    /// The server is not connected to the broker.
    NotConnected,
    /// Too many segments are being tracked already.
    TooManyInFlight,
    /// The server is stopping.
    ShuttingDown,
    /// This server is a standby: only the leader gives orders (docs/protocol.md,
    /// "Leadership"). `leader`: the server leading now, as far as this one knows.
    NotLeader { leader: Option<String> },
}

impl std::fmt::Display for DispatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DispatchError::NotLeader { .. } => "not the leader",
            DispatchError::UnknownPi => "unknown Pi",
            DispatchError::PiOffline => "Pi is offline",
            DispatchError::UnknownEntity => "the Pi has not reported this entity",
            DispatchError::NotConnected => "server not connected to the broker",
            DispatchError::TooManyInFlight => "too many segments in flight",
            DispatchError::ShuttingDown => "server shutting down",
        })
    }
}

impl std::error::Error for DispatchError {}

/// Why a sent segment could not be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    /// No ack after this many publications.
    NoAck { attempts: u32 },
    /// The Pi went offline and cannot have the segment any more: an unaccepted one whose
    /// deadline passed, or an accepted one the Pi came back without (or never came back).
    PiOffline,
    /// The server stopped before the segment finished.
    ShuttingDown,
}

/// What became of a segment, as it happens: `Accepted` first (unless the Pi refused it),
/// then exactly one final outcome (`Completed`, `Rejected` or `Failed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentOutcome {
    /// The Pi queued it. `round_trip` is first publication -> this ack.
    Accepted {
        round_trip: Duration,
        attempts: u32,
    },
    /// The entity reached the end; `after` is measured from the first publication.
    Completed {
        after: Duration,
    },
    Rejected(RejectReason),
    Failed(FailReason),
}

impl SegmentOutcome {
    pub fn is_final(&self) -> bool {
        !matches!(self, SegmentOutcome::Accepted { .. })
    }
}

/// A dispatched segment's id and where its outcomes arrive.
#[derive(Debug)]
pub struct SegmentTicket {
    pub id: u32,
    pub outcomes: Receiver<SegmentOutcome>,
}

impl SegmentTicket {
    /// Waits for the final outcome (Completed, Rejected or Failed), skipping `Accepted`.
    pub fn wait_final(&self, timeout: Duration) -> Option<SegmentOutcome> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.outcomes.recv_timeout(left) {
                Ok(o) if o.is_final() => return Some(o),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }
}

/// Where segments go: the MQTT client in the server, a recorder in tests.
pub trait Publisher {
    /// False while the server has no broker connection.
    fn connected(&self) -> bool;
    /// Queues a QoS 1, non-retained publish without blocking.
    fn publish(&mut self, topic: &str, payload: &[u8]) -> Result<(), String>;
    /// Queues a QoS 1, retained publish without blocking (the server's status and lease).
    fn publish_retained(&mut self, topic: &str, payload: &[u8]) -> Result<(), String>;
}

/// Sends an order (a segment or an action) to a Pi: `msg` encoded in the Pi's protocol
/// `version`, published on `topic`. A failure (an encoding the version cannot carry, a full
/// request queue, no connection) is counted in `publish_failures` and logged at most once
/// per `limit`'s period, naming `what`; the caller's retries send it again.
#[allow(clippy::too_many_arguments)]
pub fn send_order(
    out: &mut dyn Publisher,
    topic: &str,
    msg: Message,
    version: u8,
    now: Instant,
    limit: &mut RateLimiter,
    counters: &mut Counters,
    what: std::fmt::Arguments<'_>,
) {
    let sent = msg
        .encode_as(version)
        .map_err(|e| e.to_string())
        .and_then(|payload| out.publish(topic, payload.as_slice()));
    if let Err(e) = sent {
        counters.publish_failures += 1;
        if let Some(held) = limit.check(now) {
            warn!(
                "could not queue {what}: {e}; will retry{}",
                Held(held).note("similar")
            );
        }
    }
}

/// The dispatcher's settings.
#[derive(Debug, Clone, Copy)]
pub struct DispatchConfig {
    pub ack_timeout: Duration,
    pub retries: u32,
    /// Finished segments are remembered this long, to recognise duplicate acks.
    pub grace: Duration,
    pub max_in_flight: usize,
}

impl DispatchConfig {
    pub fn new(ack_timeout: Duration, retries: u32) -> Self {
        DispatchConfig {
            ack_timeout,
            retries,
            grace: Duration::from_secs(10),
            max_in_flight: 65_536,
        }
    }

    /// How long after its first publication a segment may still be taken by the Pi: as long
    /// as the server keeps trying to deliver it.
    pub fn ttl(&self) -> Duration {
        self.ack_timeout
            .saturating_mul(self.retries.saturating_add(1))
    }
}

/// The deadline of a segment in the Pi's clock: `server_wall_ms + ttl`, less the Pi's clock
/// offset (`server - pi`, see [`crate::clock_offset::ClockOffset::for_deadlines_ms`]). Heartbeats arrive
/// after their timestamp, so the offset is over-estimated by the one-way delay and the
/// deadline errs early.
pub fn pi_deadline_ms(server_wall_ms: u64, ttl: Duration, clock_offset_ms: i64) -> u64 {
    let d = i128::from(server_wall_ms) + ttl.as_millis() as i128 - i128::from(clock_offset_ms);
    d.clamp(0, i128::from(NO_DEADLINE - 1)) as u64
}
