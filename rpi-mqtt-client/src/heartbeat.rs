//! The Pi's heartbeat on `rpi/{id}/heartbeat`: every interval while the link is connected, and
//! one at once after every (re)connect. The `mqtt-link` thread sends it with the round of state
//! reports due at that moment ([`crate::rounds`]), so a flood of inputs that keeps the
//! `vehicles` thread busy does not hold it back; after a (re)connect the `vehicles` thread
//! sends one at once with the states. `seq` grows by one per heartbeat handed to the client;
//! heartbeats not sent (disconnected, queue full) are not counted (the server reads gaps in
//! `seq` as lost heartbeats).

use std::time::{Duration, Instant};

use common::ratelimit::RateLimiter;
use common::wire::Encoded;
use common::{Heartbeat, Message};
use log::warn;
use mqtt_link::Held;

use crate::clock;
use crate::publisher::encode;

pub struct Heartbeats {
    pub interval: Duration,
    pub topic: String,
    seq: u32,
    /// The rate-limited "queue full" line.
    full: RateLimiter,
}

impl Heartbeats {
    pub fn new(interval: Duration, topic: String) -> Heartbeats {
        Heartbeats {
            interval,
            topic,
            seq: 0,
            full: RateLimiter::new(Duration::from_secs(30)),
        }
    }

    /// The next heartbeat, stamped now.
    pub fn next(&self) -> Encoded {
        encode(Message::Heartbeat(Heartbeat {
            seq: self.seq,
            timestamp_ms: clock::now_ms(),
        }))
    }

    /// [`Heartbeats::next`] was handed to the client.
    pub fn sent(&mut self) {
        self.seq = self.seq.wrapping_add(1);
    }

    /// Heartbeats handed to the client so far.
    pub fn count(&self) -> u32 {
        self.seq
    }

    /// [`Heartbeats::next`] could not be queued: the request queue is full.
    pub fn skipped(&mut self) {
        if let Some(held) = self.full.check(Instant::now()) {
            warn!(
                "heartbeat skipped: MQTT request queue full ({})",
                Held(held).count("more")
            );
        }
    }
}
