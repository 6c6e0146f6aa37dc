#!/usr/bin/env bash
# Generates a development CA, the broker's TLS server certificate and per-Pi client certificates (EC P-256).
#
# Usage: scripts/gen-certs.sh [--out DIR] [--ca-days N] [--days N] SERVER_HOSTNAME [PI_ID ...]
#        scripts/gen-certs.sh [--out DIR] --revoke PI_ID [--revoke PI_ID ...]
#
#   --out DIR     output directory (default: mosquitto/certs in this repository)
#   --ca-days N   validity of a newly created CA, in days (default 3650)
#   --days N      validity of newly created server/client certificates, in days (default 825)
#   SERVER_HOSTNAME  the name (or IPv4 address) the Pis use to reach the broker; the server
#                 certificate gets it as subjectAltName, plus DNS:localhost and IP:127.0.0.1.
#   PI_ID         client id of a Pi (1..64 bytes of A-Z a-z 0-9 _ - .); its certificate has
#                 CN=<PI_ID> and is only valid for TLS client authentication.
#   --revoke ID   revoke DIR/clients/ID.crt and write the new CRL (nothing else is created);
#                 scripts/revoke-pi.sh does this and also removes the Pi's password account.
#
# Files (keys are mode 0600, certificates 0644):
#   DIR/ca.key DIR/ca.crt                    the CA (keep ca.key off the broker in production)
#   DIR/server.key DIR/server.crt            for mosquitto's keyfile/certfile
#   DIR/clients/<PI_ID>.key .crt             for each Pi (with DIR/ca.crt)
#   DIR/ca.crl                               revoked client certificates (mosquitto's crlfile);
#                                            created empty, rewritten by --revoke
#   DIR/crl/                                 the CA's revocation database (openssl ca)
# Idempotent: existing keys and certificates are kept (and reported); delete a file to recreate it.
# A key whose certificate is missing is reused for a new certificate.
set -euo pipefail

die() { echo "gen-certs: error: $*" >&2; exit 1; }
say() { echo "gen-certs: $*"; }
usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' >&2; exit "${1:-2}"; }

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$REPO/mosquitto/certs"
CA_DAYS=3650
DAYS=825

positional=()
REVOKE=()
while [ $# -gt 0 ]; do
  case "$1" in
    --revoke) [ $# -ge 2 ] || die "--revoke needs a PI_ID"; REVOKE+=("$2"); shift 2 ;;
    --revoke=*) REVOKE+=("${1#--revoke=}"); shift ;;
    --out) [ $# -ge 2 ] || die "--out needs a directory"; OUT="$2"; shift 2 ;;
    --out=*) OUT="${1#--out=}"; shift ;;
    --ca-days) [ $# -ge 2 ] || die "--ca-days needs a number"; CA_DAYS="$2"; shift 2 ;;
    --ca-days=*) CA_DAYS="${1#--ca-days=}"; shift ;;
    --days) [ $# -ge 2 ] || die "--days needs a number"; DAYS="$2"; shift 2 ;;
    --days=*) DAYS="${1#--days=}"; shift ;;
    -h|--help) usage 0 ;;
    --) shift; positional+=("$@"); break ;;
    -*) echo "gen-certs: error: unknown option: $1" >&2; usage 2 ;;
    *) positional+=("$1"); shift ;;
  esac
done
command -v openssl >/dev/null 2>&1 || die "openssl not found (apt-get install openssl)"
[ -n "$OUT" ] || die "--out must not be empty"

# ---- Revocation --------------------------------------------------------------------------------
# The CA's revocation database lives in DIR/crl (openssl ca); DIR/ca.crl is what mosquitto reads.
crl_config() { # writes the openssl ca config to stdout
  printf '[ca]\ndefault_ca = fleet\n[fleet]\ndatabase = %s/crl/index.txt\n' "$OUT"
  printf 'crlnumber = %s/crl/crlnumber\ndefault_md = sha256\ndefault_crl_days = 3650\n' "$OUT"
}
write_crl() {
  [ -d "$OUT/crl" ] || { mkdir "$OUT/crl" && touch "$OUT/crl/index.txt" && echo 01 >"$OUT/crl/crlnumber"; } \
    || die "cannot create $OUT/crl"
  openssl ca -gencrl -config <(crl_config) -keyfile "$OUT/ca.key" -cert "$OUT/ca.crt" \
    -out "$OUT/ca.crl.new" 2>"$tmp/err" || { cat "$tmp/err" >&2; die "could not write the CRL"; }
  chmod 0644 "$OUT/ca.crl.new"
  mv -f "$OUT/ca.crl.new" "$OUT/ca.crl"
}
if [ ${#REVOKE[@]} -gt 0 ]; then
  [ ${#positional[@]} -eq 0 ] || die "--revoke takes no SERVER_HOSTNAME or PI_ID arguments"
  [ -f "$OUT/ca.key" ] && [ -f "$OUT/ca.crt" ] || die "no CA in $OUT (ca.key, ca.crt)"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  umask 077
  for id in "${REVOKE[@]}"; do
    [[ "$id" =~ ^[A-Za-z0-9_.-]{1,64}$ ]] || die "invalid PI_ID '$id'"
    crt="$OUT/clients/$id.crt"
    [ -f "$crt" ] || die "$crt not found"
    serial="$(openssl x509 -in "$crt" -noout -serial | sed 's/^serial=//')"
    if [ -f "$OUT/crl/index.txt" ] && grep -q "^R.*[[:space:]]$serial[[:space:]]" "$OUT/crl/index.txt"; then
      say "$crt (serial $serial) was already revoked"
      continue
    fi
    [ -d "$OUT/crl" ] || write_crl
    openssl ca -revoke "$crt" -config <(crl_config) -keyfile "$OUT/ca.key" -cert "$OUT/ca.crt" \
      2>"$tmp/err" || { cat "$tmp/err" >&2; die "could not revoke $crt"; }
    say "revoked $crt (serial $serial)"
  done
  write_crl
  say "wrote $OUT/ca.crl; reload the broker (SIGHUP, or restart) to apply it"
  exit 0
fi

[ ${#positional[@]} -ge 1 ] || { echo "gen-certs: error: missing SERVER_HOSTNAME" >&2; usage 2; }
HOST="${positional[0]}"
PIS=("${positional[@]:1}")
[[ "$CA_DAYS" =~ ^[1-9][0-9]{0,5}$ ]] || die "--ca-days must be a positive number of days, got '$CA_DAYS'"
[[ "$DAYS" =~ ^[1-9][0-9]{0,5}$ ]] || die "--days must be a positive number of days, got '$DAYS'"

# SERVER_HOSTNAME: an IPv4 address or a DNS name (labels of letters, digits, hyphens; max 253).
LC_ALL=C
host_is_ip=0
if [[ "$HOST" =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$ ]]; then
  for octet in "${BASH_REMATCH[@]:1}"; do
    [ "$((10#$octet))" -le 255 ] || die "invalid IPv4 address '$HOST'"
  done
  host_is_ip=1
elif [ ${#HOST} -gt 253 ] || ! [[ "$HOST" =~ ^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$ ]]; then
  die "invalid SERVER_HOSTNAME '$HOST' (expected a DNS name like broker.example.lan or an IPv4 address)"
fi

for id in "${PIS[@]}"; do
  [[ "$id" =~ ^[A-Za-z0-9_.-]{1,64}$ ]] \
    || die "invalid PI_ID '$id': a client id is 1..64 bytes of A-Z a-z 0-9 _ - ."
  [ "$id" != "server" ] \
    || die "PI_ID 'server' is reserved: with use_identity_as_username a certificate with CN=server would get the server's ACL rights"
  case "$id" in .|..) die "invalid PI_ID '$id': cannot be used as a file name" ;; esac
done

umask 077
# The directory itself is world-traversable (the broker, e.g. uid 1883 in the container, must read
# ca.crt/server.crt); clients/ holds the Pis' keys and stays private.
if [ ! -d "$OUT" ]; then
  mkdir -p "$OUT" || die "cannot create $OUT"
  chmod 0755 "$OUT"
fi
if [ ! -d "$OUT/clients" ]; then mkdir "$OUT/clients" || die "cannot create $OUT/clients"; fi
[ -w "$OUT" ] || die "$OUT is not writable"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# Minimal OpenSSL config, so that the system openssl.cnf adds nothing unexpected.
cat >"$tmp/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = placeholder
[v3_ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF

new_key() { # path
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>"$tmp/err" \
    || { cat "$tmp/err" >&2; die "could not create key $1"; }
  chmod 0600 "$1"
}

# Decides what to do with a key/certificate pair: prints "keep", "cert" (key exists) or "new".
pair_state() { # key crt label
  if [ -f "$2" ]; then
    [ -f "$1" ] || die "$2 exists but its key $1 is missing; delete $2 to recreate both"
    echo keep
  elif [ -f "$1" ]; then
    echo cert
  else
    echo new
  fi
}

# Signs a CSR for key $1 with subject CN $2 into certificate $3, with the extensions in file $4.
sign() {
  openssl req -new -key "$1" -subj "/CN=$2" -config "$tmp/openssl.cnf" -out "$tmp/req.csr" 2>"$tmp/err" \
    || { cat "$tmp/err" >&2; die "could not create a request for $3"; }
  openssl x509 -req -in "$tmp/req.csr" -CA "$OUT/ca.crt" -CAkey "$OUT/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days "$DAYS" -sha256 \
    -extfile "$4" -out "$3" 2>"$tmp/err" \
    || { cat "$tmp/err" >&2; die "could not sign $3"; }
  chmod 0644 "$3"
}

# ---- CA ----------------------------------------------------------------------------------------
case "$(pair_state "$OUT/ca.key" "$OUT/ca.crt" CA)" in
  keep) say "kept existing CA $OUT/ca.crt" ;;
  cert)
    die "$OUT/ca.key exists without ca.crt; refusing to guess (delete ca.key to create a new CA)" ;;
  new)
    new_key "$OUT/ca.key"
    openssl req -new -x509 -key "$OUT/ca.key" -subj "/CN=Fleet development CA" -days "$CA_DAYS" -sha256 \
      -config "$tmp/openssl.cnf" -extensions v3_ca -set_serial "0x$(openssl rand -hex 16)" \
      -out "$OUT/ca.crt" 2>"$tmp/err" || { cat "$tmp/err" >&2; die "could not create the CA certificate"; }
    chmod 0644 "$OUT/ca.crt"
    say "created CA $OUT/ca.crt (valid $CA_DAYS days)" ;;
esac
openssl x509 -in "$OUT/ca.crt" -noout 2>/dev/null || die "$OUT/ca.crt is not a valid certificate"

# ---- Server certificate ------------------------------------------------------------------------
san=""
if [ "$host_is_ip" -eq 1 ]; then san="IP:$HOST"; else san="DNS:$HOST"; fi
[ "$HOST" = localhost ] || san="$san,DNS:localhost"
[ "$HOST" = 127.0.0.1 ] || san="$san,IP:127.0.0.1"
cat >"$tmp/server.ext" <<EOF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = $san
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
state="$(pair_state "$OUT/server.key" "$OUT/server.crt" server)"
case "$state" in
  keep)
    say "kept existing server certificate $OUT/server.crt"
    if [ "$host_is_ip" -eq 1 ]; then want="IP Address:$HOST"; else want="DNS:$HOST"; fi
    if ! openssl x509 -in "$OUT/server.crt" -noout -ext subjectAltName 2>/dev/null | grep -qF "$want"; then
      echo "gen-certs: warning: the existing server certificate does not name $HOST; delete $OUT/server.crt and run again to reissue it" >&2
    fi ;;
  cert|new)
    [ "$state" = new ] && new_key "$OUT/server.key"
    sign "$OUT/server.key" "$HOST" "$OUT/server.crt" "$tmp/server.ext"
    say "created server certificate $OUT/server.crt for $san (valid $DAYS days)" ;;
esac

# ---- Client certificates -----------------------------------------------------------------------
cat >"$tmp/client.ext" <<'EOF'
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
for id in "${PIS[@]}"; do
  key="$OUT/clients/$id.key"
  crt="$OUT/clients/$id.crt"
  state="$(pair_state "$key" "$crt" "$id")"
  case "$state" in
    keep) say "kept existing client certificate $crt" ;;
    cert|new)
      [ "$state" = new ] && new_key "$key"
      sign "$key" "$id" "$crt" "$tmp/client.ext"
      say "created client certificate $crt (CN=$id, valid $DAYS days)" ;;
  esac
done

# ---- CRL (empty at first; mosquitto's crlfile must exist) -------------------------------------
if [ -f "$OUT/ca.crl" ]; then
  say "kept existing CRL $OUT/ca.crl"
else
  write_crl
  say "created an empty CRL $OUT/ca.crl"
fi

# Sanity check: everything we hand out chains to the CA.
openssl verify -CAfile "$OUT/ca.crt" "$OUT/server.crt" >/dev/null \
  || die "$OUT/server.crt does not verify against $OUT/ca.crt (a CA was recreated? delete server.* and clients/* and run again)"
for id in "${PIS[@]}"; do
  openssl verify -CAfile "$OUT/ca.crt" "$OUT/clients/$id.crt" >/dev/null \
    || die "$OUT/clients/$id.crt does not verify against $OUT/ca.crt (delete it and its key, and run again)"
done
