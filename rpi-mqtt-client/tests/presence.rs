//! Presence of the real binary on `rpi/{id}/status`: retained `Online` with a session seeded
//! from the clock, retained `Offline` and exit 0 within 1 s on SIGTERM/SIGINT, and the Last
//! Will (`ConnectionLost`, same session) when the process is killed with -9.

mod support;

use std::time::{Duration, Instant};

use common::{AckOutcome, Presence, RejectReason};
use support::*;
use testkit::{Broker, Probe};

#[test]
fn online_status_is_retained_with_a_clock_session() {
    let broker = Broker::start();
    let before = (now_ms() / 1000) as u32;
    let _pi = spawn(&broker, "pres-pi", &[]);
    let probe = watch(&broker, "probe-live", "pres-pi");
    let (online, _) = wait_status(&probe, Duration::from_secs(5), Presence::Online);
    let after = (now_ms() / 1000) as u32;
    assert!(
        (before..=after).contains(&online.session),
        "session {} should be the start time in s ({before}..={after})",
        online.session
    );
    // A subscriber that comes later gets it as a retained message.
    let late = watch(&broker, "probe-late", "pres-pi");
    let (again, seen) = wait_status(&late, Duration::from_secs(2), Presence::Online);
    assert!(seen.retain);
    assert_eq!(again.session, online.session);
}

fn stops_cleanly_on(signal: &str) {
    let broker = Broker::start();
    let id = format!("sig-{}", signal.to_lowercase());
    let probe = watch(&broker, "probe-sig", &id);
    let mut pi = spawn(&broker, &id, &[]);
    let (online, _) = wait_status(&probe, Duration::from_secs(5), Presence::Online);
    // A segment in progress is dropped with a ShuttingDown ack before Offline.
    let seg = segment(1, 5, (0, 0), (100_000, 0), 100, 100);
    send_segment(&probe, &id, &seg);
    wait_ack(&probe, Duration::from_secs(3), 1, 5, AckOutcome::Accepted);

    pi.signal(signal);
    let t0 = Instant::now();
    let status = pi.wait_exit(Duration::from_secs(3));
    let took = t0.elapsed();
    eprintln!("SIG{signal}: exit {status:?} after {took:?}");
    let status = status.expect("rpi-client did not exit within 3 s");
    assert_eq!(status.code(), Some(0), "stderr:\n{}", pi.stderr());
    assert!(took < Duration::from_secs(1), "shutdown took {took:?}");

    wait_ack(
        &probe,
        Duration::from_secs(2),
        1,
        5,
        AckOutcome::Rejected(RejectReason::ShuttingDown),
    );
    let (offline, _) = wait_status(&probe, Duration::from_secs(2), Presence::Offline);
    assert_eq!(offline.session, online.session);
    // The clean disconnect discards the will: no ConnectionLost follows.
    let extra = probe.collect_for(Duration::from_millis(500));
    assert!(
        !extra
            .iter()
            .any(|s| as_status(s).is_some_and(|st| st.presence == Presence::ConnectionLost)),
        "a will was published after a clean shutdown"
    );
    // Retained: a subscriber that comes later sees Offline.
    let late = Probe::connect(broker.port(), "probe-after", &[&format!("rpi/{id}/status")]);
    let (retained, seen) = wait_status(&late, Duration::from_secs(2), Presence::Offline);
    assert!(seen.retain);
    assert_eq!(retained.session, online.session);
    let log = pi.stderr();
    assert!(log.contains("stopped"), "{log}");
}

#[test]
fn sigterm_publishes_offline_and_exits_0_within_1s() {
    stops_cleanly_on("TERM");
}

#[test]
fn sigint_publishes_offline_and_exits_0_within_1s() {
    stops_cleanly_on("INT");
}

#[test]
fn kill_9_makes_the_broker_publish_the_will() {
    let broker = Broker::start();
    let probe = watch(&broker, "probe-will", "will-pi");
    let mut pi = spawn(&broker, "will-pi", &[]);
    let (online, _) = wait_status(&probe, Duration::from_secs(5), Presence::Online);
    pi.kill9();
    let (lost, _) = wait_status(&probe, Duration::from_secs(5), Presence::ConnectionLost);
    assert_eq!(
        lost.session, online.session,
        "the will carries the connection's session"
    );
    let late = Probe::connect(broker.port(), "probe-late", &["rpi/will-pi/status"]);
    let (retained, seen) = wait_status(&late, Duration::from_secs(2), Presence::ConnectionLost);
    assert!(seen.retain);
    assert_eq!(retained.session, online.session);
}
