# Entry points. `make demo` and `make test` work on a fresh Debian/Ubuntu machine with only
# Rust and make: missing system packages are installed by scripts/install-deps.sh.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: help deps demo cluster-demo test lint build release bench cross msrv chaos fuzz clean

help:
	@echo "make demo    broker + server + two simulated Pis, live fleet table (Ctrl-C stops)"
	@echo "make cluster-demo  the demo on a 3-node NATS cluster (MQTT), Pis spread over the nodes"
	@echo "make test    fmt check, clippy -D warnings, the whole test suite (real mosquitto)"
	@echo "make lint    fmt check and clippy only"
	@echo "make release optimised binaries in target/release"
	@echo "make bench   benchmarks: figures in bench-out/ and docs/performance.md"
	@echo "make cross   rpi-client for armv7 and aarch64 (+ qemu smoke test)"
	@echo "make msrv    check the workspace with rustc 1.85 (the Pi toolchain)"
	@echo "make chaos   fault scenarios that take minutes"
	@echo "make fuzz    cargo fuzz, bounded time per target"

deps:
	@scripts/install-deps.sh

demo: deps
	@scripts/demo.sh

cluster-demo: deps
	@scripts/cluster.sh --demo

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test: deps lint
	$(CARGO) test --workspace

build:
	$(CARGO) build --workspace

release:
	$(CARGO) build --release --workspace

bench: deps
	@scripts/bench.sh

cross:
	@scripts/cross.sh --smoke all

msrv:
	@scripts/msrv.sh

chaos: deps
	@scripts/chaos.sh

fuzz:
	@scripts/fuzz.sh

clean:
	$(CARGO) clean
