//! The binary wire format: message types and their fixed-layout, little-endian codec.
//!
//! Byte 0 of every payload is `(version << 4) | kind`; the rest is a fixed layout per kind and
//! version (see docs/protocol.md, which a test keeps in step with this file). No payload is
//! longer than [`MAX_PAYLOAD`]. Decoding is total: any byte string gives a message or a
//! [`DecodeError`], never a panic.
//!
//! Versions: this code sends [`VERSION`] and decodes every version from [`OLDEST_VERSION`] up,
//! so a server can be upgraded before the Pis (docs/protocol.md, "Versioning"). Version 2
//! added the segment's `deadline_ms` and the `Expired` reject reason; the other layouts are
//! the same in both versions.

use serde::{Deserialize, Serialize};

use crate::error::{DecodeError, EncodeError};

/// Protocol version this code sends, carried in the high nibble of byte 0.
pub const VERSION: u8 = 2;
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
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Heartbeat,
        Kind::State,
        Kind::Segment,
        Kind::Ack,
        Kind::Status,
    ];

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
        }
    }

    /// The fixed encoded length of a message of this kind in the current [`VERSION`],
    /// header byte included.
    pub const fn encoded_len(self) -> usize {
        self.encoded_len_in(VERSION)
    }

    /// The fixed encoded length of this kind in `version` (only the segment changed size).
    pub const fn encoded_len_in(self, version: u8) -> usize {
        match self {
            Kind::Heartbeat => Heartbeat::LEN,
            Kind::State => StateReport::LEN,
            Kind::Segment if version == 1 => Segment::LEN_V1,
            Kind::Segment => Segment::LEN,
            Kind::Ack => SegmentAck::LEN,
            Kind::Status => Status::LEN,
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
}

impl RejectReason {
    pub const ALL: [RejectReason; 6] = [
        RejectReason::UnknownEntity,
        RejectReason::UnsupportedType,
        RejectReason::InvalidSegment,
        RejectReason::QueueFull,
        RejectReason::ShuttingDown,
        RejectReason::Expired,
    ];

    pub fn from_u8(v: u8) -> Option<RejectReason> {
        RejectReason::ALL.into_iter().find(|r| *r as u8 == v)
    }

    /// The protocol version that introduced this code.
    pub const fn since_version(self) -> u8 {
        match self {
            RejectReason::Expired => 2,
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

/// Any fleet message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Message {
    Heartbeat(Heartbeat),
    State(StateReport),
    Segment(Segment),
    Ack(SegmentAck),
    Status(Status),
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
    if !(OLDEST_VERSION..=VERSION).contains(&version) {
        return Err(DecodeError::UnknownVersion(version));
    }
    let kind = Kind::from_u8(first & 0x0f).ok_or(DecodeError::UnknownKind(first & 0x0f))?;
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
    if (OLDEST_VERSION..=VERSION).contains(&version) {
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
    pub const LEN: usize = 1 + 4 + 8 + 5 * 4 + 4 + 2;

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
        }
    }

    pub fn encode(&self) -> Encoded {
        self.write(VERSION)
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
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<StateReport, DecodeError> {
        let (_, mut r) = expect_kind(bytes, Kind::State)?;
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
    /// Version 2 (and later): the version 1 layout followed by `deadline_ms`.
    pub const LEN: usize = Segment::LEN_V1 + 8;
    /// Version 1: no deadline.
    pub const LEN_V1: usize = 1 + 4 + 4 + 8 + 8 + 4 + 4 + 1;

    pub fn encode(&self) -> Encoded {
        self.write(VERSION)
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

    pub fn encode(&self) -> Encoded {
        self.write(VERSION)
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
        let p = r.u8();
        let presence = Presence::from_u8(p).ok_or(DecodeError::OutOfRange {
            field: "presence",
            value: p.into(),
        })?;
        Ok(Status {
            presence,
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
        }
    }

    pub fn encode(&self) -> Encoded {
        match self {
            Message::Heartbeat(m) => m.encode(),
            Message::State(m) => m.encode(),
            Message::Segment(m) => m.encode(),
            Message::Ack(m) => m.encode(),
            Message::Status(m) => m.encode(),
        }
    }

    /// Encodes in `version`, for a peer that does not speak the current one yet. Fails when
    /// the message cannot be said in that version (a deadline or an `Expired` in version 1).
    pub fn encode_as(&self, version: u8) -> Result<Encoded, EncodeError> {
        check_version(version)?;
        Ok(match self {
            Message::Heartbeat(m) => m.write(version),
            Message::State(m) => m.write(version),
            Message::Segment(m) => {
                if version < 2 && m.has_deadline() {
                    return Err(EncodeError::NotInVersion {
                        version,
                        what: "a segment deadline",
                    });
                }
                m.write(version)
            }
            Message::Ack(m) => {
                if let AckOutcome::Rejected(r) = m.outcome {
                    if r.since_version() > version {
                        return Err(EncodeError::NotInVersion {
                            version,
                            what: "this reject reason",
                        });
                    }
                }
                m.write(version)
            }
            Message::Status(m) => m.write(version),
        })
    }

    /// Decodes any fleet message of any version this code speaks.
    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        Ok(match peek_kind(bytes)? {
            Kind::Heartbeat => Message::Heartbeat(Heartbeat::decode(bytes)?),
            Kind::State => Message::State(StateReport::decode(bytes)?),
            Kind::Segment => Message::Segment(Segment::decode(bytes)?),
            Kind::Ack => Message::Ack(SegmentAck::decode(bytes)?),
            Kind::Status => Message::Status(Status::decode(bytes)?),
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
            samples()[0].1.encode_as(3).map(|e| e.to_vec()),
            Err(EncodeError::UnknownVersion(3))
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
    }

    #[test]
    fn broken_payload_of_every_kind_is_a_typed_error() {
        for (name, m) in samples() {
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
            for v in [0, VERSION + 1, 15] {
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
            k[0] = (VERSION << 4) | 0x0f;
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

    #[test]
    fn serde_json_shows_messages() {
        let json = serde_json::to_string(&samples()[0].1).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"heartbeat","seq":42,"timestamp_ms":1764000000000}"#
        );
        for (_, m) in samples() {
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
                0..=PROGRESS_DONE
            )
                .prop_map(
                    |(entity_id, timestamp_ms, (x, y, angle), (vx, vy), segment_id, progress)| {
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
                any::<u64>()
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
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn round_trip(m in arb_message()) {
            let enc = m.encode();
            prop_assert!(enc.as_slice().len() <= MAX_PAYLOAD);
            prop_assert_eq!(Message::decode(enc.as_slice()), Ok(m));
            // In version 1, whatever version 1 can say round-trips too.
            if let Ok(v1) = m.encode_as(1) {
                prop_assert_eq!(Message::decode(v1.as_slice()), Ok(m));
            }
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
            version in OLDEST_VERSION..=VERSION,
            kind in 1u8..=5,
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
