//! Silent network loss on the broker's side: SIGSTOP freezes mosquitto with every socket
//! open, so neither daemon sees a TCP close. The server must mark the Pis offline on
//! heartbeat timeout, both daemons must notice the dead link by keep-alive, and once the
//! broker runs again everything is back: Pis online in the table, heartbeating, and no
//! segment executed twice.

use std::time::{Duration, Instant};

use fleet_chaos::{Watch, count_lines, ms, report, spawn_pi, spawn_server, wait_table};
use testkit::Broker;

const PIS: [&str; 2] = ["pi-a", "pi-b"];

#[test]
fn frozen_broker_is_detected_and_recovered_from() {
    let broker = Broker::start();
    let watch = Watch::start(broker.port(), "watch-frozen");
    let server = spawn_server(
        &broker.addr(),
        &[
            "--status-interval",
            "100ms",
            "--segment-interval",
            "500ms",
            "--keep-alive",
            "2s",
            "--log-level",
            "debug",
        ],
    );
    let pis: Vec<_> = PIS
        .iter()
        .map(|id| spawn_pi(&broker.addr(), id, "1,2", &["--keep-alive", "2s"]))
        .collect();
    wait_table(&server, Duration::from_secs(10), |t| t.all_active(&PIS, 2))
        .expect("both Pis active with their entities");
    // Let the planner get segments going.
    std::thread::sleep(Duration::from_secs(2));

    broker.pause();
    let paused = Instant::now();
    let gone = wait_table(&server, Duration::from_secs(5), |t| t.active_count == 0)
        .expect("the server marks the Pis offline while the broker is frozen");
    let offline_after = gone.at.duration_since(paused);
    for id in PIS {
        assert_eq!(
            gone.offline.get(id).map(String::as_str),
            Some("heartbeat timeout"),
            "{}",
            gone.text
        );
    }
    // Keep-alive 2 s: a dead link is noticed after 2-4 s (a PINGREQ unanswered).
    std::thread::sleep(Duration::from_secs(6).saturating_sub(paused.elapsed()));
    let lost = |log: &str| count_lines(log, "lost") >= 1;
    assert!(lost(&server.stderr()), "server:\n{}", server.stderr());
    for p in &pis {
        assert!(lost(&p.stderr()), "Pi:\n{}", p.stderr());
    }

    let resumed = Instant::now();
    broker.resume();
    let back = wait_table(&server, Duration::from_secs(15), |t| t.all_active(&PIS, 2))
        .expect("both Pis active again after the broker resumes");
    let recovery = back.at.duration_since(resumed);
    let beats: Vec<Duration> = PIS
        .iter()
        .map(|id| {
            watch
                .wait(Duration::from_secs(10), |r| r.heartbeat_after(id, back.at))
                .map(|t| t.duration_since(resumed))
                .expect("heartbeats again")
        })
        .collect();
    // Keep running a bit: segments keep flowing, none runs twice.
    std::thread::sleep(Duration::from_secs(3));
    let rec = watch.record();
    let twice = rec.double_executions();
    // Segments in flight when the Pis timed out: failed, though the Pis drove on.
    let failed_offline = count_lines(&server.stderr(), "failed: PiOffline");
    report(
        "silent_broker",
        &[
            ("offline_ms", ms(offline_after)),
            ("recovery_ms", ms(recovery)),
            ("pause_ms", ms(resumed.duration_since(paused))),
            ("failed_pi_offline", failed_offline as u64),
        ],
    );
    eprintln!(
        "heartbeats after resume: {beats:?}; executed: {:?}",
        rec.executed()
    );
    assert!(twice.is_empty(), "{twice:?}");
    assert!(
        offline_after <= Duration::from_millis(2200),
        "offline only {offline_after:?} after the freeze"
    );
    assert!(recovery < Duration::from_secs(6), "back after {recovery:?}");
    for p in &pis {
        let log = p.stderr();
        assert!(
            count_lines(&log, "cannot connect") <= 3,
            "reconnect failures must be rate-limited:\n{log}"
        );
    }
}
