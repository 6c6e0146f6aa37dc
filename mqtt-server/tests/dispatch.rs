//! Segment dispatch through the library API, in-process, against a real mosquitto: a segment
//! reaches its entity, is acked (round trip reported) and completed; an unacknowledged one is
//! re-sent with the same id and then fails; undeliverable ones are refused at once; each Pi
//! gets segments in its own protocol version, with a deadline on its own clock from version 2.

mod support;

use std::time::Duration;

use common::{Heartbeat, Message, Point, StateReport, TopicKind};
use mqtt_server::{DispatchError, FailReason, SegmentOutcome, SegmentSpec};
use rumqttc::QoS;
use support::*;
use testkit::{Broker, Probe, wait_for};

fn online_with_entities(h: &mqtt_server::FleetHandle, id: &str, n: usize) {
    wait_for(Duration::from_secs(5), || {
        h.snapshot()?
            .pi(id)
            .filter(|p| p.online && p.entities.len() == n)
            .map(|_| ())
    })
    .unwrap_or_else(|| panic!("{id} not online with {n} entities: {:#?}", h.snapshot()));
}

#[test]
fn segment_reaches_its_entity_is_acked_and_completed() {
    let broker = Broker::start();
    let server = start_server(&config(&broker));
    let h = server.handle();
    let watch = Probe::connect(broker.port(), "watch", &["server/pi-1/segment"]);
    let _pi = start_pi(&broker, "pi-1", "1,2,3");
    online_with_entities(&h, "pi-1", 3);

    // Entity 2 starts at (1000, 0).
    let spec = SegmentSpec::line(2, Point::new(1000, 0), Point::new(1000, 400), 300, 500);
    let ticket = h.dispatch("pi-1", spec).expect("dispatched");
    assert_ne!(ticket.id, 0);

    let seen = watch
        .wait_for(Duration::from_secs(2), |s| s.topic == "server/pi-1/segment")
        .expect("segment published");
    let Ok(Message::Segment(seg)) = Message::decode(&seen.payload) else {
        panic!("not a segment: {:?}", seen.payload);
    };
    assert_eq!((seg.segment_id, seg.entity_id), (ticket.id, 2));
    assert_eq!((seg.start, seg.end), (spec.start, spec.end));

    let first = ticket
        .outcomes
        .recv_timeout(Duration::from_secs(2))
        .expect("an outcome within 2 s");
    let SegmentOutcome::Accepted {
        round_trip,
        attempts,
    } = first
    else {
        panic!("expected Accepted, got {first:?}");
    };
    assert_eq!(attempts, 1);
    assert!(round_trip < Duration::from_secs(1), "{round_trip:?}");
    eprintln!("segment round trip (sent -> Accepted): {round_trip:?}");

    // The entity drives it: its state reports name the segment.
    wait_for(Duration::from_secs(2), || {
        let s = h.snapshot()?;
        let e = s.pi("pi-1")?.entities.iter().find(|e| e.id == 2)?.clone();
        (e.motion.segment_id == ticket.id && e.motion.progress > 0).then_some(())
    })
    .expect("entity 2 reports the segment in progress");

    let done = ticket
        .wait_final(Duration::from_secs(5))
        .expect("final outcome");
    assert!(matches!(done, SegmentOutcome::Completed { .. }), "{done:?}");
    let s = wait_for(Duration::from_secs(1), || {
        let s = h.snapshot()?;
        let e = s.pi("pi-1")?.entities.iter().find(|e| e.id == 2)?.clone();
        (e.motion.segment_id == 0).then_some(s)
    })
    .expect("entity idle after the segment");
    let e = s
        .pi("pi-1")
        .unwrap()
        .entities
        .iter()
        .find(|e| e.id == 2)
        .unwrap();
    let at = e.motion;
    assert!((at.x - 1000).abs() <= 2 && (at.y - 400).abs() <= 2, "{e:?}");
    let c = &s.counters;
    assert_eq!(
        (c.segments_sent, c.segments_acked, c.segments_completed),
        (1, 1, 1)
    );
    assert_eq!((c.segments_retried, c.segments_failed), (0, 0));
    assert_eq!(s.rtt.count, 1);
    assert_eq!(s.rtt.last_us, Some(round_trip.as_micros() as u64));
    assert!(s.rtt.p50_us.is_some() && s.rtt.p99_us.is_some());
    let last = server.shutdown();
    assert_eq!(last.counters.segments_completed, 1);
}

/// A "Pi" made of a probe: it heartbeats and reports one entity but never acks.
fn mute_pi(broker: &Broker, id: &str) -> Probe {
    mute_pi_speaking(broker, id, common::wire::VERSION, 0)
}

/// A mute Pi that speaks protocol `version` and whose clock is `behind_ms` behind.
fn mute_pi_speaking(broker: &Broker, id: &str, version: u8, behind_ms: u64) -> Probe {
    let seg_topic = format!("server/{id}/segment");
    let p = Probe::connect(broker.port(), id, &[seg_topic.as_str()]);
    let hb = Message::Heartbeat(Heartbeat {
        seq: 1,
        timestamp_ms: now_ms() - behind_ms,
    });
    let state = Message::State(StateReport::at_rest(
        1,
        now_ms() - behind_ms,
        Point::new(0, 0),
        0,
    ));
    let cid = common::ClientId::new(id).unwrap();
    p.publish(
        &cid.topic(TopicKind::Heartbeat),
        hb.encode_as(version).unwrap().as_slice(),
        QoS::AtMostOnce,
        false,
    );
    p.publish(
        &cid.topic(TopicKind::State),
        state.encode_as(version).unwrap().as_slice(),
        QoS::AtMostOnce,
        false,
    );
    p
}

#[test]
fn unacknowledged_segment_is_resent_then_fails() {
    let broker = Broker::start();
    let mut cfg = config(&broker);
    cfg.heartbeat_timeout = Duration::from_secs(30);
    cfg.ack_timeout = Duration::from_millis(200);
    cfg.segment_retries = 2;
    let server = start_server(&cfg);
    let h = server.handle();
    let pi = mute_pi(&broker, "mute");
    online_with_entities(&h, "mute", 1);

    let ticket = h
        .dispatch(
            "mute",
            SegmentSpec::line(1, Point::new(0, 0), Point::new(10, 0), 100, 100),
        )
        .unwrap();
    let fin = ticket
        .wait_final(Duration::from_secs(3))
        .expect("fails within 3 s");
    assert_eq!(
        fin,
        SegmentOutcome::Failed(FailReason::NoAck { attempts: 3 })
    );
    let copies: Vec<u32> = pi
        .collect_for(Duration::from_millis(300))
        .iter()
        .filter_map(|s| match Message::decode(&s.payload) {
            Ok(Message::Segment(seg)) => Some(seg.segment_id),
            _ => None,
        })
        .collect();
    assert_eq!(
        copies,
        vec![ticket.id; 3],
        "one send and two re-sends, same id"
    );
    let c = h.snapshot().unwrap().counters;
    assert_eq!(
        (c.segments_sent, c.segments_retried, c.segments_failed),
        (1, 2, 1)
    );
}

#[test]
fn undeliverable_segments_are_refused_at_once() {
    let broker = Broker::start();
    let server = start_server(&config(&broker));
    let h = server.handle();
    let spec = |e| SegmentSpec::line(e, Point::new(0, 0), Point::new(100, 0), 300, 500);
    assert_eq!(
        h.dispatch("nobody", spec(1)).unwrap_err(),
        DispatchError::UnknownPi
    );
    let mut pi = start_pi(&broker, "pi-2", "1,2");
    online_with_entities(&h, "pi-2", 2);
    assert_eq!(
        h.dispatch("pi-2", spec(9)).unwrap_err(),
        DispatchError::UnknownEntity
    );
    // A long segment in progress when its Pi dies: the will says the connection is gone,
    // not that the vehicle stopped, so it is stranded, not failed...
    let long = SegmentSpec::line(1, Point::new(0, 0), Point::new(0, 50_000), 300, 300);
    let ticket = h.dispatch("pi-2", long).unwrap();
    assert!(matches!(
        ticket.outcomes.recv_timeout(Duration::from_secs(2)),
        Ok(SegmentOutcome::Accepted { .. })
    ));
    pi.kill9();
    wait_for(Duration::from_secs(3), || {
        (!h.snapshot()?.pi("pi-2")?.online).then_some(())
    })
    .expect("offline after the will");
    assert_eq!(
        h.dispatch("pi-2", spec(1)).unwrap_err(),
        DispatchError::PiOffline
    );
    assert_eq!(ticket.wait_final(Duration::from_secs(1)), None);
    // ...until the Pi comes back (a new process) without it: its entity reports idle.
    let back = std::time::Instant::now();
    let _pi = start_pi(&broker, "pi-2", "1,2");
    assert_eq!(
        ticket.wait_final(Duration::from_secs(3)),
        Some(SegmentOutcome::Failed(FailReason::PiOffline))
    );
    let settled = back.elapsed();
    eprintln!("stranded segment settled {settled:?} after the Pi came back");
    let c = server.shutdown().counters;
    assert_eq!(c.dispatch_refused, 3);
    assert_eq!(c.segments_failed, 1);
}

/// During a rollout the fleet mixes versions: a Pi that heartbeats in version 1 gets version
/// 1 segments (34 bytes, no deadline); a version 2 Pi gets a deadline on its own clock (here an
/// hour behind the server's) at the moment the server will give up re-sending.
#[test]
fn segments_follow_each_pis_protocol_version_and_clock() {
    const HOUR: u64 = 3_600_000;
    let broker = Broker::start();
    let mut cfg = config(&broker);
    cfg.heartbeat_timeout = Duration::from_secs(30);
    cfg.ack_timeout = Duration::from_millis(500);
    cfg.segment_retries = 3;
    let ttl = 2000; // 500 ms x (3 retries + 1)
    let server = start_server(&cfg);
    let h = server.handle();
    let old = mute_pi_speaking(&broker, "old", 1, HOUR);
    let new = mute_pi_speaking(&broker, "new", 2, HOUR);
    online_with_entities(&h, "old", 1);
    online_with_entities(&h, "new", 1);

    let line = SegmentSpec::line(1, Point::new(0, 0), Point::new(10, 0), 100, 100);
    let sent_at = now_ms();
    let t_old = h.dispatch("old", line).unwrap();
    let t_new = h.dispatch("new", line).unwrap();
    let got = |p: &Probe, id: u32| {
        p.wait_for(Duration::from_secs(2), |s| {
            matches!(Message::decode(&s.payload), Ok(Message::Segment(seg)) if seg.segment_id == id)
        })
        .expect("segment delivered")
        .payload
    };
    let v1 = got(&old, t_old.id);
    assert_eq!((v1[0] >> 4, v1.len()), (1, 34), "version 1 to the old Pi");
    let v2 = got(&new, t_new.id);
    assert_eq!((v2[0] >> 4, v2.len()), (2, 42), "version 2 to the new Pi");
    let Ok(Message::Segment(seg)) = Message::decode(&v2) else {
        unreachable!()
    };
    // On the Pi's clock (an hour behind): sent_at - 1 h + ttl, a little earlier (the heartbeat's
    // delay makes the server over-estimate the offset), never later.
    let expected = sent_at - HOUR + ttl;
    assert!(
        seg.deadline_ms <= expected + 50 && seg.deadline_ms + 250 >= expected,
        "deadline {} vs expected about {expected} (diff {} ms)",
        seg.deadline_ms,
        seg.deadline_ms as i64 - expected as i64
    );
    let c = h.snapshot().unwrap().counters;
    assert_eq!(c.segments_without_deadline, 1, "only the old Pi's");
    // The new Pi's segment fails only after its deadline and the grace (2 s + 0.5 s).
    let fin = t_new.wait_final(Duration::from_secs(4)).expect("final");
    assert_eq!(
        fin,
        SegmentOutcome::Failed(FailReason::NoAck { attempts: 4 })
    );
    let failed_after = now_ms() - sent_at;
    assert!(
        failed_after >= ttl + 500,
        "reported failed {failed_after} ms after sending, before deadline + grace"
    );
}
