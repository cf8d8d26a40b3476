# Kernel options the BSFG node and the appliance rely on: landlock, seccomp filters, cgroup BPF,
# dm-verity, erofs (bsfg-hardening.cfg) and nf_tables for hardening/nftables.conf
# (bsfg-nftables.cfg). Only with the override "bsfg", i.e. "bsfg" in DISTRO_FEATURES
# (conf/layer.conf): adding the layer alone changes no kernel. bsfg-appliance-image requires it.
FILESEXTRAPATHS:prepend:bsfg := "${THISDIR}/${PN}:"

SRC_URI:append:bsfg = " file://bsfg-hardening.cfg file://bsfg-nftables.cfg"
