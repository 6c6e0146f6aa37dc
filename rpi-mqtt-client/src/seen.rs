//! Per-entity memory of segment ids and their latest outcome, so a segment delivered twice
//! (QoS 1 is at-least-once) is answered again but never executed twice.
//!
//! Bounded: it keeps the last `history` finished segments (completed or rejected) plus every
//! pending one (accepted, not yet finished; at most queue depth + 1 with a well-behaved
//! handler). A pending entry is only evicted if a handler holds more than that, so memory
//! stays bounded whatever happens.

use std::collections::VecDeque;

use common::AckOutcome;

#[derive(Debug, Clone)]
pub struct SeenSegments {
    /// Oldest first.
    entries: VecDeque<(u32, AckOutcome)>,
    capacity: usize,
}

/// Finished segments remembered per entity.
pub const HISTORY: usize = 64;

impl SeenSegments {
    /// Remembers `history` finished segments besides up to `pending` unfinished ones.
    pub fn new(history: usize, pending: usize) -> SeenSegments {
        let capacity = history.max(1) + pending;
        SeenSegments {
            entries: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    /// The latest outcome of `id`, if it was seen.
    pub fn get(&self, id: u32) -> Option<AckOutcome> {
        self.entries
            .iter()
            .rev()
            .find(|(i, _)| *i == id)
            .map(|(_, o)| *o)
    }

    /// Records the latest outcome of `id` (updating it in place if known).
    pub fn record(&mut self, id: u32, outcome: AckOutcome) {
        if let Some(e) = self.entries.iter_mut().rev().find(|(i, _)| *i == id) {
            e.1 = outcome;
            return;
        }
        if self.entries.len() >= self.capacity {
            let victim = self
                .entries
                .iter()
                .position(|(_, o)| *o != AckOutcome::Accepted)
                .unwrap_or(0);
            self.entries.remove(victim);
        }
        self.entries.push_back((id, outcome));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::RejectReason;

    #[test]
    fn remembers_latest_outcome() {
        let mut s = SeenSegments::new(4, 2);
        assert_eq!(s.get(1), None);
        s.record(1, AckOutcome::Accepted);
        assert_eq!(s.get(1), Some(AckOutcome::Accepted));
        s.record(1, AckOutcome::Completed);
        assert_eq!(s.get(1), Some(AckOutcome::Completed));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn bounded_and_never_forgets_pending_first() {
        let mut s = SeenSegments::new(3, 2);
        s.record(100, AckOutcome::Accepted);
        s.record(101, AckOutcome::Accepted);
        for id in 1..=50 {
            s.record(id, AckOutcome::Rejected(RejectReason::QueueFull));
            assert!(s.len() <= 5);
        }
        // Both pending ones survive fifty finished ones; only the last 3 finished remain.
        assert_eq!(s.get(100), Some(AckOutcome::Accepted));
        assert_eq!(s.get(101), Some(AckOutcome::Accepted));
        assert_eq!(s.get(47), None);
        assert!(s.get(48).is_some() && s.get(50).is_some());
        // A misbehaving handler with more pending than promised still cannot grow it.
        for id in 200..300 {
            s.record(id, AckOutcome::Accepted);
        }
        assert_eq!(s.len(), 5);
    }
}
