//! The `mqtt-server` binary: reads and checks the configuration (exit 2 naming the bad
//! setting; `--help` and `--version` whatever the config file holds), sets up logging and
//! signals, and runs [`mqtt_server::run`] until SIGINT/SIGTERM (exit 0; 1 on a runtime
//! failure).

use std::process::ExitCode;

use mqtt_link::daemon::{error_chain, init_logging, shutdown_on_signals};
use mqtt_server::{Command, ServerConfig};

fn main() -> ExitCode {
    let cfg = match ServerConfig::from_process() {
        Ok(Command::Run(cfg)) => cfg,
        Ok(Command::Help) => {
            print!("{}", mqtt_server::config::usage());
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("mqtt-server {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Command::CheckConfig(cfg)) => {
            print!("{}", cfg.describe());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("mqtt-server: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(cfg.log_level);
    let shutdown = match shutdown_on_signals() {
        Ok(rx) => rx,
        Err(e) => {
            eprintln!("mqtt-server: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    match mqtt_server::run(cfg, shutdown) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mqtt-server: {}", error_chain(&e));
            ExitCode::from(1)
        }
    }
}
