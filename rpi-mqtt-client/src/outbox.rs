//! Acks waiting to be published (QoS 1), bounded, so that none is lost to a full request queue
//! or an outage, and none piles up without limit either.
//!
//! rumqttc drops every unacknowledged QoS 1 publish when it reconnects with a clean session,
//! and it does not tell which ones the broker had acknowledged. So the outbox remembers the
//! acks it handed over recently, and when the link reports a disconnect it queues again those
//! handed over within the `resend_window` before it (the server tolerates repeated acks).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use common::{ActionAck, Message, SegmentAck};

/// What goes out on `rpi/{id}/ack`: segment acks and (version 3) action acks, in one queue
/// so that the `Rejected(Cancelled)` acks of an action go out before its ActionAck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    Segment(SegmentAck),
    Action(ActionAck),
}

impl Ack {
    pub fn message(&self) -> Message {
        match self {
            Ack::Segment(a) => Message::Ack(*a),
            Ack::Action(a) => Message::ActionAck(*a),
        }
    }
}

/// The outbox of the `vehicles` thread.
pub type Acks = AckOutbox<Ack>;

#[derive(Debug)]
pub struct AckOutbox<T = SegmentAck> {
    queue: VecDeque<T>,
    capacity: usize,
    /// Acks handed to the client lately, oldest first, with when.
    recent: VecDeque<(Instant, T)>,
    recent_capacity: usize,
    resend_window: Duration,
    /// Acks dropped because the outbox was full (oldest first), since start.
    pub dropped: u64,
}

impl<T> AckOutbox<T> {
    pub fn new(capacity: usize, recent_capacity: usize, resend_window: Duration) -> AckOutbox<T> {
        AckOutbox {
            queue: VecDeque::with_capacity(capacity.min(64)),
            capacity: capacity.max(1),
            recent: VecDeque::with_capacity(recent_capacity.min(64)),
            recent_capacity,
            resend_window,
            dropped: 0,
        }
    }

    /// Queues an ack; when full the oldest waiting one is dropped (and returned).
    pub fn push(&mut self, ack: T) -> Option<T> {
        let evicted = if self.queue.len() >= self.capacity {
            self.dropped += 1;
            self.queue.pop_front()
        } else {
            None
        };
        self.queue.push_back(ack);
        evicted
    }

    /// Hands waiting acks to `send` in order until it refuses one (returns false); that one
    /// and the rest stay for the next try. Returns how many were handed over.
    pub fn flush(&mut self, now: Instant, mut send: impl FnMut(&T) -> bool) -> usize {
        let mut sent = 0;
        while let Some(ack) = self.queue.front() {
            if !send(ack) {
                break;
            }
            let ack = self.queue.pop_front().expect("front exists");
            if self.recent_capacity > 0 {
                if self.recent.len() >= self.recent_capacity {
                    self.recent.pop_front();
                }
                self.recent.push_back((now, ack));
            }
            sent += 1;
        }
        sent
    }

    /// The connection broke at about `now`: acks handed over within the resend window before
    /// it may be lost, so they go to the front of the queue again. Returns how many.
    pub fn on_disconnect(&mut self, now: Instant) -> usize {
        let mut again: Vec<T> = self
            .recent
            .drain(..)
            .filter(|(at, _)| now.saturating_duration_since(*at) <= self.resend_window)
            .map(|(_, a)| a)
            .collect();
        let n = again.len();
        // Keep the bound: make room by dropping the oldest of the combined queue.
        let overflow = (again.len() + self.queue.len()).saturating_sub(self.capacity);
        if overflow > 0 {
            self.dropped += overflow as u64;
            let from_again = overflow.min(again.len());
            again.drain(..from_again);
            self.queue.drain(..overflow - from_again);
        }
        for a in again.into_iter().rev() {
            self.queue.push_front(a);
        }
        n
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::AckOutcome;

    fn ack(id: u32) -> SegmentAck {
        SegmentAck {
            entity_id: 1,
            segment_id: id,
            outcome: AckOutcome::Accepted,
        }
    }

    fn ids(o: &AckOutbox) -> Vec<u32> {
        o.queue.iter().map(|a| a.segment_id).collect()
    }

    #[test]
    fn keeps_what_could_not_be_sent_in_order() {
        let t = Instant::now();
        let mut o = AckOutbox::new(4, 8, Duration::from_secs(1));
        for id in 1..=3 {
            o.push(ack(id));
        }
        let mut budget = 2;
        let mut out = Vec::new();
        let n = o.flush(t, |a| {
            if budget == 0 {
                return false;
            }
            budget -= 1;
            out.push(a.segment_id);
            true
        });
        assert_eq!((n, out), (2, vec![1, 2]));
        assert_eq!(ids(&o), vec![3]);
        assert_eq!(o.flush(t, |_| false), 0);
        assert_eq!(ids(&o), vec![3]);
    }

    #[test]
    fn bounded_dropping_the_oldest() {
        let mut o = AckOutbox::new(3, 0, Duration::ZERO);
        for id in 1..=10 {
            o.push(ack(id));
        }
        assert_eq!(ids(&o), vec![8, 9, 10]);
        assert_eq!(o.dropped, 7);
    }

    #[test]
    fn resends_recent_acks_after_a_disconnect() {
        let t = Instant::now();
        let mut o = AckOutbox::new(4, 3, Duration::from_secs(2));
        for id in 1..=5 {
            o.push(ack(id));
            o.flush(t + Duration::from_secs(u64::from(id)), |_| true);
        }
        // recent holds 3, 4, 5 (sent at t+3, t+4, t+5); 3 is outside the window at t+6.
        o.push(ack(6));
        assert_eq!(o.on_disconnect(t + Duration::from_secs(6)), 2);
        assert_eq!(ids(&o), vec![4, 5, 6]);
        assert_eq!(o.on_disconnect(t + Duration::from_secs(6)), 0);
        // Still bounded when the resends do not fit.
        let mut o = AckOutbox::new(2, 8, Duration::from_secs(10));
        for id in 1..=3 {
            o.push(ack(id));
            o.flush(t, |_| true);
        }
        o.push(ack(4));
        o.push(ack(5));
        o.on_disconnect(t);
        assert_eq!(o.len(), 2);
        assert_eq!(ids(&o), vec![4, 5]);
        assert_eq!(o.dropped, 3);
    }
}
