//! A flood of segments for entities the Pi does not drive (10,000/s for 3 s, QoS 1, as a
//! broken or hostile server could send them): the Pi must keep heartbeating on time. Before
//! its rejects were rate-limited, every one queued a QoS 1 ack ahead of the heartbeats in
//! rumqttc's request queue and delayed them by up to 1,011 ms (issue 16).

mod support;

use std::thread;
use std::time::{Duration, Instant};

use common::{AckOutcome, Presence, RejectReason};
use mqtt_link::QoS;
use rpi_client::reject_budget::REJECTS_PER_SECOND;
use rumqttc::{Client, Event, MqttOptions, Packet};
use support::*;
use testkit::{Broker, Probe};

const PI: &str = "flood-pi";
const RATE: u64 = 10_000;
const SECONDS: u64 = 3;

/// Publishes `RATE * SECONDS` segments for unknown entities, paced, QoS 1; returns how many
/// the broker acknowledged.
fn flood(port: u16) -> usize {
    let mut opts = MqttOptions::new("flooder", "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_inflight(1000);
    let (client, mut conn) = Client::new(opts, 1000);
    let total = (RATE * SECONDS) as usize;
    let topic = format!("server/{PI}/segment");
    let publisher = thread::spawn(move || {
        let start = Instant::now();
        for i in 0..total {
            if i % 100 == 0 {
                let due = start + Duration::from_micros(i as u64 * 1_000_000 / RATE);
                thread::sleep(due.saturating_duration_since(Instant::now()));
            }
            let seg = segment(200 + (i % 50) as u32, i as u32 + 1, (0, 0), (10, 0), 5, 5);
            if client
                .publish(
                    topic.clone(),
                    QoS::AtLeastOnce,
                    false,
                    seg.encode().to_vec(),
                )
                .is_err()
            {
                break;
            }
        }
        client
    });
    let mut acked = 0;
    let end = Instant::now() + Duration::from_secs(SECONDS + 10);
    while acked < total {
        match conn.recv_timeout(end.saturating_duration_since(Instant::now())) {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            _ => break,
        }
    }
    let client = publisher.join().expect("flood thread");
    let _ = client.disconnect();
    acked
}

#[test]
fn heartbeats_keep_their_pace_under_a_flood_of_rejected_segments() {
    let broker = Broker::start();
    let probe = Probe::connect(
        broker.port(),
        "probe-flood",
        &[&format!("rpi/{PI}/heartbeat"), &format!("rpi/{PI}/status")],
    );
    let acks = Probe::connect(broker.port(), "probe-acks", &[&format!("rpi/{PI}/ack")]);
    let mut pi = spawn(&broker, PI, &[]);
    wait_status(&probe, Duration::from_secs(5), Presence::Online);
    probe.wait_for(Duration::from_secs(2), |s| as_heartbeat(s).is_some());

    let start = Instant::now();
    let delivered = flood(broker.port());
    let flood_time = start.elapsed();
    // Heartbeats until the flood's backlog is surely through.
    thread::sleep(Duration::from_millis(1500));
    let beats: Vec<Instant> = probe
        .collect_for(Duration::ZERO)
        .iter()
        .filter(|s| as_heartbeat(s).is_some())
        .map(|s| s.at)
        .filter(|at| *at >= start)
        .collect();
    let window = start.elapsed();
    let max_gap = beats
        .windows(2)
        .map(|w| w[1].duration_since(w[0]))
        .max()
        .unwrap_or(Duration::MAX);
    let rejects = acks
        .collect_for(Duration::from_millis(200))
        .iter()
        .filter(|s| {
            as_ack(s)
                .is_some_and(|a| a.outcome == AckOutcome::Rejected(RejectReason::UnknownEntity))
        })
        .count();
    // Still takes a real segment afterwards.
    send_segment(&acks, PI, &segment(1, 1, (0, 0), (10, 0), 100, 100));
    wait_ack(&acks, Duration::from_secs(3), 1, 1, AckOutcome::Accepted);
    pi.signal("TERM");
    assert!(
        pi.wait_exit(Duration::from_secs(5)).is_some(),
        "it did not stop"
    );
    let log = pi.stderr();
    eprintln!(
        "FLOOD delivered={delivered} in {flood_time:?} heartbeats={} max_gap_ms={} rejects_acked={rejects}",
        beats.len(),
        max_gap.as_millis()
    );
    assert_eq!(
        delivered,
        (RATE * SECONDS) as usize,
        "the flood did not get through"
    );
    assert!(
        max_gap <= Duration::from_millis(600),
        "heartbeat gap {max_gap:?} under the flood ({} heartbeats in {window:?}):\n{log}",
        beats.len()
    );
    // The rejects are rate-limited, and the rest counted in the log.
    assert!(rejects > 0, "no reject was answered");
    assert!(
        rejects as u64 <= 2 * (SECONDS + 2) * u64::from(REJECTS_PER_SECOND),
        "{rejects} rejects answered"
    );
    assert!(
        log.contains("UnknownEntity rejections not answered"),
        "{log}"
    );
}
