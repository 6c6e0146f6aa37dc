#!/usr/bin/env bash
# Checks that the whole workspace (lock file included) builds with the oldest supported
# compiler, rust-version 1.85: Debian bookworm's rustc-web, the Pi cross toolchain.
# Uses a rustup toolchain 1.85 when there is one, else /usr/bin/rustc from rustc-web
# (scripts/cross.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
want=$(sed -n 's/^rust-version = "\([0-9.]*\)"/\1/p' Cargo.toml | head -n 1)
if command -v rustup >/dev/null 2>&1 && rustup run "$want" rustc --version >/dev/null 2>&1; then
  rustc_bin=$(rustup which --toolchain "$want" rustc)
elif [ -x /usr/bin/rustc ] && /usr/bin/rustc --version | grep -q "^rustc $want"; then
  rustc_bin=/usr/bin/rustc
else
  echo "msrv: no rustc $want found: run scripts/cross.sh (installs Debian's rustc-web $want)" >&2
  exit 1
fi
echo "msrv: checking the workspace with $($rustc_bin --version)" >&2
RUSTC=$rustc_bin cargo check --locked --workspace --all-targets --target-dir target/msrv
echo "msrv: the workspace builds with rust $want"
