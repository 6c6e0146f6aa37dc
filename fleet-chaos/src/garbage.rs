//! Malformed input for flood scenarios: an endless, deterministic cycle of bad publishes on
//! every topic the server reads (`rpi/{id}/{heartbeat,state,status,ack}` for real and made-up
//! ids, plus bad and overlong ids), each with the server's label for it, so a scenario
//! can count what it sent per kind and compare with the server's `input errors` counters.

use common::{Heartbeat, Point, StateReport};

/// The leaves the server reads, with their payload kind code.
const LEAVES: [(&str, u8); 4] = [("heartbeat", 1), ("state", 2), ("status", 5), ("ack", 4)];

/// One bad publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Garbage {
    pub topic: String,
    pub payload: Vec<u8>,
    /// The server's input-error label for it.
    pub label: &'static str,
}

/// The cycle of bad publishes for the given ids (real Pis and made-up ones).
pub struct GarbageCycle {
    ids: Vec<String>,
    n: u64,
}

impl GarbageCycle {
    pub fn new(ids: &[&str]) -> GarbageCycle {
        GarbageCycle {
            ids: ids.iter().map(|s| (*s).to_owned()).collect(),
            n: 0,
        }
    }
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

fn heartbeat() -> Vec<u8> {
    Heartbeat {
        seq: 7,
        timestamp_ms: 1_764_000_000_000,
    }
    .encode()
    .to_vec()
}

fn state() -> Vec<u8> {
    StateReport::at_rest(1, 1_764_000_000_000, Point::new(0, 0), 0)
        .encode()
        .to_vec()
}

/// Kinds of garbage per (id, leaf); two more kinds use their own topics.
const KINDS: u64 = 7;

impl Iterator for GarbageCycle {
    type Item = Garbage;

    fn next(&mut self) -> Option<Garbage> {
        let n = self.n;
        self.n += 1;
        let per_round = self.ids.len() as u64 * LEAVES.len() as u64 * KINDS + 2;
        let i = n % per_round;
        let noise = xorshift(n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        if i == per_round - 2 {
            return Some(Garbage {
                topic: format!("rpi/bad id {}/heartbeat", n % 97),
                payload: heartbeat(),
                label: "bad_client_id",
            });
        }
        if i == per_round - 1 {
            // (Unknown leaves never reach the server: it subscribes to the four leaves only.)
            return Some(Garbage {
                topic: format!("rpi/{}/state", "x".repeat(65 + (n % 7) as usize)),
                payload: state(),
                label: "bad_client_id",
            });
        }
        let kind = i % KINDS;
        let rest = i / KINDS;
        let (leaf, code) = LEAVES[(rest % LEAVES.len() as u64) as usize];
        let id = &self.ids[(rest / LEAVES.len() as u64) as usize];
        let topic = format!("rpi/{id}/{leaf}");
        let (payload, label) = match kind {
            0 => (Vec::new(), "empty"),
            1 => {
                // Random bytes behind a header of version 10.
                let mut v: Vec<u8> = (0..(8 + noise % 40))
                    .map(|k| (xorshift(noise + k) >> 24) as u8)
                    .collect();
                v[0] = 0xA0 | code;
                (v, "unknown_version")
            }
            2 => (vec![0x1F, 0, 0, 0], "unknown_kind"),
            3 => (vec![0x10 | code, 1, 2, 3], "wrong_length"),
            4 => {
                let other = if leaf == "heartbeat" {
                    state()
                } else {
                    heartbeat()
                };
                (other, "kind_mismatch")
            }
            5 => (vec![0x10 | code; 65 + (noise % 200) as usize], "oversized"),
            _ => {
                // Right kind and length, a field out of range (heartbeats have none: a
                // truncated one instead).
                match leaf {
                    "state" => {
                        let mut v = state();
                        v[21..25].copy_from_slice(&400_000i32.to_le_bytes()); // angle
                        (v, "out_of_range")
                    }
                    "ack" => (vec![0x14, 1, 0, 0, 0, 2, 0, 0, 0, 9, 0], "out_of_range"),
                    "status" => (
                        vec![0x15, 9, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                        "out_of_range",
                    ),
                    _ => (heartbeat()[..12].to_vec(), "wrong_length"),
                }
            }
        };
        Some(Garbage {
            topic,
            payload,
            label,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn covers_every_leaf_id_and_kind() {
        let round = 2 * 4 * KINDS as usize + 2;
        let all: Vec<Garbage> = GarbageCycle::new(&["pi-a", "ghost"]).take(round).collect();
        let mut labels: BTreeMap<&str, usize> = BTreeMap::new();
        for g in &all {
            *labels.entry(g.label).or_default() += 1;
        }
        // Every label the server can give (not `bad_topic`: other leaves never reach it).
        assert_eq!(labels.len(), 8, "{labels:?}");
        for leaf in ["heartbeat", "state", "status", "ack"] {
            for id in ["pi-a", "ghost"] {
                let t = format!("rpi/{id}/{leaf}");
                assert_eq!(all.iter().filter(|g| g.topic == t).count(), KINDS as usize);
            }
        }
        assert!(all.iter().all(|g| g.payload.len() <= 300));
    }
}
