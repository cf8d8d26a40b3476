#!/usr/bin/env bash
# The static node binary does not depend on where it was built: builds it again from a copy of
# this checkout in another directory, with another CARGO_HOME (the registry copied, offline), and
# fails unless the two x86_64 binaries are byte-identical. An auditor rebuilding the firmware gets
# the same bytes, and no build-machine path goes into it (scripts/static.sh remaps them).
# The copy is a git checkout of the same commit (a shared clone) with this working tree's files
# on top (uncommitted edits and untracked, not ignored files included), so that what records the
# commit (the image manifest) records the same one there.
# Needs the first build: run scripts/static.sh before.
# REPRODUCIBLE_WORK=dir: work there (created, must be empty) and keep it: dir/elsewhere/checkout
# (the copy, with its static binary) and dir/cargo-home, for image/reproducible-bundle.sh, which
# builds the bundle from that copy too. Without it, a temporary directory, removed at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
FIRST=$ROOT/target/x86_64-unknown-linux-musl/release/bsfg
[ -x "$FIRST" ] || { echo "no static build at $FIRST: run scripts/static.sh first" >&2; exit 1; }
CARGO_HOME_DIR=${CARGO_HOME:-$HOME/.cargo}

if [ -n "${REPRODUCIBLE_WORK:-}" ]; then
    work=$REPRODUCIBLE_WORK
    mkdir -p "$work"
    [ -z "$(ls -A "$work")" ] || { echo "REPRODUCIBLE_WORK=$work is not empty" >&2; exit 1; }
    work=$(cd "$work" && pwd)
else
    work=$(mktemp -d /tmp/bsfg-reproducible.XXXXXX)
    trap 'rm -rf "$work"' EXIT
fi
copy=$work/elsewhere/checkout
mkdir -p "$work/cargo-home" "$work/elsewhere"
cp -a "$CARGO_HOME_DIR/registry" "$work/cargo-home/"
if commit=$(git rev-parse --verify -q HEAD); then
    # The same commit, its objects borrowed from this repository (nothing written to it).
    git clone --quiet --shared --no-checkout "$ROOT" "$copy"
    git -C "$copy" reset --quiet "$commit"
else
    mkdir -p "$copy"
fi
# The files as they are in the working tree: tracked (uncommitted edits included) and untracked
# but not ignored; a tracked file deleted here is left out.
git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do
        if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi
    done | tar --null -T - -c | tar -x -C "$copy"

# rustup's proxies stay on PATH; only the cargo home and the directory change.
(cd "$copy" &&
    env -u CARGO_TARGET_DIR CARGO_HOME="$work/cargo-home" CARGO_NET_OFFLINE=true \
        STATIC_TARGETS=x86_64 PATH="$CARGO_HOME_DIR/bin:$PATH" scripts/static.sh)

SECOND=$copy/target/x86_64-unknown-linux-musl/release/bsfg
a=$(sha256sum "$FIRST" | cut -d' ' -f1)
b=$(sha256sum "$SECOND" | cut -d' ' -f1)
echo "here:      $a  ($ROOT, CARGO_HOME=$CARGO_HOME_DIR)"
echo "elsewhere: $b  ($copy, CARGO_HOME=$work/cargo-home)"
if [ "$a" != "$b" ]; then
    echo "FAIL: the static binary depends on where it was built" >&2
    cmp "$FIRST" "$SECOND" | head -1 >&2 || true
    exit 1
fi
echo "ok: byte-identical static binaries from two directories and two cargo homes"
