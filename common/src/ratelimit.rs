//! Rate limiting for repeated log lines, so a flapping broker or a garbage flood cannot fill
//! an SD card. Pure: the caller passes the current time.

use std::time::{Duration, Instant};

/// Lets one event through per `interval`, counting the ones it holds back.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimiter {
    pub fn new(interval: Duration) -> RateLimiter {
        RateLimiter {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` when the caller may log now, `n` being how many events were held back since
    /// the last line it was allowed; `None` when it must stay quiet.
    pub fn check(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }

    /// Forget the history (e.g. after the condition cleared), so the next event logs at once.
    pub fn reset(&mut self) {
        self.last = None;
        self.suppressed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_count() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(Duration::from_secs(10));
        assert_eq!(r.check(t0), Some(0));
        for i in 1..=99 {
            assert_eq!(r.check(t0 + Duration::from_millis(i * 10)), None);
        }
        assert_eq!(r.check(t0 + Duration::from_secs(10)), Some(99));
        assert_eq!(r.check(t0 + Duration::from_secs(11)), None);
        r.reset();
        assert_eq!(r.check(t0 + Duration::from_secs(12)), Some(0));
    }
}
