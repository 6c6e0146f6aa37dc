//! How many rejections the Pi answers: at most [`REJECTS_PER_SECOND`] per reason per second.
//! Every answer is a QoS 1 ack in rumqttc's request queue, the queue the heartbeats and the
//! presence go through; a flood of segments the Pi must refuse (10,000/s for entities it does
//! not drive, from a broken or hostile sender) would otherwise put thousands of acks ahead of
//! them (heartbeat gaps of 1-2.4 s, issue 16). The rejections over the budget are counted and
//! not answered: the server, had it really sent them, retries and then reports them failed
//! `NoAck`, which is the truth (the Pi does not drive them). Accepts and completions are never
//! limited: the server's own traffic is far below the budget.

use std::time::{Duration, Instant};

use common::RejectReason;

/// Rejections answered per reason per second; the rest are counted.
pub const REJECTS_PER_SECOND: u32 = 20;

/// One fixed one-second window per reason.
#[derive(Debug)]
pub struct RejectBudget {
    windows: Vec<(RejectReason, Window)>,
}

#[derive(Debug, Default)]
struct Window {
    start: Option<Instant>,
    answered: u32,
    /// Not answered since start.
    unanswered: u64,
}

impl Default for RejectBudget {
    fn default() -> Self {
        RejectBudget {
            windows: RejectReason::ALL
                .iter()
                .map(|r| (*r, Window::default()))
                .collect(),
        }
    }
}

impl RejectBudget {
    /// True when a rejection for `reason` may be answered now; false counts it unanswered.
    pub fn allow(&mut self, reason: RejectReason, now: Instant) -> bool {
        let Some((_, w)) = self.windows.iter_mut().find(|(r, _)| *r == reason) else {
            return true;
        };
        if w.start
            .is_none_or(|s| now.saturating_duration_since(s) >= Duration::from_secs(1))
        {
            w.start = Some(now);
            w.answered = 0;
        }
        if w.answered < REJECTS_PER_SECOND {
            w.answered += 1;
            true
        } else {
            w.unanswered += 1;
            false
        }
    }

    /// Rejections for `reason` not answered since start.
    pub fn unanswered(&self, reason: RejectReason) -> u64 {
        self.windows
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, w)| w.unanswered)
    }

    /// Not answered since start, all reasons.
    pub fn unanswered_total(&self) -> u64 {
        self.windows.iter().map(|(_, w)| w.unanswered).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_the_budget_per_reason_per_second_and_counts_the_rest() {
        let mut b = RejectBudget::default();
        let t0 = Instant::now();
        let unknown = RejectReason::UnknownEntity;
        let answered = (0..100).filter(|_| b.allow(unknown, t0)).count();
        assert_eq!(answered, REJECTS_PER_SECOND as usize);
        assert_eq!(b.unanswered(unknown), 100 - u64::from(REJECTS_PER_SECOND));
        // Another reason has a budget of its own.
        assert!(b.allow(RejectReason::QueueFull, t0));
        // A second later the budget is back.
        assert!(b.allow(unknown, t0 + Duration::from_secs(1)));
        assert_eq!(b.unanswered_total(), 80);
    }
}
