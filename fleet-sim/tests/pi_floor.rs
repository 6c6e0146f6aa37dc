//! `pi-floor`, the footprint benchmark's rumqttc baseline, sends what it stands in for: the
//! Pi's heartbeats (every 500 ms, `seq` counting up) and a state report per entity every
//! 100 ms, in protocol bytes the server decodes, after its retained Online status; with its
//! timerfd and with `--tokio-timer`. Against a real mosquitto.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::{Message, Presence};
use testkit::{Broker, Probe};

fn plays_the_pi_traffic(flag: Option<&str>, id: &str) {
    let broker = Broker::start();
    let probe = Probe::connect(
        broker.port(),
        &format!("{id}-probe"),
        &[&format!("rpi/{id}/+")],
    );
    let port = broker.port().to_string();
    let mut args = vec!["127.0.0.1", port.as_str(), id, "3", "3"];
    args.extend(flag);
    let out = Command::new(env!("CARGO_BIN_EXE_pi-floor"))
        .args(&args)
        .output()
        .expect("run pi-floor");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pi-floor {flag:?} failed: {stderr}");
    assert!(stderr.contains(" rounds, "), "its summary line: {stderr}");
    let seen = probe.collect_for(Duration::from_millis(300));

    let mut states: BTreeMap<u32, u32> = BTreeMap::new();
    let mut beats = Vec::new();
    let mut online = false;
    for s in &seen {
        match Message::decode(&s.payload) {
            Ok(Message::State(r)) => *states.entry(r.entity_id).or_default() += 1,
            Ok(Message::Heartbeat(h)) => beats.push(h.seq),
            Ok(Message::Status(st)) => online |= st.presence == Presence::Online,
            other => panic!("{}: unexpected {other:?}", s.topic),
        }
    }
    assert!(online, "{flag:?}: the retained Online status");
    // 3 s at 10 Hz, less the connect: 25-31 rounds; a heartbeat with every fifth.
    assert_eq!(states.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
    for (e, n) in &states {
        assert!(
            (25..=31).contains(n),
            "{flag:?}: entity {e}: {n} reports in 3 s"
        );
    }
    assert!(
        (5..=7).contains(&beats.len()),
        "{flag:?}: heartbeats {beats:?}"
    );
    let first = beats[0];
    assert_eq!(
        beats,
        (first..first + beats.len() as u32).collect::<Vec<_>>(),
        "{flag:?}: seq counts up by one"
    );
}

#[test]
fn woken_by_its_timerfd_it_sends_the_pi_traffic() {
    plays_the_pi_traffic(None, "floor-fd");
}

#[test]
fn on_tokio_timers_it_sends_the_same() {
    plays_the_pi_traffic(Some("--tokio-timer"), "floor-tt");
}
