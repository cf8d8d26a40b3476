#!/usr/bin/env bash
# Checks the appliance's OS-side hardening (`make check-units`; `make test` runs it too):
#   verify    systemd-analyze verify on systemd/bsfg.service and systemd/nats-server.service in a
#             scratch root (--root): the units, the example drop-in installed as a real one, stub
#             executables at /usr/bin/bsfg and /usr/bin/nats-server (verify insists that ExecStart
#             exists) and this host's stock units; must print nothing. systemd-sysusers and
#             systemd-tmpfiles --create run on the same root, and each unit's User= must be a
#             user that systemd/sysusers.d creates.
#   security  systemd-analyze security --offline=yes on both units; prints the exposure and fails
#             if bsfg.service > 1.5 or nats-server.service > 2.5.
#   syscalls  bsfg.service's effective SystemCallFilter (worked out as systemd does: the first
#             line is the allow-list, later lines add or, with "~", remove; groups expanded by
#             systemd-analyze) contains the calls the node uses to install its own sandbox and
#             every syscall its seccomp policies (hardening/seccomp/*.json) allow.
#   nftables  nft -c -f hardening/nftables.conf; as root, also loads it in a scratch network
#             namespace wired to a second one and checks what passes and what is dropped.
#   sysctl    hardening/sysctl.d/*.conf: syntax and a comment for every setting; as root, the
#             network settings are applied in a scratch network namespace.
#   nats      nats-server -t on hardening/nats-server.conf with a test secrets.conf; the policy
#             lines (loopback listener, sync_interval always, no no_auth_user, no monitoring,
#             cluster, gateway or leafnode block); then one real start on a random loopback port:
#             an anonymous client and a wrong password are refused, the bsfg user is accepted.
# Prints one line per check and a summary; exits non-zero if any check failed.
# Needs: systemd (systemd-analyze), nftables, iproute2, whois (mkpasswd), jq, python3, and
# nats-server (BSFG_NATS_SERVER, default .tools/bin/nats-server); scripts/setup.sh installs them.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
NATS=${BSFG_NATS_SERVER:-$ROOT/.tools/bin/nats-server}
MAX_BSFG=1.5
MAX_NATS=2.5
# What the node calls to install its sandbox, before its own seccomp filter exists.
SANDBOX_CALLS=(prctl capget capset landlock_create_ruleset landlock_add_rule landlock_restrict_self seccomp)

WORK=$(mktemp -d)
NETNS_A=bsfgchk$$a
NETNS_B=bsfgchk$$b
nats_pid=
listeners=()
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    if [ -n "$nats_pid" ]; then kill "$nats_pid" 2>/dev/null || true; fi
    stop_listeners
    ip netns del "$NETNS_A" 2>/dev/null || true
    ip netns del "$NETNS_B" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

results=()
failures=0
# record RC NAME DETAIL: remembers one check's outcome for the summary.
record() {
    local status=ok
    if [ "$1" -ne 0 ]; then
        status=FAILED
        failures=$((failures + 1))
    fi
    results+=("$(printf '%-7s %-9s %s' "$status" "$2" "$3")")
}
is_root() { [ "$(id -u)" -eq 0 ]; }

# --- verify -------------------------------------------------------------------------------------
check_verify() {
    local root=$WORK/root out rc=0 unit user
    mkdir -p "$root/usr/bin" "$root/usr/lib/systemd" "$root/etc/systemd/system/bsfg.service.d"
    cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
    cp systemd/bsfg.service systemd/nats-server.service "$root/etc/systemd/system/"
    cp systemd/bsfg.service.d/network.conf.example "$root/etc/systemd/system/bsfg.service.d/network.conf"
    for exe in bsfg nats-server; do
        printf '#!/bin/sh\nexit 0\n' >"$root/usr/bin/$exe"
        chmod 0755 "$root/usr/bin/$exe"
    done
    out=$(systemd-analyze verify --root="$root" bsfg.service nats-server.service 2>&1) || rc=$?
    if [ -n "$out" ]; then
        echo "$out"
        rc=1
    fi
    mkdir -p "$root/etc" "$root/usr/lib/sysusers.d" "$root/usr/lib/tmpfiles.d"
    cp systemd/sysusers.d/*.conf "$root/usr/lib/sysusers.d/"
    cp systemd/tmpfiles.d/*.conf "$root/usr/lib/tmpfiles.d/"
    systemd-sysusers --root="$root" >/dev/null 2>&1 || { echo "systemd-sysusers --root failed"; rc=1; }
    systemd-tmpfiles --create --root="$root" bsfg.conf >/dev/null 2>&1 ||
        { echo "systemd-tmpfiles --create --root failed"; rc=1; }
    for unit in bsfg nats-server; do
        user=$(sed -n 's/^User=//p' "systemd/$unit.service")
        grep -q "^$user:" "$root/etc/passwd" || { echo "$unit.service: User=$user is not made by systemd/sysusers.d"; rc=1; }
    done
    if ! [ -d "$root/etc/bsfg" ] || ! [ -d "$root/etc/nats" ]; then
        echo "tmpfiles.d did not make /etc/bsfg and /etc/nats"
        rc=1
    fi
    record "$rc" verify "systemd-analyze verify (2 units + example drop-in), sysusers.d, tmpfiles.d"
}

# --- security -----------------------------------------------------------------------------------
# exposure UNIT_FILE: prints systemd-analyze's overall exposure level of the unit.
exposure() {
    systemd-analyze security --offline=yes --no-pager "$1" 2>/dev/null |
        sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p'
}
check_security() {
    local rc=0 got_bsfg got_nats detail
    got_bsfg=$(exposure systemd/bsfg.service)
    got_nats=$(exposure systemd/nats-server.service)
    detail="exposure bsfg.service ${got_bsfg:-?} (max $MAX_BSFG), nats-server.service ${got_nats:-?} (max $MAX_NATS)"
    echo "$detail"
    awk -v a="${got_bsfg:-99}" -v b="$MAX_BSFG" -v c="${got_nats:-99}" -v d="$MAX_NATS" \
        'BEGIN { exit !(a <= b && c <= d) }' || rc=1
    if [ "$rc" -ne 0 ]; then
        systemd-analyze security --offline=yes --no-pager systemd/bsfg.service systemd/nats-server.service |
            grep '✗' || true
    fi
    record "$rc" security "$detail"
}

# --- syscalls -----------------------------------------------------------------------------------
# expand NAME: one syscall per line; @groups are expanded recursively by systemd-analyze.
expand() {
    local entry
    case $1 in
    @*)
        systemd-analyze syscall-filter "$1" | tail -n +2 | sed -e 's/^ *//' -e '/^#/d' -e '/^$/d' |
            while read -r entry; do expand "$entry"; done
        ;;
    *) echo "$1" ;;
    esac
}
# effective_filter UNIT_FILE: the syscalls the unit's SystemCallFilter= lines allow, one a line.
effective_filter() {
    local -A allowed=()
    local line entry deny name started=0
    while IFS= read -r line; do
        [ -z "$line" ] && { allowed=(); started=0; continue; }
        deny=0
        if [ "${line:0:1}" = "~" ]; then
            deny=1
            line=${line:1}
        fi
        if [ "$started" -eq 0 ] && [ "$deny" -eq 1 ]; then
            echo "effective_filter: $1 starts with a deny-list; only allow-lists are supported" >&2
            return 1
        fi
        started=1
        for entry in $line; do
            while read -r name; do
                if [ "$deny" -eq 1 ]; then unset "allowed[$name]"; else allowed[$name]=1; fi
            done < <(expand "${entry%%:*}")
        done
    done < <(sed -n 's/^SystemCallFilter=//p' "$1")
    printf '%s\n' "${!allowed[@]}" | sort
}
check_syscalls() {
    local rc=0 policy missing detail
    if ! grep -q '^SystemCallFilter=' systemd/bsfg.service; then
        record 0 syscalls "bsfg.service has no SystemCallFilter= (allows every syscall; see security)"
        return
    fi
    effective_filter systemd/bsfg.service >"$WORK/unit-allowed"
    missing=$(printf '%s\n' "${SANDBOX_CALLS[@]}" | sort | comm -23 - "$WORK/unit-allowed" | paste -sd' ')
    if [ -n "$missing" ]; then
        echo "bsfg.service's SystemCallFilter refuses what the node's sandbox needs: $missing"
        rc=1
    fi
    # Every architecture's policy: the unit's filter is by name, the same file on every target.
    local checked=()
    for policy in hardening/seccomp/*.json; do
        [ -f "$policy" ] || continue
        jq -r '.. | objects | .syscall? // empty' "$policy" | sort -u >"$WORK/policy"
        missing=$(comm -23 "$WORK/policy" "$WORK/unit-allowed" | paste -sd' ')
        if [ -n "$missing" ]; then
            echo "$policy allows syscalls that bsfg.service refuses (EPERM): $missing"
            rc=1
        fi
        checked+=("$(basename "$policy" .json) ($(wc -l <"$WORK/policy"))")
    done
    if ((${#checked[@]})); then
        detail="bsfg.service allows the sandbox calls and every syscall of hardening/seccomp/: ${checked[*]}"
    else
        detail="bsfg.service allows the sandbox calls (no hardening/seccomp/*.json yet: not compared)"
    fi
    record "$rc" syscalls "$detail"
}

# --- nftables -----------------------------------------------------------------------------------
# in_ns NS CMD...: runs CMD in network namespace NS.
in_ns() { ip netns exec "$@"; }
# probe NS ADDR PORT: prints "open" if a TCP connection from NS to ADDR:PORT succeeds.
probe() {
    in_ns "$1" python3 -c 'import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=0.7).close(); print("open")
except OSError:
    print("dropped")' "$2" "$3"
}
# listen NS PORT...: TCP listeners on 0.0.0.0 in NS until the namespace's processes are killed.
listen() {
    local ns=$1
    shift
    in_ns "$ns" python3 -c 'import select, socket, sys
socks = []
for port in sys.argv[1:]:
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(port))); s.listen(8); socks.append(s)
print("listening", flush=True)
while True:
    for s in select.select(socks, [], [], 30)[0]: s.accept()[0].close()' "$@" >/dev/null 2>&1 &
    listeners+=("$!")
}
# stop_listeners: ends every process in the scratch namespaces (the listeners; python3 may run
# behind a wrapper such as a pyenv shim, so $! alone is not enough), quietly.
stop_listeners() {
    local pid ns
    for ns in "$NETNS_A" "$NETNS_B"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
    done
    for pid in "${listeners[@]}"; do
        kill "$pid" 2>/dev/null || true
        { wait "$pid"; } 2>/dev/null || true
    done
    listeners=()
}
nft_behaviour() {
    local rc=0 want got what
    ip netns add "$NETNS_A"
    ip netns add "$NETNS_B"
    ip link add "v$$a" netns "$NETNS_A" type veth peer name "v$$b" netns "$NETNS_B"
    in_ns "$NETNS_A" ip addr add 10.213.0.1/24 dev "v$$a"
    in_ns "$NETNS_B" ip addr add 10.213.0.2/24 dev "v$$b"
    for ns in "$NETNS_A" "$NETNS_B"; do in_ns "$ns" ip link set lo up; done
    in_ns "$NETNS_A" ip link set "v$$a" up
    in_ns "$NETNS_B" ip link set "v$$b" up
    in_ns "$NETNS_A" nft -f hardening/nftables.conf
    listen "$NETNS_A" 9443 4222 8222 2222
    listen "$NETNS_B" 9443 8443
    sleep 0.5
    in_ns "$NETNS_A" nft add element inet bsfg bsfg_peers '{ 10.213.0.2 . 9443 }'
    while read -r want ns addr port what; do
        got=$(probe "$ns" "$addr" "$port")
        printf '  %-8s %-7s %s\n' "$got" "(want $want)" "$what"
        [ "$got" = "$want" ] || rc=1
    done <<EOF
open    $NETNS_B 10.213.0.1 9443 inbound to the node's mTLS port
dropped $NETNS_B 10.213.0.1 4222 inbound to nats-server's client port
dropped $NETNS_B 10.213.0.1 8222 inbound to nats-server's monitoring port
dropped $NETNS_B 10.213.0.1 2222 inbound to any other port
open    $NETNS_A 127.0.0.1  4222 loopback to nats-server
open    $NETNS_A 10.213.0.2 9443 outbound to a peer in @bsfg_peers
dropped $NETNS_A 10.213.0.2 8443 outbound to the peer's host on a port not in @bsfg_peers
EOF
    stop_listeners
    ip netns del "$NETNS_A"
    ip netns del "$NETNS_B"
    return "$rc"
}
check_nftables() {
    local rc=0 detail
    if is_root; then
        nft -c -f hardening/nftables.conf || rc=$?
    else
        unshare -rn nft -c -f hardening/nftables.conf || rc=$?
    fi
    detail="nft -c -f hardening/nftables.conf"
    if [ "$rc" -eq 0 ] && is_root; then
        nft_behaviour || rc=$?
        detail="$detail; in a scratch netns: 9443 in and peers out pass, nats-server ports and the rest are dropped"
    elif [ "$rc" -eq 0 ]; then
        detail="$detail (not root: behaviour in a scratch netns not checked)"
    fi
    record "$rc" nftables "$detail"
}

# --- sysctl -------------------------------------------------------------------------------------
check_sysctl() {
    local rc=0 file line prev key value n=0 applied=0 absent=() scratch=0
    for file in hardening/sysctl.d/*.conf; do
        prev=
        while IFS= read -r line; do
            case $line in
            '' | '#'*) prev=$line && continue ;;
            esac
            if ! [[ $line =~ ^-?([a-z0-9_.]+)\ =\ ([0-9a-z_-]+)$ ]]; then
                echo "$file: not 'key = value': $line"
                rc=1
                continue
            fi
            key=${BASH_REMATCH[1]}
            value=${BASH_REMATCH[2]}
            n=$((n + 1))
            [[ $prev == '#'* || $prev =~ ^-?[a-z0-9_.]+\ = ]] || { echo "$file: $key has no comment"; rc=1; }
            prev=$line
            [ -e "/proc/sys/${key//.//}" ] || absent+=("$key")
            if is_root && [[ $key == net.ipv[46].* ]]; then
                if [ "$scratch" -eq 0 ]; then
                    ip netns add "$NETNS_A"
                    scratch=1
                fi
                if in_ns "$NETNS_A" sh -c "echo '$value' >'/proc/sys/${key//.//}'"; then
                    applied=$((applied + 1))
                else
                    echo "$file: $key = $value refused in a scratch network namespace"
                    rc=1
                fi
            fi
        done <"$file"
    done
    if [ "$scratch" -eq 1 ]; then ip netns del "$NETNS_A"; fi
    if ((${#absent[@]})); then
        echo "not in this kernel (set on the appliance's Debian kernel): ${absent[*]}"
    fi
    record "$rc" sysctl "$n settings, each commented; $applied network ones applied in a scratch netns; ${#absent[@]} absent here"
}

# --- nats-server --------------------------------------------------------------------------------
# nats_say PORT CONNECT_JSON: sends CONNECT + PING, prints the server's first answer line.
nats_say() {
    local reply=
    exec 3<>"/dev/tcp/127.0.0.1/$1"
    read -r -t 5 _ <&3 # INFO
    printf 'CONNECT %s\r\nPING\r\n' "$2" >&3
    read -r -t 5 reply <&3 || true
    exec 3>&-
    echo "${reply%$'\r'}"
}
check_nats() {
    local rc=0 conf=$WORK/nats/nats-server.conf hash port answer line
    [ -x "$NATS" ] || { record 1 nats "$NATS not found: run scripts/setup.sh"; return; }
    mkdir -p "$WORK/nats"
    cp hardening/nats-server.conf "$conf"
    hash=$(mkpasswd -m bcrypt -R 8 test-password)
    printf 'BSFG_NATS_PASSWORD: "%s"\nSYS_NATS_PASSWORD: "%s"\n' "$hash" "$hash" >"$WORK/nats/secrets.conf"
    "$NATS" -t -c "$conf" || rc=1
    for line in 'listen: "127.0.0.1:4222"' 'sync_interval: always' 'domain: "ZONE"' 'system_account: SYS'; do
        grep -qxF -- "$line" <(sed 's/^ *//' "$conf") || { echo "nats-server.conf lacks: $line"; rc=1; }
    done
    if grep -qE '^\s*(no_auth_user|http|https|http_port|https_port|monitor_port|cluster|gateway|leafnodes|websocket|mqtt)\b' "$conf"; then
        echo "nats-server.conf has a forbidden setting:"
        grep -nE '^\s*(no_auth_user|http|https|http_port|https_port|monitor_port|cluster|gateway|leafnodes|websocket|mqtt)\b' "$conf"
        rc=1
    fi
    # One real start: the zone substituted as provisioning does, a scratch store, a random port.
    sed -e 's/ZONE/check-zone/g' -e "s#\"/var/lib/nats\"#\"$WORK/nats/store\"#" \
        -e 's/127.0.0.1:4222/127.0.0.1:-1/' "$conf" >"$WORK/nats/run.conf"
    "$NATS" -c "$WORK/nats/run.conf" --ports_file_dir "$WORK/nats" >"$WORK/nats/log" 2>&1 &
    nats_pid=$!
    for _ in $(seq 50); do
        port=$(jq -r '.nats[0] // empty' "$WORK"/nats/*.ports 2>/dev/null | sed 's/.*://') || true
        [ -n "$port" ] && break
        sleep 0.1
    done
    if [ -z "${port:-}" ]; then
        cat "$WORK/nats/log"
        record 1 nats "nats-server did not start with hardening/nats-server.conf"
        return
    fi
    while read -r want json; do
        answer=$(nats_say "$port" "$json")
        printf '  %-35s %s\n' "$answer" "$json"
        [[ $answer == "$want"* ]] || rc=1
    done <<'EOF'
-ERR {"verbose":false}
-ERR {"verbose":false,"user":"bsfg","pass":"wrong"}
-ERR {"verbose":false,"user":"","pass":""}
PONG {"verbose":false,"user":"bsfg","pass":"test-password"}
EOF
    grep -q 'Domain: *check-zone' "$WORK/nats/log" || { echo "JetStream domain is not the zone"; rc=1; }
    kill "$nats_pid"
    wait "$nats_pid" 2>/dev/null || true
    nats_pid=
    record "$rc" nats "nats-server -t; loopback, sync always, no anonymous access (anonymous and wrong password refused)"
}

echo "--- check-units: systemd-analyze verify"
check_verify
echo "--- check-units: systemd-analyze security --offline=yes"
check_security
echo "--- check-units: SystemCallFilter vs the node's sandbox"
check_syscalls
echo "--- check-units: nftables"
check_nftables
echo "--- check-units: sysctl"
check_sysctl
echo "--- check-units: nats-server.conf"
check_nats

echo "--- check-units: summary"
printf '%s\n' "${results[@]}"
exit $((failures > 0))
