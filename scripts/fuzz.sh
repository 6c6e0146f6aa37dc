#!/usr/bin/env bash
# Runs every cargo fuzz target for a bounded time (FUZZ_SECONDS each, default 30) on nightly.
# A crash is copied to fuzz/regressions/<target>/, where `cargo test -p common` replays it
# for ever after; the script then fails.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${FUZZ_SECONDS:-30}

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: a nightly toolchain is needed (rustup toolchain install nightly)" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz from crates.io" >&2
  cargo install cargo-fuzz --locked
fi

status=0
for target in decode config; do
  mkdir -p "fuzz/corpus/$target" "fuzz/regressions/$target"
  # Seed with the known crashers so they stay fixed.
  cp -n fuzz/regressions/$target/* "fuzz/corpus/$target/" 2>/dev/null || true
  echo "fuzz: $target for ${SECONDS_PER_TARGET}s" >&2
  if ! (cd fuzz && cargo +nightly fuzz run "$target" "corpus/$target" -- \
        -max_total_time="$SECONDS_PER_TARGET" -max_len=256 -print_final_stats=1 2>&1 | tail -20); then
    status=1
  fi
  for crash in fuzz/artifacts/"$target"/crash-* fuzz/artifacts/"$target"/oom-* fuzz/artifacts/"$target"/timeout-*; do
    [ -e "$crash" ] || continue
    cp "$crash" "fuzz/regressions/$target/"
    echo "fuzz: $target found $(basename "$crash"); saved to fuzz/regressions/$target/" >&2
    status=1
  done
done
exit $status
