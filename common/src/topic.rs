//! Client ids and the fleet's topic names: building them and parsing them back.
//!
//! Pi -> server: `rpi/{id}/heartbeat`, `rpi/{id}/state`, `rpi/{id}/status`, `rpi/{id}/ack`.
//! Server -> Pi: `server/{id}/segment`, and from protocol version 3 `server/{id}/action`.
//! Version 3 server topics: `server/@status/{server_id}` and `server/@lease`; their second
//! level starts with `@`, which no client id may contain, so they are never a Pi's topics.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{ClientIdError, TopicError};
use crate::wire::Kind;

/// At most this many bytes in a client id.
pub const CLIENT_ID_MAX: usize = 64;

/// A validated client id: 1..=64 bytes of `A-Z a-z 0-9 _ - .`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClientId(String);

impl ClientId {
    pub fn new(s: &str) -> Result<ClientId, ClientIdError> {
        validate_client_id(s)?;
        Ok(ClientId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The topic of the given kind for this client.
    pub fn topic(&self, kind: TopicKind) -> String {
        kind.topic(&self.0)
    }
}

/// Checks a client id without allocating.
pub fn validate_client_id(s: &str) -> Result<(), ClientIdError> {
    if s.is_empty() {
        return Err(ClientIdError::Empty);
    }
    if s.len() > CLIENT_ID_MAX {
        return Err(ClientIdError::TooLong {
            len: s.len(),
            max: CLIENT_ID_MAX,
        });
    }
    if let Some((position, ch)) = s
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(ClientIdError::InvalidChar { ch, position });
    }
    Ok(())
}

impl FromStr for ClientId {
    type Err = ClientIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ClientId::new(s)
    }
}

impl TryFrom<String> for ClientId {
    type Error = ClientIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        validate_client_id(&s)?;
        Ok(ClientId(s))
    }
}

impl From<ClientId> for String {
    fn from(c: ClientId) -> String {
        c.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ClientId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The per-Pi fleet topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TopicKind {
    Heartbeat,
    State,
    Status,
    Ack,
    Segment,
    /// Protocol version 3: instant actions, server -> Pi.
    Action,
}

/// Everything the server subscribes to, in this order: exactly the Pis' four leaves (the
/// production ACL grants the server nothing wider), statuses first so that their retained
/// copies reach a restarting server before anything else can fill its queue at the broker;
/// then (protocol version 3) every server's presence and the leader lease.
pub const SERVER_SUBSCRIPTIONS: [&str; 6] = [
    "rpi/+/status",
    "rpi/+/heartbeat",
    "rpi/+/state",
    "rpi/+/ack",
    SERVER_STATUS_SUBSCRIPTION,
    LEASE_TOPIC,
];

impl TopicKind {
    pub const ALL: [TopicKind; 6] = [
        TopicKind::Heartbeat,
        TopicKind::State,
        TopicKind::Status,
        TopicKind::Ack,
        TopicKind::Segment,
        TopicKind::Action,
    ];

    fn parts(self) -> (&'static str, &'static str) {
        match self {
            TopicKind::Heartbeat => ("rpi", "heartbeat"),
            TopicKind::State => ("rpi", "state"),
            TopicKind::Status => ("rpi", "status"),
            TopicKind::Ack => ("rpi", "ack"),
            TopicKind::Segment => ("server", "segment"),
            TopicKind::Action => ("server", "action"),
        }
    }

    /// `prefix/{id}/leaf`; `id` must already be valid (or a wildcard such as `+`).
    pub fn topic(self, id: &str) -> String {
        let (prefix, leaf) = self.parts();
        format!("{prefix}/{id}/{leaf}")
    }

    /// The payload kind that belongs on this topic. (From protocol version 3, `rpi/{id}/ack`
    /// also carries `Kind::ActionAck`.)
    pub fn payload_kind(self) -> Kind {
        match self {
            TopicKind::Heartbeat => Kind::Heartbeat,
            TopicKind::State => Kind::State,
            TopicKind::Status => Kind::Status,
            TopicKind::Ack => Kind::Ack,
            TopicKind::Segment => Kind::Segment,
            TopicKind::Action => Kind::Action,
        }
    }
}

/// Protocol version 3: where server `{server_id}` publishes its presence (retained, with a will).
pub const SERVER_STATUS_PREFIX: &str = "server/@status/";
/// Protocol version 3: every server's presence, for Pis and servers to subscribe to.
pub const SERVER_STATUS_SUBSCRIPTION: &str = "server/@status/+";
/// Protocol version 3: the leader lease (retained, no will).
pub const LEASE_TOPIC: &str = "server/@lease";

/// `server/@status/{server_id}`; a server id follows the client id rules.
pub fn server_status_topic(server_id: &ClientId) -> String {
    format!("{SERVER_STATUS_PREFIX}{server_id}")
}

/// The (validated) server id of a `server/@status/{server_id}` topic.
pub fn parse_server_status_topic(topic: &str) -> Result<&str, TopicError> {
    let id = topic
        .strip_prefix(SERVER_STATUS_PREFIX)
        .ok_or(TopicError::Unknown)?;
    validate_client_id(id).map_err(TopicError::BadClientId)?;
    Ok(id)
}

/// Splits a fleet topic into its kind and (validated) client id.
pub fn parse_topic(topic: &str) -> Result<(TopicKind, &str), TopicError> {
    let mut it = topic.splitn(3, '/');
    let (Some(prefix), Some(id), Some(leaf)) = (it.next(), it.next(), it.next()) else {
        return Err(TopicError::Unknown);
    };
    let kind = TopicKind::ALL
        .into_iter()
        .find(|k| k.parts() == (prefix, leaf))
        .ok_or(TopicError::Unknown)?;
    validate_client_id(id).map_err(TopicError::BadClientId)?;
    Ok((kind, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_parses_every_topic() {
        let id = ClientId::new("rpi_client_001").unwrap();
        let expected = [
            (TopicKind::Heartbeat, "rpi/rpi_client_001/heartbeat"),
            (TopicKind::State, "rpi/rpi_client_001/state"),
            (TopicKind::Status, "rpi/rpi_client_001/status"),
            (TopicKind::Ack, "rpi/rpi_client_001/ack"),
            (TopicKind::Segment, "server/rpi_client_001/segment"),
            (TopicKind::Action, "server/rpi_client_001/action"),
        ];
        for (kind, topic) in expected {
            assert_eq!(id.topic(kind), topic);
            assert_eq!(parse_topic(topic), Ok((kind, "rpi_client_001")));
        }
    }

    #[test]
    fn rejects_foreign_topics() {
        for t in [
            "",
            "rpi",
            "rpi/a",
            "rpi/a/unknown",
            "server/a/heartbeat",
            "rpi/a/state/extra",
            "other/a/state",
        ] {
            assert_eq!(parse_topic(t), Err(TopicError::Unknown), "{t:?}");
        }
        assert!(matches!(
            parse_topic("rpi/bad id/state"),
            Err(TopicError::BadClientId(ClientIdError::InvalidChar {
                ch: ' ',
                ..
            }))
        ));
        assert!(matches!(
            parse_topic("rpi//state"),
            Err(TopicError::BadClientId(ClientIdError::Empty))
        ));
    }

    #[test]
    fn server_topics_are_never_a_pis() {
        let server = ClientId::new("mqtt-server-a").unwrap();
        let status = server_status_topic(&server);
        assert_eq!(status, "server/@status/mqtt-server-a");
        assert_eq!(parse_server_status_topic(&status), Ok("mqtt-server-a"));
        assert!(parse_server_status_topic("server/@status/a/b").is_err());
        assert!(parse_server_status_topic("server/@status/").is_err());
        assert_eq!(
            parse_server_status_topic("server/a/segment"),
            Err(TopicError::Unknown)
        );
        // `@` is no id character: no Pi's topic can be a server topic, whatever its id.
        assert!(ClientId::new("@status").is_err());
        assert!(ClientId::new("@lease").is_err());
        for t in [status.as_str(), LEASE_TOPIC, SERVER_STATUS_SUBSCRIPTION] {
            assert!(parse_topic(t).is_err(), "{t}");
        }
    }

    #[test]
    fn client_id_rules() {
        assert!(ClientId::new("A-z_0.9").is_ok());
        assert_eq!(ClientId::new(""), Err(ClientIdError::Empty));
        assert_eq!(
            ClientId::new(&"a".repeat(65)),
            Err(ClientIdError::TooLong { len: 65, max: 64 })
        );
        assert!(ClientId::new(&"a".repeat(64)).is_ok());
        for bad in ["a/b", "a+b", "a#", "é", "a b"] {
            let e = ClientId::new(bad).unwrap_err();
            assert!(matches!(e, ClientIdError::InvalidChar { .. }), "{bad}");
            assert!(e.to_string().contains("only A-Z a-z 0-9 _ - ."));
        }
    }

    #[test]
    fn client_id_serde_validates() {
        let ok: ClientId = serde_json::from_str("\"pi-1\"").unwrap();
        assert_eq!(ok.as_str(), "pi-1");
        assert!(serde_json::from_str::<ClientId>("\"pi/1\"").is_err());
    }
}
