//! Publishing from the daemon's threads: only while the link is connected and never blocking,
//! so that a dead broker stalls no thread and nothing stale piles up in rumqttc's queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{ClientId, TopicKind};
use mqtt_link::{Client, QoS};

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

/// Why a message was not handed to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotSent {
    /// The link is down; the caller drops the message or keeps it for later.
    Disconnected,
    /// rumqttc's request queue is full (or closed).
    QueueFull,
}

/// A client handle plus the link's connected flag; cheap to clone into every thread.
#[derive(Clone)]
pub struct Publisher {
    client: Client,
    connected: Arc<AtomicBool>,
}

impl Publisher {
    pub fn new(client: Client, connected: Arc<AtomicBool>) -> Publisher {
        Publisher { client, connected }
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Queues a publish without blocking, only while connected.
    pub fn try_send(
        &self,
        topic: &str,
        qos: QoS,
        retain: bool,
        payload: &[u8],
    ) -> Result<(), NotSent> {
        if !self.is_connected() {
            return Err(NotSent::Disconnected);
        }
        self.client
            .try_publish(topic, qos, retain, payload.to_vec())
            .map_err(|_| NotSent::QueueFull)
    }
}
