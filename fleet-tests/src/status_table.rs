//! The mqtt-server status table as the tests read it from the daemon's stdout: the parser and
//! readers of [`testkit::table`] (format in mqtt-server/src/table.rs). `wait_table` here is
//! [`testkit::table::wait_table_or_last`]: its Err carries the last table read.

pub use testkit::table::{
    ActiveRow, EntityRow, Table, next_table, parse, try_parse, wait_table_or_last as wait_table,
};
