//! Silent network loss on a real link: the Pi runs in its own network namespace behind a veth
//! pair whose both ends start dropping every packet (netem 100 % loss): no FIN, no RST, no
//! socket error, as when a Pi's Wi-Fi vanishes. The server must mark the Pi offline on
//! heartbeat timeout; when the link returns the Pi is online again. A short cut leaves the TCP
//! connection alive (what was written meanwhile is delivered late); a long one outlasts the
//! keep-alive on both sides and the Pi reconnects. Either way, the segment the server sent
//! into the cut and gave up on (its deadline, 2 s here, passed during the cut) is not driven:
//! delivered late by TCP, the Pi refuses it (`Expired`).
//!
//! Needs root (ip netns, tc): `#[ignore]`d, run by `scripts/chaos.sh` when it runs as root.

use std::time::{Duration, Instant};

use common::{AckOutcome, Point, RejectReason};
use fleet_chaos::netns::NetNs;
use fleet_chaos::{Watch, count_lines, ms, report};
use mqtt_server::{OfflineReason, SegmentOutcome, SegmentSpec, Server, ServerConfig};
use testkit::{Broker, Daemon, wait_for};

const ID: &str = "pi-netns";

struct Setup {
    // Dropped in reverse order: the Pi first, then the namespace, the server, the broker.
    broker: Broker,
    server: Server,
    watch: Watch,
    ns: NetNs,
    pi: Daemon,
}

fn setup(tag: &str) -> Setup {
    let ns = NetNs::create();
    let pi_port = testkit::broker::free_port();
    let broker = Broker::start_with(&format!(
        "listener {pi_port} {}\nset_tcp_nodelay true",
        ns.host_ip()
    ));
    let watch = Watch::start(broker.port(), &format!("watch-{tag}"));
    let mut cfg = ServerConfig {
        client_id: format!("server-{tag}"),
        segment_interval: Duration::ZERO,
        status_interval: Duration::ZERO,
        // Segments live 2 s (0.5 s x (3 retries + 1)): shorter than either cut.
        ack_timeout: Duration::from_millis(500),
        segment_retries: 3,
        http_listen: None,
        state_dir: None,
        ..ServerConfig::default()
    };
    cfg.apply("broker", &broker.addr()).unwrap();
    let server = Server::start(&cfg).expect("server starts");
    server
        .handle()
        .wait_leading(Duration::from_secs(10))
        .expect("server leading");
    let bin = testkit::bins::rpi_client();
    let addr = format!("{}:{pi_port}", ns.host_ip());
    let pi = Daemon::spawn(
        std::path::Path::new("ip"),
        &[
            "netns",
            "exec",
            ns.name(),
            bin.to_str().unwrap(),
            "--config",
            "/dev/null",
            "--broker",
            &addr,
            "--client-id",
            ID,
            "--entities",
            "1,2",
        ],
        &[],
    );
    let h = server.handle();
    wait_for(Duration::from_secs(10), || {
        let s = h.snapshot()?;
        let p = s.pi(ID)?;
        (p.online && p.entities.len() == 2).then_some(())
    })
    .expect("the Pi in the namespace is online");
    Setup {
        broker,
        server,
        watch,
        ns,
        pi,
    }
}

fn leg(entity: u32) -> SegmentSpec {
    SegmentSpec::line(entity, Point::new(0, 0), Point::new(100_000, 0), 100, 100)
}

/// Cuts the link for `cut`, dispatching a segment into the silence; `delivered_late` says the
/// connection survives, so TCP delivers the stale segment after the cut.
fn cut_and_restore(tag: &str, cut: Duration, delivered_late: bool) {
    let s = setup(tag);
    let h = s.server.handle();
    let log_at = s.pi.stderr().len();
    let offset_before = h.snapshot().and_then(|x| x.pi(ID)?.clock_offset_ms);
    s.ns.cut();
    let cut_at = Instant::now();
    let stale = h.dispatch(ID, leg(2)).expect("still online for the server");
    let offline = wait_for(Duration::from_secs(5), || {
        (!h.snapshot()?.pi(ID)?.online).then(Instant::now)
    })
    .expect("the server marks the Pi offline");
    let last_beat = s
        .watch
        .with(|r| r.heartbeat_before(ID, offline))
        .expect("heartbeats before the cut");
    let detect = offline.duration_since(last_beat);
    // Reported failed once its deadline (2 s after dispatch) and the grace have passed.
    assert_eq!(
        stale.wait_final(Duration::from_secs(3)),
        Some(SegmentOutcome::Failed(mqtt_server::FailReason::PiOffline))
    );
    assert!(cut_at.elapsed() < cut, "reported failed during the cut");
    std::thread::sleep(cut.saturating_sub(cut_at.elapsed()));
    let reason = h.snapshot().and_then(|x| x.pi(ID)?.offline_reason);
    let cut_lines = s.pi.stderr()[log_at..].lines().count();

    let restored = Instant::now();
    s.ns.restore();
    let back = wait_for(Duration::from_secs(20), || {
        h.snapshot()?.pi(ID)?.online.then(Instant::now)
    })
    .expect("the Pi is online again after the link returns");
    let recovery = back.duration_since(restored);
    std::thread::sleep(Duration::from_secs(2));
    let rec = s.watch.record();
    // How stale were the state reports that arrived after the link came back?
    let oldest = rec.max_state_age_after(restored).unwrap_or(0);
    let offset_after = h.snapshot().and_then(|x| x.pi(ID)?.clock_offset_ms);
    let stale_executed = rec
        .states
        .get(&(ID.to_owned(), 2))
        .is_some_and(|v| v.iter().any(|x| x.segment_id == stale.id));
    let reconnected = count_lines(&s.pi.stderr()[log_at..], "connected to") > 0;
    let stale_acks: Vec<AckOutcome> = rec
        .acks_of(ID, stale.id)
        .into_iter()
        .map(|(_, o)| o)
        .collect();
    let expired = AckOutcome::Rejected(RejectReason::Expired);
    report(
        tag,
        &[
            ("detect_ms", ms(detect)),
            ("recovery_ms", ms(recovery)),
            ("cut_ms", ms(restored.duration_since(cut_at))),
            ("pi_log_lines_in_cut", cut_lines as u64),
            ("reconnected", u64::from(reconnected)),
            (
                "will_published",
                u64::from(reason == Some(OfflineReason::Will)),
            ),
            ("stale_executed", u64::from(stale_executed)),
            (
                "stale_refused",
                stale_acks.iter().filter(|a| **a == expired).count() as u64,
            ),
            ("oldest_state_after_ms", oldest.max(0) as u64),
        ],
    );
    eprintln!(
        "offline reason at restore: {reason:?}; clock offset {offset_before:?} -> {offset_after:?}"
    );
    assert!(
        rec.double_executions().is_empty(),
        "{:?}",
        rec.double_executions()
    );
    assert!(
        detect >= Duration::from_millis(1500) && detect <= Duration::from_millis(2000),
        "offline {detect:?} after the last heartbeat"
    );
    assert!(cut_lines <= 5, "{cut_lines} log lines during the cut");
    assert!(
        !stale_executed,
        "segment {} was reported failed during the cut, yet driven after it (acks {stale_acks:?})",
        stale.id
    );
    assert!(stale_acks.iter().all(|a| *a == expired), "{stale_acks:?}");
    if delivered_late {
        assert!(
            stale_acks.contains(&expired),
            "TCP delivered the segment after the cut; the Pi should refuse it: {stale_acks:?}"
        );
    }
    let _ = &s.broker;
}

#[test]
#[ignore = "needs root (ip netns, tc): run by scripts/chaos.sh as root"]
fn netns_short_cut_keeps_the_connection() {
    cut_and_restore("netns_cut_4s", Duration::from_secs(4), true);
}

#[test]
#[ignore = "needs root (ip netns, tc): run by scripts/chaos.sh as root"]
fn netns_long_cut_outlasts_the_keep_alive() {
    cut_and_restore("netns_cut_20s", Duration::from_secs(20), false);
}
