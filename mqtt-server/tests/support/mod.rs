//! Shared helpers of the mqtt-server integration tests: run the server (binary or in-process)
//! and real `rpi-client` daemons against a testkit broker, read the status table, and a
//! simulated Pi in a thread that speaks the protocol (heartbeats, states, acks, driving, will
//! and online/offline status) for tests that need to kill, freeze or count precisely.

#![allow(dead_code)]

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{
    AckOutcome, ClientId, Heartbeat, Message, Point, Presence, RejectReason, Segment, SegmentAck,
    StateReport, Status, TopicKind,
};
use mqtt_server::{Server, ServerConfig};
use rumqttc::{Client, Event, LastWill, MqttOptions, Packet, QoS};
use testkit::{Broker, Daemon};

/// The real Pi daemon, built (once per test binary, a no-op when up to date) with the
/// profile and target dir of the running tests, so it is never missing or stale.
pub fn rpi_client_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("current exe");
            // target/<profile>/deps/<test>
            let profile_dir = exe.parent().and_then(|d| d.parent()).expect("profile dir");
            let target_dir = profile_dir.parent().expect("target dir");
            let profile = profile_dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("debug");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = std::process::Command::new(cargo);
            cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "rpi-client",
                    "--bin",
                    "rpi-client",
                ])
                .arg("--target-dir")
                .arg(target_dir);
            match profile {
                "debug" => {}
                "release" => {
                    cmd.arg("--release");
                }
                other => {
                    cmd.args(["--profile", other]);
                }
            }
            let status = cmd.status().expect("run cargo build -p rpi-client");
            assert!(
                status.success(),
                "cargo build -p rpi-client failed: {status}"
            );
            testkit::process::workspace_bin("rpi-client")
        })
        .clone()
}

/// Starts a real `rpi-client` as `id` driving `entities` (e.g. "1,2,3") against `broker`.
pub fn spawn_pi(broker: &Broker, id: &str, entities: &str) -> Daemon {
    let addr = broker.addr();
    Daemon::spawn(
        &rpi_client_bin(),
        &[
            "--config",
            "/dev/null",
            "--broker",
            addr.as_str(),
            "--client-id",
            id,
            "--entities",
            entities,
        ],
        &[],
    )
}

pub fn server_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mqtt-server"))
}

/// Starts the `mqtt-server` binary against `broker` with no config file and `extra` flags.
pub fn spawn_server(broker: &Broker, extra: &[&str]) -> Daemon {
    let addr = broker.addr();
    // No operator interface unless `extra` asks for one (a later flag wins): tests run in
    // parallel and would all want 127.0.0.1:8080.
    let mut args = vec![
        "--config",
        "/dev/null",
        "--broker",
        addr.as_str(),
        "--http-listen",
        "off",
    ];
    args.extend_from_slice(extra);
    Daemon::spawn(&server_bin(), &args, &[])
}

/// A config for an in-process server: table and planner off unless the test turns them on.
pub fn config(broker: &Broker) -> ServerConfig {
    let mut cfg = ServerConfig::default();
    cfg.apply("broker", &broker.addr()).unwrap();
    cfg.apply("client_id", &format!("server-{}", broker.port()))
        .unwrap();
    cfg.segment_interval = Duration::ZERO;
    cfg.status_interval = Duration::ZERO;
    cfg.http_listen = None;
    cfg
}

/// Starts a server in-process and waits until it is connected.
pub fn start_server(cfg: &ServerConfig) -> Server {
    let server = Server::start(cfg).expect("server starts");
    let h = server.handle();
    testkit::wait_for(Duration::from_secs(5), || {
        h.snapshot().filter(|s| s.broker_connected).map(|_| ())
    })
    .expect("server connected within 5 s");
    // The subscription is issued right after the ConnAck; give the SubAck a moment.
    thread::sleep(Duration::from_millis(100));
    server
}

pub use mqtt_link::daemon::wall_ms as now_ms;

// ---------------------------------------------------------------------------------------
// The status table (parsed by testkit)

// Not every test binary reads the table.
#[allow(unused_imports)]
pub use testkit::table::{ActiveRow, EntityRow, Table, next_table, wait_table};

// ---------------------------------------------------------------------------------------
// A simulated Pi

const MODE_RUN: u8 = 0;
const MODE_KILL: u8 = 1;
const MODE_CLEAN: u8 = 2;
const MODE_FREEZE: u8 = 3;

#[derive(Debug, Clone, Copy)]
struct Drive {
    seg: Segment,
    travelled: f64,
}

struct SimEntity {
    id: u32,
    pos: (f64, f64),
    vel: (f64, f64),
    angle: i32,
    current: Option<Drive>,
    queue: VecDeque<Segment>,
    done: HashSet<u32>,
}

/// A Pi in a thread, speaking the protocol like rpi-client: `Online` (retained, QoS 1)
/// after every ConnAck with a will `ConnectionLost` of the same session, heartbeats every
/// 500 ms, a state per entity every 100 ms, acks (Accepted, Completed, Rejected) and
/// straight-line driving with the speed ramped over distance.
pub struct SimPi {
    pub id: String,
    mode: Arc<AtomicU8>,
    thread: Option<JoinHandle<()>>,
}

impl SimPi {
    /// Entity `i` starts at `(i * 1000, 0)`, like rpi-client.
    pub fn start(port: u16, id: &str, entities: &[u32]) -> SimPi {
        let session = (now_ms() / 1000) as u32;
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(5));
        let will = Status {
            presence: Presence::ConnectionLost,
            session,
            timestamp_ms: now_ms(),
        };
        let cid = ClientId::new(id).unwrap();
        opts.set_last_will(LastWill::new(
            cid.topic(TopicKind::Status),
            will.encode().to_vec(),
            QoS::AtLeastOnce,
            true,
        ));
        let (client, mut conn) = Client::new(opts, 1000);
        let mut net = rumqttc::NetworkOptions::new();
        net.set_tcp_nodelay(true);
        conn.eventloop.set_network_options(net);
        let mode = Arc::new(AtomicU8::new(MODE_RUN));
        let ents = entities
            .iter()
            .enumerate()
            .map(|(i, e)| SimEntity {
                id: *e,
                pos: (i as f64 * 1000.0, 0.0),
                vel: (0.0, 0.0),
                angle: 0,
                current: None,
                queue: VecDeque::new(),
                done: HashSet::new(),
            })
            .collect();
        let m = mode.clone();
        let thread = thread::Builder::new()
            .name(format!("sim-{id}"))
            .spawn(move || sim_loop(cid, session, client, conn, ents, m))
            .unwrap();
        SimPi {
            id: id.to_owned(),
            mode,
            thread: Some(thread),
        }
    }

    fn stop_with(&mut self, mode: u8) {
        self.mode.store(mode, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.join().expect("sim pi thread");
        }
    }

    /// Like kill -9: the socket closes without a DISCONNECT, so the broker sends the will.
    pub fn kill(mut self) {
        self.stop_with(MODE_KILL);
    }

    /// Publishes `Offline` and disconnects cleanly.
    pub fn shutdown(mut self) {
        self.stop_with(MODE_CLEAN);
    }

    /// Stops publishing but keeps the connection (pings go on): only the heartbeat timeout
    /// can tell (like a hung process or a one-way network loss).
    pub fn freeze(&self) {
        self.mode.store(MODE_FREEZE, Ordering::Release);
    }
}

impl Drop for SimPi {
    fn drop(&mut self) {
        if self.thread.is_some() && !thread::panicking() {
            self.stop_with(MODE_KILL);
        }
    }
}

fn publish(client: &Client, topic: &str, payload: Vec<u8>, qos: QoS, retain: bool) {
    let _ = client.try_publish(topic, qos, retain, payload);
}

fn sim_loop(
    id: ClientId,
    session: u32,
    client: Client,
    mut conn: rumqttc::Connection,
    mut ents: Vec<SimEntity>,
    mode: Arc<AtomicU8>,
) {
    let t_hb = id.topic(TopicKind::Heartbeat);
    let t_state = id.topic(TopicKind::State);
    let t_status = id.topic(TopicKind::Status);
    let t_ack = id.topic(TopicKind::Ack);
    let t_seg = id.topic(TopicKind::Segment);
    let mut connected = false;
    let mut seq = 0u32;
    let mut next_hb = Instant::now();
    let mut next_state = Instant::now();
    let mut last_step = Instant::now();
    let ack = |e: u32, s: u32, outcome: AckOutcome| {
        let a = SegmentAck {
            entity_id: e,
            segment_id: s,
            outcome,
        };
        publish(
            &client,
            &t_ack,
            a.encode().to_vec(),
            QoS::AtLeastOnce,
            false,
        );
    };
    loop {
        match mode.load(Ordering::Acquire) {
            MODE_KILL => return, // `conn` dropped: socket closed without DISCONNECT
            MODE_CLEAN => {
                let st = Status {
                    presence: Presence::Offline,
                    session,
                    timestamp_ms: now_ms(),
                };
                publish(
                    &client,
                    &t_status,
                    st.encode().to_vec(),
                    QoS::AtLeastOnce,
                    true,
                );
                let _ = client.try_disconnect();
                // Keep reading until the broker closes the connection: closing a socket with
                // unread data (the final PUBACK) sends an RST, and the broker would then lose
                // the Offline and the DISCONNECT and publish the will.
                let deadline = Instant::now() + Duration::from_secs(2);
                while Instant::now() < deadline {
                    match conn.recv_timeout(Duration::from_millis(50)) {
                        Ok(Err(_)) | Err(rumqttc::RecvTimeoutError::Disconnected) => return,
                        _ => {}
                    }
                }
                return;
            }
            _ => {}
        }
        let frozen = mode.load(Ordering::Acquire) == MODE_FREEZE;
        match conn.recv_timeout(Duration::from_millis(5)) {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                connected = true;
                let st = Status {
                    presence: Presence::Online,
                    session,
                    timestamp_ms: now_ms(),
                };
                publish(
                    &client,
                    &t_status,
                    st.encode().to_vec(),
                    QoS::AtLeastOnce,
                    true,
                );
                let _ = client.try_subscribe(&t_seg, QoS::AtLeastOnce);
            }
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) if !frozen => {
                let Ok(Message::Segment(seg)) = Message::decode(&p.payload) else {
                    continue;
                };
                let Some(e) = ents.iter_mut().find(|e| e.id == seg.entity_id) else {
                    ack(
                        seg.entity_id,
                        seg.segment_id,
                        AckOutcome::Rejected(RejectReason::UnknownEntity),
                    );
                    continue;
                };
                if e.done.contains(&seg.segment_id) {
                    // A repeated delivery is answered with the segment's latest outcome.
                    ack(seg.entity_id, seg.segment_id, AckOutcome::Completed);
                    continue;
                }
                let dup = e
                    .current
                    .is_some_and(|d| d.seg.segment_id == seg.segment_id)
                    || e.queue.iter().any(|q| q.segment_id == seg.segment_id);
                if !dup {
                    if e.queue.len() >= 8 {
                        ack(
                            seg.entity_id,
                            seg.segment_id,
                            AckOutcome::Rejected(RejectReason::QueueFull),
                        );
                        continue;
                    }
                    e.queue.push_back(seg);
                }
                ack(seg.entity_id, seg.segment_id, AckOutcome::Accepted);
            }
            Ok(Err(_)) => {
                connected = false;
                thread::sleep(Duration::from_millis(20));
            }
            Err(rumqttc::RecvTimeoutError::Disconnected) => return,
            _ => {}
        }
        let now = Instant::now();
        let dt = now.saturating_duration_since(last_step).as_secs_f64();
        last_step = now;
        if frozen {
            continue;
        }
        for e in ents.iter_mut() {
            step_entity(e, dt, &ack);
        }
        if !connected {
            continue;
        }
        if now >= next_hb {
            seq += 1;
            let hb = Heartbeat {
                seq,
                timestamp_ms: now_ms(),
            };
            publish(&client, &t_hb, hb.encode().to_vec(), QoS::AtMostOnce, false);
            next_hb = now + Duration::from_millis(500);
        }
        if now >= next_state {
            for e in &ents {
                let (segment_id, progress) = match e.current {
                    Some(d) => {
                        let len = seg_len(&d.seg);
                        let p = if len == 0.0 { 1.0 } else { d.travelled / len };
                        (d.seg.segment_id, (p.clamp(0.0, 1.0) * 10_000.0) as u16)
                    }
                    None => (0, 0),
                };
                let s = StateReport {
                    entity_id: e.id,
                    timestamp_ms: now_ms(),
                    x: e.pos.0.round() as i32,
                    y: e.pos.1.round() as i32,
                    angle: e.angle,
                    vx: e.vel.0.round() as i32,
                    vy: e.vel.1.round() as i32,
                    segment_id,
                    progress,
                };
                publish(
                    &client,
                    &t_state,
                    s.encode().to_vec(),
                    QoS::AtMostOnce,
                    false,
                );
            }
            next_state = now + Duration::from_millis(100);
        }
    }
}

fn seg_len(s: &Segment) -> f64 {
    let dx = f64::from(s.end.x) - f64::from(s.start.x);
    let dy = f64::from(s.end.y) - f64::from(s.start.y);
    (dx * dx + dy * dy).sqrt()
}

fn step_entity(e: &mut SimEntity, dt: f64, ack: &impl Fn(u32, u32, AckOutcome)) {
    if e.current.is_none() {
        if let Some(seg) = e.queue.pop_front() {
            e.pos = (f64::from(seg.start.x), f64::from(seg.start.y));
            e.current = Some(Drive {
                seg,
                travelled: 0.0,
            });
        } else {
            e.vel = (0.0, 0.0);
            return;
        }
    }
    let Some(d) = e.current.as_mut() else { return };
    let len = seg_len(&d.seg);
    let (v0, v1) = (
        f64::from(d.seg.velocity_start.max(1)),
        f64::from(d.seg.velocity_end.max(1)),
    );
    let v = if len == 0.0 {
        v1
    } else {
        v0 + (v1 - v0) * (d.travelled / len)
    };
    d.travelled = (d.travelled + v * dt).min(len);
    let (sx, sy) = (f64::from(d.seg.start.x), f64::from(d.seg.start.y));
    let (ex, ey) = (f64::from(d.seg.end.x), f64::from(d.seg.end.y));
    let f = if len == 0.0 { 1.0 } else { d.travelled / len };
    e.pos = (sx + (ex - sx) * f, sy + (ey - sy) * f);
    if len > 0.0 {
        let (ux, uy) = ((ex - sx) / len, (ey - sy) / len);
        e.vel = (ux * v, uy * v);
        let a = uy.atan2(ux).to_degrees();
        e.angle = (((a * 1000.0).round() as i32) % 360_000 + 360_000) % 360_000;
    }
    if d.travelled >= len {
        let done = d.seg;
        e.done.insert(done.segment_id);
        e.current = None;
        ack(done.entity_id, done.segment_id, AckOutcome::Completed);
    }
}

/// Distance (mm) from `p` to the segment `a`-`b`.
pub fn distance_to_segment(p: (i32, i32), a: Point, b: Point) -> f64 {
    let (px, py) = (f64::from(p.0), f64::from(p.1));
    let (ax, ay) = (f64::from(a.x), f64::from(a.y));
    let (bx, by) = (f64::from(b.x), f64::from(b.y));
    let (dx, dy) = (bx - ax, by - ay);
    let len2 = dx * dx + dy * dy;
    let t = if len2 == 0.0 {
        0.0
    } else {
        (((px - ax) * dx + (py - ay) * dy) / len2).clamp(0.0, 1.0)
    };
    let (cx, cy) = (ax + t * dx, ay + t * dy);
    ((px - cx).powi(2) + (py - cy).powi(2)).sqrt()
}
