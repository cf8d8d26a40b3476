# nooelint: oelint.var.bbclassextend
# (suppressed above: a daemon with a systemd unit and a system user; a -native nats-server would
# not be used by anything.)
# nats-server from its Go source, at the version scripts/versions.env pins for the Debian-based
# image (NATS_SERVER_VERSION), with the unit and the sysusers.d entry of the bsfg checkout.
SUMMARY = "NATS server with JetStream, the zone's store on a BSFG gateway"
DESCRIPTION = "nats-server is a messaging server with a persistence layer (JetStream). On a \
               BSFG gateway it holds every fact the zone has accepted and listens on loopback \
               only."
HOMEPAGE = "https://nats.io"
BUGTRACKER = "https://github.com/nats-io/nats-server/issues"
SECTION = "net"
CVE_PRODUCT = "nats-server"
# nats-server and the nats-io and highwayhash modules: Apache-2.0; klauspost/compress and
# golang.org/x/*: BSD-3-Clause; antithesis-sdk-go (its no-op build): MIT. Only nats-server's own
# LICENSE is checksummed: the modules are downloaded at compile time (below), not unpacked here.
LICENSE = "Apache-2.0 & BSD-3-Clause & MIT"
LIC_FILES_CHKSUM = "file://src/${GO_IMPORT}/LICENSE;md5=86d3f3a95c324c9479bd8986968f4327"

GO_IMPORT = "github.com/nats-io/nats-server/v2"
GO_INSTALL = "${GO_IMPORT}"

# GitHub's archive of the release tag. Its sha256 is the one Homebrew's formula records for
# v2.14.6; the same formula's v2.14.5 value was reproduced from the tag with `git archive | gzip -n`.
# The unit and the sysusers.d entry come from the bsfg checkout (BSFG_SRC_DIR, conf/layer.conf):
# oelint-adv wants FILESEXTRAPATHS in bbappends only, but these files are not next to the recipe.
# nooelint: oelint.vars.fileextrapaths,oelint.vars.outofcontext
FILESEXTRAPATHS:prepend := "${BSFG_SRC_DIR}:"
SRC_URI = "\
    https://github.com/nats-io/nats-server/archive/refs/tags/v${PV}.tar.gz;downloadfilename=${BP}.tar.gz;subdir=${BP}/src/${GO_IMPORT};striplevel=1 \
    file://systemd/nats-server.service;subdir=bsfg \
    file://systemd/sysusers.d/nats.conf;subdir=bsfg \
    file://10-shared-libraries.conf \
"
SRC_URI[sha256sum] = "90aec2c35eaa94105354cbcdfb6d88cea5082415dc39409efdbe320fb66328bb"

inherit go-mod systemd useradd features_check bsfg_min_toolchain

REQUIRED_DISTRO_FEATURES = "systemd"

# One self-contained binary, as upstream ships it: not linked against go-runtime's libstd.so.
GO_LINKSHARED = ""
# go.mod asks for a newer Go than scarthgap's (1.22): never let the go command download a
# toolchain of its own; the recipe is skipped instead (below).
export GOTOOLCHAIN = "local"
# Scarthgap's go-mod class has no module fetcher (gomod:// came in styhead), and go-vendor needs
# recipetool and the network to list every module as a git SRC_URI, which could not be done
# here: the modules come from GOPROXY during do_compile instead, each checked against go.sum.
# nooelint: oelint.task.network
do_compile[network] = "1"

# go.mod of 2.14.x says "go 1.25.0"; scarthgap's Go is 1.22. Skipped with that reason otherwise
# (classes/bsfg_min_toolchain.bbclass).
SKIP_RECIPE[nats-server] = "${@bsfg_toolchain_too_old(d, 'GOVERSION', '1.25', 'Go')}"

# The static user of systemd/sysusers.d/nats.conf, made at build time (/ is read-only at run
# time); home and shell as in the sysusers.d entry.
USERADD_PACKAGES = "${PN}"
USERADD_PARAM:${PN} = "--system --home-dir / --no-create-home --shell ${sbindir}/nologin --user-group nats"

SYSTEMD_SERVICE:${PN} = "nats-server.service"

FILES:${PN} += "\
    ${systemd_system_unitdir}/nats-server.service.d \
    ${nonarch_libdir}/sysusers.d/nats.conf \
"

# Only the binary, the unit and the directories: not go.bbclass's copy of the source tree.
do_install() {
    install -d ${D}${bindir}
    install -m 0755 ${B}/${GO_BUILD_BINDIR}/nats-server ${D}${bindir}/nats-server

    install -d ${D}${systemd_system_unitdir}/nats-server.service.d
    install -m 0644 ${WORKDIR}/bsfg/systemd/nats-server.service ${D}${systemd_system_unitdir}/
    install -m 0644 ${WORKDIR}/10-shared-libraries.conf ${D}${systemd_system_unitdir}/nats-server.service.d/

    install -d ${D}${nonarch_libdir}/sysusers.d
    install -m 0644 ${WORKDIR}/bsfg/systemd/sysusers.d/nats.conf ${D}${nonarch_libdir}/sysusers.d/

    # nats-server.conf and secrets.conf: root:nats 0750 (systemd/tmpfiles.d/bsfg.conf), made here
    # because / is read-only at run time. Provisioning mounts the zone's files here.
    install -d -m 0750 -o root -g nats ${D}${sysconfdir}/nats
}
