#!/usr/bin/env bash
# Smoke test of a cross-built rpi-client under qemu-user against a local mosquitto: it must
# connect, heartbeat, accept a segment, drive it to completion and exit 0 on SIGTERM.
#
# Usage: scripts/qemu-smoke.sh BINARY QEMU SYSROOT   e.g.
#        scripts/qemu-smoke.sh target/armv7-unknown-linux-gnueabihf/release/rpi-client qemu-arm /usr/arm-linux-gnueabihf
set -euo pipefail
[ $# -eq 3 ] || { sed -n '5,6p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
BIN=$1 QEMU=$2 SYSROOT=$3
ID=smoke-pi
fail() { echo "smoke: FAILED: $*" >&2; [ -n "${WORK:-}" ] && { echo "--- rpi-client log"; cat "$WORK/client.log"; echo "--- mosquitto log"; cat "$WORK/mosquitto.log"; } >&2; exit 1; }

[ -x "$BIN" ] || fail "no binary $BIN (run scripts/cross.sh first)"
command -v "$QEMU" >/dev/null || fail "$QEMU not found (Debian package qemu-user)"
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
[ -x "$MOSQUITTO" ] || fail "mosquitto not found (scripts/install-deps.sh)"
command -v mosquitto_sub >/dev/null || fail "mosquitto_sub not found (scripts/install-deps.sh)"

WORK=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do { kill -9 "$p" && wait "$p"; } 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# A free loopback port: nothing answers on it.
for _ in $(seq 50); do
  PORT=$((20000 + RANDOM % 30000))
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null || break
done
printf 'listener %s 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\npersistence false\n' "$PORT" > "$WORK/mosquitto.conf"
"$MOSQUITTO" -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.05; done

# -E LD_LIBRARY_PATH keeps the loader and libc from the same sysroot: with libc6:armhf also
# installed (libstd-rust-web-dev:armhf pulls it in), the cross loader would otherwise pick the
# multiarch libc of another build through the host's ld.so.cache, and threads crash.
"$QEMU" -L "$SYSROOT" -E "LD_LIBRARY_PATH=$SYSROOT/lib" "$BIN" --config /dev/null --broker "127.0.0.1:$PORT" --client-id "$ID" \
  --entities 1 >"$WORK/client.log" 2>&1 &
CLIENT=$!
pids+=("$CLIENT")

# Two heartbeats (protocol version 3, kind 1: first byte 0x31).
mosquitto_sub -p "$PORT" -h 127.0.0.1 -t "rpi/$ID/heartbeat" -C 2 -W 20 -F '%x' >"$WORK/hb" || true
[ "$(grep -c '^31' "$WORK/hb")" -eq 2 ] || fail "no heartbeats (got: $(cat "$WORK/hb"))"
echo "smoke: heartbeats arrive" >&2

# A segment for entity 1, id 4242, (0,0) -> (300,0) at 300 mm/s; expect Accepted then Completed.
# It is a version 1 segment (34 bytes, no deadline, as a server not upgraded yet sends it), so
# the smoke test needs no clock arithmetic; the acks are version 3 (0x34), the Pi's version.
mosquitto_sub -p "$PORT" -h 127.0.0.1 -t "rpi/$ID/ack" -C 2 -W 20 -F '%x' >"$WORK/acks" &
SUB=$!
pids+=("$SUB")
sleep 0.5
printf '\x13\x01\x00\x00\x00\x92\x10\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x2c\x01\x00\x00\x00\x00\x00\x00\x2c\x01\x00\x00\x2c\x01\x00\x00\x00' >"$WORK/segment"
[ "$(stat -c %s "$WORK/segment")" -eq 34 ] || fail "segment payload is not 34 bytes"
mosquitto_pub -p "$PORT" -h 127.0.0.1 -t "server/$ID/segment" -q 1 -f "$WORK/segment"
wait "$SUB" || true
grep -qx '3401000000921000000000' "$WORK/acks" || fail "no Accepted ack (got: $(cat "$WORK/acks"))"
grep -qx '3401000000921000000100' "$WORK/acks" || fail "no Completed ack (got: $(cat "$WORK/acks"))"
echo "smoke: segment accepted and completed" >&2

kill -TERM "$CLIENT"
code=0
wait "$CLIENT" || code=$?
[ "$code" -eq 0 ] || fail "rpi-client exited $code on SIGTERM"
echo "smoke: clean exit on SIGTERM" >&2
echo "smoke: PASSED ($BIN under $QEMU)"
