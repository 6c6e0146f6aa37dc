//! The broker's own figures from `$SYS` (mosquitto publishes them every `sys_interval`,
//! retained): clients connected, messages received and sent, messages dropped. The server
//! subscribes to the few topics below; the registry keeps the last value of each for the
//! metrics. A broker that does not publish them leaves them unknown (no metric line).

use serde::Serialize;

/// The `$SYS` topics read, and the metric each feeds.
pub const SYS_TOPICS: &[&str] = &[
    "$SYS/broker/clients/connected",
    "$SYS/broker/messages/received",
    "$SYS/broker/messages/sent",
    "$SYS/broker/publish/messages/dropped",
];

/// The last value of each figure, when the broker has published it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BrokerSys {
    pub clients_connected: Option<u64>,
    pub messages_received: Option<u64>,
    pub messages_sent: Option<u64>,
    pub messages_dropped: Option<u64>,
}

impl BrokerSys {
    /// True when `topic` is one of ours (then the publish is handled here, valid or not).
    pub fn is_sys(topic: &str) -> bool {
        topic.starts_with("$SYS/")
    }

    /// Records a `$SYS` publish; a payload that is not a whole number is ignored.
    pub fn on_publish(&mut self, topic: &str, payload: &[u8]) {
        let Some(v) = std::str::from_utf8(payload)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
        else {
            return;
        };
        let slot = match topic {
            "$SYS/broker/clients/connected" => &mut self.clients_connected,
            "$SYS/broker/messages/received" => &mut self.messages_received,
            "$SYS/broker/messages/sent" => &mut self.messages_sent,
            "$SYS/broker/publish/messages/dropped" => &mut self.messages_dropped,
            _ => return,
        };
        *slot = Some(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_number_of_each_topic() {
        let mut s = BrokerSys::default();
        s.on_publish("$SYS/broker/clients/connected", b"3");
        s.on_publish("$SYS/broker/messages/sent", b"12");
        s.on_publish("$SYS/broker/messages/sent", b"x");
        s.on_publish("$SYS/broker/uptime", b"40 seconds");
        assert_eq!(s.clients_connected, Some(3));
        assert_eq!(s.messages_sent, Some(12));
        assert_eq!(s.messages_received, None);
        assert!(BrokerSys::is_sys("$SYS/broker/uptime"));
        assert!(!BrokerSys::is_sys("rpi/a/state"));
    }
}
