//! The fleet's MQTT transport and the daemon plumbing both daemons share: connection
//! settings and TLS ([`broker`]), the event-loop thread that keeps a connection alive
//! ([`link`]) and what it does on a schedule ([`periodic`]), the connection-gated publisher
//! ([`publisher`]), named worker threads that
//! announce their exit ([`worker`]), the session counter kept across restarts
//! ([`session_store`]), the "(N not logged)" of rate-limited logs ([`held`]), and
//! what every daemon's `main` needs: logging, signals, config loading ([`daemon`]).
//!
//! Invariant: this is the only crate besides the daemons' `main`s that touches the network;
//! the daemons see MQTT only as [`LinkEvent`]s in and `rumqttc::Client` publishes out.

pub mod broker;
pub mod daemon;
pub mod held;
pub mod link;
pub mod periodic;
pub mod publisher;
pub mod session_store;
pub mod worker;

pub use broker::{
    BROKER_KEYS, BrokerAddr, BrokerAddrs, BrokerConfig, MAX_BROKERS, SetupError, TlsFiles,
};
pub use held::Held;
pub use link::{BACKOFF_MAX, Link, LinkConfig, LinkEvent, SUBSCRIBE_QOS, WillFn};
pub use periodic::Periodic;
pub use publisher::{NotSent, Outgoing, Publisher};
pub use rumqttc::{Client, ClientError, LastWill, QoS};
pub use worker::Worker;
