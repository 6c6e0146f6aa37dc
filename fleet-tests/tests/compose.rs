//! docker-compose.yml without a Docker engine (the build machines have none): the file is parsed
//! and checked against what docs/deployment.md promises (eclipse-mosquitto:2, a healthcheck, a
//! restart policy, ports on 127.0.0.1 only, every mounted host path present in the repository,
//! every path of both broker configs inside a mount, writable where mosquitto writes), and the
//! development config it runs is started for real under a native mosquitto, healthcheck included.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use fleet_tests::prod_broker::rewrite_config;
use fleet_tests::repo_root;
use fleet_tests::tools::{require_tool, run, running_as_root};
use rumqttc::{MqttOptions, QoS};
use serde_yaml::Value;
use testkit::{Broker, Probe, TempDir};

fn compose_path() -> PathBuf {
    repo_root().join("docker-compose.yml")
}

fn compose() -> Value {
    let text = fs::read_to_string(compose_path()).expect("read docker-compose.yml");
    serde_yaml::from_str(&text).expect("docker-compose.yml is valid YAML")
}

/// The broker service: the one running eclipse-mosquitto.
fn mosquitto_service(doc: &Value) -> &Value {
    let services = doc["services"]
        .as_mapping()
        .expect("docker-compose.yml has a services mapping");
    let found: Vec<&Value> = services
        .values()
        .filter(|s| {
            s["image"]
                .as_str()
                .is_some_and(|i| i.starts_with("eclipse-mosquitto"))
        })
        .collect();
    assert_eq!(found.len(), 1, "expected one eclipse-mosquitto service");
    found[0]
}

fn strings(v: &Value, what: &str) -> Vec<String> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("{what} is not a list: {v:?}"))
        .iter()
        .map(|x| {
            x.as_str()
                .unwrap_or_else(|| panic!("{what}: not a string: {x:?}"))
                .to_owned()
        })
        .collect()
}

/// One volume in short syntax `HOST:CONTAINER[:MODE]`.
#[derive(Debug)]
struct Mount {
    host: PathBuf,
    container: String,
    read_only: bool,
}

fn mounts(svc: &Value) -> Vec<Mount> {
    let base = compose_path().parent().unwrap().to_path_buf();
    strings(&svc["volumes"], "volumes")
        .iter()
        .map(|v| {
            let parts: Vec<&str> = v.split(':').collect();
            assert!(
                (2..=3).contains(&parts.len()),
                "volume {v:?} is not HOST:CONTAINER[:MODE]"
            );
            assert!(
                parts[0].starts_with("./"),
                "volume {v:?}: the host side should be a path relative to the compose file (a named volume or absolute path is not in the repository)"
            );
            Mount {
                host: base.join(parts[0]),
                container: parts[1].trim_end_matches('/').to_owned(),
                read_only: parts.get(2) == Some(&"ro"),
            }
        })
        .collect()
}

/// The mount holding `container_path` (longest prefix) and the path below it.
fn resolve<'a>(mounts: &'a [Mount], container_path: &str) -> Option<(&'a Mount, String)> {
    mounts
        .iter()
        .filter_map(|m| {
            let rest = container_path.strip_prefix(&m.container)?;
            (rest.is_empty() || rest.starts_with('/'))
                .then(|| (m, rest.trim_start_matches('/').to_owned()))
        })
        .max_by_key(|(m, _)| m.container.len())
}

#[test]
fn compose_file_is_the_documented_dev_broker() {
    let doc = compose();
    let svc = mosquitto_service(&doc);
    assert_eq!(svc["image"].as_str(), Some("eclipse-mosquitto:2"));

    let restart = svc["restart"].as_str().expect("a restart policy");
    assert!(
        ["always", "unless-stopped", "on-failure"].contains(&restart),
        "restart: {restart}"
    );

    let hc = &svc["healthcheck"];
    let test = strings(&hc["test"], "healthcheck.test");
    assert_eq!(test[0], "CMD", "exec form: no shell sees the '$'");
    for key in ["interval", "timeout", "retries"] {
        assert!(!hc[key].is_null(), "healthcheck has no {key}");
    }
    // Compose interpolates `$VAR` in every string; `$$` is its escape for a literal `$`.
    for arg in &test {
        let singles = arg.replace("$$", "").matches('$').count();
        assert_eq!(
            singles, 0,
            "healthcheck argument {arg:?} has an unescaped '$'"
        );
    }

    let ports = strings(&svc["ports"], "ports");
    assert!(!ports.is_empty(), "no published ports");
    for p in &ports {
        let parts: Vec<&str> = p.split(':').collect();
        assert_eq!(
            parts.len(),
            3,
            "port {p:?} must be IP:HOST:CONTAINER (an unbound port listens on every interface)"
        );
        assert_eq!(parts[0], "127.0.0.1", "port {p:?} is not on 127.0.0.1");
    }
    assert!(
        ports.iter().any(|p| p.ends_with(":1883")),
        "1883 published: {ports:?}"
    );

    let mounts = mounts(svc);
    for m in &mounts {
        assert!(
            m.host.is_dir(),
            "mounted host path {} does not exist in the repository (docker would create it owned by root)",
            m.host.display()
        );
    }

    // The command's config file is in a mounted folder of the repository.
    let cmd = strings(&svc["command"], "command");
    let c = cmd
        .iter()
        .position(|a| a == "-c")
        .expect("command has -c CONFIG");
    let config = &cmd[c + 1];
    let (m, rel) = resolve(&mounts, config).unwrap_or_else(|| panic!("{config} is not mounted"));
    let host_config = m.host.join(&rel);
    assert!(host_config.is_file(), "{} missing", host_config.display());
    assert_eq!(
        host_config.canonicalize().unwrap(),
        repo_root()
            .join("mosquitto/config/mosquitto.conf")
            .canonicalize()
            .unwrap()
    );

    // Both configs (the prod one runs in the same container, docs/deployment.md) find every
    // path in a mount, and what mosquitto writes is on a writable one.
    for name in ["mosquitto.conf", "mosquitto.prod.conf"] {
        let text = fs::read_to_string(m.host.join(name)).expect("read config");
        let mut paths = 0;
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            let words: Vec<&str> = line.split_whitespace().collect();
            for w in words.iter().skip(1).filter(|w| w.starts_with('/')) {
                paths += 1;
                let (mount, _) = resolve(&mounts, w)
                    .unwrap_or_else(|| panic!("{name}: {w} is in no mounted volume"));
                let writes = matches!(words[0], "persistence_location" | "log_dest");
                assert!(
                    !(writes && mount.read_only),
                    "{name}: mosquitto writes {w}, but {} is mounted read-only",
                    mount.container
                );
            }
        }
        assert!(paths >= 2, "{name}: expected persistence and log paths");
    }
}

#[test]
fn dev_config_runs_under_native_mosquitto_with_the_healthcheck() {
    let mosquitto_sub = require_tool("mosquitto_sub", "mosquitto-clients");
    let doc = compose();
    let svc = mosquitto_service(&doc);
    let original = fs::read_to_string(repo_root().join("mosquitto/config/mosquitto.conf"))
        .expect("read mosquitto.conf");
    let dir = TempDir::new("dev-broker");
    for sub in ["config", "data", "log"] {
        fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    let config = dir.path().join("config/mosquitto.conf");
    let mut broker = None;
    let mut failures = Vec::new();
    for _ in 0..5 {
        let port = testkit::broker::free_port();
        let text = rewrite_config(
            &original,
            dir.path(),
            &[(
                "listener 1883 0.0.0.0",
                format!("listener {port} 127.0.0.1"),
            )],
            running_as_root(),
        )
        .unwrap_or_else(|e| panic!("mosquitto/config/mosquitto.conf: {e}"));
        fs::write(&config, text).unwrap();
        match Broker::try_start_config(&config, &[port]) {
            Ok(b) => {
                broker = Some(b);
                break;
            }
            Err(e) => failures.push(e),
        }
    }
    let broker = broker.unwrap_or_else(|| panic!("dev broker did not start: {failures:?}"));

    // Anonymous clients work: a round trip through the broker.
    let sub = Probe::connect(broker.port(), "dev-sub", &["rpi/+/heartbeat"]);
    let publisher =
        Probe::connect_with(MqttOptions::new("dev-pub", "127.0.0.1", broker.port()), &[]);
    publisher.publish("rpi/pi-x/heartbeat", b"hello", QoS::AtLeastOnce, false);
    let got = sub
        .wait_for(Duration::from_secs(5), |s| s.topic == "rpi/pi-x/heartbeat")
        .expect("anonymous round trip through the dev broker");
    assert_eq!(got.payload, b"hello");

    // The compose healthcheck, as the container would run it: `$$` unescaped by compose, the
    // port moved to the test's.
    let test = strings(&svc["healthcheck"]["test"], "healthcheck.test");
    assert_eq!(
        test[1], "mosquitto_sub",
        "the healthcheck runs mosquitto_sub"
    );
    let mut args: Vec<String> = test[2..].iter().map(|a| a.replace("$$", "$")).collect();
    let p = args
        .iter()
        .position(|a| a == "-p")
        .expect("healthcheck names the port");
    assert_eq!(args[p + 1], "1883", "healthcheck port = the listener's");
    args[p + 1] = broker.port().to_string();
    let out = run(
        Command::new(&mosquitto_sub).args(&args),
        b"",
        Duration::from_secs(20),
    );
    assert!(
        out.status.success(),
        "healthcheck {args:?} failed against the dev config:\n{}",
        out.text()
    );
    assert!(
        out.stdout.contains("seconds"),
        "uptime expected: {}",
        out.text()
    );

    // The log file path of the config works (mosquitto wrote it in the temp dir's log/).
    let log = dir.path().join("log/mosquitto.log");
    assert!(
        testkit::wait_for(Duration::from_secs(5), || fs::metadata(&log)
            .ok()
            .filter(|m| m.len() > 0))
        .is_some(),
        "mosquitto wrote no {}",
        log.display()
    );
}

/// `max_packet_size N` of a mosquitto config text (the last one wins, as in mosquitto).
fn packet_cap(text: &str) -> Option<u32> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("max_packet_size "))
        .filter_map(|v| v.trim().parse().ok())
        .next_back()
}

/// Every broker config the project ships caps packets (issue 16: without a cap, one retained
/// oversized message cost a daemon its connection at every reconnect). Payloads are at most
/// 64 bytes; the cap leaves room for topics and CONNECT but not for abuse.
#[test]
fn every_shipped_broker_config_caps_packet_size() {
    let test_broker = Broker::start();
    let texts = [
        ("mosquitto/config/mosquitto.conf", None),
        ("mosquitto/config/mosquitto.prod.conf", None),
        ("scripts/demo.sh", None),
        ("testkit's test broker", Some(test_broker.config_path())),
    ];
    for (name, path) in texts {
        let path = path.map_or_else(|| repo_root().join(name), |p| p.to_owned());
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let cap = packet_cap(&text).unwrap_or_else(|| panic!("{name}: no max_packet_size"));
        assert!(
            (1024..=4096).contains(&cap),
            "{name}: max_packet_size {cap}, expected 1024..=4096"
        );
    }
    // docker-compose runs the development config checked above.
    let compose = fs::read_to_string(compose_path()).unwrap();
    assert!(compose.contains("/mosquitto/config/mosquitto.conf"));
}
