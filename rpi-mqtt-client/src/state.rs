//! The state publisher thread: every state interval, while connected, one StateReport per
//! entity on `rpi/{id}/state` (QoS 0), taken from the latest snapshot of the `vehicles`
//! thread. Reports that cannot be sent are dropped, never queued: after an outage the server
//! gets the current state, not a backlog. After every reconnect the state is sent at once.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::ratelimit::RateLimiter;
use common::{Message, StateReport};
use crossbeam_channel::Receiver;
use log::warn;
use mqtt_link::QoS;

use crate::link_change::LinkChange;
use crate::publisher::encode;
use crate::ticker::run_ticker;
use mqtt_link::{Held, NotSent, Publisher};

/// The latest state of every entity, written by the `vehicles` thread at each simulation step
/// and read by the state publisher; each report carries the time it was sampled.
pub type Snapshot = Arc<Mutex<Vec<StateReport>>>;

pub struct StatePublisher {
    pub interval: Duration,
    pub publisher: Publisher,
    pub topic: String,
    pub snapshot: Snapshot,
}

impl StatePublisher {
    /// Runs until `stop` disconnects.
    pub fn run(self, stop: Receiver<()>, link: Receiver<LinkChange>) {
        let mut buf: Vec<StateReport> = Vec::new();
        let mut dropped = RateLimiter::new(Duration::from_secs(30));
        run_ticker(self.interval, &stop, &link, || {
            self.publish(&mut buf, &mut dropped)
        });
    }

    fn publish(&self, buf: &mut Vec<StateReport>, dropped: &mut RateLimiter) {
        if !self.publisher.is_connected() {
            return;
        }
        {
            let snap = self.snapshot.lock().unwrap_or_else(|p| p.into_inner());
            buf.clear();
            buf.extend_from_slice(&snap);
        }
        for (i, report) in buf.iter().enumerate() {
            match self.publisher.try_send(
                &self.topic,
                QoS::AtMostOnce,
                false,
                encode(Message::State(*report)).as_slice(),
            ) {
                Ok(()) => {}
                Err(NotSent::Disconnected) => return,
                Err(NotSent::QueueFull(_)) => {
                    if let Some(held) = dropped.check(Instant::now()) {
                        warn!(
                            "state reports dropped: MQTT request queue full \
                             ({} now, {})",
                            buf.len() - i,
                            Held(held).count("earlier drops")
                        );
                    }
                    return;
                }
            }
        }
    }
}
