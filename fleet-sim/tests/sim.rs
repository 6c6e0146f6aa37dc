//! The simulator at tiny scale against a real mosquitto: what a probe sees on `rpi/+/+` is
//! what the simulator says it sent, at the configured rates, with the protocol's status
//! messages, and segments are answered Accepted then Completed.

use std::collections::HashMap;
use std::thread;
use std::time::Duration;

use common::{AckOutcome, Message, Point, Presence, Segment};
use fleet_sim::SimConfig;
use rumqttc::QoS;
use testkit::{Broker, Probe};

#[test]
fn plays_the_protocol_at_the_configured_rates() {
    let broker = Broker::start();
    let probe = Probe::connect(broker.port(), "sim-test-probe", &["rpi/+/+"]);

    let mut cfg = SimConfig::default();
    cfg.apply("broker", &broker.addr()).unwrap();
    for (k, v) in [
        ("pis", "5"),
        ("entities", "2"),
        ("duration", "2s"),
        ("ramp", "100ms"),
        ("id_prefix", "t"),
        ("segment_time", "200ms"),
        ("progress_interval", "0s"),
    ] {
        cfg.apply(k, v).unwrap();
    }
    let (_stop_tx, stop_rx) = crossbeam_channel::bounded(1);
    let sim = thread::spawn(move || fleet_sim::run(cfg, stop_rx));

    // Once Pi 0 is online, send it a segment and expect Accepted then Completed.
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !seen
        .iter()
        .any(|s: &testkit::probe::Seen| s.topic == "rpi/t-0/status")
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        seen.push(probe.next(left).expect("Pi t-0 says Online within 5 s"));
    }
    let seg = Segment {
        entity_id: 2,
        segment_id: 77,
        start: Point::new(0, 0),
        end: Point::new(500, 0),
        velocity_start: 100,
        velocity_end: 100,
        segment_type: 0,
        deadline_ms: common::wire::NO_DEADLINE,
        epoch: 0,
    };
    probe.publish(
        "server/t-0/segment",
        seg.encode().as_slice(),
        QoS::AtLeastOnce,
        false,
    );

    let summary = sim.join().expect("simulator thread");
    seen.extend(probe.collect_for(Duration::from_millis(500)));

    let mut counts: HashMap<(String, &str), u64> = HashMap::new();
    let mut acks = Vec::new();
    let mut statuses = Vec::new();
    let mut seqs: HashMap<String, Vec<u32>> = HashMap::new();
    for s in &seen {
        let parts: Vec<&str> = s.topic.split('/').collect();
        let (id, leaf) = (parts[1].to_string(), parts[2]);
        let msg = Message::decode(&s.payload).expect("every payload decodes");
        match msg {
            Message::Heartbeat(h) => seqs.entry(id.clone()).or_default().push(h.seq),
            Message::Ack(a) => acks.push(a),
            Message::Status(st) => statuses.push((id.clone(), st.presence)),
            _ => {}
        }
        let leaf = match leaf {
            "heartbeat" => "heartbeat",
            "state" => "state",
            "status" => "status",
            "ack" => "ack",
            other => panic!("unexpected leaf {other}"),
        };
        *counts.entry((id, leaf)).or_default() += 1;
    }
    let total = |leaf: &str| -> u64 {
        counts
            .iter()
            .filter(|((_, l), _)| *l == leaf)
            .map(|(_, n)| *n)
            .sum()
    };
    // Nothing lost between the simulator and a subscriber.
    assert_eq!(total("state"), summary.sent.state, "{summary:?}");
    // (The probe's collection window began before the first Pi connected, so it saw every
    // heartbeat too.)
    assert_eq!(total("heartbeat"), summary.sent.heartbeat, "{summary:?}");

    // Rates: at most what the schedule allows, and at least 80% of it on a noisy machine.
    for n in 0..5 {
        let id = format!("t-{n}");
        let states = counts.get(&(id.clone(), "state")).copied().unwrap_or(0);
        assert!((32..=40).contains(&states), "{id}: {states} state reports");
        let beats = seqs.get(&id).map(Vec::len).unwrap_or(0);
        // Heartbeats start at connect (ramp + 1 s settle before the 2 s window): 4 in the
        // window and up to 3 before it.
        assert!((3..=7).contains(&beats), "{id}: {beats} heartbeats");
        let s = &seqs[&id];
        assert!(s.windows(2).all(|w| w[1] == w[0] + 1), "{id}: seq {s:?}");
        // Online after connecting, Offline on the clean stop.
        let mine: Vec<Presence> = statuses
            .iter()
            .filter(|(i, _)| *i == id)
            .map(|(_, p)| *p)
            .collect();
        assert_eq!(mine, vec![Presence::Online, Presence::Offline], "{id}");
    }

    let outcomes: Vec<AckOutcome> = acks
        .iter()
        .filter(|a| a.segment_id == 77 && a.entity_id == 2)
        .map(|a| a.outcome)
        .collect();
    assert_eq!(
        outcomes,
        vec![AckOutcome::Accepted, AckOutcome::Completed],
        "{acks:?}"
    );
    assert_eq!(summary.segments_received, 1);
    assert_eq!(summary.connected_at_start, 5);
    assert_eq!(summary.unfinished, 0);
}
