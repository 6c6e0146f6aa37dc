//! Shared helpers of the fleet's system-level tests (this crate's `tests/`, and the chaos tests
//! to come): the production broker built from the project's own config, scripts and freshly
//! generated certificates ([`prod_broker`]), the project's shell scripts ([`scripts`]), external
//! tools and bounded commands ([`tools`]), one-shot connection attempts that tell accepted,
//! refused and failed apart ([`connect`]), message fences ([`fence`]), forged fleet messages
//! ([`forge`]), and the mqtt-server status table on stdout ([`status_table`]).
//!
//! Tests never skip: a missing tool (mosquitto, openssl, mosquitto_passwd, systemd-analyze)
//! is a failure whose message says which package to install.

pub mod connect;
pub mod fence;
pub mod forge;
pub mod prod_broker;
pub mod scripts;
pub mod status_table;
pub mod tools;

pub use connect::{ConnectOutcome, Session, try_connect};
pub use fence::fence;
pub use prod_broker::{Listener, PI_A, PI_B, Ports, ProdBroker, SERVER_USER, TLS_HOST};

use std::path::PathBuf;

/// The repository's root directory (the workspace root, where `scripts/` and `mosquitto/` are).
pub fn repo_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent()
        .expect("fleet-tests lives one level below the repository root")
        .to_path_buf()
}
