#!/usr/bin/env bash
# The fault and abuse suite (docs/reliability.md): every fleet-chaos scenario, the long
# #[ignore]d ones included (60 s broker outage, 30 s malformed flood, and as root the cut
# network links), one at a time so the timings are not disturbed by each other. Prints a
# table of the measured figures and writes them to bench-out/chaos.json. About 4 minutes
# after `make test` (same build; 5 as root). The cluster scenarios (tests/cluster.rs) run a
# 3-node NATS cluster: nats-server comes from scripts/install-deps.sh (`make deps`).
#
#   CHAOS_DAEMON_PROFILE=release  run release builds of the daemons (builds them first)
#   CHAOS_FILTER=name             only the scenarios whose test name contains `name`
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench-out
jsonl="$PWD/bench-out/chaos.jsonl"
rm -f "$jsonl" bench-out/chaos.json

args=(--include-ignored --test-threads=1)
# The cut-link scenarios need network namespaces, so root.
if [ "$(id -u)" != 0 ]; then
  echo "chaos: not root, skipping the network-namespace scenarios (netns_*)" >&2
  args+=(--skip netns_)
fi
[ -n "${CHAOS_FILTER:-}" ] && args+=("$CHAOS_FILTER")

if [ -n "${CHAOS_DAEMON_PROFILE:-}" ]; then
  echo "chaos: building the daemons (profile $CHAOS_DAEMON_PROFILE)" >&2
  cargo build --quiet --profile "$CHAOS_DAEMON_PROFILE" -p rpi-client -p mqtt-server --bins
fi
start=$(date +%s)
status=0
CHAOS_OUT="$jsonl" cargo test -p fleet-chaos -- "${args[@]}" || status=$?
elapsed=$(( $(date +%s) - start ))

# bench-out/chaos.json: {"elapsed_s": N, "scenarios": [ {...}, ... ]}
{
  printf '{"elapsed_s": %d, "passed": %s, "scenarios": [' "$elapsed" "$([ $status = 0 ] && echo true || echo false)"
  [ -f "$jsonl" ] && paste -sd, "$jsonl"
  printf ']}\n'
} > bench-out/chaos.json
rm -f "$jsonl"

echo
echo "chaos: measured figures (bench-out/chaos.json), ${elapsed}s in all:"
sed -e 's/^{"elapsed_s".*"scenarios": \[//' -e 's/\]}$//' -e 's/},{/}\n{/g' bench-out/chaos.json |
  sed -e 's/[{}"]//g' -e 's/scenario://' -e 's/,/  /' -e 's/,/ /g' -e 's/:/=/g' |
  awk 'NF { printf "  %-28s", $1; $1=""; print $0 }'
if [ $status != 0 ]; then
  echo "chaos: FAILED (see above)" >&2
fi
exit $status
