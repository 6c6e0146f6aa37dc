#!/usr/bin/env bash
# Deploys the rpi-client daemon to a Raspberry Pi over ssh/scp: binary, systemd unit, config; then (re)starts it.
#
# Usage: scripts/deploy-pi.sh [--dry-run] [--binary PATH] [--config PATH] [--force-config] user@host
#
#   --dry-run       print every command, exactly as it would be run, one per line prefixed by "+ ",
#                   and run none of them (the local files are still checked)
#   --binary PATH   default: target/armv7-unknown-linux-gnueabihf/release/rpi-client (scripts/cross.sh)
#   --config PATH   default: rpi-mqtt-client/config.example.conf
#   --force-config  replace /etc/rpi-client/config.conf on the Pi (by default an existing one is kept)
#
# On the Pi (the ssh user needs sudo): creates the system user rpi-client if missing, installs
#   /usr/local/bin/rpi-client                 root:root 0755
#   /etc/systemd/system/rpi-client.service    root:root 0644  (from systemd/rpi-client.service)
#   /etc/rpi-client/config.conf               root:rpi-client 0640, directory root:rpi-client 0750
# then systemctl daemon-reload, `systemctl enable --now` (or enable + restart when it already runs,
# so that a redeploy runs the new binary) and shows `systemctl status`. The files travel through a fresh private temp dir on the Pi, removed at the end.
# Default paths are relative to the repository root; paths given as options to the current directory.
#
# Real vehicles (`vehicle = bridge` in the config, docs/vehicle-bridge.md): the vehicle process
# runs as its own systemd unit next to rpi-client, in the group of the bridge socket
# (/run/rpi-client/vehicle.sock, group rpi-client or `bridge_group`), e.g. for the reference
# Python vehicle: copy examples/python/vehicle.py to /opt/fleet/ and install the unit shown in
# docs/deployment.md ("A bridge vehicle"), `After=rpi-client.service`, `Restart=always`; this
# script does not install it (the vehicle code is the team's own).
set -euo pipefail

die() { echo "deploy-pi: error: $*" >&2; exit 1; }
warn() { echo "deploy-pi: warning: $*" >&2; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit "${1:-2}"; }

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRY=0
FORCE_CONFIG=0
BINARY=""
CONFIG=""
DEST=""

abspath() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }

while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run|-n) DRY=1; shift ;;
    --binary) [ $# -ge 2 ] || die "--binary needs a path"; BINARY="$(abspath "$2")"; shift 2 ;;
    --binary=*) BINARY="$(abspath "${1#--binary=}")"; shift ;;
    --config) [ $# -ge 2 ] || die "--config needs a path"; CONFIG="$(abspath "$2")"; shift 2 ;;
    --config=*) CONFIG="$(abspath "${1#--config=}")"; shift ;;
    --force-config) FORCE_CONFIG=1; shift ;;
    -h|--help) usage 0 ;;
    -*) echo "deploy-pi: error: unknown option: $1" >&2; usage 2 ;;
    *) [ -z "$DEST" ] || die "only one user@host may be given (got '$DEST' and '$1')"; DEST="$1"; shift ;;
  esac
done
[ -n "$DEST" ] || { echo "deploy-pi: error: missing user@host" >&2; usage 2; }
[[ "$DEST" =~ ^([A-Za-z0-9._-]+@)?[A-Za-z0-9._:-]+$ ]] \
  || die "'$DEST' does not look like user@host (or an ssh host alias)"

cd "$REPO"
BINARY="${BINARY:-target/armv7-unknown-linux-gnueabihf/release/rpi-client}"
CONFIG="${CONFIG:-rpi-mqtt-client/config.example.conf}"
UNIT="systemd/rpi-client.service"

# ---- Local checks, before anything runs ----------------------------------------------------------
[ -f "$UNIT" ] || die "unit file $REPO/$UNIT not found"
[ -f "$CONFIG" ] || die "config file $(abspath "$CONFIG") not found (give one with --config PATH)"
if [ ! -f "$BINARY" ]; then
  if [ "$DRY" -eq 1 ]; then
    warn "binary $BINARY not found (build it with scripts/cross.sh armv7); continuing the dry run"
  else
    die "binary $BINARY not found (build it with scripts/cross.sh armv7, or give --binary PATH)"
  fi
elif [ ! -x "$BINARY" ]; then
  warn "$BINARY is not executable locally; it is installed with mode 0755 anyway"
fi
if [ "$DRY" -eq 0 ]; then
  command -v ssh >/dev/null 2>&1 || die "ssh not found (apt-get install openssh-client)"
  command -v scp >/dev/null 2>&1 || die "scp not found (apt-get install openssh-client)"
fi

# ---- Command runner ------------------------------------------------------------------------------
# Quotes a word for display only when needed, so that a printed line can be pasted into a shell.
quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then printf '%s' "$1"
  else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}
run() {
  if [ "$DRY" -eq 1 ]; then
    local w
    printf '+'
    for w in "$@"; do printf ' '; quote "$w"; done
    printf '\n'
  else
    "$@"
  fi
}

# A fresh directory on the Pi (mkdir fails if the name exists, so nobody can pre-plant it).
REMOTE_TMP="/tmp/rpi-client-deploy.$(date +%s).$$"
R_BIN="$REMOTE_TMP/rpi-client"
R_UNIT="$REMOTE_TMP/rpi-client.service"
R_CONF="$REMOTE_TMP/config.conf"

remote_tmp_made=0
cleanup() {
  if [ "$remote_tmp_made" -eq 1 ]; then
    run ssh "$DEST" rm -rf "$REMOTE_TMP" || warn "could not remove $REMOTE_TMP on $DEST"
  fi
}
trap cleanup EXIT

echo "deploy-pi: deploying to $DEST (binary $BINARY, config $CONFIG)" >&2
run ssh "$DEST" mkdir -m 0700 "$REMOTE_TMP"
remote_tmp_made=1
run scp -q "$BINARY" "$DEST:$R_BIN"
run scp -q "$UNIT" "$DEST:$R_UNIT"
run scp -q "$CONFIG" "$DEST:$R_CONF"
run ssh "$DEST" 'getent passwd rpi-client >/dev/null || sudo useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin rpi-client'
run ssh "$DEST" sudo install -m 0755 -o root -g root "$R_BIN" /usr/local/bin/rpi-client
run ssh "$DEST" sudo install -m 0644 -o root -g root "$R_UNIT" /etc/systemd/system/rpi-client.service
run ssh "$DEST" sudo install -d -m 0750 -o root -g rpi-client /etc/rpi-client
if [ "$FORCE_CONFIG" -eq 1 ]; then
  run ssh "$DEST" sudo install -m 0640 -o root -g rpi-client "$R_CONF" /etc/rpi-client/config.conf
else
  run ssh "$DEST" "if sudo test -e /etc/rpi-client/config.conf; then echo 'kept the existing /etc/rpi-client/config.conf (use --force-config to replace it)'; else sudo install -m 0640 -o root -g rpi-client $R_CONF /etc/rpi-client/config.conf; fi"
fi
run ssh "$DEST" sudo systemctl daemon-reload
# enable --now starts a stopped service but would leave a running one on the old binary: restart that.
run ssh "$DEST" 'if systemctl is-active --quiet rpi-client; then sudo systemctl enable rpi-client && sudo systemctl restart rpi-client; else sudo systemctl enable --now rpi-client; fi'
run sleep 2
run ssh "$DEST" systemctl status --no-pager rpi-client || true
if ! run ssh "$DEST" systemctl is-active --quiet rpi-client; then
  die "rpi-client is not running on $DEST; see: ssh $DEST journalctl -u rpi-client -n 50 --no-pager"
fi
cleanup
remote_tmp_made=0
if [ "$DRY" -eq 1 ]; then
  echo "deploy-pi: dry run, nothing was done" >&2
else
  echo "deploy-pi: rpi-client is running on $DEST" >&2
fi
