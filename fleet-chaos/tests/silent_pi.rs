//! Silent network loss of a Pi: SIGSTOP freezes `rpi-client` with its TCP connection open
//! (no FIN, no will), exactly what a Pi whose link silently died looks like to the server.
//! The server must mark it offline on heartbeat timeout and fail what it had sent it; after
//! SIGCONT the Pi is online again, and a segment the server gave up on while the Pi was silent
//! must not be executed (it is no longer the server's intent).
//!
//! The server runs in-process here (its library API dispatches a segment at the exact moment
//! the test wants and reports each segment's outcome); the Pi is the real binary.

use std::time::{Duration, Instant};

use common::{AckOutcome, Point};
use fleet_chaos::{Watch, ms, report, spawn_pi};
use mqtt_server::{FailReason, OfflineReason, SegmentOutcome, SegmentSpec, Server, ServerConfig};
use testkit::{Broker, wait_for};

const HEARTBEAT_TIMEOUT: Duration = Duration::from_millis(1500);

fn server(broker: &Broker) -> Server {
    let mut cfg = ServerConfig::default();
    cfg.apply("broker", &broker.addr()).unwrap();
    cfg.client_id = format!("server-{}", broker.port());
    cfg.segment_interval = Duration::ZERO;
    cfg.status_interval = Duration::ZERO;
    cfg.heartbeat_timeout = HEARTBEAT_TIMEOUT;
    let server = Server::start(&cfg).expect("server starts");
    let h = server.handle();
    wait_for(Duration::from_secs(5), || {
        h.snapshot().filter(|s| s.broker_connected).map(|_| ())
    })
    .expect("server connected");
    std::thread::sleep(Duration::from_millis(100)); // its SubAck
    server
}

/// A long straight line: minutes of driving at 100 mm/s, so it is still running at the end.
fn long_leg(entity: u32, y: i32) -> SegmentSpec {
    SegmentSpec::line(entity, Point::new(0, y), Point::new(100_000, y), 100, 100)
}

/// What happened in one run.
struct Silent {
    detect: Duration,
    recovery: Duration,
    /// The segment dispatched while the Pi was silent, and whether the Pi executed it.
    stale_id: u32,
    stale_executed: bool,
    stale_acks: Vec<AckOutcome>,
    /// SIGSTOP -> the broker published the will (when waited for).
    will_after: Option<Duration>,
}

/// Freezes the Pi for `silence`, with `keep_alive` on the Pi's connection (the broker drops a
/// silent client after 1.5x that, publishing its will).
fn freeze_and_thaw(tag: &str, silence: Duration, keep_alive: &str, broker_drops: bool) -> Silent {
    // `silence` is ignored when `broker_drops`: then the Pi stays frozen until the will.
    let broker = Broker::start();
    let watch = Watch::start(broker.port(), &format!("watch-{tag}"));
    let srv = server(&broker);
    let h = srv.handle();
    let id = format!("pi-{tag}");
    let pi = spawn_pi(&broker.addr(), &id, "1,2", &["--keep-alive", keep_alive]);
    wait_for(Duration::from_secs(5), || {
        let s = h.snapshot()?;
        let p = s.pi(&id)?;
        (p.online && p.entities.len() == 2).then_some(())
    })
    .expect("Pi online with its entities");

    // Entity 1 is busy with a segment the server knows is accepted.
    let running = h.dispatch(&id, long_leg(1, 0)).expect("dispatch");
    let first = running
        .outcomes
        .recv_timeout(Duration::from_secs(3))
        .expect("accepted");
    assert!(
        matches!(first, SegmentOutcome::Accepted { .. }),
        "{first:?}"
    );

    pi.signal("STOP");
    let stopped = Instant::now();
    // While the Pi is silent but not yet timed out, the server still sends it work.
    let stale = h
        .dispatch(&id, long_leg(2, 500))
        .expect("the Pi is still online in the server's view");

    let offline_at = wait_for(HEARTBEAT_TIMEOUT + Duration::from_secs(2), || {
        let s = h.snapshot()?;
        (!s.pi(&id)?.online).then(Instant::now)
    })
    .expect("the server marks the silent Pi offline");
    let last_beat = watch
        .with(|r| r.heartbeat_before(&id, offline_at))
        .expect("heartbeats before the stop");
    let detect = offline_at.duration_since(last_beat);
    assert_eq!(
        stale.wait_final(Duration::from_secs(1)),
        Some(SegmentOutcome::Failed(FailReason::PiOffline)),
        "the segment sent into the silence is reported failed"
    );
    assert_eq!(
        running.wait_final(Duration::from_secs(1)),
        Some(SegmentOutcome::Failed(FailReason::PiOffline)),
    );

    let mut will_after = None;
    if broker_drops {
        // Stay silent until the broker notices the dead connection and publishes the will.
        let will = wait_for(Duration::from_secs(30), || {
            let s = h.snapshot()?;
            (s.pi(&id)?.offline_reason == Some(OfflineReason::Will)).then(Instant::now)
        })
        .expect("the broker publishes the silent Pi's will");
        will_after = Some(will.duration_since(stopped));
    } else {
        std::thread::sleep(silence.saturating_sub(stopped.elapsed()));
        let reason = h.snapshot().and_then(|s| s.pi(&id)?.offline_reason);
        assert_eq!(
            reason,
            Some(OfflineReason::HeartbeatTimeout),
            "broker kept the connection"
        );
    }
    let resumed = Instant::now();
    pi.signal("CONT");
    let back = wait_for(Duration::from_secs(10), || {
        h.snapshot()?.pi(&id)?.online.then(Instant::now)
    })
    .expect("the Pi is online again after SIGCONT");
    let recovery = back.duration_since(resumed);

    // Let whatever was waiting for the Pi arrive and run for a while.
    std::thread::sleep(Duration::from_secs(2));
    let rec = watch.record();
    let key = (id.clone(), 2);
    let stale_executed = rec
        .states
        .get(&key)
        .is_some_and(|v| v.iter().any(|s| s.segment_id == stale.id));
    let stale_acks = rec
        .acks_of(&id, stale.id)
        .into_iter()
        .map(|(_, o)| o)
        .collect();
    assert!(
        rec.double_executions().is_empty(),
        "{:?}",
        rec.double_executions()
    );
    drop(pi);
    Silent {
        detect,
        recovery,
        stale_id: stale.id,
        stale_executed,
        stale_acks,
        will_after,
    }
}

fn check(scenario: &str, r: &Silent) {
    report(
        scenario,
        &[
            ("detect_ms", ms(r.detect)),
            ("recovery_ms", ms(r.recovery)),
            ("stale_executed", u64::from(r.stale_executed)),
            ("broker_will_ms", r.will_after.map_or(0, ms)),
        ],
    );
    assert!(
        r.detect >= HEARTBEAT_TIMEOUT && r.detect <= HEARTBEAT_TIMEOUT + Duration::from_millis(500),
        "marked offline {:?} after the last heartbeat (timeout {HEARTBEAT_TIMEOUT:?})",
        r.detect
    );
    assert!(
        r.recovery < Duration::from_secs(1),
        "online again {:?} after SIGCONT",
        r.recovery
    );
}

/// Frozen 3 s: shorter than the broker's keep-alive timeout, so the Pi's connection survives
/// and whatever the broker wrote to it meanwhile is waiting in the socket.
#[test]
fn frozen_pi_within_keep_alive() {
    let r = freeze_and_thaw("short", Duration::from_secs(3), "5s", false);
    check("silent_pi_3s", &r);
}

/// Frozen until the broker gives up on the connection (keep-alive 2 s: mosquitto should drop
/// it after 3 s; 2.0.11 takes longer) and publishes the will; on SIGCONT the Pi reads what was
/// already in its socket, finds the connection closed, and reconnects.
#[test]
fn frozen_pi_beyond_keep_alive() {
    let r = freeze_and_thaw("long", Duration::ZERO, "2s", true);
    check("silent_pi_5s_broker_dropped", &r);
}

/// The gap: a segment the server sent into the silence and then reported failed (PiOffline)
/// is still executed when the Pi wakes up. The broker had already written it (and its
/// re-send) into the Pi's socket, the Pi cannot tell its age (a segment carries no time or
/// deadline) and the protocol has no way to cancel it. Fixing it needs a protocol change
/// (see docs/reliability.md, "Known gaps").
#[test]
#[ignore = "known gap: a segment failed while the Pi was silent is executed when it returns (needs a segment deadline or cancel in the protocol)"]
fn gap_segment_failed_during_silence_is_not_executed() {
    let r = freeze_and_thaw("gap", Duration::from_secs(3), "5s", false);
    check("silent_pi_gap", &r);
    assert!(
        !r.stale_executed,
        "segment {} was reported failed (PiOffline) while the Pi was silent, yet the Pi \
         executed it when it came back (acks seen: {:?})",
        r.stale_id, r.stale_acks
    );
}
