#!/bin/sh
# The RAUC bundle hook of the BSFG appliance firmware (image/bundle.sh puts it into every bundle
# as hook.sh; RAUC runs it on the appliance). One hook: slot-install for the `uki` image (the
# manifest's hooks=install), which installs the target slot's unified kernel image on the ESP:
# it extracts uki-$RAUC_SLOT_BOOTNAME.efi from the bundle's uki.tar and hands it to
# `bsfg boot-backend install-uki` (EFI/Linux/bsfg-<slot>+3.efi, written atomically, three tries).
set -eu

hook=${1:-}
case $hook in
slot-install) ;;
*)
    echo "bsfg bundle hook: nothing to do for '$hook'" >&2
    exit 0
    ;;
esac
[ "${RAUC_SLOT_CLASS:-}" = uki ] || {
    echo "bsfg bundle hook: slot-install for class '${RAUC_SLOT_CLASS:-}': only uki is installed by this hook" >&2
    exit 1
}
slot=${RAUC_SLOT_BOOTNAME:-}
case $slot in
a | b) ;;
*)
    echo "bsfg bundle hook: unexpected boot name '$slot' (slot ${RAUC_SLOT_NAME:-?})" >&2
    exit 1
    ;;
esac
image=${RAUC_IMAGE_NAME:-}
case $image in
/*) ;;
*) image=${RAUC_BUNDLE_MOUNT_POINT:?}/$image ;;
esac
work=$(mktemp -d /run/bsfg-uki.XXXXXX)
trap 'rm -rf "$work"' EXIT
tar -x -f "$image" -C "$work" "uki-$slot.efi"
/usr/bin/bsfg boot-backend --esp /efi install-uki "$slot" "$work/uki-$slot.efi"
