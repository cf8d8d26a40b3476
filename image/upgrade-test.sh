#!/usr/bin/env bash
# `make upgrade-test` (part of make test): the appliance's audited A/B upgrade and automatic rollback under QEMU (TCG,
# OVMF with Secure Boot enforced), with the real image, real RAUC bundles (UKIs signed with the
# estate's db key), the real boot loader and the estate around it:
# the appliance is the IDMZ zone (image/zones.sh), the enterprise zone runs on this host. The
# release team puts each bundle into the enterprise zone's firmware bucket and announces it with
# a release fact; the appliance pulls both (digest checked); an operator asks for each install
# through the operator's door (`bsfg firmware install --node`, mTLS, a change ticket); the
# appliance's firmware agent verifies and installs; every step is an audit fact that the
# enterprise zone pulls back. Checks, in boot order:
#   1. the DEBUG image (slot a, VERSION, provisioned as idmz) boots and is blessed;
#   2. a bundle with one payload byte changed and one signed by another key are refused, and the
#      inactive slot is byte-identical before and after (sha256 of root-b and root-b-verity);
#   3. the good bundle (VERSION.1): installed by the operator's call; the reboot comes up in slot
#      b on trial and blesses it; the enterprise zone holds the install's audit facts, in order;
#   4. a lower version (VERSION's own bundle) is refused;
#   5. three power cuts (QEMU killed as the initrd starts) right after the blessing: still slot b;
#   6. a power cut while the agent writes slot a: slot b boots, the interrupted install is on
#      record and its install record ends `failed` (concluded by the agent once nats-server is
#      up, src/firmware/conclusion.rs);
#   7. a bundle whose node cannot become healthy (VERSION.2, BUNDLE_EXTRA_CMDLINE=
#      systemd.mask=bsfg.service): each of its boots is bad and reboots, after its three tries
#      systemd-boot boots slot b by itself; the rollback and its reason reach the enterprise zone,
#      and so do the facts the unhealthy firmware appended on its tries (served by the old one).
# Builds what it needs: the DEBUG image (out/, shared with make image-test), the bundles from
# DEBUG images of the higher versions (out/upgrade-test/; each version is its own root build,
# cached), the base version's bundle, and the two forged ones (derived from the good bundle).
# Prints one line per check and a summary; KEEP=1 keeps the work directory (serial logs of every
# boot, the zones' logs).
# shellcheck disable=SC2317,SC2016 # checks run through check(); $... in guest commands is the guest's
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=zones.sh
. "$IMAGE_DIR/zones.sh"
SERIAL=$IMAGE_DIR/serial.py

BASE_VERSION=$VERSION
GOOD_VERSION=$BASE_VERSION.1
BAD_VERSION=$BASE_VERSION.2
UOUT=$OUT/upgrade-test
MAIN_CACHE=$OUT/cache # the kernel package, shared with make image
T_START=$(date +%s)

# --- what it boots and installs ---------------------------------------------------------------
step "DEBUG image $BASE_VERSION (slot a) and bundles $GOOD_VERSION (good) and $BAD_VERSION (cannot become healthy)"
DEBUG=1 "$IMAGE_DIR/build.sh" | grep -E 'reusing|root hash|done|up to date|WARNING' || true
DBG=$(image_base debug).img
[ -f "$DBG" ] || die "the DEBUG image was not built"
# The firmware's variables: Secure Boot on with the estate's PK/KEK/db (image/build.sh); the
# bundles' UKIs are signed with the same db key (image/bundle.sh checks it). Each boot starts
# from a copy: what this test follows is on the ESP (boot counting), not in the variables.
QEMU_VARS=$(image_base debug).ovmf-vars.fd
# bundle_of VERSION [EXTRA_CMDLINE]: builds (or reuses) the DEBUG image of VERSION and its bundle;
# prints the bundle's path.
bundle_of() {
    local v=$1 extra=${2:-} file
    file=$UOUT/bsfg-appliance-$v-$ARCH-debug${extra:+-extra-cmdline}.raucb
    OUT=$UOUT BUILD=$UOUT/build-$v CACHE=$MAIN_CACHE VERSION=$v DEBUG=1 "$IMAGE_DIR/build.sh" \
        >"$UOUT/build-$v.log" 2>&1 || { tail -20 "$UOUT/build-$v.log" >&2; die "image $v failed"; }
    OUT=$UOUT VERSION=$v DEBUG=1 BUNDLE_EXTRA_CMDLINE=$extra BUNDLE=$file "$IMAGE_DIR/bundle.sh" \
        >"$UOUT/bundle-$v.log" 2>&1 || { tail -20 "$UOUT/bundle-$v.log" >&2; die "bundle $v failed"; }
    echo "$file"
}
mkdir -p "$UOUT"
GOOD=$(bundle_of "$GOOD_VERSION")
say "good: $(basename "$GOOD") ($(du -h "$GOOD" | cut -f1))"
BAD=$(bundle_of "$BAD_VERSION" systemd.mask=bsfg.service)
say "cannot become healthy: $(basename "$BAD") ($(du -h "$BAD" | cut -f1))"
# The base version's own bundle, from the DEBUG image above: lower than the upgraded slot's.
LOWER=$UOUT/bsfg-appliance-$BASE_VERSION-$ARCH-debug.raucb
VERSION=$BASE_VERSION DEBUG=1 BUNDLE=$LOWER "$IMAGE_DIR/bundle.sh" >"$UOUT/bundle-$BASE_VERSION.log" 2>&1 ||
    { tail -20 "$UOUT/bundle-$BASE_VERSION.log" >&2; die "bundle $BASE_VERSION failed"; }
say "lower version: $(basename "$LOWER")"

WORK=$(mktemp -d /tmp/bsfg-upgrade-test.XXXXXX)
QEMU_PID=
FOLLOW_PID=
cleanup() {
    if [ -n "$QEMU_PID" ]; then kill "$QEMU_PID" 2>/dev/null || true; fi
    if [ -n "$FOLLOW_PID" ]; then kill "$FOLLOW_PID" 2>/dev/null || true; fi
    zones_stop
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 143' TERM INT

results=()
failures=0
# check NAME CONDITION-COMMAND...
check() {
    local name=$1
    shift
    if "$@"; then
        results+=("PASS  $name")
        printf '  \033[32mPASS\033[0m  %s\n' "$name"
    else
        results+=("FAIL  $name")
        printf '  \033[31mFAIL\033[0m  %s\n' "$name"
        failures=$((failures + 1))
    fi
}
indent() { sed 's/^/         /'; }
# guest CMD [TIMEOUT]: run CMD in the appliance's debug shell.
guest() { "$SERIAL" "$VM/serial.sock" run "$1" "${2:-60}"; }

# boot NAME: starts QEMU on the disk (a new directory per boot, so each serial log is one boot).
# -no-reboot (lib.sh): a reboot ends QEMU, and the next boot is a new QEMU on the same disk.
BOOTS=0
boot() {
    VM=$WORK/$1
    mkdir -p "$VM"
    BOOTS=$((BOOTS + 1))
    BOOT_T0=$(date +%s.%N)
    qemu_start "$VM" "$DISK" "$APP_NETDEV"
}
since_boot() { awk -v a="$BOOT_T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }'; }
# booted_slot: the slot the initrd of the current boot opened (from the serial log).
booted_slot() { grep -ao 'bsfg-initrd: slot [a-z]' "$VM/serial.log" | head -1 | awk '{ print $3 }'; }
# verdict SECONDS: waits for bsfg-boot-check's verdict on the console; prints the line.
verdict() {
    "$SERIAL" "$VM/serial.log" wait 'bsfg-boot-check: slot=.*verdict=[a-z]+[^\r\n]*' "$1" || {
        tail -30 "$VM/serial.log" >&2
        die "no boot-check verdict within $1 s"
    }
}
# shell: waits for the debug shell and quiets the console.
shell() {
    "$SERIAL" "$VM/serial.log" wait 'root@bsfg-appliance' 300 >/dev/null || {
        tail -30 "$VM/serial.log" >&2
        die "no debug shell on the serial console"
    }
    guest 'kill -s RTMIN+21 1; dmesg -n 1' >/dev/null
}
# efi_entries: the UKI files on the ESP, space-separated (after systemd-bless-boot, if it runs).
efi_entries() {
    guest 'for i in $(seq 20); do systemctl -q is-active systemd-bless-boot.service && break; sleep 1; done; ls /efi/EFI/Linux/ | paste -sd" "' 60 |
        tr -d '\r\n'
}
powerdown() {
    guest 'systemctl poweroff' 5 >/dev/null || true
    qemu_wait_exit 120 || true
    QEMU_PID=
}

# --- two forged bundles, from the good one ----------------------------------------------------------
# A verity bundle is: the squashfs payload, the CMS signature (holding the manifest), the
# signature's size (8 bytes, big-endian).
step "forged bundles: one payload byte changed; the manifest signed by another key"
TAMPERED=$WORK/tampered.raucb
cp "$GOOD" "$TAMPERED"
# One byte 4 MiB into the payload (inside the root image), inverted.
byte=$(od -An -tu1 -j $((4 << 20)) -N1 "$TAMPERED" | tr -d ' ')
python3 -c 'import sys; sys.stdout.buffer.write(bytes([int(sys.argv[1])]))' $((255 - byte)) |
    dd of="$TAMPERED" bs=1 seek=$((4 << 20)) conv=notrunc status=none
FOREIGN=$WORK/foreign.raucb
forge_signature() {
    local size total payload
    size=$(tail -c 8 "$GOOD" | od -An -tu8 --endian=big | tr -d ' ')
    total=$(stat -c %s "$GOOD")
    payload=$((total - 8 - size))
    tail -c $((size + 8)) "$GOOD" | head -c "$size" >"$WORK/good.cms"
    openssl cms -verify -noverify -binary -inform DER -in "$WORK/good.cms" -out "$WORK/manifest.raucm" 2>/dev/null
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
        -subj "/O=Not the estate/CN=foreign signer" -keyout "$WORK/foreign.key" -out "$WORK/foreign.pem" 2>/dev/null
    openssl cms -sign -binary -nodetach -nosmimecap -md sha256 -signer "$WORK/foreign.pem" \
        -inkey "$WORK/foreign.key" -outform DER -in "$WORK/manifest.raucm" -out "$WORK/foreign.cms"
    {
        head -c "$payload" "$GOOD"
        cat "$WORK/foreign.cms"
        python3 -c 'import sys; sys.stdout.buffer.write(int(sys.argv[1]).to_bytes(8, "big"))' \
            "$(stat -c %s "$WORK/foreign.cms")"
    } >"$FOREIGN"
}
forge_signature || die "could not forge the foreign-signed bundle"
say "tampered: byte $((4 << 20)) $byte -> $((255 - byte)); foreign: signed by $(openssl x509 -in "$WORK/foreign.pem" -noout -subject)"

# --- the estate: the enterprise zone on this host; the appliance is the IDMZ --------------------------
step "estate: the enterprise zone on 127.0.0.1, the appliance (idmz) under QEMU"
zones_init "$WORK"
# The release team's PutObject carries a whole bundle (base64 in JSON).
cat >>"$WORK/enterprise.toml" <<EOF
[limits]
max_request_bytes = 268435456
max_buffered_request_bytes = 268435456
EOF
start_zones enterprise || die "the enterprise zone did not start"
PKI=$WORK/pki
# release NAME FILE: the release team puts FILE into the enterprise zone's firmware bucket as
# NAME.raucb and appends the release fact that references it; sets DIGEST[NAME].
declare -A DIGEST
release() {
    local name=$1 file=$2 key=$1.raucb put digest size
    { printf '{"bucket":"firmware","key":"%s","mediaType":"application/vnd.rauc.bundle","data":"' "$key"
      base64 -w0 "$file"
      printf '"}'; } >"$WORK/put.json"
    put=$(curl -sS --max-time 300 --cacert "$PKI/ca.pem" --cert "$PKI/enterprise-release.pem" \
        --key "$PKI/enterprise-release.key" -H 'content-type: application/json' --data-binary @"$WORK/put.json" \
        "https://127.0.0.1:${NODE_PORT[enterprise]}/bsfg.v1.BoundaryService/PutObject")
    rm -f "$WORK/put.json"
    digest=$(jq -r .digest <<<"$put")
    size=$(jq -r .size <<<"$put")
    [[ $digest == sha256:* ]] || die "PutObject of $key: $put"
    DIGEST[$name]=$digest
    call enterprise enterprise-release AppendFact "$(fact "release-$name" enterprise idmz "firmware:$key" firmware_released \
        "{\"bucket\":\"firmware\",\"digest\":\"$digest\",\"key\":\"$key\",\"media_type\":\"application/vnd.rauc.bundle\",\"size\":$size}" \
        application/vnd.rauc.bundle | jq -c '.category = "CATEGORY_DOCUMENTS"')" >/dev/null ||
        die "the release fact of $key was refused"
    say "released $key: $digest ($size bytes)"
}
t0=$(date +%s)
release good "$GOOD"
release tampered "$TAMPERED"
release foreign "$FOREIGN"
release lower "$LOWER"
release bad "$BAD"
say "released 5 bundles in $(($(date +%s) - t0)) s"

# door ARGS...: the operator's CLI, from this host, through the appliance's mTLS listener.
door() {
    local sub=$1
    shift
    "$ESTATE_BSFG" firmware "$sub" --node "https://127.0.0.1:$APP_PORT" --node-identity idmz-bsfg \
        --identity "$PKI/ops.pem" --ca "$PKI/ca.pem" "$@"
}
# ask_install NAME TICKET FOLLOW_SECONDS: asks for NAME's install; waits (at most 15 min) until the
# appliance holds the bundle (it arrives by replication). Prints the CLI's output.
ask_install() {
    local out i
    for ((i = 0; i < 90; i++)); do
        if out=$(door install --bucket firmware --bundle-key "$1.raucb" --digest "${DIGEST[$1]}" \
            --ticket "$2" --follow-seconds "$3" 2>&1); then
            echo "$out"
            return 0
        fi
        # Asked for, then refused, failed or rolled back: that is the answer.
        if grep -q 'asked for' <<<"$out"; then
            echo "$out"
            return 1
        fi
        # Not (yet) in the appliance's firmware bucket (the pull is still bringing it), or the
        # node not serving yet: ask again.
        sleep 10
    done
    echo "$out"
    return 1
}
# trail: the enterprise zone's copy of the appliance's audit category so far, one line per fact:
# "PREDICATE OBJECT_JSON". The historian reads it page by page and confirms each page; the lines
# read so far are kept in WORK/trail.
trail() {
    local page last
    touch "$WORK/trail"
    while page=$(call enterprise enterprise-historian FetchFacts '{"consumerName":"audit-archive","limit":500}'); do
        last=$(jq -r '.facts // [] | last | .offset // empty' <<<"$page")
        [ -n "$last" ] || break
        jq -r '.facts[] | select(.envelope.fromZone == "idmz") | "\(.fact.predicate) \(.fact.objectJson)"' <<<"$page" >>"$WORK/trail"
        call enterprise enterprise-historian ConfirmReceipt "{\"consumerName\":\"audit-archive\",\"offset\":\"$last\"}" >/dev/null || break
    done
    cat "$WORK/trail"
}
# steps_since ATTEMPT: the firmware steps in the enterprise zone from the request of ATTEMPT on,
# in order (the boot's steps -- booted, blessed, bad boot, rolled back -- name a boot, not an
# install, so they are taken by their place in the trail). A bundle's arrival is no step of an
# install: the later bundles are still replicating while one is installed, and their
# `firmware_bundle_received` facts can fall between its steps (a slower CI run failed the
# in-order check once, and these are the only facts in the trail the install does not cause), so
# they are left out.
steps_since() {
    trail | sed -n "/\"$1\"/,\$p" |
        awk '$1 ~ /^firmware_/ && $1 != "firmware_bundle_received" { print $1 }' | paste -sd' '
}
# wait_steps ATTEMPT STEP SECONDS: waits until the steps since ATTEMPT include STEP; prints them.
wait_steps() {
    local steps i
    for ((i = 0; i < $3; i += 2)); do
        steps=$(steps_since "$1")
        [[ " $steps " == *" $2 "* ]] && break
        sleep 2
    done
    echo "$steps"
}
attempt_of() { grep -o 'install [0-9a-f]\{32\}' <<<"$1" | head -1 | awk '{ print $2 }'; }

# --- the disk: the DEBUG image, grown like a gateway disk, provisioned as the IDMZ ---------------
step "disk: the DEBUG image, $GATEWAY_DISK, provisioned as idmz"
DISK=$WORK/disk.img
cp --sparse=always "$DBG" "$DISK"
truncate -s "$GATEWAY_DISK" "$DISK"
"$IMAGE_DIR/provision.sh" bundle "$ZONE_DIR_IDMZ" "$WORK/idmz-provision.tar" >/dev/null
"$IMAGE_DIR/provision.sh" write "$DISK" "$WORK/idmz-provision.tar" >/dev/null

# --- 1. factory image, slot a: blessed; forged bundles refused ----------------------------------------
step "boot 1: the image as flashed (slot a, $BASE_VERSION); the bundles arrive by replication"
boot 1-factory
line=$(verdict 300)
say "$line ($(since_boot) s)"
shell
first_boot() {
    local names
    names=$(efi_entries)
    say "slot $(booted_slot); EFI/Linux: $names"
    [ "$(booted_slot)" = a ] && grep -q 'verdict=good' <<<"$line" && [ "$names" = bsfg-a.efi ]
}
check "factory boot: slot a, good, blessed (bsfg-a+3.efi -> bsfg-a.efi)" first_boot
slot_b_sum() { guest 'sha256sum /dev/disk/by-partlabel/root-b /dev/disk/by-partlabel/root-b-verity | cut -c1-64 | paste -sd" "; ls /efi/EFI/Linux/ | paste -sd" "' 300 | tr -d '\r'; }
before=$(slot_b_sum)
say "inactive slot b before: ${before:0:40}..."
refused_as() {
    local out
    out=$(ask_install "$1" "$2" 600)
    indent <<<"$out"
    grep -q 'refused' <<<"$out" && grep -qiE "$3" <<<"$out"
}
check "a bundle with one payload byte changed is refused (payload hash)" refused_as tampered CHG-1001 'payload|hash'
check "a bundle signed by another key is refused (signature/signer)" refused_as foreign CHG-1002 'sign'
unchanged() {
    local after
    after=$(slot_b_sum)
    say "inactive slot b after:  ${after:0:40}..."
    [ -n "$before" ] && [ "$after" = "$before" ]
}
check "after both refusals the inactive slot is byte-identical (sha256 of root-b, root-b-verity; ESP)" unchanged

# --- 2. the good bundle, asked for by the operator --------------------------------------------------
step "the operator installs $GOOD_VERSION (CHG-1003); the agent verifies, writes slot b, reboots"
t0=$(date +%s)
ask_install good CHG-1003 1200 >"$WORK/follow-good.log" 2>&1 &
FOLLOW_PID=$!
qemu_wait_exit 1200 || die "the appliance did not reboot for the install within 1200 s"
QEMU_PID=
say "asked, verified, written and rebooted in $(($(date +%s) - t0)) s"
step "boot 2: slot b ($GOOD_VERSION) on trial"
boot 2-upgraded
line=$(verdict 300)
say "$line ($(since_boot) s)"
shell
upgraded() {
    local out
    out=$(guest 'sed -n "s/^IMAGE_VERSION=//p" /usr/lib/os-release; for i in $(seq 20); do systemctl -q is-active systemd-bless-boot.service && break; sleep 1; done; ls /efi/EFI/Linux/ | paste -sd" "' 60)
    indent <<<"$out"
    [ "$(booted_slot)" = b ] && grep -q 'on_trial=1 verdict=good' <<<"$line" &&
        grep -qx "$GOOD_VERSION" <<<"$out" && grep -qx 'bsfg-a.efi bsfg-b.efi' <<<"$out"
}
check "upgraded: slot b, version $GOOD_VERSION, on trial, good, blessed (bsfg-b.efi)" upgraded
followed() {
    local rc=0
    wait "$FOLLOW_PID" || rc=$?
    FOLLOW_PID=
    indent <"$WORK/follow-good.log"
    [ "$rc" = 0 ] && grep -q 'blessed' "$WORK/follow-good.log"
}
check "the operator's install command followed it to the end: blessed" followed
GOOD_ATTEMPT=$(attempt_of "$(cat "$WORK/follow-good.log")")
in_order() {
    local steps
    steps=$(wait_steps "$GOOD_ATTEMPT" firmware_blessed 120)
    say "enterprise, from install $GOOD_ATTEMPT on: $steps"
    [[ $steps == "firmware_install_requested firmware_verified firmware_written firmware_reboot firmware_booted firmware_blessed"* ]]
}
check "the enterprise zone holds the install's audit facts, in order" in_order
check "a lower version ($BASE_VERSION) is refused (version policy)" refused_as lower CHG-1004 'version'
# A power cut right after the blessing.
kill -9 "$QEMU_PID" 2>/dev/null || true
wait "$QEMU_PID" 2>/dev/null || true
QEMU_PID=

# --- 3. power cuts -----------------------------------------------------------------------------------------------
step "boots 3-5: power cut as the initrd starts, three times"
cut_slots=()
for n in 1 2 3; do
    boot "3-cut-$n"
    "$SERIAL" "$VM/serial.log" wait 'bsfg-initrd: slot [a-z]' 240 >/dev/null || true
    cut_slots+=("$(booted_slot)")
    kill -9 "$QEMU_PID" 2>/dev/null || true
    wait "$QEMU_PID" 2>/dev/null || true
    QEMU_PID=
done
say "slots booted before the cuts: ${cut_slots[*]}"
step "boot 6: after the power cuts"
boot 6-after-cuts
line=$(verdict 300)
say "$line ($(since_boot) s)"
shell
after_cuts() {
    local names
    names=$(efi_entries)
    say "slot $(booted_slot); EFI/Linux: $names"
    [ "${cut_slots[*]}" = "b b b" ] && [ "$(booted_slot)" = b ] && grep -q 'counted=0 on_trial=0 verdict=good' <<<"$line" &&
        [ "$names" = 'bsfg-a.efi bsfg-b.efi' ]
}
check "three power cuts after the blessing: still slot b, still blessed" after_cuts

# --- 4. a power cut while slot a is written --------------------------------------------------------------
step "the operator installs $BAD_VERSION (CHG-1005); power cut while the agent writes slot a"
out=$(ask_install bad CHG-1005 0) || die "the install of $BAD_VERSION was not accepted: $out"
CUT_ATTEMPT=$(attempt_of "$out")
writing=
for ((i = 0; i < 600; i += 2)); do
    if door status 2>/dev/null | grep -q "install $CUT_ATTEMPT  writing"; then
        writing=1
        break
    fi
    sleep 2
done
[ -n "$writing" ] || say "the install never showed as writing"
sleep 1 # well inside the write (rauc writes slot a in ~10 s under TCG)
kill -9 "$QEMU_PID" 2>/dev/null || true
wait "$QEMU_PID" 2>/dev/null || true
QEMU_PID=
step "boot 7: after the power cut during the install"
boot 7-after-cut-install
line=$(verdict 300)
say "$line ($(since_boot) s)"
shell
interrupted() {
    local steps
    steps=$(wait_steps "$CUT_ATTEMPT" firmware_interrupted 120)
    say "slot $(booted_slot); enterprise, from install $CUT_ATTEMPT on: $steps"
    # The boot report ran before nats-server answered; the agent concludes the record later.
    local record=
    for ((i = 0; i < 60; i += 2)); do
        record=$(door status 2>/dev/null | grep "install $CUT_ATTEMPT " || true)
        grep -q "  failed" <<<"$record" && break
        sleep 2
    done
    say "${record:0:160}"
    [ -n "$writing" ] && [ "$(booted_slot)" = b ] && grep -q 'verdict=good' <<<"$line" &&
        [[ $steps == "firmware_install_requested firmware_verified "*firmware_interrupted* ]] &&
        grep -q "  failed" <<<"$record"
}
check "power cut during the install: slot b boots, the interrupted install is on record and its record says failed" interrupted

# --- 5. a firmware that cannot become healthy --------------------------------------------------------------
step "the operator installs $BAD_VERSION again (CHG-1006): it cannot become healthy"
ask_install bad CHG-1006 900 >"$WORK/follow-bad.log" 2>&1 &
FOLLOW_PID=$!
qemu_wait_exit 1200 || die "the appliance did not reboot for the install within 1200 s"
QEMU_PID=
step "boots 8-: slot a tries, then slot b by itself"
tries=()
landed=
for n in 1 2 3 4 5; do
    boot "8-try-$n"
    line=$(verdict 300)
    slot=$(booted_slot)
    say "boot $BOOTS: slot $slot: ${line#bsfg-boot-check: } ($(since_boot) s)"
    if [ "$slot" != a ]; then
        landed=$slot
        break
    fi
    tries+=("$(grep -o 'verdict=[a-z]*' <<<"$line")")
    # A bad boot on trial reboots by itself (QEMU ends: -no-reboot).
    qemu_wait_exit 120 || say "boot $BOOTS did not reboot by itself within 120 s"
    QEMU_PID=
done
shell
rolled_back() {
    local out
    out=$(guest 'sed -n "s/^IMAGE_VERSION=//p" /usr/lib/os-release; ls /efi/EFI/Linux/ | paste -sd" "; echo "STATE_A=$(bsfg boot-backend get-state a 2>/dev/null)"; grep -c "slot=a .*verdict=bad reason=\"bsfg.service is masked\"" /var/lib/bsfg-boot-check/results')
    indent <<<"$out"
    say "slot a's tries: ${tries[*]:-none}; then slot ${landed:-?}"
    [ "${tries[*]}" = "verdict=bad verdict=bad verdict=bad" ] && [ "$landed" = b ] &&
        grep -qx "$GOOD_VERSION" <<<"$out" && grep -qx 'bsfg-a+0-3.efi bsfg-b.efi' <<<"$out" &&
        grep -qx 'STATE_A=bad' <<<"$out" && grep -qx 3 <<<"$out"
}
check "three bad boots of slot a (bsfg.service masked), then back on slot b by itself; slot a at +0" rolled_back
rollback_on_record() {
    local rc=0 attempt steps why
    wait "$FOLLOW_PID" || rc=$?
    FOLLOW_PID=
    indent <"$WORK/follow-bad.log"
    attempt=$(attempt_of "$(cat "$WORK/follow-bad.log")")
    steps=$(wait_steps "$attempt" firmware_rolled_back 120)
    say "enterprise, from install $attempt on: $steps"
    why=$(trail | sed -n "/\"$attempt\"/,\$p" | grep '^firmware_rolled_back' | head -1)
    say "${why:0:200}"
    [ "$rc" != 0 ] && grep -q 'rolled_back' "$WORK/follow-bad.log" &&
        [[ $steps == "firmware_install_requested firmware_verified firmware_written firmware_reboot"*firmware_rolled_back* ]] &&
        grep -q 'bsfg.service is masked' <<<"$why"
}
check "the rollback and its reason are facts in the enterprise zone; the operator's command saw rolled_back" rollback_on_record
# The unhealthy firmware's node never ran (masked), but its boot report and health check
# appended facts to the zone's JetStream on each try; after the rollback the old version's node
# serves them (the enterprise zone can only have them from it).
served_by_old() {
    local booted bad
    booted=$(trail | grep '^firmware_booted ' | grep -cF "\"version\":\"$BAD_VERSION\"")
    bad=$(trail | grep '^firmware_bad_boot ' | grep -cF "\"version\":\"$BAD_VERSION\"")
    say "facts written by $BAD_VERSION, in the enterprise zone through $GOOD_VERSION: firmware_booted x$booted, firmware_bad_boot x$bad"
    [ "$booted" = 3 ] && [ "$bad" = 3 ]
}
check "rollback after the new version wrote facts: the old version serves them" served_by_old
powerdown

echo "--- upgrade-test: summary ($BOOTS boots, $(($(date +%s) - T_START)) s)"
printf '%s\n' "${results[@]}"
echo "upgrade-test: $((${#results[@]} - failures)) passed, $failures failed"
exit $((failures > 0))
