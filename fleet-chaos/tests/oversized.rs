//! Oversized messages behind a broker WITHOUT a packet cap (every config the project ships
//! has one; a foreign or misconfigured broker may not): a retained 2 MiB status of a made-up
//! Pi, a retained 100 KB segment for a real Pi, then 100 KB segments at 100/s for 5 s. Each
//! must cost a counted drop, never the connection: rumqttc drops the connection on a packet
//! over its incoming limit, and a retained one comes back at every reconnect (issue 16: 61
//! reconnects in 20 s, heartbeats 15 of 40).

use std::thread;
use std::time::{Duration, Instant};

use fleet_chaos::{Watch, count_lines, ms, report, spawn_pi, spawn_server, summary, wait_table};
use rumqttc::{Client, Event, MqttOptions, Outgoing, Packet, QoS};
use testkit::Broker;
use testkit::broker::NO_PACKET_CAP;

const PI: &str = "pi-big";
const FLOOD: usize = 500;
const FLOOD_RATE: u64 = 100;

/// Publishes `count` payloads of `size` bytes on `topic` at `per_s` per second, QoS 1, and
/// waits for every PUBACK (so the broker has them all).
fn publish_big(port: u16, topic: &str, size: usize, count: usize, per_s: u64, retain: bool) {
    let mut opts = MqttOptions::new(format!("big-{}", count), "127.0.0.1", port);
    opts.set_max_packet_size(64 << 20, 64 << 20);
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut conn) = Client::new(opts, 16);
    let topic = topic.to_owned();
    let publisher = thread::spawn(move || {
        let start = Instant::now();
        for i in 0..count {
            let due = start + Duration::from_millis(i as u64 * 1000 / per_s);
            thread::sleep(due.saturating_duration_since(Instant::now()));
            client
                .publish(topic.clone(), QoS::AtLeastOnce, retain, vec![0x23; size])
                .expect("queue a publish");
        }
        client
    });
    let mut acked = 0;
    let end = Instant::now() + Duration::from_secs(30);
    while acked < count {
        let left = end.saturating_duration_since(Instant::now());
        match conn.recv_timeout(left) {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            other => panic!("publisher: {other:?} after {acked} of {count} acks"),
        }
    }
    let client = publisher.join().expect("publisher thread");
    client.disconnect().expect("disconnect");
    while let Ok(Ok(ev)) = conn.recv_timeout(Duration::from_secs(1)) {
        if matches!(ev, Event::Outgoing(Outgoing::Disconnect)) {
            break;
        }
    }
}

/// The longest gap between consecutive heartbeats of `pi` that arrived in `[from, to]`, and
/// their count.
fn heartbeat_gaps(watch: &Watch, from: Instant, to: Instant) -> (Duration, usize) {
    watch.with(|r| {
        let beats: Vec<Instant> = r
            .heartbeats
            .get(PI)
            .map(|v| v.iter().map(|(at, _)| *at))
            .into_iter()
            .flatten()
            .filter(|at| *at >= from && *at <= to)
            .collect();
        let max = beats
            .windows(2)
            .map(|w| w[1].duration_since(w[0]))
            .max()
            .unwrap_or(Duration::MAX);
        (max, beats.len())
    })
}

#[test]
fn oversized_messages_cost_a_counted_drop_not_the_connection() {
    let broker = Broker::start_with(NO_PACKET_CAP);
    let port = broker.port();
    // Left behind before the daemons start.
    publish_big(port, "rpi/x/status", 2 << 20, 1, 1, true);
    publish_big(port, &format!("server/{PI}/segment"), 100_000, 1, 1, true);

    // Only the real Pi's topics: the watcher has a client's usual limit too.
    let watch = Watch::start_on(port, "watch-big", &[&format!("rpi/{PI}/+")]);
    let mut server = spawn_server(
        &broker.addr(),
        &["--status-interval", "200ms", "--segment-interval", "0s"],
    );
    let mut pi = spawn_pi(&broker.addr(), PI, "1", &[]);
    wait_table(&server, Duration::from_secs(10), |t| t.all_active(&[PI], 1))
        .unwrap_or_else(|| panic!("the Pi is not active:\n{}", server.stderr()));

    let start = Instant::now();
    publish_big(
        port,
        &format!("server/{PI}/segment"),
        100_000,
        FLOOD,
        FLOOD_RATE,
        false,
    );
    thread::sleep(Duration::from_secs(1));
    let end = Instant::now();
    let (max_gap, beats) = heartbeat_gaps(&watch, start, end);
    let t = wait_table(&server, Duration::from_secs(2), |t| t.all_active(&[PI], 1))
        .unwrap_or_else(|| panic!("the Pi is not active after the flood"));

    for d in [&server, &pi] {
        d.signal("TERM");
    }
    server
        .wait_exit(Duration::from_secs(5))
        .expect("server exits");
    pi.wait_exit(Duration::from_secs(5)).expect("Pi exits");
    let server_log = server.stderr();
    let pi_log = pi.stderr();
    let errors = summary::counters(&server_log, "input errors: ").expect("input error counters");
    let pi_drops = pi_log
        .lines()
        .rev()
        .find_map(|l| {
            let rest = l.split("segment topic: ").nth(1)?;
            let mut n = rest.split_whitespace();
            let malformed: u64 = n.next()?.parse().ok()?;
            let retained: u64 = rest.split(", ").nth(1)?.split(' ').next()?.parse().ok()?;
            Some((malformed, retained))
        })
        .unwrap_or_else(|| panic!("no drop counts in the Pi's log:\n{pi_log}"));
    let pi_lost = count_lines(&pi_log, "connection to");
    let server_lost = count_lines(&server_log, "connection to");
    report(
        "oversized",
        &[
            ("pi_reconnects", pi_lost as u64),
            ("server_reconnects", server_lost as u64),
            ("max_heartbeat_gap_ms", ms(max_gap)),
            ("heartbeats", beats as u64),
            ("pi_dropped", pi_drops.0 + pi_drops.1),
            ("server_oversized", summary::get(&errors, "oversized")),
        ],
    );
    assert!(
        pi_lost <= 1,
        "the Pi lost its connection {pi_lost} times:\n{pi_log}"
    );
    assert!(
        server_lost <= 1,
        "the server lost its connection {server_lost} times:\n{server_log}"
    );
    assert_eq!(
        pi_drops,
        (FLOOD as u64, 1),
        "every flooded segment dropped as oversized, the retained one as retained:\n{pi_log}"
    );
    assert_eq!(summary::get(&errors, "oversized"), 1, "{server_log}");
    assert!(
        !server_log.contains("suspected duplicate") && !t.text.contains("DUPLICATE"),
        "{}\n{server_log}",
        t.text
    );
    let window = end.duration_since(start);
    assert!(
        max_gap <= Duration::from_millis(750),
        "heartbeat gap {max_gap:?} ({beats} heartbeats in {window:?})"
    );
    assert!(
        beats as u128 >= window.as_millis() / 500 - 1,
        "{beats} heartbeats in {window:?}"
    );
}
