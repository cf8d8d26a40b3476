#!/usr/bin/env bash
# Builds the release `bsfg` for x86_64-unknown-linux-musl (`make static`) and proves it is fully
# static: `file` must say "statically linked" / "static-pie linked" and `ldd` must find no
# dynamic dependencies. Also cross-builds aarch64-unknown-linux-musl when that target and a cross
# C compiler are installed (see docs/static.md); `STATIC_TARGETS=x86_64` builds the host's only
# (what `make demo` and `make image` boot). Prints each binary's size.
#
# No build-machine path goes into the firmware: the cargo home and this checkout are remapped
# (panic locations then read /cargo/registry/... and /bsfg/...), and check_static fails if either
# path, or $HOME, still appears in a binary. Two checkouts with different CARGO_HOME build the
# same bytes (docs/static.md, "Reproducible").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
CARGO_HOME_DIR=${CARGO_HOME:-$HOME/.cargo}
remap=(--remap-path-prefix="$CARGO_HOME_DIR=/cargo" --remap-path-prefix="$ROOT=/bsfg")
real_home=$(realpath -m "$CARGO_HOME_DIR")
[ "$real_home" = "$CARGO_HOME_DIR" ] || remap+=(--remap-path-prefix="$real_home=/cargo")
real_root=$(realpath -m "$ROOT")
[ "$real_root" = "$ROOT" ] || remap+=(--remap-path-prefix="$real_root=/bsfg")
RUSTFLAGS="${RUSTFLAGS:-} ${remap[*]}"
export RUSTFLAGS
targets=${STATIC_TARGETS:-x86_64 aarch64}

check_static() { # BINARY
  local info
  info=$(file -L "$1")
  echo "$info"
  if ! grep -Eq 'statically linked|static-pie linked' <<<"$info"; then
    echo "FAIL: $1 is not statically linked" >&2
    return 1
  fi
  if ldd "$1" 2>&1 | grep '=>' >/dev/null; then
    echo "FAIL: ldd lists dynamic dependencies of $1" >&2
    ldd "$1" >&2 || true
    return 1
  fi
  local path
  for path in "$CARGO_HOME_DIR" "$ROOT" "$HOME"; do
    [ "${#path}" -gt 1 ] || continue # HOME=/ would match every URL
    if grep -qaF "$path/" "$1"; then
      echo "FAIL: $1 contains the build machine's path $path/ (grep -aoF \"$path/\" $1)" >&2
      return 1
    fi
  done
  printf 'size: %s bytes (%s)\n' "$(stat -c %s "$1")" "$(du -h "$1" | cut -f1)"
}

cargo build --release --target x86_64-unknown-linux-musl --bin bsfg
check_static target/x86_64-unknown-linux-musl/release/bsfg

if [[ " $targets " != *" aarch64 "* ]]; then
  echo "aarch64-unknown-linux-musl: not asked for (STATIC_TARGETS=$targets)"
elif rustup target list --installed | grep -x aarch64-unknown-linux-musl >/dev/null && command -v aarch64-linux-gnu-gcc >/dev/null; then
  CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc \
    cargo build --release --target aarch64-unknown-linux-musl --bin bsfg
  check_static target/aarch64-unknown-linux-musl/release/bsfg
else
  echo "aarch64-unknown-linux-musl: target or aarch64-linux-gnu-gcc not installed; skipped (see docs/static.md)"
fi
