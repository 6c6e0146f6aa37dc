#!/usr/bin/env bash
# `make bench`: builds the release binaries, then runs fleet-bench (fleet-sim/src/bench/):
# ingest at 100/500/1000 simulated Pis with a mosquitto_sub baseline in the same run,
# command latency (idle and under load), failure detection, the rpi-client's footprint,
# binary sizes, the codec micro-benchmark, the web map in headless Chromium, GET /api/fleet
# latency against an empty-fleet baseline, and the server's CPU and ingest ratio with 10 SSE
# viewers against the same load without them, and the instant action latency (HTTP stop ->
# stopped state at a third-party subscriber) at idle and under the 1000-Pi load, next to an
# MQTT round trip on the same broker. Writes bench-out/results.json, table.md,
# map.json, api.json, action.json and SVG plots; prints the tables. Every scenario is bounded in time
# (about 9 minutes in all, plus the builds).
#
#   BENCH_QUICK=1   short smoke run: 100 Pis, 5 s per scenario, fewer samples (~1 minute)
#   BENCH_OPT_Z=0   skip the opt-level "z" comparison build (on by default for full runs)
#   BENCH_ARGS=...  extra fleet-bench arguments, e.g. "ingest --sim-threads 2", or "cluster"
#                   (a 3-node NATS cluster against one mosquitto, docs/scaling.md; only when named)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=bench-out
mkdir -p "$OUT"

echo "bench: building release binaries" >&2
cargo build --release --workspace

# The footprint's baseline: a small C client on libmosquitto (bench/baseline/pi_baseline.c),
# built next to fleet-bench, which looks for it there.
scripts/install-deps.sh libmosquitto-dev
echo "bench: building the C baseline client" >&2
cc -O2 -Wall -o target/release/pi_baseline bench/baseline/pi_baseline.c -lmosquitto

args=(--out "$OUT")
if [ "${BENCH_QUICK:-0}" = 1 ]; then
  args+=(--quick)
elif [ "${BENCH_OPT_Z:-1}" = 1 ]; then
  # The same code with opt-level "z": sizes of the daemons, and the codec's speed.
  echo "bench: building with opt-level \"z\" into target/bench-opt-z (for comparison)" >&2
  CARGO_PROFILE_RELEASE_OPT_LEVEL=z cargo build --release --target-dir target/bench-opt-z \
    -p rpi-client -p mqtt-server -p fleet-sim
  target/bench-opt-z/release/fleet-bench codec-json "$OUT/codec-opt-z.json"
  args+=(--opt-z-dir target/bench-opt-z/release)
fi

# shellcheck disable=SC2086
target/release/fleet-bench "${args[@]}" ${BENCH_ARGS:-}

if [ "${BENCH_QUICK:-0}" != 1 ] && [ -z "${BENCH_ARGS:-}" ]; then
  # A full run refreshes the plots that docs/performance.md shows.
  mkdir -p docs/performance
  cp "$OUT"/ingest.svg "$OUT"/latency.svg docs/performance/ 2>/dev/null || true
  echo "bench: plots copied to docs/performance/; update the figures in docs/performance.md from $OUT/table.md" >&2
fi
