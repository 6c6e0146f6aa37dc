//! State reports published by the `vehicles` thread: one StateReport per entity on
//! `rpi/{id}/state` (QoS 0), at once after an action or the server-lost pause, and with a
//! heartbeat after a reconnect, each entity sampled right then, as one burst. (The reports of
//! every state interval are the `mqtt-link` thread's: [`crate::rounds`].) Reports that cannot
//! be sent are dropped, never queued: after an outage the server gets the current state, not
//! a backlog.

use std::time::{Duration, Instant};

use common::ratelimit::RateLimiter;
use common::{Message, StateReport};
use log::warn;
use mqtt_link::QoS;

use crate::heartbeat::Heartbeats;
use crate::publisher::encode;
use mqtt_link::{Held, NotSent, Outgoing, Publisher};

/// A heartbeat or a state report as handed to the link: QoS 0, not retained.
pub fn qos0<'a>(topic: &'a str, payload: &'a [u8]) -> Outgoing<'a> {
    Outgoing {
        topic,
        qos: QoS::AtMostOnce,
        retain: false,
        payload,
    }
}

/// The rate-limited line for `dropped` state reports that rumqttc's full queue refused.
pub fn log_dropped(limiter: &mut RateLimiter, dropped: usize) {
    if let Some(held) = limiter.check(Instant::now()) {
        warn!(
            "state reports dropped: MQTT request queue full ({dropped} now, {})",
            Held(held).count("earlier drops")
        );
    }
}

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

    /// Publishes the heartbeat (if given) and `reports` while connected, as one burst (the
    /// `mqtt-link` thread is woken once for all of them); what cannot be queued is dropped
    /// (the next interval carries fresh ones).
    pub fn publish(&mut self, heartbeat: Option<&mut Heartbeats>, reports: &[StateReport]) {
        if !self.publisher.is_connected() || (heartbeat.is_none() && reports.is_empty()) {
            return;
        }
        let beat = heartbeat.as_ref().map(|h| h.next());
        let payloads: Vec<_> = reports.iter().map(|r| encode(Message::State(*r))).collect();
        let mut msgs: Vec<Outgoing<'_>> = Vec::with_capacity(reports.len() + 1);
        if let (Some(h), Some(b)) = (heartbeat.as_ref(), beat.as_ref()) {
            msgs.push(qos0(&h.topic, b.as_slice()));
        }
        msgs.extend(payloads.iter().map(|p| qos0(&self.topic, p.as_slice())));
        let result = self.publisher.try_send_many(&msgs);
        if let Some(h) = heartbeat {
            match &result {
                Ok(()) => h.sent(),
                Err(NotSent::QueueFull(_)) => h.skipped(),
                Err(NotSent::Disconnected) => {}
            }
        }
        if let Err(NotSent::QueueFull(_)) = result {
            if !reports.is_empty() {
                log_dropped(&mut self.dropped, reports.len());
            }
        }
    }
}
