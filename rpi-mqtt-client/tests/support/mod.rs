//! Shared helpers of the rpi-client integration tests: start the real binary against a
//! testkit broker, watch its topics with a probe, decode what it publishes, publish segments.

#![allow(dead_code, unused_imports)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{
    AckOutcome, Heartbeat, Message, Point, Presence, Segment, SegmentAck, StateReport, Status,
};
use mqtt_link::QoS;
use testkit::probe::Seen;
use testkit::{Broker, Daemon, Probe};

pub use testkit::count_lines;

/// This crate's `rpi-client`, as cargo built it for these tests.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rpi-client"))
}

/// Starts `rpi-client` as `id` against `broker`, with no config file and `extra` flags.
pub fn spawn(broker: &Broker, id: &str, extra: &[&str]) -> Daemon {
    testkit::daemons::pi_with(&bin(), &broker.addr(), id, extra)
}

/// A probe on every topic of Pi `id` (its `rpi/{id}/...` topics).
pub fn watch(broker: &Broker, probe_id: &str, id: &str) -> Probe {
    let topic = format!("rpi/{id}/#");
    Probe::connect(broker.port(), probe_id, &[topic.as_str()])
}

pub use mqtt_link::daemon::wall_ms as now_ms;

/// The wall clock (ms) at the moment a probe saw a message.
pub fn wall_ms_at(at: Instant) -> u64 {
    now_ms() - Instant::now().saturating_duration_since(at).as_millis() as u64
}

pub fn leaf(s: &Seen) -> &str {
    s.topic.rsplit('/').next().unwrap_or("")
}

pub fn decode(s: &Seen) -> Message {
    Message::decode(&s.payload)
        .unwrap_or_else(|e| panic!("undecodable payload on {}: {e}: {:?}", s.topic, s.payload))
}

pub fn as_status(s: &Seen) -> Option<Status> {
    match (leaf(s), decode(s)) {
        ("status", Message::Status(st)) => Some(st),
        _ => None,
    }
}

pub fn as_heartbeat(s: &Seen) -> Option<Heartbeat> {
    match (leaf(s), decode(s)) {
        ("heartbeat", Message::Heartbeat(h)) => Some(h),
        _ => None,
    }
}

pub fn as_state(s: &Seen) -> Option<StateReport> {
    match (leaf(s), decode(s)) {
        ("state", Message::State(r)) => Some(r),
        _ => None,
    }
}

pub fn as_ack(s: &Seen) -> Option<SegmentAck> {
    match (leaf(s), decode(s)) {
        ("ack", Message::Ack(a)) => Some(a),
        _ => None,
    }
}

/// The sequence numbers of the heartbeats the probe sees within `window`.
pub fn heartbeat_seqs(probe: &Probe, window: Duration) -> Vec<u32> {
    probe
        .collect_for(window)
        .iter()
        .filter_map(as_heartbeat)
        .map(|h| h.seq)
        .collect()
}

/// Waits for a status with the given presence; returns it with the probe's view of it.
pub fn wait_status(probe: &Probe, timeout: Duration, presence: Presence) -> (Status, Seen) {
    let seen = probe
        .wait_for(timeout, |s| {
            as_status(s).is_some_and(|st| st.presence == presence)
        })
        .unwrap_or_else(|| panic!("no {presence:?} status within {timeout:?}"));
    (as_status(&seen).unwrap(), seen)
}

/// Waits for the ack of `(entity, segment)` with this outcome.
pub fn wait_ack(
    probe: &Probe,
    timeout: Duration,
    entity: u32,
    segment: u32,
    outcome: AckOutcome,
) -> Seen {
    probe
        .wait_for(timeout, |s| {
            as_ack(s).is_some_and(|a| {
                a.entity_id == entity && a.segment_id == segment && a.outcome == outcome
            })
        })
        .unwrap_or_else(|| {
            panic!("no {outcome:?} ack for segment {segment} of entity {entity} within {timeout:?}")
        })
}

pub fn segment(
    entity: u32,
    id: u32,
    start: (i32, i32),
    end: (i32, i32),
    v0: i32,
    v1: i32,
) -> Segment {
    Segment {
        entity_id: entity,
        segment_id: id,
        start: Point::new(start.0, start.1),
        end: Point::new(end.0, end.1),
        velocity_start: v0,
        velocity_end: v1,
        segment_type: 0,
        deadline_ms: common::wire::NO_DEADLINE,
        epoch: 0,
    }
}

/// Publishes a segment to Pi `id` as the server would (QoS 1).
pub fn send_segment(probe: &Probe, id: &str, seg: &Segment) {
    probe.publish(
        &format!("server/{id}/segment"),
        seg.encode().as_slice(),
        QoS::AtLeastOnce,
        false,
    );
}

pub fn as_action_ack(s: &Seen) -> Option<common::ActionAck> {
    match (leaf(s), decode(s)) {
        ("ack", Message::ActionAck(a)) => Some(a),
        _ => None,
    }
}

/// Publishes an instant action to Pi `id` as the server would (QoS 1).
pub fn send_action(probe: &Probe, id: &str, action: &common::Action) {
    probe.publish(
        &format!("server/{id}/action"),
        action.encode().as_slice(),
        QoS::AtLeastOnce,
        false,
    );
}
