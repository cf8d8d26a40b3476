#!/usr/bin/env bash
# The aarch64 static binary (cross-built by scripts/static.sh) run on this x86_64 machine under
# qemu-user (qemu-aarch64-static), against the real x86_64 nats-server, over real mTLS:
#   1. with its sandbox on, the node must refuse to serve and name the step that failed — qemu-user
#      does not implement seccomp(2), so this shows the refusal path on ARM;
#   2. with --insecure-no-sandbox (added by a wrapper, for `serve` only), the integration tests of
#      the RPCs (replay, idempotency, artifacts, authorization) pass against it.
# The sandbox itself on ARM needs ARM hardware; docs/static.md says what is and is not shown.
# Arguments go to cargo test (after the test selection).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

die() { echo "error: $*" >&2; exit 1; }

BIN=$ROOT/target/aarch64-unknown-linux-musl/release/bsfg
QEMU=$(command -v qemu-aarch64-static) || die "qemu-aarch64-static not found: run make setup"
[ -x "$BIN" ] || die "no aarch64 build at $BIN: run scripts/static.sh"
file -L "$BIN" | grep -q 'ARM aarch64' || die "$BIN is not an aarch64 binary: $(file -L "$BIN")"

work=$(mktemp -d /tmp/bsfg-aarch64.XXXXXX)
trap 'rm -rf "$work"' EXIT

echo "--- 1. aarch64 node, sandbox on, under qemu-user (no seccomp there): must refuse to serve"
"$QEMU" "$BIN" --version
"$QEMU" "$BIN" dev-pki --out "$work/pki" --zone plant-a >/dev/null
cat >"$work/bsfg.toml" <<TOML
zone = "plant-a"
[listen]
address = "127.0.0.1:0"
[tls]
certificate = "$work/pki/plant-a-bsfg.pem"
private_key = "$work/pki/plant-a-bsfg.key"
client_ca = "$work/pki/ca.pem"
TOML
"$QEMU" "$BIN" check-config --config "$work/bsfg.toml"
rc=0
timeout 60 "$QEMU" "$BIN" serve --config "$work/bsfg.toml" >"$work/serve.log" 2>&1 || rc=$?
if [ "$rc" -eq 0 ] || [ "$rc" -eq 124 ] || ! grep -q 'refusing to serve: seccomp' "$work/serve.log"; then
    cat "$work/serve.log" >&2
    die "the aarch64 node did not refuse to serve without seccomp (exit $rc)"
fi
echo "ok: exit $rc, $(grep -o 'refusing to serve: seccomp[^(]*' "$work/serve.log" | head -1)"

echo "--- 2. aarch64 node, --insecure-no-sandbox, under qemu-user: integration tests"
cat >"$work/bsfg" <<SH
#!/bin/sh
# bsfg (aarch64) under qemu-user; qemu-user has no seccomp, so serve runs without the sandbox.
[ "\$1" = serve ] && { echo "\$*" >>"$work/served"; set -- "\$@" --insecure-no-sandbox; }
exec "$QEMU" "$BIN" "\$@"
SH
chmod +x "$work/bsfg"
BSFG_BIN=$work/bsfg cargo test --test replay --test idempotency --test objects --test authorization "$@"
# Every node those tests started was the aarch64 build under qemu-user (not cargo's x86_64 one).
served=$(wc -l <"$work/served" 2>/dev/null || echo 0)
[ "$served" -gt 0 ] || die "no test started the aarch64 node"
echo "ok: the tests started the aarch64 node $served times under $QEMU"
