//! A log-line budget: up to N lines per window, the rest counted and reported once the window
//! is over. For lines that are each worth seeing (presence changes) but may come in floods
//! (10,000 made-up client ids), unlike `common::ratelimit` which lets one line per interval.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct LineBudget {
    per_window: u32,
    window: Duration,
    start: Option<Instant>,
    used: u32,
    suppressed: u64,
}

impl LineBudget {
    pub fn new(per_window: u32, window: Duration) -> LineBudget {
        LineBudget {
            per_window,
            window,
            start: None,
            used: 0,
            suppressed: 0,
        }
    }

    fn roll(&mut self, now: Instant) {
        match self.start {
            Some(s) if now.saturating_duration_since(s) < self.window => {}
            _ => {
                self.start = Some(now);
                self.used = 0;
            }
        }
    }

    /// True when the caller may log this line now.
    pub fn allow(&mut self, now: Instant) -> bool {
        self.roll(now);
        if self.used < self.per_window {
            self.used += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    /// How many lines were held back, once their window is over (then the count restarts).
    pub fn flush(&mut self, now: Instant) -> Option<u64> {
        if self.suppressed == 0 {
            return None;
        }
        let over = self
            .start
            .is_none_or(|s| now.saturating_duration_since(s) >= self.window);
        over.then(|| std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn n_lines_per_window_then_a_count() {
        let t0 = Instant::now();
        let mut b = LineBudget::new(3, Duration::from_secs(1));
        let allowed = (0..10).filter(|_| b.allow(t0)).count();
        assert_eq!(allowed, 3);
        assert_eq!(b.flush(t0 + Duration::from_millis(500)), None);
        assert_eq!(b.flush(t0 + Duration::from_secs(1)), Some(7));
        assert_eq!(b.flush(t0 + Duration::from_secs(2)), None);
        assert!(b.allow(t0 + Duration::from_secs(1)));
    }
}
