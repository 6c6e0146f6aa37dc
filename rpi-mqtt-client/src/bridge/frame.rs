//! The bridge's framing and messages (docs/vehicle-bridge.md, kept in step by
//! tests/bridge_doc.rs): a frame is a `u16` little-endian length and that many payload bytes.
//! A payload is a version 3 wire message (`common::wire`: Segment, Action, StateReport,
//! SegmentAck) or one of the two bridge messages, Hello and HelloAck, whose first byte (`0xb1`,
//! `0xb2`) is no wire header (no protocol version 11). Decoding is total: any bytes give a
//! frame or an error, never a panic.

use std::fmt;

use common::wire::{self, Kind};
use common::{Action, Message, SegmentAck, StateReport};

use crate::config::MAX_ENTITIES;

/// The bridge protocol's version, carried in Hello and HelloAck.
pub const BRIDGE_VERSION: u8 = 1;
/// The protocol version of the wire messages inside frames.
pub const WIRE_VERSION: u8 = 3;
/// First byte of a Hello (vehicle -> daemon).
pub const HELLO: u8 = 0xb1;
/// First byte of a HelloAck (daemon -> vehicle).
pub const HELLO_ACK: u8 = 0xb2;
/// The length prefix's size.
pub const PREFIX: usize = 2;
/// The longest payload: a Hello with [`MAX_ENTITIES`] entities.
pub const MAX_PAYLOAD: usize = 4 + 4 * MAX_ENTITIES;

/// What a vehicle process can do besides driving segments and `stop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Caps(pub u8);

impl Caps {
    /// `pause` and `resume`.
    pub const PAUSE: Caps = Caps(0x01);
    /// `cancel`.
    pub const CANCEL: Caps = Caps(0x02);
    pub const ALL: Caps = Caps(0x03);

    pub fn contains(self, c: Caps) -> bool {
        self.0 & c.0 == c.0
    }
}

/// Vehicle -> daemon, the first frame: the entities this process drives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub version: u8,
    pub caps: Caps,
    pub entities: Vec<u32>,
}

/// The daemon's answer to a Hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum HelloResult {
    /// Every entity is now driven by this process.
    Ok = 0,
    /// `entity_id` is driven by another connected process.
    Claimed = 1,
    /// `entity_id` is not one of the daemon's entities.
    UnknownEntity = 2,
    /// The Hello is malformed: unknown bridge version, no entity, an entity twice, or
    /// capability bits that do not exist.
    BadHello = 3,
    /// The daemon has as many vehicle connections as it takes.
    TooManyConnections = 4,
}

impl HelloResult {
    pub const ALL: [HelloResult; 5] = [
        HelloResult::Ok,
        HelloResult::Claimed,
        HelloResult::UnknownEntity,
        HelloResult::BadHello,
        HelloResult::TooManyConnections,
    ];

    pub fn from_u8(v: u8) -> Option<HelloResult> {
        HelloResult::ALL.into_iter().find(|r| *r as u8 == v)
    }
}

/// Daemon -> vehicle: the answer to its Hello (the connection is closed after a refusal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloAck {
    pub version: u8,
    pub result: HelloResult,
    /// The entity refused (Claimed, UnknownEntity), else 0.
    pub entity_id: u32,
}

/// Every frame payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Hello(Hello),
    HelloAck(HelloAck),
    /// Daemon -> vehicle: drive it (after the daemon's own checks).
    Segment(common::Segment),
    /// Daemon -> vehicle: an instant action for one entity.
    Action(Action),
    /// Vehicle -> daemon: an entity's current state.
    State(StateReport),
    /// Vehicle -> daemon: accepted, completed or rejected.
    Ack(SegmentAck),
}

/// Why a payload is not a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    Empty,
    TooLong(usize),
    /// A wire message that is not version 3, or of a kind the bridge does not carry.
    UnexpectedMessage(String),
    Wire(common::DecodeError),
    BadHello(&'static str),
    BadHelloAck,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Empty => write!(f, "empty frame"),
            FrameError::TooLong(n) => write!(f, "frame of {n} bytes (at most {MAX_PAYLOAD})"),
            FrameError::UnexpectedMessage(what) => write!(f, "unexpected message: {what}"),
            FrameError::Wire(e) => write!(f, "{e}"),
            FrameError::BadHello(why) => write!(f, "bad hello: {why}"),
            FrameError::BadHelloAck => write!(f, "bad hello ack"),
        }
    }
}

impl Frame {
    /// The payload (without the length prefix).
    pub fn payload(&self) -> Vec<u8> {
        match self {
            Frame::Hello(h) => {
                let mut v = vec![HELLO, h.version, h.caps.0, h.entities.len().min(255) as u8];
                for e in &h.entities {
                    v.extend_from_slice(&e.to_le_bytes());
                }
                v
            }
            Frame::HelloAck(a) => {
                let mut v = vec![HELLO_ACK, a.version, a.result as u8];
                v.extend_from_slice(&a.entity_id.to_le_bytes());
                v
            }
            Frame::Segment(m) => wire3(Message::Segment(*m)),
            Frame::Action(m) => wire3(Message::Action(*m)),
            Frame::State(m) => wire3(Message::State(*m)),
            Frame::Ack(m) => wire3(Message::Ack(*m)),
        }
    }

    /// The whole frame: length prefix and payload.
    pub fn encode(&self) -> Vec<u8> {
        let p = self.payload();
        let mut v = Vec::with_capacity(PREFIX + p.len());
        v.extend_from_slice(&(p.len() as u16).to_le_bytes());
        v.extend_from_slice(&p);
        v
    }

    /// Decodes one payload (the bytes after the length prefix).
    pub fn decode(p: &[u8]) -> Result<Frame, FrameError> {
        let first = *p.first().ok_or(FrameError::Empty)?;
        if p.len() > MAX_PAYLOAD {
            return Err(FrameError::TooLong(p.len()));
        }
        match first {
            HELLO => decode_hello(p).map(Frame::Hello),
            HELLO_ACK => {
                if p.len() != 7 {
                    return Err(FrameError::BadHelloAck);
                }
                let result = HelloResult::from_u8(p[2]).ok_or(FrameError::BadHelloAck)?;
                Ok(Frame::HelloAck(HelloAck {
                    version: p[1],
                    result,
                    entity_id: u32::from_le_bytes([p[3], p[4], p[5], p[6]]),
                }))
            }
            _ => {
                let (version, kind) = wire::peek(p).map_err(FrameError::Wire)?;
                if version != WIRE_VERSION {
                    return Err(FrameError::UnexpectedMessage(format!(
                        "a version {version} {} (the bridge speaks version {WIRE_VERSION})",
                        kind.name()
                    )));
                }
                match (kind, Message::decode(p).map_err(FrameError::Wire)?) {
                    (Kind::Segment, Message::Segment(m)) => Ok(Frame::Segment(m)),
                    (Kind::Action, Message::Action(m)) => Ok(Frame::Action(m)),
                    (Kind::State, Message::State(m)) => Ok(Frame::State(m)),
                    (Kind::Ack, Message::Ack(m)) => Ok(Frame::Ack(m)),
                    (kind, _) => Err(FrameError::UnexpectedMessage(format!(
                        "a {} (not carried by the bridge)",
                        kind.name()
                    ))),
                }
            }
        }
    }
}

fn wire3(m: Message) -> Vec<u8> {
    // Every message the bridge carries exists in version 3, which can say all of it.
    m.encode_as(WIRE_VERSION)
        .map(|e| e.to_vec())
        .unwrap_or_default()
}

fn decode_hello(p: &[u8]) -> Result<Hello, FrameError> {
    if p.len() < 4 {
        return Err(FrameError::BadHello("shorter than 4 bytes"));
    }
    let n = usize::from(p[3]);
    if p.len() != 4 + 4 * n {
        return Err(FrameError::BadHello("length is not 4 + 4 x count"));
    }
    let entities = p[4..]
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(Hello {
        version: p[1],
        caps: Caps(p[2]),
        entities,
    })
}

/// Reads frames out of a byte stream: [`Reader::push`] the bytes read, then take frames with
/// [`Reader::next`]. Holds at most one frame's bytes.
#[derive(Debug, Default)]
pub struct Reader {
    buf: Vec<u8>,
}

/// What the stream holds next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Not a whole frame yet.
    Incomplete,
    Frame(Vec<u8>),
    /// The length prefix says 0 or more than [`MAX_PAYLOAD`]: the stream cannot be trusted
    /// any further.
    BadLength(usize),
}

impl Reader {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole payload, if any.
    pub fn next_frame(&mut self) -> Next {
        if self.buf.len() < PREFIX {
            return Next::Incomplete;
        }
        let len = usize::from(u16::from_le_bytes([self.buf[0], self.buf[1]]));
        if len == 0 || len > MAX_PAYLOAD {
            return Next::BadLength(len);
        }
        if self.buf.len() < PREFIX + len {
            return Next::Incomplete;
        }
        let payload = self.buf[PREFIX..PREFIX + len].to_vec();
        self.buf.drain(..PREFIX + len);
        Next::Frame(payload)
    }

    /// Bytes held (at most one frame plus one read's worth).
    pub fn held(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::{AckOutcome, RejectReason};

    #[test]
    fn frames_round_trip() {
        let frames = [
            Frame::Hello(Hello {
                version: 1,
                caps: Caps::ALL,
                entities: vec![1, 2],
            }),
            Frame::HelloAck(HelloAck {
                version: 1,
                result: HelloResult::Claimed,
                entity_id: 2,
            }),
            Frame::Ack(SegmentAck {
                entity_id: 1,
                segment_id: 9,
                outcome: AckOutcome::Rejected(RejectReason::QueueFull),
            }),
        ];
        let mut r = Reader::default();
        for f in &frames {
            r.push(&f.encode());
        }
        for f in &frames {
            match r.next_frame() {
                Next::Frame(p) => assert_eq!(&Frame::decode(&p).unwrap(), f),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(r.next_frame(), Next::Incomplete);
        assert_eq!(r.held(), 0);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for p in [
            &[][..],
            &[0xb1][..],
            &[0xb1, 1, 0, 2, 1, 0, 0, 0][..],
            &[0xb2, 1, 9, 0, 0, 0, 0][..],
            &[0x21, 0, 0][..],
            &[0xff][..],
        ] {
            assert!(Frame::decode(p).is_err(), "{p:?}");
        }
        // A version 2 heartbeat is a wire message, but not one the bridge carries.
        let hb = Message::Heartbeat(common::Heartbeat {
            seq: 1,
            timestamp_ms: 2,
        });
        let p = hb.encode_as(3).unwrap();
        assert!(matches!(
            Frame::decode(p.as_slice()),
            Err(FrameError::UnexpectedMessage(_))
        ));
        let mut r = Reader::default();
        r.push(&[0xff, 0xff, 1]);
        assert_eq!(r.next_frame(), Next::BadLength(0xffff));
        let mut r = Reader::default();
        r.push(&[0, 0]);
        assert_eq!(r.next_frame(), Next::BadLength(0));
    }
}
