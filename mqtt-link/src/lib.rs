//! The fleet's MQTT transport, shared by both daemons: connection settings and TLS
//! ([`broker`]), and the event-loop thread that keeps a connection alive ([`link`]).
//!
//! Invariant: this is the only crate besides the daemons' `main`s that touches the network;
//! the daemons see MQTT only as [`LinkEvent`]s in and `rumqttc::Client` publishes out.

pub mod broker;
pub mod link;

pub use broker::{BrokerAddr, BrokerConfig, TlsFiles};
pub use link::{Link, LinkConfig, LinkEvent, WillFn};
pub use rumqttc::{Client, ClientError, LastWill, QoS};
