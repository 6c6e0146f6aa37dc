//! Presence on `rpi/{id}/status`: the Status payloads (the
//! Last Will meaning "connection lost", `Online` after each ConnAck, `Offline` on a clean
//! shutdown; the session counter's seed is [`crate::session_store`]'s). All retained, QoS 1 (see docs/protocol.md, "Status and sessions").

use common::{Message, Presence, Status};
use mqtt_link::{LastWill, QoS, WillFn};

use crate::clock;
use crate::publisher::encode;

/// A Status payload stamped now.
pub fn status(presence: Presence, session: u32) -> Vec<u8> {
    encode(Message::Status(Status {
        presence,
        session,
        timestamp_ms: clock::now_ms(),
    }))
    .to_vec()
}

/// The Last Will of each connection: `ConnectionLost` with that connection's session.
pub fn will(status_topic: String) -> WillFn {
    Box::new(move |session| {
        LastWill::new(
            status_topic.clone(),
            status(Presence::ConnectionLost, session),
            QoS::AtLeastOnce,
            true,
        )
    })
}
