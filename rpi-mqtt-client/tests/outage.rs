//! The broker dies (kill -9) and comes back on the same port: the real binary reconnects with
//! a new session, re-subscribes, takes a new segment within 3 s of the broker's return,
//! resumes heartbeats within 1 s, sends fresh state (no backlog) and does not grow in memory.

mod support;

use std::time::{Duration, Instant};

use common::{AckOutcome, Presence};
use support::*;
use testkit::probe::{PiReturn, pi_return};
use testkit::{Broker, Probe};

#[test]
fn survives_a_broker_outage() {
    let mut broker = Broker::start();
    let probe = watch(&broker, "probe-before", "out-pi");
    let mut pi = spawn(&broker, "out-pi", &[]);
    let (first, _) = wait_status(&probe, Duration::from_secs(5), Presence::Online);
    // Something for the entities to do across the outage.
    send_segment(
        &probe,
        "out-pi",
        &segment(1, 1, (0, 0), (100_000, 0), 100, 100),
    );
    wait_ack(&probe, Duration::from_secs(3), 1, 1, AckOutcome::Accepted);
    probe.collect_for(Duration::from_millis(500));
    let rss_before = pi.rss_kib().expect("rss");
    drop(probe);

    broker.kill();
    let outage = Duration::from_secs(5);
    std::thread::sleep(outage);
    let rss_during = pi.rss_kib().expect("rss");
    assert!(
        pi.wait_exit(Duration::ZERO).is_none(),
        "rpi-client died in the outage"
    );
    broker.restart();
    let back = Instant::now();

    let probe = Probe::connect(broker.port(), "probe-after", &["rpi/out-pi/#"]);
    let subscribed = back.elapsed();
    // The first heartbeat and the Online status after the broker's return. Online must be
    // seen live (not as a retained copy): then the probe was subscribed before the Pi
    // reconnected, and it sees everything the Pi sent afterwards.
    let PiReturn {
        heartbeat: hb,
        online,
    } = pi_return(&probe, Duration::from_secs(3));
    let hb_after = hb
        .expect("no heartbeat within 3 s of the broker's return")
        .duration_since(back);
    let (online, online_seen) = online.expect("no Online status within 3 s of the broker's return");
    let reconnect = online_seen.at.duration_since(back);
    assert!(
        !online_seen.retain,
        "precondition: the probe (subscribed {subscribed:?} after the restart) was late"
    );
    assert!(online.session > first.session, "{online:?} vs {first:?}");

    // Re-subscribed: a new segment is taken.
    send_segment(
        &probe,
        "out-pi",
        &segment(2, 2, (1000, 0), (1000, 50), 100, 100),
    );
    let ack = wait_ack(&probe, Duration::from_secs(3), 2, 2, AckOutcome::Accepted);
    let segment_after = ack.at.duration_since(back);

    // Fresh state, no backlog: every report is recent when it arrives.
    let mut states = 0;
    for s in probe.collect_for(Duration::from_millis(600)) {
        if let Some(r) = as_state(&s) {
            states += 1;
            let arrived = wall_ms_at(s.at);
            let age = arrived as i64 - r.timestamp_ms as i64;
            assert!(
                (-50..=300).contains(&age),
                "state report {r:?} was {age} ms old on arrival"
            );
        }
    }
    assert!(states >= 3 * 4, "only {states} state reports in 600 ms");
    let rss_after = pi.rss_kib().expect("rss");

    eprintln!(
        "outage of {outage:?}: probe subscribed {subscribed:?} after the restart; first heartbeat \
         after {hb_after:?}, Online after {reconnect:?}, segment acked after {segment_after:?}; \
         RSS {rss_before} -> {rss_during} -> {rss_after} KiB"
    );
    assert!(
        hb_after < Duration::from_secs(1),
        "heartbeats resumed after {hb_after:?}"
    );
    assert!(
        segment_after < Duration::from_secs(3),
        "segment acked after {segment_after:?}"
    );
    assert!(
        rss_during <= rss_before + 1024 && rss_after <= rss_before + 1024,
        "memory grew: {rss_before} -> {rss_during} -> {rss_after} KiB"
    );
    let log = pi.stderr();
    assert!(log.contains("connection to"), "{log}");
    assert!(
        count_lines(&log, "cannot connect") <= 2,
        "reconnect failures must be rate-limited:\n{log}"
    );
}
