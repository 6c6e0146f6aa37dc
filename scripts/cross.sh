#!/usr/bin/env bash
# Cross-builds the Raspberry Pi daemon (package rpi-client) for armv7 and/or aarch64, in release, stripped.
#
# Usage: scripts/cross.sh [--smoke] [-p|--package NAME] [armv7|aarch64|all]   (default: armv7)
#   --smoke  then run each binary under qemu-user against a local mosquitto (scripts/qemu-smoke.sh)
#
#   armv7    armv7-unknown-linux-gnueabihf  (32-bit Raspberry Pi OS on Pi 2/3/4/5, Zero 2 W)
#   aarch64  aarch64-unknown-linux-gnu      (64-bit Raspberry Pi OS on Pi 3/4/5, Zero 2 W)
#
# Output: target/<triple>/release/<package>  (or under $CARGO_TARGET_DIR when that is set).
#
# Toolchain, per target:
#   1. rustup: if `rustup target list --installed` lists the target, the default toolchain builds it.
#   2. Otherwise Debian's packages: rustc-web plus libstd-rust-web-dev:<armhf|arm64> at the very
#      same version (Multi-Arch: same), gcc-<triple> as the linker, qemu-user to run the result.
#      The build then runs `RUSTC=/usr/bin/rustc cargo build ...`. Installs are skipped when done.
# In both cases the linker and C compiler are passed through CARGO_TARGET_<TRIPLE>_LINKER,
# CC_<triple> and AR_<triple> environment variables; no .cargo/config.toml is written.
#
# Environment: CROSS_PACKAGE (package name, default rpi-client; --package wins),
# CARGO (default cargo), CARGO_TARGET_DIR (honoured by cargo as usual),
# CROSS_WORKSPACE (directory of the cargo workspace to build, default: this repository).
# The binaries need glibc >= 2.34 on the Pi (Raspberry Pi OS Bookworm or newer).
# ARMv6 boards (Pi Zero / Zero W / Pi 1) are not supported by this script: see docs/deployment.md.
set -euo pipefail

PKG="${CROSS_PACKAGE:-rpi-client}"
CARGO="${CARGO:-cargo}"
DEBIAN_RUSTC=/usr/bin/rustc

die() { echo "cross: error: $*" >&2; exit 1; }
note() { echo "cross: $*" >&2; }

usage() {
  sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit "${1:-2}"
}

which_arg=""
smoke=0
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) smoke=1; shift ;;
    -p|--package)
      [ $# -ge 2 ] || die "$1 needs a package name"
      PKG="$2"; shift 2 ;;
    --package=*) PKG="${1#--package=}"; shift ;;
    -h|--help) usage 0 ;;
    armv7|aarch64|all)
      [ -z "$which_arg" ] || die "only one of armv7, aarch64, all may be given"
      which_arg="$1"; shift ;;
    *) echo "cross: error: unknown argument: $1" >&2; usage 2 ;;
  esac
done
[ -n "$PKG" ] || die "empty package name"
case "${which_arg:-armv7}" in
  armv7) targets=(armv7) ;;
  aarch64) targets=(aarch64) ;;
  all) targets=(armv7 aarch64) ;;
esac

# Per-target facts.
triple_of() { case "$1" in armv7) echo armv7-unknown-linux-gnueabihf ;; aarch64) echo aarch64-unknown-linux-gnu ;; esac; }
debarch_of() { case "$1" in armv7) echo armhf ;; aarch64) echo arm64 ;; esac; }
gnu_of() { case "$1" in armv7) echo arm-linux-gnueabihf ;; aarch64) echo aarch64-linux-gnu ;; esac; }
qemu_of() { case "$1" in armv7) echo qemu-arm ;; aarch64) echo qemu-aarch64 ;; esac; }

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# CROSS_WORKSPACE: build another cargo workspace instead of this repository (used to test the script).
cd "${CROSS_WORKSPACE:-$REPO}"

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || die "need root or sudo to install packages"
  SUDO=(sudo)
fi

# dpkg says "install ok installed" for a fully installed package (arch-qualified names work).
is_installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }
installed_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null; }
# Versions apt knows for a package, newest first (apt-cache madison lists them in that order).
known_versions() { apt-cache madison "$1" 2>/dev/null | awk -F'|' '{gsub(/ /, "", $2); print $2}' | awk '!seen[$0]++'; }

apt_updated=0
apt_update() {
  [ "$apt_updated" -eq 1 ] && return 0
  note "apt-get update (a failing foreign-architecture index is tolerated)"
  "${SUDO[@]}" apt-get update -q || note "apt-get update reported errors; continuing with the indexes that did download"
  apt_updated=1
}
apt_install() {
  note "installing: $*"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

# Newest version of $1 that apt offers for the native architecture (when it is installed there)
# and for every architecture in $2.. .
common_version() {
  local pkg="$1" v a ok
  shift
  local lists=()
  is_installed "$pkg:$(dpkg --print-architecture)" && lists+=("$pkg")
  for a in "$@"; do lists+=("$pkg:$a"); done
  for v in $(known_versions "${lists[0]}"); do
    ok=1
    for a in "${lists[@]:1}"; do known_versions "$a" | grep -qxF "$v" || { ok=0; break; }; done
    [ "$ok" -eq 1 ] && { echo "$v"; return 0; }
  done
  return 1
}

# apt-get install of "$@" (which may hold name=version pins). Multi-Arch: same libraries must have
# one version across architectures; when a foreign index lags behind (a failing security index for
# armhf, an old native package) apt's candidates disagree and it gives up with
# "Depends: libfoo:armhf ... but it is not going to be installed". Then pin libfoo, on the native
# and the foreign architectures, to the newest version they all have, and try again.
apt_install_pinned() {
  local args=("$@") out names n v arches
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    if out="$(LC_ALL=C "${SUDO[@]}" apt-get install -s --no-install-recommends --allow-downgrades "${args[@]}" 2>&1)"; then
      apt_install --allow-downgrades "${args[@]}"
      return
    fi
    mapfile -t names < <(printf '%s\n' "$out" \
      | sed -n 's/.*Depends: \([^ :]*\):\([a-z0-9]*\) .*but .*/\1 \2/p' | sort -u)
    [ ${#names[@]} -gt 0 ] || { printf '%s\n' "$out" >&2; die "apt cannot install: ${args[*]}"; }
    local progressed=0
    while read -r n; do
      [ -n "$n" ] || continue
      case " ${args[*]} " in *" $n="*) continue ;; esac
      mapfile -t arches < <(printf '%s\n' "${names[@]}" | awk -v n="$n" '$1 == n {print $2}')
      v="$(common_version "$n" "${arches[@]}" || true)"
      [ -n "$v" ] || continue
      note "pinning $n=$v on $(dpkg --print-architecture) and ${arches[*]} (Multi-Arch: same versions must agree)"
      is_installed "$n:$(dpkg --print-architecture)" && args+=("$n=$v")
      for a in "${arches[@]}"; do args+=("$n:$a=$v"); done
      progressed=1
    done < <(printf '%s\n' "${names[@]}" | awk '{print $1}' | sort -u)
    [ "$progressed" -eq 1 ] || { printf '%s\n' "$out" >&2; die "apt cannot install: ${args[*]}"; }
  done
  die "gave up resolving the installation of: ${args[*]}"
}

rustup_has_target() {
  command -v rustup >/dev/null 2>&1 && rustup target list --installed 2>/dev/null | grep -qx "$1"
}

# Decide the route of every target.
rustup_targets=()
debian_targets=()
for t in "${targets[@]}"; do
  if rustup_has_target "$(triple_of "$t")"; then rustup_targets+=("$t"); else debian_targets+=("$t"); fi
done

# Linkers (needed by both routes) and qemu (to run the result).
need=()
for t in "${targets[@]}"; do
  if command -v dpkg-query >/dev/null 2>&1; then
    # The C cross compiler only recommends its libc headers/crt files; C code (ring) needs them.
    for p in "gcc-$(gnu_of "$t")" "libc6-dev-$(debarch_of "$t")-cross"; do
      is_installed "$p" || need+=("$p")
    done
  else
    command -v "$(gnu_of "$t")-gcc" >/dev/null 2>&1 || die "no $(gnu_of "$t")-gcc linker; install it"
  fi
done
command -v qemu-arm >/dev/null 2>&1 || need+=(qemu-user)

if [ ${#debian_targets[@]} -gt 0 ]; then
  { command -v dpkg >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; } \
    || die "target(s) ${debian_targets[*]} are not installed in rustup and this is not a Debian system; run: rustup target add $(for t in "${debian_targets[@]}"; do printf '%s ' "$(triple_of "$t")"; done)"
  native_arch="$(dpkg --print-architecture)"
  for t in "${debian_targets[@]}"; do
    a="$(debarch_of "$t")"
    if [ "$a" != "$native_arch" ] && ! dpkg --print-foreign-architectures | grep -qx "$a"; then
      note "adding dpkg architecture $a"
      "${SUDO[@]}" dpkg --add-architecture "$a"
      apt_updated=0
      apt_update
    fi
  done

  # The std of every foreign arch must have the very version of rustc-web (and of the native
  # libstd-rust-web-dev: the package is Multi-Arch: same).
  std_pkgs=()
  for t in "${debian_targets[@]}"; do std_pkgs+=("libstd-rust-web-dev:$(debarch_of "$t")"); done
  all_ok=1
  cur=""
  if is_installed rustc-web; then
    cur="$(installed_version rustc-web)"
    for p in "${std_pkgs[@]}"; do
      if ! is_installed "$p" || [ "$(installed_version "$p")" != "$cur" ]; then all_ok=0; fi
    done
  else
    all_ok=0
  fi

  if [ "$all_ok" -eq 0 ]; then
    [ -n "$cur" ] && note "rustc-web $cur is installed"
    # Pick the version: the installed rustc-web's if every std is available at it, otherwise the
    # newest version available for rustc-web and every needed std.
    pick_version() {
      local v p ok
      for v in "$@"; do
        ok=1
        for p in "${std_pkgs[@]}"; do known_versions "$p" | grep -qxF "$v" || { ok=0; break; }; done
        [ "$ok" -eq 1 ] && { echo "$v"; return 0; }
      done
      return 1
    }
    ver=""
    if [ -n "$cur" ]; then ver="$(pick_version "$cur" || true)"; fi
    if [ -z "$ver" ]; then
      mapfile -t cands < <(known_versions rustc-web)
      if [ ${#cands[@]} -eq 0 ]; then apt_update; mapfile -t cands < <(known_versions rustc-web); fi
      [ ${#cands[@]} -gt 0 ] || die "apt knows no rustc-web package (is this Debian bookworm or newer?)"
      ver="$(pick_version "${cands[@]}" || true)"
      if [ -z "$ver" ] && [ "$apt_updated" -eq 0 ]; then
        apt_update
        mapfile -t cands < <(known_versions rustc-web)
        ver="$(pick_version "${cands[@]}" || true)"
      fi
      [ -n "$ver" ] || die "no version of rustc-web (${cands[*]}) is available for all of: ${std_pkgs[*]}; check 'apt-cache policy rustc-web ${std_pkgs[*]}'"
    fi
    if [ -n "$cur" ] && [ "$cur" != "$ver" ]; then
      note "rustc-web $cur has no matching ${std_pkgs[*]}; switching rustc-web to $ver"
    fi
    note "using rustc-web $ver (pinned with =$ver)"
    pins=("rustc-web=$ver" "libstd-rust-web-dev=$ver")
    for p in "${std_pkgs[@]}"; do pins+=("$p=$ver"); done
    apt_install_pinned "${pins[@]}" "${need[@]}"
    need=()
  else
    note "rustc-web $cur and ${std_pkgs[*]} are installed"
  fi
  [ -x "$DEBIAN_RUSTC" ] || die "$DEBIAN_RUSTC is missing although rustc-web is installed"
fi

if [ ${#need[@]} -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 || die "missing ${need[*]}; install them by hand"
  if ! apt_install "${need[@]}"; then
    apt_update
    apt_install "${need[@]}"
  fi
fi

command -v "$CARGO" >/dev/null 2>&1 || die "cargo not found (set CARGO=/path/to/cargo or install cargo)"

# cargo metadata tells where the target dir is (honours CARGO_TARGET_DIR).
target_dir="$("$CARGO" metadata --format-version 1 --no-deps 2>/dev/null \
  | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
[ -n "$target_dir" ] || target_dir="${CARGO_TARGET_DIR:-$PWD/target}"

status=0
for t in "${targets[@]}"; do
  triple="$(triple_of "$t")"
  gnu="$(gnu_of "$t")"
  up="$(echo "$triple" | tr 'a-z-' 'A-Z_')"
  low="$(echo "$triple" | tr '-' '_')"
  envs=(
    "CARGO_TARGET_${up}_LINKER=${gnu}-gcc"
    "CC_${low}=${gnu}-gcc"
    "AR_${low}=${gnu}-ar"
    "CARGO_PROFILE_RELEASE_STRIP=symbols"
  )
  route=rustup
  for d in "${debian_targets[@]}"; do
    [ "$d" = "$t" ] && { route=debian; envs+=("RUSTC=$DEBIAN_RUSTC"); }
  done
  note "building $PKG for $triple (toolchain: $route)"
  echo "+ env ${envs[*]} $CARGO build --release --target $triple -p $PKG" >&2
  if ! env "${envs[@]}" "$CARGO" build --release --target "$triple" -p "$PKG"; then
    echo "cross: error: build of $PKG for $triple failed" >&2
    status=1
    continue
  fi
  bin="$target_dir/$triple/release/$PKG"
  if [ ! -f "$bin" ]; then
    echo "cross: error: build succeeded but there is no binary $bin (library-only package, or a binary named differently from the package?)" >&2
    status=1
    continue
  fi
  size="$(stat -c %s "$bin")"
  glibc="$("${gnu}-objdump" -T "$bin" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n 1 || true)"
  echo "cross: built $bin"
  echo "cross:   size: $size bytes ($(( (size + 1023) / 1024 )) KiB)"
  if command -v file >/dev/null 2>&1; then echo "cross:   $(file -b "$bin")"; fi
  [ -n "$glibc" ] && echo "cross:   needs glibc symbols up to ${glibc#GLIBC_} on the Pi"
  echo "cross:   run locally with: $(qemu_of "$t") -L /usr/$gnu -E LD_LIBRARY_PATH=/usr/$gnu/lib $bin"
  if [ "$smoke" -eq 1 ]; then
    "$REPO/scripts/qemu-smoke.sh" "$bin" "$(qemu_of "$t")" "/usr/$gnu" || status=1
  fi
done
exit "$status"
