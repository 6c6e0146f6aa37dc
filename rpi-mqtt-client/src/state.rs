//! State reports: one StateReport per entity on `rpi/{id}/state` (QoS 0), published by the
//! `vehicles` thread every state interval while connected (and at once after a reconnect or
//! an action), each entity sampled right then. Reports that cannot be sent are dropped, never
//! queued: after an outage the server gets the current state, not a backlog.

use std::time::{Duration, Instant};

use common::ratelimit::RateLimiter;
use common::{Message, StateReport};
use log::warn;
use mqtt_link::QoS;

use crate::publisher::encode;
use mqtt_link::{Held, NotSent, Publisher};

/// Publishes a set of state reports; remembers its rate-limited drop log.
pub struct StatePublisher {
    publisher: Publisher,
    topic: String,
    dropped: RateLimiter,
}

impl StatePublisher {
    pub fn new(publisher: Publisher, topic: String) -> StatePublisher {
        StatePublisher {
            publisher,
            topic,
            dropped: RateLimiter::new(Duration::from_secs(30)),
        }
    }

    /// Publishes `reports` while connected; stops at the first that cannot be queued (the
    /// next interval carries fresh ones).
    pub fn publish(&mut self, reports: &[StateReport]) {
        if !self.publisher.is_connected() {
            return;
        }
        for (i, report) in reports.iter().enumerate() {
            match self.publisher.try_send(
                &self.topic,
                QoS::AtMostOnce,
                false,
                encode(Message::State(*report)).as_slice(),
            ) {
                Ok(()) => {}
                Err(NotSent::Disconnected) => return,
                Err(NotSent::QueueFull(_)) => {
                    if let Some(held) = self.dropped.check(Instant::now()) {
                        warn!(
                            "state reports dropped: MQTT request queue full \
                             ({} now, {})",
                            reports.len() - i,
                            Held(held).count("earlier drops")
                        );
                    }
                    return;
                }
            }
        }
    }
}
