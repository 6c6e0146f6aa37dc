//! The server's counters: messages per kind, bad input per error kind, registry events,
//! segment delivery (sent / acked / retried / failed) and round-trip statistics. Kept in the
//! registry, printed at shutdown, and read by whatever interface comes next (HTTP, metrics).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde::Serialize;

/// Round-trip samples kept for percentiles.
pub const RTT_WINDOW: usize = 1024;

/// Upper bounds (seconds) of the round-trip histogram's buckets (`+Inf` is implied).
pub const RTT_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Segment round trips (sent -> Accepted): the last one, a bounded window for percentiles,
/// and a cumulative histogram for the metrics.
#[derive(Debug, Clone, Default)]
pub struct RttStats {
    last: Option<Duration>,
    window: VecDeque<Duration>,
    count: u64,
    /// Round trips at most `RTT_BUCKETS[i]` seconds (not cumulative; the metrics add up).
    buckets: [u64; RTT_BUCKETS.len()],
    sum: Duration,
}

/// The histogram of [`RttStats`], Prometheus-style.
#[derive(Debug, Clone, PartialEq)]
pub struct RttHistogram {
    /// (upper bound in seconds, cumulative count), ascending; `+Inf` is `count`.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_seconds: f64,
}

/// A summary of [`RttStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct RttSummary {
    pub count: u64,
    pub last_us: Option<u64>,
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
}

impl RttStats {
    pub fn record(&mut self, d: Duration) {
        self.last = Some(d);
        self.count += 1;
        self.sum += d;
        let secs = d.as_secs_f64();
        if let Some(i) = RTT_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i] += 1;
        }
        if self.window.len() == RTT_WINDOW {
            self.window.pop_front();
        }
        self.window.push_back(d);
    }

    pub fn last(&self) -> Option<Duration> {
        self.last
    }

    /// The `q` quantile (0.0..=1.0) of the window, nearest rank.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.window.is_empty() {
            return None;
        }
        let mut v: Vec<Duration> = self.window.iter().copied().collect();
        v.sort_unstable();
        let rank = (q.clamp(0.0, 1.0) * v.len() as f64).ceil() as usize;
        Some(v[rank.clamp(1, v.len()) - 1])
    }

    pub fn histogram(&self) -> RttHistogram {
        let mut acc = 0;
        RttHistogram {
            buckets: RTT_BUCKETS
                .iter()
                .zip(self.buckets)
                .map(|(b, n)| {
                    acc += n;
                    (*b, acc)
                })
                .collect(),
            count: self.count,
            sum_seconds: self.sum.as_secs_f64(),
        }
    }

    pub fn summary(&self) -> RttSummary {
        let us = |d: Option<Duration>| d.map(|d| d.as_micros() as u64);
        RttSummary {
            count: self.count,
            last_us: us(self.last),
            p50_us: us(self.quantile(0.5)),
            p99_us: us(self.quantile(0.99)),
        }
    }
}

/// Every counter of the server. Error and event names are `&'static str` labels from a fixed
/// set, so the maps cannot grow with input.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counters {
    /// Valid messages received, by kind (`heartbeat`, `state`, `status`, `ack`).
    pub messages: BTreeMap<&'static str, u64>,
    /// Bad input, by error kind (`bad_topic`, `bad_client_id`, `oversized`, `kind_mismatch`,
    /// and the decoder's labels: `empty`, `unknown_version`, `unknown_kind`, `wrong_length`,
    /// `out_of_range`, `unexpected_kind`).
    pub input_errors: BTreeMap<&'static str, u64>,
    /// Registry events: `pis_added`, `pis_evicted`, `registry_full`, `entities_full`,
    /// `stale_status`, `state_from_unknown_pi`, `went_online`, `went_offline`,
    /// `heartbeats_lost`, `seq_resets`, `suspected_duplicate_id` (Pis that began flapping,
    /// see [`crate::flapping`]).
    pub registry: BTreeMap<&'static str, u64>,
    /// Distinct segments published (first attempts).
    pub segments_sent: u64,
    /// Segments answered `Accepted` (the first such ack per segment).
    pub segments_acked: u64,
    /// Re-publications of a segment that had no ack in time.
    pub segments_retried: u64,
    pub segments_completed: u64,
    pub segments_rejected: u64,
    /// Segments that could not be delivered: retries spent, Pi went offline, server stopping.
    pub segments_failed: u64,
    /// Dispatch requests refused at once (Pi offline or unknown, entity unknown, ...).
    pub dispatch_refused: u64,
    /// Acks for segments this server is not tracking (unknown, expired, or another Pi's).
    pub acks_unknown: u64,
    /// Acks repeating what the server already knew (QoS 1 duplicates, re-sent Accepted).
    pub acks_duplicate: u64,
    /// `Rejected(Expired)` for segments the server had already given up on: a late
    /// delivery (after a silent outage) that the Pi refused, as the deadline intends.
    pub late_refused: u64,
    /// `Accepted`/`Completed` for segments already reported failed: an ack delayed past the
    /// deadline's grace, or a segment the Pi finished after the server gave up on it.
    pub late_outcomes: u64,
    /// Segments sent without a deadline (a version 1 Pi, or no heartbeat yet to learn the
    /// Pi's clock from): a late delivery of these would still be executed.
    pub segments_without_deadline: u64,
    /// Publishes the MQTT client could not queue (request queue full or not connected).
    pub publish_failures: u64,
    /// Connections to the broker made (ConnAcks), and established ones lost.
    pub broker_connects: u64,
    pub broker_disconnects: u64,
    /// Instant actions answered or given up, by outcome ([`crate::actions::OUTCOME_LABELS`]).
    pub actions: BTreeMap<&'static str, u64>,
    /// Distinct actions published (first attempts).
    pub actions_sent: u64,
    /// Re-publications of an action that had no ack in time.
    pub actions_retried: u64,
    /// Action requests refused at once, by reason ([`crate::actions::ActionError::label`]):
    /// `unsupported_protocol` for a Pi below version 3, `pi_offline`, `unknown_entity`, ...
    pub actions_refused: BTreeMap<&'static str, u64>,
    /// Action acks for actions this server did not send (unknown id, or another Pi's).
    pub action_acks_unknown: u64,
    /// Action acks of actions answered already (QoS 1 duplicates).
    pub action_acks_duplicate: u64,
    #[serde(skip)]
    pub rtt: RttStats,
    /// Action round trips (first publication -> ActionAck).
    #[serde(skip)]
    pub action_rtt: RttStats,
}

fn bump(map: &mut BTreeMap<&'static str, u64>, key: &'static str, by: u64) {
    *map.entry(key).or_insert(0) += by;
}

fn get(map: &BTreeMap<&'static str, u64>, key: &str) -> u64 {
    map.get(key).copied().unwrap_or(0)
}

impl Counters {
    pub fn message(&mut self, kind: &'static str) {
        bump(&mut self.messages, kind, 1);
    }
    pub fn input_error(&mut self, label: &'static str) {
        bump(&mut self.input_errors, label, 1);
    }
    pub fn registry_event(&mut self, label: &'static str, by: u64) {
        bump(&mut self.registry, label, by);
    }

    pub fn action_outcome(&mut self, label: &'static str) {
        bump(&mut self.actions, label, 1);
    }
    pub fn action_refused(&mut self, label: &'static str) {
        bump(&mut self.actions_refused, label, 1);
    }

    pub fn messages_of(&self, kind: &str) -> u64 {
        get(&self.messages, kind)
    }
    pub fn input_errors_of(&self, label: &str) -> u64 {
        get(&self.input_errors, label)
    }
    pub fn registry_of(&self, label: &str) -> u64 {
        get(&self.registry, label)
    }
    pub fn input_errors_total(&self) -> u64 {
        self.input_errors.values().sum()
    }

    /// Human-readable summary lines, printed at shutdown.
    pub fn summary_lines(&self) -> Vec<String> {
        let map = |m: &BTreeMap<&'static str, u64>| {
            if m.is_empty() {
                "none".to_string()
            } else {
                m.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        };
        let ms = |d: Option<Duration>| match d {
            Some(d) => format!("{:.1}ms", d.as_secs_f64() * 1000.0),
            None => "-".into(),
        };
        vec![
            format!("messages: {}", map(&self.messages)),
            format!("input errors: {}", map(&self.input_errors)),
            format!("registry: {}", map(&self.registry)),
            format!(
                "segments: sent={} acked={} retried={} completed={} rejected={} failed={} \
                 refused={} acks_unknown={} acks_duplicate={} late_refused={} late_outcomes={} \
                 without_deadline={} publish_failures={}",
                self.segments_sent,
                self.segments_acked,
                self.segments_retried,
                self.segments_completed,
                self.segments_rejected,
                self.segments_failed,
                self.dispatch_refused,
                self.acks_unknown,
                self.acks_duplicate,
                self.late_refused,
                self.late_outcomes,
                self.segments_without_deadline,
                self.publish_failures,
            ),
            format!(
                "actions: sent={} retried={} outcomes: {} refused: {} acks_unknown={} acks_duplicate={}",
                self.actions_sent,
                self.actions_retried,
                map(&self.actions),
                map(&self.actions_refused),
                self.action_acks_unknown,
                self.action_acks_duplicate,
            ),
            format!(
                "broker: connects={} disconnects={}",
                self.broker_connects, self.broker_disconnects
            ),
            format!(
                "segment round trip: n={} last={} p50={} p99={}",
                self.rtt.count,
                ms(self.rtt.last()),
                ms(self.rtt.quantile(0.5)),
                ms(self.rtt.quantile(0.99)),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtt_quantiles_over_a_bounded_window() {
        let mut r = RttStats::default();
        assert_eq!(r.quantile(0.5), None);
        for ms in 1..=100u64 {
            r.record(Duration::from_millis(ms));
        }
        assert_eq!(r.last(), Some(Duration::from_millis(100)));
        assert_eq!(r.quantile(0.5), Some(Duration::from_millis(50)));
        assert_eq!(r.quantile(0.99), Some(Duration::from_millis(99)));
        for _ in 0..RTT_WINDOW {
            r.record(Duration::from_millis(7));
        }
        assert_eq!(r.window.len(), RTT_WINDOW);
        assert_eq!(r.quantile(0.99), Some(Duration::from_millis(7)));
        assert_eq!(r.summary().count, 100 + RTT_WINDOW as u64);
        let h = r.histogram();
        assert_eq!(h.count, 100 + RTT_WINDOW as u64);
        // 1..=100 ms and the 7 ms ones: 1 at <= 1 ms, 2 at <= 2.5 ms, ..., 100 at <= 100 ms.
        let at = |le: f64| h.buckets.iter().find(|(b, _)| *b == le).unwrap().1;
        assert_eq!(at(0.001), 1);
        assert_eq!(at(0.005), 5);
        assert_eq!(at(0.01), 10 + RTT_WINDOW as u64);
        assert_eq!(at(0.1), 100 + RTT_WINDOW as u64);
        assert!((h.sum_seconds - (5.050 + 0.007 * RTT_WINDOW as f64)).abs() < 1e-6);
    }

    #[test]
    fn summary_names_everything() {
        let mut c = Counters::default();
        c.message("heartbeat");
        c.input_error("oversized");
        c.input_error("oversized");
        c.registry_event("registry_full", 3);
        let s = c.summary_lines().join("\n");
        assert!(s.contains("heartbeat=1"), "{s}");
        assert!(s.contains("oversized=2"), "{s}");
        assert!(s.contains("registry_full=3"), "{s}");
        assert_eq!(c.input_errors_total(), 2);
    }
}
