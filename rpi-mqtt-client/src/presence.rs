//! Presence on `rpi/{id}/status`: the session counter's seed and the Status payloads (the
//! Last Will meaning "connection lost", `Online` after each ConnAck, `Offline` on a clean
//! shutdown). All retained, QoS 1 (see docs/protocol.md, "Status and sessions").

use common::{Message, Presence, Status};
use mqtt_link::{LastWill, QoS, WillFn};

use crate::clock;
use crate::publisher::encode;

/// The first connection's session: the Pi's clock in seconds at start, or the last session
/// stored in the state directory + 1 if that is larger (see [`crate::session_store`]); the link
/// adds one per connect, so sessions only grow, across restarts too.
pub fn first_session(stored: Option<u32>) -> u32 {
    crate::session_store::first_session(stored, clock::now_secs_u32())
}

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
