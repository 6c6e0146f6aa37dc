//! The fleet on a clustered broker (#15, docs/scaling.md): a 3-node NATS cluster with MQTT
//! listeners ([`testkit::NatsCluster`]), and the same scenarios against one mosquitto (where
//! every "node" is that one broker and losing a node is killing and restarting it).
//!
//! Pis on nodes 1 and 2, each with the broker list starting with its node, then the others;
//! two servers, A on node 3 and B on node 1, both with their HTTP API. Checked:
//! - every Pi is tracked by both servers (`GET /api/fleet`);
//! - retained statuses cross nodes (a watcher on node 2 reads every Pi's retained Online), and
//!   so do wills (kill -9 of a Pi on node 1: both servers mark it offline by its will, and the
//!   retained ConnectionLost is read on node 2);
//! - kill -9 of node 2, where two Pis are: each reconnects to the next node of its list and is
//!   tracked again by both servers within 3 s, on NATS as on mosquitto (0.6 s on NATS since
//!   the daemons subscribe at QoS 0: `Brokers::node_loss_limit`); the segment one of them
//!   had accepted (sent through the leading server's API) completes; no segment runs twice (the state stream, watched on
//!   node 3). On NATS the JetStream leaders (Raft groups of the MQTT layer) are first moved to
//!   node 3, so this measures the daemons' own recovery; `node_loss_with_leaders_nats`
//!   measures the worst case, the loss of the node leading them all (NATS elects new leaders
//!   after about 5 s, and MQTT CONNECTs wait for them).
//!
//! The long scenarios are `#[ignore]`d and run by `scripts/chaos.sh` (`make chaos`);
//! `leader_kill_*` are not (they take about 10 s).
//!
//! `leader_kill_*`: kill -9 of the leading server: the standby dispatches within 2 s (its
//! API answers 503 `{"error": "not the leader", "leader": ...}` until it leads, then 202).
//! Segments of the other scenarios go through whichever server leads ([`Fleet::leader`]).

use std::time::{Duration, Instant};

use common::Presence;
use fleet_chaos::{Watch, ms, report, spawn_pi};
use serde_json::Value;
use testkit::broker::free_port;
use testkit::http::Client;
use testkit::{Broker, Daemon, NatsCluster};

/// Node indices (0-based) of the scenario's nodes 1, 2 and 3.
const N1: usize = 0;
const N2: usize = 1;
const N3: usize = 2;

/// (Pi id, node it connects to first).
const PIS: [(&str, usize); 4] = [
    ("pi-n1-a", N1),
    ("pi-n1-b", N1),
    ("pi-n2-a", N2),
    ("pi-n2-b", N2),
];
const ENTITIES: &str = "1,2";

/// The broker under test.
enum Brokers {
    Nats(NatsCluster),
    Mosquitto(Broker),
}

impl Brokers {
    fn nats() -> Brokers {
        Brokers::Nats(NatsCluster::start(3))
    }

    fn mosquitto() -> Brokers {
        Brokers::Mosquitto(Broker::start())
    }

    fn kind(&self) -> &'static str {
        match self {
            Brokers::Nats(_) => "nats",
            Brokers::Mosquitto(_) => "mosquitto",
        }
    }

    /// The broker list of a daemon on `node`: its node first, then the others.
    fn list(&self, node: usize) -> String {
        match self {
            Brokers::Nats(c) => c.broker_list(node),
            Brokers::Mosquitto(b) => b.addr(),
        }
    }

    /// The MQTT port of `node`.
    fn port(&self, node: usize) -> u16 {
        match self {
            Brokers::Nats(c) => c.mqtt_port(node),
            Brokers::Mosquitto(b) => b.port(),
        }
    }

    /// NATS: every JetStream leadership to `node`, so that losing another node stalls none:
    /// the meta group and the streams before the fleet starts (`fleet_up` false), the
    /// consumers of its subscriptions once it runs (`fleet_up` true).
    fn leaders_to(&self, node: usize, fleet_up: bool) {
        if let Brokers::Nats(c) = self {
            if fleet_up {
                c.move_consumer_leaders_to(node);
            } else {
                c.move_leaders_to(node);
            }
        }
    }

    /// How soon the Pis of a lost node must be tracked again: the 3 s, on both. On
    /// NATS this holds since the daemons subscribe at QoS 0 (`mqtt_link::SUBSCRIBE_QOS`):
    /// with QoS 1 subscriptions the next node created a JetStream consumer per subscription
    /// at the Pi's reconnect, whose Raft group still counted the dead node, and read nothing
    /// from the Pi meanwhile (4.6 to 10.1 s, once more than 20 s); now 0.6 s. The loss of the
    /// node leading every JetStream group is `node_loss_with_leaders_nats` (docs/scaling.md).
    fn node_loss_limit(&self) -> Duration {
        match self {
            Brokers::Nats(_) | Brokers::Mosquitto(_) => Duration::from_secs(3),
        }
    }

    /// kill -9 of `node`; mosquitto is restarted at once (there is no other node to go to).
    /// The instant recovery times count from: the kill on NATS, the restart on mosquitto.
    fn lose_node(&mut self, node: usize) -> Instant {
        match self {
            Brokers::Nats(c) => {
                c.kill(node);
                Instant::now()
            }
            Brokers::Mosquitto(b) => {
                b.kill();
                b.restart();
                Instant::now()
            }
        }
    }
}

/// A server with its HTTP API on a free port, no planner (segments only through the API).
struct Server {
    id: &'static str,
    daemon: Daemon,
    api: Client,
}

fn server(brokers: &Brokers, node: usize, id: &'static str) -> Server {
    let listen = format!("127.0.0.1:{}", free_port());
    let daemon = fleet_chaos::spawn_server(
        &brokers.list(node),
        &[
            "--client-id",
            id,
            "--segment-interval",
            "0s",
            "--status-interval",
            "1s",
            "--http-listen",
            &listen,
        ],
    );
    let mut api = Client::new(listen);
    api.timeout = Duration::from_secs(3);
    Server { id, daemon, api }
}

impl Server {
    /// `GET /api/pis/{id}` when it answers 200.
    fn pi(&self, id: &str) -> Option<Value> {
        let r = self.api.get(&format!("/api/pis/{id}")).ok()?;
        (r.status == 200).then(|| r.json())
    }

    /// The Pi is online with every entity reported.
    fn tracks(&self, id: &str) -> bool {
        self.pi(id).is_some_and(|p| {
            p["online"] == true && p["entities"].as_array().is_some_and(|e| e.len() == 2)
        })
    }

    fn heartbeats(&self, id: &str) -> u64 {
        self.pi(id)
            .and_then(|p| p["heartbeats"].as_u64())
            .unwrap_or(0)
    }

    /// `POST /api/pis/{pi}/entities/{entity}/segments`: a straight segment `dx` mm along x
    /// from the entity's position at 500 mm/s; (status, body).
    fn post_segment(&self, pi: &str, entity: u32, dx: i32) -> (u16, Value) {
        let Some(p) = self.pi(pi) else {
            return (0, Value::Null);
        };
        let e = p["entities"]
            .as_array()
            .and_then(|es| es.iter().find(|e| e["id"] == entity))
            .cloned()
            .unwrap_or(Value::Null);
        let (x, y) = (
            e["x"].as_i64().unwrap_or(0) as i32,
            e["y"].as_i64().unwrap_or(0) as i32,
        );
        let body = format!(
            "{{\"end\": [{}, {y}], \"velocity_start\": 500, \"velocity_end\": 500, \
             \"segment_type\": 0}}",
            x + dx
        );
        match self
            .api
            .post_json(&format!("/api/pis/{pi}/entities/{entity}/segments"), &body)
        {
            Ok(r) => {
                let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
                (r.status, v)
            }
            Err(_) => (0, Value::Null),
        }
    }

    /// The segment's state (`GET /api/segments/{id}`), "" if unknown.
    fn segment_state(&self, id: u64) -> String {
        self.api
            .get(&format!("/api/segments/{id}"))
            .ok()
            .filter(|r| r.status == 200)
            .and_then(|r| r.json()["state"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    fn wait_segment(&self, id: u64, state: &str, timeout: Duration) -> bool {
        testkit::wait_for(timeout, || (self.segment_state(id) == state).then_some(())).is_some()
    }
}

/// The fleet of the scenario: the Pis of [`PIS`] on their nodes, servers A (node 3) and B
/// (node 1), all tracked by both.
struct Fleet {
    pis: Vec<(&'static str, Daemon)>,
    a: Server,
    b: Server,
}

impl Fleet {
    /// The server that leads (the other answers orders with 503), once one does.
    fn leader(&self) -> &Server {
        let leads = |s: &Server| {
            s.api
                .get("/api/leader")
                .ok()
                .is_some_and(|r| r.status == 200 && r.json()["role"] == "leader")
        };
        testkit::wait_for(Duration::from_secs(10), || {
            [&self.a, &self.b].into_iter().find(|s| leads(s))
        })
        .expect("one of the two servers leads within 10 s")
    }
}

fn start_fleet(brokers: &Brokers) -> Fleet {
    let a = server(brokers, N3, "server-a");
    let b = server(brokers, N1, "server-b");
    let pis: Vec<(&'static str, Daemon)> = PIS
        .iter()
        .map(|(id, node)| (*id, spawn_pi(&brokers.list(*node), id, ENTITIES, &[])))
        .collect();
    let started = Instant::now();
    for s in [&a, &b] {
        for (id, _) in PIS {
            testkit::wait_for(Duration::from_secs(30), || s.tracks(id).then_some(()))
                .unwrap_or_else(|| {
                    panic!(
                        "{}: {} does not track {id}: {:?}",
                        brokers.kind(),
                        s.id,
                        s.pi(id)
                    )
                });
        }
    }
    eprintln!(
        "{}: every Pi tracked by both servers {:?} after the start",
        brokers.kind(),
        started.elapsed()
    );
    Fleet { pis, a, b }
}

impl Fleet {
    fn pi(&mut self, id: &str) -> &mut Daemon {
        &mut self
            .pis
            .iter_mut()
            .find(|(p, _)| *p == id)
            .expect("a Pi of the scenario")
            .1
    }
}

/// Whether `server` hears `id` again: online, at least two heartbeats more than `before`
/// (one may have been in flight at the loss), the last one recent.
fn hears(server: &Server, id: &str, before: u64) -> bool {
    server.pi(id).is_some_and(|p| {
        p["online"] == true
            && p["heartbeats"].as_u64().unwrap_or(0) >= before + 2
            && p["last_heartbeat_age_ms"]
                .as_u64()
                .is_some_and(|a| a < 1000)
    })
}

/// Waits until every (server, Pi, heartbeats before the loss) of `watched` hears its Pi
/// again, polling all of them together; the time since `from` of each.
fn back_all(watched: &[(&Server, &str, u64)], from: Instant, timeout: Duration) -> Vec<Duration> {
    let mut when: Vec<Option<Duration>> = vec![None; watched.len()];
    let deadline = from + timeout;
    while when.iter().any(Option::is_none) && Instant::now() < deadline {
        for (i, (server, id, before)) in watched.iter().enumerate() {
            if when[i].is_none() && hears(server, id, *before) {
                when[i] = Some(from.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    watched
        .iter()
        .zip(&when)
        .map(|((server, id, _), w)| {
            w.unwrap_or_else(|| {
                panic!(
                    "{} does not track {id} again within {timeout:?}: {:?}",
                    server.id,
                    server.pi(id)
                )
            })
        })
        .collect()
}

/// The cluster scenario on `brokers` (see the file's doc).
fn cluster_scenario(mut brokers: Brokers) {
    let kind = brokers.kind();
    // Every leader on node 3, which is never killed here: the meta group and the streams
    // now, the consumers of the subscriptions once they exist.
    brokers.leaders_to(N3, false);
    let mut fleet = start_fleet(&brokers);
    let watch = Watch::start(brokers.port(N3), &format!("chaos-watch-{kind}"));
    brokers.leaders_to(N3, true);

    // Retained statuses across nodes: on node 2, every Pi's Online, retained.
    let statuses = Watch::start_on(brokers.port(N2), "chaos-statuses", &["rpi/+/status"]);
    statuses
        .wait(Duration::from_secs(10), |r| {
            PIS.iter()
                .all(|(id, _)| {
                    r.statuses.get(*id).is_some_and(|v| {
                        v.iter()
                            .any(|(_, s, retained)| *retained && s.presence == Presence::Online)
                    })
                })
                .then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "{kind}: retained statuses on node 2: {:?}",
                statuses.record().statuses
            )
        });
    drop(statuses);

    // Wills across nodes: kill -9 of a Pi on node 1; server A (node 3) and B (node 1) see
    // it offline by its will; node 2 holds the retained ConnectionLost.
    let victim = "pi-n1-a";
    fleet.pi(victim).kill9();
    let died = Instant::now();
    let mut will_ms = Vec::new();
    for s in [&fleet.a, &fleet.b] {
        let t = testkit::wait_for(Duration::from_secs(10), || {
            let p = s.pi(victim)?;
            (p["online"] == false && p["offline_reason"] == "will").then(|| died.elapsed())
        })
        .unwrap_or_else(|| {
            panic!(
                "{kind}: {} never saw {victim}'s will: {:?}",
                s.id,
                s.pi(victim)
            )
        });
        will_ms.push(ms(t));
    }
    let lost = Watch::start_on(brokers.port(N2), "chaos-will", &["rpi/+/status"]);
    lost.wait(Duration::from_secs(10), |r| {
        r.statuses.get(victim).and_then(|v| {
            v.iter()
                .any(|(_, s, retained)| *retained && s.presence == Presence::ConnectionLost)
                .then_some(())
        })
    })
    .unwrap_or_else(|| panic!("{kind}: no retained will of {victim} on node 2"));
    drop(lost);

    // A segment accepted by a Pi on node 2, through the leading server (on node 3 or 1:
    // losing node 2 does not change who leads).
    let driver = "pi-n2-a";
    let leader = fleet.leader();
    let (code, body) = leader.post_segment(driver, 1, 2000);
    assert_eq!(code, 202, "{kind}: segment not sent: {body}");
    let seg = body["segment_id"].as_u64().expect("a segment id");
    assert!(
        leader.wait_segment(seg, "accepted", Duration::from_secs(5)),
        "{kind}: segment {seg} not accepted: {}",
        leader.segment_state(seg)
    );
    let leader_id = leader.id;

    // kill -9 of node 2.
    let on_n2: Vec<&str> = PIS
        .iter()
        .filter(|(_, n)| *n == N2)
        .map(|(id, _)| *id)
        .collect();
    let before: Vec<(u64, u64)> = on_n2
        .iter()
        .map(|id| (fleet.a.heartbeats(id), fleet.b.heartbeats(id)))
        .collect();
    let from = brokers.lose_node(N2);
    let watched: Vec<(&Server, &str, u64)> = on_n2
        .iter()
        .zip(&before)
        .flat_map(|(id, (ha, hb))| [(&fleet.a, *id, *ha), (&fleet.b, *id, *hb)])
        .collect();
    let recovery = back_all(
        &watched,
        from,
        brokers.node_loss_limit() + Duration::from_secs(5),
    );
    let worst = *recovery.iter().max().expect("two Pis");
    let leader = if fleet.a.id == leader_id {
        &fleet.a
    } else {
        &fleet.b
    };
    let completed = leader.wait_segment(seg, "completed", Duration::from_secs(20));
    let state = leader.segment_state(seg);
    // The last states in: one more report period after the completion.
    std::thread::sleep(Duration::from_millis(500));
    let record = watch.record();
    let doubles = record.double_executions();
    let runs = record
        .executed()
        .get(&(driver.to_owned(), 1))
        .map(|ids| ids.iter().filter(|i| u64::from(**i) == seg).count())
        .unwrap_or(0);
    report(
        &format!("cluster_{kind}"),
        &[
            ("will_seen_a_ms", will_ms[0]),
            ("will_seen_b_ms", will_ms[1]),
            ("node_loss_tracked_again_ms", ms(worst)),
            (
                "node_loss_first_pi_ms",
                ms(recovery[0]
                    .max(recovery[1])
                    .min(recovery[2].max(recovery[3]))),
            ),
        ],
    );
    assert!(
        completed,
        "{kind}: segment {seg} ended {state:?}, not completed"
    );
    assert!(doubles.is_empty(), "{kind}: executed twice: {doubles:?}");
    assert_eq!(runs, 1, "{kind}: segment {seg} ran {runs} times");
    let limit = brokers.node_loss_limit();
    assert!(
        worst < limit,
        "{kind}: the Pis of the lost node tracked again after {recovery:?} \
         ({on_n2:?} by server A and B; limit {limit:?})"
    );
    for (id, d) in &mut fleet.pis {
        if *id != victim {
            assert!(d.wait_exit(Duration::ZERO).is_none(), "{kind}: {id} died");
        }
    }
}

#[test]
#[ignore = "takes about 50 s (a 3-node cluster, a node lost): run by scripts/chaos.sh"]
fn cluster_nats() {
    cluster_scenario(Brokers::nats());
}

#[test]
#[ignore = "takes about 30 s: run by scripts/chaos.sh"]
fn cluster_mosquitto() {
    cluster_scenario(Brokers::mosquitto());
}

/// The worst case on NATS: every JetStream leader on node 1, which is killed with a Pi and
/// server B on it. MQTT CONNECTs to the other nodes wait for new leaders (NATS's Raft
/// elections, about 5 s, and each JetStream request of a reconnect may wait up to its 5 s
/// timeout, one after the other): measured and reported, bounded at 60 s (16 and 27 s seen
/// on the busy machine), not held to 3 s.
#[test]
#[ignore = "takes about 60 s (JetStream elections after a node loss): run by scripts/chaos.sh"]
fn node_loss_with_leaders_nats() {
    let mut brokers = Brokers::nats();
    brokers.leaders_to(N1, false);
    let fleet = start_fleet(&brokers);
    brokers.leaders_to(N1, true);
    let id = "pi-n1-b";
    let (ha, hb) = (fleet.a.heartbeats(id), fleet.b.heartbeats(id));
    let from = brokers.lose_node(N1);
    let ab = back_all(
        &[(&fleet.a, id, ha), (&fleet.b, id, hb)],
        from,
        Duration::from_secs(75),
    );
    let (a, b) = (ab[0], ab[1]);
    report(
        "node_loss_with_leaders_nats",
        &[("server_a_tracks_ms", ms(a)), ("server_b_tracks_ms", ms(b))],
    );
    assert!(
        a.max(b) < Duration::from_secs(60),
        "tracked again after {a:?} (A) and {b:?} (B)"
    );
}

/// The leader-kill scenario on `brokers` (see the file's doc).
fn leader_kill_scenario(brokers: Brokers) {
    let kind = brokers.kind();
    let mut fleet = start_fleet(&brokers);
    let watch = Watch::start(brokers.port(N3), &format!("chaos-watch-lk-{kind}"));
    let driver = "pi-n2-a";

    // Exactly one leader: it answers 202, the standby 503 "not the leader" naming it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (leader_is_a, first) = loop {
        let (ca, ba) = fleet.a.post_segment(driver, 1, 500);
        let (cb, bb) = fleet.b.post_segment(driver, 2, 500);
        let standby_says = |b: &Value, leader: &str| {
            b["error"] == "not the leader"
                && b["leader"].as_str().is_none_or(|l| l.contains(leader))
        };
        if ca == 202 && cb == 503 && standby_says(&bb, fleet.a.id) {
            break (true, ba["segment_id"].as_u64().expect("segment id"));
        }
        if cb == 202 && ca == 503 && standby_says(&ba, fleet.b.id) {
            break (false, bb["segment_id"].as_u64().expect("segment id"));
        }
        assert!(
            Instant::now() < deadline,
            "{kind}: not exactly one leader: server-a answered {ca} {ba}, server-b {cb} {bb} \
             (both 202: no active/standby leadership yet, #15 item 2)"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let (leader, standby) = if leader_is_a {
        (&mut fleet.a, &fleet.b)
    } else {
        (&mut fleet.b, &fleet.a)
    };
    assert!(
        leader.wait_segment(first, "completed", Duration::from_secs(10)),
        "{kind}: the leader's segment {first}: {}",
        leader.segment_state(first)
    );

    leader.daemon.kill9();
    let killed = Instant::now();
    let mut last = (0, Value::Null);
    let takeover = testkit::wait_for(Duration::from_secs(10), || {
        last = standby.post_segment(driver, 1, 500);
        if last.0 == 202 {
            return Some(killed.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
        None
    })
    .unwrap_or_else(|| panic!("{kind}: the standby never dispatched; last answer {last:?}"));
    let seg = last.1["segment_id"].as_u64().expect("segment id");
    let completed = standby.wait_segment(seg, "completed", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    let doubles = watch.record().double_executions();
    let whole_fleet = PIS.iter().all(|(id, _)| standby.tracks(id));
    report(
        &format!("leader_kill_{kind}"),
        &[("standby_dispatches_ms", ms(takeover))],
    );
    assert!(
        takeover < Duration::from_secs(2),
        "{kind}: the standby dispatched {takeover:?} after the leader's death"
    );
    assert!(
        completed,
        "{kind}: the new leader's segment {seg}: {}",
        standby.segment_state(seg)
    );
    assert!(doubles.is_empty(), "{kind}: executed twice: {doubles:?}");
    assert!(
        whole_fleet,
        "{kind}: the survivor does not show the whole fleet"
    );
}

#[test]
fn leader_kill_nats() {
    leader_kill_scenario(Brokers::nats());
}

#[test]
fn leader_kill_mosquitto() {
    leader_kill_scenario(Brokers::mosquitto());
}
