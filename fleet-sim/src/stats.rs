//! What the simulator counts: messages per kind, publish failures, connection events, and how
//! late its ticks fire (a bounded histogram), per shard without locks, plus a few shared
//! atomics for the once-a-second progress line.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Lateness histogram: 10 µs buckets up to 10 ms, then 1 ms buckets up to 10 s; the maximum
/// is kept exactly. Fixed size, so memory does not grow with the run.
#[derive(Debug, Clone)]
pub struct LagHistogram {
    buckets: Vec<u64>,
    count: u64,
    max_us: u64,
    sum_us: u64,
}

const FINE: u64 = 1000; // buckets of 10 µs: 0..10 ms
const COARSE: u64 = 9990; // buckets of 1 ms: 10 ms..10 s

impl Default for LagHistogram {
    fn default() -> Self {
        LagHistogram {
            buckets: vec![0; (FINE + COARSE + 1) as usize],
            count: 0,
            max_us: 0,
            sum_us: 0,
        }
    }
}

impl LagHistogram {
    fn index(us: u64) -> usize {
        if us < FINE * 10 {
            (us / 10) as usize
        } else {
            (FINE + ((us - FINE * 10) / 1000).min(COARSE)) as usize
        }
    }

    /// The upper edge of bucket `i`, in µs (what a quantile reports: never an underestimate).
    fn upper(i: usize) -> u64 {
        let i = i as u64;
        if i < FINE {
            (i + 1) * 10
        } else {
            FINE * 10 + (i - FINE + 1) * 1000
        }
    }

    pub fn record(&mut self, d: Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        self.buckets[Self::index(us)] += 1;
        self.count += 1;
        self.sum_us = self.sum_us.saturating_add(us);
        self.max_us = self.max_us.max(us);
    }

    pub fn merge(&mut self, other: &LagHistogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
        self.max_us = self.max_us.max(other.max_us);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The `q` quantile (0..=1) in µs, as the upper edge of its bucket (capped at the max).
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Self::upper(i).min(self.max_us));
            }
        }
        Some(self.max_us)
    }

    pub fn summary(&self) -> LagSummary {
        LagSummary {
            ticks: self.count,
            p50_us: self.quantile_us(0.5),
            p99_us: self.quantile_us(0.99),
            max_us: (self.count > 0).then_some(self.max_us),
            mean_us: (self.count > 0).then(|| self.sum_us / self.count),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct LagSummary {
    pub ticks: u64,
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
    pub max_us: Option<u64>,
    pub mean_us: Option<u64>,
}

/// Counters of one shard (one thread); merged at the end.
#[derive(Debug, Clone, Default)]
pub struct ShardStats {
    pub sent: KindCounts,
    /// Heartbeats sent before the measured window opened (Pis heartbeat from their connect).
    pub early_heartbeats: u64,
    /// `try_publish` refused: not connected, or the request queue full (the Pi is behind).
    pub publish_failed: u64,
    /// Publishes rumqttc reported written to the socket (all kinds).
    pub written: u64,
    pub connects: u64,
    pub connect_failures: u64,
    /// Established connections that broke.
    pub disconnects: u64,
    pub segments_received: u64,
    pub malformed: u64,
    /// Ticks that fired later than half their period.
    pub late_ticks: u64,
    /// Ticks that were dropped because an earlier one was a whole period late or more.
    pub skipped_ticks: u64,
    pub lag: LagHistogram,
    /// Pis whose connection task had not finished when the shard stopped waiting.
    pub unfinished: u64,
}

/// Messages queued for sending, per kind.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct KindCounts {
    pub heartbeat: u64,
    pub state: u64,
    pub status: u64,
    pub ack_accepted: u64,
    pub ack_completed: u64,
    pub ack_rejected: u64,
}

impl KindCounts {
    pub fn add(&mut self, o: &KindCounts) {
        self.heartbeat += o.heartbeat;
        self.state += o.state;
        self.status += o.status;
        self.ack_accepted += o.ack_accepted;
        self.ack_completed += o.ack_completed;
        self.ack_rejected += o.ack_rejected;
    }
    pub fn acks(&self) -> u64 {
        self.ack_accepted + self.ack_completed + self.ack_rejected
    }
    pub fn total(&self) -> u64 {
        self.heartbeat + self.state + self.status + self.acks()
    }
}

impl ShardStats {
    pub fn merge(&mut self, o: &ShardStats) {
        self.sent.add(&o.sent);
        self.early_heartbeats += o.early_heartbeats;
        self.publish_failed += o.publish_failed;
        self.written += o.written;
        self.connects += o.connects;
        self.connect_failures += o.connect_failures;
        self.disconnects += o.disconnects;
        self.segments_received += o.segments_received;
        self.malformed += o.malformed;
        self.late_ticks += o.late_ticks;
        self.skipped_ticks += o.skipped_ticks;
        self.lag.merge(&o.lag);
        self.unfinished += o.unfinished;
    }
}

/// Shared between shards and the progress printer; relaxed atomics, read once a second.
#[derive(Debug, Default)]
pub struct Progress {
    pub connected: AtomicU64,
    pub sent: AtomicU64,
    pub ticks: AtomicU64,
    pub late_ticks: AtomicU64,
    pub skipped_ticks: AtomicU64,
    /// Largest lateness since the last progress line, µs (swapped to 0 when read).
    pub lag_max_us: AtomicU64,
    pub publish_failed: AtomicU64,
}

impl Progress {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
    pub fn sub(counter: &AtomicU64, n: u64) {
        counter.fetch_sub(n, Ordering::Relaxed);
    }
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_bucket_upper_edges() {
        let mut h = LagHistogram::default();
        assert_eq!(h.quantile_us(0.5), None);
        for us in 1..=100u64 {
            h.record(Duration::from_micros(us * 100)); // 0.1 .. 10 ms
        }
        // 50th value is 5000 µs: its bucket is [5000, 5010).
        assert_eq!(h.quantile_us(0.5), Some(5010));
        assert_eq!(h.quantile_us(1.0), Some(10_000));
        h.record(Duration::from_secs(60)); // beyond the last bucket: still counted, max exact
        let s = h.summary();
        assert_eq!(s.ticks, 101);
        assert_eq!(s.max_us, Some(60_000_000));
        let mut other = LagHistogram::default();
        other.merge(&h);
        assert_eq!(other.summary(), s);
    }
}
