//! The `mqtt-server` binary: reads the configuration (exit 2 naming the bad setting), sets up
//! logging and signals, and runs [`mqtt_server::run`] until SIGINT/SIGTERM (exit 0).

use std::process::exit;

use mqtt_link::daemon::{error_chain, init_logging, shutdown_on_signals};
use mqtt_server::{Command, ServerConfig};

fn main() {
    let cmd = ServerConfig::from_process().unwrap_or_else(|e| {
        eprintln!("mqtt-server: {e}");
        exit(2);
    });
    let cfg = match cmd {
        Command::Help => {
            print!("{}", mqtt_server::config::usage());
            exit(0);
        }
        Command::Version => {
            println!("mqtt-server {}", env!("CARGO_PKG_VERSION"));
            exit(0);
        }
        Command::CheckConfig(cfg) => {
            if let Err(e) = cfg.validate() {
                eprintln!("mqtt-server: {e}");
                exit(2);
            }
            print!("{}", cfg.describe());
            exit(0);
        }
        Command::Run(cfg) => cfg,
    };
    if let Err(e) = cfg.validate() {
        eprintln!("mqtt-server: {e}");
        exit(2);
    }
    init_logging(cfg.log_level);
    let shutdown = shutdown_on_signals().unwrap_or_else(|e| {
        eprintln!("mqtt-server: cannot install signal handlers: {e}");
        exit(1);
    });
    if let Err(e) = mqtt_server::run(cfg, shutdown) {
        eprintln!("mqtt-server: {}", error_chain(&e));
        exit(1);
    }
}
