//! The heartbeat ticker thread: publishes `rpi/{id}/heartbeat` every interval while the link
//! is connected, and one at once after every (re)connect, so heartbeats resume as soon as the
//! broker is back. `seq` grows by one per heartbeat handed to the client; ticks skipped while
//! disconnected are not counted (the server reads gaps in `seq` as lost heartbeats).

use std::time::{Duration, Instant};

use common::ratelimit::RateLimiter;
use common::{Heartbeat, Message};
use crossbeam_channel::Receiver;
use log::{debug, warn};
use mqtt_link::QoS;

use crate::clock;
use crate::link_change::LinkChange;
use crate::publisher::encode;
use crate::ticker::run_ticker;
use mqtt_link::{Held, NotSent, Publisher};

pub struct HeartbeatTicker {
    pub interval: Duration,
    pub publisher: Publisher,
    pub topic: String,
}

impl HeartbeatTicker {
    /// Runs until `stop` disconnects.
    pub fn run(self, stop: Receiver<()>, link: Receiver<LinkChange>) {
        let mut seq: u32 = 0;
        let mut full = RateLimiter::new(Duration::from_secs(30));
        run_ticker(self.interval, &stop, &link, || {
            self.send(&mut seq, &mut full)
        });
        debug!("heartbeat stopped after {seq} heartbeats");
    }

    fn send(&self, seq: &mut u32, full: &mut RateLimiter) {
        let hb = Heartbeat {
            seq: *seq,
            timestamp_ms: clock::now_ms(),
        };
        match self.publisher.try_send(
            &self.topic,
            QoS::AtMostOnce,
            false,
            encode(Message::Heartbeat(hb)).as_slice(),
        ) {
            Ok(()) => *seq = seq.wrapping_add(1),
            Err(NotSent::Disconnected) => {}
            Err(NotSent::QueueFull(_)) => {
                if let Some(held) = full.check(Instant::now()) {
                    warn!(
                        "heartbeat skipped: MQTT request queue full ({})",
                        Held(held).count("more")
                    );
                }
            }
        }
    }
}
