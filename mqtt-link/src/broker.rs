//! Broker connection settings (address, TLS files, credentials) and their translation into
//! rumqttc options, with every file read and checked up front so a bad path stops the start.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{MqttOptions, TlsConfiguration, Transport};

/// `host[:port]`; the port defaults to 1883, or 8883 with TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddr {
    pub host: String,
    pub port: Option<u16>,
}

impl BrokerAddr {
    /// Parses `host`, `host:port`, `[v6]:port` or `[v6]`.
    pub fn parse(s: &str) -> Result<BrokerAddr, String> {
        let s = s.trim();
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("{s:?}: missing ']' after IPv6 address"))?;
            match after {
                "" => (h, None),
                p => (
                    h,
                    Some(
                        p.strip_prefix(':')
                            .ok_or_else(|| format!("{s:?}: expected ':port' after ']'"))?,
                    ),
                ),
            }
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => (h, Some(p)),
                Some((h, p)) if is_ambiguous_v6(h, p) => {
                    return Err(format!(
                        "{s:?}: ambiguous IPv6 address: write [{h}]:{p} for port {p}, or [{s}] \
                         for that address on the default port"
                    ));
                }
                _ => (s, None),
            }
        };
        if host.is_empty() {
            return Err(format!(
                "{s:?}: empty host (write host:port, e.g. localhost:1883)"
            ));
        }
        if host.contains(char::is_whitespace) {
            return Err(format!("{s:?}: host has white space"));
        }
        let port = match port {
            None => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("{s:?}: port must be 1..65535"))?,
            ),
        };
        Ok(BrokerAddr {
            host: host.to_owned(),
            port,
        })
    }

    pub fn port_or_default(&self, tls: bool) -> u16 {
        self.port.unwrap_or(if tls { 8883 } else { 1883 })
    }
}

/// `::1:1883` without brackets: the last group reads as a port and what precedes it is an
/// IPv6 address of its own, so the writer may have meant `[::1]:1883`. Taken as the address
/// `::1:1883` it would be retried for ever; refused instead. (`::1` or `fe80::1` alone are
/// not ambiguous: `:` and `fe80:` are no addresses.)
fn is_ambiguous_v6(head: &str, last: &str) -> bool {
    head.parse::<std::net::Ipv6Addr>().is_ok()
        && !last.is_empty()
        && last.bytes().all(|b| b.is_ascii_digit())
        && last.parse::<u16>().is_ok_and(|p| p != 0)
}

impl fmt::Display for BrokerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host: &str = &self.host;
        match (host.contains(':'), self.port) {
            (true, Some(p)) => write!(f, "[{host}]:{p}"),
            (true, None) => write!(f, "[{host}]"),
            (false, Some(p)) => write!(f, "{host}:{p}"),
            (false, None) => write!(f, "{host}"),
        }
    }
}

/// Most addresses in a `broker` list: plenty for a broker cluster, and a bound on what a
/// config file can make the link cycle through.
pub const MAX_BROKERS: usize = 16;

/// The `broker` setting: one address or a comma-separated list (`host1:1883,host2:1883`),
/// never empty. The link connects to the first and moves to the next on every failed or lost
/// connection, wrapping around.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddrs(Vec<BrokerAddr>);

impl BrokerAddrs {
    /// Parses a list; an empty list, an empty item (`a:1,,b`) or a bad address is an error
    /// (the daemons exit 2 naming `broker`), never something retried for ever.
    pub fn parse(s: &str) -> Result<BrokerAddrs, String> {
        if s.trim().is_empty() {
            return Err("empty: give host:port, or a list host1:1883,host2:1883".into());
        }
        let items: Vec<&str> = s.split(',').collect();
        if items.len() > MAX_BROKERS {
            return Err(format!(
                "{} addresses; at most {MAX_BROKERS} are allowed",
                items.len()
            ));
        }
        let mut addrs = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            if item.trim().is_empty() {
                return Err(format!(
                    "{s:?}: address {} of the list is empty (a stray comma?)",
                    i + 1
                ));
            }
            addrs.push(BrokerAddr::parse(item)?);
        }
        Ok(BrokerAddrs(addrs))
    }

    /// A list of one.
    pub fn one(addr: BrokerAddr) -> BrokerAddrs {
        BrokerAddrs(vec![addr])
    }

    /// The first address: where the link connects first.
    pub fn first(&self) -> &BrokerAddr {
        &self.0[0]
    }

    /// Every address, in the order they are tried.
    pub fn all(&self) -> &[BrokerAddr] {
        &self.0
    }
}

impl fmt::Display for BrokerAddrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

/// PEM files for TLS. `cert` and `key` together enable client-certificate authentication.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// The settings keys every daemon shares for its broker connection.
pub const BROKER_KEYS: &[&str] = &[
    "broker",
    "tls_ca",
    "tls_cert",
    "tls_key",
    "username",
    "password_file",
    "keep_alive",
];

/// Everything needed to reach and log in to the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    /// Tried in turn: the next one after every failed or lost connection.
    pub addrs: BrokerAddrs,
    /// CA to verify the broker with; setting it turns TLS on. The broker host must then be
    /// the name in its certificate (e.g. `broker.lan`), not an IP address.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate and key (PEM), for brokers that require client certificates.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub username: Option<String>,
    /// The password lives in a file (mode 0600), never on the command line or in the config.
    pub password_file: Option<PathBuf>,
    /// MQTT keep-alive; a dead link is noticed after up to 1.5-2x this.
    pub keep_alive: Duration,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            addrs: BrokerAddrs::one(BrokerAddr {
                host: "localhost".into(),
                port: None,
            }),
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            username: None,
            password_file: None,
            keep_alive: Duration::from_secs(5),
        }
    }
}

impl BrokerConfig {
    /// Applies one of [`BROKER_KEYS`]; `None` when `key` is not a broker key.
    pub fn apply(&mut self, key: &str, value: &str) -> Option<Result<(), String>> {
        let path = || -> Result<Option<PathBuf>, String> {
            if value.is_empty() {
                Ok(None)
            } else {
                Ok(Some(PathBuf::from(value)))
            }
        };
        let r = match key {
            "broker" => BrokerAddrs::parse(value).map(|a| self.addrs = a),
            "tls_ca" => path().map(|p| self.tls_ca = p),
            "tls_cert" => path().map(|p| self.tls_cert = p),
            "tls_key" => path().map(|p| self.tls_key = p),
            "username" => {
                self.username = (!value.is_empty()).then(|| value.to_owned());
                Ok(())
            }
            "password_file" => path().map(|p| self.password_file = p),
            "keep_alive" => common::duration::parse_duration(value)
                .map_err(|e| e.to_string())
                .and_then(|d| {
                    if d < Duration::from_secs(1) || d > Duration::from_secs(65535) {
                        Err("must be between 1s and 65535s".to_string())
                    } else {
                        self.keep_alive = d;
                        Ok(())
                    }
                }),
            _ => return None,
        };
        Some(r)
    }

    /// The effective settings as `key = value` lines (the password itself is never shown).
    pub fn describe(&self) -> String {
        let p = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        };
        format!(
            "broker = {}\ntls_ca = {}\ntls_cert = {}\ntls_key = {}\nusername = {}\npassword_file = {}\nkeep_alive = {}\n",
            self.addrs,
            p(&self.tls_ca),
            p(&self.tls_cert),
            p(&self.tls_key),
            self.username.as_deref().unwrap_or(""),
            p(&self.password_file),
            common::duration::format_duration(self.keep_alive),
        )
    }

    /// The TLS files, if TLS is on.
    pub fn tls_files(&self) -> Result<Option<TlsFiles>, SetupError> {
        match (&self.tls_ca, &self.tls_cert, &self.tls_key) {
            (None, None, None) => Ok(None),
            (None, _, _) => Err(SetupError::CertWithoutCa),
            (Some(ca), cert, key) => Ok(Some(TlsFiles {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            })),
        }
    }

    /// Reads and checks every file now, so that a bad path stops the start (exit 2) rather
    /// than failing every reconnect.
    pub fn validate(&self) -> Result<(), SetupError> {
        self.mqtt_options_all("validate").map(|_| ())
    }

    /// [`BrokerConfig::validate`] as a configuration error that names the key to blame, as
    /// both daemons report it at start (exit 2).
    pub fn check(&self) -> Result<(), common::ConfigError> {
        self.validate().map_err(|e| {
            common::ConfigError::new(self.key_to_blame(&e), "", crate::daemon::error_chain(&e))
        })
    }

    /// The settings key behind a setup problem.
    pub fn key_to_blame(&self, e: &SetupError) -> &'static str {
        match e {
            SetupError::ReadFile { path, .. } | SetupError::NoPem { path, .. } => {
                let is = |p: &Option<PathBuf>| p.as_ref() == Some(path);
                if is(&self.tls_ca) {
                    "tls_ca"
                } else if is(&self.tls_cert) {
                    "tls_cert"
                } else if is(&self.tls_key) {
                    "tls_key"
                } else if is(&self.password_file) {
                    "password_file"
                } else {
                    "broker"
                }
            }
            SetupError::CertWithoutKey => "tls_key",
            SetupError::CertWithoutCa => "tls_ca",
            SetupError::PasswordWithoutUser => "username",
            SetupError::PasswordFileOpen { .. } | SetupError::PasswordEmpty { .. } => {
                "password_file"
            }
            SetupError::CertKey(_) => "tls_cert",
            SetupError::Tls(_) => "tls_ca",
        }
    }
}

/// A problem with the broker settings found before connecting.
#[derive(Debug)]
pub enum SetupError {
    ReadFile {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    NoPem {
        what: &'static str,
        path: PathBuf,
    },
    CertWithoutKey,
    CertWithoutCa,
    PasswordWithoutUser,
    /// The password file may be read by others than its owner and group (`chmod o-rwx`).
    PasswordFileOpen {
        path: PathBuf,
        mode: u32,
    },
    /// The password file's first line is empty.
    PasswordEmpty {
        path: PathBuf,
    },
    /// `tls_cert` and `tls_key` are no pair (or the key is of a kind TLS cannot use).
    CertKey(rustls::Error),
    Tls(rustls::Error),
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::ReadFile { what, path, .. } => {
                write!(f, "cannot read {what} {}", path.display())
            }
            SetupError::NoPem { what, path } => {
                write!(f, "no PEM {what} found in {}", path.display())
            }
            SetupError::CertWithoutKey => {
                write!(f, "tls_cert and tls_key must be given together")
            }
            SetupError::CertWithoutCa => write!(f, "tls_cert and tls_key need tls_ca"),
            SetupError::PasswordWithoutUser => write!(f, "password_file needs a username"),
            SetupError::PasswordFileOpen { path, mode } => write!(
                f,
                "password file {} is readable by others (mode {mode:04o}); \
                 run chmod 0600 (or 0640 with the daemon's group) on it",
                path.display()
            ),
            SetupError::PasswordEmpty { path } => {
                write!(
                    f,
                    "password file {} has an empty first line",
                    path.display()
                )
            }
            SetupError::CertKey(_) => write!(
                f,
                "the client certificate (tls_cert) and the key (tls_key) are not a pair"
            ),
            SetupError::Tls(_) => write!(f, "bad TLS setup"),
        }
    }
}

impl std::error::Error for SetupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SetupError::ReadFile { source, .. } => Some(source),
            SetupError::Tls(e) | SetupError::CertKey(e) => Some(e),
            _ => None,
        }
    }
}

/// Reads a file of the settings, at most [`crate::daemon::MAX_FILE_BYTES`] of it.
fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, SetupError> {
    crate::daemon::read_bytes(path).map_err(|source| SetupError::ReadFile {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Reads a password file: the first line, without its line ending. Refused like ssh refuses
/// an open private key: when others (not owner, not group) may read or write it. Group access
/// is allowed because the deployment pattern is `root:<daemon group> 0640`, the daemon not
/// owning its secrets. An empty first line is refused too (a login without a password is
/// what `username` alone is for).
pub fn read_password(path: &Path) -> Result<String, SetupError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|source| SetupError::ReadFile {
        what: "password file",
        path: path.to_owned(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if meta.is_file() && mode & 0o007 != 0 {
        return Err(SetupError::PasswordFileOpen {
            path: path.to_owned(),
            mode,
        });
    }
    let bytes = read("password file", path)?;
    let text = String::from_utf8_lossy(&bytes);
    let first = text.lines().next().unwrap_or("");
    if first.is_empty() {
        return Err(SetupError::PasswordEmpty {
            path: path.to_owned(),
        });
    }
    Ok(first.to_owned())
}

fn tls_client_config(files: &TlsFiles) -> Result<rustls::ClientConfig, SetupError> {
    let ca_pem = read("CA file", &files.ca)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &ca_pem[..]).flatten() {
        roots.add(cert).map_err(SetupError::Tls)?;
    }
    if roots.is_empty() {
        return Err(SetupError::NoPem {
            what: "certificate",
            path: files.ca.clone(),
        });
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(SetupError::Tls)?
        .with_root_certificates(roots);
    match (&files.cert, &files.key) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert), Some(key)) => {
            let cert_pem = read("client certificate", cert)?;
            let chain: Vec<_> = rustls_pemfile::certs(&mut &cert_pem[..])
                .flatten()
                .collect();
            if chain.is_empty() {
                return Err(SetupError::NoPem {
                    what: "certificate",
                    path: cert.clone(),
                });
            }
            let key_pem = read("client key", key)?;
            let key_der = rustls_pemfile::private_key(&mut &key_pem[..])
                .ok()
                .flatten()
                .ok_or_else(|| SetupError::NoPem {
                    what: "private key",
                    path: key.clone(),
                })?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(SetupError::CertKey)
        }
        _ => Err(SetupError::CertWithoutKey),
    }
}

impl BrokerConfig {
    /// Checks every file and builds the rumqttc options for `client_id` and the first broker.
    pub fn mqtt_options(&self, client_id: &str) -> Result<MqttOptions, SetupError> {
        self.mqtt_options_for(client_id, self.addrs.first())
    }

    /// The rumqttc options for every broker of the list, in order. With TLS each one checks
    /// the certificate against its own host name (rumqttc takes the server name from the
    /// options' host).
    pub fn mqtt_options_all(&self, client_id: &str) -> Result<Vec<MqttOptions>, SetupError> {
        self.addrs
            .all()
            .iter()
            .map(|a| self.mqtt_options_for(client_id, a))
            .collect()
    }

    fn mqtt_options_for(
        &self,
        client_id: &str,
        addr: &BrokerAddr,
    ) -> Result<MqttOptions, SetupError> {
        let tls = self.tls_files()?;
        let mut opts = MqttOptions::new(client_id, &addr.host, addr.port_or_default(tls.is_some()));
        opts.set_keep_alive(self.keep_alive.max(Duration::from_secs(1)));
        if let Some(files) = &tls {
            let cfg = tls_client_config(files)?;
            opts.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(cfg))));
        }
        match (&self.username, &self.password_file) {
            (Some(user), Some(pw)) => {
                opts.set_credentials(user, read_password(pw)?);
            }
            (Some(user), None) => {
                opts.set_credentials(user, "");
            }
            (None, Some(_)) => return Err(SetupError::PasswordWithoutUser),
            (None, None) => {}
        }
        Ok(opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses() {
        let a = BrokerAddr::parse("localhost:1883").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("localhost", Some(1883)));
        let a = BrokerAddr::parse("broker.lan").unwrap();
        assert_eq!(a.port_or_default(false), 1883);
        assert_eq!(a.port_or_default(true), 8883);
        let a = BrokerAddr::parse("[::1]:8883").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("::1", Some(8883)));
        assert_eq!(a.to_string(), "[::1]:8883");
        assert_eq!(BrokerAddr::parse("::1").unwrap().host, "::1");
        for bad in [":1883", "host:0", "host:99999", "host:x", "[::1", "a b:1"] {
            assert!(BrokerAddr::parse(bad).is_err(), "{bad}");
        }
        // A port glued to an IPv6 address without brackets is refused, not guessed at.
        for ambiguous in ["::1:1883", "2001:db8::1:8883", "fe80::1:1"] {
            let e = BrokerAddr::parse(ambiguous).unwrap_err();
            assert!(e.contains("ambiguous IPv6"), "{ambiguous}: {e}");
        }
        for v6 in ["fe80::1", "1:2:3:4:5:6:7:8", "::ffff:10.0.0.1"] {
            assert_eq!(BrokerAddr::parse(v6).unwrap().host, v6);
        }
    }

    #[test]
    fn missing_tls_files_are_reported_up_front() {
        let cfg = BrokerConfig {
            tls_ca: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        let e = cfg.mqtt_options("pi-1").unwrap_err();
        assert!(
            e.to_string()
                .contains("cannot read CA file /nonexistent/ca.pem"),
            "{e}"
        );
        let cfg = BrokerConfig {
            password_file: Some("/x".into()),
            ..Default::default()
        };
        assert!(matches!(
            cfg.mqtt_options("pi-1"),
            Err(SetupError::PasswordWithoutUser)
        ));
        let cfg = BrokerConfig {
            tls_cert: Some("/x".into()),
            ..Default::default()
        };
        assert!(matches!(cfg.validate(), Err(SetupError::CertWithoutCa)));
        assert_eq!(cfg.check().unwrap_err().key, "tls_ca");
        let cfg = BrokerConfig {
            username: Some("pi-1".into()),
            password_file: Some("/nonexistent/pw".into()),
            ..Default::default()
        };
        let e = cfg.check().unwrap_err();
        assert_eq!(e.key, "password_file");
        assert!(e.to_string().contains("/nonexistent/pw"), "{e}");
    }

    #[test]
    fn applies_and_describes_keys() {
        let mut c = BrokerConfig::default();
        for k in BROKER_KEYS {
            assert!(c.apply(k, "").is_some(), "{k}");
        }
        assert!(c.apply("client_id", "x").is_none());
        c.apply("keep_alive", "10s").unwrap().unwrap();
        assert!(c.apply("keep_alive", "10ms").unwrap().is_err());
        assert!(c.apply("broker", "x:0").unwrap().is_err());
        c.apply("broker", "a:1, [::1]:2,b").unwrap().unwrap();
        assert_eq!(c.addrs.to_string(), "a:1,[::1]:2,b");
        let opts = c.mqtt_options_all("x").unwrap();
        let hosts: Vec<_> = opts.iter().map(|o| o.broker_address()).collect();
        assert_eq!(
            hosts,
            [("a".into(), 1), ("::1".into(), 2), ("b".into(), 1883)]
        );
        for bad in ["a:1,,b", "a:1,", ",a:1", "", " ", "a:1,::1:1883", "a:1,b:0"] {
            assert!(c.apply("broker", bad).unwrap().is_err(), "{bad:?}");
        }
        let e = BrokerAddrs::parse("a:1,,b").unwrap_err();
        assert!(e.contains("address 2 of the list is empty"), "{e}");
        let many = vec!["h:1"; MAX_BROKERS + 1].join(",");
        assert!(BrokerAddrs::parse(&many).is_err());
        c.apply("broker", "broker.lan:8883").unwrap().unwrap();
        let d = c.describe();
        assert!(d.contains("broker = broker.lan:8883\n"), "{d}");
        assert!(d.contains("keep_alive = 10s\n"), "{d}");
    }
}
