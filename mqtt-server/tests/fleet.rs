//! The fleet as the status table shows it, with the real `mqtt-server` and `rpi-client`
//! binaries: Pis and their entities appear, entities drive the segments the demo planner
//! sends, a kill -9'd Pi leaves the active list within the heartbeat timeout, a stopped
//! (SIGSTOP) one times out, a cleanly stopped one is listed offline and comes back.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use common::{Message, Segment};
use support::*;
use testkit::{Broker, Probe};

#[test]
fn two_pis_with_three_entities_appear_and_drive_their_segments() {
    let broker = Broker::start();
    let segments = Probe::connect(broker.port(), "watch-segments", &["server/+/segment"]);
    let server = spawn_server(
        &broker,
        &["--status-interval", "200ms", "--segment-interval", "1s"],
    );
    let _a = start_pi(&broker, "rpi_client_001", "1,2,3");
    let _b = start_pi(&broker, "rpi_client_002", "1,2,3");

    let first = wait_table(&server, Duration::from_secs(5), |t| {
        t.active_count == 2 && t.active.values().all(|p| p.entities.len() == 3)
    })
    .unwrap_or_else(|| {
        panic!(
            "both Pis with 3 entities within 5 s; stderr:\n{}",
            server.stderr()
        )
    });
    for (id, pi) in &first.active {
        assert_eq!(pi.entities_count, 3, "{id}");
        assert!(pi.last_hb_ms < 1500, "{id}: {}", pi.last_hb_ms);
        assert_eq!(
            pi.entities.keys().copied().collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
    }
    assert_eq!(first.offline_count, 0);
    let start: BTreeMap<(String, u32), (i32, i32)> = first
        .active
        .iter()
        .flat_map(|(id, p)| {
            p.entities
                .iter()
                .map(move |(e, r)| ((id.clone(), *e), (r.x, r.y)))
        })
        .collect();

    // Watch for ~4.5 s: every entity position shown while a segment is in progress must lie
    // on that segment, and every entity must get somewhere.
    let mut sent: HashMap<u32, (String, Segment)> = HashMap::new();
    let mut on_segment: BTreeMap<(String, u32), usize> = BTreeMap::new();
    let mut moved: BTreeMap<(String, u32), f64> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_millis(4500);
    while Instant::now() < deadline {
        let t = next_table(&server, Duration::from_secs(2)).expect("tables keep coming");
        for s in std::iter::from_fn(|| segments.next(Duration::ZERO)) {
            if let Ok(Message::Segment(seg)) = Message::decode(&s.payload) {
                let pi = s.topic.split('/').nth(1).unwrap().to_owned();
                sent.insert(seg.segment_id, (pi, seg));
            }
        }
        assert_eq!(t.active_count, 2, "{}", t.text);
        for (id, pi) in &t.active {
            for (e, row) in &pi.entities {
                let key = (id.clone(), *e);
                let (x0, y0) = start[&key];
                let d = f64::from(row.x - x0).hypot(f64::from(row.y - y0));
                let m = moved.entry(key.clone()).or_default();
                *m = m.max(d);
                let Some((seg_id, _)) = &row.seg else {
                    continue;
                };
                let Some((to, seg)) = sent.get(seg_id) else {
                    continue; // the probe has not seen it yet
                };
                assert_eq!(
                    (to, seg.entity_id),
                    (id, *e),
                    "segment {seg_id} went elsewhere"
                );
                let off = distance_to_segment((row.x, row.y), seg.start, seg.end);
                assert!(
                    off <= 5.0,
                    "{id}/{e} at ({}, {}) is {off:.0} mm off segment {seg_id} {:?}->{:?}",
                    row.x,
                    row.y,
                    seg.start,
                    seg.end
                );
                *on_segment.entry(key).or_default() += 1;
            }
        }
    }
    for key in start.keys() {
        assert!(
            on_segment.get(key).copied().unwrap_or(0) >= 2,
            "{key:?} never seen on a segment: {on_segment:?}"
        );
        assert!(
            moved[key] >= 500.0,
            "{key:?} moved only {:.0} mm",
            moved[key]
        );
    }
    assert!(
        sent.len() >= 6,
        "at least one leg per entity: {}",
        sent.len()
    );
}

#[test]
fn killed_pi_leaves_the_active_list_within_the_heartbeat_timeout() {
    let broker = Broker::start();
    let server = spawn_server(
        &broker,
        &["--status-interval", "50ms", "--segment-interval", "0s"],
    );
    let mut victim = start_pi(&broker, "pi-victim", "1,2,3");
    let _other = start_pi(&broker, "pi-other", "1");
    wait_table(&server, Duration::from_secs(5), |t| t.active_count == 2).expect("both Pis active");
    let killed = Instant::now();
    victim.kill9();
    let gone = wait_table(&server, Duration::from_secs(3), |t| {
        !t.active.contains_key("pi-victim")
    })
    .expect("the killed Pi leaves the active list");
    let took = gone.at.saturating_duration_since(killed);
    eprintln!("kill -> gone from the active list: {took:?}");
    assert!(
        took <= Duration::from_millis(1600),
        "{took:?}\n{}",
        gone.text
    );
    assert!(gone.active.contains_key("pi-other"));
    assert_eq!(
        gone.offline.get("pi-victim").map(String::as_str),
        Some("will")
    );
    assert_eq!(gone.offline_count, 1);
}

#[test]
fn clean_shutdown_is_listed_offline_and_the_pi_comes_back() {
    let broker = Broker::start();
    let server = spawn_server(
        &broker,
        &["--status-interval", "50ms", "--segment-interval", "0s"],
    );
    let pi = start_pi(&broker, "pi-7", "4");
    wait_table(&server, Duration::from_secs(5), |t| t.active_count == 1).expect("pi-7 active");
    shut_down(pi);
    let t =
        wait_table(&server, Duration::from_secs(2), |t| t.active_count == 0).expect("pi-7 offline");
    assert_eq!(
        t.offline.get("pi-7").map(String::as_str),
        Some("clean shutdown"),
        "{}",
        t.text
    );
    let _again = start_pi(&broker, "pi-7", "4");
    let t =
        wait_table(&server, Duration::from_secs(3), |t| t.active_count == 1).expect("pi-7 back");
    assert_eq!(t.offline_count, 0);
    let err = server.stderr();
    let lines = |needle: &str| err.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(lines("pi-7: offline (clean shutdown"), 1, "{err}");
    assert_eq!(lines("pi-7: online"), 2, "{err}");
}

#[test]
fn a_hung_pi_times_out_after_the_heartbeat_timeout() {
    let broker = Broker::start();
    let beats = Probe::connect(broker.port(), "watch-beats", &["rpi/pi-hung/heartbeat"]);
    let server = spawn_server(
        &broker,
        &["--status-interval", "20ms", "--segment-interval", "0s"],
    );
    let pi = start_pi(&broker, "pi-hung", "1");
    wait_table(&server, Duration::from_secs(5), |t| t.active_count == 1).expect("active");
    // SIGSTOP: the process hangs with its connection open; the broker keeps it (keep-alive
    // 5 s) and sends no will, so only the heartbeat timeout can tell.
    pi.signal("STOP");
    let gone = wait_table(&server, Duration::from_secs(4), |t| t.active_count == 0)
        .expect("the hung Pi leaves the active list");
    let last_beat = std::iter::from_fn(|| beats.next(Duration::ZERO))
        .map(|s| s.at)
        .max()
        .expect("heartbeats seen");
    let after = gone.at.saturating_duration_since(last_beat);
    eprintln!("last heartbeat -> gone from the active list: {after:?}");
    assert!(after >= Duration::from_millis(1400), "too early: {after:?}");
    assert!(after <= Duration::from_millis(1600), "too late: {after:?}");
    assert_eq!(
        gone.offline.get("pi-hung").map(String::as_str),
        Some("heartbeat timeout"),
        "{}",
        gone.text
    );
    pi.signal("CONT");
    wait_table(&server, Duration::from_secs(3), |t| t.active_count == 1)
        .expect("back after SIGCONT");
}
