//! `fleet-sim`: plays N Pis with E entities each against a broker. Thin: settings, logging,
//! signals, then `fleet_sim::run`.

use std::process::ExitCode;

use fleet_sim::config::{self, SimConfig};
use mqtt_link::daemon;

const USAGE: &str = "Usage: fleet-sim [--config FILE] [options]

Plays --pis simulated Raspberry Pis, each with its own MQTT connection, --entities entities,
a heartbeat every --heartbeat-interval and a state report per entity every --state-interval,
answering segments like the real client. Prints progress once a second, warns when it falls
behind its schedule, and writes a summary (--json PATH).

Options (flag, environment variable, config file key):
";

fn main() -> ExitCode {
    let mut cfg = SimConfig::default();
    let schema = config::schema();
    let input = daemon::ProcessInput::read();
    let loaded = match common::conf::load(
        &schema,
        &input.args,
        &input.env,
        daemon::read_file,
        |k, v| cfg.apply(k, v),
    ) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("fleet-sim: {e}");
            return ExitCode::from(2);
        }
    };
    let has = |s: &str| loaded.switches.iter().any(|x| x == s);
    if has("--help") || has("-h") {
        print!("{USAGE}{}", common::conf::help_lines(&schema));
        return ExitCode::SUCCESS;
    }
    if has("--version") || has("-V") {
        println!("fleet-sim {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    if has("--check-config") {
        print!("{}", cfg.describe());
        return ExitCode::SUCCESS;
    }
    daemon::init_logging(cfg.log_level);
    let shutdown = match daemon::shutdown_on_signals() {
        Ok(rx) => rx,
        Err(e) => {
            eprintln!(
                "fleet-sim: cannot install signal handlers: {}",
                daemon::error_chain(&e)
            );
            return ExitCode::FAILURE;
        }
    };
    let json = cfg.json.clone();
    let summary = fleet_sim::run(cfg, shutdown);
    for line in summary.lines() {
        println!("{line}");
    }
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&summary).unwrap_or_default();
        if let Err(e) = std::fs::write(&path, text + "\n") {
            eprintln!("fleet-sim: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    println!("phase done");
    ExitCode::SUCCESS
}
