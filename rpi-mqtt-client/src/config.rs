//! The daemon's settings: the schema (file keys, `--flags`, `RPI_CLIENT_*` variables), parsing
//! and checking of every value, the hostname default of the client id, and the effective
//! configuration that `--check-config` prints (itself a valid config file).

use std::time::Duration;

use common::conf::{self, Schema};
use common::duration::{format_duration, parse_duration};
use common::{ClientId, ConfigError};
use log::LevelFilter;
use mqtt_link::daemon::parse_level;
use mqtt_link::{BROKER_KEYS, BrokerConfig};

/// Environment variables `RPI_CLIENT_<KEY>` override the file.
pub const ENV_PREFIX: &str = "RPI_CLIENT_";
/// Read when neither `--config` nor `RPI_CLIENT_CONFIG` names a file; may be absent.
pub const DEFAULT_PATH: &str = "/etc/rpi-client/config.conf";
/// The daemon's own keys; the broker keys ([`BROKER_KEYS`]) come after them.
pub const OWN_KEYS: &[&str] = &[
    "client_id",
    "entities",
    "heartbeat_interval",
    "state_interval",
    "log_level",
    "queue_depth",
    "sim_origin",
    "server_lost_stop_after",
    "state_dir",
    "vehicle",
    "bridge_socket",
    "bridge_group",
    "bridge_mode",
    "bridge_timeout",
];
/// Flags without a value.
pub const SWITCHES: &[&str] = &["--check-config", "--help", "--version"];

pub const DEFAULT_ENTITIES: &[u32] = &[1, 2, 3];
pub const MAX_ENTITIES: usize = 64;
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(500);
pub const MIN_HEARTBEAT: Duration = Duration::from_millis(50);
pub const DEFAULT_STATE: Duration = Duration::from_millis(100);
pub const MIN_STATE: Duration = Duration::from_millis(10);
pub const DEFAULT_QUEUE_DEPTH: usize = 8;
pub const MAX_QUEUE_DEPTH: usize = 1024;
/// The shortest `server_lost_stop_after`: a broker hiccup must not pause the fleet.
pub const MIN_SERVER_LOST: Duration = Duration::from_millis(500);
/// Where the session counter is kept across restarts (systemd's `StateDirectory=rpi-client`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/rpi-client";
/// Where a bridge vehicle process connects (systemd's `RuntimeDirectory=rpi-client`).
pub const DEFAULT_BRIDGE_SOCKET: &str = "/run/rpi-client/vehicle.sock";
/// The socket's permission bits: the daemon's user and group may connect.
pub const DEFAULT_BRIDGE_MODE: u32 = 0o660;
/// A connected vehicle process that sends no state for this long is hung.
pub const DEFAULT_BRIDGE_TIMEOUT: Duration = Duration::from_secs(1);
/// Vehicles send state at least every 250 ms (docs/vehicle-bridge.md): twice that at least.
pub const MIN_BRIDGE_TIMEOUT: Duration = Duration::from_millis(500);
/// Hung detection beyond this would keep a vehicle's segments in limbo too long.
pub const MAX_BRIDGE_TIMEOUT: Duration = Duration::from_secs(60);
/// Where the group names of `bridge_group` are looked up.
pub const GROUP_FILE: &str = "/etc/group";

/// Who drives the entities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VehicleKind {
    /// The built-in simulator.
    Simulator,
    /// Vehicle processes connected to the bridge socket (docs/vehicle-bridge.md).
    Bridge,
}

impl VehicleKind {
    pub fn name(self) -> &'static str {
        match self {
            VehicleKind::Simulator => "simulator",
            VehicleKind::Bridge => "bridge",
        }
    }
}

/// The bridge socket's settings (used with `vehicle = bridge`).
#[derive(Debug, Clone, PartialEq)]
pub struct BridgeConfig {
    pub socket: String,
    /// The socket's group: the name as configured and its gid; None keeps the daemon's group.
    pub group: Option<(String, u32)>,
    /// Permission bits of the socket file.
    pub mode: u32,
    /// No state from a connected entity for this long (or no answer to a segment) = hung.
    pub timeout: Duration,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            socket: DEFAULT_BRIDGE_SOCKET.to_owned(),
            group: None,
            mode: DEFAULT_BRIDGE_MODE,
            timeout: DEFAULT_BRIDGE_TIMEOUT,
        }
    }
}

/// `name` (looked up in `group_file`, the text of /etc/group) or a numeric gid.
pub fn parse_group(value: &str, group_file: &str) -> Result<(String, u32), String> {
    let v = value.trim();
    if v.is_empty() {
        return Err("empty: a group name or number".into());
    }
    if let Ok(gid) = v.parse::<u32>() {
        return Ok((v.to_owned(), gid));
    }
    for line in group_file.lines() {
        let mut parts = line.split(':');
        if parts.next() == Some(v) {
            if let Some(gid) = parts.nth(1).and_then(|g| g.trim().parse::<u32>().ok()) {
                return Ok((v.to_owned(), gid));
            }
        }
    }
    Err(format!("no group named {v:?} in {GROUP_FILE}"))
}

/// An octal permission mode such as `0660` or `660`: read/write bits only.
pub fn parse_mode(value: &str) -> Result<u32, String> {
    let v = value.trim();
    u32::from_str_radix(v.strip_prefix("0o").unwrap_or(v), 8)
        .ok()
        .filter(|m| *m & !0o777 == 0 && *m & 0o600 == 0o600)
        .ok_or_else(|| {
            format!("{v:?}: an octal mode such as 0660 (at most 0777, owner read and write set)")
        })
}

/// Every key of the schema, in the order `--check-config` prints them.
pub fn keys() -> Vec<&'static str> {
    OWN_KEYS.iter().chain(BROKER_KEYS).copied().collect()
}

/// The effective configuration of one daemon.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub client_id: ClientId,
    /// The entities this Pi drives, in order; simulated entity `i` (0-based) starts at
    /// `sim_origin + (i * 1000, 0)`.
    pub entities: Vec<u32>,
    pub heartbeat_interval: Duration,
    /// Each entity's state is published once per interval.
    pub state_interval: Duration,
    pub log_level: LevelFilter,
    /// Segments that may wait per entity behind the one being executed.
    pub queue_depth: usize,
    /// Where the simulated entities start, mm (`x,y`): Pis of one demo or test apart.
    pub sim_origin: (i32, i32),
    /// Pause every vehicle when no server has been online for this long (None: never).
    pub server_lost_stop_after: Option<Duration>,
    /// Directory of the persisted session counter; None (`off`): the wall clock alone.
    pub state_dir: Option<String>,
    /// The built-in simulator or bridge vehicle processes.
    pub vehicle: VehicleKind,
    pub bridge: BridgeConfig,
    pub broker: BrokerConfig,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    Run(Config),
    /// `--check-config`: the config was valid; print it and exit 0.
    CheckConfig {
        config: Config,
        path: Option<String>,
    },
    Help,
    Version,
}

/// Settings while they are being applied; the client id may still come from the hostname.
#[derive(Debug, Clone)]
struct Draft {
    client_id: Option<ClientId>,
    entities: Vec<u32>,
    heartbeat_interval: Duration,
    state_interval: Duration,
    log_level: LevelFilter,
    queue_depth: usize,
    sim_origin: (i32, i32),
    server_lost_stop_after: Option<Duration>,
    state_dir: Option<String>,
    vehicle: VehicleKind,
    bridge: BridgeConfig,
    broker: BrokerConfig,
}

impl Default for Draft {
    fn default() -> Self {
        Draft {
            client_id: None,
            entities: DEFAULT_ENTITIES.to_vec(),
            heartbeat_interval: DEFAULT_HEARTBEAT,
            state_interval: DEFAULT_STATE,
            log_level: LevelFilter::Info,
            queue_depth: DEFAULT_QUEUE_DEPTH,
            sim_origin: (0, 0),
            server_lost_stop_after: None,
            state_dir: Some(DEFAULT_STATE_DIR.to_owned()),
            vehicle: VehicleKind::Simulator,
            bridge: BridgeConfig::default(),
            broker: BrokerConfig::default(),
        }
    }
}

fn duration_at_least(value: &str, min: Duration) -> Result<Duration, String> {
    let d = parse_duration(value).map_err(|e| e.to_string())?;
    if d < min {
        return Err(format!(
            "{} is too short: at least {}",
            format_duration(d),
            format_duration(min)
        ));
    }
    Ok(d)
}

/// `1,2,3`: 1 to 64 distinct `u32` entity ids.
pub fn parse_entities(value: &str) -> Result<Vec<u32>, String> {
    let mut ids = Vec::new();
    for part in value.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(format!(
                "{value:?}: empty entity id (write a comma-separated list, e.g. 1,2,3)"
            ));
        }
        let id: u32 = part
            .parse()
            .map_err(|_| format!("{part:?} is not an entity id (0..4294967295)"))?;
        if ids.contains(&id) {
            return Err(format!("entity {id} is listed twice"));
        }
        ids.push(id);
    }
    if ids.len() > MAX_ENTITIES {
        return Err(format!(
            "{} entities listed, at most {MAX_ENTITIES} are allowed",
            ids.len()
        ));
    }
    Ok(ids)
}

impl Draft {
    fn apply(&mut self, key: &str, value: &str) -> Result<(), String> {
        if let Some(r) = self.broker.apply(key, value) {
            return r;
        }
        match key {
            "client_id" => {
                self.client_id = Some(ClientId::new(value.trim()).map_err(|e| e.to_string())?);
            }
            "entities" => self.entities = parse_entities(value)?,
            "heartbeat_interval" => {
                self.heartbeat_interval = duration_at_least(value, MIN_HEARTBEAT)?;
            }
            "state_interval" => self.state_interval = duration_at_least(value, MIN_STATE)?,
            "log_level" => self.log_level = parse_level(value)?,
            "queue_depth" => {
                self.queue_depth = value
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|d| (1..=MAX_QUEUE_DEPTH).contains(d))
                    .ok_or_else(|| {
                        format!("{value:?}: must be a whole number from 1 to {MAX_QUEUE_DEPTH}")
                    })?;
            }
            "sim_origin" => self.sim_origin = parse_origin(value)?,
            "server_lost_stop_after" => {
                self.server_lost_stop_after = match value.trim() {
                    "off" => None,
                    v => Some(
                        duration_at_least(v, MIN_SERVER_LOST)
                            .map_err(|e| format!("{e} (or off)"))?,
                    ),
                };
            }
            "state_dir" => {
                self.state_dir = match value.trim() {
                    "off" => None,
                    "" => return Err("empty: a directory, or off".into()),
                    v => Some(v.to_owned()),
                };
            }
            "vehicle" => {
                self.vehicle = match value.trim() {
                    "simulator" => VehicleKind::Simulator,
                    "bridge" => VehicleKind::Bridge,
                    v => return Err(format!("{v:?}: simulator or bridge")),
                };
            }
            "bridge_socket" => {
                let v = value.trim();
                if v.is_empty() || v.len() > 100 {
                    return Err(format!(
                        "{v:?}: a socket path of 1 to 100 bytes (the kernel's limit is 107)"
                    ));
                }
                self.bridge.socket = v.to_owned();
            }
            "bridge_group" => {
                self.bridge.group = match value.trim() {
                    "" | "off" => None,
                    v => {
                        let groups = mqtt_link::daemon::read_file(GROUP_FILE).unwrap_or_default();
                        Some(parse_group(v, &groups)?)
                    }
                };
            }
            "bridge_mode" => self.bridge.mode = parse_mode(value)?,
            "bridge_timeout" => {
                let d = duration_at_least(value, MIN_BRIDGE_TIMEOUT)?;
                if d > MAX_BRIDGE_TIMEOUT {
                    return Err(format!(
                        "{} is too long: at most {}",
                        format_duration(d),
                        format_duration(MAX_BRIDGE_TIMEOUT)
                    ));
                }
                self.bridge.timeout = d;
            }
            other => return Err(format!("unknown key {other:?}")),
        }
        Ok(())
    }

    fn finish(
        self,
        hostname: impl FnOnce() -> Result<String, String>,
    ) -> Result<Config, ConfigError> {
        let client_id = match self.client_id {
            Some(id) => id,
            None => {
                let id = mqtt_link::daemon::client_id_from_hostname(hostname, str::to_owned)?;
                ClientId::new(&id)
                    .map_err(|e| ConfigError::new("client_id", "hostname", e.to_string()))?
            }
        };
        let mut broker = self.broker;
        // Pi accounts on the broker are named after the Pi.
        if broker.password_file.is_some() && broker.username.is_none() {
            broker.username = Some(client_id.as_str().to_owned());
        }
        let config = Config {
            client_id,
            entities: self.entities,
            heartbeat_interval: self.heartbeat_interval,
            state_interval: self.state_interval,
            log_level: self.log_level,
            queue_depth: self.queue_depth,
            sim_origin: self.sim_origin,
            server_lost_stop_after: self.server_lost_stop_after,
            state_dir: self.state_dir,
            vehicle: self.vehicle,
            bridge: self.bridge,
            broker,
        };
        config.broker.check()?;
        Ok(config)
    }
}

/// The hostname (shared with the server, which derives its default client id from it too).
pub use mqtt_link::daemon::system_hostname;

/// The schema for `keys` (see [`keys`]).
/// `x,y` in mm, each within +-1,000,000,000 (so that positions stay far from i32's ends).
fn parse_origin(value: &str) -> Result<(i32, i32), String> {
    const LIMIT: i32 = 1_000_000_000;
    let bad = || format!("{value:?}: must be x,y in mm, e.g. 0,5000 (each within +-{LIMIT})");
    let (x, y) = value.trim().split_once(',').ok_or_else(bad)?;
    let num = |v: &str| {
        v.trim()
            .parse::<i32>()
            .ok()
            .filter(|n| (-LIMIT..=LIMIT).contains(n))
    };
    Ok((num(x).ok_or_else(bad)?, num(y).ok_or_else(bad)?))
}

pub fn schema<'a>(keys: &'a [&'a str]) -> Schema<'a> {
    Schema {
        keys,
        switches: SWITCHES,
        env_prefix: ENV_PREFIX,
        default_path: DEFAULT_PATH,
    }
}

/// Reads the command line, the environment and the config file. `--help` and `--version`
/// win over everything else (even a broken config file).
pub fn parse(
    args: &[String],
    env: &[(String, String)],
    read_file: impl FnOnce(&str) -> std::io::Result<String>,
    hostname: impl FnOnce() -> Result<String, String>,
) -> Result<Command, ConfigError> {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        return Ok(Command::Help);
    }
    if args.iter().any(|a| a == "--version" || a == "-V") {
        return Ok(Command::Version);
    }
    let keys = keys();
    let mut draft = Draft::default();
    let loaded = conf::load(&schema(&keys), args, env, read_file, |k, v| {
        draft.apply(k, v)
    })?;
    let config = draft.finish(hostname)?;
    if loaded.switches.iter().any(|s| s == "--check-config") {
        Ok(Command::CheckConfig {
            config,
            path: loaded.config_path,
        })
    } else {
        Ok(Command::Run(config))
    }
}

/// [`parse`] with this process's arguments, environment, files and hostname.
pub fn from_process() -> Result<Command, ConfigError> {
    let input = mqtt_link::daemon::ProcessInput::read();
    parse(
        &input.args,
        &input.env,
        mqtt_link::daemon::read_file,
        system_hostname,
    )
}

/// `--help` text.
pub fn help() -> String {
    let keys = keys();
    format!(
        "rpi-client {} - the Raspberry Pi fleet daemon\n\n\
         Usage: rpi-client [--config PATH] [--check-config] [--KEY VALUE ...]\n\n\
         Settings come from the config file ({DEFAULT_PATH} unless --config PATH or\n\
         {ENV_PREFIX}CONFIG names one), then {ENV_PREFIX}<KEY> environment variables, then flags.\n\
         Durations are written like 500ms, 1.5s, 2m.\n\n\
         Settings:\n{}\n\
         Switches:\n  --check-config   validate, print the effective config and exit\n  \
         --help           this text\n  --version        the version\n\n\
         Exit codes: 0 ok, 1 runtime failure, 2 bad configuration.\n",
        env!("CARGO_PKG_VERSION"),
        conf::help_lines(&schema(&keys))
    )
}

impl Config {
    /// The effective settings as `key = value` lines: a valid config file for this daemon.
    pub fn describe(&self) -> String {
        let entities: Vec<String> = self.entities.iter().map(|e| e.to_string()).collect();
        format!(
            "client_id = {}\nentities = {}\nheartbeat_interval = {}\nstate_interval = {}\n\
             log_level = {}\nqueue_depth = {}\nsim_origin = {},{}\nserver_lost_stop_after = {}\n\
             state_dir = {}\n\
             vehicle = {}\nbridge_socket = {}\nbridge_group = {}\nbridge_mode = {:04o}\n\
             bridge_timeout = {}\n{}",
            self.client_id,
            entities.join(","),
            format_duration(self.heartbeat_interval),
            format_duration(self.state_interval),
            self.log_level.to_string().to_ascii_lowercase(),
            self.queue_depth,
            self.sim_origin.0,
            self.sim_origin.1,
            self.server_lost_stop_after
                .map_or_else(|| "off".to_owned(), format_duration),
            self.state_dir.as_deref().unwrap_or("off"),
            self.vehicle.name(),
            self.bridge.socket,
            self.bridge
                .group
                .as_ref()
                .map_or("off", |(name, _)| name.as_str()),
            self.bridge.mode,
            format_duration(self.bridge.timeout),
            self.broker.describe()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn parse_with(
        a: &[&str],
        env: &[(&str, &str)],
        file: Option<&str>,
        host: &str,
    ) -> Result<Command, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let host = host.to_owned();
        parse(
            &args(a),
            &env,
            |_| match file {
                Some(t) => Ok(t.to_owned()),
                None => Err(std::io::Error::new(std::io::ErrorKind::NotFound, "absent")),
            },
            move || Ok(host),
        )
    }

    fn run_config(c: Command) -> Config {
        match c {
            Command::Run(c) => c,
            other => panic!("expected Run, got {other:?}"),
        }
    }

    #[test]
    fn defaults_and_hostname_id() {
        let c = run_config(parse_with(&[], &[], None, "pi-7").unwrap());
        assert_eq!(c.client_id.as_str(), "pi-7");
        assert_eq!(c.entities, vec![1, 2, 3]);
        assert_eq!(c.heartbeat_interval, Duration::from_millis(500));
        assert_eq!(c.state_interval, Duration::from_millis(100));
        assert_eq!(c.log_level, LevelFilter::Info);
        assert_eq!(c.queue_depth, 8);
        assert_eq!(c.server_lost_stop_after, None);
        assert_eq!(c.state_dir.as_deref(), Some(DEFAULT_STATE_DIR));
        assert_eq!(c.broker.addrs.to_string(), "localhost");
        assert_eq!(c.broker.addrs.first().port_or_default(false), 1883);
    }

    #[test]
    fn every_key_in_every_spelling() {
        let file = "client_id = file-id\nentities = 4, 5\nheartbeat_interval = 1.5s\n\
                    state_interval = 50ms\nlog_level = debug\nqueue_depth = 3\nsim_origin = -250, 4000\n\
                    broker = broker.lan:1884\nkeep_alive = 10s\n";
        let c = run_config(
            parse_with(
                &["--client-id", "flag-id", "--entities=9"],
                &[
                    ("RPI_CLIENT_STATE_INTERVAL", "20ms"),
                    ("RPI_CLIENT_ENTITIES", "7,8"),
                ],
                Some(file),
                "host",
            )
            .unwrap(),
        );
        assert_eq!(c.client_id.as_str(), "flag-id");
        assert_eq!(c.entities, vec![9]);
        assert_eq!(c.heartbeat_interval, Duration::from_millis(1500));
        assert_eq!(c.state_interval, Duration::from_millis(20));
        assert_eq!(c.log_level, LevelFilter::Debug);
        assert_eq!(c.queue_depth, 3);
        assert_eq!(c.sim_origin, (-250, 4000));
        assert_eq!(c.broker.addrs.to_string(), "broker.lan:1884");
        assert_eq!(c.broker.keep_alive, Duration::from_secs(10));
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases: &[(&str, &str)] = &[
            (
                "heartbeat_interval = 500\n",
                "heartbeat_interval: bad duration",
            ),
            (
                "heartbeat_interval = 10ms\n",
                "heartbeat_interval: 10ms is too short",
            ),
            ("state_interval = 0s\n", "state_interval: 0s is too short"),
            ("entities = 1,1\n", "entities: entity 1 is listed twice"),
            ("entities = \n", "entities: \"\": empty entity id"),
            ("entities = 1,x\n", "entities: \"x\" is not an entity id"),
            ("queue_depth = 0\n", "queue_depth: \"0\": must be"),
            ("sim_origin = 5\n", "sim_origin: \"5\": must be x,y in mm"),
            (
                "sim_origin = 1,x\n",
                "sim_origin: \"1,x\": must be x,y in mm",
            ),
            (
                "sim_origin = 0,2000000000\n",
                "sim_origin: \"0,2000000000\": must be",
            ),
            (
                "server_lost_stop_after = 100ms\n",
                "server_lost_stop_after: 100ms is too short: at least 500ms (or off)",
            ),
            ("state_dir = \n", "state_dir: empty"),
            ("log_level = loud\n", "log_level: unknown log level"),
            ("client_id = a/b\n", "client_id: client id has '/'"),
            ("bogus = 1\n", "bogus: unknown key"),
            ("broker = host:0\n", "broker: "),
            (
                "vehicle = robot\n",
                "vehicle: \"robot\": simulator or bridge",
            ),
            ("bridge_socket = \n", "bridge_socket: \"\": a socket path"),
            (
                "bridge_mode = 0888\n",
                "bridge_mode: \"0888\": an octal mode",
            ),
            (
                "bridge_mode = 0060\n",
                "bridge_mode: \"0060\": an octal mode",
            ),
            (
                "bridge_timeout = 10ms\n",
                "bridge_timeout: 10ms is too short",
            ),
            ("bridge_timeout = 2m\n", "bridge_timeout: 2m is too long"),
            (
                "bridge_group = no-such-group-here\n",
                "bridge_group: no group named \"no-such-group-here\"",
            ),
        ];
        for (file, want) in cases {
            let e = parse_with(&[], &[], Some(file), "pi").unwrap_err();
            assert!(e.to_string().contains(want), "{file:?}: {e}");
            assert!(
                e.to_string().starts_with("/etc/rpi-client/config.conf:1: "),
                "{e}"
            );
        }
        let many: Vec<String> = (0..65).map(|i| i.to_string()).collect();
        let e = parse_with(&["--entities", &many.join(",")], &[], None, "pi").unwrap_err();
        assert!(e.to_string().contains("65 entities listed"), "{e}");
    }

    #[test]
    fn bridge_keys() {
        let c = run_config(parse_with(&[], &[], None, "pi").unwrap());
        assert_eq!(c.vehicle, VehicleKind::Simulator);
        assert_eq!(c.bridge, BridgeConfig::default());
        let c = run_config(
            parse_with(
                &["--vehicle", "bridge", "--bridge-mode", "0600"],
                &[
                    ("RPI_CLIENT_BRIDGE_SOCKET", "/tmp/v.sock"),
                    ("RPI_CLIENT_BRIDGE_GROUP", "1234"),
                ],
                Some("bridge_timeout = 2.5s\n"),
                "pi",
            )
            .unwrap(),
        );
        assert_eq!(c.vehicle, VehicleKind::Bridge);
        assert_eq!(c.bridge.socket, "/tmp/v.sock");
        assert_eq!(c.bridge.group, Some(("1234".to_owned(), 1234)));
        assert_eq!(c.bridge.mode, 0o600);
        assert_eq!(c.bridge.timeout, Duration::from_millis(2500));
        let text = c.describe();
        assert!(text.contains("bridge_mode = 0600\n"), "{text}");
        let again = run_config(parse_with(&[], &[], Some(&text), "other").unwrap());
        assert_eq!(again.bridge, c.bridge);
        let groups = "root:x:0:\nwheel:x:10:a,b\nfleet:x:1001:\n";
        assert_eq!(parse_group("fleet", groups), Ok(("fleet".to_owned(), 1001)));
        assert!(parse_group("nope", groups).is_err());
        assert_eq!(parse_mode("660"), Ok(0o660));
    }

    #[test]
    fn invalid_hostname_fails_with_a_hint() {
        let e = parse_with(&[], &[], None, "my pi").unwrap_err();
        assert_eq!(e.key, "client_id");
        let s = e.to_string();
        assert!(
            s.contains("hostname \"my pi\" is not a valid client id"),
            "{s}"
        );
        assert!(s.contains("--client-id"), "{s}");
        // An explicit id does not need the hostname at all.
        let c = run_config(parse_with(&["--client-id", "pi-1"], &[], None, "my pi").unwrap());
        assert_eq!(c.client_id.as_str(), "pi-1");
        let e = parse(
            &[],
            &[],
            |_| Err(std::io::ErrorKind::NotFound.into()),
            || Err("no hostname".to_string()),
        )
        .unwrap_err();
        assert!(e.to_string().contains("no hostname"), "{e}");
    }

    #[test]
    fn username_defaults_to_client_id_with_a_password_file() {
        let dir = std::env::temp_dir().join(format!("rpi-client-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pw = dir.join("pw");
        std::fs::write(&pw, "secret\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        let pw = pw.to_str().unwrap();
        let c = run_config(
            parse_with(
                &["--client-id", "pi-3", "--password-file", pw],
                &[],
                None,
                "h",
            )
            .unwrap(),
        );
        assert_eq!(c.broker.username.as_deref(), Some("pi-3"));
        let c = run_config(
            parse_with(
                &["--password-file", pw, "--username", "ops"],
                &[],
                None,
                "pi-3",
            )
            .unwrap(),
        );
        assert_eq!(c.broker.username.as_deref(), Some("ops"));
        let c = run_config(parse_with(&[], &[], None, "pi-3").unwrap());
        assert_eq!(c.broker.username, None);
        let e = parse_with(&["--password-file", "/nonexistent/pw"], &[], None, "pi").unwrap_err();
        assert_eq!(e.key, "password_file");
        assert!(e.to_string().contains("/nonexistent/pw"), "{e}");
        let e = parse_with(&["--tls-ca", "/nonexistent/ca.pem"], &[], None, "pi").unwrap_err();
        assert_eq!(e.key, "tls_ca");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn describe_round_trips() {
        let c = run_config(
            parse_with(
                &[
                    "--entities",
                    "5,3",
                    "--state-interval",
                    "1.5s",
                    "--log-level",
                    "WARN",
                ],
                &[],
                None,
                "pi-9",
            )
            .unwrap(),
        );
        let text = c.describe();
        assert!(text.contains("entities = 5,3\n"), "{text}");
        assert!(text.contains("log_level = warn\n"), "{text}");
        for key in keys() {
            assert!(
                text.contains(&format!("\n{key} = ")) || text.starts_with(key),
                "{key}"
            );
        }
        let again = run_config(parse_with(&[], &[], Some(&text), "other").unwrap());
        assert_eq!(again, c);
    }

    #[test]
    fn help_version_and_check_switches() {
        assert!(matches!(
            parse_with(&["--help"], &[], Some("bad"), "h"),
            Ok(Command::Help)
        ));
        assert!(matches!(
            parse_with(&["-V"], &[], None, "h"),
            Ok(Command::Version)
        ));
        assert!(matches!(
            parse_with(&["--check-config"], &[], Some("client_id = x\n"), "h"),
            Ok(Command::CheckConfig { path: Some(_), .. })
        ));
        assert!(help().contains("--heartbeat-interval VALUE"));
        assert!(help().contains("RPI_CLIENT_QUEUE_DEPTH"));
    }
}
