#!/usr/bin/env bash
# Builds the release `bsfg` for x86_64-unknown-linux-musl (`make static`) and proves it is fully
# static: `file` must say "statically linked" / "static-pie linked" and `ldd` must find no
# dynamic dependencies. Also cross-builds aarch64-unknown-linux-musl when that target and a cross
# C compiler are installed (see docs/static.md). Prints each binary's size.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

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
  printf 'size: %s bytes (%s)\n' "$(stat -c %s "$1")" "$(du -h "$1" | cut -f1)"
}

cargo build --release --target x86_64-unknown-linux-musl --bin bsfg
check_static target/x86_64-unknown-linux-musl/release/bsfg

if rustup target list --installed | grep -x aarch64-unknown-linux-musl >/dev/null && command -v aarch64-linux-gnu-gcc >/dev/null; then
  CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc \
    cargo build --release --target aarch64-unknown-linux-musl --bin bsfg
  check_static target/aarch64-unknown-linux-musl/release/bsfg
else
  echo "aarch64-unknown-linux-musl: target or aarch64-linux-gnu-gcc not installed; skipped (see docs/static.md)"
fi
