//! fleet-chaos: the fault and abuse suite. The scenarios in `tests/` (one file each) run the
//! real `rpi-client` and `mqtt-server` binaries against a real mosquitto and break things:
//! broker restarts and outages, silent network loss, duplicate client ids, server restarts,
//! malformed floods. Each prints a `CHAOS scenario=...` line with its measured recovery time
//! ([`report`]). Short scenarios run in `cargo test`; long ones are `#[ignore]`d and run by
//! `scripts/chaos.sh` (`make chaos`). See docs/reliability.md.
//!
//! Helpers: [`bins`] (build and find the daemons), [`daemons`] (start them), [`table`] (the
//! server's status table), [`watch`] (everything the Pis publish, and double-execution
//! checks), [`garbage`] (labelled malformed input), [`netns`] (a cuttable link, root only),
//! [`rss`] (memory sampling), [`summary`] (the server's shutdown counters),
//! [`report`] (result lines).

pub mod bins;
pub mod daemons;
pub mod garbage;
pub mod netns;
pub mod report;
pub mod rss;
pub mod summary;
pub mod table;
pub mod watch;

pub use daemons::{count_lines, spawn_pi, spawn_server};
pub use report::{median, ms, report};
pub use rss::RssSampler;
pub use table::{Table, next_table, skip_backlog, wait_table};
pub use watch::{Record, Watch};
