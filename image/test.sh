#!/usr/bin/env bash
# `make image-test`: boots the appliance image under QEMU (TCG, OVMF with Secure Boot enforced and
# the estate's PK/KEK/db enrolled, user-mode networking with restrict=on; hostfwd on 127.0.0.1
# only, guestfwd to 127.0.0.1 ports only) and checks:
#   1. unprovisioned, the node refuses to serve and says why (console and journal; exit 78);
#      Secure Boot is on in the guest (SecureBoot variable 1, SetupMode 0);
#   2. with a provisioning file written to the data partition, the first boot installs it; the
#      system is `running` (every unit active), the node is READY with its sandbox on
#      (NoNewPrivs, seccomp, no capabilities, landlock), nftables is loaded, the boot is blessed
#      (boot counting);
#   3. the appliance is the IDMZ zone between a plant zone and an enterprise zone on the host:
#      facts (one with an artifact) cross plant -> appliance -> enterprise, an order crosses back,
#      all over mTLS through the forwarded ports;
#   4. only the mTLS port answers from outside (nats-server and port 22 do not);
#   5. a clean shutdown leaves a clean data file system;
#   6. a power cut (kill -9 of QEMU) while facts cross loses nothing the appliance confirmed:
#      after the next boot every fact reaches enterprise exactly once;
#   7. one flipped byte in root-a stops the boot with a dm-verity error (kernel panic); slot a's
#      UKI signed by another key than the estate's db key is refused by the firmware (Access
#      Denied): the kernel never starts;
# and prints the boot time to READY and the image and root sizes, and writes them to the
# manifests. It tests the DEBUG=1 variant (serial console with a debug shell, needed to look
# inside) and checks that its root hash is the production image's: the root file system is the
# same, only the UKI's command line differs. Needs the images (`make image`; the DEBUG variant is
# made here from the cached root). Takes ~5 min on 2 cores. Prints one line per check.
# shellcheck disable=SC2317,SC2016 # checks run through check(); $... in guest commands is the guest's
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=zones.sh
. "$IMAGE_DIR/zones.sh"
SERIAL=$IMAGE_DIR/serial.py

PROD=$(image_base).img
[ -f "$PROD" ] || die "no $PROD: run 'make image' first"
step "DEBUG variant of the image (same root, serial console)"
DEBUG=1 "$IMAGE_DIR/build.sh" | grep -E 'reusing|root hash|done' || true
DBG=$(image_base debug).img
[ -f "$DBG" ] || die "the DEBUG image was not built"
prod_hash=$(jq -r .root.root_hash "$(image_base).manifest.json")
dbg_hash=$(jq -r .root.root_hash "$(image_base debug).manifest.json")
# The firmware's variables: the estate's Secure Boot keys enrolled (image/build.sh); every boot
# starts from a copy.
QEMU_VARS=$(image_base debug).ovmf-vars.fd

WORK=$(mktemp -d /tmp/bsfg-image-test.XXXXXX)
QEMU_PID=
cleanup() {
    if [ -n "$QEMU_PID" ]; then kill "$QEMU_PID" 2>/dev/null || true; fi
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
        results+=("ok      $name")
        printf '  \033[32mok\033[0m      %s\n' "$name"
    else
        results+=("FAILED  $name")
        printf '  \033[31mFAILED\033[0m  %s\n' "$name"
        failures=$((failures + 1))
    fi
}
indent() { sed 's/^/         /'; }
# guest CMD [TIMEOUT]: run CMD in the appliance's debug shell.
guest() { "$SERIAL" "$VM/serial.sock" run "$1" "${2:-60}"; }
# settle: wait for the debug shell, stop systemd's and the kernel's messages on the console (they
# would mix with the commands' output), wait for the boot to finish; prints the system state.
settle() {
    "$SERIAL" "$VM/serial.log" wait 'root@bsfg-appliance' "${1:-240}" >/dev/null || {
        tail -30 "$VM/serial.log"
        die "no debug shell on the serial console after ${1:-240} s"
    }
    guest 'kill -s RTMIN+21 1; dmesg -n 1; echo "STATE=$(systemctl is-system-running --wait)"' 240 |
        grep -o 'STATE=[a-z-]*' | cut -d= -f2
}

check "production and DEBUG images have the same root hash ($prod_hash)" [ "$prod_hash" = "$dbg_hash" ]

# --- host zones ---------------------------------------------------------------------------------------------
step "host zones: plant-a and enterprise on 127.0.0.1, one development CA with the appliance"
zones_init "$WORK"
zones_start
say "plant-a node 127.0.0.1:${NODE_PORT[plant-a]}, enterprise node 127.0.0.1:${NODE_PORT[enterprise]}"
say "appliance: 127.0.0.1:$APP_PORT -> :9443, guestfwd $PLANT_GUEST_ADDR:9443 -> plant-a, $ENTERPRISE_GUEST_ADDR:9443 -> enterprise"

mkdir -p "$WORK/vm1" "$WORK/vm2" "$WORK/vm3" "$WORK/vm-cut" "$WORK/vm4"
DISK=$WORK/disk.img
cp --sparse=always "$DBG" "$DISK"
# A gateway disk is larger than the image: the first boot grows the data partition (JetStream
# reserves each stream's max_bytes: the IDMZ example needs 6 GiB; image/README.md, "Flashing").
truncate -s "$GATEWAY_DISK" "$DISK"

# --- 1. unprovisioned --------------------------------------------------------------------------------------------
step "boot 1: the image as built, not provisioned"
VM=$WORK/vm1
qemu_start "$VM" "$DISK" "$APP_NETDEV"
state=$(settle)
say "systemctl is-system-running: $state (the node is not serving: degraded is expected)"
unprov_console() { grep -q 'bsfg: NOT PROVISIONED' "$VM/serial.log" && grep -q 'bsfg.toml: cannot read' "$VM/serial.log"; }
check "unprovisioned: the console says why the node does not serve" unprov_console
unprov_journal() {
    local out
    out=$(guest 'echo "EXIT=$(systemctl show -p ExecMainStatus --value bsfg.service)"; journalctl -b -o cat -u bsfg.service -u bsfg-provisioning-check.service | grep -E "NOT PROVISIONED|cannot read" | cut -c1-110')
    indent <<<"$out"
    grep -qx 'EXIT=78' <<<"$out" && grep -q 'cannot read' <<<"$out" && grep -q 'NOT PROVISIONED' <<<"$out"
}
check "unprovisioned: bsfg exited 78 and the journal says why" unprov_journal
# The firmware booted well even though the site has not provisioned it yet: blessed.
blessed() {
    local out
    out=$(guest 'echo "BLESS=$(systemctl is-active systemd-bless-boot.service)"; ls /efi/EFI/Linux/')
    indent <<<"$out"
    grep -qx 'BLESS=active' <<<"$out" && grep -qx 'bsfg-a.efi' <<<"$out"
}
check "boot counting: the boot was blessed (bsfg-a+3.efi -> bsfg-a.efi), unprovisioned or not" blessed
# Secure Boot: the firmware says it enforced it (SecureBoot = 1, SetupMode = 0: PK enrolled, user
# mode), and the kernel saw it. Each variable file is 4 bytes of attributes, then the value.
secure_boot_on() {
    local out
    out=$(guest 'v=/sys/firmware/efi/efivars; g=8be4df61-93ca-11d2-aa0d-00e098032b8c
        echo "SECUREBOOT=$(od -An -tu1 $v/SecureBoot-$g | awk "{ print \$NF }") SETUPMODE=$(od -An -tu1 $v/SetupMode-$g | awk "{ print \$NF }")"
        dmesg | grep -i "secure boot" | cut -c1-100; bootctl status 2>/dev/null | grep -i "secure boot"')
    indent <<<"$out"
    grep -q 'SECUREBOOT=1 SETUPMODE=0' <<<"$out" && grep -qi 'secure boot enabled' <<<"$out"
}
check "Secure Boot is on in the guest (SecureBoot=1, SetupMode=0; the kernel saw it)" secure_boot_on
guest 'systemctl poweroff' 5 >/dev/null || true
check "unprovisioned: clean power-off" qemu_wait_exit 90
QEMU_PID=
grown() {
    grep -a 'data partition grown' "$VM/serial.log" | indent
    grep -aq 'data partition grown' "$VM/serial.log"
}
check "first boot on a $GATEWAY_DISK disk grew the data partition" grown

# --- 2. provisioned at first boot ------------------------------------------------------------------------------
step "provisioning file for the appliance (zone idmz) -> the data partition"
"$IMAGE_DIR/provision.sh" bundle "$ZONE_DIR_IDMZ" "$WORK/idmz-provision.tar"
"$IMAGE_DIR/provision.sh" write "$DISK" "$WORK/idmz-provision.tar"

step "boot 2: first boot with the provisioning file"
t0=$(date +%s.%N)
VM=$WORK/vm2
qemu_start "$VM" "$DISK" "$APP_NETDEV"
"$SERIAL" "$VM/serial.log" wait 'Started .*bsfg\.service' 300 >/dev/null || {
    tail -40 "$VM/serial.log"
    die "boot 2: bsfg.service did not become READY within 300 s"
}
t_ready=$(date +%s.%N)
BOOT_READY=$(awk -v a="$t0" -v b="$t_ready" 'BEGIN { printf "%.1f", b - a }')
say "QEMU start -> bsfg READY (Type=notify): ${BOOT_READY} s wall (OVMF, systemd-boot, kernel, initrd, systemd; TCG)"
state=$(settle 120)
say "systemctl is-system-running: $state"
if [ "$state" != running ]; then guest 'systemctl --failed --no-legend; journalctl -b -p err --no-pager | tail -20' || true; fi
check "provisioned: systemctl is-system-running = running" [ "$state" = running ]
guest_ready=$(guest 'echo "T=$(systemctl show -p ActiveEnterTimestampMonotonic --value bsfg.service)"' | grep -o 'T=[0-9]*' | cut -d= -f2)
KERNEL_TO_READY=$(awk -v u="$guest_ready" 'BEGIN { printf "%.1f", u / 1e6 }')
say "kernel start -> bsfg READY: ${KERNEL_TO_READY} s (guest monotonic clock)"
provisioned() {
    guest 'test ! -e /data/provision/bsfg-provision.tar && test -f /etc/bsfg/tls/idmz-bsfg.key && stat -c "%U:%G %a %n" /etc/bsfg /etc/bsfg/tls/idmz-bsfg.key /etc/nats/secrets.conf' |
        indent
    grep -q 'provisioned zone idmz' "$VM/serial.log"
}
check "first boot installed the provisioning file and deleted it" provisioned
sandbox() {
    local out
    out=$(guest 'pid=$(systemctl show -p MainPID --value bsfg.service); grep -E "^(NoNewPrivs|Seccomp|CapEff|CapPrm|CapBnd|CapAmb):" /proc/$pid/status; journalctl -b -o verbose -u bsfg.service MESSAGE="sandbox applied" | grep -E "^ *F_[A-Z_]*=" | sed "s/^ *F_//" | paste -sd" "')
    indent <<<"$out"
    grep -qP '^NoNewPrivs:\s+1' <<<"$out" && grep -qP '^Seccomp:\s+2' <<<"$out" &&
        [ "$(grep -cP '^Cap(Eff|Prm|Bnd|Amb):\s+0{16}' <<<"$out")" -eq 4 ]
}
check "node READY with both sandbox layers: NoNewPrivs 1, Seccomp 2, no capabilities" sandbox
landlock() {
    local m
    m=$(curl -sS --max-time 20 --cacert "$WORK/pki/ca.pem" --cert "$WORK/pki/ops.pem" --key "$WORK/pki/ops.key" \
        "https://127.0.0.1:$APP_PORT/metrics" | grep -E '^bsfg_sandbox_') || return 1
    indent <<<"$m"
    # 2 = landlock "full" (every rule the node asked for, network ones included), 1 = partial.
    grep -qE '^bsfg_sandbox_landlock_enforced(\{[^}]*\})? 2' <<<"$m" &&
        awk '/^bsfg_sandbox_landlock_abi/ { exit !($NF >= 4) }' <<<"$m"
}
check "landlock fully enforced, TCP rules included (ABI >= 4: the 6.12 kernel); /metrics via hostfwd" landlock
nft_loaded() {
    local out
    out=$(guest 'systemctl is-active nftables.service; nft list set inet bsfg bsfg_peers | grep elements')
    indent <<<"$out"
    grep -q '^active' <<<"$out" && grep -q "$PLANT_GUEST_ADDR . 9443" <<<"$out"
}
check "nftables active with the provisioned peers" nft_loaded
allow_list() {
    local out
    out=$(guest 'systemctl show -p IPAddressAllow --value bsfg.service')
    indent <<<"$out"
    grep -q "$PLANT_GUEST_ADDR" <<<"$out" && grep -q '10.0.2.2' <<<"$out"
}
check "the node's IPAddressAllow= has the peers and the allowed callers" allow_list

# --- 3. the IDMZ between two host zones -------------------------------------------------------------------------
step "facts across the appliance"
check "facts (one with an artifact) cross plant-a -> appliance -> enterprise, and an order back" facts_cross

# --- 4. only the mTLS port --------------------------------------------------------------------------------------
step "ports from outside"
tls_answers() {
    local s
    s=$(openssl s_client -connect "127.0.0.1:$APP_PORT" -CAfile "$WORK/pki/ca.pem" -verify_return_error \
        </dev/null 2>/dev/null | grep -E '^subject=|Verify return code') || true
    say "9443: $(tr '\n' ' ' <<<"$s")"
    grep -q 'idmz-bsfg' <<<"$s" && grep -q 'Verify return code: 0' <<<"$s"
}
check "the mTLS port answers (server certificate idmz-bsfg)" tls_answers
# silent PORT: nothing comes back within 5 s (nats-server would greet with INFO at once).
silent() {
    local got
    got=$(timeout 6 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1 && timeout 5 head -c 64 <&3" 2>/dev/null | tr -d '\0' || true)
    say "port $2: ${got:-no answer}"
    [ -z "$got" ]
}
check "nats-server (guest :4222) does not answer from outside" silent "$APP_NATS_PORT" 4222
check "nothing answers on guest :22 (no ssh)" silent "$APP_SSH_PORT" 22
listeners() {
    local out
    out=$(guest 'ss -Hltn | awk "{ print \$4 }" | sort')
    say "listening in the guest: $(tr '\n' ' ' <<<"$out")"
    grep -qx '127.0.0.1:4222' <<<"$out" && ! grep -qE ':22$' <<<"$out"
}
check "inside: nats-server listens on 127.0.0.1 only, no sshd" listeners
no_pkg_manager() { guest '! command -v apt-get && ! command -v dpkg && ! command -v perl && ! command -v sshd' >/dev/null; }
check "no apt, dpkg, perl or sshd in the running system" no_pkg_manager

# --- 5. shutdown ---------------------------------------------------------------------------------------------------
step "clean shutdown"
guest 'systemctl poweroff' 5 >/dev/null || true
check "power-off within 90 s" qemu_wait_exit 90
QEMU_PID=
clean_data() {
    local off _size state
    read -r off _size < <(part_offset "$DISK" data)
    state=$(dumpe2fs -h "$DISK?offset=$off" 2>/dev/null | sed -n 's/^Filesystem state: *//p')
    say "data partition: $state"
    [ "$state" = clean ]
}
check "data file system clean after the shutdown" clean_data

# --- 6. power cut -------------------------------------------------------------------------------------------------
# kill -9 of QEMU while facts cross: the guest loses everything in its RAM (page cache, unsynced
# writes), as in a power cut; what it had written to its disk stays (the disk's own write cache
# is not modelled). The appliance confirms a page to plant-a only once the facts are durable in its
# JetStream (sync_interval: always), so after the next boot every fact plant-a sent must reach
# enterprise exactly once: one confirmed but lost would never be sent again.
step "boot 3: power cut (kill -9 of QEMU) while facts cross plant-a -> appliance, then boot 4"
CUT_FACTS=${CUT_FACTS:-300}
# status_of ZONE CONSUMER FIGURE: the consumer's cursor or high watermark (FIGURE cursor|hwm), as
# bsfg status prints them ("NAME category C cursor N high watermark M backlog B").
status_of() {
    local column=5
    [ "$3" = hwm ] && column=8
    { "$ESTATE_BSFG" status --config "$ESTATE_DIR/$1.toml" 2>/dev/null || true; } |
        awk -v c="$2" -v n="$column" '$1 == c { print $n }'
}
status_cursor() { status_of "$1" "$2" cursor; }
# append_burst COUNT: the MES appends facts cut-1 .. cut-COUNT; prints how many were stored.
append_burst() {
    local i n=0
    for ((i = 1; i <= $1; i++)); do
        if call plant-a plant-a-mes AppendFact "$(fact "cut-$i" plant-a enterprise batch:B-2000 step_completed "{\"step\":$i}")" |
            grep '"offset"' >/dev/null; then
            n=$((n + 1))
        fi
    done
    echo "$n"
}
# archive_ids: every message id in enterprise's archive, read page by page (FetchFacts, then
# ConfirmReceipt of the page's last offset), one per line.
archive_ids() {
    local page last
    while :; do
        page=$(call enterprise enterprise-historian FetchFacts '{"consumerName":"archive","limit":200}') || return 1
        last=$(jq -r '.facts // [] | last | .offset // empty' <<<"$page")
        [ -n "$last" ] || return 0
        jq -r '.facts[].envelope.messageId' <<<"$page"
        call enterprise enterprise-historian ConfirmReceipt "{\"consumerName\":\"archive\",\"offset\":\"$last\"}" >/dev/null || return 1
    done
}
base=$(status_cursor plant-a to-idmz)
VM=$WORK/vm-cut
qemu_start "$VM" "$DISK" "$APP_NETDEV"
"$SERIAL" "$VM/serial.log" wait 'Started .*bsfg\.service' 300 >/dev/null || die "boot 3: bsfg.service did not become READY"
append_burst "$CUT_FACTS" >"$WORK/burst.out" &
burst_pid=$!
cut_at=
for _ in $(seq 600); do
    c=$(status_cursor plant-a to-idmz)
    if [ "${c:-0}" -ge $((base + 30)) ]; then cut_at=$c; break; fi
    sleep 0.2
done
kill -9 "$QEMU_PID" 2>/dev/null || true
wait "$QEMU_PID" 2>/dev/null || true
QEMU_PID=
confirmed=$(status_cursor plant-a to-idmz)
wait "$burst_pid" || true
appended=$(cat "$WORK/burst.out")
say "power cut with plant-a's to-idmz cursor at ${cut_at:-never reached $((base + 30))} (confirmed by the appliance before the cut: $confirmed; $appended of $CUT_FACTS facts appended in plant-a)"
mid_replication() { [ -n "$cut_at" ] && [ "$confirmed" -lt $((base + appended)) ] && [ "$appended" -eq "$CUT_FACTS" ]; }
check "the power cut came while facts were crossing (some confirmed, not all)" mid_replication

VM=$WORK/vm4
qemu_start "$VM" "$DISK" "$APP_NETDEV"
"$SERIAL" "$VM/serial.log" wait 'Started .*bsfg\.service' 300 >/dev/null || die "boot 4: bsfg.service did not become READY after the power cut"
grep -aE 'EXT4-fs .*(recovery complete|mounted)' "$VM/serial.log" | head -2 | indent || true
expected=$((base + CUT_FACTS))
caught_up=
for _ in $(seq 600); do
    if [ "$(status_cursor plant-a to-idmz)" = "$expected" ]; then
        caught_up=1
        break
    fi
    sleep 0.2
done
say "after boot 4: plant-a's to-idmz cursor $(status_cursor plant-a to-idmz) of $expected"
after_cut() {
    local ids
    for _ in $(seq 150); do
        [ "$(status_of enterprise archive hwm)" = "$expected" ] && break
        sleep 0.4
    done
    ids=$(archive_ids) || return 1
    say "enterprise's archive: $(wc -l <<<"$ids") facts, $(sort -u <<<"$ids" | wc -l) distinct message ids, $(grep -c '^cut-' <<<"$ids") of the $CUT_FACTS cut-* facts"
    [ -n "$caught_up" ] && [ "$(wc -l <<<"$ids")" -eq "$expected" ] && [ "$(sort -u <<<"$ids" | wc -l)" -eq "$expected" ] &&
        [ "$(grep -c '^cut-' <<<"$ids")" -eq "$CUT_FACTS" ]
}
check "after the power cut every fact reaches enterprise exactly once (nothing confirmed was lost)" after_cut
guest 'systemctl poweroff' 5 >/dev/null || true
qemu_wait_exit 90 || true
QEMU_PID=

# --- 7. tampering ---------------------------------------------------------------------------------------------------
step "boot 5: one flipped byte in root-a"
VM=$WORK/vm3
TAMPER=$WORK/tampered.img
cp --sparse=always "$DBG" "$TAMPER"
read -r ra_off _ < <(part_offset "$TAMPER" root-a)
# A byte of block 0 (the superblock's block, read by the mount): verity must refuse it even
# though the file system itself would not notice (the first 1 KiB of erofs is unused).
pos=$((ra_off + 100))
old=$(dd if="$TAMPER" bs=1 skip="$pos" count=1 status=none | od -An -tu1 | tr -d ' ')
printf '%b' "\\0$(printf '%03o' $((old ^ 0xff)))" | dd of="$TAMPER" bs=1 seek="$pos" count=1 conv=notrunc status=none
say "root-a byte 100: $old -> $((old ^ 0xff))"
qemu_start "$VM" "$TAMPER" ""
qemu_wait_exit 180 || true
QEMU_PID=
grep -aE 'verity|Kernel panic' "$VM/serial.log" | head -4 | indent
tamper_stopped() {
    grep -aq 'dm-verity device corrupted\|verity.*corrupted' "$VM/serial.log" &&
        grep -aq 'Kernel panic' "$VM/serial.log" && ! grep -aq 'Reached target' "$VM/serial.log"
}
check "the boot stops with a dm-verity error (kernel panic before systemd)" tamper_stopped

# A copy of the image whose slot a UKI is re-signed with a throwaway key (not in db): the
# firmware must refuse it when systemd-boot (estate-signed, so it starts) loads it, and the kernel
# must never start. Only firmware and boot loader run: a few seconds.
step "boot 6: slot a's UKI signed by a foreign key"
VM=$WORK/vm-foreign
mkdir -p "$VM"
FOREIGN=$WORK/foreign.img
cp --sparse=always "$DBG" "$FOREIGN"
read -r esp_off _ < <(part_offset "$FOREIGN" esp)
export MTOOLS_SKIP_CHECK=1
mcopy -n -i "$FOREIGN@@$esp_off" ::/EFI/Linux/bsfg-a+3.efi "$VM/uki-estate.efi"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$VM/foreign.key" -out "$VM/foreign.pem" -days 1 \
    -subj "/CN=foreign key, not in the estate's db" 2>/dev/null
osslsigncode remove-signature -in "$VM/uki-estate.efi" -out "$VM/uki-unsigned.efi" >/dev/null
osslsigncode sign -certs "$VM/foreign.pem" -key "$VM/foreign.key" -h sha256 -in "$VM/uki-unsigned.efi" \
    -out "$VM/uki-foreign.efi" >/dev/null
mcopy -o -i "$FOREIGN@@$esp_off" "$VM/uki-foreign.efi" ::/EFI/Linux/bsfg-a+3.efi
foreign_signed() {
    say "estate UKI signed by db: $(efi_signed_by "$VM/uki-estate.efi" "$SECUREBOOT_DB_CERT" && echo yes || echo no);" \
        "re-signed: by the foreign key $(efi_signed_by "$VM/uki-foreign.efi" "$VM/foreign.pem" && echo yes || echo no)," \
        "by db $(efi_signed_by "$VM/uki-foreign.efi" "$SECUREBOOT_DB_CERT" && echo yes || echo no)"
    efi_signed_by "$VM/uki-estate.efi" "$SECUREBOOT_DB_CERT" && efi_signed_by "$VM/uki-foreign.efi" "$VM/foreign.pem" &&
        ! efi_signed_by "$VM/uki-foreign.efi" "$SECUREBOOT_DB_CERT"
}
check "the image's UKI is signed by the estate's db key; the copy by the foreign key only" foreign_signed
t0=$(date +%s.%N)
qemu_start "$VM" "$FOREIGN" ""
# The firmware gives up once systemd-boot failed (twice: it retries the boot option).
"$SERIAL" "$VM/serial.log" wait 'No bootable option|Reached target|bsfg-initrd' 120 >/dev/null || true
FOREIGN_SECONDS=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }')
kill "$QEMU_PID" 2>/dev/null || true
wait "$QEMU_PID" 2>/dev/null || true
QEMU_PID=
grep -aoE 'Error loading [^ ]*efi: [A-Za-z ]*|Security Violation|No bootable option[^.]*' "$VM/serial.log" | sort | uniq -c | indent || true
foreign_refused() {
    say "firmware and boot loader only: ${FOREIGN_SECONDS} s"
    grep -aqE 'Error loading .EFI.Linux.bsfg-a\+[0-9-]*\.efi: (Access Denied|Security Violation)' "$VM/serial.log" &&
        ! grep -aqE 'EFI stub|Linux version|bsfg-initrd|Reached target' "$VM/serial.log"
}
check "a UKI signed by another key does not boot: the firmware refuses it (Access Denied), no kernel" foreign_refused

# --- 8. build-time provisioning -----------------------------------------------------------------------------------
step "make image ZONE_DIR=...: provisioned at build time (same root, reused)"
zone_build() {
    local zout=$WORK/zone-out main_out=$OUT img off _size
    OUT=$zout BUILD=$main_out/build CACHE=$main_out/cache ZONE_DIR=$ZONE_DIR_IDMZ "$IMAGE_DIR/build.sh" >"$WORK/zone-build.log" 2>&1 ||
        { tail -5 "$WORK/zone-build.log"; return 1; }
    img=$zout/bsfg-appliance-$VERSION-$ARCH-idmz.img
    read -r off _size < <(part_offset "$img" data)
    debugfs -R "dump /provision/bsfg-provision.tar $WORK/zone.tar" "$img?offset=$off" >/dev/null 2>&1
    say "$(basename "$img") (mode $(stat -c %a "$img")): root hash $(jq -r .root.root_hash "$zout"/*.manifest.json), data:/provision/bsfg-provision.tar with $(tar -tf "$WORK/zone.tar" | grep -c -v '/$') files"
    # grep without -q reads all of tar's output: tar writes line by line, and with pipefail an
    # early exit of grep -q would fail the pipeline on tar's SIGPIPE.
    tar -tf "$WORK/zone.tar" | grep -x 'etc/bsfg/tls/idmz-bsfg.key' >/dev/null && [ "$(stat -c %a "$img")" = 600 ] &&
        [ "$(jq -r .root.root_hash "$zout"/*.manifest.json)" = "$prod_hash" ]
}
check "ZONE_DIR image: same root, provisioning file on the data partition, image mode 0600" zone_build

# --- sizes, times, manifest -----------------------------------------------------------------------------------------
step "figures"
img_bytes=$(stat -c %s "$PROD")
img_alloc=$(($(stat -c %b "$PROD") * $(stat -c %B "$PROD")))
root_bytes=$(jq -r .root.bytes "$(image_base).manifest.json")
uki_bytes=$(du -b "$OUT/build/initrd.img" | cut -f1)
say "image: $((img_bytes / 1048576)) MiB raw, $((img_alloc / 1048576)) MiB of data (what bmaptool writes)"
say "root file system: $((root_bytes / 1048576)) MiB ($(jq -r .root.fstype "$(image_base).manifest.json"))"
say "boot to READY: ${BOOT_READY} s wall from QEMU start (TCG), ${KERNEL_TO_READY} s from kernel start"
for m in "$(image_base).manifest.json" "$(image_base debug).manifest.json"; do
    jq --argjson wall "$BOOT_READY" --argjson kernel "$KERNEL_TO_READY" --argjson img "$img_bytes" \
        --argjson alloc "$img_alloc" --argjson root "$root_bytes" --argjson initrd "$uki_bytes" \
        --arg when "$(date -u +%FT%TZ)" --arg failures "$failures" \
        '.measured = {by: "image/test.sh (DEBUG variant, same root hash)", at: $when,
                      qemu: "TCG, 2 vCPUs, 1 GiB, OVMF with Secure Boot", checks_failed: ($failures | tonumber),
                      boot_to_ready_seconds_wall: $wall, kernel_to_ready_seconds: $kernel,
                      image_bytes: $img, image_allocated_bytes: $alloc, root_bytes: $root,
                      initrd_bytes: $initrd}' "$m" >"$m.tmp"
    mv "$m.tmp" "$m"
done
say "written to $(basename "$(image_base).manifest.json") (.measured)"

echo "--- image-test: summary"
printf '%s\n' "${results[@]}"
echo "image-test: $((${#results[@]} - failures)) passed, $failures failed"
exit $((failures > 0))
