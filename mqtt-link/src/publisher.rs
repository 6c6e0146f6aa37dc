//! Publishing from a daemon's threads: only while the link is connected and never blocking,
//! so that a dead broker stalls no thread and nothing stale piles up in rumqttc's queue.
//!
//! A burst ([`Publisher::try_send_many`]: a Pi's heartbeat and state reports) wakes the
//! `mqtt-link` thread once, not once per message: the messages but the first wait in the
//! link's own queue ([`Burst`]), the first goes to rumqttc and wakes the thread, which moves
//! the rest to rumqttc before it polls again ([`crate::link`]). Sent one by one, each message
//! woke the thread on its own (the woken thread preempts the sender on its core): about 2.6
//! wake-ups per burst of three, measured. Order is kept, across bursts too: the queue is
//! emptied under its lock, and a burst goes straight to rumqttc only when the queue is empty
//! (else it queues behind the earlier one, whose first message is already waking the thread).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rumqttc::{Client, QoS};

/// One message of a burst, as the daemon hands it over.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub topic: &'a str,
    pub qos: QoS,
    pub retain: bool,
    pub payload: &'a [u8],
}

/// A queued message: topic, QoS, retain, payload.
type Queued = (String, QoS, bool, Vec<u8>);

/// The link's queue of burst messages waiting for the `mqtt-link` thread, bounded like
/// rumqttc's own request queue.
#[derive(Debug)]
pub(crate) struct Burst {
    queue: Mutex<VecDeque<Queued>>,
    capacity: usize,
}

impl Burst {
    pub(crate) fn new(capacity: usize) -> Arc<Burst> {
        Arc::new(Burst {
            queue: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Queued>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands every waiting message to `publish`, in order, under the lock (so no burst can
    /// overtake them); returns how many `publish` refused.
    pub(crate) fn drain(&self, mut publish: impl FnMut(String, QoS, bool, Vec<u8>) -> bool) -> u64 {
        let mut q = self.lock();
        let mut refused = 0;
        while let Some((t, qos, r, p)) = q.pop_front() {
            if !publish(t, qos, r, p) {
                refused += 1;
            }
        }
        refused
    }
}

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
    /// The link's burst queue (see the module's text).
    burst: Arc<Burst>,
}

impl Publisher {
    pub(crate) fn new(client: Client, connected: Arc<AtomicBool>, burst: Arc<Burst>) -> Self {
        Publisher {
            client,
            connected,
            burst,
        }
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

    /// Publishes `msgs` in order, waking the `mqtt-link` thread once (see the module's
    /// text). All or nothing: an error hands none of them over.
    pub fn try_send_many(&self, msgs: &[Outgoing<'_>]) -> Result<(), NotSent> {
        let Some((first, rest)) = msgs.split_first() else {
            return Ok(());
        };
        if !self.is_connected() {
            return Err(NotSent::Disconnected);
        }
        let owned = |m: &Outgoing<'_>| (m.topic.to_owned(), m.qos, m.retain, m.payload.to_vec());
        let mut q = self.burst.lock();
        if q.len() + msgs.len() > self.burst.capacity {
            return Err(NotSent::QueueFull(format!(
                "the link's burst queue is full ({} waiting)",
                q.len()
            )));
        }
        if !q.is_empty() {
            // Behind the earlier burst, whose first message is waking the thread.
            q.extend(msgs.iter().map(owned));
            return Ok(());
        }
        let before = q.len();
        q.extend(rest.iter().map(owned));
        // Still under the lock: the thread cannot move the rest ahead of the first.
        if let Err(e) = self.try_send(first.topic, first.qos, first.retain, first.payload) {
            q.truncate(before);
            return Err(e);
        }
        Ok(())
    }
}
