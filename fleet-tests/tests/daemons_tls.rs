//! Both real daemons against the production broker config with TLS and credentials: the
//! `mqtt-server` binary logs in as `server` with a password over TLS (8883), `rpi-client` pi-a
//! with its password over TLS (8883), pi-b with its client certificate (8884). Checked through
//! the server's status table on stdout: both Pis online, states and segments flowing; then pi-a's
//! account forges pi-b's heartbeats, states, status and acks and sends pi-b segments, and neither
//! the server's table nor pi-b shows any trace of it, while the same messages from the rightful
//! accounts do show (positive controls).
//!
//! The binaries are built on demand by `testkit::bins` (a no-op when up to date).

use std::time::{Duration, Instant};

use common::{Heartbeat, Message};
use fleet_tests::forge::{self, FORGED_CLOCK_SKEW_MS, FORGED_ENTITY, FORGED_SEQ_JUMP};
use fleet_tests::prod_broker::broker_flags;
use fleet_tests::status_table::{Table, next_table, wait_table};
use fleet_tests::{Listener, PI_A, PI_B, ProdBroker, SERVER_USER};
use mqtt_link::BrokerConfig;
use testkit::Daemon;
use testkit::probe::Seen;

/// First connection, TLS handshakes and the first tables of debug builds on a busy machine.
const START: Duration = Duration::from_secs(30);
/// Something that must show within a few status intervals.
const SHOW: Duration = Duration::from_secs(15);
/// Segment ids of the test's own segments (the server's ids start from the clock, elsewhere).
const FORGED_SEGMENT: u32 = 0xF00D_0000;
const CONTROL_SEGMENT: u32 = 0xF00D_F000;
const ROUNDS: u32 = 8;

fn spawn(bin: &str, mut args: Vec<String>, cfg: &BrokerConfig) -> Daemon {
    args.extend(broker_flags(cfg));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Daemon::spawn(&testkit::bins::daemon(bin), &args, &[])
}

fn pi(id: &str, cfg: &BrokerConfig) -> Daemon {
    let args = [
        "--config",
        "/dev/null",
        "--client-id",
        id,
        "--entities",
        "1,2",
    ];
    spawn("rpi-client", args.map(String::from).to_vec(), cfg)
}

fn both_online_with_states(t: &Table) -> bool {
    [PI_A, PI_B].iter().all(|id| {
        t.active
            .get(*id)
            .is_some_and(|p| p.entities.contains_key(&1) && p.entities.contains_key(&2))
    })
}

/// No trace of pi-a's forgeries in one table.
fn assert_clean(t: &Table) {
    let b = t
        .active
        .get(PI_B)
        .unwrap_or_else(|| panic!("pi-b is not online (forged offline status?):\n{}", t.text));
    assert!(
        t.active
            .values()
            .all(|p| !p.entities.contains_key(&FORGED_ENTITY)),
        "forged entity {FORGED_ENTITY} in the table:\n{}",
        t.text
    );
    let skew = b.clock_offset_ms.unwrap_or(0).unsigned_abs();
    assert!(
        skew < FORGED_CLOCK_SKEW_MS / 6,
        "pi-b's clock offset took a forged heartbeat:\n{}",
        t.text
    );
    assert!(
        b.lost_hb < u64::from(FORGED_SEQ_JUMP) / 5,
        "pi-b's lost heartbeats took a forged sequence number:\n{}",
        t.text
    );
    assert_ne!(
        b.session,
        Some(u32::MAX),
        "pi-b's session took a forged status:\n{}",
        t.text
    );
}

/// The newest heartbeat sequence number of pi-b among what the observer received.
fn latest_seq(seen: &[Seen]) -> Option<u32> {
    seen.iter()
        .rev()
        .find_map(|s| match Message::decode(&s.payload) {
            Ok(Message::Heartbeat(Heartbeat { seq, .. })) if s.topic.ends_with("/heartbeat") => {
                Some(seq)
            }
            _ => None,
        })
}

fn acks_of(seen: &[Seen]) -> Vec<(u32, String)> {
    seen.iter()
        .filter(|s| s.topic == "rpi/pi-b/ack")
        .filter_map(|s| match Message::decode(&s.payload) {
            Ok(Message::Ack(a)) => Some((a.segment_id, format!("{:?}", a.outcome))),
            _ => None,
        })
        .collect()
}

#[test]
fn daemons_run_over_tls_and_ignore_forged_messages() {
    let b = ProdBroker::start();
    let server = spawn(
        "mqtt-server",
        [
            "--config",
            "/dev/null",
            "--status-interval",
            "500ms",
            "--segment-interval",
            "1s",
            "--http-listen",
            "off",
        ]
        .map(String::from)
        .to_vec(),
        &b.broker_config(Listener::Tls, SERVER_USER),
    );
    // pi-a: password over TLS; its username defaults to its client id.
    let mut pi_a_cfg = b.broker_config(Listener::Tls, PI_A);
    pi_a_cfg.username = None;
    let mut pi_a = pi(PI_A, &pi_a_cfg);
    // pi-b: client certificate, no password.
    let mut pi_b = pi(PI_B, &b.broker_config(Listener::ClientCert, PI_B));

    let t = wait_table(&server, START, both_online_with_states).unwrap_or_else(|last| {
        panic!(
            "both Pis online with states within {START:?}; last table:\n{}\n{}",
            last.map(|t| t.text).unwrap_or_default(),
            b.log()
        )
    });
    assert_clean(&t);
    // Segments flow from the server to both Pis (the demo planner), acks back.
    let seg_of = |t: &Table, id: &str| {
        t.active
            .get(id)
            .is_some_and(|p| p.entities.values().any(|e| e.seg.is_some()))
    };
    wait_table(&server, SHOW, |t| seg_of(t, PI_A) && seg_of(t, PI_B)).unwrap_or_else(|last| {
        panic!(
            "no segment in progress on both Pis; last table:\n{}",
            last.map(|t| t.text).unwrap_or_default()
        )
    });

    // The server account on the local listener watches pi-b (client id "observer": on the
    // TLS listener the id would become "server" and take over the daemon's session).
    let observer = b.probe(
        Listener::Local,
        SERVER_USER,
        "observer",
        &["rpi/pi-b/heartbeat", "rpi/pi-b/ack"],
    );
    // pi-a's account, on the local listener for the same reason (on 8883 it would be "pi-a").
    let attacker = b.probe(Listener::Local, PI_A, "pi-a-attacker", &[]);
    let mut seen: Vec<Seen> = Vec::new();
    let mut last_seq = 0;
    for round in 0..ROUNDS {
        seen.extend(observer.collect_for(Duration::from_millis(1)));
        last_seq = latest_seq(&seen).unwrap_or(last_seq);
        for f in forge::as_pi(PI_B, last_seq, FORGED_SEGMENT + 0x100 + round) {
            f.publish(&attacker);
        }
        forge::segment(PI_B, 1, FORGED_SEGMENT + round).publish(&attacker);
        let t = next_table(&server, SHOW).expect("the server keeps printing tables");
        assert_clean(&t);
    }
    // A few more tables: anything that got through has had time to show.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        let t = next_table(&server, SHOW).expect("the server keeps printing tables");
        assert_clean(&t);
    }
    seen.extend(observer.collect_for(Duration::from_millis(200)));
    assert!(
        last_seq > 0,
        "the observer saw no heartbeat of pi-b (the heartbeat forgery had nothing to jump from)"
    );
    let forged_acks: Vec<_> = acks_of(&seen)
        .into_iter()
        .filter(|(id, _)| (FORGED_SEGMENT..FORGED_SEGMENT + 0x200).contains(id))
        .collect();
    assert!(
        forged_acks.is_empty(),
        "pi-b acknowledged segments pi-a forged, or pi-a forged acks: {forged_acks:?}"
    );

    // Positive controls: the same kinds of message from the rightful accounts do show.
    let pi_b_account = b.probe(Listener::Local, PI_B, "pi-b-control", &[]);
    let mut state = forge::as_pi(PI_B, 0, 0)
        .into_iter()
        .find(|f| f.topic.ends_with("/state"))
        .unwrap();
    // Entity 998, so that the forged entity 999 stays absent.
    state.payload[1..5].copy_from_slice(&(FORGED_ENTITY - 1).to_le_bytes());
    state.publish(&pi_b_account);
    wait_table(&server, SHOW, |t| {
        t.active
            .get(PI_B)
            .is_some_and(|p| p.entities.contains_key(&(FORGED_ENTITY - 1)))
    })
    .unwrap_or_else(|last| {
        panic!(
            "pi-b's own state for entity {} never showed; last table:\n{}",
            FORGED_ENTITY - 1,
            last.map(|t| t.text).unwrap_or_default()
        )
    });
    seen.extend(observer.collect_for(Duration::from_millis(1)));
    let hb = forge::as_pi(PI_B, latest_seq(&seen).unwrap_or(last_seq), 0)
        .into_iter()
        .find(|f| f.topic.ends_with("/heartbeat"))
        .unwrap();
    hb.publish(&pi_b_account);
    wait_table(&server, SHOW, |t| {
        t.active
            .get(PI_B)
            .is_some_and(|p| p.lost_hb >= u64::from(FORGED_SEQ_JUMP) / 5)
    })
    .unwrap_or_else(|last| {
        panic!(
            "pi-b's own heartbeat with a sequence jump never showed in lost_hb; last table:\n{}",
            last.map(|t| t.text).unwrap_or_default()
        )
    });
    forge::segment(PI_B, 1, CONTROL_SEGMENT).publish(&observer);
    let ack = observer.wait_for(SHOW, |s| {
        acks_of(std::slice::from_ref(s))
            .iter()
            .any(|(id, _)| *id == CONTROL_SEGMENT)
    });
    assert!(
        ack.is_some(),
        "pi-b did not acknowledge the server account's segment {CONTROL_SEGMENT:#x}"
    );

    // Clean shutdowns over TLS: exit 0, and the server shows them offline (clean shutdown).
    for (id, d) in [(PI_A, &mut pi_a), (PI_B, &mut pi_b)] {
        let st = d.terminate(Duration::from_secs(15));
        assert!(st.success(), "{id} did not exit cleanly on SIGTERM: {st:?}");
    }
    wait_table(&server, SHOW, |t| {
        [PI_A, PI_B]
            .iter()
            .all(|id| t.offline.get(*id).is_some_and(|r| r == "clean shutdown"))
    })
    .unwrap_or_else(|last| {
        panic!(
            "both Pis offline (clean shutdown); last table:\n{}",
            last.map(|t| t.text).unwrap_or_default()
        )
    });
    let mut server = server;
    let st = server.terminate(Duration::from_secs(15));
    assert!(
        st.success(),
        "mqtt-server did not exit cleanly on SIGTERM: {st:?}"
    );
}
