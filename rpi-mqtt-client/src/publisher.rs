//! This Pi's topics, built once. Publishing itself goes through the link's connection-gated
//! [`mqtt_link::Publisher`]: only while connected and never blocking, so that a dead broker
//! stalls no thread and nothing stale piles up in rumqttc's queue.

use common::{ClientId, TopicKind};

/// This Pi's topics, built once.
#[derive(Debug, Clone)]
pub struct Topics {
    pub heartbeat: String,
    pub state: String,
    pub status: String,
    pub ack: String,
    pub segment: String,
}

impl Topics {
    pub fn new(id: &ClientId) -> Topics {
        Topics {
            heartbeat: id.topic(TopicKind::Heartbeat),
            state: id.topic(TopicKind::State),
            status: id.topic(TopicKind::Status),
            ack: id.topic(TopicKind::Ack),
            segment: id.topic(TopicKind::Segment),
        }
    }
}
