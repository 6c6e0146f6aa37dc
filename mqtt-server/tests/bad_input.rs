//! Bad input never hurts the server: garbage of every sort on every subscribed topic (real
//! and made-up ids, bad ids) is counted by kind and logged rate-limited while real
//! `rpi-client` Pis stay tracked; 10,000 made-up client ids cannot grow the registry past
//! its cap; 5,200 made-up ids heartbeating every second cannot push a real Pi that was killed
//! and restarted out of the registry, nor make the status table unreadable.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{Heartbeat, Point, StateReport};
use rumqttc::QoS;
use support::*;
use testkit::table::skip_backlog;
use testkit::{Broker, Probe, wait_for};

/// Deterministic pseudo-random bytes (xorshift), first byte forced to version 10.
fn random_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v: Vec<u8> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    v[0] = 0xA5;
    v
}

fn heartbeat() -> Vec<u8> {
    Heartbeat {
        seq: 1,
        timestamp_ms: now_ms(),
    }
    .encode()
    .to_vec()
}

fn state() -> Vec<u8> {
    StateReport::at_rest(1, now_ms(), Point::new(0, 0), 0)
        .encode()
        .to_vec()
}

/// The leaf's kind code (low nibble of a valid header on that topic).
fn kind_of(leaf: &str) -> u8 {
    match leaf {
        "heartbeat" => 1,
        "state" => 2,
        "ack" => 4,
        "status" => 5,
        _ => unreachable!(),
    }
}

#[test]
fn garbage_on_every_topic_is_counted_by_kind_and_the_real_pis_stay_tracked() {
    let broker = Broker::start();
    let mut server = spawn_server(
        &broker,
        &["--status-interval", "200ms", "--segment-interval", "1s"],
    );
    let _a = start_pi(&broker, "pi-a", "1,2,3");
    let _b = start_pi(&broker, "pi-b", "1,2,3");
    wait_table(&server, Duration::from_secs(5), |t| t.active_count == 2).expect("Pis active");

    let bad = Probe::connect(broker.port(), "garbage", &[]);
    let mut expected: BTreeMap<&str, u64> = BTreeMap::new();
    let mut send = |topic: &str, payload: &[u8], label: &'static str| {
        bad.publish(topic, payload, QoS::AtLeastOnce, false);
        *expected.entry(label).or_default() += 1;
    };
    let long_id = "x".repeat(65);
    let rounds = 25;
    let started = Instant::now();
    for round in 0..rounds {
        for id in ["pi-a", "ghost-1"] {
            for leaf in ["heartbeat", "state", "status", "ack"] {
                let topic = format!("rpi/{id}/{leaf}");
                let k = kind_of(leaf);
                send(
                    &topic,
                    &random_bytes(round * 31 + u64::from(k), 30),
                    "unknown_version",
                );
                send(&topic, b"", "empty");
                // Under the test broker's 4 KiB packet cap (a larger one would cost the
                // garbage client its connection).
                send(&topic, &vec![0x11; 3 * 1024], "oversized");
                send(
                    &topic,
                    b"hello, server! {\"kind\":\"heartbeat\"}",
                    "unknown_version",
                );
                send(&topic, &[0x10 | k, 1, 2, 3], "wrong_length");
                send(&topic, &[0x1F, 0, 0, 0], "unknown_kind");
                let other = if leaf == "heartbeat" {
                    state()
                } else {
                    heartbeat()
                };
                send(&topic, &other, "kind_mismatch");
            }
        }
        send("rpi/bad id/heartbeat", &heartbeat(), "bad_client_id");
        send(&format!("rpi/{long_id}/state"), &state(), "bad_client_id");
        // Other leaves never reach the server: it subscribes to exactly the four leaves
        // (not counted, and checked below not to appear under any label).
        bad.publish("rpi/pi-a/bogus", &heartbeat(), QoS::AtLeastOnce, false);
        bad.publish("rpi/pi-a/segment", &heartbeat(), QoS::AtLeastOnce, false);
    }
    let total: u64 = expected.values().sum();
    eprintln!("published {total} bad messages in {:?}", started.elapsed());

    // Meanwhile and afterwards the real Pis stay active and fresh, nothing else appears.
    let t_end = Instant::now() + Duration::from_secs(2);
    while Instant::now() < t_end {
        let t = next_table(&server, Duration::from_secs(2)).expect("tables keep coming");
        assert_eq!(t.active_count, 2, "{}", t.text);
        assert_eq!(t.offline_count, 0, "{}", t.text);
        for pi in t.active.values() {
            assert!(pi.last_hb_ms < 1000, "{}", t.text);
            assert_eq!(pi.entities.len(), 3, "{}", t.text);
        }
    }

    let status = server.terminate(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
    let err = server.stderr();
    let line = err
        .lines()
        .find(|l| l.contains("input errors:"))
        .unwrap_or_else(|| panic!("no summary:\n{err}"));
    let got: BTreeMap<&str, u64> = line
        .split("input errors: ")
        .nth(1)
        .unwrap()
        .split(' ')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k, v.parse().unwrap()))
        .collect();
    assert_eq!(got, expected, "{line}");
    // Logged rate-limited: about one line per kind, not one per message.
    let logged = err
        .lines()
        .filter(|l| l.contains("dropped a message"))
        .count();
    assert!(
        logged <= 2 * expected.len(),
        "{logged} lines for {total} bad messages:\n{err}"
    );
    // The Pis kept being tracked and driven throughout.
    let messages = err.lines().find(|l| l.contains("messages: ")).unwrap();
    assert!(messages.contains("heartbeat="), "{messages}");
    let segments = err.lines().find(|l| l.contains("segments: sent=")).unwrap();
    assert!(!segments.contains("sent=0 "), "{segments}");
}

#[test]
fn ten_thousand_made_up_client_ids_cannot_grow_the_registry_past_its_cap() {
    let broker = Broker::start();
    let mut cfg = config(&broker);
    cfg.max_pis = 1000;
    let server = start_server(&cfg);
    let h = server.handle();
    let _real = start_pi(&broker, "pi-real", "1");
    wait_for(Duration::from_secs(5), || {
        h.snapshot()?.pi("pi-real").filter(|p| p.online).map(|_| ())
    })
    .expect("the real Pi online");

    let flood = Probe::connect(broker.port(), "flood", &[]);
    let hb = heartbeat();
    let started = Instant::now();
    for i in 0..10_000 {
        flood.publish(
            &format!("rpi/fake-{i:05}/heartbeat"),
            &hb,
            QoS::AtLeastOnce,
            false,
        );
    }
    let mut max_len = 0;
    let s = wait_for(Duration::from_secs(30), || {
        let s = h.snapshot()?;
        max_len = max_len.max(s.registry_len);
        let c = &s.counters;
        // Every made-up id was either added (perhaps evicting one) or refused.
        (c.registry_of("pis_added") + c.registry_of("registry_full") >= 10_001).then_some(s)
    })
    .unwrap_or_else(|| {
        panic!(
            "flood not processed in 30 s: {:?}",
            h.snapshot().map(|s| s.counters)
        )
    });
    eprintln!(
        "10,000 made-up ids processed in {:?}: registry {} (max seen {max_len}), counters {:?}",
        started.elapsed(),
        s.registry_len,
        s.counters.registry
    );
    assert!(
        s.registry_len <= 1000 && max_len <= 1000,
        "{} / {max_len}",
        s.registry_len
    );
    let c = &s.counters;
    assert!(c.registry_of("registry_full") + c.registry_of("pis_evicted") >= 9000);
    assert_eq!(
        c.registry_of("pis_added"),
        s.registry_len as u64 + c.registry_of("pis_evicted")
    );
    assert!(
        s.pi("pi-real").is_some_and(|p| p.online),
        "the real Pi is still tracked"
    );
    // Later, the fakes time out (and would be forgotten after evict_after); the real Pi stays.
    let later = wait_for(Duration::from_secs(5), || {
        h.snapshot().filter(|s| s.online == 1)
    })
    .expect("fakes time out");
    assert_eq!(later.online_ids(), vec!["pi-real"]);
}

#[test]
fn live_made_up_ids_never_lock_a_killed_and_restarted_pi_out_of_the_registry() {
    // Issue 16, item 3: 5,200 made-up ids heartbeating every second filled the registry (5,000,
    // the default cap) with online strangers; a real Pi killed there (its will: offline) was
    // forgotten 105 ms later to make room for a stranger, and refused when it came back. The
    // same at a fifth of the scale (which a debug build on a shared core keeps up with):
    // 1,200 ids for a cap of 1,000.
    const FAKES: usize = 1_200;
    const CAP: usize = 1_000;
    let broker = Broker::start();
    let mut server = spawn_server(
        &broker,
        &["--segment-interval", "0s", "--max-pis", &CAP.to_string()],
    );
    let mut real = start_pi(&broker, "pi-real", "1");
    wait_table(&server, Duration::from_secs(5), |t| {
        t.active.contains_key("pi-real")
    })
    .expect("the real Pi active");

    // One probe, one round of heartbeats from every made-up id per second, for at most 60 s.
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let stop = Arc::clone(&stop);
        let port = broker.port();
        thread::spawn(move || {
            let probe = Probe::connect(port, "flood", &[]);
            let hb = heartbeat();
            let started = Instant::now();
            let mut rounds = 0;
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(60) {
                let round = Instant::now();
                for i in 0..FAKES {
                    probe.publish(
                        &format!("rpi/fake-{i:05}/heartbeat"),
                        &hb,
                        QoS::AtMostOnce,
                        false,
                    );
                }
                rounds += 1;
                thread::sleep(Duration::from_secs(1).saturating_sub(round.elapsed()));
            }
            rounds
        })
    };
    let full = wait_table(&server, Duration::from_secs(10), |t| t.active_count >= CAP)
        .expect("the made-up ids fill the registry");
    assert!(full.active.contains_key("pi-real"), "{}", full.text);

    real.kill9();
    wait_table(&server, Duration::from_secs(5), |t| {
        t.offline.get("pi-real").is_some_and(|r| r == "will")
    })
    .expect("the will takes the real Pi offline");
    // Several rounds of strangers looking for room.
    thread::sleep(Duration::from_millis(2_500));
    skip_backlog(&server);
    let _real = start_pi(&broker, "pi-real", "1");
    let back = wait_table(&server, Duration::from_secs(5), |t| {
        t.active.contains_key("pi-real")
    });
    assert!(
        back.is_some(),
        "the restarted Pi is not active:\n{}",
        server.stderr()
    );
    // From then on it is in every table, and the table stays readable.
    let until = Instant::now() + Duration::from_secs(4);
    let mut tables = 0;
    while Instant::now() < until {
        let t = next_table(&server, Duration::from_secs(3)).expect("tables keep coming");
        tables += 1;
        assert!(
            t.active_count > CAP - 10,
            "the flood goes on: {}",
            t.active_count
        );
        assert!(
            t.active.contains_key("pi-real"),
            "pi-real missing:\n{}",
            t.text
        );
        assert!(
            t.text.lines().count() < 250,
            "{} lines",
            t.text.lines().count()
        );
        assert_eq!(t.active.len() + t.active_hidden, t.active_count);
    }
    stop.store(true, Ordering::Relaxed);
    let rounds = flood.join().expect("flood thread");
    assert!(tables >= 3, "{tables} tables in 4 s");
    let status = server.terminate(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
    let err = server.stderr();
    assert!(
        !err.contains("pi-real: forgotten"),
        "the real Pi was evicted:\n{err}"
    );
    let refused = err
        .lines()
        .find(|l| l.contains("registry full"))
        .unwrap_or_else(|| panic!("strangers refused, and logged:\n{err}"));
    eprintln!("{rounds} rounds of {FAKES} made-up ids; {tables} tables; {refused}");
}
