//! Capped exponential backoff with jitter for reconnect loops (computes delays; never sleeps).

use std::time::Duration;

/// `next_delay` doubles from `min` up to `max`; each delay is drawn from [d/2, d] ("equal
/// jitter"), so a fleet that lost its broker at once does not come back in lock step.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
    rng: u64,
}

impl Backoff {
    /// `seed` decorrelates Pis; pass anything that differs between them (e.g. a hash of the id).
    pub fn new(min: Duration, max: Duration, seed: u64) -> Backoff {
        let min = min.max(Duration::from_millis(1));
        Backoff {
            min,
            max: max.max(min),
            current: min,
            // xorshift must not start at zero.
            rng: seed | 1,
        }
    }

    /// The delay to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = d / 2;
        let span = (d - half).as_micros() as u64;
        let jitter = if span == 0 {
            0
        } else {
            self.next_rand() % (span + 1)
        };
        half + Duration::from_micros(jitter)
    }

    /// Call after a successful connect.
    pub fn reset(&mut self) {
        self.current = self.min;
    }

    fn next_rand(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

/// A stable 64-bit FNV-1a hash, handy as a backoff seed from a client id.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps_with_jitter() {
        let min = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        let mut b = Backoff::new(min, max, 7);
        let mut nominal = min;
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(d >= nominal / 2 && d <= nominal, "{d:?} vs {nominal:?}");
            nominal = (nominal * 2).min(max);
        }
        b.reset();
        assert!(b.next_delay() <= min);
    }

    #[test]
    fn different_seeds_spread() {
        let mut a = Backoff::new(Duration::from_secs(1), Duration::from_secs(1), 1);
        let mut c = Backoff::new(
            Duration::from_secs(1),
            Duration::from_secs(1),
            fnv1a(b"pi-2"),
        );
        let da: Vec<_> = (0..5).map(|_| a.next_delay()).collect();
        let dc: Vec<_> = (0..5).map(|_| c.next_delay()).collect();
        assert_ne!(da, dc);
    }
}
