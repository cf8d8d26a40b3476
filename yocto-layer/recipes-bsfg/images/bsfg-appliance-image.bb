# nooelint: oelint.var.suggestedvar.BUGTRACKER,oelint.var.suggestedvar.CVE_PRODUCT,oelint.var.suggestedvar.SECTION
# (suppressed above: an image makes no package of its own, so it has no section and no CVEs of
# its own, and bsfg has no public bug tracker yet.)
SUMMARY = "BSFG gateway appliance: read-only systemd root with the node and its nats-server"
DESCRIPTION = "The Yocto counterpart of the Debian-based image in image/: a read-only root \
               with systemd, the bsfg node, nats-server, the packet filter and the kernel \
               sysctls; no package manager, no SSH server and no login prompt. Partitions, \
               persistent storage, dm-verity and the boot loader are the integrator's."
LICENSE = "MIT"

inherit core-image features_check

# systemd as init (INIT_MANAGER = "systemd"), and "bsfg" for the kernel options of
# recipes-kernel/linux (landlock, seccomp, cgroup BPF, dm-verity, erofs, nf_tables).
REQUIRED_DISTRO_FEATURES = "systemd bsfg"
# The systemd distro feature alone does not make systemd the init (base.bbclass skips a recipe
# whose SKIP_RECIPE[PN] is not empty).
SKIP_RECIPE[bsfg-appliance-image] = "${@'' if d.getVar('VIRTUAL-RUNTIME_init_manager') == 'systemd' else 'needs systemd as init: set INIT_MANAGER to systemd'}"

IMAGE_INSTALL = "\
    packagegroup-core-boot \
    packagegroup-bsfg \
    ${CORE_IMAGE_EXTRA_INSTALL} \
"
IMAGE_LINGUAS = ""

# Read-only root: every unit writes only to /var, /run, /tmp and its StateDirectory=. Whatever
# local.conf adds through EXTRA_IMAGE_FEATURES, this image has no package management, no SSH
# server, no debug tooling and no passwordless root.
IMAGE_FEATURES += "read-only-rootfs"
IMAGE_FEATURES:remove = "\
    package-management \
    ssh-server-dropbear \
    ssh-server-openssh \
    debug-tweaks \
    empty-root-password \
    allow-empty-password \
    allow-root-login \
    serial-autologin-root \
    tools-debug \
    tools-profile \
    eclipse-debug \
"

# The root file system as erofs (lz4hc) too, the format the Debian-based image puts under
# dm-verity; the machine's own image types stay.
IMAGE_FSTYPES:append = " erofs-lz4hc"

# Units masked as on the Debian-based image (image/build.sh): no login on any console, nothing
# that would write to the read-only /etc or /usr at boot (users, hwdb, ldconfig, the journal
# catalog and the machine id are made at build time), no waiting for the network.
BSFG_MASKED_UNITS ?= "\
    getty@.service \
    serial-getty@.service \
    console-getty.service \
    container-getty@.service \
    debug-shell.service \
    systemd-firstboot.service \
    systemd-machine-id-commit.service \
    ldconfig.service \
    systemd-hwdb-update.service \
    systemd-update-done.service \
    systemd-journal-catalog-update.service \
    systemd-sysusers.service \
    systemd-boot-update.service \
    systemd-networkd-wait-online.service \
"
# Files that must not be in the root, whatever pulled them in: package managers, SSH servers.
BSFG_FORBIDDEN_FILES ?= "\
    ${bindir}/opkg \
    ${bindir}/rpm \
    ${bindir}/dnf \
    ${bindir}/apt-get \
    ${bindir}/dpkg \
    ${sbindir}/sshd \
    ${sbindir}/dropbear \
"

ROOTFS_POSTPROCESS_COMMAND += "bsfg_mask_units bsfg_check_rootfs"

bsfg_mask_units[doc] = "Masks BSFG_MASKED_UNITS in the root file system (links to /dev/null)"
bsfg_mask_units() {
    install -d ${IMAGE_ROOTFS}${sysconfdir}/systemd/system
    for unit in ${BSFG_MASKED_UNITS}; do
        ln -sf /dev/null ${IMAGE_ROOTFS}${sysconfdir}/systemd/system/$unit
    done
}

bsfg_check_rootfs[doc] = "Fails the image if a package manager or SSH server is in it, or the node is not"
bsfg_check_rootfs() {
    for f in ${BSFG_FORBIDDEN_FILES}; do
        if [ -e ${IMAGE_ROOTFS}$f ] || [ -L ${IMAGE_ROOTFS}$f ]; then
            bbfatal "$f is in the root file system: the BSFG appliance has no package manager and no SSH server"
        fi
    done
    for f in ${bindir}/bsfg ${bindir}/nats-server ${sysconfdir}/nftables.conf; do
        if [ ! -e ${IMAGE_ROOTFS}$f ]; then
            bbfatal "$f is missing from the root file system (packagegroup-bsfg)"
        fi
    done
}
