//! Message fences: proof that the broker has handled everything a client published so far.
//! Mosquitto handles one client's packets in order and queues a delivery to a subscriber when
//! it handles the PUBLISH, so once a watcher receives a marker that a writer published last,
//! every earlier publish of that writer has been delivered to the watcher, or never will be.
//! "Never delivered" assertions use this instead of sleeping and hoping.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rumqttc::QoS;
use testkit::Probe;
use testkit::probe::Seen;

/// Publishes a unique marker from `writer` on `topic` (QoS 1) and waits until `watcher`, which
/// must be subscribed to `topic`, receives it. Returns every message the watcher received
/// before the marker; panics if the marker does not arrive within `timeout`.
pub fn fence(writer: &Probe, topic: &str, watcher: &Probe, timeout: Duration) -> Vec<Seen> {
    static N: AtomicU32 = AtomicU32::new(0);
    let marker = format!(
        "fence-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    writer.publish(topic, marker.as_bytes(), QoS::AtLeastOnce, false);
    let mut before = Vec::new();
    let found = watcher.wait_for(timeout, |s| {
        if s.topic == topic && s.payload == marker.as_bytes() {
            true
        } else {
            before.push(s.clone());
            false
        }
    });
    assert!(
        found.is_some(),
        "fence marker on {topic} did not arrive within {timeout:?}; received before: {:?}",
        before.iter().map(|s| &s.topic).collect::<Vec<_>>()
    );
    before
}
