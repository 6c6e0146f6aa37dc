//! Broker failover (#15): a Pi and the server configured with two brokers
//! (`--broker b1,b2`) move to the second when the first is killed (kill -9), within 3 s: a
//! probe on broker 2 sees the Pi's heartbeats, and the server logs its connection to broker 2
//! and lists the Pi again. And with one broker, the server is back within 1 s of the broker's
//! return, as the Pis are (its reconnect backoff is capped like theirs).

use std::time::{Duration, Instant};

use fleet_chaos::{ms, report, skip_backlog, spawn_pi, wait_table};
use testkit::process::{Spawn, Stream};
use testkit::{Broker, Daemon, Probe};

const ID: &str = "pi-failover";

/// The server against `broker` (one address or a list), its stderr lines kept to wait on.
fn server(broker: &str) -> Daemon {
    Spawn::new(&testkit::bins::mqtt_server())
        .args(&[
            "--config",
            "/dev/null",
            "--broker",
            broker,
            "--status-interval",
            "200ms",
            "--segment-interval",
            "0s",
            // Tests run in parallel: no operator interface on the default 127.0.0.1:8080.
            "--http-listen",
            "off",
        ])
        .stderr_lines()
        .start()
}

/// How long after `from` the server logged its connection to `addr`.
fn server_connected(server: &Daemon, addr: &str, from: Instant) -> Duration {
    let needle = format!("connected to {addr} ");
    server
        .wait_line(Stream::Stderr, Duration::from_secs(10), |l| {
            l.contains(&needle)
        })
        .unwrap_or_else(|| panic!("server never connected to {addr}:\n{}", server.stderr()))
        .at
        .duration_since(from)
}

#[test]
fn pi_and_server_move_to_the_second_broker() {
    let mut b1 = Broker::start();
    let b2 = Broker::start();
    let list = format!("{},{}", b1.addr(), b2.addr());
    let server = server(&list);
    server_connected(&server, &b1.addr(), Instant::now());
    let mut pi = spawn_pi(&list, ID, "1", &[]);
    wait_table(&server, Duration::from_secs(10), |t| t.all_active(&[ID], 1))
        .expect("the Pi active through broker 1");
    let probe = Probe::connect(b2.port(), "probe-b2", &[&format!("rpi/{ID}/heartbeat")]);
    assert!(
        probe
            .collect_for(Duration::from_millis(300))
            .iter()
            .all(|s| s.retain),
        "heartbeats on broker 2 before broker 1 died"
    );

    b1.kill();
    let died = Instant::now();
    let pi_moved = probe
        .wait_for(Duration::from_secs(5), |s| !s.retain)
        .expect("no heartbeat on broker 2 within 5 s of broker 1's death")
        .at
        .duration_since(died);
    let server_moved = server_connected(&server, &b2.addr(), died);
    skip_backlog(&server);
    let table = wait_table(&server, Duration::from_secs(10), |t| {
        t.all_active(&[ID], 1) && t.active[ID].last_hb_ms < 1000
    })
    .expect("the server lists the Pi again through broker 2");
    let listed = table.at.duration_since(died);
    report(
        "broker_failover",
        &[
            ("pi_on_broker2_ms", ms(pi_moved)),
            ("server_on_broker2_ms", ms(server_moved)),
            ("server_lists_pi_ms", ms(listed)),
        ],
    );
    assert!(
        pi_moved < Duration::from_secs(3),
        "Pi moved in {pi_moved:?}"
    );
    assert!(
        server_moved < Duration::from_secs(3),
        "server moved in {server_moved:?}"
    );
    assert!(pi.wait_exit(Duration::ZERO).is_none(), "the Pi died");
}

#[test]
fn server_is_back_within_1s_of_the_brokers_return() {
    let mut broker = Broker::start();
    let server = server(&broker.addr());
    server_connected(&server, &broker.addr(), Instant::now());
    broker.kill();
    // Long enough for the backoff to reach its cap.
    std::thread::sleep(Duration::from_secs(3));
    broker.restart();
    let back = Instant::now();
    let after = server_connected(&server, &broker.addr(), back);
    report("server_broker_return", &[("server_back_ms", ms(after))]);
    assert!(
        after < Duration::from_secs(1),
        "server back {after:?} after the broker"
    );
}
