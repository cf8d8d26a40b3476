#!/usr/bin/env bash
# The static node binary does not depend on where it was built: builds it again from a copy of
# this checkout in another directory, with another CARGO_HOME (the registry copied, offline), and
# fails unless the two x86_64 binaries are byte-identical. An auditor rebuilding the firmware gets
# the same bytes, and no build-machine path goes into it (scripts/static.sh remaps them).
# Needs the first build: run scripts/static.sh before.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
FIRST=$ROOT/target/x86_64-unknown-linux-musl/release/bsfg
[ -x "$FIRST" ] || { echo "no static build at $FIRST: run scripts/static.sh first" >&2; exit 1; }
CARGO_HOME_DIR=${CARGO_HOME:-$HOME/.cargo}

work=$(mktemp -d /tmp/bsfg-reproducible.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/cargo-home" "$work/elsewhere/checkout"
cp -a "$CARGO_HOME_DIR/registry" "$work/cargo-home/"
# The tracked files as they are in the working tree (uncommitted edits included).
git ls-files -z | tar --null -T - -c | tar -x -C "$work/elsewhere/checkout"

# rustup's proxies stay on PATH; only the cargo home and the directory change.
(cd "$work/elsewhere/checkout" &&
    env -u CARGO_TARGET_DIR CARGO_HOME="$work/cargo-home" CARGO_NET_OFFLINE=true \
        STATIC_TARGETS=x86_64 PATH="$CARGO_HOME_DIR/bin:$PATH" scripts/static.sh)

SECOND=$work/elsewhere/checkout/target/x86_64-unknown-linux-musl/release/bsfg
a=$(sha256sum "$FIRST" | cut -d' ' -f1)
b=$(sha256sum "$SECOND" | cut -d' ' -f1)
echo "here:      $a  ($ROOT, CARGO_HOME=$CARGO_HOME_DIR)"
echo "elsewhere: $b  ($work/elsewhere/checkout, CARGO_HOME=$work/cargo-home)"
if [ "$a" != "$b" ]; then
    echo "FAIL: the static binary depends on where it was built" >&2
    cmp "$FIRST" "$SECOND" | head -1 >&2 || true
    exit 1
fi
echo "ok: byte-identical static binaries from two directories and two cargo homes"
