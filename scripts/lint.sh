#!/usr/bin/env bash
# Runs every linter (`make lint`): cargo fmt --check, cargo clippy --all-targets -D warnings,
# buf lint on proto/, shellcheck on every *.sh under scripts/ tests/ image/ hardening/ plus
# .ci/run, and a syntax check of the two test clients. Runs them all, prints one line per
# linter, and exits non-zero if any failed. Expects scripts/setup.sh to have run.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BUF=$ROOT/tests/clients/node/node_modules/.bin/buf
PY=${BSFG_PY:-$ROOT/.tools/venv/bin/python}

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
    for d in scripts tests image hardening; do [ -d "$d" ] && dirs+=("$d"); done
    if ((${#dirs[@]})); then
        find "${dirs[@]}" -type f -name '*.sh' -not -path '*/node_modules/*' -not -path '*/gen/*'
    fi
    if [ -f .ci/run ]; then echo .ci/run; fi
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
"$PY" -c 'import ast, sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])' \
    tests/clients/python/call.py || rc=$?
record "$rc" "test clients (node --check, python ast)"

echo "--- lint: summary"
printf '%s\n' "${results[@]}"
exit $((failures > 0))
