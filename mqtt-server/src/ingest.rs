//! Turns an incoming publish (topic + payload) into a fleet message or a labelled input error:
//! topic, then size, then kind against the topic (`rpi/{id}/ack` carries segment acks, kind 4,
//! and from version 3 action acks, kind 7), then the full decode. Pure and total.
//! The servers' own topics (`server/@status/{id}`, `server/@lease`, protocol version 3) are
//! classified by [`classify_server`].

use common::topic::{LEASE_TOPIC, TopicKind, parse_server_status_topic, parse_topic};
use common::wire::{Kind, MAX_PAYLOAD, peek};
use common::{DecodeError, Lease, Message, ServerStatus, TopicError};

/// Why an incoming publish was dropped. Each has a stable label used as a counter name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputError {
    /// Not `rpi/{id}/{heartbeat|state|status|ack}`.
    BadTopic,
    /// The id level of the topic is not a valid client id.
    BadClientId,
    /// Longer than any fleet payload; not decoded.
    Oversized(usize),
    /// A well-formed header of another kind than the topic carries.
    KindMismatch {
        topic: &'static str,
        payload: &'static str,
    },
    /// The decoder refused the payload.
    Decode(DecodeError),
}

impl InputError {
    pub fn label(&self) -> &'static str {
        match self {
            InputError::BadTopic => "bad_topic",
            InputError::BadClientId => "bad_client_id",
            InputError::Oversized(_) => "oversized",
            InputError::KindMismatch { .. } => "kind_mismatch",
            InputError::Decode(e) => e.label(),
        }
    }
}

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InputError::BadTopic => write!(f, "not a fleet topic"),
            InputError::BadClientId => write!(f, "bad client id in topic"),
            InputError::Oversized(n) => {
                write!(f, "payload of {n} bytes (at most {MAX_PAYLOAD} expected)")
            }
            InputError::KindMismatch { topic, payload } => {
                write!(f, "{payload} payload on a {topic} topic")
            }
            InputError::Decode(e) => write!(f, "{e}"),
        }
    }
}

/// A decoded fleet message and the client id from its topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming<'a> {
    pub client_id: &'a str,
    /// The protocol version of the payload (the Pi's own version, for a heartbeat).
    pub version: u8,
    pub message: Message,
}

/// Classifies one publish received on one of the Pi leaves the server subscribes to.
pub fn classify<'a>(topic: &'a str, payload: &[u8]) -> Result<Incoming<'a>, InputError> {
    let (kind, client_id) = parse_topic(topic).map_err(|e| match e {
        TopicError::Unknown => InputError::BadTopic,
        TopicError::BadClientId(_) => InputError::BadClientId,
    })?;
    if kind == TopicKind::Segment {
        // The server's own topic family; never subscribed, never valid input.
        return Err(InputError::BadTopic);
    }
    if payload.len() > MAX_PAYLOAD {
        return Err(InputError::Oversized(payload.len()));
    }
    let want = kind.payload_kind();
    let (version, got) = peek(payload).map_err(InputError::Decode)?;
    // From version 3 the ack topic also carries action acks (the decoder checks the version).
    let action_ack = kind == TopicKind::Ack && got == Kind::ActionAck;
    if got != want && !action_ack {
        return Err(InputError::KindMismatch {
            topic: want.name(),
            payload: got.name(),
        });
    }
    let message = Message::decode(payload).map_err(InputError::Decode)?;
    Ok(Incoming {
        client_id,
        version,
        message,
    })
}

/// A message on one of the servers' topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerIncoming<'a> {
    /// On `server/@status/{server_id}`.
    Status {
        server_id: &'a str,
        status: ServerStatus,
    },
    /// On `server/@lease`.
    Lease(Lease),
}

/// Classifies a publish on a server topic (`server/@...`); None for any other topic.
pub fn classify_server<'a>(
    topic: &'a str,
    payload: &[u8],
) -> Option<Result<ServerIncoming<'a>, InputError>> {
    if !topic.starts_with("server/@") {
        return None;
    }
    let (want, server_id) = if topic == LEASE_TOPIC {
        (Kind::Lease, None)
    } else {
        match parse_server_status_topic(topic) {
            Ok(id) => (Kind::ServerStatus, Some(id)),
            Err(TopicError::BadClientId(_)) => return Some(Err(InputError::BadClientId)),
            Err(TopicError::Unknown) => return Some(Err(InputError::BadTopic)),
        }
    };
    Some((|| {
        if payload.len() > MAX_PAYLOAD {
            return Err(InputError::Oversized(payload.len()));
        }
        let (_, got) = peek(payload).map_err(InputError::Decode)?;
        if got != want {
            return Err(InputError::KindMismatch {
                topic: want.name(),
                payload: got.name(),
            });
        }
        Ok(
            match (
                Message::decode(payload).map_err(InputError::Decode)?,
                server_id,
            ) {
                (Message::ServerStatus(status), Some(server_id)) => {
                    ServerIncoming::Status { server_id, status }
                }
                (Message::Lease(l), None) => ServerIncoming::Lease(l),
                _ => return Err(InputError::BadTopic),
            },
        )
    })())
}

/// A topic fit for a log line: at most 80 characters, control characters escaped.
pub fn printable_topic(topic: &str) -> String {
    let mut s: String = topic
        .chars()
        .take(80)
        .flat_map(char::escape_default)
        .collect();
    if topic.chars().count() > 80 {
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::{Heartbeat, Presence, Status};

    fn hb() -> Vec<u8> {
        Heartbeat {
            seq: 1,
            timestamp_ms: 5,
        }
        .encode()
        .to_vec()
    }

    #[test]
    fn good_messages_pass() {
        let got = classify("rpi/pi-1/heartbeat", &hb()).unwrap();
        assert_eq!(got.client_id, "pi-1");
        assert!(matches!(got.message, Message::Heartbeat(_)));
        let st = Status {
            presence: Presence::Online,
            session: 3,
            timestamp_ms: 9,
        }
        .encode();
        assert!(classify("rpi/pi-1/status", st.as_slice()).is_ok());
    }

    #[test]
    fn the_ack_topic_carries_action_acks_from_version_3() {
        let ack = common::ActionAck {
            action_id: 3,
            target: common::Target::Entity(2),
            action: common::ActionKind::Stop,
            outcome: common::ActionOutcome::Done,
            repeat: false,
            cancelled: 3,
            fence: 0,
        };
        let got = classify("rpi/pi-1/ack", ack.encode().as_slice()).unwrap();
        assert_eq!(got.message, Message::ActionAck(ack));
        assert_eq!(got.version, 3);
        let e = classify("rpi/pi-1/state", ack.encode().as_slice()).unwrap_err();
        assert_eq!(e.label(), "kind_mismatch");
        // Kind 7 with a version 2 header: the decoder refuses it.
        let mut v2 = ack.encode().to_vec();
        v2[0] = (2 << 4) | 7;
        assert!(classify("rpi/pi-1/ack", &v2).is_err());
    }

    #[test]
    fn every_kind_of_garbage_has_its_label() {
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("rpi/pi-1/unknown", hb(), "bad_topic"),
            ("server/pi-1/segment", hb(), "bad_topic"),
            ("rpi/bad id/heartbeat", hb(), "bad_client_id"),
            ("rpi/pi-1/heartbeat", vec![0x11; 65], "oversized"),
            ("rpi/pi-1/heartbeat", vec![0; 10_000], "oversized"),
            ("rpi/pi-1/state", hb(), "kind_mismatch"),
            ("rpi/pi-1/heartbeat", vec![], "empty"),
            ("rpi/pi-1/heartbeat", b"hello".to_vec(), "unknown_version"),
            ("rpi/pi-1/heartbeat", vec![0x1f, 0, 0], "unknown_kind"),
            ("rpi/pi-1/heartbeat", vec![0x11, 0, 0], "wrong_length"),
        ];
        for (topic, payload, label) in cases {
            let e = classify(topic, &payload).unwrap_err();
            assert_eq!(e.label(), label, "{topic} {payload:?}: {e}");
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn server_topics_are_classified_apart() {
        assert_eq!(classify_server("rpi/a/status", &hb()), None);
        let st = ServerStatus {
            presence: Presence::Online,
            session: 4,
            epoch: 0x1f2,
            timestamp_ms: 9,
        };
        let got = classify_server("server/@status/srv-1", st.encode().as_slice()).unwrap();
        assert_eq!(
            got,
            Ok(ServerIncoming::Status {
                server_id: "srv-1",
                status: st
            })
        );
        let lease = Lease {
            epoch: 0x1f2,
            session: 4,
            timestamp_ms: 9,
        };
        let got = classify_server("server/@lease", lease.encode().as_slice()).unwrap();
        assert_eq!(got, Ok(ServerIncoming::Lease(lease)));
        for (topic, payload, label) in [
            ("server/@lease", st.encode().to_vec(), "kind_mismatch"),
            ("server/@status/a", lease.encode().to_vec(), "kind_mismatch"),
            (
                "server/@status/bad id",
                st.encode().to_vec(),
                "bad_client_id",
            ),
            ("server/@other", st.encode().to_vec(), "bad_topic"),
            ("server/@lease", vec![0; 100], "oversized"),
            ("server/@lease", vec![], "empty"),
        ] {
            let e = classify_server(topic, &payload).unwrap().unwrap_err();
            assert_eq!(e.label(), label, "{topic}");
        }
    }

    #[test]
    fn printable_topic_is_short_and_escaped() {
        assert_eq!(printable_topic("rpi/a\nb/x"), "rpi/a\\nb/x");
        let long = "x".repeat(500);
        assert_eq!(printable_topic(&long).len(), 83);
    }
}
