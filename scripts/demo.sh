#!/usr/bin/env bash
# Runs the whole fleet on this machine: a mosquitto broker on loopback, mqtt-server (with its
# web map), and two simulated Pis with three entities each; prints the map's URL, then shows
# the server's live table. Ctrl-C stops all.
#
#   DEMO_PIS=2  DEMO_ENTITIES=1,2,3  DEMO_SECONDS=0 (until Ctrl-C)  DEMO_HTTP=127.0.0.1:8080
#   DEMO_BRIDGE=1: the last Pi drives its vehicles through the vehicle bridge
#   (docs/vehicle-bridge.md) with the Python reference vehicle, examples/python/vehicle.py.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

PIS=${DEMO_PIS:-2}
ENTITIES=${DEMO_ENTITIES:-1,2,3}
DURATION=${DEMO_SECONDS:-0}   # 0 = until Ctrl-C
BRIDGE=${DEMO_BRIDGE:-0}
RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/fleet-demo.XXXXXX")

MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
[ -x "$MOSQUITTO" ] || { echo "demo: mosquitto not found; run scripts/install-deps.sh" >&2; exit 1; }

PORT=$(free_port 1883)
HTTP=${DEMO_HTTP:-127.0.0.1:$(free_port 8080)}
# The first thing printed: where to look.
echo "demo: web map at http://$HTTP/  (open it in a browser)"

echo "demo: building release binaries..." >&2
cargo build --release --quiet -p mqtt-server -p rpi-client

cat > "$RUN_DIR/mosquitto.conf" <<CONF
# Development broker for the demo: anonymous, loopback only, TCP_NODELAY on.
listener $PORT 127.0.0.1
allow_anonymous true
set_tcp_nodelay true
# Payloads are at most 64 bytes; see mosquitto/config/mosquitto.conf.
max_packet_size 4096
persistence false
log_dest stderr
log_timestamp true
CONF

trap 'stop_all demo' INT TERM EXIT

"$MOSQUITTO" -c "$RUN_DIR/mosquitto.conf" 2>"$RUN_DIR/mosquitto.log" &
pids+=($!)
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.05
done

last=$(printf "%03g" "$PIS")
for n in $(seq -f "%03g" 1 "$PIS"); do
  vehicle=()
  if [ "$BRIDGE" = 1 ] && [ "$n" = "$last" ]; then
    vehicle=(--vehicle bridge --bridge-socket "$RUN_DIR/vehicle_$n.sock")
  fi
  # Each Pi keeps its session counter in its own state directory, and its vehicles start
  # on their own row of the map, 2 m apart.
  mkdir -p "$RUN_DIR/state_$n"
  origin="0,$(( (10#$n - 1) * 2000 ))"
  target/release/rpi-client --config /dev/null --broker "127.0.0.1:$PORT" \
    --client-id "rpi_client_$n" --entities "$ENTITIES" --state-dir "$RUN_DIR/state_$n" \
    --sim-origin "$origin" "${vehicle[@]}" 2>"$RUN_DIR/rpi_client_$n.log" &
  pids+=($!)
done
if [ "$BRIDGE" = 1 ]; then
  # The vehicle process connects once rpi-client has its socket; until then (and whenever it
  # is not running) the server shows those vehicles as "no driver".
  for _ in $(seq 100); do [ -S "$RUN_DIR/vehicle_$last.sock" ] && break; sleep 0.05; done
  python3 examples/python/vehicle.py --socket "$RUN_DIR/vehicle_$last.sock" \
    --entities "$ENTITIES" --origin "0,$(( (10#$last - 1) * 2000 ))" \
    2>"$RUN_DIR/vehicle_$last.log" &
  pids+=($!)
  echo "demo: rpi_client_$last drives its vehicles through the bridge (examples/python/vehicle.py)" >&2
fi

echo "demo: broker on 127.0.0.1:$PORT, $PIS Pis; logs in $RUN_DIR; Ctrl-C stops everything" >&2
# The server writes the table straight to stdout (no pipe): on a terminal it clears the screen
# and redraws the whole table in one write, with the map's URL on top; piped or redirected, the
# tables follow each other line by line.
mkdir -p "$RUN_DIR/state_server"
target/release/mqtt-server --config /dev/null --broker "127.0.0.1:$PORT" --http-listen "$HTTP" \
  --state-dir "$RUN_DIR/state_server" 2>"$RUN_DIR/mqtt-server.log" &
pids+=($!)

if [ "$DURATION" -gt 0 ]; then
  sleep "$DURATION"
else
  wait "${pids[-1]}" || true
fi
