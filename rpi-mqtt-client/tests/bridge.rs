//! The vehicle bridge (`vehicle = bridge`, docs/vehicle-bridge.md) with real processes: the
//! `rpi-client` binary listening on a socket in a temp dir, a real mosquitto, the reference
//! Python vehicle (examples/python/vehicle.py) and, end to end, the real `mqtt-server` and its
//! HTTP API. Raw vehicles written here with the bridge's own codec play what the Python one
//! does not: a second claim, garbage, a process that never reads.

mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{
    AckOutcome, Action, ActionKind, ActionOutcome, EntityFlags, Motion, Presence, RejectReason,
    StateReport, Target,
};
use rpi_client::bridge::frame::{
    BRIDGE_VERSION, Caps, Frame, Hello, HelloAck, HelloResult, Next, Reader,
};
use support::*;
use testkit::http::Client as Http;
use testkit::{Broker, Daemon, TempDir, wait_for};

const T: Duration = Duration::from_secs(10);

/// rpi-client `id` in bridge mode, its socket in `dir`, driving `entities`.
fn bridge_pi(broker: &Broker, id: &str, dir: &TempDir, entities: &str, extra: &[&str]) -> Daemon {
    let sock = socket_path(dir);
    let mut args = vec![
        "--vehicle",
        "bridge",
        "--bridge-socket",
        sock.to_str().unwrap(),
        "--entities",
        entities,
        "--log-level",
        "debug",
    ];
    args.extend_from_slice(extra);
    let pi = spawn(broker, id, &args);
    wait_for(T, || sock.exists().then_some(()))
        .unwrap_or_else(|| panic!("no bridge socket within {T:?}:\n{}", pi.stderr()));
    pi
}

fn socket_path(dir: &TempDir) -> PathBuf {
    dir.path().join("vehicle.sock")
}

/// The reference Python vehicle driving `entities` through `socket`.
fn python_vehicle(socket: &Path, entities: &str) -> Daemon {
    let script = testkit::bins::python_vehicle();
    let v = Daemon::spawn(
        &testkit::bins::python3(),
        &[
            script.to_str().unwrap(),
            "--socket",
            socket.to_str().unwrap(),
            "--entities",
            entities,
        ],
        &[],
    );
    v.wait_stdout(T, |l| l.contains("driving entities"))
        .unwrap_or_else(|| panic!("the Python vehicle did not start:\n{}", v.stderr()));
    v
}

/// A vehicle written here: connects and says Hello.
struct RawVehicle {
    stream: UnixStream,
    reader: Reader,
}

impl RawVehicle {
    fn connect(socket: &Path, entities: &[u32]) -> (RawVehicle, HelloAck) {
        let stream = UnixStream::connect(socket).expect("connect to the bridge socket");
        stream.set_read_timeout(Some(T)).unwrap();
        let mut v = RawVehicle {
            stream,
            reader: Reader::default(),
        };
        v.send(&Frame::Hello(Hello {
            version: BRIDGE_VERSION,
            caps: Caps::ALL,
            entities: entities.to_vec(),
        }));
        match v.next() {
            Some(Frame::HelloAck(a)) => (v, a),
            other => panic!("expected a HelloAck, got {other:?}"),
        }
    }

    fn send(&mut self, f: &Frame) {
        self.stream.write_all(&f.encode()).expect("write a frame");
    }

    /// Sends a state; false once the daemon has closed the connection.
    fn state(&mut self, entity_id: u32, x: i32) -> bool {
        let m = Motion {
            x,
            ..Motion::default()
        };
        let f = Frame::State(StateReport::new(entity_id, 0, m));
        self.stream.write_all(&f.encode()).is_ok()
    }

    /// The next frame, None when the daemon closed the connection (or after the timeout).
    fn next(&mut self) -> Option<Frame> {
        let mut buf = [0u8; 512];
        loop {
            if let Next::Frame(p) = self.reader.next_frame() {
                return Some(Frame::decode(&p).expect("the daemon sends valid frames"));
            }
            match self.stream.read(&mut buf) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.reader.push(&buf[..n]),
            }
        }
    }

    /// True once the daemon has closed the connection (reads until EOF, dropping frames).
    fn closed_within(&mut self, timeout: Duration) -> bool {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 512];
        let start = Instant::now();
        while start.elapsed() < timeout {
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
        false
    }
}

/// True when `seen` holds the ack of `(entity, segment)` with `outcome`.
fn has_ack(
    seen: &[testkit::probe::Seen],
    entity: u32,
    segment: u32,
    outcome: AckOutcome,
) -> Option<Instant> {
    seen.iter()
        .find(|s| {
            as_ack(s).is_some_and(|a| {
                a.entity_id == entity && a.segment_id == segment && a.outcome == outcome
            })
        })
        .map(|s| s.at)
}

/// The count in the bridge's summary at shutdown (`vehicle bridge stopped: ... N what`).
fn stopped_count(log: &str, what: &str) -> u64 {
    let line = log
        .lines()
        .find(|l| l.contains("vehicle bridge stopped: "))
        .unwrap_or_else(|| panic!("no bridge summary at shutdown:\n{log}"));
    line.split(", ")
        .find_map(|part| {
            let part = part.rsplit(": ").next()?;
            part.strip_suffix(what)?.trim().parse().ok()
        })
        .unwrap_or_else(|| panic!("no {what:?} count in {line}"))
}

fn action(id: u32, target: Target, kind: ActionKind) -> Action {
    Action {
        action_id: id,
        epoch: 0,
        target,
        action: kind,
        segment_id: 0,
    }
}

/// The largest gap between consecutive heartbeats in `seen`, and their count.
fn heartbeat_gaps(seen: &[testkit::probe::Seen], window: Duration) -> (Duration, usize) {
    let seen: Vec<Instant> = seen
        .iter()
        .filter(|s| as_heartbeat(s).is_some())
        .map(|s| s.at)
        .collect();
    let gap = seen
        .windows(2)
        .map(|w| w[1].saturating_duration_since(w[0]))
        .max()
        .unwrap_or(window);
    (gap, seen.len())
}

#[test]
fn without_a_vehicle_segments_and_actions_are_refused_and_the_state_says_no_driver() {
    let broker = Broker::start();
    let dir = TempDir::new("bridge-none");
    let probe = watch(&broker, "probe-none", "nodrv-pi");
    let pi = bridge_pi(&broker, "nodrv-pi", &dir, "1,2", &[]);
    wait_status(&probe, T, Presence::Online);

    let s = probe
        .wait_for(T, |s| as_state(s).is_some_and(|r| r.entity_id == 2))
        .expect("state reports");
    let r = as_state(&s).unwrap();
    assert_eq!(r.flags, EntityFlags::NO_DRIVER, "{r:?}");
    assert_eq!((r.vx, r.vy, r.segment_id), (0, 0, 0));

    send_segment(
        &probe,
        "nodrv-pi",
        &segment(1, 5, (0, 0), (100, 0), 100, 100),
    );
    wait_ack(
        &probe,
        T,
        1,
        5,
        AckOutcome::Rejected(RejectReason::VehicleUnavailable),
    );
    // An unknown entity is still UnknownEntity (checked first).
    send_segment(
        &probe,
        "nodrv-pi",
        &segment(9, 6, (0, 0), (100, 0), 100, 100),
    );
    wait_ack(
        &probe,
        T,
        9,
        6,
        AckOutcome::Rejected(RejectReason::UnknownEntity),
    );
    send_action(
        &probe,
        "nodrv-pi",
        &action(3, Target::Entity(2), ActionKind::Stop),
    );
    let a = probe
        .wait_for(T, |s| as_action_ack(s).is_some_and(|a| a.action_id == 3))
        .expect("an ActionAck");
    assert_eq!(
        as_action_ack(&a).unwrap().outcome,
        ActionOutcome::VehicleUnavailable
    );
    assert!(pi.stderr().contains("vehicle bridge listening on"));

    // A vehicle that sends its first state with its Hello, before the HelloAck: the state
    // counts, and the entity has a driver again.
    let mut stream = UnixStream::connect(socket_path(&dir)).unwrap();
    let hello = Frame::Hello(Hello {
        version: BRIDGE_VERSION,
        caps: Caps::ALL,
        entities: vec![1],
    });
    let state = Frame::State(StateReport::new(
        1,
        0,
        Motion {
            x: 4242,
            ..Motion::default()
        },
    ));
    let mut both = hello.encode();
    both.extend_from_slice(&state.encode());
    stream.write_all(&both).unwrap();
    let s = probe
        .wait_for(T, |s| {
            as_state(s).is_some_and(|r| r.entity_id == 1 && r.x == 4242)
        })
        .expect("the pipelined state is published");
    assert_eq!(as_state(&s).unwrap().flags, EntityFlags::NONE);
}

#[test]
fn an_entity_claimed_twice_or_unknown_is_refused_with_a_clear_answer() {
    let broker = Broker::start();
    let dir = TempDir::new("bridge-claim");
    let _pi = bridge_pi(&broker, "claim-pi", &dir, "1,2,3", &[]);
    let sock = socket_path(&dir);
    let (mut first, ack) = RawVehicle::connect(&sock, &[1, 2]);
    assert_eq!(ack.result, HelloResult::Ok);
    assert!(first.state(1, 0));
    let (mut second, ack) = RawVehicle::connect(&sock, &[3, 2]);
    assert_eq!(
        (ack.result, ack.entity_id),
        (HelloResult::Claimed, 2),
        "entity 2 is driven by the first process"
    );
    assert!(second.closed_within(Duration::from_secs(2)));
    let (mut third, ack) = RawVehicle::connect(&sock, &[7]);
    assert_eq!((ack.result, ack.entity_id), (HelloResult::UnknownEntity, 7));
    assert!(third.closed_within(Duration::from_secs(2)));
    // The refusals took nothing: entity 3 is still free, and the first process still drives
    // 1 and 2 until it goes, then 2 can be claimed again.
    let (_fourth, ack) = RawVehicle::connect(&sock, &[3]);
    assert_eq!(ack.result, HelloResult::Ok);
    drop(first);
    let ack = wait_for(T, || {
        let (_v, ack) = RawVehicle::connect(&sock, &[2]);
        (ack.result == HelloResult::Ok).then_some(ack)
    });
    assert!(ack.is_some(), "entity 2 is free once its process has gone");
}

#[test]
fn python_vehicle_drives_two_entities_through_a_real_server() {
    let broker = Broker::start();
    let dir = TempDir::new("bridge-py");
    let addr = format!("127.0.0.1:{}", testkit::broker::free_port());
    let server = testkit::daemons::spawn_server(
        &broker.addr(),
        &[
            "--http-listen",
            addr.as_str(),
            "--segment-interval",
            "0s",
            "--status-interval",
            "200ms",
        ],
    );
    let http = Http::new(addr);
    let pi = bridge_pi(&broker, "py-pi", &dir, "1,2", &[]);
    let entity = |id: u64| {
        let p = http.get("/api/pis/py-pi").ok()?.json();
        p["entities"]
            .as_array()?
            .iter()
            .find(|e| e["id"] == id)
            .cloned()
    };
    // No vehicle yet: the server shows both entities without a driver.
    let e = wait_for(T, || entity(2).filter(|e| e["no_driver"] == true));
    assert!(
        e.is_some(),
        "entity 2 shown without a driver:\n{}",
        pi.stderr()
    );

    let _vehicle = python_vehicle(&socket_path(&dir), "1,2");
    let driven = wait_for(T, || {
        entity(1)
            .filter(|e| e["no_driver"] == false)
            .and(entity(2).filter(|e| e["no_driver"] == false))
    });
    assert!(driven.is_some(), "a driver for both:\n{}", pi.stderr());

    let post = |entity: u32, start: [i32; 2], end: [i32; 2]| -> u64 {
        let body = serde_json::json!({
            "start": start, "end": end, "velocity_start": 800, "velocity_end": 400,
            "segment_type": 0
        });
        // A loaded machine may delay heartbeats past the server's timeout: retry while the
        // server calls the Pi offline (409), or does not lead yet (503, the first ~1.5 s).
        let r = wait_for(T, || {
            let r = http
                .post_json(
                    &format!("/api/pis/py-pi/entities/{entity}/segments"),
                    &body.to_string(),
                )
                .ok()?;
            (r.status != 409 && r.status != 503).then_some(r)
        })
        .expect("the server takes the segment");
        assert_eq!(r.status, 202, "{}", r.text());
        r.json()["segment_id"].as_u64().expect("a segment id")
    };
    let ends = [(1u32, [0, 0], [600, 300]), (2, [1000, 0], [1000, -500])];
    let ids: Vec<u64> = ends.iter().map(|(e, s, end)| post(*e, *s, *end)).collect();
    for id in &ids {
        let done = wait_for(Duration::from_secs(20), || {
            let s = http.get(&format!("/api/segments/{id}")).ok()?.json();
            (s["state"] != "sent" && s["state"] != "accepted").then_some(s)
        })
        .unwrap_or_else(|| panic!("segment {id} finished:\n{}", pi.stderr()));
        assert_eq!(done["state"], "completed", "{done}");
        assert!(done["accepted_at"].as_u64().is_some(), "{done}");
    }
    for (e, _, end) in ends {
        let at = wait_for(Duration::from_secs(5), || {
            entity(u64::from(e)).filter(|v| v["x"] == end[0] && v["y"] == end[1])
        });
        assert!(
            at.is_some(),
            "entity {e} at {end:?}: {:?}",
            entity(u64::from(e))
        );
    }
    // And in the server's status table.
    testkit::table::skip_backlog(&server);
    let table = testkit::table::wait_table(&server, T, |t| {
        t.active.get("py-pi").is_some_and(|p| {
            p.entities
                .get(&1)
                .is_some_and(|r| (r.x, r.y) == (600, 300) && !r.no_driver)
                && p.entities
                    .get(&2)
                    .is_some_and(|r| (r.x, r.y) == (1000, -500))
        })
    });
    assert!(
        table.is_some(),
        "the table shows both entities at their ends"
    );
}

#[test]
fn a_killed_vehicle_fails_its_segment_within_a_second_and_a_restart_restores_it() {
    let broker = Broker::start();
    let dir = TempDir::new("bridge-kill");
    let probe = watch(&broker, "probe-kill", "kill-pi");
    let pi = bridge_pi(&broker, "kill-pi", &dir, "1", &[]);
    wait_status(&probe, T, Presence::Online);
    let sock = socket_path(&dir);
    let mut vehicle = python_vehicle(&sock, "1");
    wait_for(T, || {
        probe
            .wait_for(Duration::from_millis(500), |s| {
                as_state(s).is_some_and(|r| r.flags.is_empty())
            })
            .map(|_| ())
    })
    .expect("entity 1 driven");

    // A long segment: accepted, then its vehicle is killed while driving it.
    send_segment(
        &probe,
        "kill-pi",
        &segment(1, 10, (0, 0), (100_000, 0), 500, 500),
    );
    wait_ack(&probe, T, 1, 10, AckOutcome::Accepted);
    std::thread::sleep(Duration::from_millis(300));
    probe.drain();
    let killed = Instant::now();
    vehicle.kill9();
    let failed = wait_ack(
        &probe,
        T,
        1,
        10,
        AckOutcome::Rejected(RejectReason::VehicleUnavailable),
    );
    let after = failed.at.saturating_duration_since(killed);
    assert!(
        after < Duration::from_secs(1),
        "the accepted segment failed {after:?} after the kill"
    );
    let s = probe
        .wait_for(T, |s| {
            as_state(s).is_some_and(|r| r.flags.contains(EntityFlags::NO_DRIVER))
        })
        .expect("a no-driver state");
    let r = as_state(&s).unwrap();
    assert_eq!((r.vx, r.vy, r.segment_id), (0, 0, 0), "{r:?}");
    assert!(r.x > 0, "the last known pose is kept: {r:?}");
    send_segment(
        &probe,
        "kill-pi",
        &segment(1, 11, (0, 0), (100, 0), 500, 500),
    );
    wait_ack(
        &probe,
        T,
        1,
        11,
        AckOutcome::Rejected(RejectReason::VehicleUnavailable),
    );
    // Heartbeats never paused.
    let (gap, n) = heartbeat_gaps(
        &probe.collect_for(Duration::from_secs(2)),
        Duration::from_secs(2),
    );
    assert!(
        n >= 3 && gap < Duration::from_millis(900),
        "{n} heartbeats, gap {gap:?}"
    );

    // Restarted: segments complete again.
    let _vehicle = python_vehicle(&sock, "1");
    let ok = wait_for(T, || {
        probe
            .wait_for(Duration::from_millis(500), |s| {
                as_state(s).is_some_and(|r| r.flags.is_empty())
            })
            .map(|_| ())
    });
    assert!(ok.is_some(), "driven again:\n{}", pi.stderr());
    send_segment(
        &probe,
        "kill-pi",
        &segment(1, 12, (0, 0), (200, 0), 1000, 1000),
    );
    wait_ack(&probe, T, 1, 12, AckOutcome::Accepted);
    wait_ack(&probe, T, 1, 12, AckOutcome::Completed);
    assert!(pi.stderr().contains("its vehicle process disconnected"));
}

#[test]
fn garbage_and_oversized_frames_close_the_connection_and_nothing_else_stalls() {
    let broker = Broker::start();
    let dir = TempDir::new("bridge-bad");
    let probe = watch(&broker, "probe-bad", "bad-pi");
    let pi = bridge_pi(&broker, "bad-pi", &dir, "1,2", &[]);
    wait_status(&probe, T, Presence::Online);
    let sock = socket_path(&dir);
    let _good = python_vehicle(&sock, "2");

    // A malformed frame after a good Hello: closed.
    let (mut bad, ack) = RawVehicle::connect(&sock, &[1]);
    assert_eq!(ack.result, HelloResult::Ok);
    bad.stream.write_all(&[3, 0, 0xde, 0xad, 0xbe]).unwrap();
    assert!(
        bad.closed_within(Duration::from_secs(2)),
        "closed after garbage"
    );
    // An oversized one: closed.
    let (mut big, ack) = wait_for(T, || {
        let (v, a) = RawVehicle::connect(&sock, &[1]);
        (a.result == HelloResult::Ok).then_some((v, a))
    })
    .expect("entity 1 free again");
    assert_eq!(ack.result, HelloResult::Ok);
    big.stream.write_all(&[0xff, 0xff, 0x32]).unwrap();
    assert!(
        big.closed_within(Duration::from_secs(2)),
        "closed after an oversized frame"
    );

    // A flood: 3 s of reconnects sending garbage, while entity 2 drives and heartbeats go on.
    send_segment(
        &probe,
        "bad-pi",
        &segment(2, 20, (0, 0), (1500, 0), 1000, 1000),
    );
    let rss_before = pi.rss_kib().expect("the daemon's RSS");
    let flood = std::thread::spawn({
        let sock = sock.clone();
        move || {
            let start = Instant::now();
            let mut frames = 0u64;
            let junk: Vec<u8> = (0..64u8).flat_map(|i| [4, 0, 0x99, i, i, i]).collect();
            while start.elapsed() < Duration::from_secs(3) && frames < 200_000 {
                if let Ok(mut s) = UnixStream::connect(&sock) {
                    let _ = s.write_all(&junk);
                    frames += 64;
                }
            }
            frames
        }
    });
    let seen = probe.collect_for(Duration::from_secs(3));
    let frames = flood.join().unwrap();
    assert!(frames > 1000, "the flood ran: {frames} frames");
    let (gap, n) = heartbeat_gaps(&seen, Duration::from_secs(3));
    assert!(
        n >= 4 && gap < Duration::from_millis(900),
        "{n} heartbeats, gap {gap:?}"
    );
    let done = has_ack(&seen, 2, 20, AckOutcome::Completed).is_some()
        || probe
            .wait_for(T, |s| {
                as_ack(s).is_some_and(|a| a.segment_id == 20 && a.outcome == AckOutcome::Completed)
            })
            .is_some();
    assert!(done, "entity 2 drove its segment during the flood");
    let rss_after = pi.rss_kib().expect("the daemon's RSS");
    assert!(
        rss_after < rss_before + 2048,
        "RSS grew from {rss_before} KiB to {rss_after} KiB under the flood"
    );
    let mut pi = pi;
    pi.terminate(T);
    let log = pi.stderr();
    assert!(stopped_count(&log, "malformed") >= 2, "{log}");
    assert_eq!(stopped_count(&log, "oversized"), 1, "{log}");
    assert!(
        count_lines(&log, "vehicle bridge: ") < 20,
        "the bad-input lines are rate-limited:\n{log}"
    );
}

#[test]
fn a_vehicle_that_never_reads_or_answers_is_dropped_and_does_not_stall_the_others() {
    let broker = Broker::start();
    let dir = TempDir::new("bridge-deaf");
    let probe = watch(&broker, "probe-deaf", "deaf-pi");
    let pi = bridge_pi(&broker, "deaf-pi", &dir, "1,2", &["--queue-depth", "64"]);
    wait_status(&probe, T, Presence::Online);
    let sock = socket_path(&dir);
    let _good = python_vehicle(&sock, "2");
    // Entity 1's process sends states but never reads a frame nor answers a segment.
    let (mut deaf, ack) = RawVehicle::connect(&sock, &[1]);
    assert_eq!(ack.result, HelloResult::Ok);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let states = std::thread::spawn({
        let stop = stop.clone();
        move || {
            for i in 0..200 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                if !deaf.state(1, i) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    probe.drain();
    let sent = Instant::now();
    for id in 1..=40 {
        send_segment(
            &probe,
            "deaf-pi",
            &segment(1, id, (0, 0), (100, 0), 100, 100),
        );
    }
    send_segment(
        &probe,
        "deaf-pi",
        &segment(2, 500, (0, 0), (800, 0), 1000, 1000),
    );
    // Unanswered for bridge_timeout (1 s): the process is dropped, its segments fail; the
    // other process drives on.
    let seen = probe.collect_for(Duration::from_secs(4));
    let failed = has_ack(
        &seen,
        1,
        1,
        AckOutcome::Rejected(RejectReason::VehicleUnavailable),
    )
    .expect("entity 1's segments failed");
    let after = failed.saturating_duration_since(sent);
    assert!(after < Duration::from_secs(3), "failed after {after:?}");
    assert!(has_ack(&seen, 2, 500, AckOutcome::Accepted).is_some());
    assert!(has_ack(&seen, 2, 500, AckOutcome::Completed).is_some());
    let (gap, n) = heartbeat_gaps(&seen, Duration::from_secs(4));
    assert!(
        n >= 6 && gap < Duration::from_millis(900),
        "{n} heartbeats, gap {gap:?}"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    states.join().unwrap();
    assert!(pi.stderr().contains("hung"), "{}", pi.stderr());
}

#[test]
fn a_frozen_vehicle_is_hung_after_bridge_timeout_and_its_segment_fails() {
    let broker = Broker::start();
    let dir = TempDir::new("bridge-stop");
    let probe = watch(&broker, "probe-frozen", "frozen-pi");
    let pi = bridge_pi(
        &broker,
        "frozen-pi",
        &dir,
        "1",
        &["--bridge-timeout", "600ms"],
    );
    wait_status(&probe, T, Presence::Online);
    let vehicle = python_vehicle(&socket_path(&dir), "1");
    send_segment(
        &probe,
        "frozen-pi",
        &segment(1, 30, (0, 0), (100_000, 0), 500, 500),
    );
    wait_ack(&probe, T, 1, 30, AckOutcome::Accepted);
    probe.drain();
    let frozen = Instant::now();
    vehicle.signal("STOP");
    let failed = wait_ack(
        &probe,
        T,
        1,
        30,
        AckOutcome::Rejected(RejectReason::VehicleUnavailable),
    );
    let after = failed.at.saturating_duration_since(frozen);
    // No state for 600 ms, noticed at the next step (20 ms), plus the ack's trip.
    assert!(
        after >= Duration::from_millis(500) && after < Duration::from_millis(1600),
        "failed {after:?} after the freeze"
    );
    vehicle.signal("CONT");
    assert!(
        pi.stderr().contains("hung: no state for"),
        "{}",
        pi.stderr()
    );
}

#[test]
fn actions_reach_the_vehicle_and_undeclared_ones_are_unsupported() {
    let broker = Broker::start();
    let dir = TempDir::new("bridge-act");
    let probe = watch(&broker, "probe-act", "act-pi");
    let _pi = bridge_pi(&broker, "act-pi", &dir, "1,2", &[]);
    wait_status(&probe, T, Presence::Online);
    let sock = socket_path(&dir);
    let _vehicle = python_vehicle(&sock, "1");
    send_segment(
        &probe,
        "act-pi",
        &segment(1, 40, (0, 0), (100_000, 0), 1000, 1000),
    );
    wait_ack(&probe, T, 1, 40, AckOutcome::Accepted);
    std::thread::sleep(Duration::from_millis(300));

    // Pause: the vehicle halts where it is (its states stop moving), the segment is kept.
    send_action(
        &probe,
        "act-pi",
        &action(1, Target::Entity(1), ActionKind::Pause),
    );
    let a = probe
        .wait_for(T, |s| as_action_ack(s).is_some_and(|a| a.action_id == 1))
        .expect("the pause's ack");
    assert_eq!(as_action_ack(&a).unwrap().outcome, ActionOutcome::Done);
    std::thread::sleep(Duration::from_millis(300));
    probe.drain();
    let xs: Vec<StateReport> = probe
        .collect_for(Duration::from_millis(600))
        .iter()
        .filter_map(as_state)
        .filter(|r| r.entity_id == 1)
        .collect();
    assert!(xs.len() >= 3, "{xs:?}");
    assert!(
        xs.iter()
            .all(|r| r.x == xs[0].x && r.vx == 0 && r.segment_id == 40),
        "paused in place: {xs:?}"
    );
    assert!(xs[0].flags.contains(EntityFlags::PAUSED));
    // Resume: it drives on.
    send_action(
        &probe,
        "act-pi",
        &action(2, Target::Entity(1), ActionKind::Resume),
    );
    let moved = probe.wait_for(T, |s| {
        as_state(s).is_some_and(|r| r.entity_id == 1 && r.x > xs[0].x + 100 && r.vx > 0)
    });
    assert!(moved.is_some(), "it drives on after resume");
    // Stop: the daemon cancels the segment, the vehicle halts.
    send_action(
        &probe,
        "act-pi",
        &action(3, Target::Entity(1), ActionKind::Stop),
    );
    wait_ack(
        &probe,
        T,
        1,
        40,
        AckOutcome::Rejected(RejectReason::Cancelled),
    );
    std::thread::sleep(Duration::from_millis(300));
    probe.drain();
    let after: Vec<StateReport> = probe
        .collect_for(Duration::from_millis(600))
        .iter()
        .filter_map(as_state)
        .filter(|r| r.entity_id == 1)
        .collect();
    assert!(
        after.len() >= 3 && after.iter().all(|r| r.x == after[0].x && r.segment_id == 0),
        "stopped for good: {after:?}"
    );

    // A process that declared no capability: pause and cancel are Unsupported, stop works.
    let stream = UnixStream::connect(&sock).unwrap();
    stream.set_read_timeout(Some(T)).unwrap();
    let mut plain = RawVehicle {
        stream,
        reader: Reader::default(),
    };
    plain.send(&Frame::Hello(Hello {
        version: BRIDGE_VERSION,
        caps: Caps(0),
        entities: vec![2],
    }));
    assert!(matches!(plain.next(), Some(Frame::HelloAck(a)) if a.result == HelloResult::Ok));
    assert!(plain.state(2, 0));
    for (id, kind, want) in [
        (10, ActionKind::Pause, ActionOutcome::Unsupported),
        (11, ActionKind::Cancel, ActionOutcome::Unsupported),
        (12, ActionKind::Stop, ActionOutcome::Done),
    ] {
        send_action(&probe, "act-pi", &action(id, Target::Entity(2), kind));
        let a = probe
            .wait_for(T, |s| as_action_ack(s).is_some_and(|a| a.action_id == id))
            .expect("an ActionAck");
        assert_eq!(as_action_ack(&a).unwrap().outcome, want, "{kind:?}");
    }
    // Only the stop reached it.
    match plain.next() {
        Some(Frame::Action(a)) => {
            assert_eq!((a.action, a.target), (ActionKind::Stop, Target::Entity(2)))
        }
        other => panic!("expected the stop, got {other:?}"),
    }
}
