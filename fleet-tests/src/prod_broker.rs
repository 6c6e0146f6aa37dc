//! The production broker, built from the project's own files in a temporary directory: certificates
//! from `scripts/gen-certs.sh`, accounts from `scripts/add-user.sh`, `mosquitto/config/acl`, and
//! `mosquitto/config/mosquitto.prod.conf` with its `/mosquitto/` paths moved into the temp dir and
//! its three listeners moved to free loopback ports. Started with `testkit::Broker`, so it can be
//! killed, paused and restarted like any test broker.
//!
//! What the copy changes in `mosquitto.prod.conf` ([`rewrite_config`]), and nothing else:
//! - every `/mosquitto/` path prefix becomes `<temp dir>/` (paths stand alone on directive lines);
//! - `listener 1883 127.0.0.1` becomes `listener <free port> 127.0.0.1`;
//! - `listener 8883` and `listener 8884` become `listener <free port> 127.0.0.1` (loopback only:
//!   a test opens no port to the network);
//! - when the tests run as root, `user root` is appended: mosquitto would otherwise drop to the
//!   `mosquitto` user before reading the password file and the TLS key and opening the log file
//!   (as a normal user there is no privilege drop).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use mqtt_link::BrokerConfig;
use rumqttc::MqttOptions;
use testkit::{Broker, Probe, TempDir};

use crate::repo_root;
use crate::scripts::{add_user, gen_certs};
use crate::tools::running_as_root;

/// The account of the server daemon (the ACL's `user server`).
pub const SERVER_USER: &str = "server";
/// The two Pis of [`ProdBroker::start`]: each has a password account and a client certificate.
pub const PI_A: &str = "pi-a";
pub const PI_B: &str = "pi-b";
/// The host name in the broker's certificate (gen-certs adds `DNS:localhost` and `IP:127.0.0.1`
/// anyway); TLS clients connect to `localhost:<port>`.
pub const TLS_HOST: &str = "localhost";

/// The three listeners of the production config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// 1883 in production: 127.0.0.1 only, plain MQTT, password. The client id is kept as sent.
    Local,
    /// 8883: TLS with the server certificate, password; the client id becomes the username.
    Tls,
    /// 8884: TLS with a required client certificate whose CN becomes the username (and the
    /// client id); no password.
    ClientCert,
}

/// The loopback ports standing in for 1883, 8883 and 8884.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub local: u16,
    pub tls: u16,
    pub client_cert: u16,
}

impl Ports {
    /// Three distinct loopback ports nobody listens on right now.
    fn free() -> Ports {
        let mut got: Vec<u16> = Vec::new();
        for _ in 0..100 {
            let p = testkit::broker::free_port();
            if !got.contains(&p) {
                got.push(p);
            }
            if got.len() == 3 {
                break;
            }
        }
        assert_eq!(got.len(), 3, "could not find three free loopback ports");
        Ports {
            local: got[0],
            tls: got[1],
            client_cert: got[2],
        }
    }
}

/// A running production broker with its certificates, accounts and password files.
pub struct ProdBroker {
    // Dropped first: the broker is stopped before its files go.
    broker: Broker,
    dir: TempDir,
    ports: Ports,
    pis: Vec<String>,
}

impl ProdBroker {
    /// Certificates for `localhost` and Pis [`PI_A`], [`PI_B`]; accounts `server`, `pi-a`, `pi-b`.
    pub fn start() -> ProdBroker {
        ProdBroker::start_with_pis(&[PI_A, PI_B])
    }

    /// Like [`ProdBroker::start`] with other Pis: each gets a client certificate and a
    /// password account (plus the `server` account).
    pub fn start_with_pis(pis: &[&str]) -> ProdBroker {
        // A clear "install mosquitto" failure before anything else.
        testkit::broker::mosquitto_path();
        let dir = TempDir::new("prod-broker");
        for sub in ["config", "certs", "data", "log", "secrets"] {
            fs::create_dir_all(dir.path().join(sub)).expect("create broker dir");
        }
        gen_certs(&dir.path().join("certs"), TLS_HOST, pis);
        let src = repo_root().join("mosquitto/config");
        fs::copy(src.join("acl"), dir.path().join("config/acl")).expect("copy mosquitto acl");
        let salt = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        for user in std::iter::once(SERVER_USER).chain(pis.iter().copied()) {
            let file = password_file_in(dir.path(), user);
            fs::write(&file, format!("pw-{user}-{salt:08x}\n")).expect("write password file");
            fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).expect("chmod 0600");
            add_user(&dir.path().join("config/passwd"), user, &file);
        }
        let original =
            fs::read_to_string(src.join("mosquitto.prod.conf")).expect("read mosquitto.prod.conf");
        let config = dir.path().join("config/mosquitto.conf");
        let mut failures = Vec::new();
        for _ in 0..5 {
            let ports = Ports::free();
            let listener = |p: u16| format!("listener {p} 127.0.0.1");
            let text = rewrite_config(
                &original,
                dir.path(),
                &[
                    ("listener 1883 127.0.0.1", listener(ports.local)),
                    ("listener 8883", listener(ports.tls)),
                    ("listener 8884", listener(ports.client_cert)),
                ],
                running_as_root(),
            )
            .unwrap_or_else(|e| panic!("mosquitto/config/mosquitto.prod.conf: {e}"));
            fs::write(&config, text).expect("write mosquitto.conf");
            match Broker::try_start_config(&config, &[ports.local, ports.tls, ports.client_cert]) {
                Ok(broker) => {
                    return ProdBroker {
                        broker,
                        dir,
                        ports,
                        pis: pis.iter().map(|p| p.to_string()).collect(),
                    };
                }
                // Most likely another test took one of the ports in the meantime.
                Err(e) => failures.push(e),
            }
        }
        panic!(
            "the production broker did not start 5 times:\n{}",
            failures.join("\n----\n")
        );
    }

    pub fn ports(&self) -> Ports {
        self.ports
    }

    pub fn port(&self, listener: Listener) -> u16 {
        match listener {
            Listener::Local => self.ports.local,
            Listener::Tls => self.ports.tls,
            Listener::ClientCert => self.ports.client_cert,
        }
    }

    /// `host:port` as the daemons' `broker` setting takes it: `127.0.0.1:P` for the local
    /// listener, `localhost:P` (the name in the certificate) for the TLS ones.
    pub fn addr(&self, listener: Listener) -> String {
        match listener {
            Listener::Local => format!("127.0.0.1:{}", self.ports.local),
            _ => format!("{TLS_HOST}:{}", self.port(listener)),
        }
    }

    /// The temp dir: `config/` (mosquitto.conf, acl, passwd), `certs/`, `data/`, `log/`,
    /// `secrets/` (one `<user>.password` per account).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_file(&self) -> PathBuf {
        self.dir().join("config/mosquitto.conf")
    }

    pub fn passwd_file(&self) -> PathBuf {
        self.dir().join("config/passwd")
    }

    pub fn certs_dir(&self) -> PathBuf {
        self.dir().join("certs")
    }

    pub fn ca_file(&self) -> PathBuf {
        self.certs_dir().join("ca.crt")
    }

    pub fn server_cert(&self) -> PathBuf {
        self.certs_dir().join("server.crt")
    }

    pub fn server_key(&self) -> PathBuf {
        self.certs_dir().join("server.key")
    }

    pub fn client_cert(&self, pi: &str) -> PathBuf {
        self.certs_dir().join("clients").join(format!("{pi}.crt"))
    }

    pub fn client_key(&self, pi: &str) -> PathBuf {
        self.certs_dir().join("clients").join(format!("{pi}.key"))
    }

    /// The file holding `user`'s password (first line), as the daemons' `password_file`.
    pub fn password_file(&self, user: &str) -> PathBuf {
        password_file_in(self.dir(), user)
    }

    pub fn password(&self, user: &str) -> String {
        mqtt_link::broker::read_password(&self.password_file(user)).expect("read password file")
    }

    pub fn pis(&self) -> &[String] {
        &self.pis
    }

    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// For fault injection: kill, pause, restart on the same ports.
    pub fn broker_mut(&mut self) -> &mut Broker {
        &mut self.broker
    }

    /// What mosquitto logged so far (stderr, across restarts).
    pub fn log(&self) -> String {
        self.broker.log()
    }

    /// Settings that log `user` in on `listener`: username and password file on `Local` and
    /// `Tls`, the user's client certificate on `ClientCert` (only Pis have one). Tests change
    /// fields of the result to try what must fail (wrong CA, wrong password, no user...).
    pub fn broker_config(&self, listener: Listener, user: &str) -> BrokerConfig {
        let mut c = BrokerConfig::default();
        c.apply("broker", &self.addr(listener))
            .expect("broker key")
            .expect("valid address");
        match listener {
            Listener::Local => {
                c.username = Some(user.to_owned());
                c.password_file = Some(self.password_file(user));
            }
            Listener::Tls => {
                c.tls_ca = Some(self.ca_file());
                c.username = Some(user.to_owned());
                c.password_file = Some(self.password_file(user));
            }
            Listener::ClientCert => {
                assert!(
                    self.client_cert(user).is_file(),
                    "{user} has no client certificate (only the Pis of ProdBroker::start_with_pis have one)"
                );
                c.tls_ca = Some(self.ca_file());
                c.tls_cert = Some(self.client_cert(user));
                c.tls_key = Some(self.client_key(user));
            }
        }
        c
    }

    /// rumqttc options for `user` on `listener` with `client_id` (on the TLS listeners the
    /// broker replaces the client id by the username).
    pub fn options(&self, listener: Listener, user: &str, client_id: &str) -> MqttOptions {
        self.broker_config(listener, user)
            .mqtt_options(client_id)
            .unwrap_or_else(|e| panic!("options for {user} on {listener:?}: {e}"))
    }

    /// A connected [`Probe`] subscribed to `topics` (at QoS 1; the broker grants subscriptions
    /// its ACL denies, and then delivers nothing on them).
    pub fn probe(&self, listener: Listener, user: &str, client_id: &str, topics: &[&str]) -> Probe {
        Probe::connect_with(self.options(listener, user, client_id), topics)
    }
}

fn password_file_in(dir: &Path, user: &str) -> PathBuf {
    dir.join("secrets").join(format!("{user}.password"))
}

/// The daemons' command-line flags for these broker settings (`--broker`, `--tls-ca`,
/// `--tls-cert`, `--tls-key`, `--username`, `--password-file`; unset ones are left out).
/// Both daemons share these keys (`mqtt_link::BROKER_KEYS`).
pub fn broker_flags(c: &BrokerConfig) -> Vec<String> {
    let mut v = vec!["--broker".to_owned(), c.addrs.to_string()];
    let mut path = |flag: &str, p: &Option<PathBuf>| {
        if let Some(p) = p {
            v.push(flag.to_owned());
            v.push(p.display().to_string());
        }
    };
    path("--tls-ca", &c.tls_ca);
    path("--tls-cert", &c.tls_cert);
    path("--tls-key", &c.tls_key);
    path("--password-file", &c.password_file);
    if let Some(u) = &c.username {
        v.push("--username".to_owned());
        v.push(u.clone());
    }
    v
}

/// Copies a mosquitto config of the project for a native run: every `/mosquitto/` path prefix
/// on a directive line becomes `dir/`, each `(line, replacement)` pair replaces a whole line that
/// must occur exactly once, and `user root` is appended when `as_root`. Fails when a listed line
/// is missing or repeated, or when a directive line still holds an absolute path outside `dir`
/// afterwards (the configs promise that every path starts with `/mosquitto/`).
pub fn rewrite_config(
    original: &str,
    dir: &Path,
    lines: &[(&str, String)],
    as_root: bool,
) -> Result<String, String> {
    let dir_s = dir.to_str().ok_or("temp dir is not UTF-8")?;
    let mut hits = vec![0usize; lines.len()];
    let mut out = String::from("# Copied and rewritten by fleet-tests (see prod_broker.rs).\n");
    for line in original.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || trimmed.is_empty() {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let mut new = line.replace("/mosquitto/", &format!("{dir_s}/"));
        if let Some(i) = lines.iter().position(|(from, _)| trimmed == *from) {
            hits[i] += 1;
            new = lines[i].1.clone();
        }
        for word in new.split_whitespace().skip(1) {
            if word.starts_with('/') && !word.starts_with(dir_s) {
                return Err(format!(
                    "the directive {trimmed:?} has a path outside /mosquitto/ ({word})"
                ));
            }
        }
        out.push_str(&new);
        out.push('\n');
    }
    for ((from, _), n) in lines.iter().zip(hits) {
        if n != 1 {
            return Err(format!(
                "expected the line {from:?} exactly once, found it {n} times"
            ));
        }
    }
    if as_root {
        out.push_str("# The tests run as root: keep root instead of dropping to user mosquitto.\nuser root\n");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_paths_and_listeners_and_checks_them() {
        let dir = Path::new("/tmp/b");
        let conf = "# /mosquitto/ in a comment stays\nlistener 8883\ncafile /mosquitto/certs/ca.crt\nlog_dest stderr\n";
        let got = rewrite_config(
            conf,
            dir,
            &[("listener 8883", "listener 1234 127.0.0.1".into())],
            true,
        )
        .unwrap();
        assert!(
            got.contains(
                "\nlistener 1234 127.0.0.1\ncafile /tmp/b/certs/ca.crt\nlog_dest stderr\n"
            ),
            "{got}"
        );
        assert!(got.contains("# /mosquitto/ in a comment stays\n"));
        assert!(got.ends_with("user root\n"));
        let e = rewrite_config(conf, dir, &[("listener 1883", "x".into())], false).unwrap_err();
        assert!(e.contains("exactly once"), "{e}");
        let e = rewrite_config("keyfile /etc/key.pem\n", dir, &[], false).unwrap_err();
        assert!(e.contains("/etc/key.pem"), "{e}");
    }
}
