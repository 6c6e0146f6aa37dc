//! The dispatcher's unit tests: a [`TestFleet`] as the registry and a [`Recorder`] as the
//! broker, driven with explicit instants.

use super::*;
use crate::fleet::{FleetConfig, TestFleet};
use common::{Heartbeat, Message, Point, StateReport};
use crossbeam_channel::{Receiver, Sender};

/// A broker that records what it is given.
#[derive(Default)]
struct Recorder {
    down: bool,
    full: bool,
    sent: Vec<(String, Segment)>,
    raw: Vec<Vec<u8>>,
}

impl Publisher for Recorder {
    fn connected(&self) -> bool {
        !self.down
    }
    fn publish_retained(&mut self, _: &str, _: &[u8]) -> Result<(), String> {
        panic!("the dispatcher publishes nothing retained")
    }
    fn publish(&mut self, topic: &str, payload: &[u8]) -> Result<(), String> {
        if self.full {
            return Err("queue full".into());
        }
        let Ok(Message::Segment(s)) = Message::decode(payload) else {
            panic!("not a segment: {payload:?}");
        };
        self.sent.push((topic.to_owned(), s));
        self.raw.push(payload.to_vec());
        Ok(())
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The server's wall clock at `t0`, ms since the epoch.
const WALL: u64 = 1_764_000_000_000;

fn fleet_with(t0: Instant, pis: &[(&str, &[u32])]) -> TestFleet {
    let mut f = TestFleet::new(FleetConfig::new(ms(1500), 100, Duration::from_secs(600)));
    for (id, entities) in pis {
        f.on_heartbeat(
            t0,
            0,
            id,
            Heartbeat {
                seq: 1,
                timestamp_ms: 0,
            },
        );
        for e in *entities {
            f.on_state(t0, id, report(*e, 0));
        }
    }
    f
}

/// `Dispatcher::dispatch` as the registry thread calls it, at the server's wall clock [`WALL`].
fn order(
    d: &mut Dispatcher,
    now: Instant,
    f: &mut TestFleet,
    pi: &str,
    spec: SegmentSpec,
    notify: Option<Sender<SegmentOutcome>>,
    out: &mut Recorder,
) -> Result<u32, DispatchError> {
    let order = Order {
        client_id: pi.to_owned(),
        spec,
        notify,
    };
    d.dispatch(order, now, WALL, &f.fleet, &mut f.counters, out)
}

fn spec(entity: u32) -> SegmentSpec {
    SegmentSpec::line(entity, Point::new(0, 0), Point::new(1000, 0), 300, 500)
}

fn ack(entity_id: u32, segment_id: u32, outcome: AckOutcome) -> SegmentAck {
    SegmentAck {
        entity_id,
        segment_id,
        outcome,
    }
}

fn dispatcher() -> Dispatcher {
    Dispatcher::new(DispatchConfig::new(ms(1000), 2), 41)
}

#[test]
fn refuses_what_cannot_be_delivered() {
    let t0 = Instant::now();
    let mut f = fleet_with(t0, &[("a", &[1])]);
    let mut d = dispatcher();
    let mut out = Recorder::default();
    let go = |f: &mut TestFleet, d: &mut Dispatcher, out: &mut Recorder, pi: &str, e: u32| {
        order(d, t0, f, pi, spec(e), None, out)
    };
    assert_eq!(
        go(&mut f, &mut d, &mut out, "nope", 1),
        Err(DispatchError::UnknownPi)
    );
    assert_eq!(
        go(&mut f, &mut d, &mut out, "a", 2),
        Err(DispatchError::UnknownEntity)
    );
    out.down = true;
    assert_eq!(
        go(&mut f, &mut d, &mut out, "a", 1),
        Err(DispatchError::NotConnected)
    );
    out.down = false;
    f.tick(t0 + ms(2000));
    assert_eq!(
        go(&mut f, &mut d, &mut out, "a", 1),
        Err(DispatchError::PiOffline)
    );
    assert!(out.sent.is_empty());
    assert_eq!(f.counters().dispatch_refused, 4);
    assert_eq!(d.tracked(), 0);
}

#[test]
fn accepted_then_completed_with_round_trip() {
    let t0 = Instant::now();
    let mut f = fleet_with(t0, &[("a", &[1, 2])]);
    let mut d = dispatcher();
    let mut out = Recorder::default();
    let (tx, rx) = crossbeam_channel::bounded(4);
    let id = order(&mut d, t0, &mut f, "a", spec(2), Some(tx), &mut out).unwrap();
    assert_eq!(id, 41);
    assert_eq!(out.sent.len(), 1);
    assert_eq!(out.sent[0].0, "server/a/segment");
    assert_eq!(out.sent[0].1.segment_id, 41);
    assert_eq!(out.sent[0].1.entity_id, 2);
    let c = f.counters_mut();
    d.on_ack(t0 + ms(7), "a", ack(2, id, AckOutcome::Accepted), c);
    d.on_ack(t0 + ms(9), "a", ack(2, id, AckOutcome::Accepted), c); // duplicate
    assert_eq!(
        rx.try_recv(),
        Ok(SegmentOutcome::Accepted {
            round_trip: ms(7),
            attempts: 1
        })
    );
    assert!(rx.try_recv().is_err());
    d.on_ack(t0 + ms(3000), "a", ack(2, id, AckOutcome::Completed), c);
    assert_eq!(
        rx.try_recv(),
        Ok(SegmentOutcome::Completed { after: ms(3000) })
    );
    d.on_ack(t0 + ms(3001), "a", ack(2, id, AckOutcome::Completed), c);
    assert_eq!(c.segments_acked, 1);
    assert_eq!(c.segments_completed, 1);
    assert_eq!(c.acks_duplicate, 2);
    assert_eq!(c.rtt.last(), Some(ms(7)));
    // No retries after the ack, even long after.
    d.tick(t0 + ms(5000), c, &mut out);
    assert_eq!(out.sent.len(), 1);
    assert_eq!(d.in_flight(), 0);
    // Forgotten after the grace period; a late ack is then unknown.
    d.tick(t0 + ms(3000) + Duration::from_secs(10), c, &mut out);
    assert_eq!(d.tracked(), 0);
    d.on_ack(t0 + ms(20_000), "a", ack(2, id, AckOutcome::Completed), c);
    assert_eq!(c.acks_unknown, 1);
}

#[test]
fn retries_then_fails_without_ack() {
    let t0 = Instant::now();
    let mut f = fleet_with(t0, &[("a", &[1])]);
    let mut d = dispatcher(); // 2 retries, 1 s apart
    let mut out = Recorder::default();
    let (tx, rx) = crossbeam_channel::bounded(4);
    let id = order(&mut d, t0, &mut f, "a", spec(1), Some(tx), &mut out).unwrap();
    let c = f.counters_mut();
    d.tick(t0 + ms(999), c, &mut out);
    assert_eq!(out.sent.len(), 1);
    d.tick(t0 + ms(1000), c, &mut out);
    d.tick(t0 + ms(2000), c, &mut out);
    assert_eq!(out.sent.len(), 3);
    assert!(
        out.sent.iter().all(|(_, s)| s.segment_id == id),
        "same id re-sent"
    );
    assert!(rx.try_recv().is_err());
    d.tick(t0 + ms(3000), c, &mut out);
    assert_eq!(out.sent.len(), 3);
    assert_eq!(
        rx.try_recv(),
        Ok(SegmentOutcome::Failed(FailReason::NoAck { attempts: 3 }))
    );
    assert_eq!(
        (c.segments_sent, c.segments_retried, c.segments_failed),
        (1, 2, 1)
    );
    // A late Accepted after failure is counted, not a new outcome.
    d.on_ack(t0 + ms(3100), "a", ack(1, id, AckOutcome::Accepted), c);
    assert_eq!((c.late_outcomes, c.acks_duplicate), (1, 0));
    assert_eq!(c.segments_acked, 0);
}

#[test]
fn ack_on_a_retry_reports_attempts_and_publish_failures_are_retried() {
    let t0 = Instant::now();
    let mut f = fleet_with(t0, &[("a", &[1])]);
    let mut d = dispatcher();
    let mut out = Recorder {
        full: true,
        ..Default::default()
    };
    let (tx, rx) = crossbeam_channel::bounded(4);
    let id = order(&mut d, t0, &mut f, "a", spec(1), Some(tx), &mut out).unwrap();
    assert_eq!(f.counters().publish_failures, 1);
    out.full = false;
    let c = f.counters_mut();
    d.tick(t0 + ms(1000), c, &mut out);
    assert_eq!(out.sent.len(), 1);
    d.on_ack(t0 + ms(1010), "a", ack(1, id, AckOutcome::Accepted), c);
    assert_eq!(
        rx.try_recv(),
        Ok(SegmentOutcome::Accepted {
            round_trip: ms(1010),
            attempts: 2
        })
    );
}

#[test]
fn rejection_and_acks_from_the_wrong_pi() {
    let t0 = Instant::now();
    let mut f = fleet_with(t0, &[("a", &[1]), ("b", &[1])]);
    let mut d = dispatcher();
    let mut out = Recorder::default();
    let (tx, rx) = crossbeam_channel::bounded(4);
    let id = order(&mut d, t0, &mut f, "a", spec(1), Some(tx), &mut out).unwrap();
    let c = f.counters_mut();
    d.on_ack(t0, "b", ack(1, id, AckOutcome::Accepted), c);
    d.on_ack(t0, "a", ack(9, id, AckOutcome::Accepted), c);
    assert_eq!(c.acks_unknown, 2);
    assert!(rx.try_recv().is_err());
    d.on_ack(
        t0,
        "a",
        ack(1, id, AckOutcome::Rejected(RejectReason::QueueFull)),
        c,
    );
    assert_eq!(
        rx.try_recv(),
        Ok(SegmentOutcome::Rejected(RejectReason::QueueFull))
    );
    assert_eq!(c.segments_rejected, 1);
    assert_eq!(d.in_flight(), 0);
}

#[test]
fn pi_going_offline_strands_accepted_segments_and_fails_undeliverable_ones() {
    let t0 = Instant::now();
    let mut f = fleet_with(t0, &[("a", &[1, 2]), ("b", &[1])]);
    let mut d = dispatcher();
    let mut out = Recorder::default();
    let (tx, rx) = crossbeam_channel::unbounded();
    let a1 = order(&mut d, t0, &mut f, "a", spec(1), Some(tx.clone()), &mut out).unwrap();
    let a2 = order(&mut d, t0, &mut f, "a", spec(2), Some(tx.clone()), &mut out).unwrap();
    let b1 = order(&mut d, t0, &mut f, "b", spec(1), Some(tx), &mut out).unwrap();
    assert!(a1 != a2 && a2 != b1);
    let c = f.counters_mut();
    d.on_ack(t0, "a", ack(2, a2, AckOutcome::Accepted), c);
    let _ = rx.try_recv();
    d.on_pi_offline(t0 + ms(5), "a", c);
    let got: Vec<_> = rx.try_iter().collect();
    assert_eq!(
        got,
        vec![SegmentOutcome::Failed(FailReason::PiOffline)],
        "the unaccepted one (no deadline: version 1) fails; the accepted one is the Pi's"
    );
    assert_eq!(d.in_flight(), 2);
    // The Pi reports Completed when it is back: the outcome is reported as it happened.
    d.on_ack(t0 + ms(9000), "a", ack(2, a2, AckOutcome::Completed), c);
    assert!(matches!(
        rx.try_recv(),
        Ok(SegmentOutcome::Completed { .. })
    ));
    assert_eq!(c.late_outcomes, 0);
    d.shutdown(t0 + ms(9001), c);
    assert_eq!(d.in_flight(), 0);
    assert_eq!(c.segments_failed, 2);
}

/// Entity `entity_id` standing at the origin, reporting `segment_id` (0: idle).
fn report(entity_id: u32, segment_id: u32) -> StateReport {
    StateReport {
        segment_id,
        ..StateReport::at_rest(entity_id, 0, Point::new(0, 0), 0)
    }
}

/// Pi "a" with entity 1 has accepted a segment sent at `t0`.
fn accepted_by_a(t0: Instant) -> (TestFleet, Dispatcher, Receiver<SegmentOutcome>, u32) {
    let mut f = fleet_with(t0, &[("a", &[1])]);
    let mut d = dispatcher();
    let (tx, rx) = crossbeam_channel::unbounded();
    let id = order(
        &mut d,
        t0,
        &mut f,
        "a",
        spec(1),
        Some(tx),
        &mut Recorder::default(),
    )
    .unwrap();
    d.on_ack(t0, "a", ack(1, id, AckOutcome::Accepted), f.counters_mut());
    let _ = rx.try_recv();
    (f, d, rx, id)
}

/// Pi "a" heartbeats again at `at`.
fn heartbeat_again(f: &mut TestFleet, at: Instant) {
    let hb = Heartbeat {
        seq: 9,
        timestamp_ms: 0,
    };
    f.on_heartbeat(at, 0, "a", hb);
}

#[test]
fn a_stranded_segment_fails_when_the_pi_is_back_without_it() {
    let t0 = Instant::now();
    let (mut f, mut d, rx, _) = accepted_by_a(t0);
    // Silent: offline at the heartbeat timeout; the old report (driving) is still there.
    f.tick(t0 + ms(1600));
    for went in f.take_went_offline() {
        d.on_pi_offline(t0 + ms(1600), &went, f.counters_mut());
    }
    for t in [2000, 5000, 60_000] {
        d.settle_stranded(t0 + ms(t), &f.fleet, &mut f.counters);
    }
    assert!(rx.try_recv().is_err(), "offline: only the Pi can tell");
    assert_eq!(d.stranded(), 1);
    // Back (a restarted process): its entity reports idle, and no Completed comes.
    let back = t0 + ms(60_000);
    heartbeat_again(&mut f, back);
    d.settle_stranded(back, &f.fleet, &mut f.counters);
    f.on_state(back + ms(100), "a", report(1, 0));
    d.settle_stranded(back + ms(100), &f.fleet, &mut f.counters);
    d.settle_stranded(back + ms(599), &f.fleet, &mut f.counters);
    assert!(
        rx.try_recv().is_err(),
        "a Completed may still be on its way"
    );
    f.on_state(back + ms(600), "a", report(1, 0));
    d.settle_stranded(back + ms(600), &f.fleet, &mut f.counters);
    assert_eq!(
        rx.try_recv(),
        Ok(SegmentOutcome::Failed(FailReason::PiOffline))
    );
    assert_eq!(d.in_flight(), 0);
}

#[test]
fn a_stranded_segment_fails_when_the_entity_drives_a_later_one() {
    let t0 = Instant::now();
    let (mut f, mut d, rx, first) = accepted_by_a(t0);
    d.on_pi_offline(t0 + ms(1600), "a", f.counters_mut());
    // Back as a new process, and at once busy with a segment sent after the first.
    let back = t0 + ms(5000);
    heartbeat_again(&mut f, back);
    let mut out = Recorder::default();
    let later = order(&mut d, back, &mut f, "a", spec(1), None, &mut out).unwrap();
    for t in 1..=5 {
        f.on_state(back + ms(100 * t), "a", report(1, later));
        d.settle_stranded(back + ms(100 * t), &f.fleet, &mut f.counters);
    }
    assert!(rx.try_recv().is_err(), "within the grace");
    f.on_state(back + ms(600), "a", report(1, later));
    d.settle_stranded(back + ms(600), &f.fleet, &mut f.counters);
    assert_eq!(
        rx.try_recv(),
        Ok(SegmentOutcome::Failed(FailReason::PiOffline)),
        "segment {first} cannot be queued behind {later}"
    );
}

#[test]
fn a_stranded_segment_still_driven_waits_and_a_forgotten_pi_fails_it() {
    let t0 = Instant::now();
    let (mut f, mut d, rx, id) = accepted_by_a(t0);
    d.on_pi_offline(t0 + ms(1600), "a", f.counters_mut());
    // Back and still driving it: nothing to settle.
    let back = t0 + ms(3000);
    heartbeat_again(&mut f, back);
    for t in 1..=10 {
        f.on_state(back + ms(100 * t), "a", report(1, id));
        d.settle_stranded(back + ms(100 * t), &f.fleet, &mut f.counters);
    }
    assert!(rx.try_recv().is_err());
    // Gone again, for good: the registry forgets it, and the segment fails.
    f.tick(back + ms(3000));
    assert!(rx.try_recv().is_err());
    f.tick(back + Duration::from_secs(700));
    assert!(f.pi("a").is_none(), "evicted");
    d.settle_stranded(back + Duration::from_secs(700), &f.fleet, &mut f.counters);
    assert_eq!(
        rx.try_recv(),
        Ok(SegmentOutcome::Failed(FailReason::PiOffline))
    );
}

/// A fleet of version 2 Pis whose clocks run `pi_behind_ms` behind the server's, as the
/// server learns it from their heartbeats (sent `delay_ms` before they are received).
fn v2_fleet(t0: Instant, pis: &[&str], pi_behind_ms: u64, delay_ms: u64) -> TestFleet {
    let mut f = TestFleet::new(FleetConfig::new(ms(1500), 100, Duration::from_secs(600)));
    for id in pis {
        let hb = Heartbeat {
            seq: 1,
            timestamp_ms: WALL - pi_behind_ms - delay_ms,
        };
        let topic = format!("rpi/{id}/heartbeat");
        f.on_live(t0, WALL, &topic, hb.encode().as_slice());
        let st = report(1, 0);
        let topic = format!("rpi/{id}/state");
        f.on_live(t0, WALL, &topic, st.encode().as_slice());
        assert_eq!(f.pi(id).unwrap().protocol, 2);
    }
    f
}

#[test]
fn version_1_pis_get_version_1_segments_without_deadline() {
    let t0 = Instant::now();
    let mut f = fleet_with(t0, &[("old", &[1])]);
    assert_eq!(f.pi("old").unwrap().protocol, 1);
    let mut d = dispatcher();
    let mut out = Recorder::default();
    order(&mut d, t0, &mut f, "old", spec(1), None, &mut out).unwrap();
    assert_eq!(out.raw[0].len(), Segment::LEN_V1, "version 1 layout");
    assert_eq!(out.raw[0][0] >> 4, 1);
    assert_eq!(out.sent[0].1.deadline_ms, NO_DEADLINE);
    assert_eq!(f.counters().segments_without_deadline, 1);
}

#[test]
fn deadline_is_the_give_up_time_on_the_pis_clock() {
    let t0 = Instant::now();
    // The Pi's clock is an hour behind; heartbeats take 20 ms to arrive.
    let mut f = v2_fleet(t0, &["a"], 3_600_000, 20);
    let mut d = dispatcher(); // 1 s x (2 retries + 1) = 3 s to live
    let mut out = Recorder::default();
    order(&mut d, t0, &mut f, "a", spec(1), None, &mut out).unwrap();
    assert_eq!(out.raw[0].len(), Segment::LEN);
    assert_eq!(out.raw[0][0] >> 4, 2);
    let deadline = out.sent[0].1.deadline_ms;
    // The Pi's clock reads WALL - 1 h now; the deadline is 3 s later on it, earlier by
    // the heartbeat's delay (the offset is over-estimated by it, never under).
    assert_eq!(deadline, WALL - 3_600_000 + 3000 - 20);
    assert_eq!(f.counters().segments_without_deadline, 0);
    // Retries carry the same deadline (same bytes: the Pi sees duplicates).
    let c = f.counters_mut();
    d.tick(t0 + ms(1000), c, &mut out);
    assert_eq!(out.raw[1], out.raw[0]);
    assert_eq!(pi_deadline_ms(5, ms(10), 100), 0, "clamped at the epoch");
}

#[test]
fn unaccepted_segment_fails_only_after_its_deadline_and_grace() {
    let t0 = Instant::now();
    let mut f = v2_fleet(t0, &["a"], 0, 0);
    let mut d = dispatcher(); // 3 s to live
    let mut out = Recorder::default();
    let (tx, rx) = crossbeam_channel::unbounded();
    let id = order(&mut d, t0, &mut f, "a", spec(1), Some(tx), &mut out).unwrap();
    let c = f.counters_mut();
    // The Pi goes silent; the server marks it offline 1.5 s later.
    d.on_pi_offline(t0 + ms(1500), "a", c);
    assert!(rx.try_recv().is_err(), "the Pi could still take it");
    for t in [1000, 2000, 3000, 3499] {
        d.tick(t0 + ms(t), c, &mut out);
    }
    assert!(rx.try_recv().is_err(), "not before the deadline + grace");
    assert_eq!(out.sent.len(), 3, "retries go on: the Pi may be back");
    d.tick(t0 + ms(3500), c, &mut out);
    assert_eq!(
        rx.try_recv(),
        Ok(SegmentOutcome::Failed(FailReason::PiOffline))
    );
    // The Pi wakes up and refuses the late delivery: counted, not a new outcome.
    d.on_ack(
        t0 + ms(9000),
        "a",
        ack(1, id, AckOutcome::Rejected(RejectReason::Expired)),
        c,
    );
    assert_eq!((c.late_refused, c.acks_duplicate), (1, 0));
    assert!(rx.try_recv().is_err());
}

/// A segment (3 s to live) sent at `t0` to version 2 Pi "a", clocks in step.
fn sent_to_v2_pi(
    t0: Instant,
) -> (
    TestFleet,
    Dispatcher,
    Recorder,
    Receiver<SegmentOutcome>,
    u32,
) {
    let mut f = v2_fleet(t0, &["a"], 0, 0);
    let mut d = dispatcher();
    let mut out = Recorder::default();
    let (tx, rx) = crossbeam_channel::unbounded();
    let id = order(&mut d, t0, &mut f, "a", spec(1), Some(tx), &mut out).unwrap();
    (f, d, out, rx, id)
}

#[test]
fn pi_back_before_the_deadline_takes_the_segment() {
    let t0 = Instant::now();
    let (mut f, mut d, mut out, rx, id) = sent_to_v2_pi(t0);
    let c = f.counters_mut();
    d.tick(t0 + ms(1000), c, &mut out);
    d.on_pi_offline(t0 + ms(1500), "a", c);
    d.tick(t0 + ms(2000), c, &mut out);
    d.on_ack(t0 + ms(2600), "a", ack(1, id, AckOutcome::Accepted), c);
    assert!(matches!(
        rx.try_recv(),
        Ok(SegmentOutcome::Accepted { attempts: 3, .. })
    ));
    d.tick(t0 + ms(10_000), c, &mut out);
    assert!(
        rx.try_recv().is_err(),
        "accepted: no failure at the deadline"
    );
    d.on_ack(t0 + ms(12_000), "a", ack(1, id, AckOutcome::Completed), c);
    assert!(matches!(
        rx.try_recv(),
        Ok(SegmentOutcome::Completed { .. })
    ));
}

#[test]
fn no_ack_failure_waits_for_the_deadline_too() {
    let t0 = Instant::now();
    let (mut f, mut d, mut out, rx, id) = sent_to_v2_pi(t0);
    let c = f.counters_mut();
    for t in [1000, 2000, 3000] {
        d.tick(t0 + ms(t), c, &mut out);
    }
    assert!(rx.try_recv().is_err());
    d.tick(t0 + ms(3500), c, &mut out);
    assert_eq!(
        rx.try_recv(),
        Ok(SegmentOutcome::Failed(FailReason::NoAck { attempts: 3 }))
    );
    // An Accepted that was on its way after all: reported in the counters and the log.
    d.on_ack(t0 + ms(3600), "a", ack(1, id, AckOutcome::Accepted), c);
    assert_eq!(c.late_outcomes, 1);
}

#[test]
fn ids_never_zero_and_in_flight_is_bounded() {
    let t0 = Instant::now();
    let mut f = fleet_with(t0, &[("a", &[1])]);
    let mut d = Dispatcher::new(
        DispatchConfig {
            max_in_flight: 3,
            ..DispatchConfig::new(ms(1000), 0)
        },
        u32::MAX,
    );
    let mut out = Recorder::default();
    let ids: Vec<u32> = (0..3)
        .map(|_| order(&mut d, t0, &mut f, "a", spec(1), None, &mut out).unwrap())
        .collect();
    assert_eq!(ids, vec![u32::MAX, 1, 2]);
    assert_eq!(
        order(&mut d, t0, &mut f, "a", spec(1), None, &mut out),
        Err(DispatchError::TooManyInFlight)
    );
    // With no retries, they fail after one timeout and are forgotten after the grace.
    let c = f.counters_mut();
    d.tick(t0 + ms(1000), c, &mut out);
    assert_eq!(c.segments_failed, 3);
    d.tick(t0 + ms(1000) + Duration::from_secs(10), c, &mut out);
    assert_eq!(d.tracked(), 0);
    assert!(order(&mut d, t0, &mut f, "a", spec(1), None, &mut out).is_ok());
    assert!(seed_segment_id() % 2 == 1);
}

#[test]
fn absurd_heartbeat_timestamps_give_no_deadline_not_a_never_expiring_one() {
    let t0 = Instant::now();
    let mut f = v2_fleet(t0, &["a"], 0, 0);
    let mut d = dispatcher(); // 3 s to live
    let mut out = Recorder::default();
    let year_3000 = 32_503_680_000_000u64;
    for nonsense in [0, u64::MAX, year_3000] {
        let hb = Heartbeat {
            seq: 2,
            timestamp_ms: nonsense,
        };
        f.on_live(t0, WALL, "rpi/a/heartbeat", hb.encode().as_slice());
        order(&mut d, t0, &mut f, "a", spec(1), None, &mut out).unwrap();
        let sent = out.sent.last().unwrap().1;
        assert_eq!(
            sent.deadline_ms, NO_DEADLINE,
            "after a heartbeat at {nonsense}"
        );
    }
    assert_eq!(f.counters().segments_without_deadline, 3);
    let table = crate::table::render(&f, t0);
    assert!(
        table.contains("clock_offset=+0ms, session=?, clock out of range (no segment deadlines)"),
        "{table}"
    );
    // A sane heartbeat again: deadlines are back, on the sane offset.
    let hb = Heartbeat {
        seq: 3,
        timestamp_ms: WALL,
    };
    f.on_live(t0, WALL, "rpi/a/heartbeat", hb.encode().as_slice());
    order(&mut d, t0, &mut f, "a", spec(1), None, &mut out).unwrap();
    assert_eq!(out.sent.last().unwrap().1.deadline_ms, WALL + 3000);
    assert!(!crate::table::render(&f, t0).contains("out of range"));
}

/// Version 3 Pis get the leader's epoch in every segment, re-sends too (and a new lead's
/// epoch under the same id); version 2 Pis get version 2 segments without it; a standby
/// (epoch None) re-sends nothing.
#[test]
fn segments_carry_the_leader_epoch_to_version_3_pis_only() {
    let t0 = Instant::now();
    let mut f = fleet_with(t0, &[]);
    for v in [2, 3] {
        let hb = Message::Heartbeat(Heartbeat {
            seq: 1,
            timestamp_ms: WALL,
        })
        .encode_as(v)
        .unwrap();
        let id = format!("v{v}");
        f.on_live(t0, WALL, &format!("rpi/{id}/heartbeat"), hb.as_slice());
        f.on_state(t0, &id, report(1, 0));
        assert_eq!(f.pi(&id).unwrap().protocol, v);
    }
    let mut out = Recorder::default();
    let mut d = dispatcher();
    d.set_epoch(Some(0x1f2));
    let id3 = order(&mut d, t0, &mut f, "v3", spec(1), None, &mut out).unwrap();
    order(&mut d, t0, &mut f, "v2", spec(1), None, &mut out).unwrap();
    assert_eq!(out.sent[0].1.epoch, 0x1f2);
    assert_eq!(out.raw[0][0] >> 4, 3, "a version 3 segment");
    assert_eq!(out.sent[1].1.epoch, 0, "no epoch for a version 2 Pi");
    assert_eq!(out.raw[1][0] >> 4, 2, "a version 2 segment");

    // A standby re-sends nothing; leading again (a new epoch), the same id with the new one.
    d.set_epoch(None);
    d.tick(t0 + ms(1000), &mut f.counters, &mut out);
    assert_eq!(out.sent.len(), 2, "nothing re-sent while not leading");
    d.set_epoch(Some(0x2f2));
    d.tick(t0 + ms(2000), &mut f.counters, &mut out);
    let resent: Vec<_> = out.sent[2..]
        .iter()
        .map(|(_, s)| (s.segment_id, s.epoch))
        .collect();
    assert!(resent.contains(&(id3, 0x2f2)), "{resent:?}");
}
