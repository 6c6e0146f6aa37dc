//! `fleet-bench`: the benchmark runner behind `make bench`.
fn main() {}
