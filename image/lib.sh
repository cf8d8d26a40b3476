#!/usr/bin/env bash
# Shared definitions for the appliance image scripts (sourced, not run): the disk layout, the
# output names, the values derived from a seed for reproducible builds (UUIDs, salts), logging,
# and the QEMU boot helper that image/test.sh and image/demo.sh use.
# shellcheck disable=SC2034 # variables are used by the scripts that source this file
set -euo pipefail

IMAGE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$IMAGE_DIR/.." && pwd)
OUT=${OUT:-$ROOT/out}
ARCH=x86_64
VERSION=${VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)}

# RAUC's compatible string: bundles for another product or architecture are refused.
RAUC_COMPATIBLE=bsfg-appliance-$ARCH
# The DEVELOPMENT update CA and bundle signing key, and the DEVELOPMENT Secure Boot keys
# (image/dev-update-pki/README.md).
DEV_UPDATE_PKI=$IMAGE_DIR/dev-update-pki

# --- Secure Boot ----------------------------------------------------------------------------------
# The estate's Secure Boot keys: the db key signs systemd-boot and every UKI (image/build.sh, and
# image/bundle.sh for a UKI it makes itself); PK, KEK and db certificates are what the firmware
# holds (the QEMU tests' OVMF variables: secureboot_vars). Default: the DEVELOPMENT keys.
SECUREBOOT_PK_CERT=${SECUREBOOT_PK_CERT:-$DEV_UPDATE_PKI/sb-pk.pem}
SECUREBOOT_KEK_CERT=${SECUREBOOT_KEK_CERT:-$DEV_UPDATE_PKI/sb-kek.pem}
SECUREBOOT_DB_CERT=${SECUREBOOT_DB_CERT:-$DEV_UPDATE_PKI/sb-db.pem}
SECUREBOOT_DB_KEY=${SECUREBOOT_DB_KEY:-$DEV_UPDATE_PKI/sb-db.key}
# The owner GUID of the estate's entries in PK, KEK and db (EFI_SIGNATURE_DATA SignatureOwner).
SECUREBOOT_OWNER=c3157418-54d2-4549-8ec9-374b8e77c804

# --- disk layout (MiB) -----------------------------------------------------------------------------
# GPT: esp | root-a | root-a-verity | root-b | root-b-verity | data. Slot sizes leave room for the
# root to grow (it is ~110 MiB now); the data partition is meant to be grown on the target disk.
ESP_MIB=${ESP_MIB:-128}
ROOT_MIB=${ROOT_MIB:-512}
VERITY_MIB=${VERITY_MIB:-32}
DATA_MIB=${DATA_MIB:-512}
# The gateway disk the tests and the demo grow a copy of the image to: the IDMZ example's
# reservations (6 GiB of max_bytes) fit in nats-server's 75 % of the grown data partition with
# room to spare for bundles kept beside them (image/README.md, "Flashing").
GATEWAY_DISK=${GATEWAY_DISK:-16G}
# Discoverable Partitions Specification type GUIDs (x86-64).
TYPE_ESP=C12A7328-F81F-11D2-BA4B-00A0C93EC93B
TYPE_ROOT=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709
TYPE_ROOT_VERITY=2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5
TYPE_DATA=0FC63DAF-8483-4772-8E79-3D69D8477DE4 # generic Linux data: mounted by our initrd only

# The root file system: erofs (lz4hc, fast to build and read) or squashfs (zstd, smaller).
ROOTFS_TYPE=${ROOTFS_TYPE:-erofs}

# --- output names ------------------------------------------------------------------------------------
# image_base [SUFFIX]: out/bsfg-appliance-<version>-x86_64[-SUFFIX]
image_base() {
    local base=$OUT/bsfg-appliance-$VERSION-$ARCH
    if [ -n "${1:-}" ]; then base=$base-$1; fi
    echo "$base"
}

# --- logging -------------------------------------------------------------------------------------------
T0=${T0:-$(date +%s.%N)}
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%6.1fs", b - a }'; }
step() { printf '\033[1m[%s] %s\033[0m\n' "$(elapsed)" "$*"; }
say() { printf '         %s\n' "$*"; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# --- reproducible identifiers -------------------------------------------------------------------------
# Every timestamp in the image (file times, password ages, file systems). Fixed, so that two
# builds from the same inputs are identical whatever the date or the last commit; raise it when
# a release should carry a newer date.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1790000000}
# hex_of NAME: 64 hex digits derived from the build seed and NAME.
SEED=${SEED:-bsfg-appliance-$VERSION}
hex_of() { printf '%s/%s' "$SEED" "$1" | sha256sum | cut -c1-64; }
# uuid_of NAME: a version-4-shaped UUID derived from the seed and NAME.
uuid_of() {
    local h
    h=$(hex_of "$1")
    printf '%s-%s-4%s-%x%s-%s\n' "${h:0:8}" "${h:8:4}" "${h:13:3}" $((0x${h:16:1} & 0x3 | 0x8)) "${h:17:3}" "${h:20:12}"
}
# uuid_from_hex HEX32: format 32 hex digits as a UUID (for partition UUIDs taken from a root hash).
uuid_from_hex() { printf '%s-%s-%s-%s-%s\n' "${1:0:8}" "${1:8:4}" "${1:12:4}" "${1:16:4}" "${1:20:12}"; }

# --- unified kernel images ------------------------------------------------------------------------
STUB=/usr/lib/systemd/boot/efi/linuxx64.efi.stub

# uki_cmdline SLOT ROOTHASH DEBUG [EXTRA]: the kernel command line of slot SLOT's UKI. The slot
# is named twice: bsfg.slot= for our initrd (which partitions to open), rauc.slot= for RAUC (which
# slot is booted). The root hash is the same for both slots (the hash tree does not depend on
# the partition it is written to).
uki_cmdline() {
    local line="bsfg.slot=$1 rauc.slot=$1 bsfg.roothash=$2 bsfg.rootfstype=$ROOTFS_TYPE ro panic=10 lockdown=integrity systemd.gpt_auto=0"
    if [ "$3" = 1 ]; then
        line="$line console=ttyS0,115200 loglevel=4 bsfg.debug=1"
    else
        line="$line console=tty0 quiet"
    fi
    echo "$line${4:+ $4}"
}

# uki_os_release SLOT DEBUG: the UKI's .osrel. systemd-boot sorts our entries by IMAGE_ID, then
# IMAGE_VERSION (newest first): a newly installed slot with a higher version boots first.
uki_os_release() {
    cat <<EOF
NAME="BSFG appliance"
ID=bsfg-appliance
ID_LIKE=debian
VERSION_ID=$VERSION
PRETTY_NAME="BSFG appliance $VERSION (slot $1$([ "$2" = 1 ] && echo ', debug'))"
IMAGE_ID=bsfg-appliance
IMAGE_VERSION=$VERSION
EOF
}

# make_uki OUT OS_RELEASE CMDLINE VMLINUZ INITRD: systemd-stub with .osrel, .cmdline, .linux and
# .initrd (the files given) appended after its own sections, each page-aligned; the PE time stamp
# is SOURCE_DATE_EPOCH, so the same inputs give the same UKI.
make_uki() {
    local out=$1 osrel=$2 cmdline=$3 vmlinuz=$4 initrd=$5
    local end args=() sec file size
    local idx vma e
    end=0
    while read -r idx _ size vma _; do
        [[ $idx =~ ^[0-9]+$ ]] || continue
        e=$((0x$vma + 0x$size))
        if ((e > end)); then end=$e; fi
    done < <(objdump -h "$STUB")
    for sec in osrel:"$osrel" cmdline:"$cmdline" linux:"$vmlinuz" initrd:"$initrd"; do
        file=${sec#*:}
        sec=${sec%%:*}
        end=$(((end + 0xfff) & ~0xfff))
        args+=(--add-section ".$sec=$file" --change-section-vma ".$sec=$(printf '0x%x' "$end")")
        size=$(stat -c %s "$file")
        end=$((end + size))
    done
    objcopy "${args[@]}" "$STUB" "$out"
    # objcopy (binutils 2.40) stamps the PE header with the build time: set SOURCE_DATE_EPOCH
    # instead and recompute the PE checksum, so that the same inputs give the same UKI.
    python3 - "$out" "$SOURCE_DATE_EPOCH" <<'PY'
import array, struct, sys
path, stamp = sys.argv[1], int(sys.argv[2])
image = bytearray(open(path, "rb").read())
pe = struct.unpack_from("<I", image, 0x3C)[0]
assert image[pe:pe + 4] == b"PE\0\0", "not a PE image"
struct.pack_into("<I", image, pe + 8, stamp)  # COFF TimeDateStamp
checksum_at = pe + 24 + 64  # optional header CheckSum (same place in PE32 and PE32+)
struct.pack_into("<I", image, checksum_at, 0)
words = array.array("H", bytes(image[: len(image) & ~1]))
total = sum(words) + (image[-1] if len(image) % 2 else 0)
while total >> 16:
    total = (total & 0xFFFF) + (total >> 16)
struct.pack_into("<I", image, checksum_at, total + len(image))
open(path, "wb").write(image)
PY
}

# secureboot_keys_check: the Secure Boot certificates and key exist, parse, and the db key is the
# db certificate's (dies otherwise). Sets SECUREBOOT_SOURCE (development|file).
secureboot_keys_check() {
    local f
    for f in "$SECUREBOOT_PK_CERT" "$SECUREBOOT_KEK_CERT" "$SECUREBOOT_DB_CERT"; do
        openssl x509 -in "$f" -noout 2>/dev/null || die "no PEM certificate at $f (Secure Boot)"
    done
    [ -f "$SECUREBOOT_DB_KEY" ] || die "no Secure Boot db key at $SECUREBOOT_DB_KEY (a file: see image/README.md, Secure Boot)"
    [ "$(openssl x509 -in "$SECUREBOOT_DB_CERT" -noout -pubkey)" = "$(openssl pkey -in "$SECUREBOOT_DB_KEY" -pubout 2>/dev/null)" ] ||
        die "the Secure Boot db key $SECUREBOOT_DB_KEY is not the key of $SECUREBOOT_DB_CERT"
    SECUREBOOT_SOURCE="file"
    case $SECUREBOOT_DB_KEY in "$DEV_UPDATE_PKI"/*) SECUREBOOT_SOURCE=development ;; esac
}

# sign_efi IN OUT: IN (an EFI PE binary: systemd-boot, a UKI) signed with the db key as OUT
# (Authenticode, SHA-256), and checked against the db certificate. osslsigncode, not sbsign: sbsign
# (0.9.4) puts the signing time into the signature, so every build would sign differently;
# osslsigncode -time sets it to SOURCE_DATE_EPOCH, and an RSA PKCS#1 v1.5 signature is
# deterministic, so the same input and key give the same bytes.
sign_efi() {
    rm -f "$2"
    osslsigncode sign -certs "$SECUREBOOT_DB_CERT" -key "$SECUREBOOT_DB_KEY" -h sha256 \
        -time "$SOURCE_DATE_EPOCH" -in "$1" -out "$2" >"$2.log" 2>&1 ||
        die "osslsigncode could not sign $1: $(tail -3 "$2.log")"
    rm -f "$2.log"
    efi_signed_by "$2" "$SECUREBOOT_DB_CERT" || die "$2 does not verify against $SECUREBOOT_DB_CERT after signing"
}

# efi_signed_by FILE CERT: true when FILE's Authenticode signature verifies against CERT.
efi_signed_by() { osslsigncode verify -CAfile "$2" -in "$1" >/dev/null 2>&1; }

# --- QEMU ----------------------------------------------------------------------------------------------
# OVMF built with Secure Boot (and SMM, which protects the variable store: QEMU needs
# -machine smm=on and a secure flash); its variables are a copy of the file secureboot_vars makes.
OVMF_CODE=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd
OVMF_VARS_BLANK=/usr/share/OVMF/OVMF_VARS_4M.fd
# The variable store qemu_start boots with: the image's <base>.ovmf-vars.fd (image/build.sh);
# each boot gets a fresh copy of it.
QEMU_VARS=${QEMU_VARS:-}

# secureboot_vars OUT: OVMF's empty variable store with the estate's PK, KEK and db enrolled and
# Secure Boot on (user mode: only EFI binaries signed by a db key start), as OUT. virt-fw-vars
# writes the same bytes for the same certificates.
secureboot_vars() {
    virt-fw-vars --loglevel warning --input "$OVMF_VARS_BLANK" --output "$1.tmp" \
        --set-pk "$SECUREBOOT_OWNER" "$SECUREBOOT_PK_CERT" --add-kek "$SECUREBOOT_OWNER" "$SECUREBOOT_KEK_CERT" \
        --add-db "$SECUREBOOT_OWNER" "$SECUREBOOT_DB_CERT" --secure-boot ||
        die "virt-fw-vars could not enroll the Secure Boot keys"
    virt-fw-vars --loglevel warning --input "$1.tmp" --print >"$1.txt" 2>&1
    if ! { grep -Eq '^PK +: blob' "$1.txt" && grep -Eq '^KEK +: blob' "$1.txt" && grep -Eq '^db +: blob' "$1.txt" &&
        grep -Eq '^SecureBootEnable +: bool: ON' "$1.txt"; }; then
        die "the new OVMF variables lack PK, KEK, db or SecureBootEnable: $(cat "$1.txt")"
    fi
    rm -f "$1.txt"
    mv "$1.tmp" "$1"
}

# free_port: an unused TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# qemu_start DIR DISK NETDEV_OPTS: boots DISK under OVMF with Secure Boot enforced (the variables:
# a copy of QEMU_VARS in DIR) with TCG in the background. The serial console is a Unix socket
# DIR/serial.sock (image/serial.py talks to it) logged to DIR/serial.log, the QEMU monitor
# DIR/monitor.sock;
# user-mode networking with restrict=on plus the caller's hostfwd=/guestfwd= options. Sets
# QEMU_PID. -no-reboot: a reboot (e.g. after a kernel panic) ends QEMU instead.
qemu_start() {
    local dir=$1 disk=$2 netdev=$3
    [ -f "$QEMU_VARS" ] ||
        die "QEMU_VARS='$QEMU_VARS': no OVMF variables with the estate's Secure Boot keys (image/build.sh makes <image>.ovmf-vars.fd)"
    cp "$QEMU_VARS" "$dir/OVMF_VARS.fd"
    rm -f "$dir/serial.sock" "$dir/serial.log"
    qemu-system-x86_64 -name bsfg-appliance -machine q35,smm=on -accel tcg -cpu max -smp "${QEMU_SMP:-2}" \
        -m "${QEMU_MEM:-1024}" -nodefaults -no-user-config -display none -no-reboot \
        -global driver=cfi.pflash01,property=secure,value=on \
        -drive if=pflash,format=raw,unit=0,readonly=on,file="$OVMF_CODE" \
        -drive if=pflash,format=raw,unit=1,file="$dir/OVMF_VARS.fd" \
        -drive if=none,id=disk0,format=raw,file="$disk",discard=unmap \
        -device virtio-blk-pci,drive=disk0,bootindex=1 \
        -netdev "user,id=n0,restrict=on${netdev:+,$netdev}" -device virtio-net-pci,netdev=n0,romfile= \
        -device i6300esb -rtc base=utc \
        -chardev "socket,id=ser0,path=$dir/serial.sock,server=on,wait=off,logfile=$dir/serial.log" \
        -serial chardev:ser0 -monitor "unix:$dir/monitor.sock,server=on,wait=off" >"$dir/qemu.log" 2>&1 &
    QEMU_PID=$!
    for _ in $(seq 50); do
        [ -S "$dir/serial.sock" ] && return 0
        kill -0 "$QEMU_PID" 2>/dev/null || break
        sleep 0.1
    done
    cat "$dir/qemu.log" >&2
    die "QEMU did not start"
}

# qemu_powerdown DIR: presses the virtual power button (ACPI); systemd-logind shuts down cleanly.
qemu_powerdown() { echo system_powerdown | socat - "UNIX-CONNECT:$1/monitor.sock" >/dev/null 2>&1 || true; }

# qemu_wait_exit SECONDS: waits for QEMU_PID to end; kills it after SECONDS. Returns 0 if it
# ended by itself.
qemu_wait_exit() {
    local i
    for ((i = 0; i < $1 * 10; i++)); do
        kill -0 "$QEMU_PID" 2>/dev/null || {
            wait "$QEMU_PID" 2>/dev/null || true
            return 0
        }
        sleep 0.1
    done
    kill "$QEMU_PID" 2>/dev/null || true
    wait "$QEMU_PID" 2>/dev/null || true
    return 1
}

# part_offset IMAGE NAME: byte offset and size of the GPT partition named NAME ("OFFSET SIZE").
part_offset() {
    sfdisk --json "$1" 2>/dev/null | jq -r --arg n "$2" \
        '.partitiontable as $t | $t.partitions[] | select(.name == $n) | "\(.start * ($t.sectorsize // 512)) \(.size * ($t.sectorsize // 512))"'
}
