//! A Pi's clock offset as learnt from its heartbeats: `server_now_ms - pi_timestamp_ms` per
//! heartbeat (the true offset plus the heartbeat's one-way delay, a few ms on a LAN). Two
//! readings: a smoothed one for people (the table's `clock_offset`) and the least-delayed
//! recent sample for segment deadlines ([`ClockOffset::for_deadlines_ms`]). A sample outside
//! [`SANE_OFFSET_MS`] (a timestamp of 0, `u64::MAX`, the year 3000, a Pi clock never set) is
//! not an offset but nonsense: it moves neither reading, and until a sane sample comes the
//! Pi's segments carry no deadline (the table says so).

use std::collections::VecDeque;

/// A clock offset sample this far from the smoothed value replaces it (the Pi's clock
/// stepped, e.g. NTP synced after boot) instead of being averaged in.
pub const OFFSET_STEP_MS: u64 = 1000;
/// Heartbeats whose clock offset samples make the deadline offset (4 s at 500 ms).
pub const DEADLINE_OFFSET_WINDOW: usize = 8;
/// The largest offset taken for a clock (a day): beyond it, a Pi's clock is not set or its
/// timestamps are garbage, and a deadline on that clock would mean nothing.
pub const SANE_OFFSET_MS: u64 = 24 * 3600 * 1000;

/// The offset estimator of one Pi; positive offsets mean the Pi's clock is behind.
#[derive(Debug, Clone, Default)]
pub struct ClockOffset {
    /// Exponential average of the samples, reset on a step.
    smoothed: Option<i64>,
    /// The last [`DEADLINE_OFFSET_WINDOW`] sane samples.
    samples: VecDeque<i64>,
    /// The last sample was outside [`SANE_OFFSET_MS`].
    out_of_range: bool,
}

impl ClockOffset {
    /// Takes the sample of a heartbeat stamped `pi_ms` and received at `server_wall_ms`.
    pub fn sample(&mut self, server_wall_ms: u64, pi_ms: u64) {
        let sample = (i128::from(server_wall_ms) - i128::from(pi_ms))
            .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
        self.out_of_range = sample.unsigned_abs() > SANE_OFFSET_MS;
        if self.out_of_range {
            return;
        }
        if self.samples.len() == DEADLINE_OFFSET_WINDOW {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
        self.smoothed = Some(match self.smoothed {
            Some(prev) if sample.abs_diff(prev) < OFFSET_STEP_MS => {
                // Exponential average, weight 1/4 for the new sample.
                prev + (sample - prev) / 4
            }
            _ => sample,
        });
    }

    /// The smoothed `server - pi` offset in ms; None before the first heartbeat.
    pub fn smoothed_ms(&self) -> Option<i64> {
        self.smoothed
    }

    /// True when the last heartbeat's timestamp was outside [`SANE_OFFSET_MS`].
    pub fn out_of_range(&self) -> bool {
        self.out_of_range
    }

    /// The offset (`server - pi`) to put segment deadlines on the Pi's clock: the smallest
    /// sample of the last few heartbeats. Every sample is the true offset plus the
    /// heartbeat's delay, so the smallest is the closest and never below the truth: deadlines
    /// err early, never late. A burst of delayed heartbeats (after a Wi-Fi gap) does not move
    /// it; a forward step of the Pi's clock is followed at the next heartbeat; a backward step
    /// of J ms can make deadlines up to J late until the window has passed (4 s). None while
    /// the last timestamp is out of range: the segment then goes without a deadline.
    pub fn for_deadlines_ms(&self) -> Option<i64> {
        if self.out_of_range {
            return None;
        }
        self.samples.iter().copied().min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_offset_is_smoothed_and_follows_steps() {
        let mut o = ClockOffset::default();
        let server = 1_764_000_000_000u64;
        o.sample(server, server - 40);
        assert_eq!(o.smoothed_ms(), Some(40));
        o.sample(server + 500, server + 500 - 48);
        assert_eq!(o.smoothed_ms(), Some(42));
        // The Pi's clock is ahead by an hour after NTP: the estimate jumps, not crawls.
        o.sample(server + 1000, server + 1000 + 3_600_000);
        assert_eq!(o.smoothed_ms(), Some(-3_600_000));
        // Nonsense timestamps do not overflow.
        o.sample(server, u64::MAX);
        assert!(o.smoothed_ms().unwrap() < 0);
    }

    #[test]
    fn deadline_offset_is_the_least_delayed_recent_sample() {
        let mut o = ClockOffset::default();
        let server = 1_764_000_000_000u64;
        // The Pi is 1000 ms behind; heartbeats take 5..30 ms.
        for (i, delay) in [30u64, 5, 12, 20].into_iter().enumerate() {
            let at = server + 500 * i as u64;
            o.sample(at, at - 1000 - delay);
        }
        assert_eq!(o.for_deadlines_ms(), Some(1005));
        // After a Wi-Fi gap, heartbeats up to 4 s old arrive in a burst: no change.
        for age in [4000u64, 3500, 3000] {
            let at = server + 6000;
            let made = at - age;
            o.sample(at, made - 1000);
        }
        assert_eq!(o.for_deadlines_ms(), Some(1005));
        // The Pi's clock steps forward 2 s (NTP): followed at once, deadlines stay early.
        let at = server + 7000;
        o.sample(at, at - 1000 - 10 + 2000);
        assert_eq!(o.for_deadlines_ms(), Some(-990));
        // Old samples leave the window after DEADLINE_OFFSET_WINDOW heartbeats.
        for i in 0..DEADLINE_OFFSET_WINDOW as u64 {
            let at = server + 8000 + 500 * i;
            o.sample(at, at - 1000 - 8);
        }
        assert_eq!(o.for_deadlines_ms(), Some(1008));
    }

    #[test]
    fn absurd_timestamps_are_ignored_for_deadlines_and_flagged() {
        let mut o = ClockOffset::default();
        let server = 1_764_000_000_000u64;
        o.sample(server, server - 20);
        assert!(!o.out_of_range());
        let year_3000 = 32_503_680_000_000u64;
        for nonsense in [0, u64::MAX, year_3000, server + SANE_OFFSET_MS + 1] {
            o.sample(server, nonsense);
            assert!(o.out_of_range(), "{nonsense}");
            assert_eq!(
                o.for_deadlines_ms(),
                None,
                "no deadline on a clock like that"
            );
            assert_eq!(
                o.smoothed_ms(),
                Some(20),
                "the display keeps the last sane offset"
            );
        }
        // Sane again: the window of sane samples is used again.
        o.sample(server, server - 30);
        assert!(!o.out_of_range());
        assert_eq!(o.for_deadlines_ms(), Some(20));
        // A clock a day off is still a clock.
        let mut o = ClockOffset::default();
        o.sample(server, server - SANE_OFFSET_MS);
        assert_eq!(o.for_deadlines_ms(), Some(SANE_OFFSET_MS as i64));
    }
}
