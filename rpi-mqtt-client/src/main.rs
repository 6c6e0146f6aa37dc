//! The `rpi-client` binary: reads the configuration (exit 2 naming the problem), sets up
//! logging and signal handling, and runs the daemon until SIGINT/SIGTERM (exit 0).

use std::process::ExitCode;

use mqtt_link::daemon::{error_chain, init_logging, shutdown_on_signals};
use rpi_client::config::{self, Command};

fn main() -> ExitCode {
    let command = match config::from_process() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rpi-client: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let config = match command {
        Command::Help => {
            print!("{}", config::help());
            return ExitCode::SUCCESS;
        }
        Command::Version => {
            println!("rpi-client {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Command::CheckConfig { config, path } => {
            println!(
                "# rpi-client effective configuration (config file: {})",
                path.as_deref().unwrap_or("none")
            );
            print!("{}", config.describe());
            return ExitCode::SUCCESS;
        }
        Command::Run(config) => config,
    };
    init_logging(config.log_level);
    let shutdown = match shutdown_on_signals() {
        Ok(rx) => rx,
        Err(e) => {
            eprintln!("rpi-client: cannot handle signals: {}", error_chain(&e));
            return ExitCode::from(1);
        }
    };
    match rpi_client::run(config, shutdown) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rpi-client: fatal: {}", error_chain(&e));
            ExitCode::from(1)
        }
    }
}
