//! Publishing from a daemon's threads: only while the link is connected and never blocking,
//! so that a dead broker stalls no thread and nothing stale piles up in rumqttc's queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rumqttc::{Client, QoS};

/// Why a message was not handed to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotSent {
    /// The link is down; the caller drops the message or keeps it for later.
    Disconnected,
    /// rumqttc's request queue is full (or closed); rumqttc's words.
    QueueFull(String),
}

impl std::fmt::Display for NotSent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotSent::Disconnected => f.write_str("not connected to the broker"),
            NotSent::QueueFull(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for NotSent {}

/// A client handle plus the link's connected flag ([`crate::Link::publisher`]); cheap to
/// clone into every thread.
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
            .map_err(|e| NotSent::QueueFull(e.to_string()))
    }
}
