//! Benchmark tools for the fleet: a simulator that plays many Pis from one process
//! ([`sim`], binary `fleet-sim`) speaking the real protocol, and the benchmark runner behind
//! `make bench` ([`bench`], binary `fleet-bench`). Not shipped to Pis or servers.

pub mod bench;
pub mod config;
pub mod motion;
pub mod pi;
pub mod sim;
pub mod stats;

pub use config::SimConfig;
pub use sim::{Summary, run};
