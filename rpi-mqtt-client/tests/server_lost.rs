//! Server presence (protocol version 3) and `server_lost_stop_after`: a probe plays the
//! server's `server/@status/{id}` (retained `Online`, then its Last Will `ConnectionLost`);
//! every vehicle halts (PAUSED, velocity 0, queue kept) 2 s after the will, stays halted when
//! the server comes back, and moves again only on a `resume` action.

mod support;

use std::time::{Duration, Instant};

use common::{Action, ActionKind, EntityFlags, Presence, ServerStatus, Target};
use mqtt_link::QoS;
use support::*;
use testkit::Broker;

const T: Duration = Duration::from_secs(5);

fn server_status(probe: &testkit::Probe, presence: Presence, session: u32) {
    let s = ServerStatus {
        presence,
        session,
        epoch: 0,
        timestamp_ms: now_ms(),
    };
    probe.publish(
        "server/@status/mqtt-server",
        s.encode().as_slice(),
        QoS::AtLeastOnce,
        true,
    );
}

#[test]
fn vehicles_halt_when_the_server_is_gone_and_wait_for_resume() {
    let broker = Broker::start();
    let probe = watch(&broker, "probe-lost", "lost-pi");
    server_status(&probe, Presence::Online, 1);
    let mut pi = spawn(
        &broker,
        "lost-pi",
        &["--entities", "1,2", "--server-lost-stop-after", "2s"],
    );
    wait_status(&probe, T, Presence::Online);
    send_segment(
        &probe,
        "lost-pi",
        &segment(1, 1, (0, 0), (100_000, 0), 500, 500),
    );
    send_segment(
        &probe,
        "lost-pi",
        &segment(2, 2, (1000, 0), (1000, 100_000), 500, 500),
    );
    send_segment(&probe, "lost-pi", &segment(2, 3, (0, 0), (10, 0), 500, 500));
    probe
        .wait_for(T, |s| {
            as_state(s).is_some_and(|r| r.entity_id == 2 && r.vy > 0)
        })
        .expect("entity 2 drives");

    // The server's will: both vehicles halt within 2.5 s, not before 2 s (-jitter).
    let will_at = Instant::now();
    server_status(&probe, Presence::ConnectionLost, 1);
    let mut halted_at = [None, None];
    probe.wait_for(Duration::from_secs(4), |s| {
        if let Some(r) = as_state(s) {
            let i = (r.entity_id - 1) as usize;
            let halted = r.vx == 0 && r.vy == 0 && r.flags == EntityFlags::PAUSED;
            if halted && halted_at[i].is_none() {
                halted_at[i] = Some(s.at.saturating_duration_since(will_at));
            }
            if !halted {
                assert!(halted_at[i].is_none(), "moved after it halted: {r:?}");
            }
        }
        halted_at.iter().all(Option::is_some)
    });
    for (i, at) in halted_at.iter().enumerate() {
        let at = at.unwrap_or_else(|| panic!("entity {} never halted", i + 1));
        assert!(
            at >= Duration::from_millis(1800) && at <= Duration::from_millis(2500),
            "entity {} halted {at:?} after the will",
            i + 1
        );
    }

    // A server is back: the vehicles stay halted, their segments kept.
    server_status(&probe, Presence::Online, 2);
    for s in probe.collect_for(Duration::from_millis(1200)) {
        if let Some(r) = as_state(&s) {
            assert_eq!((r.vx, r.vy, r.flags), (0, 0, EntityFlags::PAUSED), "{r:?}");
            assert_ne!(r.segment_id, 0, "the segment is kept: {r:?}");
        }
    }

    // Only resume moves them again.
    let resume = Action {
        action_id: 1,
        epoch: 0,
        target: Target::All,
        action: ActionKind::Resume,
        segment_id: 0,
    };
    send_action(&probe, "lost-pi", &resume);
    probe
        .wait_for(T, |s| {
            as_state(s).is_some_and(|r| r.entity_id == 1 && r.vx > 0 && r.flags.is_empty())
        })
        .expect("entity 1 drives again after resume");
    pi.terminate(T);
    let log = pi.stderr();
    assert_eq!(count_lines(&log, "every vehicle paused"), 1, "{log}");
    assert_eq!(count_lines(&log, "a server is back"), 1, "{log}");
}
