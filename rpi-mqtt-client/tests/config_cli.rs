//! The command line of the real binary: bad configurations stop the start with exit 2 and a
//! message naming the problem; `--check-config` prints a config that parses again; the
//! example config parses and documents every key.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use testkit::TempDir;

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(support::bin());
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("RPI_CLIENT_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run rpi-client")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Exit 2 and every `needles` in stderr.
fn assert_config_error(out: &Output, needles: &[&str]) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
    assert!(out.stdout.is_empty(), "stdout: {}", text(&out.stdout));
}

fn write(dir: &TempDir, name: &str, body: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, body).unwrap();
    p.to_str().unwrap().to_owned()
}

fn chmod(path: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `--check-config` with the password file `pw`.
fn check_with_password(pw: &str) -> Output {
    run(
        &[
            "--config",
            "/dev/null",
            "--check-config",
            "--client-id",
            "pi-1",
            "--password-file",
            pw,
        ],
        &[],
    )
}

#[test]
fn open_or_empty_password_files_are_refused() {
    let dir = TempDir::new("rpi-cfg");
    let pw = write(&dir, "password", "s3cret\n");
    chmod(&pw, 0o644);
    assert_config_error(
        &check_with_password(&pw),
        &["password_file", "readable by others", "0644", &pw],
    );
    // Owner and group only (root:rpi-client 0640 in a deployment) is fine.
    chmod(&pw, 0o640);
    assert_eq!(check_with_password(&pw).status.code(), Some(0));
    let empty = write(&dir, "empty", "\nsecond line\n");
    chmod(&empty, 0o600);
    assert_config_error(
        &check_with_password(&empty),
        &["password_file", "empty first line"],
    );
    assert_config_error(
        &check_with_password("/dev/zero"),
        &["password_file", "/dev/zero", "larger than 64 KiB"],
    );
}

#[test]
fn endless_config_file_is_refused() {
    let out = run(&["--config", "/dev/zero"], &[]);
    assert_config_error(&out, &["--config", "/dev/zero", "larger than 64 KiB"]);
}

#[test]
fn ipv6_address_with_port_needs_brackets() {
    let out = run(
        &[
            "--config",
            "/dev/null",
            "--client-id",
            "x",
            "--broker",
            "::1:1883",
        ],
        &[],
    );
    assert_config_error(&out, &["broker", "ambiguous IPv6", "[::1]:1883"]);
    let out = run(
        &[
            "--config",
            "/dev/null",
            "--check-config",
            "--client-id",
            "x",
            "--broker",
            "[::1]:1883",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn malformed_broker_lists_name_the_key() {
    let base = ["--config", "/dev/null", "--client-id", "x"];
    for bad in ["a:1,,b", "a:1,", "", "a:1,::1:1883", "a:1,b:0"] {
        // From a flag, the environment and a file alike.
        let mut args = base.to_vec();
        args.extend(["--broker", bad]);
        assert_config_error(&run(&args, &[]), &["broker"]);
        assert_config_error(
            &run(&base, &[("RPI_CLIENT_BROKER", bad)]),
            &["broker", "RPI_CLIENT_BROKER"],
        );
        let dir = TempDir::new("brokers");
        let file = write(&dir, "c.conf", &format!("broker = \"{bad}\"\n"));
        assert_config_error(
            &run(&["--config", &file, "--client-id", "x"], &[]),
            &["broker", &file],
        );
    }
    let out = run(
        &[&base[..], &["--check-config", "--broker", "a:1, [::1]:2,b"]].concat(),
        &[],
    );
    assert!(
        settings(&out).contains("broker = a:1,[::1]:2,b\n"),
        "{}",
        text(&out.stdout)
    );
}

/// A self-signed certificate and its key in `dir`, made by openssl.
fn self_signed(dir: &TempDir, name: &str) -> (String, String) {
    let cert = dir.path().join(format!("{name}.crt"));
    let key = dir.path().join(format!("{name}.key"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj"])
        .arg(format!("/CN={name}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(out.status.success(), "openssl: {}", text(&out.stderr));
    let s = |p: std::path::PathBuf| p.to_str().unwrap().to_owned();
    (s(cert), s(key))
}

#[test]
fn certificate_and_key_mismatch_blames_them_not_the_ca() {
    let dir = TempDir::new("rpi-cfg");
    let (cert_a, key_a) = self_signed(&dir, "a");
    let (_, key_b) = self_signed(&dir, "b");
    let tls = |cert: &str, key: &str| {
        run(
            &[
                "--config",
                "/dev/null",
                "--check-config",
                "--client-id",
                "x",
                "--tls-ca",
                &cert_a,
                "--tls-cert",
                cert,
                "--tls-key",
                key,
            ],
            &[],
        )
    };
    let ok = tls(&cert_a, &key_a);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    let out = tls(&cert_a, &key_b);
    assert_config_error(&out, &["tls_cert", "tls_key", "not a pair"]);
    assert!(
        !text(&out.stderr).contains("tls_ca"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn unknown_key_is_named() {
    let dir = TempDir::new("rpi-cfg");
    let path = write(
        &dir,
        "c.conf",
        "client_id = pi-1\nheartbeat_intervall = 1s\n",
    );
    let out = run(&["--config", &path], &[]);
    assert_config_error(
        &out,
        &["heartbeat_intervall", "unknown key", &format!("{path}:2")],
    );
    let out = run(
        &["--config", "/dev/null", "--client-id", "x", "--bogus", "1"],
        &[],
    );
    assert_config_error(&out, &["--bogus", "unknown option"]);
    let out = run(
        &["--config", "/dev/null", "--client-id", "x"],
        &[("RPI_CLIENT_BROKR", "a:1")],
    );
    assert_config_error(&out, &["RPI_CLIENT_BROKR", "unknown variable"]);
}

#[test]
fn bad_duration_is_named() {
    let out = run(
        &[
            "--config",
            "/dev/null",
            "--client-id",
            "x",
            "--heartbeat-interval",
            "500",
        ],
        &[],
    );
    assert_config_error(
        &out,
        &["heartbeat_interval", "bad duration \"500\"", "missing unit"],
    );
    let out = run(
        &["--config", "/dev/null", "--client-id", "x"],
        &[("RPI_CLIENT_STATE_INTERVAL", "1ms")],
    );
    assert_config_error(
        &out,
        &["RPI_CLIENT_STATE_INTERVAL", "state_interval", "too short"],
    );
}

#[test]
fn bad_client_id_is_named() {
    let out = run(&["--config", "/dev/null", "--client-id", "pi/7"], &[]);
    assert_config_error(&out, &["client_id", "'/'", "A-Z a-z 0-9 _ - ."]);
    let long = "p".repeat(65);
    let out = run(&["--config", "/dev/null", "--client-id", &long], &[]);
    assert_config_error(&out, &["client_id", "65 bytes"]);
}

#[test]
fn missing_config_file_is_named() {
    let out = run(&["--config", "/nonexistent/rpi-client.conf"], &[]);
    assert_config_error(
        &out,
        &["cannot read /nonexistent/rpi-client.conf", "--config"],
    );
    let out = run(&[], &[("RPI_CLIENT_CONFIG", "/nonexistent/env.conf")]);
    assert_config_error(&out, &["RPI_CLIENT_CONFIG", "/nonexistent/env.conf"]);
    let out = run(
        &[
            "--config",
            "/dev/null",
            "--client-id",
            "x",
            "--tls-ca",
            "/nonexistent/ca.pem",
        ],
        &[],
    );
    assert_config_error(&out, &["tls_ca", "/nonexistent/ca.pem"]);
}

#[test]
fn other_bad_values_exit_2() {
    for (flag, value, needle) in [
        ("--entities", "1,2,2", "listed twice"),
        ("--queue-depth", "0", "queue_depth"),
        ("--broker", "host:99999", "broker"),
        ("--log-level", "chatty", "log_level"),
        ("--keep-alive", "100ms", "keep_alive"),
    ] {
        let out = run(
            &["--config", "/dev/null", "--client-id", "x", flag, value],
            &[],
        );
        assert_config_error(&out, &[needle]);
    }
}

/// The effective config without the leading comment line.
fn settings(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn check_config_output_parses_again() {
    let dir = TempDir::new("rpi-cfg");
    let pw = write(&dir, "password", "s3cret\n");
    chmod(&pw, 0o600);
    let file = write(
        &dir,
        "c.conf",
        "entities = 4, 5,6\nstate_interval = 1.5s\nkeep_alive = 10s\n",
    );
    let out = run(
        &[
            "--config",
            &file,
            "--check-config",
            "--client-id",
            "pi-42",
            "--broker",
            "broker.lan:1884",
            "--password-file",
            &pw,
        ],
        &[("RPI_CLIENT_HEARTBEAT_INTERVAL", "250ms")],
    );
    let first = settings(&out);
    for line in [
        "client_id = pi-42",
        "entities = 4,5,6",
        "heartbeat_interval = 250ms",
        "state_interval = 1500ms",
        "queue_depth = 8",
        "log_level = info",
        "broker = broker.lan:1884",
        "keep_alive = 10s",
        // Pi accounts are named after the Pi.
        "username = pi-42",
    ] {
        assert!(
            first.lines().any(|l| l == line),
            "{line:?} missing in:\n{first}"
        );
    }
    assert!(
        !first.contains("s3cret"),
        "the password must never be printed"
    );
    let again_path = write(&dir, "effective.conf", &text(&out.stdout));
    let again = settings(&run(&["--config", &again_path, "--check-config"], &[]));
    assert_eq!(again, first);
}

#[test]
fn example_config_parses_and_documents_every_key() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.conf");
    let example = example.to_str().unwrap();
    let out = run(
        &[
            "--config",
            example,
            "--check-config",
            "--client-id",
            "example-pi",
        ],
        &[],
    );
    let s = settings(&out);
    assert!(s.contains("entities = 1,2,3\n"), "{s}");
    let body = std::fs::read_to_string(example).unwrap();
    for key in rpi_client::config::keys() {
        let documented = body.lines().any(|l| {
            let l = l.trim_start_matches('#').trim_start();
            l.starts_with(key) && l[key.len()..].trim_start().starts_with('=')
        });
        assert!(documented, "config.example.conf does not show key {key}");
    }
}

#[test]
fn help_and_version() {
    let out = run(&["--help"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    for key in rpi_client::config::keys() {
        assert!(
            help.contains(&format!("--{} VALUE", key.replace('_', "-"))),
            "{key}"
        );
    }
    assert!(help.contains("--check-config"));
    let out = run(&["--version"], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).starts_with("rpi-client "));
}
