//! Segments through a real mosquitto to the real binary: acked, driven to the end by the
//! simulator, executed once when delivered twice; unknown entities and full queues rejected;
//! garbage on the segment topic logged (rate-limited) without harm.

mod support;

use std::time::Duration;

use common::{AckOutcome, Presence, RejectReason};
use mqtt_link::QoS;
use support::*;
use testkit::Broker;

const ACCEPTED: AckOutcome = AckOutcome::Accepted;
const COMPLETED: AckOutcome = AckOutcome::Completed;

#[test]
fn segment_is_acked_driven_to_its_end_and_executed_once() {
    let broker = Broker::start();
    let probe = watch(&broker, "probe-seg", "seg-pi");
    let mut pi = spawn(&broker, "seg-pi", &[]);
    wait_status(&probe, Duration::from_secs(5), Presence::Online);

    // Entity 2 stands at (1000, 0); drive it 600 mm along +y, speeding up.
    let seg = segment(2, 77, (1000, 0), (1000, 600), 400, 1200);
    send_segment(&probe, "seg-pi", &seg);
    send_segment(&probe, "seg-pi", &seg); // a duplicate delivery
    let mut acks = Vec::new();
    let mut states = Vec::new();
    let mut completed = false;
    for s in probe.collect_for(Duration::from_secs(4)) {
        if let Some(a) = as_ack(&s) {
            if a.outcome == COMPLETED {
                completed = true;
            }
            acks.push(a.outcome);
        }
        if let Some(r) = as_state(&s) {
            if r.entity_id == 2 {
                states.push((r, completed));
            }
        }
    }
    // Accepted for each delivery, Completed once.
    assert_eq!(acks, vec![ACCEPTED, ACCEPTED, COMPLETED], "acks: {acks:?}");
    let driving: Vec<_> = states.iter().filter(|(r, _)| r.segment_id == 77).collect();
    assert!(
        driving.len() >= 3,
        "state reports while driving: {driving:?}"
    );
    for w in driving.windows(2) {
        assert!(
            w[1].0.progress >= w[0].0.progress,
            "progress went back: restarted?"
        );
        assert!(w[1].0.y >= w[0].0.y);
    }
    for (r, _) in &driving {
        assert_eq!((r.x, r.angle, r.vx), (1000, 90_000, 0));
        assert!((400..=1200).contains(&r.vy), "speed {r:?}");
    }
    let (last, after_completion) = states.last().copied().expect("state reports");
    assert!(after_completion);
    assert_eq!((last.x, last.y, last.vx, last.vy), (1000, 600, 0, 0));
    assert_eq!((last.segment_id, last.progress, last.angle), (0, 0, 90_000));

    // Delivered again after it completed: answered Completed, not driven again.
    let back = segment(2, 78, (1000, 600), (1000, 500), 500, 500);
    send_segment(&probe, "seg-pi", &back);
    wait_ack(&probe, Duration::from_secs(3), 2, 78, COMPLETED);
    send_segment(&probe, "seg-pi", &seg);
    wait_ack(&probe, Duration::from_secs(3), 2, 77, COMPLETED);
    let later = probe.collect_for(Duration::from_millis(800));
    let mut seen_state = false;
    for s in &later {
        if let Some(r) = as_state(s).filter(|r| r.entity_id == 2) {
            seen_state = true;
            assert_eq!(
                (r.segment_id, r.x, r.y),
                (0, 1000, 500),
                "segment 77 ran again"
            );
        }
        if let Some(a) = as_ack(s) {
            panic!("unexpected ack {a:?}");
        }
    }
    assert!(seen_state);
    assert!(pi.wait_exit(Duration::ZERO).is_none(), "still running");
}

#[test]
fn unknown_entity_is_rejected_and_logged() {
    let broker = Broker::start();
    let probe = watch(&broker, "probe-unknown", "unk-pi");
    let pi = spawn(&broker, "unk-pi", &["--entities", "1,2"]);
    wait_status(&probe, Duration::from_secs(5), Presence::Online);
    send_segment(&probe, "unk-pi", &segment(3, 9, (0, 0), (10, 0), 100, 100));
    wait_ack(
        &probe,
        Duration::from_secs(3),
        3,
        9,
        AckOutcome::Rejected(RejectReason::UnknownEntity),
    );
    // Other reasons for good measure: unsupported type, invalid speeds.
    let mut odd = segment(1, 10, (0, 0), (10, 0), 100, 100);
    odd.segment_type = 4;
    send_segment(&probe, "unk-pi", &odd);
    wait_ack(
        &probe,
        Duration::from_secs(3),
        1,
        10,
        AckOutcome::Rejected(RejectReason::UnsupportedType),
    );
    send_segment(&probe, "unk-pi", &segment(1, 11, (0, 0), (10, 0), 0, 0));
    wait_ack(
        &probe,
        Duration::from_secs(3),
        1,
        11,
        AckOutcome::Rejected(RejectReason::InvalidSegment),
    );
    let log = testkit::wait_for(Duration::from_secs(2), || {
        let l = pi.stderr();
        l.contains("segment 9 for entity 3 rejected: UnknownEntity")
            .then_some(l)
    });
    assert!(log.is_some(), "no log line:\n{}", pi.stderr());
}

#[test]
fn full_queue_rejects_with_queue_full() {
    let broker = Broker::start();
    let probe = watch(&broker, "probe-queue", "queue-pi");
    let _pi = spawn(&broker, "queue-pi", &["--queue-depth", "2"]);
    wait_status(&probe, Duration::from_secs(5), Presence::Online);
    // Long, slow segments: the first runs, two wait, the fourth does not fit.
    for id in 1..=4 {
        send_segment(
            &probe,
            "queue-pi",
            &segment(1, id, (0, 0), (100_000, 0), 50, 50),
        );
    }
    let mut acks = Vec::new();
    for s in probe.collect_for(Duration::from_secs(2)) {
        if let Some(a) = as_ack(&s) {
            acks.push((a.segment_id, a.outcome));
        }
    }
    assert_eq!(
        acks,
        vec![
            (1, ACCEPTED),
            (2, ACCEPTED),
            (3, ACCEPTED),
            (4, AckOutcome::Rejected(RejectReason::QueueFull)),
        ]
    );
    // Other entities have queues of their own.
    send_segment(&probe, "queue-pi", &segment(2, 4, (0, 0), (10, 0), 50, 50));
    wait_ack(&probe, Duration::from_secs(3), 2, 4, ACCEPTED);
}

#[test]
fn garbage_on_the_segment_topic_is_logged_once_and_harmless() {
    let broker = Broker::start();
    let probe = watch(&broker, "probe-garbage", "junk-pi");
    let mut pi = spawn(&broker, "junk-pi", &[]);
    wait_status(&probe, Duration::from_secs(5), Presence::Online);
    let topic = "server/junk-pi/segment";
    let heartbeat = common::Heartbeat {
        seq: 1,
        timestamp_ms: 2,
    }
    .encode()
    .to_vec();
    let mut bad_id = segment(1, 1, (0, 0), (1, 0), 1, 1).encode().to_vec();
    bad_id[5..9].copy_from_slice(&[0, 0, 0, 0]); // segment_id 0
    let payloads: Vec<Vec<u8>> = vec![
        vec![],
        b"hello".to_vec(),
        vec![0x23; 34],
        vec![0x13; 35],
        vec![0xff; 2000],
        heartbeat,
        bad_id,
    ];
    for i in 0..50 {
        probe.publish(
            topic,
            &payloads[i % payloads.len()],
            QoS::AtLeastOnce,
            false,
        );
    }
    // It keeps heartbeating with no gap, and still takes segments.
    let beats: Vec<u32> = heartbeat_seqs(&probe, Duration::from_millis(1600));
    assert!(beats.len() >= 2, "heartbeats after the garbage: {beats:?}");
    assert!(beats.windows(2).all(|w| w[1] == w[0] + 1), "{beats:?}");
    send_segment(&probe, "junk-pi", &segment(1, 3, (0, 0), (10, 0), 100, 100));
    wait_ack(&probe, Duration::from_secs(3), 1, 3, ACCEPTED);
    assert!(pi.wait_exit(Duration::ZERO).is_none(), "it crashed");
    let log = pi.stderr();
    assert_eq!(
        count_lines(&log, "malformed segment"),
        1,
        "expected one rate-limited line for 50 bad payloads:\n{log}"
    );
}

/// Protocol version 2: a segment that arrives after its deadline (it sat in the broker or the
/// socket while the Pi or its link was frozen, and the server has given up on it) is refused
/// with `Expired` and never driven; one within its deadline is taken; a version 1 segment
/// (no deadline, from a server not upgraded yet) is still taken.
#[test]
fn late_segment_is_refused_and_never_driven() {
    let broker = Broker::start();
    let probe = watch(&broker, "probe-late", "late-pi");
    let mut pi = spawn(&broker, "late-pi", &[]);
    wait_status(&probe, Duration::from_secs(5), Presence::Online);
    let beat = probe
        .wait_for(Duration::from_secs(2), |s| as_heartbeat(s).is_some())
        .expect("a heartbeat");
    assert_eq!(beat.payload[0] >> 4, 3, "the Pi speaks version 3");

    let expired = AckOutcome::Rejected(RejectReason::Expired);
    let mut late = segment(1, 5, (0, 0), (300, 0), 300, 300);
    late.deadline_ms = now_ms() - 1000;
    send_segment(&probe, "late-pi", &late);
    // Delivered again: answered from memory, still refused.
    send_segment(&probe, "late-pi", &late);
    let mut on_time = segment(1, 6, (0, 0), (200, 0), 400, 400);
    on_time.deadline_ms = now_ms() + 10_000;
    send_segment(&probe, "late-pi", &on_time);
    let v1 = segment(1, 7, (200, 0), (400, 0), 400, 400);
    probe.publish(
        "server/late-pi/segment",
        common::Message::Segment(v1)
            .encode_as(1)
            .unwrap()
            .as_slice(),
        QoS::AtLeastOnce,
        false,
    );
    // Everything until segment 7 is done (about 1 s of driving).
    let mut seen = Vec::new();
    let end = std::time::Instant::now() + Duration::from_secs(6);
    while let Some(s) = probe.next(end.saturating_duration_since(std::time::Instant::now())) {
        let last = as_ack(&s).is_some_and(|a| a.segment_id == 7 && a.outcome == COMPLETED);
        seen.push(s);
        if last {
            break;
        }
    }
    assert!(
        seen.iter()
            .filter_map(as_state)
            .all(|r| !(r.entity_id == 1 && r.segment_id == 5)),
        "the late segment was driven"
    );
    assert!(
        seen.iter()
            .filter_map(as_state)
            .any(|r| r.entity_id == 1 && r.segment_id == 7),
        "the version 1 segment was not driven"
    );
    let outcomes: Vec<(u32, AckOutcome)> = seen
        .iter()
        .filter_map(as_ack)
        .map(|a| (a.segment_id, a.outcome))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            (5, expired),
            (5, expired),
            (6, ACCEPTED),
            (7, ACCEPTED),
            (6, COMPLETED),
            (7, COMPLETED)
        ]
    );
    assert!(pi.wait_exit(Duration::ZERO).is_none(), "it crashed");
    let log = pi.stderr();
    assert_eq!(
        count_lines(&log, "rejected: Expired (arrived"),
        1,
        "one line, the repeat is answered from memory without a log line:\n{log}"
    );
}

/// A retained segment (the server never retains one) would be delivered, and executed, again
/// on every connect of the Pi. It is dropped and counted instead, at every start; a live
/// segment afterwards is taken as usual.
#[test]
fn retained_segment_is_dropped_at_every_start() {
    let broker = Broker::start();
    let probe = watch(&broker, "probe-retained", "ret-pi");
    let stale = segment(1, 9, (0, 0), (300, 0), 300, 300);
    probe.publish(
        "server/ret-pi/segment",
        stale.encode().as_slice(),
        QoS::AtLeastOnce,
        true,
    );
    for start in 0..2 {
        let mut pi = spawn(&broker, "ret-pi", &[]);
        wait_status(&probe, Duration::from_secs(5), Presence::Online);
        let seen = probe.collect_for(Duration::from_millis(800));
        assert!(
            seen.iter().filter_map(as_ack).all(|a| a.segment_id != 9),
            "start {start}: the retained segment was answered: {:?}",
            seen.iter().filter_map(as_ack).collect::<Vec<_>>()
        );
        assert!(
            seen.iter()
                .filter_map(as_state)
                .all(|r| !(r.entity_id == 1 && r.segment_id == 9)),
            "start {start}: the retained segment was driven"
        );
        send_segment(&probe, "ret-pi", &segment(1, 10, (0, 0), (10, 0), 100, 100));
        wait_ack(&probe, Duration::from_secs(3), 1, 10, ACCEPTED);
        pi.signal("TERM");
        assert!(
            pi.wait_exit(Duration::from_secs(5)).is_some(),
            "it did not stop"
        );
        let log = pi.stderr();
        assert_eq!(
            count_lines(&log, "retained segment on server/ret-pi/segment"),
            1,
            "start {start}:\n{log}"
        );
        assert!(log.contains("(1 retained since start"), "{log}");
        wait_status(&probe, Duration::from_secs(5), Presence::Offline);
    }
}
