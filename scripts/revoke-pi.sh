#!/usr/bin/env bash
# Revokes a Pi: its client certificate goes into the CA's CRL (mosquitto's crlfile), and its
# password account is removed from the broker's password file, so it can log in neither with
# its certificate (8884) nor with its password (1883, 8883).
#
# Usage: scripts/revoke-pi.sh [--certs DIR] [--passwd FILE] PI_ID
#
#   --certs DIR    the CA directory of scripts/gen-certs.sh (default: mosquitto/certs)
#   --passwd FILE  the broker's password file (default: mosquitto/config/passwd); a missing
#                  file or account is reported and skipped
#
# Then make the broker read both again: SIGHUP (systemctl reload mosquitto, docker kill -s HUP
# fleet-mosquitto) or a restart. A connection the Pi has open stays open until then.
set -euo pipefail

die() { echo "revoke-pi: error: $*" >&2; exit 1; }
say() { echo "revoke-pi: $*"; }

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CERTS="$REPO/mosquitto/certs"
PASSWD="$REPO/mosquitto/config/passwd"
positional=()
while [ $# -gt 0 ]; do
  case "$1" in
    --certs) [ $# -ge 2 ] || die "--certs needs a directory"; CERTS="$2"; shift 2 ;;
    --passwd) [ $# -ge 2 ] || die "--passwd needs a file"; PASSWD="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
    -*) die "unknown option: $1" ;;
    *) positional+=("$1"); shift ;;
  esac
done
[ ${#positional[@]} -eq 1 ] || die "expected exactly one PI_ID (see --help)"
ID="${positional[0]}"
[[ "$ID" =~ ^[A-Za-z0-9_.-]{1,64}$ ]] || die "invalid PI_ID '$ID'"
[ "$ID" != server ] || die "'server' is the server's account, not a Pi"

"$REPO/scripts/gen-certs.sh" --out "$CERTS" --revoke "$ID" | sed 's/^gen-certs: /revoke-pi: /'

if [ ! -f "$PASSWD" ]; then
  say "no password file $PASSWD: no account to remove"
elif grep -q "^$ID:" "$PASSWD"; then
  command -v mosquitto_passwd >/dev/null 2>&1 || die "mosquitto_passwd not found (apt-get install mosquitto)"
  mosquitto_passwd -D "$PASSWD" "$ID" || die "could not remove $ID from $PASSWD"
  say "removed the account $ID from $PASSWD"
else
  say "$ID has no account in $PASSWD"
fi
say "now reload the broker (SIGHUP or restart) so that it reads the CRL and the password file again"
