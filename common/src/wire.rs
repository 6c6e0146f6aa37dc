//! The binary wire format: message types and their fixed-layout, little-endian codec.
//!
//! Byte 0 of every payload is `(version << 4) | kind`; the rest is a fixed layout per kind and
//! version (see docs/protocol.md, which a test keeps in step with this file). No payload is
//! longer than [`MAX_PAYLOAD`]. Decoding is total: any byte string gives a message or a
//! [`DecodeError`], never a panic.
//!
//! Versions: the daemons send [`VERSION`]; this code decodes (and can encode) every version
//! from [`OLDEST_VERSION`] to [`LATEST`], so a server can be upgraded before the Pis
//! (docs/protocol.md, "Versioning"). Version 2 added the segment's `deadline_ms` and the
//! `Expired` reject reason. Version 3 (designed, not sent by the daemons yet) adds the leader
//! epoch to segments, flags to state reports, three reject reasons, the instant actions and
//! their acks, and the servers' presence and leader lease (see "Version 3" below).
//! `encode()` uses [`VERSION`], or the oldest later version that can carry the message, so no
//! field is ever dropped silently; `encode_as(v)` refuses what version `v` cannot say.

use serde::{Deserialize, Serialize};

use crate::error::{DecodeError, EncodeError};

/// Protocol version the daemons send, carried in the high nibble of byte 0. It becomes
/// [`LATEST`] when the features that use version 3 land.
pub const VERSION: u8 = 2;
/// The newest version this code decodes and can encode (docs/protocol.md, "Version 3").
pub const LATEST: u8 = 3;
/// The oldest version this code still decodes (and can encode, for peers not upgraded yet).
pub const OLDEST_VERSION: u8 = 1;
/// `Segment::deadline_ms` of a segment that never expires: every version 1 segment.
pub const NO_DEADLINE: u64 = u64::MAX;
/// The user's payload budget: no encoded message is longer than this.
pub const MAX_PAYLOAD: usize = 64;
/// Angles are millidegrees in `[0, ANGLE_FULL_TURN)`.
pub const ANGLE_FULL_TURN: i32 = 360_000;
/// Segment progress is in units of 1/10000 (basis points): 10000 means done.
pub const PROGRESS_DONE: u16 = 10_000;

/// Message kind, the low nibble of byte 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum Kind {
    Heartbeat = 1,
    State = 2,
    Segment = 3,
    Ack = 4,
    Status = 5,
    /// Version 3: an instant action, server -> Pi.
    Action = 6,
    /// Version 3: a Pi's answer to an action.
    ActionAck = 7,
    /// Version 3: a server's presence.
    ServerStatus = 8,
    /// Version 3: the leader lease.
    Lease = 9,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Heartbeat,
        Kind::State,
        Kind::Segment,
        Kind::Ack,
        Kind::Status,
        Kind::Action,
        Kind::ActionAck,
        Kind::ServerStatus,
        Kind::Lease,
    ];

    /// The protocol version that introduced this kind; older versions have no such kind.
    pub const fn since_version(self) -> u8 {
        match self {
            Kind::Action | Kind::ActionAck | Kind::ServerStatus | Kind::Lease => 3,
            _ => 1,
        }
    }

    pub fn from_u8(v: u8) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| *k as u8 == v)
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Heartbeat => "heartbeat",
            Kind::State => "state",
            Kind::Segment => "segment",
            Kind::Ack => "ack",
            Kind::Status => "status",
            Kind::Action => "action",
            Kind::ActionAck => "action_ack",
            Kind::ServerStatus => "server_status",
            Kind::Lease => "lease",
        }
    }

    /// The fixed encoded length of a message of this kind in the current [`VERSION`] (or, for a
    /// kind newer than that, in the version that introduced it), header byte included.
    pub const fn encoded_len(self) -> usize {
        let since = self.since_version();
        self.encoded_len_in(if since > VERSION { since } else { VERSION })
    }

    /// The fixed encoded length of this kind in `version`, a version that has this kind (the
    /// segment and the state report changed size; the other kinds never did).
    pub const fn encoded_len_in(self, version: u8) -> usize {
        match self {
            Kind::Heartbeat => Heartbeat::LEN,
            Kind::State if version >= 3 => StateReport::LEN_V3,
            Kind::State => StateReport::LEN,
            Kind::Segment if version == 1 => Segment::LEN_V1,
            Kind::Segment if version == 2 => Segment::LEN,
            Kind::Segment => Segment::LEN_V3,
            Kind::Ack => SegmentAck::LEN,
            Kind::Status => Status::LEN,
            Kind::Action => Action::LEN,
            Kind::ActionAck => ActionAck::LEN,
            Kind::ServerStatus => ServerStatus::LEN,
            Kind::Lease => Lease::LEN,
        }
    }
}

/// A point on the floor, millimetres.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Point {
    pub x: i32,
    pub y: i32,
}

impl Point {
    pub const fn new(x: i32, y: i32) -> Point {
        Point { x, y }
    }
}

/// Pi -> server, every heartbeat interval (500 ms by default), QoS 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Grows by one per heartbeat sent; gaps tell the server how many were lost.
    pub seq: u32,
    /// The Pi's wall clock, ms since the Unix epoch; the server derives clock offset from it.
    pub timestamp_ms: u64,
}

/// Pi -> server, one per entity per state interval (100 ms by default), QoS 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateReport {
    pub entity_id: u32,
    /// The Pi's wall clock when the pose was sampled, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// Position, millimetres.
    pub x: i32,
    pub y: i32,
    /// Heading, millidegrees in [0, 360000), counter-clockwise from the +x axis.
    pub angle: i32,
    /// Velocity, mm/s.
    pub vx: i32,
    pub vy: i32,
    /// The segment the entity is executing, 0 when idle.
    pub segment_id: u32,
    /// Progress along that segment in 1/10000 (0..=10000).
    pub progress: u16,
    /// Version 3: why the entity is halted (paused, stopped, no driver). Empty in versions 1
    /// and 2, which cannot carry it (and left out of the JSON form when empty).
    #[serde(default, skip_serializing_if = "EntityFlags::is_empty")]
    pub flags: EntityFlags,
}

/// Server -> Pi: drive one entity from `start` to `end`, QoS 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub entity_id: u32,
    /// Chosen by the server, never 0; a Pi executes a given id at most once per entity.
    pub segment_id: u32,
    pub start: Point,
    pub end: Point,
    /// Speed at `start` and at `end`, mm/s; the speed ramps linearly with distance.
    pub velocity_start: i32,
    pub velocity_end: i32,
    /// 0 = straight line; other values are reserved for vehicle-specific handlers.
    pub segment_type: u8,
    /// The Pi's wall clock (ms since the Unix epoch) after which the Pi must not take this
    /// segment: it answers `Rejected(Expired)` instead. The server sets it to the moment it
    /// gives up on delivering the segment, converted to the Pi's clock, so a segment that
    /// reaches a Pi late (after a silent outage) is never executed behind the server's back.
    /// [`NO_DEADLINE`] never expires (every version 1 segment).
    pub deadline_ms: u64,
    /// Version 3: the leader epoch of the server that sent it ([`crate::leader`]). A Pi refuses
    /// a segment whose epoch is lower than the highest it has seen (`StaleLeader`). 0 =
    /// unfenced: every version 1 and 2 segment (and left out of the JSON form).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub epoch: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// Why a Pi refused a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum RejectReason {
    /// This Pi does not drive that entity.
    UnknownEntity = 1,
    /// The entity's handler cannot execute this segment_type.
    UnsupportedType = 2,
    /// Nonsense geometry or speeds (e.g. both speeds zero, negative speed, id 0).
    InvalidSegment = 3,
    /// The entity's queue of pending segments is full.
    QueueFull = 4,
    /// The Pi is shutting down; the segment was dropped unfinished.
    ShuttingDown = 5,
    /// The segment arrived after its `deadline_ms` (version 2 and later).
    Expired = 6,
    /// Version 3: no vehicle process drives the entity now (bridge vehicles).
    VehicleUnavailable = 7,
    /// Version 3: dropped unfinished by a `stop` or `cancel` action.
    Cancelled = 8,
    /// Version 3: the segment's epoch is lower than the highest the Pi has seen: it comes
    /// from a deposed leader.
    StaleLeader = 9,
}

impl RejectReason {
    pub const ALL: [RejectReason; 9] = [
        RejectReason::UnknownEntity,
        RejectReason::UnsupportedType,
        RejectReason::InvalidSegment,
        RejectReason::QueueFull,
        RejectReason::ShuttingDown,
        RejectReason::Expired,
        RejectReason::VehicleUnavailable,
        RejectReason::Cancelled,
        RejectReason::StaleLeader,
    ];

    pub fn from_u8(v: u8) -> Option<RejectReason> {
        RejectReason::ALL.into_iter().find(|r| *r as u8 == v)
    }

    /// The protocol version that introduced this code.
    pub const fn since_version(self) -> u8 {
        match self {
            RejectReason::Expired => 2,
            RejectReason::VehicleUnavailable
            | RejectReason::Cancelled
            | RejectReason::StaleLeader => 3,
            _ => 1,
        }
    }
}

/// What happened to a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AckOutcome {
    /// Queued for execution (sent once on receipt, and again for a duplicate delivery).
    Accepted,
    /// The entity reached the segment's end.
    Completed,
    Rejected(RejectReason),
}

/// Pi -> server on `rpi/{id}/ack`, QoS 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentAck {
    pub entity_id: u32,
    pub segment_id: u32,
    pub outcome: AckOutcome,
}

/// Presence states on `rpi/{id}/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum Presence {
    /// Published, retained, after every ConnAck.
    Online = 1,
    /// Published, retained, on a clean shutdown before disconnecting.
    Offline = 2,
    /// The Last Will: the broker publishes it when the connection dies uncleanly.
    ConnectionLost = 3,
}

impl Presence {
    pub fn from_u8(v: u8) -> Option<Presence> {
        [
            Presence::Online,
            Presence::Offline,
            Presence::ConnectionLost,
        ]
        .into_iter()
        .find(|p| *p as u8 == v)
    }
}

/// Pi -> server presence, retained, QoS 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub presence: Presence,
    /// Grows on every connect (seeded from the Pi's clock at start), so a stale retained
    /// message or a late will can be told from a current one.
    pub session: u32,
    /// The Pi's wall clock when the message was made, ms since the Unix epoch.
    pub timestamp_ms: u64,
}

// ---------------------------------------------------------------------------------------
// Version 3: entity flags, instant actions and their acks, server presence, leader lease.
// docs/protocol.md, "Version 3", is the specification; the byte fixtures are in the tests.
// ---------------------------------------------------------------------------------------

/// Version 3 state report flags: why an entity is halted. Unknown bits are a decode error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EntityFlags(u8);

impl EntityFlags {
    pub const NONE: EntityFlags = EntityFlags(0);
    /// Halted by `pause` (or by the Pi's server-lost rule), its queue kept; `resume` goes on.
    pub const PAUSED: EntityFlags = EntityFlags(0x01);
    /// Halted by `stop`, its segments dropped; cleared by the next accepted segment or `resume`.
    pub const STOPPED: EntityFlags = EntityFlags(0x02);
    /// No vehicle process drives the entity (bridge); segments are `VehicleUnavailable`.
    pub const NO_DRIVER: EntityFlags = EntityFlags(0x04);
    /// Every defined bit.
    pub const ALL: EntityFlags = EntityFlags(0x07);

    pub const fn bits(self) -> u8 {
        self.0
    }

    /// The flags of a byte, or an error naming the field if an undefined bit is set.
    pub fn from_bits(bits: u8) -> Result<EntityFlags, DecodeError> {
        if bits & !EntityFlags::ALL.0 == 0 {
            Ok(EntityFlags(bits))
        } else {
            Err(DecodeError::OutOfRange {
                field: "flags",
                value: bits.into(),
            })
        }
    }

    pub const fn is_empty(&self) -> bool {
        self.0 == 0
    }

    pub const fn contains(self, other: EntityFlags) -> bool {
        self.0 & other.0 == other.0
    }

    #[must_use]
    pub const fn with(self, other: EntityFlags) -> EntityFlags {
        EntityFlags(self.0 | other.0)
    }

    #[must_use]
    pub const fn without(self, other: EntityFlags) -> EntityFlags {
        EntityFlags(self.0 & !other.0)
    }
}

/// Which entities an action is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Target {
    /// One entity of the Pi (wire: scope 0 and its `entity_id`).
    Entity(u32),
    /// Every entity of the Pi (wire: scope 1, `entity_id` 0).
    All,
}

/// What an instant action does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum ActionKind {
    /// Halt now and drop every segment, the running one included (`Rejected(Cancelled)`).
    Stop = 1,
    /// Halt now, keep the queue; segments still accepted and queued.
    Pause = 2,
    /// Go on after `pause` or `stop` (the running segment from where it halted).
    Resume = 3,
    /// Drop one segment (`segment_id`) or, with `segment_id` 0, every queued one.
    Cancel = 4,
}

/// `ALL` (every value, in code order) and `from_u8` for a one-byte code enum.
macro_rules! byte_codes {
    ($ty:ident: $($value:ident),+ $(,)?) => {
        impl $ty {
            pub const ALL: [$ty; [$($ty::$value),+].len()] = [$($ty::$value),+];

            pub fn from_u8(v: u8) -> Option<$ty> {
                $ty::ALL.into_iter().find(|c| *c as u8 == v)
            }
        }
    };
}

byte_codes!(ActionKind: Stop, Pause, Resume, Cancel);

/// Server -> Pi on `server/{id}/action`, QoS 1 (version 3): an instant action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    /// Chosen by the leader, never 0; a Pi executes a given (`epoch`, `action_id`) at most once.
    pub action_id: u32,
    /// The sender's leader epoch, fenced as a segment's is.
    pub epoch: u32,
    pub target: Target,
    pub action: ActionKind,
    /// `Cancel` only: the segment to drop, 0 = every queued one. 0 for the other actions.
    pub segment_id: u32,
}

/// What became of an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum ActionOutcome {
    /// Executed (also for an action with nothing to do, e.g. `resume` of a running entity).
    Done = 0,
    /// The target entity is not driven by this Pi.
    UnknownEntity = 1,
    /// `Cancel` of a segment that is neither queued nor running for that entity.
    UnknownSegment = 2,
    /// The entity's vehicle cannot perform this action.
    Unsupported = 3,
    /// No vehicle process drives the entity (bridge); it is halted already.
    VehicleUnavailable = 4,
    /// The action's epoch is lower than the highest the Pi has seen; nothing was done.
    StaleLeader = 5,
}

byte_codes!(
    ActionOutcome: Done,
    UnknownEntity,
    UnknownSegment,
    Unsupported,
    VehicleUnavailable,
    StaleLeader,
);

/// Pi -> server on `rpi/{id}/ack`, QoS 1 (version 3): the answer to an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionAck {
    /// The action answered.
    pub action_id: u32,
    /// As in the action.
    pub target: Target,
    /// As in the action.
    pub action: ActionKind,
    pub outcome: ActionOutcome,
    /// The (`epoch`, `action_id`) was seen before: this is the first answer, repeated from
    /// memory; nothing was executed again.
    pub repeat: bool,
    /// How many segments this action dropped (each acked `Rejected(Cancelled)` before this
    /// ack), at most 255.
    pub cancelled: u8,
    /// The highest epoch the Pi has seen, after this action: a deposed leader learns the
    /// current epoch from it.
    pub fence: u32,
}

/// A server's presence on `server/@status/{server_id}`, retained, QoS 1 (version 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatus {
    /// Same codes and meaning as a Pi's: `ConnectionLost` is the server's Last Will.
    pub presence: Presence,
    /// Grows on every connect of that server, as a Pi's session does.
    pub session: u32,
    /// The leader epoch this server holds, 0 while it is a standby (and in its will).
    pub epoch: u32,
    /// The server's wall clock when the message was made, ms since the Unix epoch.
    pub timestamp_ms: u64,
}

/// The leader lease on `server/@lease`, retained, QoS 1, no will (version 3): the highest
/// epoch claimed in the fleet, and the claim race (docs/protocol.md, "Leadership").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The claimed epoch, never 0.
    pub epoch: u32,
    /// The claimant's session when it claimed.
    pub session: u32,
    /// The claimant's wall clock when it claimed, ms since the Unix epoch.
    pub timestamp_ms: u64,
}

/// Any fleet message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Message {
    Heartbeat(Heartbeat),
    State(StateReport),
    Segment(Segment),
    Ack(SegmentAck),
    Status(Status),
    Action(Action),
    ActionAck(ActionAck),
    ServerStatus(ServerStatus),
    Lease(Lease),
}

/// An encoded payload: a fixed buffer and its length, so encoding never allocates.
#[derive(Clone, Copy)]
pub struct Encoded {
    buf: [u8; MAX_PAYLOAD],
    len: usize,
}

impl Encoded {
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }
    pub fn to_vec(&self) -> Vec<u8> {
        self.as_slice().to_vec()
    }
}

impl std::fmt::Debug for Encoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Encoded({})", to_hex(self.as_slice()))
    }
}

/// Lower-case hex with a space between bytes, as in docs/protocol.md.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Little-endian writer over a fixed buffer; lengths are fixed per kind so it cannot overflow.
struct Writer {
    out: Encoded,
}

impl Writer {
    fn new(kind: Kind, version: u8) -> Writer {
        let mut out = Encoded {
            buf: [0; MAX_PAYLOAD],
            len: 0,
        };
        out.buf[0] = (version << 4) | kind as u8;
        out.len = 1;
        Writer { out }
    }
    fn put(&mut self, bytes: &[u8]) {
        self.out.buf[self.out.len..self.out.len + bytes.len()].copy_from_slice(bytes);
        self.out.len += bytes.len();
    }
    fn u8(&mut self, v: u8) {
        self.put(&[v]);
    }
    fn u16(&mut self, v: u16) {
        self.put(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.put(&v.to_le_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.put(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.put(&v.to_le_bytes());
    }
    fn point(&mut self, p: Point) {
        self.i32(p.x);
        self.i32(p.y);
    }
    fn finish(self) -> Encoded {
        self.out
    }
}

/// Reader over a payload whose length was already checked against the kind's fixed length.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        // Lengths are checked in `check_len` before any read, so this never goes out of bounds;
        // `get` keeps it total anyway.
        if let Some(src) = self.bytes.get(self.pos..self.pos + N) {
            a.copy_from_slice(src);
        }
        self.pos += N;
        a
    }
    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn i32(&mut self) -> i32 {
        i32::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
    fn point(&mut self) -> Point {
        Point {
            x: self.i32(),
            y: self.i32(),
        }
    }
}

fn check_len(kind: Kind, version: u8, bytes: &[u8]) -> Result<Reader<'_>, DecodeError> {
    let expected = kind.encoded_len_in(version);
    if bytes.len() != expected {
        return Err(DecodeError::WrongLength {
            kind: kind.name(),
            expected,
            actual: bytes.len(),
        });
    }
    Ok(Reader { bytes, pos: 1 })
}

/// Reads byte 0: checks the version is one this code decodes and returns it with the kind.
pub fn peek(bytes: &[u8]) -> Result<(u8, Kind), DecodeError> {
    let first = *bytes.first().ok_or(DecodeError::Empty)?;
    let version = first >> 4;
    if !(OLDEST_VERSION..=LATEST).contains(&version) {
        return Err(DecodeError::UnknownVersion(version));
    }
    // A kind introduced after the payload's version does not exist in it.
    let kind = Kind::from_u8(first & 0x0f)
        .filter(|k| k.since_version() <= version)
        .ok_or(DecodeError::UnknownKind(first & 0x0f))?;
    Ok((version, kind))
}

/// Reads byte 0: checks the version and returns the kind.
pub fn peek_kind(bytes: &[u8]) -> Result<Kind, DecodeError> {
    peek(bytes).map(|(_, kind)| kind)
}

/// Checks byte 0 and the length; returns the version and a reader past the header.
fn expect_kind(bytes: &[u8], want: Kind) -> Result<(u8, Reader<'_>), DecodeError> {
    let (version, kind) = peek(bytes)?;
    if kind != want {
        return Err(DecodeError::UnexpectedKind {
            expected: want.name(),
            actual: kind.name(),
        });
    }
    Ok((version, check_len(kind, version, bytes)?))
}

fn check_version(version: u8) -> Result<(), EncodeError> {
    if (OLDEST_VERSION..=LATEST).contains(&version) {
        Ok(())
    } else {
        Err(EncodeError::UnknownVersion(version))
    }
}

impl Heartbeat {
    pub const LEN: usize = 1 + 4 + 8;

    pub fn encode(&self) -> Encoded {
        self.write(VERSION)
    }

    fn write(&self, version: u8) -> Encoded {
        let mut w = Writer::new(Kind::Heartbeat, version);
        w.u32(self.seq);
        w.u64(self.timestamp_ms);
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Heartbeat, DecodeError> {
        let (_, mut r) = expect_kind(bytes, Kind::Heartbeat)?;
        Ok(Heartbeat {
            seq: r.u32(),
            timestamp_ms: r.u64(),
        })
    }
}

impl StateReport {
    /// Versions 1 and 2.
    pub const LEN: usize = 1 + 4 + 8 + 5 * 4 + 4 + 2;
    /// Version 3: the version 2 layout followed by the `flags` byte.
    pub const LEN_V3: usize = StateReport::LEN + 1;

    /// An entity standing still at `pos`, facing `angle`, executing nothing.
    pub fn at_rest(entity_id: u32, timestamp_ms: u64, pos: Point, angle: i32) -> StateReport {
        StateReport {
            entity_id,
            timestamp_ms,
            x: pos.x,
            y: pos.y,
            angle,
            vx: 0,
            vy: 0,
            segment_id: 0,
            progress: 0,
            flags: EntityFlags::NONE,
        }
    }

    /// In [`VERSION`], or in version 3 when it has flags.
    pub fn encode(&self) -> Encoded {
        self.write(self.min_version().max(VERSION))
    }

    /// The oldest version that can carry this report.
    fn min_version(&self) -> u8 {
        if self.flags.is_empty() { 1 } else { 3 }
    }

    fn write(&self, version: u8) -> Encoded {
        let mut w = Writer::new(Kind::State, version);
        w.u32(self.entity_id);
        w.u64(self.timestamp_ms);
        w.i32(self.x);
        w.i32(self.y);
        w.i32(self.angle);
        w.i32(self.vx);
        w.i32(self.vy);
        w.u32(self.segment_id);
        w.u16(self.progress);
        if version >= 3 {
            w.u8(self.flags.bits());
        }
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<StateReport, DecodeError> {
        let (version, mut r) = expect_kind(bytes, Kind::State)?;
        let s = StateReport {
            entity_id: r.u32(),
            timestamp_ms: r.u64(),
            x: r.i32(),
            y: r.i32(),
            angle: r.i32(),
            vx: r.i32(),
            vy: r.i32(),
            segment_id: r.u32(),
            progress: r.u16(),
            flags: if version >= 3 {
                EntityFlags::from_bits(r.u8())?
            } else {
                EntityFlags::NONE
            },
        };
        if !(0..ANGLE_FULL_TURN).contains(&s.angle) {
            return Err(DecodeError::OutOfRange {
                field: "angle",
                value: s.angle.into(),
            });
        }
        if s.progress > PROGRESS_DONE {
            return Err(DecodeError::OutOfRange {
                field: "progress",
                value: s.progress.into(),
            });
        }
        Ok(s)
    }
}

impl Segment {
    /// Version 2: the version 1 layout followed by `deadline_ms`.
    pub const LEN: usize = Segment::LEN_V1 + 8;
    /// Version 1: no deadline.
    pub const LEN_V1: usize = 1 + 4 + 4 + 8 + 8 + 4 + 4 + 1;
    /// Version 3: the version 2 layout followed by `epoch`.
    pub const LEN_V3: usize = Segment::LEN + 4;

    /// In [`VERSION`], or in version 3 when it carries a leader epoch.
    pub fn encode(&self) -> Encoded {
        self.write(self.min_version().max(VERSION))
    }

    /// The oldest version that can carry this segment.
    fn min_version(&self) -> u8 {
        if self.epoch != 0 {
            3
        } else if self.has_deadline() {
            2
        } else {
            1
        }
    }

    /// True when this segment has a deadline, i.e. `deadline_ms` is not [`NO_DEADLINE`].
    pub fn has_deadline(&self) -> bool {
        self.deadline_ms != NO_DEADLINE
    }

    /// How many ms past its deadline the segment is at `now_ms` (the Pi's clock), if it is.
    pub fn expired_by(&self, now_ms: u64) -> Option<u64> {
        (now_ms > self.deadline_ms).then(|| now_ms - self.deadline_ms)
    }

    fn write(&self, version: u8) -> Encoded {
        let mut w = Writer::new(Kind::Segment, version);
        w.u32(self.entity_id);
        w.u32(self.segment_id);
        w.point(self.start);
        w.point(self.end);
        w.i32(self.velocity_start);
        w.i32(self.velocity_end);
        w.u8(self.segment_type);
        if version >= 2 {
            w.u64(self.deadline_ms);
        }
        if version >= 3 {
            w.u32(self.epoch);
        }
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Segment, DecodeError> {
        let (version, mut r) = expect_kind(bytes, Kind::Segment)?;
        let s = Segment {
            entity_id: r.u32(),
            segment_id: r.u32(),
            start: r.point(),
            end: r.point(),
            velocity_start: r.i32(),
            velocity_end: r.i32(),
            segment_type: r.u8(),
            deadline_ms: if version >= 2 { r.u64() } else { NO_DEADLINE },
            epoch: if version >= 3 { r.u32() } else { 0 },
        };
        if s.segment_id == 0 {
            return Err(DecodeError::OutOfRange {
                field: "segment_id",
                value: 0,
            });
        }
        Ok(s)
    }
}

impl SegmentAck {
    pub const LEN: usize = 1 + 4 + 4 + 1 + 1;

    /// In [`VERSION`], or in the version that introduced its reject reason if later.
    pub fn encode(&self) -> Encoded {
        self.write(self.min_version().max(VERSION))
    }

    /// The oldest version that can carry this ack.
    fn min_version(&self) -> u8 {
        match self.outcome {
            AckOutcome::Rejected(r) => r.since_version(),
            _ => 1,
        }
    }

    fn write(&self, version: u8) -> Encoded {
        let (outcome, reason) = match self.outcome {
            AckOutcome::Accepted => (0, 0),
            AckOutcome::Completed => (1, 0),
            AckOutcome::Rejected(r) => (2, r as u8),
        };
        let mut w = Writer::new(Kind::Ack, version);
        w.u32(self.entity_id);
        w.u32(self.segment_id);
        w.u8(outcome);
        w.u8(reason);
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<SegmentAck, DecodeError> {
        let (version, mut r) = expect_kind(bytes, Kind::Ack)?;
        let entity_id = r.u32();
        let segment_id = r.u32();
        let outcome = r.u8();
        let reason = r.u8();
        let outcome = match (outcome, reason) {
            (0, 0) => AckOutcome::Accepted,
            (1, 0) => AckOutcome::Completed,
            (2, code) => AckOutcome::Rejected(
                RejectReason::from_u8(code)
                    .filter(|r| r.since_version() <= version)
                    .ok_or(DecodeError::OutOfRange {
                        field: "reason",
                        value: code.into(),
                    })?,
            ),
            (0 | 1, code) => {
                return Err(DecodeError::OutOfRange {
                    field: "reason",
                    value: code.into(),
                });
            }
            (other, _) => {
                return Err(DecodeError::OutOfRange {
                    field: "outcome",
                    value: other.into(),
                });
            }
        };
        Ok(SegmentAck {
            entity_id,
            segment_id,
            outcome,
        })
    }
}

fn read_presence(r: &mut Reader<'_>) -> Result<Presence, DecodeError> {
    let p = r.u8();
    Presence::from_u8(p).ok_or(DecodeError::OutOfRange {
        field: "presence",
        value: p.into(),
    })
}

impl Status {
    pub const LEN: usize = 1 + 1 + 4 + 8;

    pub fn encode(&self) -> Encoded {
        self.write(VERSION)
    }

    fn write(&self, version: u8) -> Encoded {
        let mut w = Writer::new(Kind::Status, version);
        w.u8(self.presence as u8);
        w.u32(self.session);
        w.u64(self.timestamp_ms);
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Status, DecodeError> {
        let (_, mut r) = expect_kind(bytes, Kind::Status)?;
        let presence = read_presence(&mut r)?;
        Ok(Status {
            presence,
            session: r.u32(),
            timestamp_ms: r.u64(),
        })
    }
}

// ------------------------------- version 3 codecs ------------------------------------

/// A target's two wire fields: (`entity_id`, `scope`).
fn target_bytes(t: Target) -> (u32, u8) {
    match t {
        Target::Entity(id) => (id, 0),
        Target::All => (0, 1),
    }
}

/// Reads `entity_id` then scope: scope 0 is one entity, scope 1 every entity (`entity_id` 0).
fn read_target(r: &mut Reader<'_>) -> Result<Target, DecodeError> {
    let entity_id = r.u32();
    match r.u8() {
        0 => Ok(Target::Entity(entity_id)),
        1 if entity_id == 0 => Ok(Target::All),
        1 => Err(DecodeError::OutOfRange {
            field: "entity_id",
            value: entity_id.into(),
        }),
        other => Err(DecodeError::OutOfRange {
            field: "scope",
            value: other.into(),
        }),
    }
}

fn read_action_kind(r: &mut Reader<'_>) -> Result<ActionKind, DecodeError> {
    let v = r.u8();
    ActionKind::from_u8(v).ok_or(DecodeError::OutOfRange {
        field: "action",
        value: v.into(),
    })
}

fn nonzero_action_id(action_id: u32) -> Result<u32, DecodeError> {
    if action_id == 0 {
        Err(DecodeError::OutOfRange {
            field: "action_id",
            value: 0,
        })
    } else {
        Ok(action_id)
    }
}

impl Action {
    pub const LEN: usize = 1 + 4 + 4 + 4 + 1 + 1 + 4;

    /// In version 3, the first that has actions.
    pub fn encode(&self) -> Encoded {
        self.write(Kind::Action.since_version())
    }

    fn write(&self, version: u8) -> Encoded {
        let (entity_id, scope) = target_bytes(self.target);
        let mut w = Writer::new(Kind::Action, version);
        w.u32(self.action_id);
        w.u32(self.epoch);
        w.u32(entity_id);
        w.u8(scope);
        w.u8(self.action as u8);
        w.u32(self.segment_id);
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Action, DecodeError> {
        let (_, mut r) = expect_kind(bytes, Kind::Action)?;
        let action_id = nonzero_action_id(r.u32())?;
        let epoch = r.u32();
        let target = read_target(&mut r)?;
        let action = read_action_kind(&mut r)?;
        let segment_id = r.u32();
        if segment_id != 0 && action != ActionKind::Cancel {
            return Err(DecodeError::OutOfRange {
                field: "segment_id",
                value: segment_id.into(),
            });
        }
        Ok(Action {
            action_id,
            epoch,
            target,
            action,
            segment_id,
        })
    }
}

impl ActionAck {
    pub const LEN: usize = 1 + 4 + 4 + 1 + 1 + 1 + 1 + 1 + 4;

    /// In version 3, the first that has action acks.
    pub fn encode(&self) -> Encoded {
        self.write(Kind::ActionAck.since_version())
    }

    fn write(&self, version: u8) -> Encoded {
        let (entity_id, scope) = target_bytes(self.target);
        let mut w = Writer::new(Kind::ActionAck, version);
        w.u32(self.action_id);
        w.u32(entity_id);
        w.u8(scope);
        w.u8(self.action as u8);
        w.u8(self.outcome as u8);
        w.u8(self.repeat.into());
        w.u8(self.cancelled);
        w.u32(self.fence);
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<ActionAck, DecodeError> {
        let (_, mut r) = expect_kind(bytes, Kind::ActionAck)?;
        let action_id = nonzero_action_id(r.u32())?;
        let target = read_target(&mut r)?;
        let action = read_action_kind(&mut r)?;
        let o = r.u8();
        let outcome = ActionOutcome::from_u8(o).ok_or(DecodeError::OutOfRange {
            field: "outcome",
            value: o.into(),
        })?;
        let repeat = match r.u8() {
            0 => false,
            1 => true,
            other => {
                return Err(DecodeError::OutOfRange {
                    field: "repeat",
                    value: other.into(),
                });
            }
        };
        Ok(ActionAck {
            action_id,
            target,
            action,
            outcome,
            repeat,
            cancelled: r.u8(),
            fence: r.u32(),
        })
    }
}

impl ServerStatus {
    pub const LEN: usize = 1 + 1 + 4 + 4 + 8;

    /// In version 3, the first that has server statuses.
    pub fn encode(&self) -> Encoded {
        self.write(Kind::ServerStatus.since_version())
    }

    fn write(&self, version: u8) -> Encoded {
        let mut w = Writer::new(Kind::ServerStatus, version);
        w.u8(self.presence as u8);
        w.u32(self.session);
        w.u32(self.epoch);
        w.u64(self.timestamp_ms);
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<ServerStatus, DecodeError> {
        let (_, mut r) = expect_kind(bytes, Kind::ServerStatus)?;
        let presence = read_presence(&mut r)?;
        Ok(ServerStatus {
            presence,
            session: r.u32(),
            epoch: r.u32(),
            timestamp_ms: r.u64(),
        })
    }
}

impl Lease {
    pub const LEN: usize = 1 + 4 + 4 + 8;

    /// In version 3, the first that has the lease.
    pub fn encode(&self) -> Encoded {
        self.write(Kind::Lease.since_version())
    }

    fn write(&self, version: u8) -> Encoded {
        let mut w = Writer::new(Kind::Lease, version);
        w.u32(self.epoch);
        w.u32(self.session);
        w.u64(self.timestamp_ms);
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Lease, DecodeError> {
        let (_, mut r) = expect_kind(bytes, Kind::Lease)?;
        let epoch = r.u32();
        if epoch == 0 {
            return Err(DecodeError::OutOfRange {
                field: "epoch",
                value: 0,
            });
        }
        Ok(Lease {
            epoch,
            session: r.u32(),
            timestamp_ms: r.u64(),
        })
    }
}

impl Message {
    pub fn kind(&self) -> Kind {
        match self {
            Message::Heartbeat(_) => Kind::Heartbeat,
            Message::State(_) => Kind::State,
            Message::Segment(_) => Kind::Segment,
            Message::Ack(_) => Kind::Ack,
            Message::Status(_) => Kind::Status,
            Message::Action(_) => Kind::Action,
            Message::ActionAck(_) => Kind::ActionAck,
            Message::ServerStatus(_) => Kind::ServerStatus,
            Message::Lease(_) => Kind::Lease,
        }
    }

    /// In [`VERSION`], or in the oldest later version that can carry the message (a version 3
    /// kind or field), so nothing is dropped. What the daemons send today is unchanged: they
    /// never set a version 3 field.
    pub fn encode(&self) -> Encoded {
        let version = self.needs().map_or(1, |(v, _)| v).max(VERSION);
        self.write(version)
    }

    /// The oldest version that can carry this message and the newest thing in it that needs
    /// that version, or None when version 1 can say it all.
    fn needs(&self) -> Option<(u8, &'static str)> {
        match self {
            Message::Heartbeat(_) | Message::Status(_) => None,
            Message::State(m) => (m.min_version() > 1).then_some((3, "entity flags")),
            Message::Segment(m) => match m.min_version() {
                3 => Some((3, "a leader epoch")),
                2 => Some((2, "a segment deadline")),
                _ => None,
            },
            Message::Ack(m) => {
                (m.min_version() > 1).then(|| (m.min_version(), "this reject reason"))
            }
            Message::Action(_)
            | Message::ActionAck(_)
            | Message::ServerStatus(_)
            | Message::Lease(_) => Some((self.kind().since_version(), "this message kind")),
        }
    }

    /// Encodes in `version`, for a peer that does not speak the newest one. Fails when the
    /// message cannot be said in that version (a deadline or an `Expired` in version 1; a leader
    /// epoch, entity flags, a version 3 reject reason or a version 3 kind before version 3).
    pub fn encode_as(&self, version: u8) -> Result<Encoded, EncodeError> {
        check_version(version)?;
        if let Some((need, what)) = self.needs() {
            if need > version {
                return Err(EncodeError::NotInVersion { version, what });
            }
        }
        Ok(self.write(version))
    }

    /// Writes in `version`, which can carry the message (checked by the callers).
    fn write(&self, version: u8) -> Encoded {
        match self {
            Message::Heartbeat(m) => m.write(version),
            Message::State(m) => m.write(version),
            Message::Segment(m) => m.write(version),
            Message::Ack(m) => m.write(version),
            Message::Status(m) => m.write(version),
            Message::Action(m) => m.write(version),
            Message::ActionAck(m) => m.write(version),
            Message::ServerStatus(m) => m.write(version),
            Message::Lease(m) => m.write(version),
        }
    }

    /// Decodes any fleet message of any version this code speaks.
    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        Ok(match peek_kind(bytes)? {
            Kind::Heartbeat => Message::Heartbeat(Heartbeat::decode(bytes)?),
            Kind::State => Message::State(StateReport::decode(bytes)?),
            Kind::Segment => Message::Segment(Segment::decode(bytes)?),
            Kind::Ack => Message::Ack(SegmentAck::decode(bytes)?),
            Kind::Status => Message::Status(Status::decode(bytes)?),
            Kind::Action => Message::Action(Action::decode(bytes)?),
            Kind::ActionAck => Message::ActionAck(ActionAck::decode(bytes)?),
            Kind::ServerStatus => Message::ServerStatus(ServerStatus::decode(bytes)?),
            Kind::Lease => Message::Lease(Lease::decode(bytes)?),
        })
    }
}

/// One sample message of every kind, with its name: the unit tests' byte fixtures, the
/// examples docs/protocol.md must show (`tests/protocol_doc.rs`), and the codec benchmark's
/// inputs all use these.
pub fn samples() -> Vec<(&'static str, Message)> {
    vec![
        (
            "heartbeat",
            Message::Heartbeat(Heartbeat {
                seq: 42,
                timestamp_ms: 1_764_000_000_000,
            }),
        ),
        (
            "state",
            Message::State(StateReport {
                entity_id: 1,
                timestamp_ms: 1_764_000_000_100,
                x: 123,
                y: 456,
                angle: 45_000,
                vx: 250,
                vy: -250,
                segment_id: 7,
                progress: 5_000,
                flags: EntityFlags::NONE,
            }),
        ),
        (
            "segment",
            Message::Segment(Segment {
                entity_id: 2,
                segment_id: 7,
                start: Point::new(0, 0),
                end: Point::new(1000, -500),
                velocity_start: 200,
                velocity_end: 400,
                segment_type: 0,
                deadline_ms: 1_764_000_004_000,
                epoch: 0,
            }),
        ),
        (
            "ack",
            Message::Ack(SegmentAck {
                entity_id: 2,
                segment_id: 7,
                outcome: AckOutcome::Rejected(RejectReason::QueueFull),
            }),
        ),
        (
            "status",
            Message::Status(Status {
                presence: Presence::Online,
                session: 1_764_000_000,
                timestamp_ms: 1_764_000_000_000,
            }),
        ),
    ]
}

/// One sample of every version 3 message and field, with its name: the version 3 byte
/// fixtures and the `hex v3` examples docs/protocol.md must show. Kept apart from [`samples`],
/// which the codec benchmark times (the messages the daemons send today).
pub fn samples_v3() -> Vec<(&'static str, Message)> {
    vec![
        (
            "state_v3",
            Message::State(StateReport {
                entity_id: 1,
                timestamp_ms: 1_764_000_000_300,
                x: 123,
                y: 456,
                angle: 45_000,
                vx: 0,
                vy: 0,
                segment_id: 7,
                progress: 5_000,
                flags: EntityFlags::PAUSED,
            }),
        ),
        (
            "segment_v3",
            Message::Segment(Segment {
                entity_id: 2,
                segment_id: 7,
                start: Point::new(0, 0),
                end: Point::new(1000, -500),
                velocity_start: 200,
                velocity_end: 400,
                segment_type: 0,
                deadline_ms: 1_764_000_004_000,
                epoch: 0x0000_02f2,
            }),
        ),
        (
            "action",
            Message::Action(Action {
                action_id: 3,
                epoch: 0x0000_02f2,
                target: Target::Entity(2),
                action: ActionKind::Stop,
                segment_id: 0,
            }),
        ),
        (
            "action_ack",
            Message::ActionAck(ActionAck {
                action_id: 3,
                target: Target::Entity(2),
                action: ActionKind::Stop,
                outcome: ActionOutcome::Done,
                repeat: false,
                cancelled: 3,
                fence: 0x0000_02f2,
            }),
        ),
        (
            "server_status",
            Message::ServerStatus(ServerStatus {
                presence: Presence::Online,
                session: 1_764_000_000,
                epoch: 0x0000_02f2,
                timestamp_ms: 1_764_000_000_500,
            }),
        ),
        (
            "lease",
            Message::Lease(Lease {
                epoch: 0x0000_02f2,
                session: 1_764_000_000,
                timestamp_ms: 1_764_000_000_200,
            }),
        ),
    ]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn heartbeat_fixture() {
        let bytes = [
            0x21, // version 2, kind 1 (heartbeat)
            0x2a, 0x00, 0x00, 0x00, // seq = 42
            0x00, 0xe8, 0x97, 0xb6, 0x9a, 0x01, 0x00, 0x00, // timestamp_ms = 1764000000000
        ];
        let hb = Heartbeat {
            seq: 42,
            timestamp_ms: 1_764_000_000_000,
        };
        assert_eq!(hb.encode().as_slice(), &bytes);
        assert_eq!(Heartbeat::decode(&bytes), Ok(hb));
    }

    #[test]
    fn state_fixture() {
        let bytes = [
            0x22, // version 2, kind 2 (state)
            0x01, 0x00, 0x00, 0x00, // entity_id = 1
            0x64, 0xe8, 0x97, 0xb6, 0x9a, 0x01, 0x00, 0x00, // timestamp_ms = 1764000000100
            0x7b, 0x00, 0x00, 0x00, // x = 123 mm
            0xc8, 0x01, 0x00, 0x00, // y = 456 mm
            0xc8, 0xaf, 0x00, 0x00, // angle = 45000 millidegrees
            0xfa, 0x00, 0x00, 0x00, // vx = 250 mm/s
            0x06, 0xff, 0xff, 0xff, // vy = -250 mm/s
            0x07, 0x00, 0x00, 0x00, // segment_id = 7
            0x88, 0x13, // progress = 5000 (50.00 %)
        ];
        let Message::State(s) = samples()[1].1 else {
            unreachable!()
        };
        assert_eq!(s.encode().as_slice(), &bytes);
        assert_eq!(StateReport::decode(&bytes), Ok(s));
    }

    #[test]
    fn segment_fixture() {
        let bytes = [
            0x23, // version 2, kind 3 (segment)
            0x02, 0x00, 0x00, 0x00, // entity_id = 2
            0x07, 0x00, 0x00, 0x00, // segment_id = 7
            0x00, 0x00, 0x00, 0x00, // start.x = 0
            0x00, 0x00, 0x00, 0x00, // start.y = 0
            0xe8, 0x03, 0x00, 0x00, // end.x = 1000
            0x0c, 0xfe, 0xff, 0xff, // end.y = -500
            0xc8, 0x00, 0x00, 0x00, // velocity_start = 200 mm/s
            0x90, 0x01, 0x00, 0x00, // velocity_end = 400 mm/s
            0x00, // segment_type = 0 (line)
            0xa0, 0xf7, 0x97, 0xb6, 0x9a, 0x01, 0x00, 0x00, // deadline_ms = 1764000004000
        ];
        let Message::Segment(s) = samples()[2].1 else {
            unreachable!()
        };
        assert_eq!(s.encode().as_slice(), &bytes);
        assert_eq!(Segment::decode(&bytes), Ok(s));
    }

    #[test]
    fn version_1_segment_has_no_deadline() {
        let bytes = [
            0x13, // version 1, kind 3 (segment)
            0x02, 0x00, 0x00, 0x00, // entity_id = 2
            0x07, 0x00, 0x00, 0x00, // segment_id = 7
            0x00, 0x00, 0x00, 0x00, // start.x = 0
            0x00, 0x00, 0x00, 0x00, // start.y = 0
            0xe8, 0x03, 0x00, 0x00, // end.x = 1000
            0x0c, 0xfe, 0xff, 0xff, // end.y = -500
            0xc8, 0x00, 0x00, 0x00, // velocity_start = 200 mm/s
            0x90, 0x01, 0x00, 0x00, // velocity_end = 400 mm/s
            0x00, // segment_type = 0 (line); version 1 ends here
        ];
        let Message::Segment(mut s) = samples()[2].1 else {
            unreachable!()
        };
        s.deadline_ms = NO_DEADLINE;
        assert_eq!(Segment::decode(&bytes), Ok(s));
        assert!(!s.has_deadline());
        assert_eq!(
            s.expired_by(u64::MAX),
            None,
            "a version 1 segment never expires"
        );
        let m = Message::Segment(s);
        assert_eq!(m.encode_as(1).unwrap().as_slice(), &bytes);
        // A deadline cannot be said in version 1, and is not silently dropped.
        let Message::Segment(with) = samples()[2].1 else {
            unreachable!()
        };
        assert_eq!(
            Message::Segment(with).encode_as(1).map(|e| e.to_vec()),
            Err(EncodeError::NotInVersion {
                version: 1,
                what: "a segment deadline"
            })
        );
        // A version 2 segment without a deadline is the 42-byte layout ending in ff x 8.
        let v2 = m.encode();
        assert_eq!(v2.as_slice().len(), Segment::LEN);
        assert_eq!(&v2.as_slice()[34..], &[0xff; 8]);
        assert_eq!(Message::decode(v2.as_slice()), Ok(m));
    }

    #[test]
    fn expiry_is_measured_on_the_deadline() {
        let Message::Segment(s) = samples()[2].1 else {
            unreachable!()
        };
        assert_eq!(s.expired_by(s.deadline_ms - 1), None);
        assert_eq!(
            s.expired_by(s.deadline_ms),
            None,
            "due at the deadline itself"
        );
        assert_eq!(s.expired_by(s.deadline_ms + 250), Some(250));
    }

    #[test]
    fn version_1_payloads_still_decode() {
        for (name, m) in samples() {
            let m = match m {
                Message::Segment(mut s) => {
                    s.deadline_ms = NO_DEADLINE;
                    Message::Segment(s)
                }
                other => other,
            };
            let v1 = m.encode_as(1).unwrap();
            let v2 = m.encode_as(2).unwrap();
            assert_eq!(v1.as_slice()[0] >> 4, 1, "{name}");
            assert_eq!(v2.as_slice()[0] >> 4, 2, "{name}");
            assert_eq!(v1.as_slice().len(), m.kind().encoded_len_in(1), "{name}");
            assert_eq!(peek(v1.as_slice()), Ok((1, m.kind())), "{name}");
            assert_eq!(Message::decode(v1.as_slice()), Ok(m), "{name}");
            if !matches!(m, Message::Segment(_)) {
                // Same layout: only the header differs.
                assert_eq!(v1.as_slice()[1..], v2.as_slice()[1..], "{name}");
            }
        }
        assert_eq!(
            samples()[0].1.encode_as(LATEST + 1).map(|e| e.to_vec()),
            Err(EncodeError::UnknownVersion(LATEST + 1))
        );
    }

    #[test]
    fn expired_is_a_version_2_reason() {
        let ack = Message::Ack(SegmentAck {
            entity_id: 1,
            segment_id: 9,
            outcome: AckOutcome::Rejected(RejectReason::Expired),
        });
        let v2 = ack.encode();
        assert_eq!(v2.as_slice()[10], 6);
        assert_eq!(Message::decode(v2.as_slice()), Ok(ack));
        assert!(ack.encode_as(1).is_err(), "version 1 has no Expired");
        let mut v1 = v2.to_vec();
        v1[0] = 0x14;
        assert_eq!(
            Message::decode(&v1),
            Err(DecodeError::OutOfRange {
                field: "reason",
                value: 6
            }),
            "reason 6 in a version 1 ack is out of range"
        );
    }

    #[test]
    fn ack_fixture() {
        let bytes = [
            0x24, // version 2, kind 4 (ack)
            0x02, 0x00, 0x00, 0x00, // entity_id = 2
            0x07, 0x00, 0x00, 0x00, // segment_id = 7
            0x02, // outcome = rejected
            0x04, // reason = queue full
        ];
        let Message::Ack(a) = samples()[3].1 else {
            unreachable!()
        };
        assert_eq!(a.encode().as_slice(), &bytes);
        assert_eq!(SegmentAck::decode(&bytes), Ok(a));
    }

    #[test]
    fn status_fixture() {
        let bytes = [
            0x25, // version 2, kind 5 (status)
            0x01, // presence = online
            0x00, 0x81, 0x24, 0x69, // session = 1764000000
            0x00, 0xe8, 0x97, 0xb6, 0x9a, 0x01, 0x00, 0x00, // timestamp_ms
        ];
        let Message::Status(s) = samples()[4].1 else {
            unreachable!()
        };
        assert_eq!(s.encode().as_slice(), &bytes);
        assert_eq!(Status::decode(&bytes), Ok(s));
    }

    #[test]
    fn every_kind_has_its_fixed_size_within_budget() {
        for (name, m) in samples() {
            let len = m.encode().as_slice().len();
            assert_eq!(len, m.kind().encoded_len(), "{name}");
            assert!(len <= MAX_PAYLOAD, "{name} is {len} bytes");
        }
        assert_eq!(Heartbeat::LEN, 13);
        assert_eq!(StateReport::LEN, 39);
        assert_eq!(Segment::LEN, 42);
        assert_eq!(Segment::LEN_V1, 34);
        assert_eq!(SegmentAck::LEN, 11);
        assert_eq!(Status::LEN, 14);
        // Version 3.
        for (name, m) in samples_v3() {
            let enc = m.encode();
            assert_eq!(enc.as_slice()[0] >> 4, 3, "{name}");
            assert_eq!(enc.as_slice().len(), m.kind().encoded_len_in(3), "{name}");
            assert!(enc.as_slice().len() <= MAX_PAYLOAD, "{name}");
        }
        assert_eq!(StateReport::LEN_V3, 40);
        assert_eq!(Segment::LEN_V3, 46);
        assert_eq!(Action::LEN, 19);
        assert_eq!(ActionAck::LEN, 18);
        assert_eq!(ServerStatus::LEN, 18);
        assert_eq!(Lease::LEN, 17);
    }

    #[test]
    fn broken_payload_of_every_kind_is_a_typed_error() {
        for (name, m) in samples().into_iter().chain(samples_v3()) {
            let good = m.encode().to_vec();
            // Truncated by one byte.
            assert!(
                matches!(
                    Message::decode(&good[..good.len() - 1]),
                    Err(DecodeError::WrongLength { .. })
                ),
                "{name} truncated"
            );
            // One byte too many.
            let mut long = good.clone();
            long.push(0);
            assert!(
                matches!(Message::decode(&long), Err(DecodeError::WrongLength { .. })),
                "{name} extended"
            );
            // Future version, and version 0.
            for v in [0, LATEST + 1, 15] {
                let mut future = good.clone();
                future[0] = (v << 4) | (future[0] & 0x0f);
                assert_eq!(
                    Message::decode(&future),
                    Err(DecodeError::UnknownVersion(v)),
                    "{name}"
                );
            }
            // Unknown kind.
            let mut k = good.clone();
            k[0] = (LATEST << 4) | 0x0f;
            assert_eq!(Message::decode(&k), Err(DecodeError::UnknownKind(15)));
        }
        assert_eq!(Message::decode(&[]), Err(DecodeError::Empty));
    }

    #[test]
    fn out_of_range_fields_are_rejected() {
        let Message::State(mut s) = samples()[1].1 else {
            unreachable!()
        };
        s.angle = 360_000;
        assert!(matches!(
            StateReport::decode(s.encode().as_slice()),
            Err(DecodeError::OutOfRange { field: "angle", .. })
        ));
        s.angle = -1;
        assert!(StateReport::decode(s.encode().as_slice()).is_err());
        s.angle = 0;
        s.progress = 10_001;
        assert!(matches!(
            StateReport::decode(s.encode().as_slice()),
            Err(DecodeError::OutOfRange {
                field: "progress",
                ..
            })
        ));

        let Message::Segment(mut seg) = samples()[2].1 else {
            unreachable!()
        };
        seg.segment_id = 0;
        assert!(matches!(
            Segment::decode(seg.encode().as_slice()),
            Err(DecodeError::OutOfRange {
                field: "segment_id",
                ..
            })
        ));

        let mut ack = samples()[3].1.encode().to_vec();
        ack[9] = 3; // outcome 3 does not exist
        assert!(matches!(
            SegmentAck::decode(&ack),
            Err(DecodeError::OutOfRange {
                field: "outcome",
                ..
            })
        ));
        ack[9] = 2;
        ack[10] = 0; // rejected needs a reason
        assert!(matches!(
            SegmentAck::decode(&ack),
            Err(DecodeError::OutOfRange {
                field: "reason",
                ..
            })
        ));
        ack[9] = 0;
        ack[10] = 1; // accepted must not carry a reason
        assert!(SegmentAck::decode(&ack).is_err());

        let mut st = samples()[4].1.encode().to_vec();
        st[1] = 0;
        assert!(matches!(
            Status::decode(&st),
            Err(DecodeError::OutOfRange {
                field: "presence",
                ..
            })
        ));
    }

    #[test]
    fn typed_decoder_refuses_other_kinds() {
        let hb = samples()[0].1.encode();
        assert_eq!(
            StateReport::decode(hb.as_slice()),
            Err(DecodeError::UnexpectedKind {
                expected: "state",
                actual: "heartbeat"
            })
        );
    }

    /// The version 3 sample named `name`.
    fn v3(name: &str) -> Message {
        samples_v3()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, m)| m)
            .unwrap()
    }

    /// Checks that `m` encodes to `bytes` and `bytes` decodes to `m`.
    fn fixture(m: Message, bytes: &[u8]) {
        assert_eq!(m.encode().as_slice(), bytes, "{m:?}");
        assert_eq!(m.encode_as(3).unwrap().as_slice(), bytes, "{m:?}");
        assert_eq!(Message::decode(bytes), Ok(m));
    }

    #[test]
    fn state_v3_fixture() {
        let bytes = [
            0x32, // version 3, kind 2 (state)
            0x01, 0x00, 0x00, 0x00, // entity_id = 1
            0x2c, 0xe9, 0x97, 0xb6, 0x9a, 0x01, 0x00, 0x00, // timestamp_ms = 1764000000300
            0x7b, 0x00, 0x00, 0x00, // x = 123 mm
            0xc8, 0x01, 0x00, 0x00, // y = 456 mm
            0xc8, 0xaf, 0x00, 0x00, // angle = 45000 millidegrees
            0x00, 0x00, 0x00, 0x00, // vx = 0 (halted)
            0x00, 0x00, 0x00, 0x00, // vy = 0
            0x07, 0x00, 0x00, 0x00, // segment_id = 7, kept while paused
            0x88, 0x13, // progress = 5000
            0x01, // flags = paused
        ];
        fixture(v3("state_v3"), &bytes);
        // Without flags, version 3 is the version 2 layout and a 0 byte.
        let Message::State(mut s) = v3("state_v3") else {
            unreachable!()
        };
        s.flags = EntityFlags::NONE;
        let m = Message::State(s);
        assert_eq!(m.encode().as_slice()[0], 0x22, "the daemons' version");
        assert_eq!(m.encode().as_slice(), m.encode_as(2).unwrap().as_slice());
        assert_eq!(m.encode_as(3).unwrap().as_slice()[39], 0);
    }

    #[test]
    fn segment_v3_fixture() {
        let bytes = [
            0x33, // version 3, kind 3 (segment)
            0x02, 0x00, 0x00, 0x00, // entity_id = 2
            0x07, 0x00, 0x00, 0x00, // segment_id = 7
            0x00, 0x00, 0x00, 0x00, // start.x = 0
            0x00, 0x00, 0x00, 0x00, // start.y = 0
            0xe8, 0x03, 0x00, 0x00, // end.x = 1000
            0x0c, 0xfe, 0xff, 0xff, // end.y = -500
            0xc8, 0x00, 0x00, 0x00, // velocity_start = 200 mm/s
            0x90, 0x01, 0x00, 0x00, // velocity_end = 400 mm/s
            0x00, // segment_type = 0 (line)
            0xa0, 0xf7, 0x97, 0xb6, 0x9a, 0x01, 0x00, 0x00, // deadline_ms = 1764000004000
            0xf2, 0x02, 0x00, 0x00, // epoch = 0x2f2: term 2, tag 0xf2 (mqtt-server-a)
        ];
        fixture(v3("segment_v3"), &bytes);
        // The epoch cannot be said in version 2 and is not dropped silently.
        assert_eq!(
            v3("segment_v3").encode_as(2).map(|e| e.to_vec()),
            Err(EncodeError::NotInVersion {
                version: 2,
                what: "a leader epoch"
            })
        );
        // A version 2 segment decodes unfenced (epoch 0).
        let Message::Segment(s) = samples()[2].1 else {
            unreachable!()
        };
        assert_eq!(s.epoch, 0);
        assert_eq!(
            Segment::decode(&bytes[..Segment::LEN]).map(|d| d.epoch),
            Err(DecodeError::WrongLength {
                kind: "segment",
                expected: Segment::LEN_V3,
                actual: Segment::LEN
            })
        );
    }

    #[test]
    fn action_fixtures() {
        let stop = [
            0x36, // version 3, kind 6 (action)
            0x03, 0x00, 0x00, 0x00, // action_id = 3
            0xf2, 0x02, 0x00, 0x00, // epoch = 0x2f2
            0x02, 0x00, 0x00, 0x00, // entity_id = 2
            0x00, // scope = one entity
            0x01, // action = stop
            0x00, 0x00, 0x00, 0x00, // segment_id = 0 (not a cancel)
        ];
        fixture(v3("action"), &stop);
        let cancel_all_queued = [
            0x36, // version 3, kind 6 (action)
            0x04, 0x00, 0x00, 0x00, // action_id = 4
            0xf2, 0x02, 0x00, 0x00, // epoch = 0x2f2
            0x00, 0x00, 0x00, 0x00, // entity_id = 0 (every entity)
            0x01, // scope = every entity of the Pi
            0x04, // action = cancel
            0x00, 0x00, 0x00, 0x00, // segment_id = 0: every queued segment
        ];
        fixture(
            Message::Action(Action {
                action_id: 4,
                epoch: 0x2f2,
                target: Target::All,
                action: ActionKind::Cancel,
                segment_id: 0,
            }),
            &cancel_all_queued,
        );
    }

    #[test]
    fn action_ack_fixture() {
        let bytes = [
            0x37, // version 3, kind 7 (action ack)
            0x03, 0x00, 0x00, 0x00, // action_id = 3
            0x02, 0x00, 0x00, 0x00, // entity_id = 2
            0x00, // scope = one entity
            0x01, // action = stop
            0x00, // outcome = done
            0x00, // repeat = no (first answer)
            0x03, // cancelled = 3 segments dropped
            0xf2, 0x02, 0x00, 0x00, // fence = 0x2f2
        ];
        fixture(v3("action_ack"), &bytes);
    }

    #[test]
    fn server_status_and_lease_fixtures() {
        let status = [
            0x38, // version 3, kind 8 (server status)
            0x01, // presence = online
            0x00, 0x81, 0x24, 0x69, // session = 1764000000
            0xf2, 0x02, 0x00, 0x00, // epoch = 0x2f2 (leading)
            0xf4, 0xe9, 0x97, 0xb6, 0x9a, 0x01, 0x00, 0x00, // timestamp_ms = 1764000000500
        ];
        fixture(v3("server_status"), &status);
        let lease = [
            0x39, // version 3, kind 9 (lease)
            0xf2, 0x02, 0x00, 0x00, // epoch = 0x2f2
            0x00, 0x81, 0x24, 0x69, // session = 1764000000
            0xc8, 0xe8, 0x97, 0xb6, 0x9a, 0x01, 0x00, 0x00, // timestamp_ms = 1764000000200
        ];
        fixture(v3("lease"), &lease);
    }

    #[test]
    fn version_3_kinds_and_reasons_do_not_exist_before_it() {
        for (name, m) in samples_v3() {
            let mut bytes = m.encode().to_vec();
            for v in OLDEST_VERSION..3 {
                bytes[0] = (v << 4) | (bytes[0] & 0x0f);
                let got = Message::decode(&bytes);
                if m.kind().since_version() == 3 {
                    assert_eq!(got, Err(DecodeError::UnknownKind(m.kind() as u8)), "{name}");
                    assert_eq!(
                        m.encode_as(v).map(|e| e.to_vec()),
                        Err(EncodeError::NotInVersion {
                            version: v,
                            what: "this message kind"
                        }),
                        "{name}"
                    );
                } else {
                    // Same kind, older (shorter) layout.
                    assert!(
                        matches!(got, Err(DecodeError::WrongLength { .. })),
                        "{name}: {got:?}"
                    );
                }
            }
        }
        for reason in [
            RejectReason::VehicleUnavailable,
            RejectReason::Cancelled,
            RejectReason::StaleLeader,
        ] {
            assert_eq!(reason.since_version(), 3);
            let ack = Message::Ack(SegmentAck {
                entity_id: 2,
                segment_id: 7,
                outcome: AckOutcome::Rejected(reason),
            });
            let v3 = ack.encode();
            assert_eq!(
                v3.as_slice()[0],
                0x34,
                "{reason:?}: encode() goes to version 3"
            );
            assert_eq!(v3.as_slice()[10], reason as u8);
            assert!(ack.encode_as(2).is_err());
            let mut v2 = v3.to_vec();
            v2[0] = 0x24;
            assert_eq!(
                Message::decode(&v2),
                Err(DecodeError::OutOfRange {
                    field: "reason",
                    value: (reason as u8).into()
                })
            );
        }
        assert_eq!(RejectReason::from_u8(10), None);
    }

    #[test]
    fn the_daemons_output_is_unchanged() {
        // What the daemons send today (no version 3 field set) stays version 2, byte for byte.
        for (name, m) in samples() {
            let enc = m.encode();
            assert_eq!(enc.as_slice()[0] >> 4, VERSION, "{name}");
            assert_eq!(enc.as_slice(), m.encode_as(2).unwrap().as_slice(), "{name}");
        }
        assert_eq!(VERSION, 2);
        assert_eq!(LATEST, 3);
    }

    #[test]
    fn out_of_range_version_3_fields_are_rejected() {
        let field = |bytes: &[u8]| match Message::decode(bytes) {
            Err(DecodeError::OutOfRange { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let mut st = v3("state_v3").encode().to_vec();
        st[39] = 0x08; // an undefined flag bit
        assert_eq!(field(&st), "flags");

        let action = v3("action").encode().to_vec();
        let mut a = action.clone();
        a[1..5].fill(0); // action_id 0
        assert_eq!(field(&a), "action_id");
        let mut a = action.clone();
        a[13] = 2; // scope 2
        assert_eq!(field(&a), "scope");
        let mut a = action.clone();
        a[13] = 1; // every entity, but an entity id is given
        assert_eq!(field(&a), "entity_id");
        for bad in [0, 5] {
            let mut a = action.clone();
            a[14] = bad;
            assert_eq!(field(&a), "action");
        }
        let mut a = action.clone();
        a[15] = 9; // a segment id on a stop
        assert_eq!(field(&a), "segment_id");
        a[14] = ActionKind::Cancel as u8;
        assert!(Message::decode(&a).is_ok(), "a cancel names a segment");

        let ack = v3("action_ack").encode().to_vec();
        let mut k = ack.clone();
        k[11] = 6;
        assert_eq!(field(&k), "outcome");
        let mut k = ack.clone();
        k[12] = 2;
        assert_eq!(field(&k), "repeat");
        let mut k = ack.clone();
        k[10] = 0;
        assert_eq!(field(&k), "action");

        let mut ss = v3("server_status").encode().to_vec();
        ss[1] = 4;
        assert_eq!(field(&ss), "presence");

        let mut lease = v3("lease").encode().to_vec();
        lease[1..5].fill(0);
        assert_eq!(field(&lease), "epoch");
    }

    #[test]
    fn entity_flags_combine() {
        let f = EntityFlags::NONE
            .with(EntityFlags::PAUSED)
            .with(EntityFlags::STOPPED);
        assert!(f.contains(EntityFlags::PAUSED) && f.contains(EntityFlags::STOPPED));
        assert!(!f.contains(EntityFlags::NO_DRIVER));
        assert_eq!(f.without(EntityFlags::PAUSED), EntityFlags::STOPPED);
        assert_eq!(EntityFlags::from_bits(0x07), Ok(EntityFlags::ALL));
        assert!(EntityFlags::from_bits(0x80).is_err());
    }

    #[test]
    fn serde_json_shows_messages() {
        let json = serde_json::to_string(&samples()[0].1).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"heartbeat","seq":42,"timestamp_ms":1764000000000}"#
        );
        for (_, m) in samples().into_iter().chain(samples_v3()) {
            let back: Message = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
            assert_eq!(back, m);
        }
    }

    fn arb_point() -> impl Strategy<Value = Point> {
        (any::<i32>(), any::<i32>()).prop_map(|(x, y)| Point { x, y })
    }

    fn arb_reason() -> impl Strategy<Value = RejectReason> {
        prop::sample::select(RejectReason::ALL.to_vec())
    }

    pub(crate) fn arb_message() -> impl Strategy<Value = Message> {
        prop_oneof![
            (any::<u32>(), any::<u64>()).prop_map(|(seq, timestamp_ms)| Message::Heartbeat(
                Heartbeat { seq, timestamp_ms }
            )),
            (
                any::<u32>(),
                any::<u64>(),
                (any::<i32>(), any::<i32>(), 0..ANGLE_FULL_TURN),
                (any::<i32>(), any::<i32>()),
                any::<u32>(),
                0..=PROGRESS_DONE,
                arb_flags(),
            )
                .prop_map(
                    |(
                        entity_id,
                        timestamp_ms,
                        (x, y, angle),
                        (vx, vy),
                        segment_id,
                        progress,
                        flags,
                    )| {
                        Message::State(StateReport {
                            entity_id,
                            timestamp_ms,
                            x,
                            y,
                            angle,
                            vx,
                            vy,
                            segment_id,
                            progress,
                            flags,
                        })
                    }
                ),
            (
                any::<u32>(),
                1..=u32::MAX,
                arb_point(),
                arb_point(),
                any::<i32>(),
                any::<i32>(),
                any::<u8>(),
                prop_oneof![Just(NO_DEADLINE), any::<u64>()],
                prop_oneof![Just(0), any::<u32>()],
            )
                .prop_map(
                    |(
                        entity_id,
                        segment_id,
                        start,
                        end,
                        velocity_start,
                        velocity_end,
                        segment_type,
                        deadline_ms,
                        epoch,
                    )| {
                        Message::Segment(Segment {
                            entity_id,
                            segment_id,
                            start,
                            end,
                            velocity_start,
                            velocity_end,
                            segment_type,
                            deadline_ms,
                            epoch,
                        })
                    }
                ),
            (
                any::<u32>(),
                any::<u32>(),
                prop_oneof![
                    Just(AckOutcome::Accepted),
                    Just(AckOutcome::Completed),
                    arb_reason().prop_map(AckOutcome::Rejected)
                ]
            )
                .prop_map(|(entity_id, segment_id, outcome)| Message::Ack(
                    SegmentAck {
                        entity_id,
                        segment_id,
                        outcome
                    }
                )),
            (
                prop::sample::select(vec![
                    Presence::Online,
                    Presence::Offline,
                    Presence::ConnectionLost
                ]),
                any::<u32>(),
                any::<u64>()
            )
                .prop_map(|(presence, session, timestamp_ms)| Message::Status(
                    Status {
                        presence,
                        session,
                        timestamp_ms
                    }
                )),
            arb_v3_message(),
        ]
    }

    fn arb_flags() -> impl Strategy<Value = EntityFlags> {
        prop_oneof![
            Just(EntityFlags::NONE),
            (0..=EntityFlags::ALL.bits()).prop_map(|b| EntityFlags::from_bits(b).unwrap()),
        ]
    }

    fn arb_presence() -> impl Strategy<Value = Presence> {
        prop::sample::select(vec![
            Presence::Online,
            Presence::Offline,
            Presence::ConnectionLost,
        ])
    }

    fn arb_target() -> impl Strategy<Value = Target> {
        prop_oneof![any::<u32>().prop_map(Target::Entity), Just(Target::All)]
    }

    fn arb_action_kind() -> impl Strategy<Value = ActionKind> {
        prop::sample::select(ActionKind::ALL.to_vec())
    }

    /// The kinds version 3 added.
    fn arb_v3_message() -> impl Strategy<Value = Message> {
        prop_oneof![
            (
                1..=u32::MAX,
                any::<u32>(),
                arb_target(),
                arb_action_kind(),
                any::<u32>()
            )
                .prop_map(|(action_id, epoch, target, action, segment_id)| {
                    Message::Action(Action {
                        action_id,
                        epoch,
                        target,
                        action,
                        // Only a cancel names a segment.
                        segment_id: if action == ActionKind::Cancel {
                            segment_id
                        } else {
                            0
                        },
                    })
                }),
            (
                1..=u32::MAX,
                arb_target(),
                arb_action_kind(),
                prop::sample::select(ActionOutcome::ALL.to_vec()),
                any::<bool>(),
                any::<u8>(),
                any::<u32>()
            )
                .prop_map(
                    |(action_id, target, action, outcome, repeat, cancelled, fence)| {
                        Message::ActionAck(ActionAck {
                            action_id,
                            target,
                            action,
                            outcome,
                            repeat,
                            cancelled,
                            fence,
                        })
                    }
                ),
            (arb_presence(), any::<u32>(), any::<u32>(), any::<u64>()).prop_map(
                |(presence, session, epoch, timestamp_ms)| {
                    Message::ServerStatus(ServerStatus {
                        presence,
                        session,
                        epoch,
                        timestamp_ms,
                    })
                }
            ),
            (1..=u32::MAX, any::<u32>(), any::<u64>()).prop_map(
                |(epoch, session, timestamp_ms)| Message::Lease(Lease {
                    epoch,
                    session,
                    timestamp_ms
                })
            ),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn round_trip(m in arb_message()) {
            let enc = m.encode();
            prop_assert!(enc.as_slice().len() <= MAX_PAYLOAD);
            prop_assert_eq!(Message::decode(enc.as_slice()), Ok(m));
            // `encode` is the daemons' VERSION unless the message needs a later one.
            let version = enc.as_slice()[0] >> 4;
            prop_assert!(version >= VERSION);
            if version > VERSION {
                prop_assert!(m.encode_as(version - 1).is_err());
            }
            // In every version, whatever that version can say round-trips; what it cannot
            // say is refused, never truncated. A version that can say it, every later one can.
            let mut said = false;
            for v in OLDEST_VERSION..=LATEST {
                match m.encode_as(v) {
                    Ok(e) => {
                        prop_assert_eq!(e.as_slice()[0] >> 4, v);
                        prop_assert_eq!(e.as_slice().len(), m.kind().encoded_len_in(v));
                        prop_assert_eq!(Message::decode(e.as_slice()), Ok(m));
                        said = true;
                    }
                    Err(EncodeError::NotInVersion { .. }) => prop_assert!(!said, "{v}"),
                    Err(e) => prop_assert!(false, "{e}"),
                }
            }
            prop_assert!(said);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..80)) {
            // Any result is fine; what matters is a value, not a panic. A successful decode
            // must re-encode to the very same bytes (the format has one spelling per message).
            if let Ok(m) = Message::decode(&bytes) {
                prop_assert_eq!(m.encode_as(bytes[0] >> 4).unwrap().to_vec(), bytes);
            }
        }

        #[test]
        fn valid_header_random_body(
            version in OLDEST_VERSION..=LATEST,
            kind in 1u8..=9,
            body in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut bytes = vec![(version << 4) | kind];
            bytes.extend(body);
            if let Ok(m) = Message::decode(&bytes) {
                prop_assert_eq!(m.encode_as(version).unwrap().to_vec(), bytes);
            }
        }
    }
}
