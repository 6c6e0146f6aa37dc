//! The server's settings: schema (keys, switches, env prefix, default path), parsing of each
//! value with a message naming what is wrong, and the effective config as `key = value` lines.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::ConfigError;
use common::conf::{Loaded, Schema};
use common::duration::{format_duration, parse_duration};
use common::topic::validate_client_id;
use log::LevelFilter;
use mqtt_link::{BROKER_KEYS, BrokerConfig};

/// Environment variables `MQTT_SERVER_<KEY>` set any key.
pub const ENV_PREFIX: &str = "MQTT_SERVER_";
/// Read when neither `--config` nor `MQTT_SERVER_CONFIG` names a file; may be absent.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/mqtt-server/config.conf";
/// The server's MQTT user name when a password file is given without one (the ACL's name).
pub const DEFAULT_USERNAME: &str = "server";

/// The server's own keys; [`schema_keys`] adds the broker keys shared with the client.
pub const SERVER_KEYS: &[&str] = &[
    "client_id",
    "heartbeat_timeout",
    "segment_interval",
    "status_interval",
    "log_level",
    "max_pis",
    "fleet_file",
    "evict_after",
    "segment_retries",
    "ack_timeout",
    "http_listen",
    "http_token_file",
    "state_dir",
];

/// The client id of a [`ServerConfig::default`] (in-process servers in tests); a loaded
/// configuration uses [`default_client_id`] unless `client_id` is set.
pub const FALLBACK_CLIENT_ID: &str = "mqtt-server";

/// Where the server keeps its session counter unless `state_dir` says otherwise (systemd's
/// `StateDirectory=mqtt-server`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/mqtt-server";

/// `mqtt-server-{hostname}`: the default client id, unique per machine.
pub fn default_client_id(hostname: &str) -> String {
    format!("{FALLBACK_CLIENT_ID}-{hostname}")
}

/// Switches (flags without a value).
pub const SWITCHES: &[&str] = &["--check-config", "--help", "-h", "--version", "-V"];

/// Every key the server accepts, server keys first.
pub fn schema_keys() -> Vec<&'static str> {
    SERVER_KEYS
        .iter()
        .chain(BROKER_KEYS.iter())
        .copied()
        .collect()
}

/// The schema over `keys` (from [`schema_keys`]).
pub fn schema<'a>(keys: &'a [&'a str]) -> Schema<'a> {
    Schema {
        keys,
        switches: SWITCHES,
        env_prefix: ENV_PREFIX,
        default_path: DEFAULT_CONFIG_PATH,
    }
}

/// Everything the server needs to run.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The server's own MQTT client id (two servers with one id would kick each other off).
    /// [`ServerConfig::load`] defaults it to [`default_client_id`] of the hostname, so two
    /// servers on two machines never share one; [`Default`] holds [`FALLBACK_CLIENT_ID`].
    pub client_id: String,
    pub broker: BrokerConfig,
    /// A Pi with no heartbeat for this long is marked offline.
    pub heartbeat_timeout: Duration,
    /// The demo planner's period; zero turns it off.
    pub segment_interval: Duration,
    /// The status table's period on stdout; zero turns it off.
    pub status_interval: Duration,
    pub log_level: LevelFilter,
    /// Registry cap: a flood of made-up client ids cannot grow memory past this many Pis.
    pub max_pis: usize,
    /// The optional fleet list ([`crate::fleet_list`]): ids that always keep their place in
    /// the registry, whatever floods it. None: no list (the handshake rule alone).
    pub fleet_file: Option<PathBuf>,
    /// A Pi offline this long is dropped from the registry.
    pub evict_after: Duration,
    /// Re-sends of an unacknowledged segment before it is reported failed.
    pub segment_retries: u32,
    /// Time to wait for a segment's ack before re-sending it.
    pub ack_timeout: Duration,
    /// Where the operator interface listens (`off`: None).
    pub http_listen: Option<SocketAddr>,
    /// The bearer token's file; required when `http_listen` is not loopback.
    pub http_token_file: Option<PathBuf>,
    /// Where the session counter is kept across restarts (`off`: None, the wall clock alone),
    /// so that this server's statuses are never taken for stale ones after a restart.
    pub state_dir: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            client_id: FALLBACK_CLIENT_ID.into(),
            broker: BrokerConfig::default(),
            heartbeat_timeout: Duration::from_millis(1500),
            segment_interval: Duration::from_secs(3),
            status_interval: Duration::from_secs(1),
            log_level: LevelFilter::Info,
            max_pis: 5000,
            fleet_file: None,
            evict_after: Duration::from_secs(600),
            segment_retries: 3,
            ack_timeout: Duration::from_secs(1),
            http_listen: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            http_token_file: None,
            state_dir: Some(DEFAULT_STATE_DIR.to_owned()),
        }
    }
}

/// What the command line asked for.
#[derive(Debug, Clone)]
pub enum Command {
    Run(ServerConfig),
    CheckConfig(ServerConfig),
    Help,
    Version,
}

fn duration(value: &str, allow_zero: bool) -> Result<Duration, String> {
    let d = parse_duration(value).map_err(|e| e.to_string())?;
    if !allow_zero && d.is_zero() {
        return Err("must be more than 0s".into());
    }
    Ok(d)
}

fn integer<T: std::str::FromStr>(value: &str, min: u64, max: u64) -> Result<T, String> {
    let v: u64 = value
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not a whole number"))?;
    if v < min || v > max {
        return Err(format!("must be between {min} and {max}"));
    }
    value
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is out of range"))
}

impl ServerConfig {
    /// Parses one setting; the message names what is wrong (the caller adds key and origin).
    pub fn apply(&mut self, key: &str, value: &str) -> Result<(), String> {
        if let Some(r) = self.broker.apply(key, value) {
            return r;
        }
        match key {
            "client_id" => {
                validate_client_id(value).map_err(|e| e.to_string())?;
                self.client_id = value.to_owned();
            }
            "heartbeat_timeout" => self.heartbeat_timeout = duration(value, false)?,
            "segment_interval" => self.segment_interval = duration(value, true)?,
            "status_interval" => self.status_interval = duration(value, true)?,
            "log_level" => self.log_level = mqtt_link::daemon::parse_level(value)?,
            "max_pis" => self.max_pis = integer(value, 1, 1_000_000)?,
            "fleet_file" => {
                let v = value.trim();
                self.fleet_file = (!v.is_empty()).then(|| PathBuf::from(v));
            }
            "evict_after" => self.evict_after = duration(value, false)?,
            "segment_retries" => self.segment_retries = integer(value, 0, 100)?,
            "ack_timeout" => self.ack_timeout = duration(value, false)?,
            "http_listen" => {
                self.http_listen = match value.trim() {
                    "off" => None,
                    v => Some(v.parse().map_err(|_| {
                        format!("{v:?} is not an address:port like 127.0.0.1:8080 (or off)")
                    })?),
                }
            }
            "http_token_file" => {
                self.http_token_file = match value.trim() {
                    "" => None,
                    v => Some(PathBuf::from(v)),
                }
            }
            "state_dir" => {
                self.state_dir = match value.trim() {
                    "off" => None,
                    "" => return Err("empty: a directory, or off".into()),
                    v => Some(v.to_owned()),
                };
            }
            _ => return Err("unknown key".into()),
        }
        Ok(())
    }

    /// Defaults that depend on other settings; call once after every value is applied.
    pub fn finish(&mut self) {
        if self.broker.password_file.is_some() && self.broker.username.is_none() {
            self.broker.username = Some(DEFAULT_USERNAME.into());
        }
    }

    /// The effective settings as `key = value` lines: a valid config file.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "client_id = {}\nheartbeat_timeout = {}\nsegment_interval = {}\nstatus_interval = {}\n\
             log_level = {}\nmax_pis = {}\nfleet_file = {}\nevict_after = {}\nsegment_retries = {}\nack_timeout = {}\n",
            self.client_id,
            format_duration(self.heartbeat_timeout),
            format_duration(self.segment_interval),
            format_duration(self.status_interval),
            self.log_level.as_str().to_ascii_lowercase(),
            self.max_pis,
            self.fleet_file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            format_duration(self.evict_after),
            self.segment_retries,
            format_duration(self.ack_timeout),
        );
        s.push_str(&format!(
            "state_dir = {}\nhttp_listen = {}\nhttp_token_file = {}\n",
            self.state_dir.as_deref().unwrap_or("off"),
            self.http_listen
                .map_or_else(|| "off".to_string(), |a| a.to_string()),
            self.http_token_file
                .as_ref()
                .map_or_else(String::new, |p| p.display().to_string()),
        ));
        s.push_str(&self.broker.describe());
        s
    }

    /// Reads the TLS, password and fleet list files now, so a bad path stops the start
    /// (exit 2); the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.broker.check()?;
        self.http_token()?;
        if let Some(addr) = self.http_listen {
            if !addr.ip().is_loopback() && self.http_token_file.is_none() {
                return Err(ConfigError::new(
                    "http_listen",
                    "",
                    format!(
                        "{addr} is not a loopback address: set http_token_file so that \
                         requests need a token, or listen on 127.0.0.1"
                    ),
                ));
            }
        }
        self.fleet_list().map(|_| ())
    }

    /// The ids of the fleet list (empty without a `fleet_file`); an error names the key.
    pub fn fleet_list(&self) -> Result<BTreeSet<String>, ConfigError> {
        match &self.fleet_file {
            None => Ok(BTreeSet::new()),
            Some(p) => crate::fleet_list::load(p, self.max_pis)
                .map_err(|e| ConfigError::new("fleet_file", "", e)),
        }
    }

    /// The bearer token from `http_token_file` (its first line), if one is set; an
    /// unreadable or empty file is an error naming the key.
    pub fn http_token(&self) -> Result<Option<String>, ConfigError> {
        let Some(path) = &self.http_token_file else {
            return Ok(None);
        };
        let bad = |m: String| ConfigError::new("http_token_file", "", m);
        let text = crate::http::auth::read_token_file(path)
            .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
        match text {
            Some(t) => Ok(Some(t)),
            None => Err(bad(format!("{} holds no token", path.display()))),
        }
    }

    /// Loads settings from `args` (after the program name), `env` and the config file; the
    /// client id, when not set, is [`default_client_id`] of `hostname()`.
    pub fn load(
        args: &[String],
        env: &[(String, String)],
        read_file: impl FnOnce(&str) -> std::io::Result<String>,
        hostname: impl FnOnce() -> Result<String, String>,
    ) -> Result<Command, ConfigError> {
        // `--help` and `--version` win over everything else, even a broken config file.
        if args.iter().any(|a| a == "--help" || a == "-h") {
            return Ok(Command::Help);
        }
        if args.iter().any(|a| a == "--version" || a == "-V") {
            return Ok(Command::Version);
        }
        let keys = schema_keys();
        let mut cfg = ServerConfig::default();
        let mut id_set = false;
        let loaded: Loaded = common::conf::load(&schema(&keys), args, env, read_file, |k, v| {
            id_set |= k == "client_id";
            cfg.apply(k, v)
        })?;
        if !id_set {
            cfg.client_id =
                mqtt_link::daemon::client_id_from_hostname(hostname, default_client_id)?;
        }
        cfg.finish();
        let has = |s: &[&str]| loaded.switches.iter().any(|x| s.contains(&x.as_str()));
        Ok(if has(&["--check-config"]) {
            Command::CheckConfig(cfg)
        } else {
            Command::Run(cfg)
        })
    }

    /// [`ServerConfig::load`] with this process's arguments, environment and file system,
    /// then [`ServerConfig::validate`] for a configuration to run or check: the one place
    /// the binary's configuration is checked.
    pub fn from_process() -> Result<Command, ConfigError> {
        let input = mqtt_link::daemon::ProcessInput::read();
        let cmd = ServerConfig::load(
            &input.args,
            &input.env,
            mqtt_link::daemon::read_file,
            mqtt_link::daemon::system_hostname,
        )?;
        if let Command::Run(cfg) | Command::CheckConfig(cfg) = &cmd {
            cfg.validate()?;
        }
        Ok(cmd)
    }
}

/// The `--help` text.
pub fn usage() -> String {
    let keys = schema_keys();
    format!(
        "mqtt-server {} — fleet monitor and segment dispatcher\n\n\
         Usage: mqtt-server [--config PATH] [--KEY VALUE]... [--check-config]\n\n\
         Settings (flag, environment variable, config file key); flags win over the\n\
         environment, which wins over the file ({DEFAULT_CONFIG_PATH} by default):\n{}\n\
         Switches:\n  --check-config   validate, print the effective config and exit\n  \
         --help, -h       this text\n  --version, -V    the version\n\n\
         client_id defaults to mqtt-server-HOSTNAME (unique per machine). broker takes one\n\
         address or a list tried in turn on a failed or lost connection: host1:1883,host2:1883\n\
         ([v6]:port for IPv6).\n\
         Durations are written like 500ms, 1.5s, 2m. The status table goes to stdout, logs to stderr.\n",
        env!("CARGO_PKG_VERSION"),
        common::conf::help_lines(&schema(&keys)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(
        args: &[&str],
        env: &[(&str, &str)],
        file: Option<&str>,
    ) -> Result<Command, ConfigError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ServerConfig::load(
            &args,
            &env,
            |_| match file {
                Some(t) => Ok(t.to_string()),
                None => Err(std::io::Error::new(std::io::ErrorKind::NotFound, "absent")),
            },
            || Ok("host-a".to_string()),
        )
    }

    fn run_cfg(args: &[&str]) -> ServerConfig {
        match load(args, &[], None).unwrap() {
            Command::Run(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_match_the_issue() {
        let c = run_cfg(&[]);
        assert_eq!(c.heartbeat_timeout, Duration::from_millis(1500));
        assert_eq!(c.segment_interval, Duration::from_secs(3));
        assert_eq!(c.status_interval, Duration::from_secs(1));
        assert_eq!(c.client_id, "mqtt-server-host-a");
        assert_eq!(run_cfg(&["--client-id", "s2"]).client_id, "s2");
        assert_eq!(c.max_pis, 5000);
        assert_eq!(c.evict_after, Duration::from_secs(600));
        assert_eq!(c.segment_retries, 3);
        assert_eq!(c.ack_timeout, Duration::from_secs(1));
        assert_eq!(c.http_listen, Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(c.http_token_file, None);
    }

    #[test]
    fn http_listen_off_and_the_token_rule() {
        assert_eq!(run_cfg(&["--http-listen", "off"]).http_listen, None);
        let e = load(&["--http-listen", "localhost"], &[], None).unwrap_err();
        assert_eq!(e.key, "http_listen");
        let open = run_cfg(&["--http-listen", "0.0.0.0:8080"]);
        let e = open.validate().unwrap_err();
        assert_eq!(e.key, "http_listen", "{e}");
        let dir = std::env::temp_dir().join(format!("http-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let path = empty.display().to_string();
        let e = run_cfg(&["--http-listen", "0.0.0.0:8080", "--http-token-file", &path])
            .validate()
            .unwrap_err();
        assert_eq!(e.key, "http_token_file", "{e}");
        let good = dir.join("good");
        std::fs::write(&good, "s3cret\n").unwrap();
        let path = good.display().to_string();
        let c = run_cfg(&["--http-listen", "0.0.0.0:8080", "--http-token-file", &path]);
        assert!(c.validate().is_ok());
        assert_eq!(c.http_token().unwrap().as_deref(), Some("s3cret"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn flags_env_and_file() {
        let c = match load(
            &["--broker", "h:1884", "--segment-interval", "0s"],
            &[("MQTT_SERVER_STATUS_INTERVAL", "250ms")],
            Some("heartbeat_timeout = 2s\nmax_pis = 10\n"),
        )
        .unwrap()
        {
            Command::Run(c) => c,
            o => panic!("{o:?}"),
        };
        assert_eq!(c.broker.addrs.to_string(), "h:1884");
        assert_eq!(c.segment_interval, Duration::ZERO);
        assert_eq!(c.status_interval, Duration::from_millis(250));
        assert_eq!(c.heartbeat_timeout, Duration::from_secs(2));
        assert_eq!(c.max_pis, 10);
    }

    #[test]
    fn bad_values_name_their_key() {
        for (args, key) in [
            (&["--heartbeat-timeout", "0s"][..], "heartbeat_timeout"),
            (&["--heartbeat-timeout", "soon"], "heartbeat_timeout"),
            (&["--max-pis", "0"], "max_pis"),
            (&["--max-pis", "-3"], "max_pis"),
            (&["--segment-retries", "1000"], "segment_retries"),
            (&["--client-id", "a/b"], "client_id"),
            (&["--log-level", "loud"], "log_level"),
            (&["--ack-timeout", "0s"], "ack_timeout"),
            (&["--broker", "x:0"], "broker"),
        ] {
            let e = load(args, &[], None).unwrap_err();
            assert_eq!(e.key, key, "{args:?}: {e}");
            assert!(e.to_string().contains(args[0]), "{e}");
        }
        let e = load(&["--nope", "1"], &[], None).unwrap_err();
        assert!(e.to_string().contains("--nope"), "{e}");
    }

    #[test]
    fn client_id_comes_from_the_hostname_unless_set() {
        let no_file = |_: &str| Err(std::io::Error::from(std::io::ErrorKind::NotFound));
        let e = ServerConfig::load(&[], &[], no_file, || Ok("my host".to_string())).unwrap_err();
        assert_eq!(e.key, "client_id");
        assert!(e.to_string().contains("--client-id"), "{e}");
        let e =
            ServerConfig::load(&[], &[], no_file, || Err("no hostname".to_string())).unwrap_err();
        assert!(e.to_string().contains("no hostname"), "{e}");
        // An explicit id (flag, env or file) does not need the hostname at all.
        let env = [("MQTT_SERVER_CLIENT_ID".to_string(), "s1".to_string())];
        match ServerConfig::load(&[], &env, no_file, || Err("no hostname".into())).unwrap() {
            Command::Run(c) => assert_eq!(c.client_id, "s1"),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn fleet_file_is_read_at_start_and_named_when_bad() {
        assert!(run_cfg(&[]).fleet_list().unwrap().is_empty());
        let c = run_cfg(&["--fleet-file", "/nonexistent/fleet"]);
        let e = c.validate().unwrap_err();
        assert_eq!(e.key, "fleet_file", "{e}");
        assert!(e.to_string().contains("/nonexistent/fleet"), "{e}");
        let e = run_cfg(&["--fleet-file", "/dev/zero"])
            .validate()
            .unwrap_err();
        assert_eq!(e.key, "fleet_file", "{e}");
        assert_eq!(run_cfg(&["--fleet-file", ""]).fleet_file, None);
    }

    #[test]
    fn password_file_implies_server_user() {
        let c = run_cfg(&["--password-file", "/run/secret"]);
        assert_eq!(c.broker.username.as_deref(), Some("server"));
        let c = run_cfg(&["--password-file", "/run/secret", "--username", "ops"]);
        assert_eq!(c.broker.username.as_deref(), Some("ops"));
        assert_eq!(run_cfg(&[]).broker.username, None);
    }

    #[test]
    fn describe_round_trips_and_covers_every_key() {
        let c = run_cfg(&["--segment-interval", "0s", "--status-interval", "1.5s"]);
        let text = c.describe();
        for key in schema_keys() {
            assert!(
                text.lines().any(|l| l.starts_with(&format!("{key} = "))),
                "{key} missing from:\n{text}"
            );
        }
        let again = match load(&[], &[], Some(&text)).unwrap() {
            Command::Run(c) => c,
            o => panic!("{o:?}"),
        };
        assert_eq!(again.describe(), text);
    }

    #[test]
    fn switches() {
        assert!(matches!(load(&["--help"], &[], None), Ok(Command::Help)));
        assert!(matches!(
            load(&["--version"], &[], None),
            Ok(Command::Version)
        ));
        assert!(matches!(
            load(&["--check-config"], &[], None),
            Ok(Command::CheckConfig(_))
        ));
        assert!(usage().contains("--heartbeat-timeout VALUE"));
        assert!(usage().contains("MQTT_SERVER_SEGMENT_INTERVAL"));
    }
}
