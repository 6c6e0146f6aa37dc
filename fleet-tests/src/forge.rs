//! Forged fleet messages for spoofing tests: well-formed payloads (the real codec) that one
//! account publishes in another's name, each made to leave a visible trace if it ever got
//! through (a made-up entity, a clock an hour off, a heartbeat gap, a retained "offline", an ack
//! or segment with an id nobody else uses).

use common::{AckOutcome, Heartbeat, Point, Presence, Segment, SegmentAck, StateReport, Status};
use rumqttc::QoS;
use testkit::Probe;

/// An entity id no test Pi drives: a state for it in the server's table is a spoof that got in.
pub const FORGED_ENTITY: u32 = 999;
/// A clock offset no real Pi of a test has: one hour.
pub const FORGED_CLOCK_SKEW_MS: u64 = 3_600_000;
/// A heartbeat gap (below the server's "implausible" limit, so it would count as lost ones).
pub const FORGED_SEQ_JUMP: u32 = 5_000;

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Forged {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: QoS,
    pub retain: bool,
}

impl Forged {
    pub fn publish(&self, p: &Probe) {
        p.publish(&self.topic, &self.payload, self.qos, self.retain);
    }
}

pub use mqtt_link::daemon::wall_ms as now_ms;

/// Everything a Pi publishes, forged in `victim`'s name: a heartbeat `FORGED_SEQ_JUMP` after
/// `last_seq` with a clock an hour behind, a state of [`FORGED_ENTITY`], a retained `Offline`
/// with the highest session, and a `Completed` ack of `segment_id`.
pub fn as_pi(victim: &str, last_seq: u32, segment_id: u32) -> Vec<Forged> {
    let now = now_ms();
    let t = |leaf: &str| format!("rpi/{victim}/{leaf}");
    vec![
        Forged {
            topic: t("heartbeat"),
            payload: Heartbeat {
                seq: last_seq.wrapping_add(FORGED_SEQ_JUMP),
                timestamp_ms: now - FORGED_CLOCK_SKEW_MS,
            }
            .encode()
            .to_vec(),
            qos: QoS::AtMostOnce,
            retain: false,
        },
        Forged {
            topic: t("state"),
            payload: StateReport::at_rest(FORGED_ENTITY, now, Point::new(9_999, 9_999), 0)
                .encode()
                .to_vec(),
            qos: QoS::AtMostOnce,
            retain: false,
        },
        Forged {
            topic: t("status"),
            payload: Status {
                presence: Presence::Offline,
                session: u32::MAX,
                timestamp_ms: now,
            }
            .encode()
            .to_vec(),
            qos: QoS::AtLeastOnce,
            retain: true,
        },
        Forged {
            topic: t("ack"),
            payload: SegmentAck {
                entity_id: 1,
                segment_id,
                outcome: AckOutcome::Completed,
            }
            .encode()
            .to_vec(),
            qos: QoS::AtLeastOnce,
            retain: false,
        },
    ]
}

/// A segment for `victim`'s `entity`, as only the server may send: a short straight line.
pub fn segment(victim: &str, entity: u32, segment_id: u32) -> Forged {
    Forged {
        topic: format!("server/{victim}/segment"),
        payload: Segment {
            entity_id: entity,
            segment_id,
            start: Point::new(0, 0),
            end: Point::new(100, 0),
            velocity_start: 100,
            velocity_end: 100,
            segment_type: 0,
            deadline_ms: common::wire::NO_DEADLINE,
            epoch: 0,
        }
        .encode()
        .to_vec(),
        qos: QoS::AtLeastOnce,
        retain: false,
    }
}
