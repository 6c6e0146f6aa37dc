//! The simulator's settings: schema for `common::conf` (flags `--pis`, env `FLEET_SIM_PIS`),
//! parsing of each value with a message naming what is wrong, and the effective settings as
//! `key = value` lines.

use std::path::PathBuf;
use std::time::Duration;

use common::conf::Schema;
use common::duration::{format_duration, parse_duration};
use common::topic::validate_client_id;
use log::LevelFilter;
use mqtt_link::BrokerAddr;

pub const ENV_PREFIX: &str = "FLEET_SIM_";

pub const KEYS: &[&str] = &[
    "broker",
    "pis",
    "entities",
    "state_interval",
    "heartbeat_interval",
    "duration",
    "id_prefix",
    "json",
    "threads",
    "ramp",
    "segment_time",
    "keep_alive",
    "progress_interval",
    "log_level",
];

pub const SWITCHES: &[&str] = &["--help", "-h", "--version", "-V", "--check-config"];

pub fn schema() -> Schema<'static> {
    Schema {
        keys: KEYS,
        switches: SWITCHES,
        env_prefix: ENV_PREFIX,
        // A tool: no config file unless `--config` names one.
        default_path: "",
    }
}

/// Everything one simulator run needs.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// `host:port` of the broker (plain TCP; the simulator does not do TLS).
    pub broker: BrokerAddr,
    pub pis: usize,
    /// Entities per Pi; entity ids are `1..=entities`.
    pub entities: u32,
    /// One StateReport per entity per interval (100 ms = 10 Hz, as the real client).
    pub state_interval: Duration,
    pub heartbeat_interval: Duration,
    /// How long the Pis publish, counted from the moment every Pi had its turn to connect.
    pub duration: Duration,
    /// Client ids are `{id_prefix}-{n}`, n from 0.
    pub id_prefix: String,
    /// Where to write the summary as JSON.
    pub json: Option<PathBuf>,
    /// OS threads, each running a current-thread Tokio runtime for its share of the Pis.
    pub threads: usize,
    /// Connections are spread evenly over this time, so the broker is not hit all at once.
    pub ramp: Duration,
    /// A segment is `Completed` this long after it starts (the entity moves linearly).
    pub segment_time: Duration,
    pub keep_alive: Duration,
    /// How often a progress line goes to stdout; zero turns it off.
    pub progress_interval: Duration,
    pub log_level: LevelFilter,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            broker: BrokerAddr {
                host: "127.0.0.1".into(),
                port: Some(1883),
            },
            pis: 10,
            entities: 4,
            state_interval: Duration::from_millis(100),
            heartbeat_interval: Duration::from_millis(500),
            duration: Duration::from_secs(10),
            id_prefix: format!("sim-{}", run_tag()),
            json: None,
            threads: 1,
            ramp: Duration::from_secs(2),
            segment_time: Duration::from_millis(500),
            keep_alive: Duration::from_secs(5),
            progress_interval: Duration::from_secs(1),
            log_level: LevelFilter::Info,
        }
    }
}

/// A short tag that differs between runs (seconds since the epoch in base 36, last 5 digits),
/// so ids of two runs against one broker do not collide.
fn run_tag() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut n = secs ^ u64::from(std::process::id());
    let mut s = Vec::new();
    for _ in 0..5 {
        s.push(digits[(n % 36) as usize]);
        n /= 36;
    }
    s.reverse();
    String::from_utf8(s).unwrap_or_default()
}

fn positive_duration(v: &str) -> Result<Duration, String> {
    let d = parse_duration(v).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("must be more than zero".into());
    }
    Ok(d)
}

fn count(v: &str, min: usize, max: usize) -> Result<usize, String> {
    let n: usize = v
        .trim()
        .parse()
        .map_err(|_| format!("{v:?} is not a whole number"))?;
    if !(min..=max).contains(&n) {
        return Err(format!("must be {min}..={max}"));
    }
    Ok(n)
}

impl SimConfig {
    /// Applies one `key = value`.
    pub fn apply(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "broker" => self.broker = BrokerAddr::parse(value)?,
            "pis" => self.pis = count(value, 1, 100_000)?,
            "entities" => self.entities = count(value, 1, 1000)? as u32,
            "state_interval" => self.state_interval = positive_duration(value)?,
            "heartbeat_interval" => self.heartbeat_interval = positive_duration(value)?,
            "duration" => self.duration = positive_duration(value)?,
            "id_prefix" => {
                // The longest id is prefix + '-' + up to 6 digits.
                if value.len() > 56 {
                    return Err("at most 56 characters".into());
                }
                validate_client_id(value).map_err(|e| e.to_string())?;
                self.id_prefix = value.to_owned();
            }
            "json" => {
                self.json = if value.is_empty() {
                    None
                } else {
                    Some(PathBuf::from(value))
                }
            }
            "threads" => self.threads = count(value, 1, 64)?,
            "ramp" => self.ramp = parse_duration(value).map_err(|e| e.to_string())?,
            "segment_time" => self.segment_time = positive_duration(value)?,
            "keep_alive" => {
                let d = positive_duration(value)?;
                if d < Duration::from_secs(1) {
                    return Err("at least 1s".into());
                }
                self.keep_alive = d;
            }
            "progress_interval" => {
                self.progress_interval = parse_duration(value).map_err(|e| e.to_string())?
            }
            "log_level" => self.log_level = mqtt_link::daemon::parse_level(value)?,
            other => return Err(format!("unknown key {other:?}")),
        }
        Ok(())
    }

    /// The client id of Pi number `n`.
    pub fn client_id(&self, n: usize) -> String {
        format!("{}-{n}", self.id_prefix)
    }

    /// Messages per second the schedule asks for: states, heartbeats, and both together.
    pub fn offered_rates(&self) -> (f64, f64) {
        let pis = self.pis as f64;
        let states = pis * f64::from(self.entities) / self.state_interval.as_secs_f64();
        let heartbeats = pis / self.heartbeat_interval.as_secs_f64();
        (states, heartbeats)
    }

    /// The effective settings as `key = value` lines (a valid config file).
    pub fn describe(&self) -> String {
        let d = format_duration;
        format!(
            "broker = {}\npis = {}\nentities = {}\nstate_interval = {}\nheartbeat_interval = {}\n\
             duration = {}\nid_prefix = {}\njson = {}\nthreads = {}\nramp = {}\n\
             segment_time = {}\nkeep_alive = {}\nprogress_interval = {}\nlog_level = {}\n",
            self.broker,
            self.pis,
            self.entities,
            d(self.state_interval),
            d(self.heartbeat_interval),
            d(self.duration),
            self.id_prefix,
            self.json
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            self.threads,
            d(self.ramp),
            d(self.segment_time),
            d(self.keep_alive),
            d(self.progress_interval),
            self.log_level.as_str().to_ascii_lowercase(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(args: &[&str]) -> Result<SimConfig, common::ConfigError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let mut c = SimConfig::default();
        common::conf::load(
            &schema(),
            &args,
            &[],
            |_| Err(std::io::ErrorKind::NotFound.into()),
            |k, v| c.apply(k, v),
        )?;
        Ok(c)
    }

    #[test]
    fn flags_parse_and_describe_round_trips() {
        let c = load(&[
            "--broker",
            "127.0.0.1:1999",
            "--pis",
            "1000",
            "--entities=4",
            "--state-interval",
            "100ms",
            "--duration",
            "30s",
            "--id-prefix",
            "bench",
        ])
        .unwrap();
        assert_eq!(c.pis, 1000);
        assert_eq!(c.client_id(7), "bench-7");
        let (s, h) = c.offered_rates();
        assert_eq!((s.round(), h.round()), (40_000.0, 2_000.0));
        // The description is itself a valid config.
        let mut again = SimConfig::default();
        for line in c.describe().lines() {
            let (k, v) = line.split_once(" = ").unwrap();
            again.apply(k, v).unwrap();
        }
        assert_eq!(again.describe(), c.describe());
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = load(&["--pis", "0"]).unwrap_err();
        assert!(e.to_string().contains("pis"), "{e}");
        let e = load(&["--state-interval", "0s"]).unwrap_err();
        assert!(e.to_string().contains("state_interval"), "{e}");
        let e = load(&["--id-prefix", "a/b"]).unwrap_err();
        assert!(e.to_string().contains("id_prefix"), "{e}");
        assert!(load(&["--nope", "1"]).is_err());
    }
}
