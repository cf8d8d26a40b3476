# nooelint: oelint.var.mandatoryvar.HOMEPAGE,oelint.var.suggestedvar.BUGTRACKER,oelint.var.bbclassextend
# (suppressed above: bsfg has no public home page or bug tracker yet; and it is a target daemon
# with a systemd unit and a system user, with no use as -native or nativesdk.)
# The node at the version of Cargo.toml. Its crates: bsfg-crates.inc, written from Cargo.lock by
# yocto-layer/scripts/gen-crates-inc.sh (or `bitbake -c update_crates bsfg`, same layout).
require bsfg.inc
require bsfg-crates.inc

CVE_PRODUCT = "bsfg"

# bsfg needs a newer Rust than scarthgap's own (1.75): Cargo.toml says edition 2024 and
# rust-version 1.95, and Cargo.lock is version 4. The recipe is skipped with that reason otherwise
# (classes/bsfg_min_toolchain.bbclass); yocto-layer/README.md says how to get a newer Rust.
SKIP_RECIPE[bsfg] = "${@bsfg_toolchain_too_old(d, 'RUSTVERSION', '1.95', 'Rust')}"
