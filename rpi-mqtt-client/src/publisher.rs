//! This Pi's topics, built once. Publishing itself goes through the link's connection-gated
//! [`mqtt_link::Publisher`]: only while connected and never blocking, so that a dead broker
//! stalls no thread and nothing stale piles up in rumqttc's queue.

use common::wire::{Encoded, LATEST};
use common::{ClientId, Message, TopicKind};

/// The protocol version this Pi speaks and sends everything in (docs/protocol.md, "Version
/// 3"): the server sends a Pi segments (and actions) in the version of its heartbeats.
pub const PROTOCOL: u8 = LATEST;

/// `msg` in [`PROTOCOL`]; every message fits the newest version.
pub fn encode(msg: Message) -> Encoded {
    msg.encode_as(PROTOCOL).unwrap_or_else(|_| msg.encode())
}

/// This Pi's topics, built once.
#[derive(Debug, Clone)]
pub struct Topics {
    pub heartbeat: String,
    pub state: String,
    pub status: String,
    pub ack: String,
    pub segment: String,
    pub action: String,
}

impl Topics {
    pub fn new(id: &ClientId) -> Topics {
        Topics {
            heartbeat: id.topic(TopicKind::Heartbeat),
            state: id.topic(TopicKind::State),
            status: id.topic(TopicKind::Status),
            ack: id.topic(TopicKind::Ack),
            segment: id.topic(TopicKind::Segment),
            action: id.topic(TopicKind::Action),
        }
    }
}
