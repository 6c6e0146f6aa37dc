//! The server's status table, read from its stdout: which Pis are active (with heartbeat age,
//! entities and each Pi's raw line, for markers a scenario looks for) and which are offline
//! (with the reason). The parser and readers are [`testkit::table`]'s.

pub use testkit::table::{
    ActiveRow, EntityRow, Table, next_table, parse, skip_backlog, wait_table,
};
