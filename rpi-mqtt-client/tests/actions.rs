//! Instant actions (protocol version 3) through a real mosquitto to the real binary: a stop
//! halts at once (the state after it is published at once, not at the next tick), drops the
//! running and the queued segments (`Rejected(Cancelled)` each, before the ActionAck), and a
//! repeated stop is answered from memory; `resume` after `pause` finishes the same segment.

mod support;

use std::time::{Duration, Instant};

use common::{AckOutcome, Action, ActionKind, ActionOutcome, EntityFlags, Presence};
use common::{RejectReason, Target};
use support::*;
use testkit::Broker;

const T: Duration = Duration::from_secs(5);

fn action(id: u32, target: Target, kind: ActionKind) -> Action {
    Action {
        action_id: id,
        epoch: 0,
        target,
        action: kind,
        segment_id: 0,
    }
}

#[test]
fn stop_halts_at_once_cancels_everything_and_is_executed_once() {
    let broker = Broker::start();
    let probe = watch(&broker, "probe-stop", "stop-pi");
    // A slow state tick, so a state report right after the action can only be the immediate one.
    let _pi = spawn(&broker, "stop-pi", &["--state-interval", "2s"]);
    wait_status(&probe, T, Presence::Online);

    // Entity 1 drives a 100 m segment with two more queued.
    send_segment(
        &probe,
        "stop-pi",
        &segment(1, 11, (0, 0), (100_000, 0), 1000, 1000),
    );
    send_segment(
        &probe,
        "stop-pi",
        &segment(1, 12, (0, 0), (1000, 0), 1000, 1000),
    );
    send_segment(
        &probe,
        "stop-pi",
        &segment(1, 13, (0, 0), (1000, 0), 1000, 1000),
    );
    wait_ack(&probe, T, 1, 13, AckOutcome::Accepted);
    std::thread::sleep(Duration::from_millis(300));
    probe.drain();

    let stop = action(7, Target::Entity(1), ActionKind::Stop);
    let sent = Instant::now();
    send_action(&probe, "stop-pi", &stop);
    let seen = probe.collect_for(Duration::from_millis(1500));
    let halted = seen
        .iter()
        .find(|s| as_state(s).is_some_and(|r| r.entity_id == 1 && r.vx == 0))
        .expect("a halted state report after the stop");
    let latency = halted.at.saturating_duration_since(sent);
    let r = as_state(halted).unwrap();
    assert_eq!((r.vx, r.vy, r.segment_id), (0, 0, 0), "{r:?}");
    assert_eq!(r.flags, EntityFlags::STOPPED);
    assert!(r.x > 0, "it had driven before it stopped: {r:?}");
    assert!(
        latency < Duration::from_millis(500),
        "the state after a stop is published at once, not at the 2 s tick: {latency:?}"
    );

    // The three segments are cancelled, each acked before the ActionAck.
    let mut order = Vec::new();
    let ack = seen
        .iter()
        .find(|s| {
            if let Some(a) = as_ack(s) {
                order.push((a.entity_id, a.segment_id, a.outcome));
            }
            as_action_ack(s).is_some()
        })
        .expect("the ActionAck");
    let cancelled = AckOutcome::Rejected(RejectReason::Cancelled);
    assert_eq!(
        order,
        vec![(1, 11, cancelled), (1, 12, cancelled), (1, 13, cancelled)]
    );
    let a = as_action_ack(ack).unwrap();
    assert_eq!(
        (a.action_id, a.outcome, a.cancelled, a.repeat),
        (7, ActionOutcome::Done, 3, false)
    );
    assert_eq!(ack.payload[0] >> 4, 3, "acks are version 3");

    // The same stop again: answered from memory, nothing cancelled again.
    send_action(&probe, "stop-pi", &stop);
    let mut more_acks = 0;
    let again = probe
        .wait_for(T, |s| {
            more_acks += usize::from(as_ack(s).is_some());
            as_action_ack(s).is_some()
        })
        .expect("the repeated ActionAck");
    let a = as_action_ack(&again).unwrap();
    assert_eq!(
        (a.action_id, a.outcome, a.cancelled, a.repeat),
        (7, ActionOutcome::Done, 3, true)
    );
    assert_eq!(more_acks, 0, "no segment ack for a repeat");
}

#[test]
fn resume_after_pause_finishes_the_same_segment() {
    let broker = Broker::start();
    let probe = watch(&broker, "probe-pause", "pause-pi");
    let _pi = spawn(&broker, "pause-pi", &[]);
    wait_status(&probe, T, Presence::Online);

    // Entity 2 stands at (1000, 0): 600 mm along +y at 1 m/s.
    send_segment(
        &probe,
        "pause-pi",
        &segment(2, 21, (1000, 0), (1000, 600), 1000, 1000),
    );
    wait_ack(&probe, T, 2, 21, AckOutcome::Accepted);
    std::thread::sleep(Duration::from_millis(200));
    send_action(
        &probe,
        "pause-pi",
        &action(1, Target::Entity(2), ActionKind::Pause),
    );
    let paused = probe
        .wait_for(T, |s| {
            as_state(s).is_some_and(|r| r.entity_id == 2 && r.flags == EntityFlags::PAUSED)
        })
        .map(|s| as_state(&s).unwrap())
        .expect("a paused state report");
    assert_eq!((paused.vx, paused.vy, paused.segment_id), (0, 0, 21));
    assert!(
        paused.progress > 0 && paused.progress < 10_000,
        "{paused:?}"
    );

    // Paused for longer than the segment takes: no progress, no completion.
    for s in probe.collect_for(Duration::from_millis(900)) {
        assert_ne!(as_ack(&s).map(|a| a.outcome), Some(AckOutcome::Completed));
        if let Some(r) = as_state(&s).filter(|r| r.entity_id == 2) {
            assert_eq!(
                (r.y, r.vy, r.segment_id),
                (paused.y, 0, 21),
                "moved while paused"
            );
        }
    }

    send_action(
        &probe,
        "pause-pi",
        &action(2, Target::Entity(2), ActionKind::Resume),
    );
    let mut driving = Vec::new();
    probe
        .wait_for(T, |s| {
            if let Some(r) = as_state(s).filter(|r| r.entity_id == 2 && r.segment_id == 21) {
                driving.push(r);
            }
            as_ack(s).is_some_and(|a| a.segment_id == 21 && a.outcome == AckOutcome::Completed)
        })
        .expect("segment 21 completed after resume");
    assert!(
        driving.iter().any(|r| r.vy > 0 && r.flags.is_empty()),
        "{driving:?}"
    );
    for r in &driving {
        assert!(
            r.progress >= paused.progress,
            "restarted instead of resumed: {r:?}"
        );
    }
}
