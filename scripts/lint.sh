#!/usr/bin/env bash
# Runs every linter (`make lint`): cargo fmt --check, cargo clippy --all-targets -D warnings,
# buf lint on proto/, shellcheck on every *.sh under scripts/ tests/ image/ hardening/
# yocto-layer/ plus .ci/run and the shell programs in image/ without the ending (initrd /init), a syntax check of the two test clients, oelint-adv on the Yocto
# layer's recipes and a check that its crate list matches Cargo.lock. Runs them all, prints one
# line per linter, and exits non-zero if any failed. Expects scripts/setup.sh to have run.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BUF=$ROOT/tests/clients/node/node_modules/.bin/buf
PY=${BSFG_PY:-$ROOT/.tools/venv/bin/python}
OELINT=$ROOT/.tools/venv/bin/oelint-adv

results=()
failures=0
# record RC NAME: remembers one linter's outcome for the summary.
record() {
    if [ "$1" -eq 0 ]; then
        results+=("ok      $2")
    else
        results+=("FAILED  $2")
        failures=$((failures + 1))
    fi
}

shell_scripts() {
    local dirs=() d
    for d in scripts tests image hardening yocto-layer; do [ -d "$d" ] && dirs+=("$d"); done
    if ((${#dirs[@]})); then
        find "${dirs[@]}" -type f -name '*.sh' -not -path '*/node_modules/*' -not -path '*/gen/*'
    fi
    if [ -f .ci/run ]; then echo .ci/run; fi
    # Shell programs without the .sh ending: the appliance's initrd /init and helpers.
    if [ -d image ]; then
        grep -rlE '^#!(/usr)?/bin/(env )?(ba)?sh' image --exclude='*.sh' || true
    fi
}

echo "--- lint: cargo fmt --check"
rc=0
cargo fmt --all -- --check || rc=$?
record "$rc" "cargo fmt --check"

echo "--- lint: cargo clippy --all-targets --features sandbox-selftest -- -D warnings"
rc=0
cargo clippy --all-targets --features sandbox-selftest -- -D warnings || rc=$?
record "$rc" "cargo clippy --all-targets -D warnings"

echo "--- lint: buf lint"
rc=0
"$BUF" lint || rc=$?
record "$rc" "buf lint (proto/, STANDARD)"

mapfile -t scripts < <(shell_scripts | sort)
echo "--- lint: shellcheck (${#scripts[@]} files)"
rc=0
shellcheck -x "${scripts[@]}" || rc=$?
record "$rc" "shellcheck (${#scripts[@]} files)"

echo "--- lint: test clients (syntax)"
rc=0
node --check tests/clients/node/call.mjs || rc=$?
for client in tests/clients/python/call.py tests/clients/python/grpc_call.py; do
    "$PY" -c 'import ast, sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])' "$client" || rc=$?
done
record "$rc" "test clients (node --check, python ast)"

# The Yocto layer is linted, not built (no bitbake here): every finding fails, whatever its
# severity; the few inline suppressions in the recipes say why (yocto-layer/README.md).
mapfile -t recipes < <(find yocto-layer -type f \( -name '*.bb' -o -name '*.bbappend' \
    -o -name '*.inc' -o -name '*.bbclass' \) | sort)
echo "--- lint: oelint-adv --release scarthgap (${#recipes[@]} files)"
rc=0
"$OELINT" --release scarthgap --suppress oelint.vars.homepageping --quiet "${recipes[@]}" || rc=$?
record "$rc" "oelint-adv (yocto-layer/, ${#recipes[@]} files)"

echo "--- lint: yocto-layer crate list"
rc=0
yocto-layer/scripts/gen-crates-inc.sh --check || rc=$?
record "$rc" "yocto-layer bsfg-crates.inc matches Cargo.lock"

echo "--- lint: summary"
printf '%s\n' "${results[@]}"
exit $((failures > 0))
