//! Security of the production broker config (mosquitto/config/mosquitto.prod.conf + acl), run
//! under a native mosquitto with certificates and accounts made by the project's own scripts
//! (fleet_tests::ProdBroker): logins without or with wrong credentials are refused, a Pi's
//! account cannot speak for another Pi, read another Pi's segments or send segments at all, the
//! server never sees a spoofed message, and TLS with a foreign CA or client certificate fails.
//!
//! Denied publishes and subscriptions are not errors in MQTT 3.1.1 (mosquitto acknowledges and
//! drops them), so those tests check delivery: a legitimate subscriber receives the allowed
//! messages and, up to a fence (fleet_tests::fence), never the forged ones. Every check has a
//! positive control, so a broken probe cannot pass for a secure broker.

use std::fs;
use std::time::Duration;

use fleet_tests::forge::{self, Forged};
use fleet_tests::{
    ConnectOutcome, Listener, PI_A, PI_B, ProdBroker, SERVER_USER, Session, TLS_HOST, fence,
    scripts, try_connect,
};
use mqtt_link::BrokerConfig;
use rumqttc::{LastWill, QoS};
use testkit::probe::Seen;
use testkit::{Probe, TempDir};

/// A connection attempt's answer (refused or failed) comes within this.
const CONNECT: Duration = Duration::from_secs(5);
/// Waiting for a message that must arrive (generous: shared 2-core machine).
const ARRIVE: Duration = Duration::from_secs(10);

fn outcome(c: &BrokerConfig, client_id: &str) -> ConnectOutcome {
    try_connect(c.mqtt_options(client_id).expect("client options"), CONNECT)
}

fn assert_accepted(what: &str, c: &BrokerConfig, client_id: &str) {
    let o = outcome(c, client_id);
    assert!(
        matches!(o, ConnectOutcome::Accepted),
        "{what}: expected the login to be accepted, got {o:?}"
    );
}

fn assert_login_refused(b: &ProdBroker, what: &str, c: &BrokerConfig, client_id: &str) {
    let o = outcome(c, client_id);
    assert!(
        o.is_login_refused(),
        "{what}: expected CONNACK 'bad user name or password' / 'not authorised', got {o:?}\n{}",
        b.log()
    );
}

/// TLS rejections as rustls reports them: a certificate it does not trust, or the broker's alert.
const TLS_ERROR: &[&str] = &["certificate", "alert"];

fn assert_failed(b: &ProdBroker, what: &str, c: &BrokerConfig, client_id: &str, words: &[&str]) {
    let o = outcome(c, client_id);
    assert!(
        o.failed_with(words),
        "{what}: expected the connection to fail before MQTT with an error mentioning one of \
         {words:?}, got {o:?}\n{}",
        b.log()
    );
    eprintln!("{what}: {o:?}");
}

fn assert_tls_failed(b: &ProdBroker, what: &str, c: &BrokerConfig, client_id: &str) {
    assert_failed(b, what, c, client_id, TLS_ERROR);
}

fn topics(seen: &[Seen]) -> Vec<&str> {
    seen.iter().map(|s| s.topic.as_str()).collect()
}

/// The server's view: user `server` on the local listener, subscribed as the server is.
fn server_watcher(b: &ProdBroker, id: &str) -> Probe {
    b.probe(
        Listener::Local,
        SERVER_USER,
        id,
        &common::topic::SERVER_SUBSCRIPTIONS,
    )
}

#[test]
fn logins_without_valid_credentials_are_refused() {
    let b = ProdBroker::start();
    let wrong = b.dir().join("secrets/wrong.password");
    fs::write(&wrong, "not-the-password\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&wrong, fs::Permissions::from_mode(0o600)).unwrap();
    }
    for listener in [Listener::Local, Listener::Tls] {
        let ok = b.broker_config(listener, PI_A);
        assert_accepted(&format!("{listener:?}: pi-a, right password"), &ok, PI_A);

        let mut anon = ok.clone();
        anon.username = None;
        anon.password_file = None;
        assert_login_refused(&b, &format!("{listener:?}: anonymous"), &anon, "anon");

        let mut c = ok.clone();
        c.password_file = Some(wrong.clone());
        assert_login_refused(&b, &format!("{listener:?}: wrong password"), &c, PI_A);

        let mut c = ok.clone();
        c.password_file = Some(b.password_file(PI_B));
        assert_login_refused(
            &b,
            &format!("{listener:?}: pi-a with pi-b's password"),
            &c,
            PI_A,
        );

        let mut c = ok.clone();
        c.password_file = None;
        assert_login_refused(&b, &format!("{listener:?}: pi-a, no password"), &c, PI_A);

        let mut c = ok.clone();
        c.username = Some("pi-c".into());
        assert_login_refused(&b, &format!("{listener:?}: unknown user"), &c, "pi-c");
    }
    // The client-certificate listener wants a certificate; a password is not enough.
    let mut c = b.broker_config(Listener::Tls, PI_A);
    c.apply("broker", &b.addr(Listener::ClientCert))
        .unwrap()
        .unwrap();
    assert_tls_failed(&b, "8884 with a password and no certificate", &c, PI_A);
    // Plain MQTT on a TLS port.
    let mut c = b.broker_config(Listener::Local, PI_A);
    c.apply("broker", &format!("127.0.0.1:{}", b.port(Listener::Tls)))
        .unwrap()
        .unwrap();
    assert_failed(
        &b,
        "plain MQTT on the TLS port",
        &c,
        PI_A,
        &["reset", "eof", "closed", "broken pipe", "alert"],
    );
}

/// Publishes everything pi-a may not, then its own legit messages; returns the latter.
fn spoof_then_legit(attacker: &Probe) -> Vec<Forged> {
    for f in forge::as_pi(PI_B, 1, 77) {
        f.publish(attacker);
        // The same at the other QoS, and under a leaf the server does not know.
        let qos = match f.qos {
            QoS::AtMostOnce => QoS::AtLeastOnce,
            _ => QoS::AtMostOnce,
        };
        attacker.publish(&f.topic, &f.payload, qos, false);
    }
    attacker.publish("rpi/pi-b/x/y", b"deeper", QoS::AtLeastOnce, false);
    attacker.publish(
        "rpi/server/heartbeat",
        b"as-server",
        QoS::AtLeastOnce,
        false,
    );
    let legit: Vec<Forged> = forge::as_pi(PI_A, 1, 78)
        .into_iter()
        .filter(|f| f.topic.ends_with("/heartbeat") || f.topic.ends_with("/state"))
        .collect();
    for f in &legit {
        f.publish(attacker);
    }
    legit
}

#[test]
fn pi_a_cannot_publish_as_pi_b_and_the_server_never_sees_a_spoof() {
    let b = ProdBroker::start();
    let watcher = server_watcher(&b, "watcher");

    let mut server_login = b.broker_config(Listener::ClientCert, PI_A);
    server_login.username = Some(SERVER_USER.into());
    server_login.password_file = Some(b.password_file(SERVER_USER));
    let attackers: Vec<(&str, BrokerConfig, &str)> = vec![
        // The local listener keeps client ids: pi-a even calls itself pi-b.
        (
            "local, client id pi-b",
            b.broker_config(Listener::Local, PI_A),
            PI_B,
        ),
        ("TLS + password", b.broker_config(Listener::Tls, PI_A), PI_A),
        (
            "client certificate",
            b.broker_config(Listener::ClientCert, PI_A),
            PI_A,
        ),
        // The certificate's CN wins over a user name (and password) in CONNECT.
        ("client certificate + server's login", server_login, PI_A),
    ];
    for (what, cfg, client_id) in attackers {
        let attacker = Probe::connect_with(cfg.mqtt_options(client_id).unwrap(), &[]);
        let legit = spoof_then_legit(&attacker);
        let seen = fence(&attacker, "rpi/pi-a/state", &watcher, ARRIVE);
        assert!(
            seen.iter().all(|s| s.topic.starts_with("rpi/pi-a/")),
            "{what}: the server saw a message pi-a published in another name: {:?}\n{}",
            topics(&seen),
            b.log()
        );
        for f in &legit {
            assert!(
                seen.iter()
                    .any(|s| s.topic == f.topic && s.payload == f.payload),
                "{what}: pi-a's own {} did not reach the server: {:?}",
                f.topic,
                topics(&seen)
            );
        }
    }

    // The forged retained "offline" was not stored: a server starting now gets pi-a's
    // retained status (positive control) and nothing for pi-b.
    let attacker = b.probe(Listener::Tls, PI_A, PI_A, &[]);
    let own = forge::as_pi(PI_A, 1, 1)
        .into_iter()
        .find(|f| f.retain)
        .unwrap();
    own.publish(&attacker);
    fence(&attacker, "rpi/pi-a/state", &watcher, ARRIVE);
    let late = b.probe(
        Listener::Local,
        SERVER_USER,
        "late-server",
        &["rpi/+/status"],
    );
    let first = late
        .wait_for(ARRIVE, |s| s.topic == "rpi/pi-a/status")
        .expect("pi-a's own retained status");
    assert!(first.retain);
    let more = late.collect_for(Duration::from_millis(300));
    assert!(
        more.iter().all(|s| s.topic != "rpi/pi-b/status"),
        "a forged retained status for pi-b was stored: {:?}",
        topics(&more)
    );
}

#[test]
fn a_last_will_in_another_pis_name_is_never_published() {
    let b = ProdBroker::start();
    let watcher = b.probe(Listener::Local, SERVER_USER, "watcher", &["rpi/+/status"]);
    let will = |topic: &str, payload: &str| {
        let mut o = b.options(Listener::Tls, PI_A, PI_A);
        o.set_last_will(LastWill::new(topic, payload, QoS::AtLeastOnce, false));
        o
    };
    // mosquitto 2.0.11 accepts the CONNECT and drops the will; refusing the CONNECT would keep
    // the server from seeing it too.
    match Session::open(will("rpi/pi-b/status", "forged-will"), CONNECT) {
        Ok(s) => s.abort(),
        Err(o) => assert!(o.is_login_refused(), "forged will: {o:?}"),
    }
    // Positive control: pi-a's own will is published when its connection dies.
    let own = Session::open(will("rpi/pi-a/status", "own-will"), CONNECT)
        .unwrap_or_else(|o| panic!("pi-a with its own will: {o:?}"));
    own.abort();
    let mut before = Vec::new();
    let got = watcher.wait_for(ARRIVE, |s| {
        before.push(s.clone());
        s.topic == "rpi/pi-a/status"
    });
    assert!(
        got.is_some(),
        "pi-a's own will was not published\n{}",
        b.log()
    );
    // The forged connection died first; give its will, if any, time to show up as well.
    before.extend(watcher.collect_for(Duration::from_millis(500)));
    assert!(
        before.iter().all(|s| s.topic != "rpi/pi-b/status"),
        "a will forged by pi-a was published on pi-b's status: {:?}",
        topics(&before)
    );
}

#[test]
fn pi_a_cannot_read_pi_b_segments() {
    let b = ProdBroker::start();
    let dispatcher = b.probe(Listener::Local, SERVER_USER, "dispatcher", &[]);
    // pi-b reads under another client id: client ids are one namespace across listeners, and
    // the local listener keeps the id a client sends, so pi-a's "pi-b" below would take over
    // a session named pi-b (see a_foreign_client_id_cannot_take_over_...).
    let pi_b = b.probe(
        Listener::Local,
        PI_B,
        "pi-b-inbox",
        &["server/pi-b/segment"],
    );
    // The broker grants these subscriptions (mosquitto 2 checks reads on delivery).
    let wide = ["server/pi-b/segment", "server/+/segment", "server/#", "#"];
    let readers = [
        (
            "TLS + password, wildcards",
            b.probe(Listener::Tls, PI_A, PI_A, &wide),
        ),
        (
            "local, client id pi-b",
            b.probe(
                Listener::Local,
                PI_A,
                PI_B,
                &["server/pi-b/segment", "server/pi-a/segment"],
            ),
        ),
    ];
    let seg = forge::segment(PI_B, 1, 42);
    seg.publish(&dispatcher);
    let got = fence(&dispatcher, "server/pi-b/segment", &pi_b, ARRIVE);
    assert!(
        got.iter()
            .any(|s| s.topic == seg.topic && s.payload == seg.payload),
        "pi-b did not receive its segment: {:?}",
        topics(&got)
    );
    let own = forge::segment(PI_A, 1, 43);
    own.publish(&dispatcher);
    for (what, r) in &readers {
        let seen = fence(&dispatcher, "server/pi-a/segment", r, ARRIVE);
        assert!(
            seen.iter().all(|s| s.topic == "server/pi-a/segment"),
            "{what}: pi-a read something not its own: {:?}",
            topics(&seen)
        );
        assert!(
            seen.iter().any(|s| s.payload == own.payload),
            "{what}: pi-a did not receive its own segment: {:?}",
            topics(&seen)
        );
    }
}

#[test]
fn the_server_sends_instant_actions_and_a_pi_reads_only_its_own() {
    let b = ProdBroker::start();
    let server = b.probe(Listener::Local, SERVER_USER, "actions-server", &[]);
    let pi_b = b.probe(
        Listener::Local,
        PI_B,
        "pi-b-actions",
        &["server/pi-b/action"],
    );
    let pi_a = b.probe(
        Listener::Tls,
        PI_A,
        PI_A,
        &["server/#", "server/pi-a/action"],
    );
    let stop = common::Message::Action(common::Action {
        action_id: 7,
        epoch: 0,
        target: common::Target::All,
        action: common::ActionKind::Stop,
        segment_id: 0,
    })
    .encode()
    .to_vec();
    server.publish("server/pi-b/action", &stop, QoS::AtLeastOnce, false);
    let got = fence(&server, "server/pi-b/action", &pi_b, ARRIVE);
    assert!(
        got.iter().any(|s| s.payload == stop),
        "pi-b did not receive the server's action (the server account may write \
         server/+/action): {:?}",
        topics(&got)
    );
    // pi-a's wildcard sees its own actions only (the positive control is the fence itself).
    let seen = fence(&server, "server/pi-a/action", &pi_a, ARRIVE);
    assert!(
        seen.iter().all(|s| s.topic == "server/pi-a/action"),
        "pi-a read something not its own: {:?}",
        topics(&seen)
    );
}

#[test]
fn pi_a_cannot_send_segments_to_anyone() {
    let b = ProdBroker::start();
    let watcher = server_watcher(&b, "watcher");
    let dispatcher = b.probe(Listener::Local, SERVER_USER, "dispatcher", &[]);
    let pi_a_inbox = b.probe(
        Listener::Local,
        PI_A,
        "pi-a-inbox",
        &["server/pi-a/segment"],
    );
    let pi_b_inbox = b.probe(
        Listener::ClientCert,
        PI_B,
        PI_B,
        &["server/pi-b/segment", "server/pi-b/#"],
    );
    let attacker = b.probe(Listener::Tls, PI_A, PI_A, &[]);
    for (victim, id) in [(PI_A, 100), (PI_B, 101)] {
        let f = forge::segment(victim, 1, id);
        f.publish(&attacker);
        attacker.publish(&f.topic, &f.payload, QoS::AtMostOnce, false);
        attacker.publish(
            &format!("server/{victim}/other"),
            b"x",
            QoS::AtLeastOnce,
            false,
        );
    }
    // Everything pi-a published before this marker has been handled by the broker...
    fence(&attacker, "rpi/pi-a/state", &watcher, ARRIVE);
    // ...so anything it delivered would come before the server's markers.
    for (what, inbox, topic) in [
        ("pi-a", &pi_a_inbox, "server/pi-a/segment"),
        ("pi-b", &pi_b_inbox, "server/pi-b/segment"),
    ] {
        let seen = fence(&dispatcher, topic, inbox, ARRIVE);
        assert!(
            seen.is_empty(),
            "{what} received segments that pi-a published: {:?}",
            topics(&seen)
        );
    }
}

#[test]
fn tls_with_a_foreign_ca_or_client_certificate_is_refused() {
    let b = ProdBroker::start();
    // Another CA, with its own server and pi-a certificates: made by the same script.
    let other = TempDir::new("other-ca");
    scripts::gen_certs(other.path(), TLS_HOST, &[PI_A]);
    let other_ca = other.path().join("ca.crt");

    // The client does not trust the broker.
    for listener in [Listener::Tls, Listener::ClientCert] {
        let ok = b.broker_config(listener, PI_A);
        assert_accepted(&format!("{listener:?}: the fleet CA"), &ok, PI_A);
        let mut c = ok.clone();
        c.tls_ca = Some(other_ca.clone());
        assert_tls_failed(&b, &format!("{listener:?}: a foreign CA"), &c, PI_A);
    }

    // The broker does not trust the client.
    let ok = b.broker_config(Listener::ClientCert, PI_A);
    let mut c = ok.clone();
    c.tls_cert = Some(other.path().join("clients/pi-a.crt"));
    c.tls_key = Some(other.path().join("clients/pi-a.key"));
    assert_tls_failed(&b, "8884: pi-a's certificate from a foreign CA", &c, PI_A);
    let mut c = ok.clone();
    c.tls_cert = Some(b.server_cert());
    c.tls_key = Some(b.server_key());
    assert_tls_failed(
        &b,
        "8884: the broker's own certificate (serverAuth only)",
        &c,
        PI_A,
    );
    let mut c = ok.clone();
    c.tls_cert = None;
    c.tls_key = None;
    assert_tls_failed(&b, "8884: no client certificate", &c, PI_A);
}

#[test]
fn a_foreign_client_id_cannot_take_over_a_session_on_the_tls_listeners() {
    let b = ProdBroker::start();
    // pi-b is connected through its certificate; pi-a logs in on 8883 calling itself pi-b.
    let mut pi_b = Session::open(b.options(Listener::ClientCert, PI_B, PI_B), CONNECT)
        .unwrap_or_else(|o| panic!("pi-b: {o:?}"));
    assert_accepted(
        "pi-a as client id pi-b on 8883",
        &b.broker_config(Listener::Tls, PI_A),
        PI_B,
    );
    pi_b.stays_connected(Duration::from_millis(1500))
        .unwrap_or_else(|e| panic!("pi-b lost its session to pi-a: {e}\n{}", b.log()));
    pi_b.close();

    // Positive control: the local listener keeps client ids, so there the same trick works.
    let mut victim = Session::open(b.options(Listener::Local, PI_B, "pi-b-local"), CONNECT)
        .unwrap_or_else(|o| panic!("pi-b on the local listener: {o:?}"));
    assert_accepted(
        "pi-a as client id pi-b-local on the local listener",
        &b.broker_config(Listener::Local, PI_A),
        "pi-b-local",
    );
    assert!(
        victim.stays_connected(ARRIVE).is_err(),
        "the takeover control did not disconnect the first session"
    );
}

/// An account that may read everything (`#`), added to a running [`ProdBroker`] for the test
/// only (password file and ACL reloaded on SIGHUP), to see what a Pi really got stored or
/// delivered, beyond what the server's own rights would show.
fn auditor(b: &ProdBroker, client_id: &str) -> Probe {
    const USER: &str = "auditor";
    let pw = b.password_file(USER);
    if !pw.exists() {
        fs::write(&pw, "pw-auditor\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&pw, fs::Permissions::from_mode(0o600)).unwrap();
        scripts::add_user(&b.passwd_file(), USER, &pw);
        let acl = b.dir().join("config/acl");
        let mut text = fs::read_to_string(&acl).unwrap();
        text.push_str("\nuser auditor\ntopic read #\n");
        fs::write(&acl, text).unwrap();
        let pid = b.broker().pid().expect("broker running").to_string();
        let hup = std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap();
        assert!(hup.success());
        std::thread::sleep(Duration::from_millis(500));
    }
    b.probe(Listener::Local, USER, client_id, &["#"])
}

/// Issue 16: with `pattern write rpi/%u/#`, a Pi account filled the broker with 20,000 retained
/// junk messages under its own prefix. The ACL grants exactly the four leaves.
#[test]
fn a_pi_can_publish_on_its_four_leaves_only() {
    let b = ProdBroker::start();
    let audit = auditor(&b, "auditor-live");
    let leaves = ["heartbeat", "state", "status", "ack"].map(|l| format!("rpi/{PI_A}/{l}"));
    for listener in [Listener::Local, Listener::Tls, Listener::ClientCert] {
        let pi = b.probe(listener, PI_A, PI_A, &[]);
        let junk = [
            format!("rpi/{PI_A}/j1"),
            format!("rpi/{PI_A}/j2"),
            format!("rpi/{PI_A}/heartbeat/x"),
            format!("rpi/{PI_A}/segment"),
            format!("rpi/{PI_A}"),
            format!("server/{PI_A}/segment"),
            format!("{PI_A}/state"),
            "junk".to_owned(),
        ];
        for t in &junk {
            // Retained and 4,000 bytes, as in the attack.
            pi.publish(t, &[0x11; 4000], QoS::AtLeastOnce, true);
        }
        for t in &leaves {
            pi.publish(t, b"legit", QoS::AtLeastOnce, false);
        }
        let seen = fence(&pi, &leaves[3], &audit, ARRIVE);
        let got = topics(&seen);
        assert!(
            got.iter().all(|t| leaves.iter().any(|l| l == t)),
            "{listener:?}: pi-a published outside its four leaves: {got:?}"
        );
        for l in &leaves {
            assert!(
                got.contains(&l.as_str()),
                "{listener:?}: {l} missing: {got:?}"
            );
        }
    }
    // Nothing of it was stored: a late reader of everything gets only pi-a's own retained
    // status (positive control).
    let pi = b.probe(Listener::Tls, PI_A, PI_A, &[]);
    pi.publish(&leaves[2], b"own", QoS::AtLeastOnce, true);
    fence(&pi, &leaves[3], &audit, ARRIVE);
    let late = auditor(&b, "auditor-late");
    let retained: Vec<Seen> = late
        .collect_for(Duration::from_millis(500))
        .into_iter()
        .filter(|s| s.retain && !s.topic.starts_with('$'))
        .collect();
    assert_eq!(
        topics(&retained),
        vec![leaves[2].as_str()],
        "retained messages stored for pi-a"
    );
}

/// Issue 16: no certificate revocation. `scripts/revoke-pi.sh` puts a Pi's certificate on the
/// CRL (`crlfile` of the client-certificate listener) and removes its password account; after
/// the broker's SIGHUP the Pi can log in neither way, and the other Pi still can.
#[test]
fn a_revoked_pi_cannot_connect_and_the_others_still_can() {
    let b = ProdBroker::start();
    for listener in [Listener::Tls, Listener::ClientCert] {
        for pi in [PI_A, PI_B] {
            let c = b.broker_config(listener, pi);
            assert_accepted(&format!("{listener:?}: {pi} before"), &c, pi);
        }
    }
    let out = scripts::revoke_pi(&b.certs_dir(), &b.passwd_file(), PI_A);
    eprintln!("{}", out.text());
    let pid = b.broker().pid().expect("broker running").to_string();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(hup.success());
    std::thread::sleep(Duration::from_millis(500));

    assert_tls_failed(
        &b,
        "8884: pi-a's revoked certificate",
        &b.broker_config(Listener::ClientCert, PI_A),
        PI_A,
    );
    assert_login_refused(
        &b,
        "8883: pi-a's removed password account",
        &b.broker_config(Listener::Tls, PI_A),
        PI_A,
    );
    for listener in [Listener::Tls, Listener::ClientCert] {
        let c = b.broker_config(listener, PI_B);
        assert_accepted(&format!("{listener:?}: pi-b after"), &c, PI_B);
    }
    // Revoking again changes nothing and says so.
    let again = scripts::revoke_pi(&b.certs_dir(), &b.passwd_file(), PI_A);
    assert!(again.text().contains("already revoked"), "{}", again.text());
}
