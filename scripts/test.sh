#!/usr/bin/env bash
# `make test`: runs scripts/setup.sh, then scripts/lint.sh, then scripts/check-units.sh (the
# appliance's systemd units, nftables, sysctl and nats-server.conf), then `cargo test
# --all-targets` (extra arguments go to cargo test) with the BSFG_* variables that tell the tests
# where the tools are, then scripts/aarch64.sh (the ARM build under qemu-user), then the appliance
# firmware (image/build.sh, image/test.sh; then image/reproducible-bundle.sh, the bundle again from
# the copy scripts/reproducible.sh built the binary in; then the A/B upgrades of
# image/upgrade-test.sh: needs root, as the units check does), and ends with a
# summary: one line per phase and a total "tests: N passed, N failed, N skipped". Lint and
# check-units failures do not stop the tests; a setup failure stops everything. Exits non-zero if
# any phase failed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export BSFG_NATS_SERVER=${BSFG_NATS_SERVER:-$ROOT/.tools/bin/nats-server}
export BSFG_NODE_CLIENT=${BSFG_NODE_CLIENT:-$ROOT/tests/clients/node/call.mjs}
export BSFG_PY=${BSFG_PY:-$ROOT/.tools/venv/bin/python}
export BSFG_PY_CLIENT=${BSFG_PY_CLIENT:-$ROOT/tests/clients/python/call.py}

log=$(mktemp)
# The copy of the checkout that scripts/reproducible.sh builds the binary in, kept for
# image/reproducible-bundle.sh.
repro_work=$(mktemp -d /tmp/bsfg-reproducible.XXXXXX)
trap 'rm -f "$log"; rm -rf "$repro_work"' EXIT
phases=()
failed=0
totals="0 0 0"

# phase NAME DETAIL RC SECONDS: records one summary line.
phase() {
    local status=ok
    if [ "$3" -ne 0 ]; then
        status=FAILED
        failed=1
    fi
    phases+=("$(printf '%-12s %-7s %5ss  %s' "$1" "$status" "$4" "$2")")
}

summary() {
    echo
    echo "==================== make test: summary ===================="
    printf '%s\n' "${phases[@]}"
    echo "tool env: BSFG_NATS_SERVER=$BSFG_NATS_SERVER"
    echo "          BSFG_NODE_CLIENT=$BSFG_NODE_CLIENT"
    echo "          BSFG_PY=$BSFG_PY BSFG_PY_CLIENT=$BSFG_PY_CLIENT"
    echo "============================================================"
    read -r passed failed_tests skipped <<<"$totals"
    echo "tests: $passed passed, $failed_tests failed, $skipped skipped"
    if [ "$failed" -ne 0 ]; then echo "make test: FAILED"; else echo "make test: OK"; fi
}

echo "=== setup"
start=$SECONDS
rc=0
scripts/setup.sh || rc=$?
phase setup "scripts/setup.sh" "$rc" $((SECONDS - start))
if [ "$rc" -ne 0 ]; then
    summary
    exit 1
fi

echo "=== lint"
start=$SECONDS
rc=0
scripts/lint.sh || rc=$?
phase lint "scripts/lint.sh (fmt, clippy, buf lint, shellcheck)" "$rc" $((SECONDS - start))

echo "=== check-units"
start=$SECONDS
rc=0
scripts/check-units.sh || rc=$?
phase check-units "scripts/check-units.sh (systemd verify + security, nftables, sysctl, nats-server.conf)" "$rc" $((SECONDS - start))

echo "=== static binaries (make static): fully static, sizes"
start=$SECONDS
rc=0
scripts/static.sh || rc=$?
phase static "scripts/static.sh (musl, statically linked, no dynamic deps)" "$rc" $((SECONDS - start))

echo "=== reproducible: the static binary built again elsewhere, with another CARGO_HOME"
start=$SECONDS
rc=0
REPRODUCIBLE_WORK=$repro_work scripts/reproducible.sh || rc=$?
phase reproducible "scripts/reproducible.sh (byte-identical from another directory and cargo home)" "$rc" $((SECONDS - start))

echo "=== units under a real systemd: both sandbox layers together (static binary)"
start=$SECONDS
rc=0
scripts/check-units-live.sh target/x86_64-unknown-linux-musl/release/bsfg || rc=$?
phase check-units-live "scripts/check-units-live.sh (systemd-nspawn: unit sandbox + node sandbox, READY, watchdog)" "$rc" $((SECONDS - start))

echo "=== cargo test --all-targets --features sandbox-selftest $*"
start=$SECONDS
rc=0
{
  cargo test --all-targets --no-fail-fast --features sandbox-selftest "$@" 2>&1 || exit "$?"
  # The sandbox again, on the static musl binary (with the test-only triggers, no LTO).
  cargo build --profile static-selftest --target x86_64-unknown-linux-musl --features sandbox-selftest --bin bsfg 2>&1 &&
    BSFG_BIN="$PWD/target/x86_64-unknown-linux-musl/static-selftest/bsfg" \
      cargo test --features sandbox-selftest --test sandbox "$@" 2>&1
} | tee "$log" || rc=${PIPESTATUS[0]}
# count_tests LOG: "passed failed ignored binaries", summed over the "test result: ok. 3 passed;
# 0 failed; 1 ignored; ..." lines of every test binary in LOG.
count_tests() {
    awk '/^test result:/ {
        for (i = 1; i <= NF; i++) {
            if ($(i) ~ /^passed/) p += $(i - 1)
            if ($(i) ~ /^failed/) f += $(i - 1)
            if ($(i) ~ /^ignored/) s += $(i - 1)
        }
        n++
    } END { printf "%d %d %d %d\n", p, f, s, n }' "$1"
}
read -r passed failed_tests skipped binaries < <(count_tests "$log")
totals="$passed $failed_tests $skipped"
phase "cargo test" "$passed passed, $failed_tests failed, $skipped ignored in $binaries test binaries" "$rc" $((SECONDS - start))

echo "=== aarch64: the cross-built static binary under qemu-user against the real nats-server"
start=$SECONDS
rc=0
scripts/aarch64.sh 2>&1 | tee "$log" || rc=${PIPESTATUS[0]}
read -r a_passed a_failed a_skipped binaries < <(count_tests "$log")
if [ "$rc" -ne 0 ] && [ "$a_failed" -eq 0 ]; then a_failed=1; fi
read -r passed failed_tests skipped <<<"$totals"
totals="$((passed + a_passed)) $((failed_tests + a_failed)) $((skipped + a_skipped))"
phase aarch64 "scripts/aarch64.sh (refuses to serve without seccomp; $a_passed passed, $a_failed failed under qemu-user)" "$rc" $((SECONDS - start))

echo "=== appliance firmware: make image, then make image-test (QEMU boots of the image)"
start=$SECONDS
rc=0
{ image/build.sh && image/test.sh; } 2>&1 | tee "$log" || rc=${PIPESTATUS[0]}
# "image-test: 22 passed, 0 failed" (a build failure counts as one failed check).
read -r image_passed image_failed < <(sed -n 's/^image-test: \([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' "$log" | tail -1) || true # no line: the script died first (counted below)
image_passed=${image_passed:-0}
image_failed=${image_failed:-0}
if [ "$rc" -ne 0 ] && [ "$image_failed" -eq 0 ]; then image_failed=1; fi
read -r passed failed_tests skipped <<<"$totals"
totals="$((passed + image_passed)) $((failed_tests + image_failed)) $skipped"
phase "image" "image/build.sh + image/test.sh: $image_passed passed, $image_failed failed" "$rc" $((SECONDS - start))

echo "=== reproducible bundle: the image and bundle again from the copy (another directory and CARGO_HOME)"
start=$SECONDS
rc=0
ELSEWHERE=$repro_work image/reproducible-bundle.sh 2>&1 | tee "$log" || rc=${PIPESTATUS[0]}
# "reproducible-bundle: 17 identical, 0 different, 0 leaks"
detail=$(sed -n 's/^reproducible-bundle: //p' "$log" | tail -1)
phase repro-bundle "image/reproducible-bundle.sh (root, verity, UKIs, manifests, bundle; no build path): ${detail:-no result}" "$rc" $((SECONDS - start))

echo "=== A/B upgrades: make upgrade-test (the runbook under QEMU: released, refused, installed, blessed, power cuts, rollback)"
start=$SECONDS
rc=0
image/upgrade-test.sh 2>&1 | tee "$log" || rc=${PIPESTATUS[0]}
read -r up_passed up_failed < <(sed -n 's/^upgrade-test: \([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' "$log" | tail -1) || true # no line: the script died first (counted below)
up_passed=${up_passed:-0}
up_failed=${up_failed:-0}
if [ "$rc" -ne 0 ] && [ "$up_failed" -eq 0 ]; then up_failed=1; fi
read -r passed failed_tests skipped <<<"$totals"
totals="$((passed + up_passed)) $((failed_tests + up_failed)) $skipped"
phase "upgrade" "image/upgrade-test.sh: $up_passed passed, $up_failed failed" "$rc" $((SECONDS - start))

summary
exit "$failed"
