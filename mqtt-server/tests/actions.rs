//! Instant actions end to end (issue #14's acceptance), with real processes: mosquitto, the
//! `mqtt-server` binary with its operator interface, real `rpi-client`s (protocol version 3),
//! and, for a version 2 Pi, a probe that heartbeats and reports in version 2 (rpi-client
//! always speaks the newest version): a stop sent over HTTP while an entity drives a long
//! segment with two more queued halts it at once (seen by a third-party subscriber) and ends
//! all three segments `rejected` (cancelled); a repeated delivery of the same action is
//! answered from the Pi's memory; `resume` after `pause` finishes the same segment; the fleet
//! stop halts every entity of two Pis and sends nothing to the version 2 Pi; and the library
//! API (`FleetHandle::action`, `stop_all`) reports each outcome on its ticket.

mod support;

use std::time::{Duration, Instant};

use common::{
    Action, ActionKind, EntityFlags, Heartbeat, Message, Point, StateReport, Target, TopicKind,
};
use rumqttc::QoS;
use serde_json::{Value, json};
use support::{server_with_http, start_pi};
use testkit::http::{Client as Http, Reply};
use testkit::probe::Probe;
use testkit::{Broker, wait_for};

const T: Duration = Duration::from_secs(15);

fn post(http: &Http, path: &str, body: &str) -> Reply {
    http.post_json(path, body).unwrap()
}

fn entity(http: &Http, pi: &str, id: u64) -> Option<Value> {
    let p = http.get(&format!("/api/pis/{pi}")).ok()?.json();
    p["entities"]
        .as_array()?
        .iter()
        .find(|e| e["id"] == id)
        .cloned()
}

/// Waits until `pi` is online with `entities` reported.
fn wait_entities(http: &Http, pi: &str, entities: &[u64]) {
    wait_for(T, || {
        let p = http.get(&format!("/api/pis/{pi}")).ok()?.json();
        let ids: Vec<u64> = p["entities"]
            .as_array()?
            .iter()
            .filter_map(|e| e["id"].as_u64())
            .collect();
        (p["online"] == true && ids == entities).then_some(())
    })
    .unwrap_or_else(|| panic!("{pi} online with entities {entities:?}"));
}

/// Sends a segment to `end` from where the entity is, at `v` mm/s; its id.
fn send_segment(http: &Http, pi: &str, entity: u64, end: (i32, i32), v: i32) -> u64 {
    let r = post(
        http,
        &format!("/api/pis/{pi}/entities/{entity}/segments"),
        &json!({"end": [end.0, end.1], "velocity_start": v, "velocity_end": v, "segment_type": 0})
            .to_string(),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    r.json()["segment_id"].as_u64().unwrap()
}

/// Waits until the entity reports driving `segment` at a non-zero velocity.
fn wait_driving(http: &Http, pi: &str, id: u64, segment: u64) -> Value {
    wait_for(T, || {
        let e = entity(http, pi, id)?;
        (e["segment_id"] == segment && (e["vx"] != 0 || e["vy"] != 0)).then_some(e)
    })
    .unwrap_or_else(|| panic!("{pi}/{id} driving segment {segment}"))
}

/// Posts an action; its id.
fn send_action(http: &Http, path: &str, body: Value) -> u64 {
    let r = post(http, path, &body.to_string());
    assert_eq!(r.status, 202, "{}", r.text());
    r.json()["action_id"].as_u64().unwrap()
}

/// Waits until action `id` is answered (or failed): its record.
fn wait_answered(http: &Http, id: u64) -> Value {
    wait_for(T, || {
        let r = http.get(&format!("/api/actions/{id}")).ok()?;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        (v["state"] != "sent").then_some(v)
    })
    .unwrap_or_else(|| panic!("action {id} answered"))
}

fn segment_record(http: &Http, id: u64) -> Value {
    http.get(&format!("/api/segments/{id}")).unwrap().json()
}

fn decode_state(payload: &[u8]) -> Option<StateReport> {
    match Message::decode(payload) {
        Ok(Message::State(s)) => Some(s),
        _ => None,
    }
}

fn assert_error(r: &Reply, status: u16, field: Value) -> String {
    assert_eq!(r.status, status, "{}", r.text());
    let v = r.json();
    assert_eq!(v["field"], field, "{v}");
    v["error"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn a_stop_halts_at_once_and_cancels_the_running_and_queued_segments() {
    let broker = Broker::start();
    let (_server, http) = server_with_http(&broker, &[]);
    let _pi = start_pi(&broker, "act-pi", "1,2");
    wait_entities(&http, "act-pi", &[1, 2]);
    // A third party watching the Pi's state and acks.
    let watcher = Probe::connect(
        broker.port(),
        "act-watcher",
        &["rpi/act-pi/state", "rpi/act-pi/ack"],
    );
    let mut events = http.events("/api/events").unwrap();

    // A 100 m segment at 1 m/s, and two more queued behind it.
    let start = entity(&http, "act-pi", 1).unwrap();
    let (x, y) = (
        start["x"].as_i64().unwrap() as i32,
        start["y"].as_i64().unwrap() as i32,
    );
    let segments = [
        send_segment(&http, "act-pi", 1, (x + 100_000, y), 1000),
        send_segment(&http, "act-pi", 1, (x, y + 1000), 1000),
        send_segment(&http, "act-pi", 1, (x, y), 1000),
    ];
    wait_driving(&http, "act-pi", 1, segments[0]);
    for s in &segments[1..] {
        wait_for(T, || {
            (segment_record(&http, *s)["state"] == "accepted").then_some(())
        })
        .expect("the queued segments accepted");
    }
    watcher.drain();

    let sent = Instant::now();
    let id = send_action(
        &http,
        "/api/pis/act-pi/entities/1/actions",
        json!({"action": "stop"}),
    );
    assert_ne!(id, 0);
    // The next state report of entity 1 shows it halted, published at once by the Pi.
    let halted = watcher
        .wait_for(Duration::from_secs(5), |m| {
            m.topic == "rpi/act-pi/state"
                && decode_state(&m.payload).is_some_and(|s| {
                    s.entity_id == 1
                        && s.vx == 0
                        && s.vy == 0
                        && s.flags.contains(EntityFlags::STOPPED)
                })
        })
        .expect("a state report of entity 1 halted and STOPPED");
    let latency = halted.at.saturating_duration_since(sent);
    eprintln!("HTTP stop -> halted state seen by a third party: {latency:?}");
    assert!(latency < Duration::from_secs(2), "{latency:?}");

    let rec = wait_answered(&http, id);
    assert_eq!(rec["state"], "done", "{rec}");
    assert_eq!(rec["outcome"], "done", "{rec}");
    assert_eq!(rec["cancelled"], 3, "{rec}");
    assert_eq!(rec["repeat"], false, "{rec}");
    assert_eq!(
        (&rec["pi"], &rec["target"], &rec["entity"], &rec["action"]),
        (
            &json!("act-pi"),
            &json!("entity"),
            &json!(1),
            &json!("stop")
        )
    );
    assert!(rec["acked_at"].as_u64() >= rec["sent_at"].as_u64(), "{rec}");
    for s in segments {
        let r = segment_record(&http, s);
        assert_eq!(
            (&r["state"], &r["reason"]),
            (&json!("rejected"), &json!("cancelled")),
            "{r}"
        );
    }
    let e = wait_for(T, || {
        entity(&http, "act-pi", 1).filter(|e| e["stopped"] == true)
    })
    .expect("the stopped flag in the API");
    assert_eq!(
        (&e["vx"], &e["vy"], &e["segment_id"]),
        (&json!(0), &json!(0), &json!(0))
    );
    assert_eq!((&e["paused"], &e["flags"]), (&json!(false), &json!(2)));
    assert_eq!(entity(&http, "act-pi", 2).unwrap()["stopped"], false);
    // The `action` event.
    let ev = wait_for(T, || {
        let v = events.next_named("action", Duration::from_secs(1))?.data;
        (v["action_id"] == id).then_some(v)
    })
    .expect("an action event");
    assert_eq!(
        (&ev["state"], &ev["cancelled"]),
        (&json!("done"), &json!(3))
    );

    // The same action delivered again (as a QoS 1 re-delivery would): answered from the
    // Pi's memory, nothing executed again; the server counts the second answer a duplicate.
    let epoch = http.get(&format!("/api/actions/{id}")).unwrap().json()["epoch"]
        .as_u64()
        .expect("the action's epoch") as u32;
    assert_ne!(epoch, 0, "stamped with the leader's epoch");
    let again = Action {
        action_id: id as u32,
        epoch,
        target: Target::Entity(1),
        action: ActionKind::Stop,
        segment_id: 0,
    };
    watcher.publish(
        "server/act-pi/action",
        Message::Action(again).encode().as_slice(),
        QoS::AtLeastOnce,
        false,
    );
    let m = watcher
        .wait_for(Duration::from_secs(5), |m| {
            m.topic == "rpi/act-pi/ack"
                && matches!(Message::decode(&m.payload), Ok(Message::ActionAck(a)) if a.action_id == id as u32)
        })
        .expect("the repeated action's ack");
    let Ok(Message::ActionAck(a)) = Message::decode(&m.payload) else {
        unreachable!()
    };
    assert!(a.repeat, "{a:?}");
    assert_eq!(a.cancelled, 3, "the first answer, from memory");
    wait_for(T, || {
        let f = http.get("/api/fleet").ok()?.json();
        (f["counters"]["action_acks_duplicate"] == 1).then_some(())
    })
    .expect("the repeat counted as a duplicate ack");
    assert_eq!(
        wait_answered(&http, id)["repeat"],
        false,
        "the record keeps the first answer"
    );

    let metrics = http.get("/metrics").unwrap().text();
    for line in [
        "fleet_actions_total{outcome=\"done\"} 1",
        "fleet_actions_sent_total 1",
        "fleet_action_acks_duplicate_total 1",
        "fleet_messages_received_total{kind=\"action_ack\"} 2",
        "fleet_action_ack_latency_seconds_count 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
}

#[test]
fn resume_after_pause_finishes_the_same_segment() {
    let broker = Broker::start();
    let (_server, http) = server_with_http(&broker, &[]);
    let _pi = start_pi(&broker, "pause-pi", "1");
    wait_entities(&http, "pause-pi", &[1]);
    let start = entity(&http, "pause-pi", 1).unwrap();
    let (x, y) = (
        start["x"].as_i64().unwrap() as i32,
        start["y"].as_i64().unwrap() as i32,
    );
    // 3 m at 1 m/s.
    let seg = send_segment(&http, "pause-pi", 1, (x + 3000, y), 1000);
    wait_driving(&http, "pause-pi", 1, seg);

    let id = send_action(
        &http,
        "/api/pis/pause-pi/actions",
        json!({"action": "pause"}),
    );
    let rec = wait_answered(&http, id);
    assert_eq!(
        (&rec["state"], &rec["target"], &rec["cancelled"]),
        (&json!("done"), &json!("all"), &json!(0)),
        "{rec}"
    );
    let paused = wait_for(T, || {
        entity(&http, "pause-pi", 1).filter(|e| e["paused"] == true && e["vx"] == 0 && e["vy"] == 0)
    })
    .expect("paused, halted");
    assert_eq!(paused["segment_id"], seg, "the running segment is kept");
    std::thread::sleep(Duration::from_millis(800));
    let still = entity(&http, "pause-pi", 1).unwrap();
    assert_eq!(
        (&still["x"], &still["y"], &still["progress"]),
        (&paused["x"], &paused["y"], &paused["progress"]),
        "not driven while paused"
    );
    assert_eq!(segment_record(&http, seg)["state"], "accepted");

    let id = send_action(
        &http,
        "/api/pis/pause-pi/entities/1/actions",
        json!({"action": "resume"}),
    );
    assert_eq!(wait_answered(&http, id)["state"], "done");
    let done = wait_for(T, || {
        let r = segment_record(&http, seg);
        (r["state"] != "accepted").then_some(r)
    })
    .expect("the segment finished");
    assert_eq!(done["state"], "completed", "{done}");
    // The report after the Completed ack: idle at the end, no flags.
    let e = wait_for(T, || {
        entity(&http, "pause-pi", 1).filter(|e| e["segment_id"] == 0)
    })
    .expect("idle after the segment");
    assert_eq!(
        (&e["paused"], &e["stopped"]),
        (&json!(false), &json!(false))
    );
    assert!(
        (e["x"].as_i64().unwrap() - i64::from(x + 3000)).abs() <= 5,
        "{e}"
    );

    // A cancel of a segment that is not there: answered unknown_segment.
    let id = send_action(
        &http,
        "/api/pis/pause-pi/entities/1/actions",
        json!({"action": "cancel", "segment_id": seg}),
    );
    let rec = wait_answered(&http, id);
    assert_eq!(
        (&rec["state"], &rec["segment_id"]),
        (&json!("unknown_segment"), &json!(seg)),
        "{rec}"
    );
}

/// A version 2 "Pi": one heartbeat and one state report of entity 1, in version 2 (the
/// server runs with a long heartbeat timeout, so it stays online).
fn v2_pi(broker: &Broker, id: &str) -> Probe {
    let p = Probe::connect(broker.port(), id, &[]);
    let cid = common::ClientId::new(id).unwrap();
    let now = mqtt_link::daemon::wall_ms();
    p.publish(
        &cid.topic(TopicKind::Heartbeat),
        Message::Heartbeat(Heartbeat {
            seq: 1,
            timestamp_ms: now,
        })
        .encode_as(2)
        .unwrap()
        .as_slice(),
        QoS::AtLeastOnce,
        false,
    );
    p.publish(
        &cid.topic(TopicKind::State),
        Message::State(StateReport::at_rest(1, now, Point::new(0, 0), 0))
            .encode_as(2)
            .unwrap()
            .as_slice(),
        QoS::AtLeastOnce,
        false,
    );
    p
}

#[test]
fn the_fleet_stop_halts_every_entity_of_two_pis_and_skips_a_version_2_pi() {
    let broker = Broker::start();
    let (_server, http) = server_with_http(&broker, &["--heartbeat-timeout", "60s"]);
    let actions = Probe::connect(broker.port(), "action-watcher", &["server/+/action"]);
    let _a = start_pi(&broker, "fs-1", "1,2");
    let b = start_pi(&broker, "fs-2", "3,4");
    let _old = v2_pi(&broker, "old-pi");
    wait_entities(&http, "fs-1", &[1, 2]);
    wait_entities(&http, "fs-2", &[3, 4]);
    wait_entities(&http, "old-pi", &[1]);
    assert_eq!(http.get("/api/pis/old-pi").unwrap().json()["protocol"], 2);

    // Every entity of the two Pis drives a long segment.
    for (pi, e) in [("fs-1", 1), ("fs-1", 2), ("fs-2", 3), ("fs-2", 4)] {
        let p = entity(&http, pi, e).unwrap();
        let (x, y) = (
            p["x"].as_i64().unwrap() as i32,
            p["y"].as_i64().unwrap() as i32,
        );
        let s = send_segment(&http, pi, e, (x + 100_000, y), 1000);
        wait_driving(&http, pi, e, s);
    }

    // A version 2 Pi gets no action: unsupported at once, nothing published.
    let r = post(&http, "/api/pis/old-pi/actions", r#"{"action": "stop"}"#);
    let msg = assert_error(&r, 422, json!("pi"));
    assert_eq!(msg, "unsupported (protocol 2)");

    let r = post(&http, "/api/actions", r#"{"action": "stop"}"#);
    assert_eq!(r.status, 202, "{}", r.text());
    let v = r.json();
    let sent: Vec<(String, u64)> = v["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["pi"].as_str().unwrap().to_owned(),
                a["action_id"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        sent.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
        ["fs-1", "fs-2"],
        "{v}"
    );
    assert_eq!(
        v["unsupported"],
        json!([{"pi": "old-pi", "protocol": 2, "error": "unsupported (protocol 2)"}])
    );
    assert_eq!(v["not_sent"], json!([]));
    for (_, id) in &sent {
        let rec = wait_answered(&http, *id);
        assert_eq!(
            (&rec["state"], &rec["target"], &rec["cancelled"]),
            // One segment per entity, two entities per Pi.
            (&json!("done"), &json!("all"), &json!(2)),
            "{rec}"
        );
    }
    for (pi, e) in [("fs-1", 1), ("fs-1", 2), ("fs-2", 3), ("fs-2", 4)] {
        wait_for(T, || {
            entity(&http, pi, e).filter(|v| v["stopped"] == true && v["vx"] == 0 && v["vy"] == 0)
        })
        .unwrap_or_else(|| panic!("{pi}/{e} stopped"));
    }
    // Exactly the two actions went out, none to the version 2 Pi.
    let seen = actions.collect_for(Duration::from_millis(500));
    let topics: Vec<&str> = seen.iter().map(|m| m.topic.as_str()).collect();
    assert_eq!(topics, ["server/fs-1/action", "server/fs-2/action"]);

    // The errors.
    assert_error(
        &post(&http, "/api/pis/nobody/actions", r#"{"action": "stop"}"#),
        404,
        json!("pi"),
    );
    assert_error(
        &post(
            &http,
            "/api/pis/fs-1/entities/9/actions",
            r#"{"action": "stop"}"#,
        ),
        404,
        json!("entity"),
    );
    assert_error(
        &post(
            &http,
            "/api/pis/fs-1/entities/x/actions",
            r#"{"action": "stop"}"#,
        ),
        400,
        json!("entity"),
    );
    assert_error(
        &post(&http, "/api/pis/fs-1/actions", r#"{"action": "halt"}"#),
        400,
        json!("action"),
    );
    assert_error(
        &post(
            &http,
            "/api/pis/fs-1/actions",
            r#"{"action": "stop", "segment_id": 4}"#,
        ),
        400,
        json!("segment_id"),
    );
    assert_error(&post(&http, "/api/pis/fs-1/actions", "{"), 400, Value::Null);
    assert_error(
        &post(&http, "/api/actions", r#"{"action": "pause"}"#),
        400,
        json!("action"),
    );
    assert_error(
        &http.get("/api/actions/x").unwrap(),
        400,
        json!("action_id"),
    );
    assert_error(
        &http.get("/api/pis/fs-1/actions").unwrap(),
        405,
        Value::Null,
    );
    // HEAD of the event stream: headers only, the connection is not taken over.
    let head = http.request("HEAD", "/api/events", None).unwrap();
    assert_eq!(
        (head.status, head.header("content-type")),
        (200, Some("text/event-stream"))
    );

    // An offline Pi: 409.
    support::shut_down(b);
    wait_for(T, || {
        (http.get("/api/pis/fs-2").ok()?.json()["online"] == false).then_some(())
    })
    .expect("fs-2 offline");
    assert_error(
        &post(&http, "/api/pis/fs-2/actions", r#"{"action": "resume"}"#),
        409,
        json!("pi"),
    );
    assert!(
        actions.collect_for(Duration::from_millis(300)).is_empty(),
        "nothing more published"
    );
}

#[test]
fn the_library_api_reports_each_outcome_on_its_ticket() {
    use mqtt_server::{ActionError, ActionReport};
    let broker = Broker::start();
    let server = support::start_server(&support::config(&broker));
    let h = server.handle();
    let _pi = start_pi(&broker, "lib-pi", "1,2");
    testkit::wait_for(T, || {
        h.pi("lib-pi")
            .filter(|p| p.online && p.entities.len() == 2)
            .map(|_| ())
    })
    .expect("lib-pi online with 2 entities");
    let t = h
        .action("lib-pi", Target::Entity(2), ActionKind::Pause, 0)
        .unwrap();
    let Some(ActionReport::Acked {
        outcome: common::ActionOutcome::Done,
        repeat: false,
        cancelled: 0,
        attempts: 1,
        ..
    }) = t.wait(T)
    else {
        panic!("pause answered Done");
    };
    assert_eq!(h.action_record(t.id).unwrap().state, "done");
    assert_eq!(
        h.action("lib-pi", Target::Entity(9), ActionKind::Stop, 0)
            .unwrap_err(),
        ActionError::UnknownEntity
    );
    assert_eq!(
        h.action("nobody", Target::All, ActionKind::Stop, 0)
            .unwrap_err(),
        ActionError::UnknownPi
    );
    let all = h.stop_all().unwrap();
    assert_eq!(all.len(), 1);
    let (pi, ticket) = &all[0];
    assert_eq!(pi, "lib-pi");
    let report = ticket.as_ref().unwrap().wait(T);
    assert!(
        matches!(
            report,
            Some(ActionReport::Acked {
                outcome: common::ActionOutcome::Done,
                ..
            })
        ),
        "{report:?}"
    );
    let last = server.shutdown();
    assert_eq!(last.counters.actions.get("done"), Some(&2));
}
