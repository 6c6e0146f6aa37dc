//! The broker is down for 60 s (kill -9, restarted on the same port). The Pi's memory stays
//! flat, its log stays rate-limited (a handful of lines for the whole outage, not one per
//! reconnect attempt), and it is back within 1 s of the broker's return: a probe subscribed
//! right after the restart sees its heartbeat within 1 s. The server rides it out too.
//!
//! Takes about 80 s: `#[ignore]`d, run by `scripts/chaos.sh` (`make chaos`).

use std::time::{Duration, Instant};

use fleet_chaos::{
    RssSampler, count_lines, ms, report, rss, skip_backlog, spawn_pi, spawn_server, wait_table,
};
use testkit::probe::pi_return;
use testkit::{Broker, Probe};

const OUTAGE: Duration = Duration::from_secs(60);
const ID: &str = "pi-outage";

/// Lines logged after the first `from` bytes of `log`.
fn lines_since(log: &str, from: usize) -> Vec<String> {
    log.get(from..)
        .unwrap_or("")
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
#[ignore = "takes 80 s (60 s outage): run by scripts/chaos.sh"]
fn broker_down_for_60_seconds() {
    let mut broker = Broker::start();
    let server = spawn_server(
        &broker.addr(),
        &["--status-interval", "500ms", "--segment-interval", "1s"],
    );
    let mut pi = spawn_pi(&broker.addr(), ID, "1,2,3", &[]);
    wait_table(&server, Duration::from_secs(10), |t| t.all_active(&[ID], 3))
        .expect("the Pi active");
    // Warm up with segments going, then sample memory through the outage and after.
    std::thread::sleep(Duration::from_secs(5));
    let pi_rss = RssSampler::start(pi.pid(), Duration::from_secs(1));
    let server_rss = RssSampler::start(server.pid(), Duration::from_secs(1));
    let pi_log_at = pi.stderr().len();
    let server_log_at = server.stderr().len();

    broker.kill();
    let died = Instant::now();
    std::thread::sleep(OUTAGE);
    let pi_outage_lines = lines_since(&pi.stderr(), pi_log_at);
    let server_outage_lines = lines_since(&server.stderr(), server_log_at);
    assert!(
        pi.wait_exit(Duration::ZERO).is_none(),
        "the Pi died in the outage"
    );

    broker.restart();
    let back = Instant::now();
    let probe = Probe::connect(broker.port(), "probe-outage", &[&format!("rpi/{ID}/#")]);
    let subscribed = back.elapsed();
    let seen = pi_return(&probe, Duration::from_secs(5));
    let online_live = seen.online.as_ref().map(|(_, s)| !s.retain);
    let heartbeat_after = seen
        .heartbeat
        .expect("no heartbeat within 5 s of the broker's return")
        .duration_since(back);
    skip_backlog(&server);
    let table = wait_table(&server, Duration::from_secs(10), |t| {
        t.all_active(&[ID], 3) && t.active[ID].last_hb_ms < 1000
    })
    .expect("the server lists the Pi again");
    let server_back = table.at.duration_since(back);
    std::thread::sleep(Duration::from_secs(3));
    let pi_mem = pi_rss.finish();
    let server_mem = server_rss.finish();
    let (lo, hi) = rss::range_after(&pi_mem, Duration::ZERO).expect("samples");
    let (slo, shi) = rss::range_after(&server_mem, Duration::ZERO).expect("samples");

    report(
        "broker_outage_60s",
        &[
            ("recovery_ms", ms(heartbeat_after)),
            ("probe_subscribed_ms", ms(subscribed)),
            ("server_table_ms", ms(server_back)),
            ("outage_ms", ms(back.duration_since(died))),
            ("pi_rss_min_kib", lo),
            ("pi_rss_max_kib", hi),
            ("server_rss_min_kib", slo),
            ("server_rss_max_kib", shi),
            ("pi_log_lines_in_outage", pi_outage_lines.len() as u64),
            (
                "server_log_lines_in_outage",
                server_outage_lines.len() as u64,
            ),
        ],
    );
    eprintln!(
        "Pi log during the outage:\n{}\nserver log during the outage:\n{}",
        pi_outage_lines.join("\n"),
        server_outage_lines.join("\n")
    );
    assert_eq!(
        online_live,
        Some(true),
        "precondition: the probe (subscribed {subscribed:?} after the restart) saw the Pi's \
         Online live, so it was listening before the Pi came back"
    );
    assert!(
        heartbeat_after < Duration::from_secs(1),
        "heartbeat {heartbeat_after:?} after the broker's return"
    );
    assert!(
        hi - lo < 512,
        "the Pi's memory moved {} KiB: {pi_mem:?}",
        hi - lo
    );
    assert!(
        shi - slo < 2048,
        "the server's memory moved {} KiB: {server_mem:?}",
        shi - slo
    );
    assert!(
        pi_outage_lines.len() <= 5,
        "Pi logged {} lines in the outage",
        pi_outage_lines.len()
    );
    assert!(
        count_lines(&pi_outage_lines.join("\n"), "cannot connect") <= 3,
        "reconnect failures are rate-limited"
    );
    assert!(
        server_outage_lines.len() <= 6,
        "server logged {} lines in the outage",
        server_outage_lines.len()
    );
    assert!(
        server_back < Duration::from_secs(5),
        "server lists the Pi {server_back:?} after the return"
    );
}
