#!/usr/bin/env bash
# A 3-node NATS cluster on loopback with MQTT listeners (the clustered broker of
# docs/scaling.md): each node has JetStream (its store in a temporary directory), the nodes
# route to each other, and the daemons connect to the MQTT ports as to any broker, with a
# list (`--broker a:1,b:2,c:3`) to fail over. Waits until every node accepts an MQTT CONNECT
# (a fresh cluster needs a few seconds), prints the ports, then runs until Ctrl-C.
# nats-server comes from scripts/install-deps.sh (run here when it is missing).
#
#   scripts/cluster.sh          the cluster only
#   scripts/cluster.sh --demo   also mqtt-server (web map) and simulated Pis spread over the
#                               nodes, each Pi's broker list starting with its own node
#                               (`make cluster-demo`)
#
#   CLUSTER_MQTT_PORTS=11883,11884,11885  CLUSTER_CLIENT_PORTS=14222,14223,14224
#   CLUSTER_ROUTE_PORTS=16222,16223,16224  CLUSTER_MONITOR_PORTS=18222,18223,18224
#   (a default port already taken is replaced by a free one; ports you set are used as given)
#   DEMO_PIS=3  DEMO_ENTITIES=1,2,3  DEMO_SECONDS=0 (until Ctrl-C)  DEMO_HTTP=127.0.0.1:8080
#   DEMO_PROFILE=release (or dev: the debug build in target/debug)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

DEMO=0
case "${1:-}" in
  --demo) DEMO=1 ;;
  "") ;;
  *) echo "usage: $0 [--demo]" >&2; exit 2 ;;
esac
PIS=${DEMO_PIS:-3}
ENTITIES=${DEMO_ENTITIES:-1,2,3}
DURATION=${DEMO_SECONDS:-0}   # 0 = until Ctrl-C
NODES=3

find_nats() {
  if [ -n "${NATS_SERVER:-}" ]; then echo "$NATS_SERVER"; return; fi
  for p in "$(command -v nats-server 2>/dev/null || true)" "$HOME/.local/bin/nats-server" \
           "$HOME/.local/share/fleet-nats/bin/nats-server"; do
    [ -n "$p" ] && [ -x "$p" ] && { echo "$p"; return; }
  done
}
NATS=$(find_nats)
if [ -z "$NATS" ]; then
  echo "cluster: nats-server not found; running scripts/install-deps.sh" >&2
  scripts/install-deps.sh
  NATS=$(find_nats)
fi
[ -n "$NATS" ] || { echo "cluster: nats-server not found after scripts/install-deps.sh" >&2; exit 1; }
command -v mosquitto_pub >/dev/null 2>&1 ||
  { echo "cluster: mosquitto_pub (readiness check) not found; run scripts/install-deps.sh" >&2; exit 1; }

# ports VAR DEFAULT_BASE: the list in $VAR as given, else three free ports from DEFAULT_BASE.
ports() {
  local given=${!1:-} base=$2 out=() p
  if [ -n "$given" ]; then
    IFS=, read -r -a out <<<"$given"
    [ ${#out[@]} -eq $NODES ] || { echo "cluster: $1 needs $NODES ports, got '$given'" >&2; exit 2; }
  else
    for i in $(seq 0 $((NODES - 1))); do
      p=$(free_port $((base + i)))
      # Two nodes must not get the same port from the kernel's pick.
      while [[ " ${out[*]:-} " == *" $p "* ]]; do p=$(free_port 0); done
      out+=("$p")
    done
  fi
  echo "${out[*]}"
}
read -r -a MQTT <<<"$(ports CLUSTER_MQTT_PORTS 11883)"
read -r -a CLIENT <<<"$(ports CLUSTER_CLIENT_PORTS 14222)"
read -r -a ROUTE <<<"$(ports CLUSTER_ROUTE_PORTS 16222)"
read -r -a MONITOR <<<"$(ports CLUSTER_MONITOR_PORTS 18222)"

RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/fleet-cluster.XXXXXX")
routes=""
for i in $(seq 0 $((NODES - 1))); do
  routes+="${routes:+, }\"nats-route://127.0.0.1:${ROUTE[$i]}\""
done
for i in $(seq 0 $((NODES - 1))); do
  n=$((i + 1))
  cat > "$RUN_DIR/n$n.conf" <<CONF
# Node $n of the demo cluster (scripts/cluster.sh): loopback only, anonymous.
server_name: fleet-n$n
listen: 127.0.0.1:${CLIENT[$i]}
http: 127.0.0.1:${MONITOR[$i]}
jetstream {
  store_dir: "$RUN_DIR/n$n-js"
  max_memory_store: 64MB
  max_file_store: 256MB
}
cluster {
  name: fleet
  listen: 127.0.0.1:${ROUTE[$i]}
  routes: [$routes]
}
mqtt {
  listen: 127.0.0.1:${MQTT[$i]}
}
CONF
done

trap 'stop_all cluster' INT TERM EXIT

for n in $(seq 1 $NODES); do
  "$NATS" -c "$RUN_DIR/n$n.conf" 2>"$RUN_DIR/n$n.log" &
  pids+=($!)
done

# Ready when each node accepts an MQTT CONNECT (and a publish): JetStream must first elect
# its meta leader and create the MQTT streams, a few seconds on a fresh cluster.
for i in $(seq 0 $((NODES - 1))); do
  ok=0
  for _ in $(seq 60); do
    if timeout 6 mosquitto_pub -h 127.0.0.1 -p "${MQTT[$i]}" -i "cluster-ready-$i" \
         -t cluster/ready -n -q 1 2>/dev/null; then ok=1; break; fi
    for p in "${pids[@]}"; do
      kill -0 "$p" 2>/dev/null ||
        { echo "cluster: a node exited; see $RUN_DIR/n*.log" >&2; tail -5 "$RUN_DIR"/n*.log >&2; exit 1; }
    done
    sleep 0.5
  done
  [ $ok = 1 ] || { echo "cluster: node $((i + 1)) never accepted MQTT; see $RUN_DIR/n$((i + 1)).log" >&2; exit 1; }
done

# broker_list K: the MQTT addresses starting with node K (0-based), then the others.
broker_list() {
  local out=""
  for k in $(seq 0 $((NODES - 1))); do
    out+="${out:+,}127.0.0.1:${MQTT[$(( ($1 + k) % NODES ))]}"
  done
  echo "$out"
}

echo "cluster: $NODES NATS nodes ready ($("$NATS" --version)):"
for i in $(seq 0 $((NODES - 1))); do
  echo "  fleet-n$((i + 1))  mqtt 127.0.0.1:${MQTT[$i]}  nats ${CLIENT[$i]}  route ${ROUTE[$i]}  monitor http://127.0.0.1:${MONITOR[$i]}/"
done
echo "cluster: broker list for the daemons: --broker $(broker_list 0)"
echo "cluster: configs and logs in $RUN_DIR; Ctrl-C stops everything"

if [ "$DEMO" = 1 ]; then
  HTTP=${DEMO_HTTP:-127.0.0.1:$(free_port 8080)}
  echo "cluster: web map at http://$HTTP/  (open it in a browser)"
  PROFILE=${DEMO_PROFILE:-release}
  BIN_DIR=target/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
  echo "cluster: building the daemons ($PROFILE)..." >&2
  cargo build --profile "$PROFILE" --quiet -p mqtt-server -p rpi-client
  for n in $(seq 1 "$PIS"); do
    id=$(printf "rpi_client_%03d" "$n")
    node=$(( (n - 1) % NODES ))
    echo "cluster: $id on fleet-n$((node + 1)) (--broker $(broker_list $node))" >&2
    "$BIN_DIR/rpi-client" --config /dev/null --broker "$(broker_list $node)" \
      --client-id "$id" --entities "$ENTITIES" 2>"$RUN_DIR/$id.log" &
    pids+=($!)
  done
  # The server on the last node: the table straight to stdout, as in scripts/demo.sh.
  server_node=$((NODES - 1))
  echo "cluster: mqtt-server on fleet-n$NODES (--broker $(broker_list $server_node))" >&2
  "$BIN_DIR/mqtt-server" --config /dev/null --broker "$(broker_list $server_node)" \
    --http-listen "$HTTP" 2>"$RUN_DIR/mqtt-server.log" &
  pids+=($!)
fi

if [ "$DURATION" -gt 0 ]; then
  sleep "$DURATION"
else
  wait "${pids[-1]}" || true
fi
