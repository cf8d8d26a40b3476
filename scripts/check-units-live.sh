#!/usr/bin/env bash
# Runs the appliance's units under a real systemd 252 (`make check-units-live`, and in
# `make test`): boots this machine's Debian root, copy-on-write, in a systemd-nspawn container with
# only a loopback network, installs systemd/*, hardening/nats-server.conf, nats-server and a bsfg
# binary (argument, or BSFG_BIN, default target/x86_64-unknown-linux-musl/release/bsfg), provisions
# a zone with dev certificates, starts nats-server.service and the unchanged bsfg.service, and checks:
#   - both units become active (bsfg: READY=1 through Type=notify) and bsfg sends STATUS=;
#   - both sandbox layers at once: the node's /proc status shows NoNewPrivs 1, Seccomp 2 and
#     every capability set empty, and every RPC works (AppendFact, PutObject, FetchFacts,
#     ConfirmReceipt, GetObject, /metrics) with no restart, i.e. no syscall killed;
#   - the watchdog: with WatchdogSec=4s (test drop-in) the node stays up and keeps pinging;
#   - IPAddressDeny=: a client on a non-loopback local address cannot reach 9443 until the
#     network.conf drop-in allows it;
#   - a clean stop (SIGTERM drain) and a nats-server without anonymous access.
# A dynamically linked binary gets a test drop-in with ExecPaths=/usr/lib /usr/lib64 (reported).
# SECCOMP_LOG=1 runs the node with --seccomp-log (a test drop-in) and lists, at the end, the
# syscalls the kernel logged as outside the node's policy: for finding what the policy lacks.
# Needs root, systemd-container and overlayfs. Prints one line per check; exits non-zero on failure.
# shellcheck disable=SC2317 # the checks are functions that check() and the EXIT trap call
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BIN=${1:-${BSFG_BIN:-$ROOT/target/x86_64-unknown-linux-musl/release/bsfg}}
NATS=${BSFG_NATS_SERVER:-$ROOT/.tools/bin/nats-server}
ZONE=live-zone
CHECK_ADDR=10.213.7.1

die() {
    echo "check-units-live: $*" >&2
    exit 1
}
[ "$(id -u)" -eq 0 ] || die "needs root (systemd-nspawn, overlayfs)"
command -v systemd-nspawn >/dev/null || die "systemd-nspawn missing: apt-get install systemd-container (scripts/setup.sh does)"
[ -x "$BIN" ] || die "no bsfg binary at $BIN: run 'make static' or pass a path"
[ -x "$NATS" ] || die "no nats-server at $NATS: run scripts/setup.sh"

WORK=$(mktemp -d)
OVL=$WORK/ovl
CT=$OVL/merged
nspawn_pid=
cleanup() {
    if [ -n "$nspawn_pid" ]; then
        kill "$nspawn_pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.2; done
    fi
    umount "$CT" 2>/dev/null || true
    umount "$OVL" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

results=()
failures=0
# check NAME CMD...: runs CMD, records ok/FAILED for the summary.
check() {
    local name=$1
    shift
    if "$@"; then
        results+=("ok      $name")
    else
        results+=("FAILED  $name")
        failures=$((failures + 1))
    fi
}

# --- the container's root: this machine's /, copy-on-write --------------------------------------
mkdir -p "$OVL"
mount -t tmpfs tmpfs "$OVL"
mkdir -p "$OVL/upper" "$OVL/work" "$CT"
mount -t overlay overlay -o "lowerdir=/,upperdir=$OVL/upper,workdir=$OVL/work" "$CT"
find "$CT/dev" -mindepth 1 -maxdepth 1 -exec rm -rf {} + # nspawn wants an empty /dev
systemctl --root="$CT" mask nftables.service apt-daily.timer apt-daily-upgrade.timer \
    e2scrub_all.timer fstrim.timer man-db.timer >/dev/null 2>&1 || true

# --- install what the appliance image installs ---------------------------------------------------
install -m 0755 "$BIN" "$CT/usr/bin/bsfg"
install -m 0755 "$NATS" "$CT/usr/bin/nats-server"
install -m 0644 systemd/bsfg.service systemd/nats-server.service "$CT/etc/systemd/system/"
install -m 0644 systemd/sysusers.d/*.conf "$CT/usr/lib/sysusers.d/"
install -m 0644 systemd/tmpfiles.d/*.conf "$CT/usr/lib/tmpfiles.d/"
systemd-sysusers --root="$CT" >/dev/null 2>&1
systemd-tmpfiles --create --root="$CT" bsfg.conf >/dev/null
mkdir -p "$CT/etc/systemd/system/bsfg.service.d"
# Test drop-in: a short watchdog so that the check does not wait 30 s.
printf '[Service]\nWatchdogSec=4s\n' >"$CT/etc/systemd/system/bsfg.service.d/50-check-watchdog.conf"
if [ "${SECCOMP_LOG:-0}" = 1 ]; then
    printf '[Service]\nExecStart=\nExecStart=/usr/bin/bsfg serve --config /etc/bsfg/bsfg.toml --seccomp-log\n' \
        >"$CT/etc/systemd/system/bsfg.service.d/50-check-seccomp-log.conf"
fi
linkage=static
if ! file -L "$BIN" | grep -q 'static'; then
    linkage="dynamic (test drop-in: ExecPaths=/usr/lib /usr/lib64)"
    printf '[Service]\nExecPaths=/usr/lib /usr/lib64\n' >"$CT/etc/systemd/system/bsfg.service.d/50-check-dynamic.conf"
fi

# --- provision the zone ---------------------------------------------------------------------------
password=$(openssl rand -hex 16)
hash=$(mkpasswd -m bcrypt -R 8 "$password")
sed "s/ZONE/$ZONE/g" hardening/nats-server.conf >"$CT/etc/nats/nats-server.conf"
printf 'BSFG_NATS_PASSWORD: "%s"\nSYS_NATS_PASSWORD: "%s"\n' "$hash" "$hash" >"$CT/etc/nats/secrets.conf"
printf 'bsfg:%s\n' "$password" >"$CT/etc/bsfg/nats.credentials"
mkdir -p "$CT/etc/bsfg/tls" "$CT/root/pki"
"$BIN" dev-pki --out "$CT/root/pki" --zone "$ZONE" --client producer --client ops >/dev/null
cp "$CT/root/pki/ca.pem" "$CT/root/pki/$ZONE-bsfg.pem" "$CT/root/pki/$ZONE-bsfg.key" "$CT/etc/bsfg/tls/"
cat >"$CT/etc/bsfg/bsfg.toml" <<EOF
zone = "$ZONE"
[listen]
address = "0.0.0.0:9443"
[tls]
certificate = "/etc/bsfg/tls/$ZONE-bsfg.pem"
private_key = "/etc/bsfg/tls/$ZONE-bsfg.key"
client_ca = "/etc/bsfg/tls/ca.pem"
[nats]
url = "nats://127.0.0.1:4222"
credentials_file = "/etc/bsfg/nats.credentials"
[[consumers]]
name = "downstream"
category = "operational"
[[buckets]]
name = "batch-files"
[[access]]
identity = "producer"
append = ["operational"]
assert_zones = ["$ZONE"]
put_objects = ["batch-files"]
fetch = ["downstream"]
get_objects = ["batch-files"]
[[access]]
identity = "ops"
operator = true
EOF
# Owners and modes as provisioning sets them (names resolved in the container's /etc).
chroot "$CT" sh -c 'chown -R root:bsfg /etc/bsfg && chmod 0750 /etc/bsfg /etc/bsfg/tls &&
    chmod 0640 /etc/bsfg/*.toml /etc/bsfg/nats.credentials /etc/bsfg/tls/* &&
    chown -R root:nats /etc/nats && chmod 0750 /etc/nats && chmod 0640 /etc/nats/*'

# --- boot ------------------------------------------------------------------------------------------
kmsg_before=$(dmesg | wc -l)
echo "--- check-units-live: booting $CT (bsfg: $BIN, $linkage)"
# nspawn's own seccomp filter lacks landlock_* and bpf (IPAddressDeny=); the unified cgroup
# hierarchy is what the appliance runs and what IPAddressDeny= needs.
SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 systemd-nspawn -q -D "$CT" -b --private-network --register=no \
    --keep-unit -M bsfg-check-live \
    --system-call-filter="landlock_create_ruleset landlock_add_rule landlock_restrict_self bpf" \
    </dev/null >"$WORK/console.log" 2>&1 &
nspawn_pid=$!
# init_pid: the container's PID 1, the first "systemd" below the nspawn process.
init_pid() {
    local pid=$nspawn_pid child
    for _ in 1 2 3; do
        for child in $(pgrep -P "$pid"); do
            if [ "$(cat "/proc/$child/comm" 2>/dev/null)" = systemd ]; then
                echo "$child"
                return 0
            fi
        done
        pid=$(pgrep -P "$pid" | head -1) || return 1
    done
    return 1
}
state=
for _ in $(seq 120); do
    if pid1=$(init_pid) && state=$(nsenter -t "$pid1" -a systemctl is-system-running 2>/dev/null); then :; fi
    case $state in running | degraded) break ;; esac
    kill -0 "$nspawn_pid" 2>/dev/null || { cat "$WORK/console.log"; die "the container exited"; }
    sleep 0.5
done
if [ "$state" != running ] && [ "$state" != degraded ]; then
    tail -20 "$WORK/console.log"
    die "the container did not finish booting (state: ${state:-unknown})"
fi
in_ct() { nsenter -t "$pid1" -a "$@"; }

# --- checks ----------------------------------------------------------------------------------------
units_start() {
    if ! in_ct timeout 60 systemctl start nats-server.service bsfg.service ||
        [ "$(in_ct systemctl is-active bsfg.service nats-server.service | sort -u)" != active ]; then
        in_ct journalctl --no-pager -n 30 -u bsfg.service -u nats-server.service
        return 1
    fi
    echo "  status: $(in_ct systemctl show -p StatusText --value bsfg.service)"
    [ -n "$(in_ct systemctl show -p StatusText --value bsfg.service)" ]
}
both_layers() {
    local pid ok=0
    pid=$(in_ct systemctl show -p MainPID --value bsfg.service)
    in_ct grep -E '^(NoNewPrivs|Seccomp|Cap(Inh|Prm|Eff|Bnd|Amb)):' "/proc/$pid/status" >"$WORK/status"
    sed 's/^/  /' "$WORK/status"
    grep -qP '^NoNewPrivs:\t1$' "$WORK/status" || ok=1
    grep -qP '^Seccomp:\t2$' "$WORK/status" || ok=1
    [ "$(grep -cP ':\t0{16}$' "$WORK/status")" -eq 5 ] || ok=1
    # The unit alone already gives NoNewPrivs, a seccomp filter and no capabilities: the node's
    # own layer shows in its STATUS= line and its /metrics (landlock fully enforced, seccomp in
    # kill mode), which a node started with --insecure-no-sandbox would not report.
    local status metrics line
    status=$(in_ct systemctl show -p StatusText --value bsfg.service)
    echo "  STATUS=$status"
    [[ $status == *"sandbox full"* ]] || ok=1
    metrics=$(in_ct curl -sS --fail --max-time 10 --cacert /root/pki/ca.pem --cert /root/pki/ops.pem \
        --key /root/pki/ops.key https://127.0.0.1:9443/metrics | grep '^bsfg_sandbox_') || ok=1
    while IFS= read -r line; do echo "  $line"; done <<<"$metrics"
    grep -qx 'bsfg_sandbox_landlock_enforced 2' <<<"$metrics" || ok=1
    grep -qx 'bsfg_sandbox_seccomp_kill 1' <<<"$metrics" || ok=1
    return "$ok"
}
# rpc METHOD JSON [IDENTITY]: one Connect call from inside the container; prints the answer.
rpc() {
    in_ct curl -sS --fail-with-body --max-time 10 --cacert /root/pki/ca.pem \
        --cert "/root/pki/${3:-producer}.pem" --key "/root/pki/${3:-producer}.key" \
        -H 'content-type: application/json' -d "$2" "https://127.0.0.1:9443/$1"
}
rpcs_work() {
    local out
    out=$(rpc bsfg.v1.BoundaryService/AppendFact "{\"envelope\":{\"messageId\":\"live-1\",\"fromZone\":\"$ZONE\",\"toZone\":\"enterprise\",\"producedAtUnixMs\":\"1700000000000\"},\"fact\":{\"subject\":\"batch:B-1\",\"predicate\":\"step_completed\",\"objectJson\":\"{\\\"step\\\":1}\"}}") &&
        echo "  AppendFact     $out" && [[ $out == *'"offset":"1"'* ]] || return 1
    out=$(rpc bsfg.v1.BoundaryService/PutObject '{"bucket":"batch-files","key":"k1","data":"aGVsbG8=","mediaType":"text/plain"}') &&
        echo "  PutObject      $out" && [[ $out == *sha256:* ]] || return 1
    out=$(rpc bsfg.v1.BoundaryService/FetchFacts '{"consumerName":"downstream","limit":10}') &&
        echo "  FetchFacts     ${out:0:80}..." && [[ $out == *live-1* ]] || return 1
    out=$(rpc bsfg.v1.BoundaryService/ConfirmReceipt '{"consumerName":"downstream","offset":"1"}') &&
        echo "  ConfirmReceipt $out" && [[ $out == *'"cursorAdvancedTo":"1"'* ]] || return 1
    out=$(rpc bsfg.v1.ArtifactService/GetObject '{"bucket":"batch-files","key":"k1","limitBytes":100}') &&
        echo "  GetObject      ${out:0:80}..." && [[ $out == *aGVsbG8=* ]] || return 1
    out=$(in_ct curl -sS --fail --max-time 10 --cacert /root/pki/ca.pem --cert /root/pki/ops.pem \
        --key /root/pki/ops.key https://127.0.0.1:9443/metrics) && echo "  /metrics       $(grep -c '^bsfg_' <<<"$out") bsfg_ samples" || return 1
    [ "$(in_ct systemctl show -p NRestarts --value bsfg.service)" = 0 ]
}
watchdog_kept() {
    local before after
    before=$(in_ct systemctl show -p WatchdogTimestampMonotonic --value bsfg.service)
    sleep 6
    after=$(in_ct systemctl show -p WatchdogTimestampMonotonic --value bsfg.service)
    echo "  WatchdogSec=4s: last ping moved from $before to $after us; restarts: $(in_ct systemctl show -p NRestarts --value bsfg.service)"
    [ "$after" != "$before" ] && [ "$(in_ct systemctl show -p NRestarts --value bsfg.service)" = 0 ] &&
        [ "$(in_ct systemctl is-active bsfg.service)" = active ]
}
# reach ADDR: "open" if a TCP connection to ADDR:9443 from the container (outside the unit) works.
reach() {
    if in_ct timeout 3 bash -c "exec 3<>/dev/tcp/$1/9443" 2>/dev/null; then echo open; else echo blocked; fi
}
ip_filter() {
    local before after
    # A second local address that is not "localhost" for IPAddressAllow=.
    in_ct ip addr add "$CHECK_ADDR/32" dev lo
    before=$(reach "$CHECK_ADDR")
    printf '[Service]\nIPAddressAllow=%s/32\n' "$CHECK_ADDR" >"$CT/etc/systemd/system/bsfg.service.d/network.conf"
    in_ct systemctl daemon-reload
    in_ct timeout 60 systemctl restart bsfg.service
    after=$(reach "$CHECK_ADDR")
    echo "  $CHECK_ADDR:9443 without the drop-in: $before (want blocked); with IPAddressAllow=$CHECK_ADDR/32: $after (want open); 127.0.0.1: $(reach 127.0.0.1)"
    [ "$before" = blocked ] && [ "$after" = open ]
}
nats_closed() {
    local answer
    # shellcheck disable=SC2016 # $a expands in the container's bash
    answer=$(in_ct timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/4222; read -r _ <&3; printf "CONNECT {\"verbose\":false}\r\nPING\r\n" >&3; read -r a <&3; echo "$a"')
    echo "  anonymous CONNECT: $answer"
    [[ $answer == *"Authorization Violation"* ]]
}
clean_stop() {
    in_ct timeout 60 systemctl stop bsfg.service
    echo "  bsfg.service stop: $(in_ct systemctl show -p Result --value bsfg.service)"
    [ "$(in_ct systemctl show -p Result --value bsfg.service)" = success ]
}

echo "--- check-units-live: start"
check "nats-server.service and bsfg.service active (READY=1, STATUS=)" units_start
echo "--- check-units-live: both sandbox layers"
check "unit + node sandbox together: NoNewPrivs 1, Seccomp 2, no capabilities" both_layers
echo "--- check-units-live: RPCs under both layers"
check "every RPC works, no restart (no syscall killed)" rpcs_work
echo "--- check-units-live: watchdog"
check "WATCHDOG=1 keeps the unit alive" watchdog_kept
echo "--- check-units-live: nats-server"
check "nats-server refuses anonymous clients" nats_closed
echo "--- check-units-live: IPAddressDeny="
check "IPAddressDeny=any until the network.conf drop-in allows an address" ip_filter
echo "--- check-units-live: stop"
check "SIGTERM: clean stop" clean_stop

if [ "${SECCOMP_LOG:-0}" = 1 ]; then
    echo "--- check-units-live: syscalls outside the node's policy (kernel audit, --seccomp-log)"
    dmesg | tail -n +"$((kmsg_before + 1))" | grep 'type=1326' | grep 'exe="/usr/bin/bsfg"' |
        grep -o 'syscall=[0-9]*' | sort | uniq -c || echo "  none"
    linkage="$linkage, --seccomp-log"
fi
echo "--- check-units-live: summary (bsfg: $linkage)"
printf '%s\n' "${results[@]}"
exit $((failures > 0))
