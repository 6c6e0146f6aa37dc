# What scripts/demo.sh and scripts/cluster.sh share; sourced, not run. The caller sets
# `set -euo pipefail` and RUN_DIR, and keeps its background processes in `pids`.

# free_port PREFERRED: PREFERRED if nothing listens there on loopback, else one the kernel picks.
free_port() {
  python3 - "$1" <<'PY' 2>/dev/null || echo "$1"
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

pids=()

# stop_all NAME: the EXIT/INT/TERM trap (`trap 'stop_all demo' INT TERM EXIT`). Ctrl-C already
# reached every process of the terminal's group; give them a moment to finish cleanly (a
# second signal would make a daemon exit at once), then TERM the rest in the reverse order of
# their start: the daemons before the broker.
stop_all() {
  trap - INT TERM EXIT
  echo >&2
  echo "$1: stopping..." >&2
  for _ in $(seq 20); do
    alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for ((i=${#pids[@]}-1; i>=0; i--)); do kill -TERM "${pids[$i]}" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  echo "$1: logs kept in $RUN_DIR" >&2
}
