//! Shared vocabulary of the fleet: wire messages, topics, client ids and pure helpers.
//!
//! Invariants: this crate does no I/O (no sockets, files, threads or clocks of its own) and has
//! no MQTT dependency; it is the only place that defines wire types. See ARCHITECTURE.md.

pub mod backoff;
pub mod conf;
pub mod duration;
pub mod error;
pub mod leader;
pub mod motion;
pub mod ratelimit;
pub mod topic;
pub mod wire;

pub use error::{ClientIdError, ConfigError, DecodeError, DurationError, EncodeError, TopicError};
pub use motion::Motion;
pub use topic::{ClientId, TopicKind};
pub use wire::{
    AckOutcome, Action, ActionAck, ActionKind, ActionOutcome, EntityFlags, Heartbeat, Kind, Lease,
    Message, Point, Presence, RejectReason, Segment, SegmentAck, ServerStatus, StateReport, Status,
    Target,
};
