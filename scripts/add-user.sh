#!/usr/bin/env bash
# Adds or updates a user (a Pi's client id, or "server") in the mosquitto password file.
#
# Usage: scripts/add-user.sh [--file PATH] USER [PASSWORD_FILE | -]
#
#   --file PATH    password file (default: mosquitto/config/passwd in this repository, which the
#                  production config reads as /mosquitto/config/passwd); created if missing.
#   USER           1..64 bytes of A-Z a-z 0-9 _ - . (the client id rules); a Pi's user name
#                  must be its client id, the server daemon's is "server".
#   PASSWORD_FILE  file whose first line is the password; "-" or nothing: read it from stdin
#                  (prompted twice, without echo, when stdin is a terminal).
# The password never appears in this script's arguments. It is handed to `mosquitto_passwd -b`
# (batch mode), so it is briefly visible in that process's argv to local users who can list
# processes: run this on a machine you trust, not on a shared host.
# The file is created with mode 0640; the broker must be able to read it (see docs/deployment.md).
set -euo pipefail

die() { echo "add-user: error: $*" >&2; exit 1; }
usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2; exit "${1:-2}"; }

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FILE="$REPO/mosquitto/config/passwd"

positional=()
while [ $# -gt 0 ]; do
  case "$1" in
    --file) [ $# -ge 2 ] || die "--file needs a path"; FILE="$2"; shift 2 ;;
    --file=*) FILE="${1#--file=}"; shift ;;
    -h|--help) usage 0 ;;
    --) shift; positional+=("$@"); break ;;
    -) positional+=("$1"); shift ;;
    -*) echo "add-user: error: unknown option: $1" >&2; usage 2 ;;
    *) positional+=("$1"); shift ;;
  esac
done
[ ${#positional[@]} -ge 1 ] || { echo "add-user: error: missing USER" >&2; usage 2; }
[ ${#positional[@]} -le 2 ] || die "too many arguments (the password is never given on the command line; use a file or stdin)"
USER_NAME="${positional[0]}"
PW_SRC="${positional[1]:--}"
[ -n "$FILE" ] || die "--file must not be empty"

LC_ALL=C
[[ "$USER_NAME" =~ ^[A-Za-z0-9_.-]{1,64}$ ]] \
  || die "invalid user name '$USER_NAME': 1..64 bytes of A-Z a-z 0-9 _ - . (the client id rules)"

command -v mosquitto_passwd >/dev/null 2>&1 \
  || die "mosquitto_passwd not found (apt-get install mosquitto, or run scripts/install-deps.sh)"

# Read the password.
password=""
if [ "$PW_SRC" = "-" ]; then
  if [ -t 0 ]; then
    IFS= read -r -s -p "Password for $USER_NAME: " password || true; echo >&2
    IFS= read -r -s -p "Again: " again || true; echo >&2
    [ "$password" = "$again" ] || die "the passwords differ"
    unset again
  else
    IFS= read -r password || [ -n "$password" ] || die "no password on stdin"
  fi
else
  [ -f "$PW_SRC" ] || die "password file '$PW_SRC' does not exist"
  [ -r "$PW_SRC" ] || die "password file '$PW_SRC' is not readable"
  IFS= read -r password <"$PW_SRC" || [ -n "$password" ] || die "password file '$PW_SRC' is empty"
fi
password="${password%$'\r'}"
[ -n "$password" ] || die "empty password"

dir="$(dirname "$FILE")"
[ -d "$dir" ] || die "directory $dir does not exist"

if [ -e "$FILE" ]; then
  if [ ! -f "$FILE" ] || [ ! -w "$FILE" ]; then die "$FILE is not a writable regular file"; fi
  existed=1
  grep -q "^${USER_NAME//./\\.}:" "$FILE" && action=updated || action=added
  mosquitto_passwd -b "$FILE" "$USER_NAME" "$password" >/dev/null \
    || die "mosquitto_passwd failed to update $FILE"
else
  existed=0
  action=added
  (umask 027; mosquitto_passwd -c -b "$FILE" "$USER_NAME" "$password" >/dev/null) \
    || die "mosquitto_passwd failed to create $FILE"
  chmod 0640 "$FILE"
fi
unset password

if [ "$existed" -eq 0 ]; then
  echo "add-user: created $FILE and added user $USER_NAME"
else
  echo "add-user: $action user $USER_NAME in $FILE"
fi
echo "add-user: a running broker reads the file again on SIGHUP (docker compose kill -s HUP mosquitto, or systemctl reload mosquitto)"
