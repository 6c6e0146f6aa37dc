//! Command latency: a probe acting as the server publishes a segment to
//! `server/{id}/segment` (QoS 1) and times until the Pi's first answer for it arrives on
//! `rpi/{id}/ack` (QoS 1). The path measured: probe -> mosquitto -> rpi-client (receive,
//! decode, queue, encode ack) -> mosquitto -> probe, all on loopback. Segments are short
//! (10 mm) and spaced, so the entity's queue never fills.

use std::time::{Duration, Instant};

use common::{AckOutcome, Message, Point, Segment};
use rumqttc::QoS;
use serde::{Deserialize, Serialize};
use testkit::Probe;

use super::quantile;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LatencyResult {
    pub target: String,
    pub sent: u64,
    /// Answered `Accepted` (the round trips below are of these).
    pub accepted: u64,
    pub rejected: u64,
    /// Why, for the rejected ones (`QueueFull`, ...).
    pub reject_reasons: std::collections::BTreeMap<String, u64>,
    /// No answer within the timeout.
    pub timeouts: u64,
    pub p50_us: Option<u64>,
    pub p90_us: Option<u64>,
    pub p99_us: Option<u64>,
    pub max_us: Option<u64>,
    pub min_us: Option<u64>,
}

/// Sends `n` segments to Pi `target` (rotating over `entities`), one every `spacing`, each
/// waited for up to 2 s.
pub fn measure(
    port: u16,
    probe_id: &str,
    target: &str,
    entities: &[u32],
    n: u64,
    spacing: Duration,
) -> LatencyResult {
    let probe = Probe::connect(port, probe_id, &[&format!("rpi/{target}/ack")]);
    let topic = format!("server/{target}/segment");
    let mut res = LatencyResult {
        target: target.into(),
        ..Default::default()
    };
    let mut samples = Vec::new();
    // Ids unique across runs against the same (restarted) client.
    let base = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        % 1_000_000) as u32
        * 1000
        + 1;
    let mut next = Instant::now();
    for i in 0..n {
        super::sleep_until(next);
        // After a slow answer, carry on at the set pace instead of catching up with a burst
        // (a burst would fill the entity's queue and measure the probe, not the path).
        next = (next + spacing).max(Instant::now() + spacing / 2);
        let entity = entities[(i as usize) % entities.len()];
        let seg = Segment {
            entity_id: entity,
            segment_id: base.wrapping_add(i as u32).max(1),
            start: Point::new(0, 0),
            end: Point::new(10, 0),
            velocity_start: 1000,
            velocity_end: 1000,
            segment_type: 0,
            deadline_ms: common::wire::NO_DEADLINE,
            epoch: 0,
        };
        let sent_at = Instant::now();
        probe.publish(&topic, seg.encode().as_slice(), QoS::AtLeastOnce, false);
        res.sent += 1;
        let answer = probe.wait_for(Duration::from_secs(2), |s| {
            matches!(Message::decode(&s.payload), Ok(Message::Ack(a))
                if a.segment_id == seg.segment_id && a.entity_id == entity
                    && a.outcome != AckOutcome::Completed)
        });
        match answer {
            None => res.timeouts += 1,
            Some(s) => match Message::decode(&s.payload) {
                Ok(Message::Ack(a)) if a.outcome == AckOutcome::Accepted => {
                    res.accepted += 1;
                    samples.push(s.at.saturating_duration_since(sent_at).as_micros() as u64);
                }
                Ok(Message::Ack(a)) => {
                    res.rejected += 1;
                    let why = match a.outcome {
                        AckOutcome::Rejected(r) => format!("{r:?}"),
                        other => format!("{other:?}"),
                    };
                    *res.reject_reasons.entry(why).or_default() += 1;
                }
                _ => res.rejected += 1,
            },
        }
    }
    samples.sort_unstable();
    res.p50_us = quantile(&samples, 0.5);
    res.p90_us = quantile(&samples, 0.9);
    res.p99_us = quantile(&samples, 0.99);
    res.max_us = samples.last().copied();
    res.min_us = samples.first().copied();
    res
}
