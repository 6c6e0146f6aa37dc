//! Silent network loss of a Pi: SIGSTOP freezes `rpi-client` with its TCP connection open
//! (no FIN, no will), exactly what a Pi whose link silently died looks like to the server.
//! The server must mark it offline on heartbeat timeout and fail what it had sent it; after
//! SIGCONT the Pi is online again, and a segment the server gave up on while the Pi was silent
//! must not be executed (it is no longer the server's intent): the broker had already written
//! it into the frozen Pi's socket, and the Pi refuses it on waking because its deadline
//! (protocol version 2) has passed. A segment whose deadline has not passed when the Pi wakes
//! is taken and executed, and the server, which had not given up on it, reports it accepted:
//! a segment is executed if and only if the server did not report it failed.
//!
//! The server runs in-process here (its library API dispatches a segment at the exact moment
//! the test wants and reports each segment's outcome); the Pi is the real binary.

use std::time::{Duration, Instant};

use common::{AckOutcome, Point};
use fleet_chaos::{Watch, ms, report, spawn_pi};
use mqtt_server::{
    ACK_GRACE, FailReason, OfflineReason, SegmentOutcome, SegmentSpec, Server, ServerConfig,
};
use testkit::{Broker, wait_for};

const HEARTBEAT_TIMEOUT: Duration = Duration::from_millis(1500);

fn server(broker: &Broker, case: &Case) -> Server {
    let mut cfg = ServerConfig {
        ack_timeout: case.ack_timeout,
        segment_retries: case.retries,
        client_id: format!("server-{}", broker.port()),
        segment_interval: Duration::ZERO,
        status_interval: Duration::ZERO,
        heartbeat_timeout: HEARTBEAT_TIMEOUT,
        http_listen: None,
        state_dir: None,
        ..ServerConfig::default()
    };
    cfg.apply("broker", &broker.addr()).unwrap();
    let server = Server::start(&cfg).expect("server starts");
    let h = server.handle();
    // Connected, subscribed and leading (alone: about 1.5 s after connecting).
    h.wait_leading(Duration::from_secs(10))
        .expect("server leading");
    server
}

/// A long straight line: minutes of driving at 100 mm/s, so it is still running at the end.
fn long_leg(entity: u32, y: i32) -> SegmentSpec {
    SegmentSpec::line(entity, Point::new(0, y), Point::new(100_000, y), 100, 100)
}

/// One scenario.
struct Case {
    tag: &'static str,
    /// How long the Pi stays frozen (ignored when `broker_drops`: then until the will).
    silence: Duration,
    /// The Pi's MQTT keep-alive: the broker drops a silent client after 1.5x that.
    keep_alive: &'static str,
    broker_drops: bool,
    /// The server's re-send period and count: a segment lives `ack_timeout x (retries + 1)`.
    ack_timeout: Duration,
    retries: u32,
}

impl Case {
    fn ttl(&self) -> Duration {
        self.ack_timeout * (self.retries + 1)
    }
}

/// What happened in one run.
struct Silent {
    detect: Duration,
    recovery: Duration,
    /// The segment dispatched while the Pi was silent, and whether the Pi executed it.
    stale_id: u32,
    stale_executed: bool,
    stale_acks: Vec<AckOutcome>,
    /// What the server reported for it while the Pi was frozen, and after it woke.
    stale_before_thaw: Vec<SegmentOutcome>,
    stale_after_thaw: Vec<SegmentOutcome>,
    /// SIGSTOP -> the broker published the will (when waited for).
    will_after: Option<Duration>,
}

/// Freezes the Pi, dispatches a segment into the silence, and thaws it.
fn freeze_and_thaw(case: &Case) -> Silent {
    let (tag, silence, keep_alive, broker_drops) =
        (case.tag, case.silence, case.keep_alive, case.broker_drops);
    let broker = Broker::start();
    let watch = Watch::start(broker.port(), &format!("watch-{tag}"));
    let srv = server(&broker, case);
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
    // The accepted one is the Pi's: stranded, not failed (the Pi keeps driving it).
    assert_eq!(running.wait_final(Duration::from_millis(500)), None);

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
    // What the server said about the stale segment while the Pi was frozen.
    let stale_before_thaw: Vec<SegmentOutcome> = stale.outcomes.try_iter().collect();
    let resumed = Instant::now();
    pi.signal("CONT");
    let back = wait_for(Duration::from_secs(10), || {
        h.snapshot()?.pi(&id)?.online.then(Instant::now)
    })
    .expect("the Pi is online again after SIGCONT");
    let recovery = back.duration_since(resumed);

    // Let whatever was waiting for the Pi arrive and run for a while.
    std::thread::sleep(Duration::from_secs(2));
    let stale_after_thaw: Vec<SegmentOutcome> = stale.outcomes.try_iter().collect();
    // Still driving the long leg it had accepted before the silence: never reported failed.
    let running_outcomes: Vec<SegmentOutcome> = running.outcomes.try_iter().collect();
    assert!(running_outcomes.is_empty(), "{running_outcomes:?}");
    assert!(
        watch.with(|r| r
            .states_between(&id, 1, resumed, Instant::now())
            .iter()
            .any(|x| x.segment_id == running.id)),
        "the running leg goes on after the silence"
    );
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
        stale_before_thaw,
        stale_after_thaw,
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
            (
                "stale_refused",
                r.stale_acks
                    .iter()
                    .filter(|a| **a == AckOutcome::Rejected(common::RejectReason::Expired))
                    .count() as u64,
            ),
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

/// The server gave up on the stale segment (its deadline, plus grace, passed while the Pi was
/// frozen): it must have reported it failed before the Pi woke, and the Pi, finding it in its
/// socket past the deadline, refuses it (`Expired`) instead of driving it. When the broker
/// dropped the connection meanwhile, the Pi may instead never get it (its client notices the
/// dead connection before reading what was buffered, and the clean session's queue is gone):
/// then there is no ack at all, `delivered` is false.
fn assert_refused(r: &Silent, delivered: bool) {
    assert_eq!(
        r.stale_before_thaw,
        vec![SegmentOutcome::Failed(FailReason::PiOffline)],
        "the segment sent into the silence is reported failed while the Pi is frozen"
    );
    assert!(
        !r.stale_executed,
        "segment {} was reported failed (PiOffline) while the Pi was silent, yet the Pi \
         executed it when it came back (acks seen: {:?})",
        r.stale_id, r.stale_acks
    );
    let expired = AckOutcome::Rejected(common::RejectReason::Expired);
    if delivered {
        assert!(
            r.stale_acks.contains(&expired),
            "the Pi should have refused the late segment as Expired: {:?}",
            r.stale_acks
        );
    } else {
        assert!(
            r.stale_acks.iter().all(|a| *a == expired),
            "{:?}",
            r.stale_acks
        );
    }
    assert!(
        !r.stale_acks.contains(&AckOutcome::Accepted),
        "{:?}",
        r.stale_acks
    );
    assert!(r.stale_after_thaw.is_empty(), "{:?}", r.stale_after_thaw);
}

/// A segment lives 2 s (1 s x (1 retry + 1)): gone before the Pi thaws in both cases below.
const SHORT_LIVED: (Duration, u32) = (Duration::from_secs(1), 1);

/// Frozen 3 s: shorter than the broker's keep-alive timeout, so the Pi's connection survives
/// and whatever the broker wrote to it meanwhile is waiting in the socket. The stale segment's
/// deadline (2 s) passed during the silence: refused on waking.
#[test]
fn frozen_pi_within_keep_alive() {
    let case = Case {
        tag: "short",
        silence: Duration::from_secs(3),
        keep_alive: "5s",
        broker_drops: false,
        ack_timeout: SHORT_LIVED.0,
        retries: SHORT_LIVED.1,
    };
    assert!(case.ttl() + ACK_GRACE < case.silence);
    let r = freeze_and_thaw(&case);
    check("silent_pi_3s", &r);
    assert_refused(&r, true);
}

/// Frozen until the broker gives up on the connection (keep-alive 2 s: mosquitto should drop
/// it after 3 s; 2.0.11 takes longer) and publishes the will; on SIGCONT the Pi reads what was
/// already in its socket (the stale segment, if it reads it: refused, past its deadline),
/// finds the connection closed, and reconnects.
#[test]
fn frozen_pi_beyond_keep_alive() {
    let r = freeze_and_thaw(&Case {
        tag: "long",
        silence: Duration::ZERO,
        keep_alive: "2s",
        broker_drops: true,
        ack_timeout: SHORT_LIVED.0,
        retries: SHORT_LIVED.1,
    });
    check("silent_pi_5s_broker_dropped", &r);
    assert_refused(&r, false);
}

/// Frozen 2.5 s with segments living 4 s (the server's defaults): the server marks the Pi
/// offline but has not given up on the segment when the Pi wakes, so the Pi takes it and the
/// server reports it accepted, not failed. Executed, and the server agrees.
#[test]
fn frozen_pi_back_before_the_deadline_takes_the_segment() {
    let case = Case {
        tag: "back",
        silence: Duration::from_millis(2500),
        keep_alive: "5s",
        broker_drops: false,
        ack_timeout: Duration::from_secs(1),
        retries: 3,
    };
    assert!(case.silence + Duration::from_millis(500) < case.ttl());
    let r = freeze_and_thaw(&case);
    check("silent_pi_back_in_time", &r);
    assert!(
        r.stale_before_thaw.is_empty(),
        "nothing reported while the Pi could still take it: {:?}",
        r.stale_before_thaw
    );
    assert!(
        matches!(
            r.stale_after_thaw.first(),
            Some(SegmentOutcome::Accepted { .. })
        ),
        "{:?}",
        r.stale_after_thaw
    );
    assert!(
        !r.stale_after_thaw
            .iter()
            .any(|o| matches!(o, SegmentOutcome::Failed(_))),
        "{:?}",
        r.stale_after_thaw
    );
    assert!(
        r.stale_executed,
        "the Pi should drive it: {:?}",
        r.stale_acks
    );
}
