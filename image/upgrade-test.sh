#!/usr/bin/env bash
# `make upgrade-test`: the appliance's A/B upgrade and automatic rollback under QEMU (TCG, OVMF
# with Secure Boot enforced), with the real image, real RAUC bundles (their UKIs signed with the
# estate's db key) and the real boot loader:
#   1. the DEBUG image (slot a, VERSION), provisioned as the IDMZ zone (a counted boot of a new
#      slot is good only when nats-server and the node serve, so an unprovisioned node -- exit 78
#      -- would fail the upgrade), boots and is blessed; `rauc install` of a good bundle
#      (VERSION.1) writes slot b and makes it primary;
#   2. the reboot comes up in slot b with the new version, on trial (counted), and blesses it
#      (EFI/Linux/bsfg-b.efi, no counter);
#   3. three power cuts (QEMU killed as the initrd starts) right after it: the next boot is
#      still slot b, still blessed;
#   4. a bundle whose node cannot become healthy (VERSION.2, BUNDLE_EXTRA_CMDLINE=
#      systemd.mask=bsfg.service) installed into slot a: each of its boots is bad and reboots,
#      and after its three tries systemd-boot boots slot b by itself; the failed entry is at +0.
# Builds what it needs: the DEBUG image (out/, shared with make image-test) and the two bundles
# from DEBUG images of the higher versions (out/upgrade-test/; each version is its own root
# build, cached). The bundles are put on the data partition with debugfs before the first boot
# and installed through the serial debug shell (the node-side verified install and the operator
# RPC are not part of this test yet). Prints one line per check and a summary; KEEP=1 keeps the
# work directory (serial logs of every boot).
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

WORK=$(mktemp -d /tmp/bsfg-upgrade-test.XXXXXX)
QEMU_PID=
cleanup() {
    if [ -n "$QEMU_PID" ]; then kill "$QEMU_PID" 2>/dev/null || true; fi
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
    qemu_start "$VM" "$DISK" ""
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

# --- the disk: DEBUG image, grown like a gateway disk, provisioned, bundles on the data partition --------
step "disk: the DEBUG image, 10 GiB, provisioned as idmz, both bundles in data:/bundles/"
DISK=$WORK/disk.img
cp --sparse=always "$DBG" "$DISK"
truncate -s 10G "$DISK"
zones_init "$WORK"
"$IMAGE_DIR/provision.sh" bundle "$ZONE_DIR_IDMZ" "$WORK/idmz-provision.tar" >/dev/null
"$IMAGE_DIR/provision.sh" write "$DISK" "$WORK/idmz-provision.tar" >/dev/null
read -r data_off _ < <(part_offset "$DISK" data)
debugfs -w -f - "$DISK?offset=$data_off" >/dev/null 2>&1 <<EOF
mkdir /bundles
write $GOOD /bundles/good.raucb
write $BAD /bundles/bad.raucb
set_inode_field /bundles/good.raucb mode 0100644
set_inode_field /bundles/bad.raucb mode 0100644
EOF
for b in good bad; do
    debugfs -R "stat /bundles/$b.raucb" "$DISK?offset=$data_off" 2>/dev/null | grep -q "Size: [1-9]" ||
        die "could not write the $b bundle to the data partition"
done

# --- 1. factory image, slot a: blessed, then the good bundle ------------------------------------------
step "boot 1: the image as flashed (slot a, $BASE_VERSION), then rauc install of $GOOD_VERSION"
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
t0=$(date +%s)
install_good() {
    local out
    out=$(guest 'rauc install /data/bundles/good.raucb 2>&1 | tail -4; echo "RC=${PIPESTATUS[0]}"' 900)
    indent <<<"$out"
    grep -q '^RC=0' <<<"$out"
}
check "rauc install of the good bundle ($GOOD_VERSION) into slot b" install_good
say "install took $(($(date +%s) - t0)) s"
primary_b() {
    local out
    out=$(guest 'echo "PRIMARY=$(bsfg boot-backend get-primary 2>/dev/null)"; ls /efi/EFI/Linux/ | paste -sd" "; rauc status 2>/dev/null | grep -iE "booted|primary" | head -3')
    indent <<<"$out"
    grep -q '^PRIMARY=b' <<<"$out" && grep -q 'bsfg-a.efi bsfg-b+3.efi' <<<"$out"
}
check "after the install: slot b primary (bsfg-b+3.efi next to the blessed bsfg-a.efi)" primary_b
guest 'systemctl reboot' 5 >/dev/null || true
qemu_wait_exit 120 || true
QEMU_PID=

# --- 2. the new slot on trial: blessed -----------------------------------------------------------------------
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

# --- 4. a firmware that cannot become healthy --------------------------------------------------------------
step "boot 6: rauc install of $BAD_VERSION (systemd.mask=bsfg.service) into slot a"
install_bad() {
    local out
    out=$(guest 'rauc install /data/bundles/bad.raucb 2>&1 | tail -3; echo "RC=${PIPESTATUS[0]}"; echo "PRIMARY=$(bsfg boot-backend get-primary 2>/dev/null)"; ls /efi/EFI/Linux/ | paste -sd" "' 900)
    indent <<<"$out"
    grep -q '^RC=0' <<<"$out" && grep -q '^PRIMARY=a' <<<"$out" && grep -q 'bsfg-a+3.efi bsfg-b.efi' <<<"$out"
}
check "rauc install of the unhealthy bundle into slot a: slot a primary (bsfg-a+3.efi)" install_bad
guest 'systemctl reboot' 5 >/dev/null || true
qemu_wait_exit 120 || true
QEMU_PID=

step "boots 7-: slot a tries, then slot b by itself"
tries=()
landed=
for n in 1 2 3 4 5; do
    boot "7-try-$n"
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
powerdown

echo "--- upgrade-test: summary ($BOOTS boots, $(($(date +%s) - T_START)) s)"
printf '%s\n' "${results[@]}"
echo "upgrade-test: $((${#results[@]} - failures)) passed, $failures failed"
exit $((failures > 0))
