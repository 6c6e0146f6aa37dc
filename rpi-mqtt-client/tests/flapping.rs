//! A connection that keeps breaking (here: a second client with the same id, so each connect
//! takes the session over from the other, as with two Pis cloned from one SD card) must not
//! flood the log: state-change lines are rate-limited, and the daemon settles once the other
//! client is gone.

mod support;

use std::time::{Duration, Instant};

use common::Presence;
use rumqttc::MqttOptions;
use support::*;
use testkit::{Broker, Probe};

#[test]
fn flapping_connection_is_logged_rate_limited() {
    let broker = Broker::start();
    let probe = watch(&broker, "probe-flap", "flap-pi");
    let pi = spawn(&broker, "flap-pi", &[]);
    let (first, _) = wait_status(&probe, Duration::from_secs(5), Presence::Online);

    let thief = Probe::connect_with(MqttOptions::new("flap-pi", "127.0.0.1", broker.port()), &[]);
    std::thread::sleep(Duration::from_secs(4));
    drop(thief);
    probe.drain();

    // Settled: online again and heartbeating without interruption for a while.
    let (again, _) = wait_status(&probe, Duration::from_secs(5), Presence::Online);
    assert!(again.session > first.session);
    let t0 = Instant::now();
    let beats: Vec<u32> = heartbeat_seqs(&probe, Duration::from_millis(1600));
    assert!(
        beats.len() >= 2,
        "heartbeats after settling: {beats:?} ({:?})",
        t0.elapsed()
    );

    let log = pi.stderr();
    let takeovers = broker
        .log()
        .matches("already connected, closing old connection")
        .count();
    let state_lines = count_lines(&log, "connection to") + count_lines(&log, "connected to");
    eprintln!("{takeovers} takeovers in 4 s, {state_lines} connection lines logged:");
    for l in log.lines().filter(|l| l.contains("connect")) {
        eprintln!("  {l}");
    }
    assert!(
        takeovers >= 4,
        "the test did not make the connection flap:\n{}",
        broker.log()
    );
    assert!(
        state_lines <= 6,
        "{state_lines} connection lines for {takeovers} takeovers:\n{log}"
    );
}
