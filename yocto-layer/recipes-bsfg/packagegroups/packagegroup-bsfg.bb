# nooelint: oelint.var.suggestedvar.BUGTRACKER,oelint.var.suggestedvar.SECTION
# (suppressed above: a package group has no section of its own, and bsfg has no public bug
# tracker yet.)
SUMMARY = "BSFG gateway: the node, its zone's nats-server and the appliance hardening"
DESCRIPTION = "Everything the Debian-based BSFG image adds to its base system: the bsfg \
               node, nats-server with JetStream (loopback only), the nftables packet filter \
               and the kernel sysctls."

inherit packagegroup

RDEPENDS:${PN} = "\
    bsfg \
    bsfg-hardening \
    nats-server \
"
