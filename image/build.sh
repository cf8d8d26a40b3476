#!/usr/bin/env bash
# Builds the BSFG appliance firmware image (`make image`), as root, without Docker:
#   out/bsfg-appliance-<version>-x86_64[-<zone>][-debug].img   raw GPT disk image (sparse)
#   ....img.bmap                                                 for bmaptool copy
#   ....manifest.json                                            packages, sha256s, root hashes
# Steps: a Debian 12 minbase root with systemd (mmdebstrap) + the bookworm-backports 6.12 kernel
# (unpacked, never installed on this host) + the static bsfg, nats-server, systemd/ units and
# hardening/ files + image/rootfs/; apt, dpkg, debconf and perl removed; the root as erofs (or
# squashfs) with a dm-verity hash tree; an initrd (busybox, veritysetup, e2fsck, modules) from
# image/initrd/; a unified kernel image (systemd-stub + kernel + initrd + command line with the
# root hash) per slot named for boot counting (bsfg-a+3.efi); systemd-boot on an EFI system
# partition, it and both UKIs signed with the Secure Boot db key; a data partition (ext4) seeded
# with /var and, with ZONE_DIR=, the zone's provisioning file; all laid out with sfdisk and
# written with dd (no loop devices).
# Variables: ZONE_DIR=dir (provision at build time; see image/provision.sh), DEBUG=1 (serial
# console, debug shell), ROOTFS_TYPE=erofs|squashfs, SOURCE_DATE_EPOCH (default: fixed in
# image/lib.sh), MIRROR, OUT, REBUILD_ROOT=1 (ignore the cached root), BSFG_BIN, NATS_BIN,
# UPDATE_KEYRING=ca.pem (the update CA RAUC checks bundles against; default: the DEVELOPMENT CA in
# image/dev-update-pki/, with a loud warning), SECUREBOOT_DB_CERT/SECUREBOOT_DB_KEY (the Secure Boot
# db certificate and key that sign systemd-boot and the UKIs), SECUREBOOT_KEK_CERT and
# SECUREBOOT_PK_CERT (enrolled with db in the test variables; all four default to the DEVELOPMENT
# Secure Boot keys in image/dev-update-pki/, with a loud warning).
# Besides the image: <image base>.parts/ holds what image/bundle.sh puts into a RAUC bundle (root,
# hash tree, both slots' UKIs, their command lines and os-release, kernel and initrd), and
# <image base>.ovmf-vars.fd the OVMF variable store with the estate's PK, KEK and db enrolled and
# Secure Boot on, which the QEMU tests boot with (image/lib.sh, qemu_start).
# The root stage is cached in out/build/ under a hash of all its inputs: a second `make image`
# with the same inputs only reassembles the disk (~10 s). Reproducible: see check-reproducible.sh.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DEBUG=${DEBUG:-0}
ZONE_DIR=${ZONE_DIR:-}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}
BSFG_BIN=${BSFG_BIN:-$ROOT/target/x86_64-unknown-linux-musl/release/bsfg}
NATS_BIN=${NATS_BIN:-$ROOT/.tools/bin/nats-server}
BUILD=${BUILD:-$OUT/build}
CACHE=${CACHE:-$OUT/cache}
export SOURCE_DATE_EPOCH
# The packages of the root, on top of minbase. usr-is-merged (not usrmerge, which pulls perl).
# netbase: /etc/protocols and /etc/services, which nft needs to read hardening/nftables.conf.
ROOT_PACKAGES="usr-is-merged systemd systemd-sysv systemd-boot systemd-timesyncd udev dbus kmod
  netbase iproute2 nftables rauc rauc-service"
# Removed from the finished root (after their maintainer scripts ran): the package manager and
# the interpreters only it needed.
REMOVE_PACKAGES="apt libapt-pkg6.0 dpkg debconf debian-archive-keyring gpgv adduser usrmerge perl
  perl-base perl-modules-5.36 libperl5.36 libfile-find-rule-perl libnumber-compare-perl
  libtext-glob-perl libgdbm-compat4 libgdbm6"
# Kernel module directories the appliance never needs (graphics, sound, radio, exotic file
# systems and fabrics); everything else stays so that gateway NICs, storage and watchdogs work.
PRUNE_MODULES="sound drivers/gpu drivers/media drivers/net/wireless drivers/net/wwan
  drivers/net/hamradio drivers/net/ieee802154 drivers/bluetooth drivers/infiniband drivers/staging
  drivers/isdn drivers/iio drivers/comedi drivers/accel drivers/target drivers/input/joystick
  drivers/input/touchscreen drivers/input/tablet drivers/scsi/lpfc drivers/scsi/qla2xxx
  drivers/scsi/qla4xxx drivers/scsi/bfa drivers/scsi/csiostor drivers/scsi/be2iscsi
  drivers/scsi/bnx2fc drivers/scsi/bnx2i drivers/scsi/qedf drivers/scsi/qedi drivers/scsi/fnic
  net/wireless net/mac80211 net/bluetooth net/ceph net/sunrpc net/rxrpc net/9p net/rds net/tipc
  net/batman-adv net/mac802154 net/ieee802154 net/nfc net/openvswitch net/appletalk net/ax25
  net/rose net/netrom net/x25 net/phonet net/atm fs/btrfs fs/xfs fs/ocfs2 fs/gfs2 fs/nfs fs/nfsd
  fs/ceph fs/smb fs/f2fs fs/jfs fs/reiserfs fs/nilfs2 fs/ntfs3 fs/bcachefs fs/ubifs fs/orangefs
  fs/coda fs/afs fs/9p fs/hfs fs/hfsplus fs/ufs fs/dlm fs/jffs2 fs/zonefs fs/lockd fs/nfs_common
  arch/x86/kvm virt"
# Modules the initrd loads (with their dependencies), in this order: storage, dm-verity, file
# systems. Missing hardware is fine: a driver without its device just registers.
INITRD_MODULES="virtio_blk virtio_scsi nvme ahci sd_mod mmc_block sdhci_pci sdhci_acpi usb_storage
  uas xhci_pci dm_verity erofs squashfs ext4 crc32c_generic"

[ "$(id -u)" -eq 0 ] || die "make image needs root (mmdebstrap in root mode, chroot, file owners)"
[ "$DEBUG" = 0 ] || [ "$DEBUG" = 1 ] || die "DEBUG must be 0 or 1"
case $ROOTFS_TYPE in erofs | squashfs) ;; *) die "ROOTFS_TYPE must be erofs or squashfs" ;; esac
[ -x "$BSFG_BIN" ] || die "no static bsfg at $BSFG_BIN: run 'make static'"
file -L "$BSFG_BIN" | grep -q 'static' || die "$BSFG_BIN is not statically linked: use 'make static'"
[ -x "$NATS_BIN" ] || die "no nats-server at $NATS_BIN: run 'make setup'"
# The update keyring: the CA whose signatures RAUC accepts on bundles (/etc/rauc/keyring.pem).
UPDATE_KEYRING=${UPDATE_KEYRING:-}
if [ -n "$UPDATE_KEYRING" ]; then
    KEYRING=$UPDATE_KEYRING
    KEYRING_SOURCE="file"
else
    KEYRING=$DEV_UPDATE_PKI/ca.pem
    KEYRING_SOURCE=development
fi
[ -f "$KEYRING" ] || die "no update keyring at $KEYRING"
openssl x509 -in "$KEYRING" -noout 2>/dev/null || die "$KEYRING is not a PEM certificate"
# The Secure Boot keys (sets SECUREBOOT_SOURCE). A DEBUG image (root shell on the serial port)
# signed with an estate's db key would boot on every gateway of that estate: only with the
# development key, or a lab key no production gateway trusts (SECUREBOOT_DEBUG_KEY_OK=1).
secureboot_keys_check
if [ "$DEBUG" = 1 ] && [ "$SECUREBOOT_SOURCE" != development ] && [ "${SECUREBOOT_DEBUG_KEY_OK:-0}" != 1 ]; then
    die "DEBUG=1 with the Secure Boot db key $SECUREBOOT_DB_KEY: a signed debug image boots (root shell on ttyS0) on every gateway that trusts it; use a lab key and SECUREBOOT_DEBUG_KEY_OK=1"
fi
dev_keyring_warning() {
    if [ "$KEYRING_SOURCE" = development ]; then
        printf '\033[1;31m%s\033[0m\n' \
            "WARNING: this image trusts the DEVELOPMENT update CA (image/dev-update-pki/ca.pem): anyone with" \
            "WARNING: this repository can sign bundles it installs. Production: make image UPDATE_KEYRING=ca.pem" >&2
    fi
    if [ "$SECUREBOOT_SOURCE" = development ]; then
        printf '\033[1;31m%s\033[0m\n' \
            "WARNING: systemd-boot and the UKIs are signed with the DEVELOPMENT Secure Boot db key (image/dev-update-pki/sb-db.key):" \
            "WARNING: a gateway that trusts it boots anything anyone signs with it. Production: SECUREBOOT_DB_CERT=/SECUREBOOT_DB_KEY=" >&2
    fi
}
dev_keyring_warning
for f in systemd/bsfg.service systemd/nats-server.service systemd/sysusers.d/bsfg.conf \
    systemd/sysusers.d/nats.conf systemd/tmpfiles.d/bsfg.conf hardening/nftables.conf \
    hardening/sysctl.d/90-bsfg.conf hardening/nats-server.conf; do
    [ -f "$ROOT/$f" ] || die "missing $f (systemd/ and hardening/ must be in place before the image is built)"
done
"$IMAGE_DIR/setup.sh" | { grep -v '^ok' || true; }

mkdir -p "$OUT" "$BUILD" "$CACHE/debs"
exec 9>"$OUT/.image.lock"
flock 9

# --- the kernel: bookworm-backports' linux-image-amd64, downloaded, never installed here ----------------
step "kernel from bookworm-backports"
KPKG=${KERNEL_PACKAGE:-$(apt-cache depends -t bookworm-backports linux-image-amd64 2>/dev/null |
    sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -1)}
[ -n "$KPKG" ] || die "cannot find linux-image-amd64 in bookworm-backports (run image/setup.sh)"
KDEB=$(find "$CACHE/debs" -name "${KPKG}_*.deb" | sort | tail -1)
if [ -z "$KDEB" ]; then
    (cd "$CACHE/debs" && apt-get download -q -t bookworm-backports "$KPKG" 2>&1) |
        { grep -v '^W: Download is performed unsandboxed' || true; }
    KDEB=$(find "$CACHE/debs" -name "${KPKG}_*.deb" | sort | tail -1)
fi
[ -n "$KDEB" ] || die "could not download $KPKG"
KVERSION=$(dpkg-deb -f "$KDEB" Version)
KREL=${KPKG#linux-image-}
say "$KPKG $KVERSION ($(basename "$KDEB"))"

# --- the root stage (cached) --------------------------------------------------------------------------------
# Every input of the root file system and the initrd, hashed: contents and paths relative to the
# checkout only, so that the same inputs in another checkout (another directory, another cache)
# give the same stamp, build id and bundle manifest (image/reproducible-bundle.sh).
root_inputs() {
    local f
    {
        printf '%s\n' "$SOURCE_DATE_EPOCH" "$MIRROR" "$SECURITY_MIRROR" "$ROOT_PACKAGES" \
            "$REMOVE_PACKAGES" "$PRUNE_MODULES" "$INITRD_MODULES" "$ROOTFS_TYPE" "$VERSION" "$SEED"
        for f in "$KDEB" "$BSFG_BIN" "$NATS_BIN" "$IMAGE_DIR/build.sh" "$KEYRING"; do sha256sum <"$f"; done
        (cd "$ROOT" && find image/rootfs image/initrd systemd hardening -type f -print0 | sort -z |
            xargs -0 sha256sum)
        (cd "$ROOT" && find image/rootfs -printf '%p %m %l\n' | sort)
    } | sha256sum | cut -d' ' -f1
}
STAMP=$(root_inputs)
R=$BUILD/rootfs

# --- the output's name -----------------------------------------------------------------------------------------
ZONE=
if [ -n "$ZONE_DIR" ]; then
    [ -f "$ZONE_DIR/bsfg.toml" ] || die "ZONE_DIR=$ZONE_DIR has no bsfg.toml"
    ZONE=$(sed -n 's/^zone *= *"\(.*\)"/\1/p' "$ZONE_DIR/bsfg.toml" | head -1)
    [ -n "$ZONE" ] || die "$ZONE_DIR/bsfg.toml names no zone"
fi
suffix=$ZONE
if [ "$DEBUG" = 1 ]; then suffix=${suffix:+$suffix-}debug; fi
BASE=$(image_base "$suffix")
IMG=$BASE.img
# Everything the output depends on: when the image, its bmap and manifest exist with the same
# build id, made from the same commit (the manifest records it), there is nothing to do (FORCE=1
# rebuilds anyway).
GIT_COMMIT=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
GIT_DIRTY=false
if [ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null | head -1)" ]; then GIT_DIRTY=true; fi
BUILD_ID=$({
    printf '%s\n' "$STAMP" "$DEBUG" "$ESP_MIB" "$ROOT_MIB" "$VERITY_MIB" "$DATA_MIB"
    if [ -n "$ZONE_DIR" ]; then (cd "$ZONE_DIR" && find . -type f -print0 | sort -z | xargs -0 sha256sum); fi
    # lib.sh: the UKIs' command lines and make_uki.
    (cd "$ROOT" && sha256sum image/provision.sh image/lib.sh hardening/nats-server.conf)
    # Secure Boot: the keys, the signer, systemd-boot and the OVMF variable store template, by
    # content (the keys may lie anywhere: a path would make the build id the build machine's).
    for f in "$SECUREBOOT_PK_CERT" "$SECUREBOOT_KEK_CERT" "$SECUREBOOT_DB_CERT" "$SECUREBOOT_DB_KEY" \
        /usr/lib/systemd/boot/efi/systemd-bootx64.efi "$OVMF_VARS_BLANK"; do
        sha256sum <"$f"
    done
    osslsigncode --version 2>/dev/null | head -1
} | sha256sum | cut -d' ' -f1)
if [ "${FORCE:-0}" != 1 ] && [ "${REBUILD_ROOT:-0}" != 1 ] && [ -f "$IMG" ] && [ -f "$IMG.bmap" ] && [ -d "$BASE.parts" ] && [ -f "$BASE.ovmf-vars.fd" ] &&
    [ "$(jq -r '"\(.build_id) \(.git_commit) \(.git_dirty)"' "$BASE.manifest.json" 2>/dev/null)" = "$BUILD_ID $GIT_COMMIT $GIT_DIRTY" ]; then
    step "up to date: $IMG (inputs unchanged; FORCE=1 to rebuild)"
    say "root hash $(jq -r .root.root_hash "$BASE.manifest.json")"
    exit 0
fi
if [ "${REBUILD_ROOT:-0}" != 1 ] && [ -f "$BUILD/root.stamp" ] && [ "$(cat "$BUILD/root.stamp")" = "$STAMP" ] &&
    [ -f "$BUILD/root.img" ] && [ -f "$BUILD/initrd.img" ]; then
    step "root file system: inputs unchanged, reusing $BUILD/root.img (REBUILD_ROOT=1 to rebuild)"
else
    rm -f "$BUILD/root.stamp"
    rm -rf "$R"
    step "Debian 12 minbase root with systemd (mmdebstrap, $MIRROR)"
    mmdebstrap --variant=minbase --mode=root --format=directory --quiet \
        --aptopt='APT::Install-Recommends "false"' \
        --include="$(echo "$ROOT_PACKAGES" | tr -s ' \n' ',')" \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/lintian/*' \
        bookworm "$R" "deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" \
        "deb $SECURITY_MIRROR bookworm-security main"

    # The package list with versions, for the manifest, before dpkg goes.
    # shellcheck disable=SC2016 # dpkg-query's format, not the shell's
    chroot "$R" dpkg-query -W -f='${Package}\t${Version}\t${Architecture}\n' | sort >"$BUILD/packages.tsv"
    say "$(wc -l <"$BUILD/packages.tsv") packages installed"

    step "kernel $KREL: modules into the root (pruned), vmlinuz for the UKI"
    kx=$BUILD/kernel
    rm -rf "$kx"
    mkdir -p "$kx"
    dpkg-deb -x "$KDEB" "$kx"
    cp "$kx/boot/vmlinuz-$KREL" "$BUILD/vmlinuz"
    cp "$kx/boot/config-$KREL" "$BUILD/kernel.config"
    mkdir -p "$R/usr/lib/modules"
    mv "$kx/lib/modules/$KREL" "$R/usr/lib/modules/$KREL"
    rm -rf "$kx"
    for d in $PRUNE_MODULES; do rm -rf "$R/usr/lib/modules/$KREL/kernel/$d"; done
    depmod -b "$R" "$KREL"
    say "modules: $(du -sh "$R/usr/lib/modules/$KREL" | cut -f1)"

    step "bsfg, nats-server, units, hardening, appliance files"
    install -m 0755 "$BSFG_BIN" "$R/usr/bin/bsfg"
    install -m 0755 "$NATS_BIN" "$R/usr/bin/nats-server"
    install -m 0644 "$ROOT/systemd/bsfg.service" "$ROOT/systemd/nats-server.service" "$R/usr/lib/systemd/system/"
    install -m 0644 "$ROOT"/systemd/sysusers.d/*.conf "$R/usr/lib/sysusers.d/"
    install -m 0644 "$ROOT"/systemd/tmpfiles.d/*.conf "$R/usr/lib/tmpfiles.d/"
    install -m 0644 "$ROOT/hardening/nftables.conf" "$R/etc/nftables.conf"
    install -m 0644 "$ROOT"/hardening/sysctl.d/*.conf "$R/etc/sysctl.d/"
    # Templates for provisioning (image/provision.sh uses the ones in the checkout).
    install -d -m 0755 "$R/usr/share/bsfg"
    install -m 0644 "$ROOT/hardening/nats-server.conf" "$ROOT/hardening/nats-secrets.conf.example" "$R/usr/share/bsfg/"
    if [ -f "$ROOT/systemd/bsfg.service.d/network.conf.example" ]; then
        install -m 0644 "$ROOT/systemd/bsfg.service.d/network.conf.example" "$R/usr/share/bsfg/"
    fi
    cp -a --no-preserve=ownership "$IMAGE_DIR/rootfs/." "$R/"
    # RAUC's keyring: the update CA bundles must be signed under.
    install -D -m 0644 "$KEYRING" "$R/etc/rauc/keyring.pem"
    # Users and directories, here: / is read-only at run time.
    systemd-sysusers --root="$R" >"$BUILD/sysusers.log" 2>&1 ||
        die "systemd-sysusers failed: $(cat "$BUILD/sysusers.log")"
    systemd-tmpfiles --create --root="$R" bsfg.conf bsfg-rauc.conf >/dev/null
    # Mount points and bind targets (image/initrd/init, etc/fstab).
    install -d -m 0755 "$R/data" "$R/efi" "$R/etc/nftables.d" "$R/etc/systemd/network" \
        "$R/etc/systemd/timesyncd.conf.d"
    # tmpfs /tmp (Debian ships the unit but does not enable it; / is read-only).
    cp "$R/usr/share/systemd/tmp.mount" "$R/etc/systemd/system/tmp.mount"
    mkdir -p "$R/etc/systemd/system/local-fs.target.wants"
    ln -sf ../tmp.mount "$R/etc/systemd/system/local-fs.target.wants/tmp.mount"

    step "units: enable, disable, mask"
    systemctl --root="$R" enable nftables.service systemd-networkd.service nats-server.service \
        bsfg.service bsfg-boot-check.service bsfg-provisioning-check.service bsfg-debug-shell.service \
        bsfg-firmware-boot-report.service bsfg-firmware-agent.service 2>&1 |
        { grep -v '^Created symlink' || true; }
    # No waiting for the network (the node binds 0.0.0.0 and retries its peers); no timers that
    # would write to /.
    systemctl --root="$R" disable systemd-networkd-wait-online.service e2scrub_all.timer \
        e2scrub_reap.service fstrim.timer getty@tty1.service 2>&1 | { grep -v '^Removed' || true; }
    # No login anywhere (the DEBUG shell is bsfg-debug-shell.service); nothing that writes to the
    # read-only /etc or /usr at boot (all of it is done here, at build time); no boot loader
    # self-update (the A/B upgrade work owns the ESP).
    systemctl --root="$R" mask getty@.service serial-getty@.service console-getty.service \
        container-getty@.service debug-shell.service systemd-firstboot.service \
        systemd-machine-id-commit.service ldconfig.service systemd-hwdb-update.service \
        systemd-update-done.service systemd-journal-catalog-update.service \
        systemd-sysusers.service systemd-boot-update.service systemd-networkd-wait-online.service 2>&1 |
        { grep -v '^Created symlink' || true; }

    step "removing the package manager: ${REMOVE_PACKAGES//$'\n'/ }"
    # Files of each package, deleted inside the chroot (absolute symlinks such as /var/run resolve
    # in the root, not on this host); no maintainer scripts run.
    for pkg in $REMOVE_PACKAGES; do
        for list in "$R/var/lib/dpkg/info/$pkg.list" "$R/var/lib/dpkg/info/$pkg:amd64.list"; do
            [ -f "$list" ] || continue
            # Never a directory, nor a symlink to one (merged /usr: /lib, /bin, /sbin).
            # shellcheck disable=SC2016 # expanded by the chroot's shell
            chroot "$R" /bin/sh -c 'while IFS= read -r f; do
                if [ -d "$f" ]; then continue; fi
                if [ -L "$f" ] || [ -f "$f" ]; then rm -f "$f"; fi
            done' <"$list"
            # shellcheck disable=SC2016 # expanded by the chroot's shell
            sort -r "$list" | chroot "$R" /bin/sh -c 'while IFS= read -r d; do
                if [ -d "$d" ] && [ ! -L "$d" ]; then rmdir "$d" 2>/dev/null || true; fi
            done'
        done
    done
    for pkg in $REMOVE_PACKAGES; do
        if chroot "$R" test -e "/usr/bin/$pkg"; then die "/usr/bin/$pkg still in the root"; fi
    done
    rm -rf "$R/var/lib/dpkg" "$R/var/lib/apt" "$R/var/cache/apt" "$R/var/cache/debconf" \
        "$R/etc/apt" "$R/etc/dpkg" "$R/var/log/apt" "$R/var/log/dpkg.log" \
        "$R/var/log/alternatives.log" "$R/var/cache/ldconfig" "$R/etc/debconf.conf"
    awk -F'\t' -v rm=" $(echo "$REMOVE_PACKAGES" | tr -s ' \n' '  ') " \
        'BEGIN { OFS = "\t" } { print $1, $2, $3, (index(rm, " " $1 " ") ? "removed" : "in-root") }' \
        "$BUILD/packages.tsv" >"$BUILD/packages.final.tsv"

    step "reproducibility and read-only root fixes"
    # Backup files, locks, logs, caches: not part of the firmware.
    rm -f "$R"/etc/*- "$R/etc/.pwd.lock" "$R/var/log/lastlog" "$R/var/log/faillog"
    find "$R/var/log" "$R/var/cache" "$R/tmp" "$R/var/tmp" -mindepth 1 -maxdepth 1 ! -name journal \
        -exec rm -rf {} +
    rm -rf "${R:?}/boot"/* "$R/usr/share/doc-base" "$R/usr/share/bug"
    # The build host's name and resolver must not leak in; no DNS at all on the appliance.
    printf 'bsfg-appliance\n' >"$R/etc/hostname"
    : >"$R/etc/resolv.conf"
    # An empty machine-id: the initrd binds the appliance's own one from the data partition.
    : >"$R/etc/machine-id"
    rm -f "$R/var/lib/dbus/machine-id"
    # Password ages: the day of SOURCE_DATE_EPOCH, not of the build.
    day=$((SOURCE_DATE_EPOCH / 86400))
    awk -F: -v OFS=: -v d="$day" '$3 != "" { $3 = d } { print }' "$R/etc/shadow" >"$R/etc/shadow.new"
    chmod --reference="$R/etc/shadow" "$R/etc/shadow.new"
    chown --reference="$R/etc/shadow" "$R/etc/shadow.new"
    mv "$R/etc/shadow.new" "$R/etc/shadow"
    # What the appliance is, for systemd-boot, the journal and the later upgrade work.
    os_release=$(readlink -f "$R/etc/os-release")
    case $os_release in "$R"/*) ;; *) os_release=$R/usr/lib/os-release ;; esac
    sed -i '/^IMAGE_ID=/d; /^IMAGE_VERSION=/d; /^VARIANT=/d; /^VARIANT_ID=/d' "$os_release"
    printf 'VARIANT="BSFG appliance"\nVARIANT_ID=bsfg-appliance\nIMAGE_ID=bsfg-appliance\nIMAGE_VERSION=%s\n' \
        "$VERSION" >>"$os_release"
    # Every program left must still find its libraries.
    # shellcheck disable=SC2016 # expanded by the chroot's shell
    broken=$(chroot "$R" /bin/sh -c 'for f in /usr/bin/* /usr/sbin/* /usr/lib/systemd/systemd* /usr/lib/systemd/system-generators/*; do
        [ -f "$f" ] && [ ! -L "$f" ] || continue
        ldd "$f" 2>/dev/null | grep -q "not found" && echo "$f"
    done' || true)
    [ -z "$broken" ] || die "programs with missing libraries after the removal: $broken"

    step "initrd: busybox, veritysetup, e2fsck, resize2fs, sfdisk, $(echo "$INITRD_MODULES" | wc -w) modules"
    I=$BUILD/initrd
    rm -rf "$I"
    mkdir -p "$I"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,run,sysroot,tmp}
    cp /bin/busybox "$I/bin/busybox"
    for applet in $(/bin/busybox --list); do
        [ -e "$I/bin/$applet" ] || ln -s busybox "$I/bin/$applet"
    done
    # copy_bin BIN: BIN and the shared libraries it loads, at the same paths.
    copy_bin() {
        cp --parents -L "$1" "$I/"
        ldd "$1" | grep -o '/[^ ]*' | while read -r lib; do cp --parents -L "$lib" "$I/"; done
    }
    copy_bin /usr/sbin/veritysetup
    copy_bin /usr/sbin/e2fsck
    copy_bin /usr/sbin/resize2fs
    copy_bin /usr/sbin/sfdisk
    copy_bin /usr/bin/partx
    ln -sf /proc/mounts "$I/etc/mtab"
    : >"$I/etc/initrd-modules"
    mods=$(for m in $INITRD_MODULES; do
        modprobe -d "$R" -S "$KREL" --show-depends "$m" 2>/dev/null | awk '$1 == "insmod" { print $2 }'
    done | awk '!seen[$0]++')
    for m in $mods; do
        rel=${m#"$R"}
        dst=$I/lib/modules/$KREL/$(basename "${rel%.xz}")
        mkdir -p "$(dirname "$dst")"
        xz -dc "$m" >"$dst"
        echo "/lib/modules/$KREL/$(basename "$dst")" >>"$I/etc/initrd-modules"
    done
    install -m 0755 "$IMAGE_DIR/initrd/init" "$I/init"
    find "$I" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
    (cd "$I" && find . -print0 | LC_ALL=C sort -z |
        cpio --null --create --format=newc --reproducible --owner=0:0 --quiet) |
        zstd -q -19 -T0 >"$BUILD/initrd.img"
    say "initrd: $(wc -l <"$I/etc/initrd-modules") modules, $(du -h "$BUILD/initrd.img" | cut -f1) (zstd)"

    step "root file system ($ROOTFS_TYPE) and its dm-verity hash tree"
    find "$R" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
    rm -f "$BUILD/root.img"
    if [ "$ROOTFS_TYPE" = erofs ]; then
        mkfs.erofs --quiet -zlz4hc,12 -T"$SOURCE_DATE_EPOCH" -U"$(uuid_of rootfs-a)" -x-1 \
            "$BUILD/root.img" "$R"
    else
        mksquashfs "$R" "$BUILD/root.img" -quiet -no-progress -comp zstd -Xcompression-level 19 \
            -mkfs-time "$SOURCE_DATE_EPOCH" -all-time "$SOURCE_DATE_EPOCH" -no-xattrs -processors 2
    fi
    echo "$STAMP" >"$BUILD/root.stamp"
fi
ROOT_BYTES=$(stat -c %s "$BUILD/root.img")
[ "$ROOT_BYTES" -le $((ROOT_MIB * 1024 * 1024)) ] || die "root ($ROOT_BYTES bytes) does not fit a $ROOT_MIB MiB slot"
say "root: $((ROOT_BYTES / 1024 / 1024)) MiB ($ROOTFS_TYPE), tree $(du -sh --apparent-size "$R" | cut -f1)"

# The hash tree: the salt and UUID derive from the seed, so the same root gives the same root hash.
rm -f "$BUILD/root.verity"
veritysetup format "$BUILD/root.img" "$BUILD/root.verity" --salt="$(hex_of verity-salt-a)" \
    --uuid="$(uuid_of verity-a)" --data-block-size=4096 --hash-block-size=4096 >"$BUILD/verity.txt"
ROOTHASH=$(sed -n 's/^Root hash:[[:space:]]*//p' "$BUILD/verity.txt")
[ -n "$ROOTHASH" ] || die "veritysetup printed no root hash"
veritysetup verify "$BUILD/root.img" "$BUILD/root.verity" "$ROOTHASH" || die "the new hash tree does not verify"
say "root hash $ROOTHASH"

A=$BUILD/assemble${suffix:+-$suffix}
rm -rf "$A"
mkdir -p "$A"

# --- unified kernel images for both slots, and what a bundle needs ---------------------------------------------
# Slot a's UKI goes on the ESP; slot b's, with the root and its hash tree, go to $PARTS for
# image/bundle.sh (slot b stays empty in the image: RAUC writes it). Both are signed with the
# Secure Boot db key: the firmware starts no UKI that is not (the bundle carries these signed files).
step "unified kernel images for slots a and b (DEBUG=$DEBUG), signed with $(openssl x509 -in "$SECUREBOOT_DB_CERT" -noout -subject -nameopt multiline | sed -n 's/^ *commonName *= //p')"
PARTS=$BASE.parts
rm -rf "$PARTS.tmp"
mkdir -p "$PARTS.tmp"
for slot in a b; do
    uki_cmdline "$slot" "$ROOTHASH" "$DEBUG" | tr -d '\n' >"$PARTS.tmp/cmdline-$slot"
    uki_os_release "$slot" "$DEBUG" >"$PARTS.tmp/os-release-$slot"
    make_uki "$PARTS.tmp/uki-$slot.unsigned.efi" "$PARTS.tmp/os-release-$slot" "$PARTS.tmp/cmdline-$slot" \
        "$BUILD/vmlinuz" "$BUILD/initrd.img"
    sign_efi "$PARTS.tmp/uki-$slot.unsigned.efi" "$PARTS.tmp/uki-$slot.efi"
    rm -f "$PARTS.tmp/uki-$slot.unsigned.efi"
    say "uki-$slot.efi: $(du -h "$PARTS.tmp/uki-$slot.efi" | cut -f1), cmdline: $(cat "$PARTS.tmp/cmdline-$slot")"
done
CMDLINE=$(cat "$PARTS.tmp/cmdline-a")
# The root, hash tree, kernel and initrd: hard links into the cache when it is on the same file
# system (the cache replaces its files, never rewrites them in place), copies otherwise.
for f in root.img root.verity vmlinuz initrd.img; do
    ln -f "$BUILD/$f" "$PARTS.tmp/$f" 2>/dev/null || cp "$BUILD/$f" "$PARTS.tmp/$f"
done
rm -rf "$PARTS"
mv "$PARTS.tmp" "$PARTS"
cp "$PARTS/uki-a.efi" "$A/bsfg-a.efi"

# --- EFI system partition ---------------------------------------------------------------------------------------
step "EFI system partition: systemd-boot (signed), loader.conf, bsfg-a+3.efi"
E=$A/esp
mkdir -p "$E/EFI/BOOT" "$E/EFI/systemd" "$E/EFI/Linux" "$E/loader/entries"
sign_efi /usr/lib/systemd/boot/efi/systemd-bootx64.efi "$A/systemd-bootx64.efi"
cp "$A/systemd-bootx64.efi" "$E/EFI/BOOT/BOOTX64.EFI"
cp "$A/systemd-bootx64.efi" "$E/EFI/systemd/systemd-bootx64.efi"
# +3: three tries; systemd-boot counts down, systemd-bless-boot removes the counter when the
# boot is good (bsfg-boot-check.service).
cp "$A/bsfg-a.efi" "$E/EFI/Linux/bsfg-a+3.efi"
cat >"$E/loader/loader.conf" <<'EOF'
# systemd-boot on the BSFG appliance: boot the newest good unified kernel image at once, no menu,
# no editing of the kernel command line (it carries the root hash), no firmware or other entries.
timeout 0
editor no
auto-entries no
auto-firmware no
console-mode keep
EOF
find "$E" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
truncate -s "${ESP_MIB}M" "$A/esp.img"
# --invariant: fixed volume id and times (reproducible).
mkfs.vfat -F 32 -n ESP --invariant "$A/esp.img" >/dev/null
MTOOLS_SKIP_CHECK=1 mcopy -s -m -Q -i "$A/esp.img" "$E"/EFI "$E"/loader ::/

# --- data partition -----------------------------------------------------------------------------------------------
step "data partition (ext4): /var seed${ZONE:+, provisioning file for zone $ZONE}"
S=$A/data
mkdir -p "$S/etc/bsfg" "$S/etc/nats" "$S/etc/nftables.d" "$S/etc/systemd/network" \
    "$S/etc/systemd/bsfg.service.d" "$S/etc/systemd/timesyncd.conf.d" "$S/provision"
chmod 0700 "$S/provision"
# /var from the root, owners kept (the initrd seeds it the same way if it is ever missing).
if [ -d "$R/var" ]; then
    cp -a "$R/var" "$S/var"
else
    die "no root tree at $R to seed /var from (REBUILD_ROOT=1)"
fi
if [ -n "$ZONE_DIR" ]; then
    "$IMAGE_DIR/provision.sh" bundle "$ZONE_DIR" "$S/provision/bsfg-provision.tar"
    chmod 0600 "$S/provision/bsfg-provision.tar"
fi
find "$S" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
truncate -s "${DATA_MIB}M" "$A/data.img"
E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH mkfs.ext4 -q -F -L data -U "$(uuid_of data-fs)" \
    -E "hash_seed=$(uuid_of data-hash-seed),root_owner=0:0,lazy_itable_init=0,nodiscard" \
    -T default -d "$S" "$A/data.img"
# mke2fs -d copies each file's change time (ctime: the time of this build's copy, which no tool
# can set): reset every inode's ctime to SOURCE_DATE_EPOCH so the same inputs give the same data
# partition.
{
    echo "set_inode_field / ctime @$SOURCE_DATE_EPOCH"
    (cd "$S" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort) |
        sed "s|^\(.*\)$|set_inode_field \"/\1\" ctime @$SOURCE_DATE_EPOCH|"
} >"$A/data-ctime.debugfs"
E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH debugfs -w -f "$A/data-ctime.debugfs" "$A/data.img" >/dev/null 2>"$A/data-ctime.log" ||
    die "debugfs could not reset the data partition's ctimes: $(tail -3 "$A/data-ctime.log")"
# debugfs goes on after a failed command: anything on stderr but its banner is an error.
if grep -qv '^debugfs [0-9]' "$A/data-ctime.log"; then
    die "debugfs could not reset the data partition's ctimes: $(grep -v '^debugfs [0-9]' "$A/data-ctime.log" | head -3)"
fi

# --- GPT disk -------------------------------------------------------------------------------------------------------
step "GPT disk image (sfdisk + dd, no loop devices)"
MiB=$((1024 * 1024))
esp_start=1
ra_start=$((esp_start + ESP_MIB))
rav_start=$((ra_start + ROOT_MIB))
rb_start=$((rav_start + VERITY_MIB))
rbv_start=$((rb_start + ROOT_MIB))
data_start=$((rbv_start + VERITY_MIB))
total=$((data_start + DATA_MIB + 1))
rm -f "$IMG.tmp"
truncate -s "${total}M" "$IMG.tmp"
sec() { echo $(($1 * MiB / 512)); }
# Slot A's partition UUIDs are the root hash's halves (the Discoverable Partitions convention).
cat >"$A/sfdisk.txt" <<EOF
label: gpt
label-id: $(uuid_of disk)
unit: sectors
first-lba: 2048
sector-size: 512

start=$(sec $esp_start), size=$(sec "$ESP_MIB"), type=$TYPE_ESP, uuid=$(uuid_of part-esp), name="esp"
start=$(sec $ra_start), size=$(sec "$ROOT_MIB"), type=$TYPE_ROOT, uuid=$(uuid_from_hex "${ROOTHASH:0:32}"), name="root-a"
start=$(sec $rav_start), size=$(sec "$VERITY_MIB"), type=$TYPE_ROOT_VERITY, uuid=$(uuid_from_hex "${ROOTHASH:32:32}"), name="root-a-verity"
start=$(sec $rb_start), size=$(sec "$ROOT_MIB"), type=$TYPE_ROOT, uuid=$(uuid_of part-root-b), name="root-b"
start=$(sec $rbv_start), size=$(sec "$VERITY_MIB"), type=$TYPE_ROOT_VERITY, uuid=$(uuid_of part-root-b-verity), name="root-b-verity"
start=$(sec $data_start), size=$(sec "$DATA_MIB"), type=$TYPE_DATA, uuid=$(uuid_of part-data), name="data"
EOF
sfdisk --quiet --no-reread --no-tell-kernel "$IMG.tmp" <"$A/sfdisk.txt"
put() { dd if="$1" of="$IMG.tmp" bs=1M seek="$2" conv=notrunc,sparse status=none; }
put "$A/esp.img" $esp_start
put "$BUILD/root.img" $ra_start
put "$BUILD/root.verity" $rav_start
put "$A/data.img" $data_start
# Slot B stays empty (zeros, a hole in the file) until the signed A/B upgrade work writes it.
if [ -n "$ZONE_DIR" ]; then chmod 0600 "$IMG.tmp"; fi # holds the zone's private key
mv "$IMG.tmp" "$IMG"
sfdisk --verify "$IMG" >/dev/null

# --- the firmware's variables for the QEMU tests ---------------------------------------------------------------
step "OVMF variables: the estate's PK, KEK and db enrolled, Secure Boot on"
secureboot_vars "$BASE.ovmf-vars.fd"
say "$BASE.ovmf-vars.fd (PK: $(openssl x509 -in "$SECUREBOOT_PK_CERT" -noout -subject -nameopt multiline | sed -n 's/^ *commonName *= //p'))"

step "bmap and manifest"
rm -f "$IMG.bmap"
bmaptool -q create -o "$IMG.bmap" "$IMG"
MANIFEST=$BASE.manifest.json
sha() { sha256sum "$1" | cut -d' ' -f1; }
jq -n \
    --arg name "$(basename "$IMG")" --arg version "$VERSION" --arg arch "$ARCH" --arg buildid "$BUILD_ID" \
    --argjson debug "$DEBUG" --arg zone "$ZONE" --arg sde "$SOURCE_DATE_EPOCH" \
    --arg commit "$GIT_COMMIT" --argjson dirty "$GIT_DIRTY" \
    --arg kpkg "$KPKG" --arg kver "$KVERSION" --arg krel "$KREL" --arg fstype "$ROOTFS_TYPE" \
    --arg roothash "$ROOTHASH" --arg salt "$(hex_of verity-salt-a)" --arg vuuid "$(uuid_of verity-a)" \
    --argjson rootbytes "$ROOT_BYTES" --argjson veritybytes "$(stat -c %s "$BUILD/root.verity")" \
    --argjson imgbytes "$(stat -c %s "$IMG")" \
    --argjson imgalloc "$(($(stat -c %b "$IMG") * $(stat -c %B "$IMG")))" \
    --arg cmdline "$CMDLINE" --arg cmdline_b "$(cat "$PARTS/cmdline-b")" --arg mirror "$MIRROR" \
    --arg keyring_source "$KEYRING_SOURCE" --arg keyring_sha "$(sha "$KEYRING")" \
    --arg keyring_subject "$(openssl x509 -in "$KEYRING" -noout -subject | sed 's/^subject=//')" \
    --arg keyring_not_after "$(openssl x509 -in "$KEYRING" -noout -enddate | sed 's/^notAfter=//')" \
    --arg compatible "$RAUC_COMPATIBLE" --arg parts "$(basename "$PARTS")" \
    --arg ukibsha "$(sha "$PARTS/uki-b.efi")" \
    --arg bsfgsha "$(sha "$BSFG_BIN")" --arg natssha "$(sha "$NATS_BIN")" \
    --arg natsver "$("$NATS_BIN" --version 2>/dev/null || echo unknown)" \
    --arg imgsha "$(sha "$IMG")" --arg bmapsha "$(sha "$IMG.bmap")" \
    --arg ukisha "$(sha "$A/bsfg-a.efi")" --arg initrdsha "$(sha "$BUILD/initrd.img")" \
    --arg vmlinuzsha "$(sha "$BUILD/vmlinuz")" --arg rootsha "$(sha "$BUILD/root.img")" \
    --arg veritysha "$(sha "$BUILD/root.verity")" --arg espsha "$(sha "$A/esp.img")" \
    --arg datasha "$(sha "$A/data.img")" \
    --arg sbsource "$SECUREBOOT_SOURCE" --arg sbowner "$SECUREBOOT_OWNER" \
    --argjson sbcerts "$(for c in pk:"$SECUREBOOT_PK_CERT" kek:"$SECUREBOOT_KEK_CERT" db:"$SECUREBOOT_DB_CERT"; do
        f=${c#*:}
        jq -n --arg k "${c%%:*}" --arg sha "$(sha "$f")" \
            --arg subject "$(openssl x509 -in "$f" -noout -subject | sed 's/^subject=//')" \
            --arg not_after "$(openssl x509 -in "$f" -noout -enddate | sed 's/^notAfter=//')" \
            '{($k): {sha256: $sha, subject: $subject, not_after: $not_after}}'
    done | jq -s add)" \
    --arg signer "$(osslsigncode --version 2>/dev/null | head -1 | sed "s/, using://")" \
    --arg sdbootsha "$(sha "$A/systemd-bootx64.efi")" --arg varssha "$(sha "$BASE.ovmf-vars.fd")" \
    --arg varsfile "$(basename "$BASE.ovmf-vars.fd")" \
    --argjson layout "$(sfdisk --json "$IMG" | jq '[.partitiontable.partitions[] | {name, start_sector: .start, sectors: .size, type, uuid}]')" \
    --rawfile packages "$BUILD/packages.final.tsv" \
    '{
      name: $name, version: $version, arch: $arch, debug: ($debug == 1), build_id: $buildid,
      zone: (if $zone == "" then null else $zone end),
      source_date_epoch: ($sde | tonumber), git_commit: $commit, git_dirty: $dirty,
      debian: {suite: "bookworm", mirror: $mirror},
      kernel: {package: $kpkg, version: $kver, release: $krel, from: "bookworm-backports"},
      kernel_cmdline: $cmdline,
      kernel_cmdline_slot_b: $cmdline_b,
      update_keyring: {source: $keyring_source, sha256: $keyring_sha, subject: $keyring_subject,
                       not_after: $keyring_not_after},
      rauc: {compatible: $compatible, bundle_inputs: $parts},
      secure_boot: {keys: $sbsource, owner_guid: $sbowner, certificates: $sbcerts,
                    signed_with: "db", signer: $signer,
                    signed: ["EFI/BOOT/BOOTX64.EFI", "EFI/systemd/systemd-bootx64.efi",
                             "EFI/Linux/bsfg-a+3.efi", ($parts + "/uki-a.efi"), ($parts + "/uki-b.efi")],
                    test_variables: $varsfile},
      root: {slot: "a", fstype: $fstype, bytes: $rootbytes, verity_hash_tree_bytes: $veritybytes,
             root_hash: $roothash, verity_salt: $salt, verity_uuid: $vuuid,
             hash_algorithm: "sha256", data_block_size: 4096, hash_block_size: 4096},
      slot_b: "empty in the image: RAUC writes it from a bundle (image/bundle.sh)",
      image: {bytes: $imgbytes, allocated_bytes: $imgalloc},
      layout: $layout,
      binaries: {bsfg: {sha256: $bsfgsha}, "nats-server": {version: $natsver, sha256: $natssha}},
      artifacts: [
        {file: $name, sha256: $imgsha},
        {file: ($name + ".bmap"), sha256: $bmapsha},
        {file: "EFI/Linux/bsfg-a+3.efi", sha256: $ukisha},
        {file: ($parts + "/uki-b.efi"), sha256: $ukibsha},
        {file: "initrd", sha256: $initrdsha},
        {file: "vmlinuz", sha256: $vmlinuzsha},
        {file: "root-a", sha256: $rootsha},
        {file: "root-a-verity", sha256: $veritysha},
        {file: "EFI/BOOT/BOOTX64.EFI", sha256: $sdbootsha},
        {file: "esp", sha256: $espsha},
        {file: "data", sha256: $datasha},
        {file: $varsfile, sha256: $varssha}
      ],
      packages: [$packages | split("\n")[] | select(. != "") | split("\t") |
                 {name: .[0], version: .[1], arch: .[2], in_root: (.[3] == "in-root")}]
    }' >"$MANIFEST"
rm -rf "$A"
step "done: $IMG"
dev_keyring_warning
say "image $(($(stat -c %s "$IMG") / MiB)) MiB ($(($(stat -c %b "$IMG") * 512 / MiB)) MiB allocated), root $((ROOT_BYTES / MiB)) MiB, root hash $ROOTHASH"
say "$IMG.bmap"
say "$MANIFEST"
