//! The link against a real mosquitto: connect, subscribe, receive, survive a broker restart
//! (re-subscribe, new session, renewed will), publish a final status and stop cleanly.

use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mqtt_link::{BrokerConfig, LastWill, Link, LinkConfig, LinkEvent, QoS};
use testkit::{Broker, Probe};

fn config(broker: &Broker, id: &str) -> LinkConfig {
    let mut b = BrokerConfig::default();
    b.apply("broker", &broker.addr()).unwrap().unwrap();
    let mut cfg = LinkConfig::new(id, b);
    cfg.subscriptions = vec![(format!("server/{id}/segment"), QoS::AtLeastOnce)];
    cfg.first_session = 7;
    cfg.will = Some(Box::new(move |session| {
        LastWill::new(
            "test/will",
            session.to_le_bytes().to_vec(),
            QoS::AtLeastOnce,
            false,
        )
    }));
    cfg
}

fn next_connected(rx: &Receiver<LinkEvent>, timeout: Duration) -> Option<u32> {
    let deadline = Instant::now() + timeout;
    while let Ok(ev) = rx.recv_deadline(deadline) {
        if let LinkEvent::Connected { session } = ev {
            return Some(session);
        }
    }
    None
}

fn next_message(rx: &Receiver<LinkEvent>, timeout: Duration) -> Option<(String, Vec<u8>)> {
    let deadline = Instant::now() + timeout;
    while let Ok(ev) = rx.recv_deadline(deadline) {
        if let LinkEvent::Message(p) = ev {
            return Some((p.topic, p.payload.to_vec()));
        }
    }
    None
}

#[test]
fn receives_resubscribes_after_restart_and_renews_will() {
    let mut broker = Broker::start();
    let (tx, rx) = crossbeam_channel::bounded(100);
    let link = Link::start(config(&broker, "pi-1"), tx).unwrap();
    assert_eq!(next_connected(&rx, Duration::from_secs(5)), Some(7));

    let probe = Probe::connect(broker.port(), "probe", &[]);
    // The subscription is sent right after ConnAck; give it a moment, then publish.
    let got = (0..50).find_map(|_| {
        probe.publish("server/pi-1/segment", b"one", QoS::AtLeastOnce, false);
        next_message(&rx, Duration::from_millis(100))
    });
    assert_eq!(got, Some(("server/pi-1/segment".into(), b"one".to_vec())));
    drop(probe);

    broker.kill();
    let lost_at = Instant::now();
    let mut saw_disconnect = false;
    while lost_at.elapsed() < Duration::from_secs(5) {
        if let Ok(LinkEvent::Disconnected { .. }) = rx.recv_timeout(Duration::from_millis(100)) {
            saw_disconnect = true;
            break;
        }
    }
    assert!(
        saw_disconnect,
        "no Disconnected event after the broker died"
    );
    assert!(!link.is_connected());

    // Down for a second: the link must back off, not spin.
    std::thread::sleep(Duration::from_secs(1));
    broker.restart();
    let back = Instant::now();
    assert_eq!(next_connected(&rx, Duration::from_secs(5)), Some(8));
    let reconnect = back.elapsed();
    assert!(
        reconnect < Duration::from_secs(3),
        "reconnect took {reconnect:?}"
    );

    // Re-subscribed without being asked.
    let probe = Probe::connect(broker.port(), "probe2", &["test/will"]);
    let got = (0..50).find_map(|_| {
        probe.publish("server/pi-1/segment", b"two", QoS::AtLeastOnce, false);
        next_message(&rx, Duration::from_millis(100))
    });
    assert_eq!(got, Some(("server/pi-1/segment".into(), b"two".to_vec())));

    // The will carries the current session. A second client with the same id takes the
    // session over, and mosquitto publishes the displaced connection's will.
    let _thief = Probe::connect(broker.port(), "pi-1", &[]);
    let will = probe
        .wait_for(Duration::from_secs(5), |s| s.topic == "test/will")
        .expect("will published on takeover");
    assert_eq!(u32::from_le_bytes(will.payload[..4].try_into().unwrap()), 8);
    drop(_thief);
    drop(link);
}

#[test]
fn shutdown_publishes_final_message_and_joins_fast() {
    let broker = Broker::start();
    let probe = Probe::connect(broker.port(), "watch", &["rpi/pi-2/status", "test/will"]);
    let (tx, rx) = crossbeam_channel::bounded(100);
    let link = Link::start(config(&broker, "pi-2"), tx).unwrap();
    assert!(next_connected(&rx, Duration::from_secs(5)).is_some());
    let t = Instant::now();
    let joined = link.shutdown(
        Some(("rpi/pi-2/status".into(), b"offline".to_vec())),
        Duration::from_secs(1),
    );
    let took = t.elapsed();
    assert!(joined, "link thread not joined");
    assert!(took < Duration::from_secs(1), "shutdown took {took:?}");
    let seen = probe.collect_for(Duration::from_millis(500));
    assert!(
        seen.iter()
            .any(|s| s.topic == "rpi/pi-2/status" && s.payload == b"offline"),
        "final message not published: {seen:?}"
    );
    assert!(
        !seen.iter().any(|s| s.topic == "test/will"),
        "a clean shutdown must not trigger the will"
    );
}

#[test]
fn shutdown_while_broker_is_down_is_prompt() {
    let mut broker = Broker::start();
    let (tx, rx) = crossbeam_channel::bounded(100);
    let link = Link::start(config(&broker, "pi-3"), tx).unwrap();
    assert!(next_connected(&rx, Duration::from_secs(5)).is_some());
    broker.kill();
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    assert!(link.shutdown(None, Duration::from_secs(1)));
    assert!(t.elapsed() < Duration::from_secs(1));
}

#[test]
fn refused_port_backs_off_instead_of_spinning() {
    // Nobody listens on this port. rumqttc alone would retry ~100k times a second; with the
    // link's backoff the process stays nearly idle while it retries for 1 s.
    let port = testkit::broker::free_port();
    let mut b = BrokerConfig::default();
    b.apply("broker", &format!("127.0.0.1:{port}"))
        .unwrap()
        .unwrap();
    let (tx, _rx) = crossbeam_channel::bounded(10);
    let cpu_before = process_cpu();
    let link = Link::start(LinkConfig::new("pi-4", b), tx).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let used = process_cpu() - cpu_before;
    assert!(link.shutdown(None, Duration::from_secs(1)));
    // A spinning rumqttc burns a whole core (~1 s here); backing off costs next to nothing.
    assert!(
        used < Duration::from_millis(300),
        "link used {used:?} CPU in 1 s"
    );
}

/// User + system CPU time of this process, from /proc/self/stat (clock ticks of 10 ms).
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

#[test]
fn a_burst_arrives_whole_and_in_order_and_is_refused_while_down() {
    use mqtt_link::{NotSent, Outgoing};
    let mut broker = Broker::start();
    let probe = Probe::connect(broker.port(), "probe-burst", &["burst/#"]);
    let (tx, rx) = crossbeam_channel::bounded(100);
    let mut cfg = config(&broker, "pi-burst");
    cfg.batch_scheduling = true;
    let link = Link::start(cfg, tx).unwrap();
    assert!(next_connected(&rx, Duration::from_secs(5)).is_some());
    let publisher = link.publisher();
    let payloads: Vec<Vec<u8>> = (0u8..5).map(|i| vec![i; 3]).collect();
    let topics = ["burst/beat", "burst/state"];
    let msgs: Vec<Outgoing<'_>> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| Outgoing {
            topic: topics[usize::from(i > 0)],
            qos: QoS::AtMostOnce,
            retain: false,
            payload: p,
        })
        .collect();
    // Ten bursts: every message arrives, each burst in its order.
    for _ in 0..10 {
        publisher.try_send_many(&msgs).expect("a burst handed over");
    }
    let seen = probe.collect_for(Duration::from_millis(1500));
    assert_eq!(seen.len(), 50, "{seen:?}");
    for (k, burst) in seen.chunks(5).enumerate() {
        let got: Vec<(&str, &[u8])> = burst
            .iter()
            .map(|s| (s.topic.as_str(), s.payload.as_slice()))
            .collect();
        let want: Vec<(&str, &[u8])> = msgs.iter().map(|m| (m.topic, m.payload)).collect();
        assert_eq!(got, want, "burst {k}");
    }
    assert_eq!(publisher.try_send_many(&[]), Ok(()));
    // The broker gone: nothing is handed over, and nothing of it comes out later.
    broker.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    while publisher.is_connected() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(publisher.try_send_many(&msgs), Err(NotSent::Disconnected));
    assert!(link.shutdown(None, Duration::from_secs(5)));
}

/// A periodic job that publishes its run count on `tick/n` every `every`, and records on
/// which thread and whether connected each run was.
struct Ticker {
    next: Instant,
    every: Duration,
    n: u32,
    runs: std::sync::Arc<std::sync::Mutex<Vec<(String, bool)>>>,
}

impl mqtt_link::Periodic for Ticker {
    fn next(&self) -> Instant {
        self.next
    }
    fn run(
        &mut self,
        now: Instant,
        connected: bool,
        publish: &mut dyn FnMut(mqtt_link::Outgoing<'_>) -> bool,
    ) {
        while self.next <= now + Duration::from_millis(1) {
            self.next += self.every;
        }
        let thread = std::thread::current().name().unwrap_or("?").to_owned();
        self.runs.lock().unwrap().push((thread, connected));
        let payload = self.n.to_le_bytes();
        let sent = publish(mqtt_link::Outgoing {
            topic: "tick/n",
            qos: QoS::AtMostOnce,
            retain: false,
            payload: &payload,
        });
        assert_eq!(sent, connected, "handed over exactly while connected");
        self.n += u32::from(sent);
    }
}

#[test]
fn a_periodic_job_runs_on_the_link_thread_at_its_times_and_knows_when_the_link_is_down() {
    let mut broker = Broker::start();
    let probe = Probe::connect(broker.port(), "probe-tick", &["tick/#"]);
    let (tx, rx) = crossbeam_channel::bounded(100);
    let runs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let every = Duration::from_millis(50);
    let mut cfg = config(&broker, "pi-tick");
    cfg.periodic = Some(Box::new(Ticker {
        next: Instant::now() + every,
        every,
        n: 0,
        runs: runs.clone(),
    }));
    let link = Link::start(cfg, tx).unwrap();
    assert!(next_connected(&rx, Duration::from_secs(5)).is_some());
    let seen = probe.collect_for(Duration::from_millis(1000));
    // 20 runs in a second at 50 ms; the window and the connect make it 17-21.
    assert!(
        (17..=21).contains(&seen.len()),
        "{} ticks: {seen:?}",
        seen.len()
    );
    let counts: Vec<u32> = seen
        .iter()
        .map(|s| u32::from_le_bytes(s.payload[..4].try_into().unwrap()))
        .collect();
    assert!(
        counts.windows(2).all(|w| w[1] == w[0] + 1),
        "one per run, in order: {counts:?}"
    );
    assert!(
        runs.lock()
            .unwrap()
            .iter()
            .all(|(thread, _)| thread == "mqtt-link"),
        "run by the link thread itself"
    );

    // Down: a run (between connection attempts; none while the thread sleeps between them)
    // is told so, and nothing it makes comes out later.
    broker.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    while link.is_connected() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    runs.lock().unwrap().clear();
    std::thread::sleep(Duration::from_millis(500));
    let down = runs.lock().unwrap().clone();
    assert!(down.iter().all(|(_, connected)| !connected), "{down:?}");

    // Back: it publishes again, counting on from where it was.
    broker.restart();
    assert!(next_connected(&rx, Duration::from_secs(10)).is_some());
    let probe = Probe::connect(broker.port(), "probe-tick-2", &["tick/#"]);
    let again = probe.collect_for(Duration::from_millis(500));
    assert!(again.len() >= 5, "{} ticks after the restart", again.len());
    let first = u32::from_le_bytes(again[0].payload[..4].try_into().unwrap());
    assert!(first >= *counts.last().unwrap(), "{first} after {counts:?}");
    assert!(link.shutdown(None, Duration::from_secs(5)));
}

/// A TCP proxy on loopback that holds everything the broker sends for `delay` before passing
/// it on (the client's bytes go straight through): a slow link's CONNACK.
fn slow_proxy(broker_port: u16, delay: Duration) -> u16 {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming().take(8).flatten() {
            let Ok(upstream) = TcpStream::connect(("127.0.0.1", broker_port)) else {
                continue;
            };
            let pipe = |mut from: TcpStream, mut to: TcpStream, wait: Duration| {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        std::thread::sleep(wait);
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Both);
                });
            };
            pipe(
                client.try_clone().unwrap(),
                upstream.try_clone().unwrap(),
                Duration::ZERO,
            );
            pipe(upstream, client, delay);
        }
    });
    port
}

#[test]
fn a_connect_slower_than_a_round_is_not_cut_off_by_the_periodic_job() {
    let broker = Broker::start();
    let port = slow_proxy(broker.port(), Duration::from_millis(300));
    let mut b = BrokerConfig::default();
    b.apply("broker", &format!("127.0.0.1:{port}"))
        .unwrap()
        .unwrap();
    let mut cfg = LinkConfig::new("pi-slow", b);
    let every = Duration::from_millis(50);
    let runs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    cfg.periodic = Some(Box::new(Ticker {
        next: Instant::now() + every,
        every,
        n: 0,
        runs: runs.clone(),
    }));
    let (tx, rx) = crossbeam_channel::bounded(100);
    let link = Link::start(cfg, tx).unwrap();
    assert!(
        next_connected(&rx, Duration::from_secs(5)).is_some(),
        "connected through a link whose CONNACK takes 300 ms, with a job every 50 ms"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        runs.lock().unwrap().iter().any(|(_, connected)| *connected),
        "and the job runs once connected"
    );
    assert!(link.shutdown(None, Duration::from_secs(5)));
}
