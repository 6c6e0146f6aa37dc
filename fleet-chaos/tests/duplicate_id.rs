//! Two Pis configured with the same client id (an SD card cloned without changing it): the
//! broker kicks one whenever the other connects, and the two fight. The server must see the
//! flapping and report a suspected duplicate id (one warning, a table marker, a counter)
//! without logging every flap; once one of them is switched off, the other settles and stays
//! online.

use std::time::{Duration, Instant};

use fleet_chaos::{
    Watch, count_lines, ms, report, skip_backlog, spawn_pi, spawn_server, summary, wait_table,
};
use testkit::{Broker, wait_for};

const ID: &str = "pi-twin";
const WARNING: &str = "pi-twin: suspected duplicate client id";

#[test]
fn duplicate_client_id_is_reported_and_settles_when_one_goes() {
    let broker = Broker::start();
    let watch = Watch::start(broker.port(), "watch-dup");
    let mut server = spawn_server(
        &broker.addr(),
        &["--status-interval", "100ms", "--segment-interval", "0s"],
    );
    let first = spawn_pi(&broker.addr(), ID, "1", &[]);
    wait_table(&server, Duration::from_secs(10), |t| t.all_active(&[ID], 1))
        .expect("the first Pi active");

    let mut second = spawn_pi(&broker.addr(), ID, "2", &[]);
    let started = Instant::now();
    let detected = wait_for(Duration::from_secs(20), || {
        server.stderr().contains(WARNING).then(Instant::now)
    })
    .unwrap_or_else(|| panic!("no duplicate-id warning:\n{}", server.stderr()));
    let detect = detected.duration_since(started);
    skip_backlog(&server);
    let marked = wait_table(&server, Duration::from_secs(3), |t| {
        t.text
            .lines()
            .any(|l| l.contains("pi-twin:") && l.contains("SUSPECTED DUPLICATE ID"))
    })
    .expect("the table marks the Pi");
    // Let them fight a little longer: the server's log must stay quiet about it.
    std::thread::sleep(Duration::from_secs(4));
    let flaps = broker
        .log()
        .matches("already connected, closing old connection")
        .count();

    second.kill9();
    let killed = Instant::now();
    // The remaining Pi may be in its takeover backoff (5-10 s after 3 takeovers in a row,
    // mqtt-link): active and fresh within 12 s.
    skip_backlog(&server);
    wait_table(&server, Duration::from_secs(12), |t| {
        t.active
            .get(ID)
            .and_then(|p| p.entities.get(&1))
            .is_some_and(|e| e.age_ms < 500)
    })
    .expect("the remaining Pi (entity 1) active and fresh");
    let settle = killed.elapsed();
    // Settled: no new connection of the id for 3 s.
    wait_for(Duration::from_secs(10), || {
        let last_online = watch.with(|r| {
            r.statuses
                .get(ID)?
                .iter()
                .filter(|(_, s, retained)| !retained && s.presence == common::Presence::Online)
                .map(|(at, _, _)| *at)
                .next_back()
        })?;
        (last_online.elapsed() >= Duration::from_secs(3)).then_some(last_online)
    })
    .expect("the remaining Pi settles");
    skip_backlog(&server);
    let t = wait_table(&server, Duration::from_secs(2), |t| {
        t.active
            .get(ID)
            .and_then(|p| p.entities.get(&1))
            .is_some_and(|e| e.age_ms < 500)
    })
    .expect("the remaining Pi (entity 1) active and fresh");
    // The twin's entity stays listed, its reports aging: the server never forgets entities
    // of a Pi it still tracks.
    let stale = t.active[ID].entities.get(&2).map(|e| e.age_ms);
    assert!(stale.is_none_or(|age| age >= 2000), "{}", t.text);
    server.terminate(Duration::from_secs(5));
    let log = server.stderr();
    let registry = summary::counters(&log, "registry: ").expect("registry counters");
    let warnings = count_lines(&log, WARNING);
    let presence_lines =
        count_lines(&log, "pi-twin: online") + count_lines(&log, "pi-twin: offline");
    report(
        "duplicate_id",
        &[
            ("detect_ms", ms(detect)),
            ("settle_ms", ms(settle)),
            ("takeovers", flaps as u64),
            ("presence_lines", presence_lines as u64),
        ],
    );
    eprintln!("{}\n{log}", marked.text);
    // They fight until each has seen 3 takeovers in a row, then back off 5-10 s (mqtt-link's
    // TAKEOVER_BACKOFF; rpi-mqtt-client/tests/flapping.rs bounds the rate).
    assert!(flaps >= 3, "the two did not fight:\n{}", broker.log());
    assert_eq!(
        summary::get(&registry, "suspected_duplicate_id"),
        1,
        "{log}"
    );
    assert_eq!(warnings, 1, "one warning per 30 s window:\n{log}");
    assert!(
        presence_lines <= 16,
        "{presence_lines} presence lines for {flaps} takeovers:\n{log}"
    );
    assert!(
        detect < Duration::from_secs(10),
        "detected after {detect:?}"
    );
    for pi in [&first, &second] {
        let l = pi.stderr();
        let lines = count_lines(&l, "connection to") + count_lines(&l, "connected to");
        assert!(lines <= 8, "{lines} connection lines:\n{l}");
    }
}
