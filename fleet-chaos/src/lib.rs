//! fleet-chaos: the fault and abuse suite. The scenarios in `tests/` (one file each) run the
//! real `rpi-client` and `mqtt-server` binaries against a real mosquitto and break things:
//! broker restarts and outages, silent network loss, duplicate client ids, server restarts,
//! malformed floods. Each prints a `CHAOS scenario=...` line with its measured recovery time
//! ([`report`]). Short scenarios run in `cargo test`; long ones are `#[ignore]`d and run by
//! `scripts/chaos.sh` (`make chaos`). See docs/reliability.md.
//!
//! Helpers: [`table`] (the server's status table), [`watch`] (everything the Pis publish, and
//! double-execution checks), [`garbage`] (labelled malformed input), [`netns`] (a cuttable
//! link, root only), [`summary`] (the server's shutdown counters), [`report`] (result lines).
//! Building and starting the daemons and sampling memory are [`testkit`]'s.

pub mod garbage;
pub mod netns;
pub mod report;
pub mod summary;
pub mod table;
pub mod watch;

pub use report::{median, ms, report};
pub use table::{Table, next_table, skip_backlog, wait_table};
pub use testkit::daemons::{count_lines, spawn_pi, spawn_server};
pub use testkit::rss::{self, RssSampler};
pub use watch::{Record, Watch};
