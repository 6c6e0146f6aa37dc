//! The benchmark runner behind `make bench` (binary `fleet-bench`).
