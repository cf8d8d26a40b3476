#!/usr/bin/env bash
# `make demo`: the appliance doing its job. Builds the firmware image (or reuses it when its inputs
# are unchanged), provisions a copy as the IDMZ zone, boots it under QEMU (TCG, OVMF, user-mode
# networking with restrict=on: hostfwd on 127.0.0.1 only, guestfwd to 127.0.0.1 ports only)
# between a plant zone and an enterprise zone running on this host, and shows:
#   - the plant's MES storing a batch report and appending facts (one referencing the report);
#   - the appliance pulling them from the plant and the enterprise pulling them from the
#     appliance, all over mTLS; the enterprise historian reading them with their origin intact;
#   - an order from the enterprise ERP crossing back to the plant through the appliance;
#   - the appliance's replication figures from its /metrics (operator identity);
# then presses the virtual power button (a clean ACPI shutdown) and removes its files.
# It boots the production image (no console): what it shows comes through the mTLS port only.
# Needs root (the image build). The fast loopback-only demo without a VM is `make demo-local`.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=zones.sh
. "$IMAGE_DIR/zones.sh"

step "The firmware image (built, or reused when its inputs are unchanged)"
"$IMAGE_DIR/build.sh" | grep -E 'up to date|reusing|root hash|done:' || true
IMG=$(image_base "").img
[ -f "$IMG" ] || die "no image at $IMG"
# The firmware's variables: Secure Boot on with the estate's keys (image/build.sh).
QEMU_VARS=$(image_base "").ovmf-vars.fd
say "$(basename "$IMG"): root hash $(jq -r .root.root_hash "$(image_base "").manifest.json")"

WORK=$(mktemp -d /tmp/bsfg-demo-image.XXXXXX)
QEMU_PID=
cleanup() {
    if [ -n "$QEMU_PID" ]; then kill "$QEMU_PID" 2>/dev/null || true; fi
    zones_stop
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

step "Host zones: plant-a and enterprise on 127.0.0.1; one development estate CA with the appliance"
zones_init "$WORK"
zones_start
say "plant-a node 127.0.0.1:${NODE_PORT[plant-a]}, enterprise node 127.0.0.1:${NODE_PORT[enterprise]}"

step "Provisioning the appliance as zone idmz (identity, bsfg.toml, peers, network) on a copy of the image"
DISK=$WORK/disk.img
cp --sparse=always "$IMG" "$DISK"
# The gateway's disk is larger than the image; the first boot grows the data partition.
truncate -s "$GATEWAY_DISK" "$DISK"
"$IMAGE_DIR/provision.sh" bundle "$ZONE_DIR_IDMZ" "$WORK/idmz-provision.tar"
"$IMAGE_DIR/provision.sh" write "$DISK" "$WORK/idmz-provision.tar"

step "Booting the appliance under QEMU (TCG: no KVM here, so this takes a minute)"
say "in:  127.0.0.1:$APP_PORT -> appliance :9443 (mTLS); nothing else is forwarded that answers"
say "out: appliance -> plant-a-bsfg ($PLANT_GUEST_ADDR:9443) and enterprise-bsfg ($ENTERPRISE_GUEST_ADDR:9443) only"
t0=$(date +%s)
qemu_start "$WORK" "$DISK" "$APP_NETDEV"
metrics() {
    curl -sS --fail --max-time 10 --cacert "$WORK/pki/ca.pem" --cert "$WORK/pki/ops.pem" \
        --key "$WORK/pki/ops.key" "https://127.0.0.1:$APP_PORT/metrics" 2>/dev/null
}
ready=0
for _ in $(seq 150); do
    if metrics >/dev/null; then
        ready=1
        break
    fi
    kill -0 "$QEMU_PID" 2>/dev/null || die "QEMU stopped: $(cat "$WORK/qemu.log")"
    sleep 2
done
[ "$ready" = 1 ] || die "the appliance's node did not answer within 300 s"
say "the appliance's node answers on its mTLS port after $(($(date +%s) - t0)) s"
metrics | grep -E '^bsfg_sandbox_' | sed 's/^/   /'

step "Facts across the appliance: plant-a -> idmz (appliance) -> enterprise, and back"
facts_cross || die "facts did not cross the appliance"

step "The appliance's replication figures (its /metrics, operator identity)"
sleep 1.5
metrics | grep -E '^bsfg_replication_(lag_facts|cursor|facts_total)' | sed 's/^/   /'

step "Shutting the appliance down (ACPI power button: systemd stops the node, nats-server, syncs)"
qemu_powerdown "$WORK"
if qemu_wait_exit 120; then
    say "powered off cleanly"
else
    say "did not power off within 120 s: stopped QEMU"
fi
QEMU_PID=
step "Done: stopping the host zones, removing $WORK"
