#!/usr/bin/env bash
# Installs what `make image`, `make image-test` and `make demo` need on a Debian 12 build host
# (image-only tools; scripts/setup.sh installs the rest). Idempotent: prints "ok" for what is
# there, "installed"/"added" for what it changed, and does nothing else on a second run.
#   - a bookworm-backports apt source (deb.debian.org, the mirror this host's sources use): the
#     appliance's 6.12 kernel and qemu-system-x86 come from it;
#   - Debian packages for the build (debootstrap, erofs-utils, cryptsetup-bin, systemd-boot-efi,
#     dosfstools, mtools, fdisk, bmap-tools, busybox-static, kmod, ...; rauc and squashfs-tools
#     for `make bundle`) and for the test (ovmf, socat, qemu-system-x86 from bookworm-backports:
#     Debian 12's own qemu-system-x86 conflicts with the qemu-utils from backports that this host
#     already has);
#   - for Secure Boot, from bookworm-backports: osslsigncode 2.9 (signs systemd-boot and the UKIs;
#     -time makes the signature reproducible) and python3-virt-firmware (virt-fw-vars enrolls the
#     estate's PK/KEK/db into the OVMF variable store the tests boot with; not in bookworm).
# Needs root (or sudo) only when something is missing.
set -euo pipefail

# Build packages, from bookworm (the list is also in image/README.md).
IMAGE_APT_PACKAGES="mmdebstrap debootstrap erofs-utils squashfs-tools rauc cryptsetup-bin systemd-boot-efi
  dosfstools mtools fdisk bmap-tools busybox-static kmod cpio zstd xz-utils binutils e2fsprogs
  whois openssl jq curl ovmf socat"
# From bookworm-backports.
IMAGE_BPO_PACKAGES="qemu-system-x86 osslsigncode python3-virt-firmware"
BPO_SOURCE=/etc/apt/sources.list.d/bookworm-backports.sources

report() { printf '%-10s %s\n' "$1" "$2"; }
die() {
    echo "image/setup: error: $*" >&2
    exit 1
}
sudo=()
if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
installed() {
    # shellcheck disable=SC2016 # ${Status} is dpkg-query's format
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}
apt_quiet() {
    local log
    log=$(mktemp)
    if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive "$@" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        return 1
    fi
    rm -f "$log"
}

# --- bookworm-backports source -------------------------------------------------------------------
need_update=0
if grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    report ok "apt source bookworm-backports"
else
    "${sudo[@]}" tee "$BPO_SOURCE" >/dev/null <<'EOF'
# Added by bsfg image/setup.sh: the appliance's 6.12 kernel and qemu-system-x86 come from here.
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    report added "apt source bookworm-backports ($BPO_SOURCE)"
    need_update=1
fi
# The source may be there without its lists (added by hand, lists cleaned).
if ! ls /var/lib/apt/lists/*bookworm-backports*Packages >/dev/null 2>&1; then need_update=1; fi

missing=()
for pkg in $IMAGE_APT_PACKAGES; do
    if installed "$pkg"; then report ok "apt $pkg"; else missing+=("$pkg"); fi
done
missing_bpo=()
for pkg in $IMAGE_BPO_PACKAGES; do
    if installed "$pkg"; then report ok "apt $pkg (bookworm-backports)"; else missing_bpo+=("$pkg"); fi
done
if ((${#missing[@]} + ${#missing_bpo[@]})); then need_update=1; fi

if ((need_update)); then
    apt_quiet apt-get update -q || die "apt-get update failed"
fi
if ((${#missing[@]})); then
    apt_quiet apt-get install -y -q --no-install-recommends "${missing[@]}" ||
        die "apt-get could not install: ${missing[*]}"
    for pkg in "${missing[@]}"; do report installed "apt $pkg"; done
fi
if ((${#missing_bpo[@]})); then
    # No recommends: the UEFI firmware is ovmf (above); the NIC option ROMs (ipxe-qemu) are not
    # needed because the test disables them (romfile=).
    apt_quiet apt-get install -y -q --no-install-recommends -t bookworm-backports "${missing_bpo[@]}" ||
        die "apt-get could not install from bookworm-backports: ${missing_bpo[*]}"
    for pkg in "${missing_bpo[@]}"; do report installed "apt $pkg (bookworm-backports)"; done
fi

for tool in debootstrap mkfs.erofs mksquashfs rauc veritysetup sfdisk mkfs.vfat mcopy bmaptool objcopy depmod \
    qemu-system-x86_64 socat osslsigncode virt-fw-vars; do
    command -v "$tool" >/dev/null || die "$tool is still missing after installing the packages"
done
[ -f /usr/lib/systemd/boot/efi/linuxx64.efi.stub ] || die "systemd-boot-efi's linuxx64.efi.stub is missing"
for f in /usr/share/OVMF/OVMF_CODE_4M.secboot.fd /usr/share/OVMF/OVMF_VARS_4M.fd; do
    [ -f "$f" ] || die "OVMF firmware is missing: $f (Secure Boot code and the empty variable store)"
done
