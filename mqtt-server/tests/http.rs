//! The operator interface end to end, with real processes: mosquitto, the `mqtt-server`
//! binary with `--http-listen 127.0.0.1:PORT`, and a real `rpi-client` driving entities 1
//! and 2 (issue #12's acceptance): the fleet over `GET /api/fleet`, a segment sent with
//! `POST` driven to completion, the error statuses, the event stream, `/metrics` read by the
//! reference Prometheus parser, the token, the body limit, and a slow event reader dropped
//! while the server keeps ingesting.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Heartbeat, Motion, StateReport};
use rumqttc::{Client, MqttOptions, QoS};
use serde_json::{Value, json};
use support::{server_with_http, spawn_server, start_pi};
use testkit::broker::free_port;
use testkit::http::Client as Http;
use testkit::{Broker, Daemon, TempDir, wait_for};

/// The fleet once `pi` is online with entities 1 and 2.
fn wait_fleet(http: &Http, pi: &str) -> Value {
    wait_for(Duration::from_secs(15), || {
        let f = http.get("/api/fleet").ok()?.json();
        let p = f["pis"].as_array()?.iter().find(|p| p["id"] == pi)?.clone();
        let ids: Vec<u64> = p["entities"]
            .as_array()?
            .iter()
            .filter_map(|e| e["id"].as_u64())
            .collect();
        (p["online"] == true && ids == [1, 2]).then_some(f)
    })
    .expect("the Pi and both entities within 15 s")
}

fn entity(http: &Http, pi: &str, id: u64) -> Value {
    let p = http.get(&format!("/api/pis/{pi}")).unwrap().json();
    p["entities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == id)
        .cloned()
        .unwrap()
}

fn assert_error(r: &testkit::http::Reply, status: u16, field: Value) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert!(
        v["error"].as_str().is_some_and(|m| !m.is_empty()),
        "a message: {v}"
    );
    assert_eq!(v["field"], field, "{v}");
}

/// Runs the reference parser (Python's prometheus_client) over `text`: the families as
/// `{name: {"type": t, "samples": [[name, labels, value], ...]}}`. A missing parser fails the
/// test: it is installed by scripts/install-deps.sh.
fn parse_metrics(text: &str) -> Value {
    const SCRIPT: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for f in text_string_to_metric_families(sys.stdin.read()):
    out[f.name] = {"type": f.type, "samples": [[s.name, s.labels, s.value] for s in f.samples]}
print(json.dumps(out))
"#;
    let python = ["/usr/bin/python3", "python3"]
        .into_iter()
        .find(|p| {
            Command::new(p)
                .args(["-c", "import prometheus_client"])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect(
            "no python3 with prometheus_client: install python3-prometheus-client \
             (scripts/install-deps.sh does)",
        );
    let mut child = Command::new(python)
        .args(["-c", SCRIPT])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The value of `sample` (with exactly `labels`) in parsed metrics.
fn sample(m: &Value, family: &str, sample: &str, labels: Value) -> f64 {
    m[family]["samples"]
        .as_array()
        .unwrap_or_else(|| panic!("no family {family}"))
        .iter()
        .find(|s| s[0] == sample && s[1] == labels)
        .and_then(|s| s[2].as_f64())
        .unwrap_or_else(|| panic!("no sample {sample} {labels} in {family}"))
}

#[test]
fn fleet_segments_errors_events_and_metrics() {
    let broker = Broker::start();
    let (_server, http) = server_with_http(&broker, &[]);
    let mut pi = start_pi(&broker, "pi-http", "1,2");
    let fleet = wait_fleet(&http, "pi-http");
    assert_eq!(fleet["broker_connected"], true);
    assert!(fleet["counters"]["messages"]["heartbeat"].as_u64() > Some(0));
    let one = http.get("/api/pis/pi-http").unwrap();
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["suspected_duplicate"], false);
    let page = http.get("/").unwrap();
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );

    let metrics_before = parse_metrics(&http.get("/metrics").unwrap().text());
    let mut events = http.events("/api/events").unwrap();
    assert_eq!(events.status, 200);
    let state = events
        .next_named("state", Duration::from_secs(5))
        .expect("state events");
    assert_eq!(state.data["pi"], "pi-http");

    // A segment from where entity 1 stands (`start` omitted) to 400 mm further along x.
    let e = entity(&http, "pi-http", 1);
    let (x0, y0) = (e["x"].as_i64().unwrap(), e["y"].as_i64().unwrap());
    let end = [x0 + 400, y0];
    let r = http
        .post_json(
            "/api/pis/pi-http/entities/1/segments",
            &json!({"end": end, "velocity_start": 800, "velocity_end": 800, "segment_type": 0})
                .to_string(),
        )
        .unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["segment_id"].as_u64().expect("a segment id");
    let done = wait_for(Duration::from_secs(15), || {
        let s = http.get(&format!("/api/segments/{id}")).ok()?.json();
        (s["state"] == "completed").then_some(s)
    })
    .expect("the segment completed within 15 s");
    assert_eq!(done["pi"], "pi-http");
    assert_eq!(done["entity"], 1);
    assert_eq!(done["start"], json!([x0, y0]));
    assert_eq!(done["end"], json!(end));
    assert_eq!(done["reason"], Value::Null);
    let (sent, acc, fin) = (
        done["sent_at"].as_u64().unwrap(),
        done["accepted_at"].as_u64().unwrap(),
        done["finished_at"].as_u64().unwrap(),
    );
    assert!(sent <= acc && acc <= fin, "{done}");
    // The entity's pose ends at the segment's end.
    let at_end = wait_for(Duration::from_secs(5), || {
        let e = entity(&http, "pi-http", 1);
        (e["x"] == end[0] && e["y"] == end[1]).then_some(e)
    });
    assert!(
        at_end.is_some(),
        "entity 1 at {end:?}: {}",
        entity(&http, "pi-http", 1)
    );
    // The stream told every step of it.
    let mut states = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while states.last().map(String::as_str) != Some("completed") && Instant::now() < deadline {
        if let Some(ev) = events.next_named("segment", Duration::from_secs(1)) {
            if ev.data["segment_id"] == id {
                states.push(ev.data["state"].as_str().unwrap().to_owned());
            }
        }
    }
    assert_eq!(states, ["sent", "accepted", "completed"]);

    // Errors: bad JSON, a missing field, an unknown Pi, unknown entity and segment, routes.
    let post = |path: &str, body: &str| http.post_json(path, body).unwrap();
    let seg = "/api/pis/pi-http/entities/1/segments";
    assert_error(&post(seg, "{\"end\": [1,"), 400, Value::Null);
    assert_error(
        &post(
            seg,
            r#"{"end": [1, 2], "velocity_end": 0, "segment_type": 0}"#,
        ),
        400,
        json!("velocity_start"),
    );
    let good = r#"{"end": [1, 2], "velocity_start": 100, "velocity_end": 0, "segment_type": 0}"#;
    assert_error(
        &post("/api/pis/nobody/entities/1/segments", good),
        404,
        json!("pi"),
    );
    assert_error(
        &post("/api/pis/pi-http/entities/9/segments", good),
        404,
        json!("entity"),
    );
    assert_error(&http.get("/api/pis/nobody").unwrap(), 404, json!("pi"));
    assert_error(
        &http.get("/api/segments/1").unwrap(),
        404,
        json!("segment_id"),
    );
    assert_error(&http.get("/api/nothing").unwrap(), 404, Value::Null);
    let r = http.get(seg).unwrap();
    assert_error(&r, 405, Value::Null);
    assert_eq!(r.header("allow"), Some("POST"));

    // Metrics: parsed by the reference parser, the counters moved with the traffic.
    let m = parse_metrics(&http.get("/metrics").unwrap().text());
    assert_eq!(m["fleet_pis_online"]["type"], "gauge");
    assert_eq!(
        sample(&m, "fleet_pis_online", "fleet_pis_online", json!({})),
        1.0
    );
    assert_eq!(
        sample(&m, "fleet_pis_known", "fleet_pis_known", json!({})),
        1.0
    );
    assert_eq!(m["fleet_messages_received"]["type"], "counter");
    let states_seen = |m: &Value| {
        sample(
            m,
            "fleet_messages_received",
            "fleet_messages_received_total",
            json!({"kind": "state"}),
        )
    };
    assert!(states_seen(&m) > states_seen(&metrics_before));
    assert_eq!(
        sample(
            &m,
            "fleet_segments_sent",
            "fleet_segments_sent_total",
            json!({})
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            "fleet_segments",
            "fleet_segments_total",
            json!({"outcome": "completed"})
        ),
        1.0
    );
    assert_eq!(
        m["fleet_segment_accept_latency_seconds"]["type"],
        "histogram"
    );
    let lat = "fleet_segment_accept_latency_seconds";
    assert_eq!(sample(&m, lat, &format!("{lat}_count"), json!({})), 1.0);
    assert_eq!(
        sample(&m, lat, &format!("{lat}_bucket"), json!({"le": "+Inf"})),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            "fleet_broker_connected",
            "fleet_broker_connected",
            json!({})
        ),
        1.0
    );
    let req = |m: &Value, code: &str| {
        sample(
            m,
            "fleet_http_requests",
            "fleet_http_requests_total",
            json!({"code": code}),
        )
    };
    assert!(req(&m, "200") > req(&metrics_before, "200"));
    assert_eq!(req(&m, "202"), 1.0);
    assert_eq!(req(&m, "409"), 0.0);
    assert!(req(&m, "404") >= 5.0);
    assert_eq!(
        sample(
            &m,
            "fleet_http_event_streams",
            "fleet_http_event_streams",
            json!({})
        ),
        1.0
    );
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/operator.md"))
        .unwrap();
    for (name, f) in m.as_object().unwrap() {
        assert!(name.starts_with("fleet_"), "{name}");
        let exposed = match f["type"].as_str() {
            Some("counter") => format!("`{name}_total`"),
            _ => format!("`{name}`"),
        };
        assert!(
            doc.contains(&exposed),
            "{exposed} is not in docs/operator.md"
        );
        for s in f["samples"].as_array().unwrap() {
            for label in s[1].as_object().unwrap().keys() {
                assert!(
                    ["kind", "reason", "event", "outcome", "le", "code"].contains(&label.as_str()),
                    "{name}: label {label} (no per-Pi or per-entity label)"
                );
            }
        }
    }

    // The Pi goes offline: 409, and a presence event says why.
    pi.signal("TERM");
    pi.wait_exit(Duration::from_secs(10)).expect("the Pi stops");
    let gone = events
        .next_named("presence", Duration::from_secs(10))
        .expect("a presence event");
    assert_eq!(gone.data["pi"], "pi-http");
    assert_eq!(gone.data["online"], false);
    assert_eq!(gone.data["reason"], "clean_shutdown");
    assert_error(&post(seg, good), 409, json!("pi"));
}

#[test]
fn token_body_limit_and_the_non_loopback_rule() {
    let dir = TempDir::new("http-token");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let broker = Broker::start();
    let token_path = token_file.display().to_string();
    let addr = format!("127.0.0.1:{}", free_port());
    let server = spawn_server(
        &broker,
        &["--http-listen", &addr, "--http-token-file", &token_path],
    );
    let anon = Http::new(addr.clone());
    let authed = Http::new(addr.clone()).with_token("s3cret-token");
    wait_for(Duration::from_secs(10), || authed.get("/api/fleet").ok())
        .unwrap_or_else(|| panic!("the interface answers: {}", server.stderr()));
    assert_eq!(authed.get("/api/fleet").unwrap().status, 200);
    for path in ["/", "/api/fleet", "/metrics", "/api/events"] {
        let r = anon.get(path).unwrap();
        assert_error(&r, 401, Value::Null);
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    }
    let wrong = Http::new(addr.clone()).with_token("s3cret-tokem");
    assert_eq!(wrong.get("/api/fleet").unwrap().status, 401);
    let mut stream = authed.events("/api/events").unwrap();
    assert_eq!(stream.status, 200);
    drop(stream.stream().shutdown(std::net::Shutdown::Both));

    // A 1 MiB body: 413, and the server keeps serving.
    let big = vec![b'x'; 1 << 20];
    let r = authed
        .request("POST", "/api/pis/a/entities/1/segments", Some(&big))
        .unwrap();
    assert_error(&r, 413, Value::Null);
    assert_eq!(authed.get("/api/fleet").unwrap().status, 200);
    // A head over 8 KiB: 431.
    let long = format!("/api/fleet?{}", "a".repeat(9000));
    assert_eq!(authed.get(&long).unwrap().status, 431);
    assert_eq!(authed.get("/api/fleet").unwrap().status, 200);

    // Listening beyond loopback without a token refuses to start, naming the key.
    let mut open = Daemon::spawn(
        &support::server_bin(),
        &[
            "--config",
            "/dev/null",
            "--broker",
            &broker.addr(),
            "--http-listen",
            "0.0.0.0:0",
        ],
        &[],
    );
    let st = open.wait_exit(Duration::from_secs(10)).expect("exits");
    assert_eq!(st.code(), Some(2));
    assert!(open.stderr().contains("http_listen"), "{}", open.stderr());
    let _ = stream.next(Duration::from_millis(1));
}

/// A flood of fake Pis and entities, to give event streams far more than a reader can hold.
fn flood(port: u16, pis: u32, entities: u32, stop: crossbeam_channel::Receiver<()>) {
    let mut opts = MqttOptions::new("flood", "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut conn) = Client::new(opts, 10_000);
    std::thread::spawn(move || for _ in conn.iter() {});
    let mut seq = 0u32;
    loop {
        if !matches!(stop.try_recv(), Err(crossbeam_channel::TryRecvError::Empty)) {
            return;
        }
        seq += 1;
        for p in 0..pis {
            let id = format!("flood-{p}");
            let hb = Heartbeat {
                seq,
                timestamp_ms: mqtt_link::daemon::wall_ms(),
            };
            let _ = client.publish(
                format!("rpi/{id}/heartbeat"),
                QoS::AtMostOnce,
                false,
                hb.encode().to_vec(),
            );
            for e in 1..=entities {
                let m = Motion {
                    x: seq as i32,
                    y: e as i32,
                    ..Motion::default()
                };
                let st = StateReport::new(e, mqtt_link::daemon::wall_ms(), m);
                let _ = client.publish(
                    format!("rpi/{id}/state"),
                    QoS::AtMostOnce,
                    false,
                    st.encode().to_vec(),
                );
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_slow_event_reader_is_dropped_while_the_server_keeps_ingesting() {
    let broker = Broker::start();
    let (_server, http) = server_with_http(&broker, &[]);
    let metric = |name: &str, sample_name: &str, labels: Value| {
        sample(
            &parse_metrics(&http.get("/metrics").unwrap().text()),
            name,
            sample_name,
            labels,
        )
    };
    // A reader that never reads, and one that does.
    let slow = http.events("/api/events").unwrap();
    assert_eq!(slow.status, 200);
    let mut fast = http.events("/api/events").unwrap();
    let (stop_tx, stop) = crossbeam_channel::bounded::<()>(0);
    let port = broker.port();
    let flooder = std::thread::spawn(move || flood(port, 20, 50, stop));
    let mut fast_bytes = 0usize;
    let dropped = wait_for(Duration::from_secs(60), || {
        // Keep the fast reader reading meanwhile.
        fast_bytes += fast
            .read_raw(Duration::from_millis(500))
            .expect("the fast reader is served");
        let n = metric(
            "fleet_http_event_streams_dropped",
            "fleet_http_event_streams_dropped_total",
            json!({}),
        );
        (n >= 1.0).then_some(n)
    });
    let ingested = |h: &Http| {
        h.get("/api/fleet").unwrap().json()["counters"]["messages"]["state"]
            .as_u64()
            .unwrap_or(0)
    };
    let before = ingested(&http);
    std::thread::sleep(Duration::from_secs(1));
    let after = ingested(&http);
    drop(stop_tx);
    flooder.join().unwrap();
    assert!(dropped.is_some(), "the slow reader was dropped within 60 s");
    assert_eq!(dropped, Some(1.0), "only the slow reader");
    assert!(
        fast_bytes > 100_000,
        "the fast reader kept getting events: {fast_bytes} bytes"
    );
    assert!(
        after > before + 1000,
        "still ingesting: {before} -> {after} states"
    );
    // The slow reader's thread ends within the write timeout; the fast one stays.
    let open = wait_for(Duration::from_secs(10), || {
        let _ = fast.read_raw(Duration::from_millis(200));
        let n = metric(
            "fleet_http_event_streams",
            "fleet_http_event_streams",
            json!({}),
        );
        (n == 1.0).then_some(n)
    });
    assert_eq!(open, Some(1.0), "one stream open: the fast reader's");
    assert!(
        fast.read_raw(Duration::from_millis(500)).is_some(),
        "the fast reader is still served"
    );
    drop(slow);
}
