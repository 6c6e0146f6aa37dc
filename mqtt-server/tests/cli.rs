//! The binary's command line: the example config is valid and documents every key, bad
//! settings name themselves and exit 2, `--help`/`--version` (even with a broken config
//! file), and SIGTERM/SIGINT stop the
//! server with exit 0 and a counter summary on stderr.

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;
use testkit::{Broker, Daemon};

fn example_path() -> String {
    format!("{}/config.example.conf", env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(server_bin())
        .args(args)
        .env_remove("MQTT_SERVER_CONFIG")
        .output()
        .expect("run mqtt-server");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn example_config_is_valid_and_covers_every_key() {
    let (code, stdout, stderr) = run(&["--check-config", "--config", &example_path()]);
    assert_eq!(code, 0, "{stderr}");
    let text = std::fs::read_to_string(example_path()).unwrap();
    for key in mqtt_server::config::schema_keys() {
        let documented = text.lines().any(|l| {
            let l = l.trim_start_matches(['#', ' ']);
            l.starts_with(&format!("{key} =")) || l.starts_with(&format!("{key}="))
        });
        assert!(documented, "{key} is not in config.example.conf");
        assert!(
            stdout.lines().any(|l| l.starts_with(&format!("{key} = "))),
            "--check-config does not print {key}:\n{stdout}"
        );
    }
    // The printed config is itself a valid config file.
    let dir = testkit::TempDir::new("server-cfg");
    let again = dir.path().join("again.conf");
    std::fs::write(&again, &stdout).unwrap();
    let (code, stdout2, stderr) = run(&["--check-config", "--config", again.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout2, stdout);
}

#[test]
fn bad_settings_name_themselves_and_exit_2() {
    for (args, needle) in [
        (&["--heartbeat-timeout", "soon"][..], "heartbeat_timeout"),
        (&["--segment-interval", "-1s"], "segment_interval"),
        (&["--status-interval", "1"], "status_interval"),
        (&["--max-pis", "0"], "max_pis"),
        (&["--broker", "host:99999"], "broker"),
        (&["--no-such-flag", "1"], "--no-such-flag"),
        (&["--tls-ca", "/nonexistent/ca.pem"], "tls_ca"),
        (
            &["--config", "/nonexistent/server.conf"],
            "/nonexistent/server.conf",
        ),
        // A port glued to an IPv6 address: refused, not retried for ever.
        (&["--broker", "::1:1883"], "ambiguous IPv6"),
        // A broker list with an empty, missing or malformed address names the key.
        (&["--broker", "a:1,,b"], "broker"),
        (&["--broker", "a:1,"], "broker"),
        (&["--broker", ""], "broker"),
        (&["--broker", "a:1,::1:1883"], "ambiguous IPv6"),
        // An endless file: a clear error, not an out-of-memory kill.
        (&["--config", "/dev/zero"], "larger than 64 KiB"),
        (
            &["--username", "server", "--password-file", "/dev/zero"],
            "password_file",
        ),
    ] {
        let (code, stdout, stderr) = run(args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
    }
    // From the environment: the message names the variable and the key.
    for (var, value, key) in [
        ("MQTT_SERVER_ACK_TIMEOUT", "0s", "ack_timeout"),
        ("MQTT_SERVER_BROKER", "a:1,,b", "broker"),
    ] {
        let out = Command::new(server_bin())
            .args(["--config", "/dev/null", "--check-config"])
            .env(var, value)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(var) && err.contains(key), "{err}");
    }
    let (code, stdout, stderr) = run(&[
        "--config",
        "/dev/null",
        "--check-config",
        "--broker",
        "h1:1883,[::1]:1884",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("broker = h1:1883,[::1]:1884\n"), "{stdout}");
}

#[test]
fn help_and_version() {
    let (code, stdout, _) = run(&["--help"]);
    assert_eq!(code, 0);
    for key in mqtt_server::config::schema_keys() {
        let flag = format!("--{}", key.replace('_', "-"));
        assert!(stdout.contains(&flag), "{flag} missing from --help");
    }
    let (code, stdout, _) = run(&["--version"]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("mqtt-server "), "{stdout}");
}

#[test]
fn help_and_version_whatever_the_config_file_holds() {
    let dir = testkit::TempDir::new("server-broken-cfg");
    let broken = dir.path().join("broken.conf");
    std::fs::write(&broken, "this is = not = a config\nno_such_key = 1\n").unwrap();
    let broken = broken.to_str().unwrap();
    let (code, _, stderr) = run(&["--config", broken, "--check-config"]);
    assert_eq!(code, 2, "the file is broken indeed: {stderr}");
    let (code, stdout, stderr) = run(&["--config", broken, "--help"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("--heartbeat-timeout"), "{stdout}");
    let (code, stdout, stderr) = run(&["--config", "/nonexistent/server.conf", "--version"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("mqtt-server "), "{stdout}");
}

fn stops_cleanly_on(sig: &str) {
    let broker = Broker::start();
    let mut server: Daemon = spawn_server(&broker, &["--status-interval", "100ms"]);
    let t = next_table(&server, Duration::from_secs(5)).expect("a table");
    assert_eq!(t.active_count, 0);
    server.signal(sig);
    let status = server
        .wait_exit(Duration::from_secs(5))
        .expect("exits within 5 s");
    assert_eq!(status.code(), Some(0), "{}", server.stderr());
    let err = server.stderr();
    assert!(err.contains("shutting down"), "{err}");
    assert!(err.contains("segments: sent=0"), "{err}");
    assert!(err.contains("input errors:"), "{err}");
}

#[test]
fn sigterm_stops_with_exit_0_and_a_summary() {
    stops_cleanly_on("TERM");
}

#[test]
fn sigint_stops_with_exit_0() {
    stops_cleanly_on("INT");
}
