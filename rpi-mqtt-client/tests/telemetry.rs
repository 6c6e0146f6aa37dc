//! Heartbeats and state reports of the real binary, as a subscriber sees them on a real
//! mosquitto: heartbeats every 500 ms (+-50 ms), each entity's state at the configured rate.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::Presence;
use support::*;
use testkit::Broker;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn stats(xs: &[f64]) -> (f64, f64, f64) {
    let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, xs.iter().sum::<f64>() / xs.len() as f64, max)
}

#[test]
fn heartbeats_every_500ms() {
    let broker = Broker::start();
    let probe = watch(&broker, "probe-hb", "hb-pi");
    let _pi = spawn(&broker, "hb-pi", &[]);
    wait_status(&probe, Duration::from_secs(5), Presence::Online);

    let mut beats = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while beats.len() < 12 && Instant::now() < deadline {
        if let Some(s) = probe.next(Duration::from_millis(100)) {
            if let Some(h) = as_heartbeat(&s) {
                beats.push((s.at, h));
            }
        }
    }
    assert_eq!(beats.len(), 12, "12 heartbeats within 10 s");
    for w in beats.windows(2) {
        assert_eq!(w[1].1.seq, w[0].1.seq + 1, "heartbeat seq has a gap");
    }
    let arrival: Vec<f64> = beats
        .windows(2)
        .map(|w| ms(w[1].0.duration_since(w[0].0)))
        .collect();
    let sent: Vec<f64> = beats
        .windows(2)
        .map(|w| (w[1].1.timestamp_ms - w[0].1.timestamp_ms) as f64)
        .collect();
    let (amin, amean, amax) = stats(&arrival);
    let (smin, smean, smax) = stats(&sent);
    eprintln!(
        "heartbeat intervals over {} beats: arrival min/mean/max {amin:.1}/{amean:.1}/{amax:.1} ms, \
         Pi timestamps {smin:.0}/{smean:.0}/{smax:.0} ms",
        beats.len()
    );
    for (i, a) in arrival.iter().enumerate() {
        assert!(
            (450.0..=550.0).contains(a),
            "heartbeat interval #{i} was {a:.1} ms at arrival (want 500 +- 50): {arrival:?}"
        );
    }
    for s in &sent {
        assert!(
            (450.0..=550.0).contains(s),
            "Pi-side interval {s} ms: {sent:?}"
        );
    }
}

/// Collects state reports for `d` and returns them per entity.
fn states_per_entity(
    probe: &testkit::Probe,
    d: Duration,
) -> BTreeMap<u32, Vec<(Instant, common::StateReport)>> {
    let mut per: BTreeMap<u32, Vec<_>> = BTreeMap::new();
    for s in probe.collect_for(d) {
        if let Some(r) = as_state(&s) {
            per.entry(r.entity_id).or_default().push((s.at, r));
        }
    }
    per
}

fn check_rate(id: &str, extra: &[&str], interval_ms: f64, entities: &[u32]) {
    let broker = Broker::start();
    let probe = watch(&broker, "probe-state", id);
    let _pi = spawn(&broker, id, extra);
    wait_status(&probe, Duration::from_secs(5), Presence::Online);
    // Let the first reports after the connect go by.
    probe.collect_for(Duration::from_millis(300));
    let window = Duration::from_secs(3);
    let per = states_per_entity(&probe, window);
    assert_eq!(per.keys().copied().collect::<Vec<_>>(), entities);
    let expected = ms(window) / interval_ms;
    for (entity, reports) in &per {
        let n = reports.len() as f64;
        let first = reports.first().unwrap().0;
        let last = reports.last().unwrap().0;
        let mean = ms(last.duration_since(first)) / (n - 1.0);
        eprintln!(
            "entity {entity}: {n} reports in {:?}, mean interval {mean:.1} ms (configured {interval_ms} ms)",
            window
        );
        assert!(
            (n - expected).abs() <= 2.0,
            "entity {entity}: {n} reports in {window:?}, expected about {expected}"
        );
        assert!(
            (mean - interval_ms).abs() <= interval_ms * 0.1,
            "entity {entity}: mean interval {mean:.1} ms, configured {interval_ms} ms"
        );
        // Idle entities report where they stand: entity i at (i * 1000, 0).
        let r = reports.last().unwrap().1;
        assert_eq!((r.segment_id, r.progress, r.vx, r.vy), (0, 0, 0, 0));
    }
    let xs: Vec<i32> = per.values().map(|r| r.last().unwrap().1.x).collect();
    let expected_xs: Vec<i32> = (0..entities.len() as i32).map(|i| i * 1000).collect();
    assert_eq!(xs, expected_xs, "entities start at distinct poses");
}

#[test]
fn state_at_the_default_10hz() {
    check_rate("state-pi", &[], 100.0, &[1, 2, 3]);
}

#[test]
fn state_at_a_configured_rate() {
    check_rate(
        "state-pi-2",
        &["--state-interval", "250ms", "--entities", "7,8"],
        250.0,
        &[7, 8],
    );
}
