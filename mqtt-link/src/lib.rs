//! The fleet's MQTT transport, shared by both daemons: connection settings and TLS
//! ([`broker`]), the event-loop thread that keeps a connection alive ([`link`]), and what
//! every daemon's `main` needs: logging, signals, config loading ([`daemon`]).
//!
//! Invariant: this is the only crate besides the daemons' `main`s that touches the network;
//! the daemons see MQTT only as [`LinkEvent`]s in and `rumqttc::Client` publishes out.

pub mod broker;
pub mod daemon;
pub mod link;

pub use broker::{BROKER_KEYS, BrokerAddr, BrokerConfig, SetupError, TlsFiles};
pub use link::{Link, LinkConfig, LinkEvent, WillFn};
pub use rumqttc::{Client, ClientError, LastWill, QoS};
