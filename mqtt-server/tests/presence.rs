//! Presence, measured precisely with an in-process server against a real mosquitto: the will
//! marks a Pi offline as soon as the broker sends it, a silent Pi times out 1.5 s after its
//! last heartbeat, a stale will is ignored, retained statuses rebuild the fleet view after a
//! server restart, and a broker restart costs nothing but the outage.

mod support;

use std::time::{Duration, Instant};

use common::{Message, Presence, Status, TopicKind};
use mqtt_server::{FleetHandle, OfflineReason, PiView};
use rumqttc::QoS;
use support::*;
use testkit::{Broker, Probe, wait_for};

fn pi(h: &FleetHandle, id: &str) -> Option<PiView> {
    h.snapshot()?.pi(id).cloned()
}

fn wait_pi(h: &FleetHandle, id: &str, timeout: Duration, pred: impl Fn(&PiView) -> bool) -> PiView {
    wait_for(timeout, || pi(h, id).filter(|p| pred(p)))
        .unwrap_or_else(|| panic!("{id} not as expected within {timeout:?}: {:?}", pi(h, id)))
}

/// Polls every 2 ms; returns when `id` went offline.
fn wait_offline(h: &FleetHandle, id: &str, timeout: Duration) -> (Instant, PiView) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(p) = pi(h, id).filter(|p| !p.online) {
            return (Instant::now(), p);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    panic!("{id} still online after {timeout:?}");
}

#[test]
fn will_marks_the_pi_offline_as_soon_as_the_broker_sends_it() {
    let broker = Broker::start();
    let server = start_server(&config(&broker));
    let h = server.handle();
    let status = Probe::connect(broker.port(), "watch", &["rpi/pi-w/status"]);
    let mut pi = start_pi(&broker, "pi-w", "1");
    wait_pi(&h, "pi-w", Duration::from_secs(5), |p| p.online);
    status.drain();
    pi.kill9(); // no Offline, no DISCONNECT: only the broker's will tells
    let will = status
        .wait_for(Duration::from_secs(3), |s| {
            matches!(Message::decode(&s.payload), Ok(Message::Status(st)) if st.presence == Presence::ConnectionLost)
        })
        .expect("the broker publishes the will");
    let (off_at, p) = wait_offline(&h, "pi-w", Duration::from_secs(2));
    let lag = off_at.saturating_duration_since(will.at);
    eprintln!("will published -> offline in the registry: {lag:?}");
    assert!(lag <= Duration::from_millis(100), "{lag:?}");
    assert_eq!(p.offline_reason, Some(OfflineReason::Will));
}

#[test]
fn silent_pi_times_out_after_the_heartbeat_timeout() {
    let broker = Broker::start();
    let server = start_server(&config(&broker)); // heartbeat_timeout 1.5 s
    let h = server.handle();
    let beats = Probe::connect(broker.port(), "watch", &["rpi/pi-f/heartbeat"]);
    let pi = start_pi(&broker, "pi-f", "1");
    wait_pi(&h, "pi-f", Duration::from_secs(5), |p| p.online);
    pi.signal("STOP"); // connection stays up (the broker keeps it for the keep-alive): no will
    let (off_at, p) = wait_offline(&h, "pi-f", Duration::from_secs(4));
    let last_beat = std::iter::from_fn(|| beats.next(Duration::ZERO))
        .map(|s| s.at)
        .max()
        .expect("heartbeats seen");
    let after = off_at.saturating_duration_since(last_beat);
    eprintln!("last heartbeat -> offline: {after:?}");
    assert_eq!(p.offline_reason, Some(OfflineReason::HeartbeatTimeout));
    assert!(after >= Duration::from_millis(1400), "too early: {after:?}");
    assert!(after <= Duration::from_millis(1600), "too late: {after:?}");
    drop(pi);
}

#[test]
fn a_stale_will_of_an_older_session_is_ignored() {
    let broker = Broker::start();
    let server = start_server(&config(&broker));
    let h = server.handle();
    let _pi = start_pi(&broker, "pi-s", "1");
    let p = wait_pi(&h, "pi-s", Duration::from_secs(5), |p| {
        p.online && p.session.is_some()
    });
    let session = p.session.unwrap();
    let probe = Probe::connect(broker.port(), "late-will", &[]);
    let topic = common::ClientId::new("pi-s")
        .unwrap()
        .topic(TopicKind::Status);
    let stale = Status {
        presence: Presence::ConnectionLost,
        session: session - 1,
        timestamp_ms: now_ms(),
    };
    probe.publish(&topic, stale.encode().as_slice(), QoS::AtLeastOnce, false);
    wait_for(Duration::from_secs(2), || {
        (h.snapshot()?.counters.registry_of("stale_status") == 1).then_some(())
    })
    .expect("the stale will is counted");
    assert!(pi(&h, "pi-s").unwrap().online);
}

#[test]
fn retained_statuses_rebuild_the_fleet_view_after_a_server_restart() {
    let broker = Broker::start();
    let _alive = start_pi(&broker, "pi-alive", "1,2");
    let stopped = start_pi(&broker, "pi-stopped", "1");
    let mut crashed = start_pi(&broker, "pi-crashed", "1");
    testkit::daemons::wait_connected(&stopped, Duration::from_secs(5));
    shut_down(stopped);
    testkit::daemons::wait_connected(&crashed, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    crashed.kill9();
    std::thread::sleep(Duration::from_millis(300));

    let server = start_server(&config(&broker));
    let h = server.handle();
    let s = wait_for(Duration::from_secs(3), || {
        h.snapshot()
            .filter(|s| s.registry_len == 3 && s.online == 1)
    })
    .unwrap_or_else(|| panic!("fleet view not rebuilt: {:#?}", h.snapshot()));
    assert_eq!(s.online_ids(), vec!["pi-alive"]);
    assert_eq!(
        s.pi("pi-stopped").unwrap().offline_reason,
        Some(OfflineReason::CleanShutdown)
    );
    assert_eq!(
        s.pi("pi-crashed").unwrap().offline_reason,
        Some(OfflineReason::Will)
    );
    wait_pi(&h, "pi-alive", Duration::from_secs(2), |p| {
        p.entities.len() == 2
    });
}

#[test]
fn broker_restart_costs_only_the_outage() {
    let mut broker = Broker::start();
    let server = start_server(&config(&broker));
    let h = server.handle();
    let _pi = start_pi(&broker, "pi-r", "1");
    wait_pi(&h, "pi-r", Duration::from_secs(5), |p| p.online);
    broker.restart();
    // The server reconnects (capped backoff), re-subscribes, and sees the Pi again.
    let (s, beats) = wait_for(Duration::from_secs(10), || {
        let s = h.snapshot()?;
        (s.counters.broker_connects >= 2 && s.broker_connected).then(|| {
            let beats = s.counters.messages_of("heartbeat");
            (s, beats)
        })
    })
    .unwrap_or_else(|| panic!("server not reconnected: {:#?}", h.snapshot()));
    assert_eq!(s.counters.broker_disconnects, 1);
    wait_for(Duration::from_secs(5), || {
        let s = h.snapshot()?;
        (s.pi("pi-r")?.online && s.counters.messages_of("heartbeat") >= beats + 2).then_some(())
    })
    .unwrap_or_else(|| panic!("no heartbeats after the restart: {:#?}", h.snapshot()));
}
