//! The answers to the last actions, keyed by (`epoch`, `action_id`), so an action delivered
//! twice (QoS 1 is at-least-once) is answered again from memory and never executed twice
//! (docs/protocol.md, "Instant actions"). Bounded: the oldest answer is forgotten first.

use std::collections::VecDeque;

use common::ActionAck;

/// Actions remembered per Pi (the documented minimum).
pub const ACTION_HISTORY: usize = 64;

#[derive(Debug)]
pub struct SeenActions {
    /// Oldest first.
    entries: VecDeque<((u32, u32), ActionAck)>,
    capacity: usize,
}

impl SeenActions {
    pub fn new(capacity: usize) -> SeenActions {
        SeenActions {
            entries: VecDeque::with_capacity(capacity.min(64)),
            capacity: capacity.max(1),
        }
    }

    /// The first answer to (`epoch`, `action_id`), if remembered.
    pub fn get(&self, epoch: u32, action_id: u32) -> Option<ActionAck> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| *k == (epoch, action_id))
            .map(|(_, a)| *a)
    }

    pub fn record(&mut self, epoch: u32, ack: ActionAck) {
        if self.entries.len() >= self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back(((epoch, ack.action_id), ack));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::{ActionKind, ActionOutcome, Target};

    fn ack(id: u32) -> ActionAck {
        ActionAck {
            action_id: id,
            target: Target::All,
            action: ActionKind::Stop,
            outcome: ActionOutcome::Done,
            repeat: false,
            cancelled: 0,
            fence: 0,
        }
    }

    #[test]
    fn keyed_by_epoch_and_id_and_bounded() {
        let mut s = SeenActions::new(3);
        s.record(0, ack(1));
        assert_eq!(s.get(0, 1), Some(ack(1)));
        assert_eq!(
            s.get(5, 1),
            None,
            "another leader's action 1 is another action"
        );
        for id in 2..=10 {
            s.record(0, ack(id));
            assert!(s.entries.len() <= 3);
        }
        assert_eq!(s.get(0, 1), None);
        assert_eq!(s.get(0, 10), Some(ack(10)));
    }
}
