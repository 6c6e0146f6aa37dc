//! Leader epochs (protocol version 3, docs/protocol.md "Leadership"): how a server builds the
//! epoch it claims, and the Pi's fence that refuses orders from a deposed leader.
//!
//! An epoch is `term << 8 | tag`: `term` (1..2^24) grows by one per claim, `tag` (1..=255) is
//! fixed per server id. Two servers claiming the same term at once therefore claim different
//! epochs unless their tags collide, and every Pi orders them the same way: the higher wins.
//! Epoch 0 is "unfenced" (a version 1 or 2 segment, or no leader).

use crate::backoff::fnv1a;

/// Terms are 24 bits: at most this many claims in a fleet's life.
pub const MAX_TERM: u32 = (1 << 24) - 1;

/// The fixed low byte of every epoch that `server_id` claims: 1 + FNV-1a-64(id) mod 255.
pub fn server_tag(server_id: &str) -> u8 {
    // fnv1a(..) % 255 < 255, so the sum fits in a u8 and is never 0.
    1 + (fnv1a(server_id.as_bytes()) % 255) as u8
}

/// The epoch `server_id` claims for `term`; None for term 0 or a term beyond [`MAX_TERM`].
pub fn leader_epoch(term: u32, server_id: &str) -> Option<u32> {
    (1..=MAX_TERM)
        .contains(&term)
        .then(|| term << 8 | u32::from(server_tag(server_id)))
}

/// The term of an epoch.
pub const fn epoch_term(epoch: u32) -> u32 {
    epoch >> 8
}

/// A Pi's fence: the highest epoch it has seen in an order or a server status. Orders with a
/// lower epoch come from a deposed leader and are refused (`StaleLeader`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fence {
    highest: u32,
}

impl Fence {
    pub fn highest(&self) -> u32 {
        self.highest
    }

    /// Raises the fence to `epoch` if it is higher (a new leader's order or `Online` status).
    pub fn raise(&mut self, epoch: u32) {
        self.highest = self.highest.max(epoch);
    }

    /// Checks an order's epoch: raises the fence and admits it, or refuses it when it is lower
    /// than the highest seen. An equal epoch is the current leader's and is admitted.
    pub fn admit(&mut self, epoch: u32) -> bool {
        self.raise(epoch);
        epoch == self.highest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_tags_and_epochs() {
        // docs/protocol.md, "Leadership": the worked example.
        assert_eq!(server_tag("mqtt-server-a"), 0xf2);
        assert_eq!(server_tag("mqtt-server-b"), 0xa8);
        assert_eq!(leader_epoch(2, "mqtt-server-a"), Some(0x0000_02f2));
        assert_eq!(leader_epoch(2, "mqtt-server-b"), Some(0x0000_02a8));
        assert_eq!(leader_epoch(3, "mqtt-server-b"), Some(0x0000_03a8));
        assert_eq!(epoch_term(0x0000_03a8), 3);
    }

    #[test]
    fn tags_are_never_zero_and_terms_are_bounded() {
        for id in ["a", "b", "mqtt-server", "x.y-z_0", &"s".repeat(64)] {
            assert_ne!(server_tag(id), 0, "{id}");
        }
        assert_eq!(leader_epoch(0, "a"), None);
        assert_eq!(leader_epoch(MAX_TERM + 1, "a"), None);
        let top = leader_epoch(MAX_TERM, "a").unwrap();
        assert_eq!(epoch_term(top), MAX_TERM);
    }

    #[test]
    fn a_later_term_always_wins_whatever_the_tags() {
        let a = leader_epoch(4, "mqtt-server-a").unwrap();
        let b = leader_epoch(5, "mqtt-server-b").unwrap();
        assert!(b > a);
    }

    #[test]
    fn fence_refuses_lower_epochs_only() {
        let mut f = Fence::default();
        assert!(f.admit(0), "an unfenced order on a fresh Pi");
        assert!(f.admit(0x205));
        assert!(f.admit(0x205), "the same leader again");
        assert!(!f.admit(0), "a version 2 server after a leader was seen");
        assert!(!f.admit(0x1ff));
        f.raise(0x305);
        assert!(!f.admit(0x205), "deposed by a status of a newer leader");
        assert_eq!(f.highest(), 0x305);
        assert!(f.admit(0x406));
    }
}
