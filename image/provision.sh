#!/usr/bin/env bash
# Provisioning for the BSFG appliance: the zone's identity and configuration, packed into one
# provisioning file that the appliance's initrd installs on the data partition at boot.
#
#   image/provision.sh bundle ZONE_DIR OUT.tar   make the provisioning file from ZONE_DIR
#   image/provision.sh write IMAGE BUNDLE.tar    put it on IMAGE's data partition (offline, no
#                                                loop device): installed at the next boot
#
# ZONE_DIR holds (see image/README.md, "Provisioning"):
#   bsfg.toml         required; every file it names lives under /etc/bsfg/ (e.g.
#                     /etc/bsfg/tls/node.pem) and is taken from ZONE_DIR/<path below /etc/bsfg/>
#                     or ZONE_DIR/<file name>: the node certificate, its key, the CA bundle, CRLs
#   hosts             optional: names of the peers (no DNS on the appliance), "ADDRESS NAME..."
#   network/*.network optional: systemd-networkd configuration (static addresses; no DHCP)
#   allow             optional: networks that may call the node, one address or CIDR per line
#                     (systemd IPAddressAllow=); the peers are allowed anyway
#   ntp               optional: NTP server addresses, one per line
#   network.conf, peers.nft   optional: used as given instead of being generated from the above
# Made here: nats-server.conf (the zone as JetStream domain), two random NATS passwords (bcrypt
# hashes in /etc/nats/secrets.conf, the node's in /etc/bsfg/nats.credentials), the bsfg.service
# drop-in with IPAddressAllow= (peers + allow), the nftables peer and NTP sets, timesyncd's NTP=.
# The bundle is checked with `bsfg check-config` first: a build or provisioning with an invalid
# identity or configuration stops here, with bsfg's reasons.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
BSFG_BIN=${BSFG_BIN:-$ROOT/target/x86_64-unknown-linux-musl/release/bsfg}

usage() {
    sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# toml_paths FILE: the absolute paths quoted in FILE (values such as "/etc/bsfg/tls/ca.pem").
toml_paths() { grep -o '"/[^"]*"' "$1" | tr -d '"' | sort -u; }

# join_comma ITEM...: the items joined by ", ".
join_comma() {
    local out=$1
    shift
    for item in "$@"; do out="$out, $item"; done
    echo "$out"
}

# peers TOML HOSTS: "ADDRESS PORT" for each [[pulls]] peer_url, names resolved through HOSTS.
peers() {
    local url hostport host port addr
    grep -E '^[[:space:]]*peer_url[[:space:]]*=' "$1" | sed 's/.*"\(.*\)".*/\1/' | while read -r url; do
        hostport=${url#*://}
        hostport=${hostport%%/*}
        port=${hostport##*:}
        host=${hostport%:*}
        host=${host#[}
        host=${host%]}
        if [[ $host =~ ^[0-9.]+$ || $host == *:* ]]; then
            addr=$host
        else
            addr=$(awk -v h="$host" '!/^#/ { for (i = 2; i <= NF; i++) if ($i == h) { print $1; exit } }' "$2" 2>/dev/null || true)
            [ -n "$addr" ] || die "peer $host (from $url) is not an address and not in ZONE_DIR/hosts: the appliance has no DNS"
        fi
        echo "$addr $port"
    done
}

bundle() {
    local zdir=$1 out=$2
    [ -f "$zdir/bsfg.toml" ] || die "$zdir/bsfg.toml is missing"
    [ -x "$BSFG_BIN" ] || die "no bsfg binary at $BSFG_BIN (make static)"
    local st zone p rel src
    st=$(mktemp -d)
    # shellcheck disable=SC2064 # expand now
    trap "rm -rf '$st'" RETURN
    mkdir -p "$st/etc/bsfg/tls" "$st/etc/nats" "$st/etc/nftables.d" "$st/etc/systemd/bsfg.service.d" \
        "$st/etc/systemd/network" "$st/etc/systemd/timesyncd.conf.d"
    cp "$zdir/bsfg.toml" "$st/etc/bsfg/bsfg.toml"
    zone=$(sed -n 's/^zone *= *"\(.*\)"/\1/p' "$zdir/bsfg.toml" | head -1)
    [ -n "$zone" ] || die "$zdir/bsfg.toml names no zone"

    # The node's NATS credentials: the node reads them from nats.credentials_file.
    if ! grep -qE '^[[:space:]]*credentials_file[[:space:]]*=' "$st/etc/bsfg/bsfg.toml"; then
        if grep -qE '^\[nats\]' "$st/etc/bsfg/bsfg.toml"; then
            sed -i '/^\[nats\]/a credentials_file = "/etc/bsfg/nats.credentials"' "$st/etc/bsfg/bsfg.toml"
        else
            printf '\n[nats]\ncredentials_file = "/etc/bsfg/nats.credentials"\n' >>"$st/etc/bsfg/bsfg.toml"
        fi
        say "bsfg.toml: added nats.credentials_file = \"/etc/bsfg/nats.credentials\""
    fi
    grep -q '"/etc/bsfg/nats.credentials"' "$st/etc/bsfg/bsfg.toml" ||
        die "bsfg.toml: nats.credentials_file must be \"/etc/bsfg/nats.credentials\" on the appliance"

    # Files named in bsfg.toml: all under /etc/bsfg/.
    for p in $(toml_paths "$st/etc/bsfg/bsfg.toml"); do
        case $p in
        /etc/bsfg/nats.credentials) continue ;;
        /etc/bsfg/*) ;;
        *) die "bsfg.toml names $p: on the appliance every file of the node lives under /etc/bsfg/" ;;
        esac
        rel=${p#/etc/bsfg/}
        src=$zdir/$rel
        [ -f "$src" ] || src=$zdir/$(basename "$p")
        [ -f "$src" ] || die "bsfg.toml names $p, but neither $zdir/$rel nor $zdir/$(basename "$p") exists"
        mkdir -p "$(dirname "$st/etc/bsfg/$rel")"
        cp "$src" "$st/etc/bsfg/$rel"
    done
    if grep -qE '^[[:space:]]*address[[:space:]]*=[[:space:]]*"127\.' "$st/etc/bsfg/bsfg.toml"; then
        say "warning: listen.address is on loopback: nobody outside the appliance can call the node"
    fi

    # NATS: the zone's server config and two random passwords, only their bcrypt hashes on the
    # server side.
    local pw_bsfg pw_sys
    pw_bsfg=$(openssl rand -hex 24)
    pw_sys=$(openssl rand -hex 24)
    sed "s/ZONE/$zone/g" "$ROOT/hardening/nats-server.conf" >"$st/etc/nats/nats-server.conf"
    printf 'BSFG_NATS_PASSWORD: "%s"\nSYS_NATS_PASSWORD: "%s"\n' \
        "$(mkpasswd -m bcrypt -R 11 "$pw_bsfg")" "$(mkpasswd -m bcrypt -R 11 "$pw_sys")" >"$st/etc/nats/secrets.conf"
    printf 'bsfg:%s\n' "$pw_bsfg" >"$st/etc/bsfg/nats.credentials"

    # Names, network, peers, callers, time.
    if [ -f "$zdir/hosts" ]; then
        {
            printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n'
            grep -vE '^[[:space:]]*(#|$)|[[:space:]]localhost([[:space:]]|$)' "$zdir/hosts" || true
        } >"$st/etc/hosts"
    fi
    if [ -d "$zdir/network" ]; then
        cp "$zdir"/network/*.network "$st/etc/systemd/network/" 2>/dev/null ||
            die "$zdir/network has no *.network files"
    else
        say "warning: no ZONE_DIR/network/*.network: the appliance configures no address"
    fi
    local peer_list ntp_list
    peer_list=$(peers "$st/etc/bsfg/bsfg.toml" "$zdir/hosts")
    ntp_list=$(grep -vE '^[[:space:]]*(#|$)' "$zdir/ntp" 2>/dev/null || true)
    if [ -f "$zdir/peers.nft" ]; then
        cp "$zdir/peers.nft" "$st/etc/nftables.d/peers.nft"
    else
        {
            echo "# Made by image/provision.sh from bsfg.toml's [[pulls]] and ZONE_DIR/ntp."
            local addr port v4=() v6=()
            while read -r addr port; do
                [ -n "$addr" ] || continue
                if [[ $addr == *:* ]]; then v6+=("$addr . $port"); else v4+=("$addr . $port"); fi
            done <<<"$peer_list"
            if ((${#v4[@]})); then echo "add element inet bsfg bsfg_peers { $(join_comma "${v4[@]}") }"; fi
            if ((${#v6[@]})); then echo "add element inet bsfg bsfg_peers6 { $(join_comma "${v6[@]}") }"; fi
            if [ -n "$ntp_list" ]; then echo "add element inet bsfg ntp_servers { $(echo "$ntp_list" | paste -sd, | sed 's/,/, /g') }"; fi
        } >"$st/etc/nftables.d/peers.nft"
    fi
    if [ -f "$zdir/network.conf" ]; then
        cp "$zdir/network.conf" "$st/etc/systemd/bsfg.service.d/network.conf"
    else
        local allow
        allow=$(grep -vE '^[[:space:]]*(#|$)' "$zdir/allow" 2>/dev/null || true)
        [ -n "$allow" ] || say "warning: no ZONE_DIR/allow: only the peers may call the node"
        {
            echo "# Made by image/provision.sh: the addresses the node may exchange packets with"
            echo "# besides loopback (bsfg.service has IPAddressDeny=any): its peers and ZONE_DIR/allow."
            echo "[Service]"
            if [ -n "$peer_list" ]; then echo "IPAddressAllow=$(awk '{ print $1 }' <<<"$peer_list" | sort -u | paste -sd' ')"; fi
            if [ -n "$allow" ]; then echo "IPAddressAllow=$(paste -sd' ' <<<"$allow")"; fi
        } >"$st/etc/systemd/bsfg.service.d/network.conf"
    fi
    if [ -n "$ntp_list" ]; then
        printf '[Time]\nNTP=%s\n' "$(paste -sd' ' <<<"$ntp_list")" >"$st/etc/systemd/timesyncd.conf.d/ntp.conf"
    fi

    # The node's own verdict, on a copy whose /etc/bsfg/ paths point into the staging tree.
    local check=$st/check.toml
    sed "s#\"/etc/bsfg/#\"$st/etc/bsfg/#g" "$st/etc/bsfg/bsfg.toml" >"$check"
    if ! "$BSFG_BIN" check-config --config "$check" >"$st/check.out" 2>&1; then
        sed "s#$st##g" "$st/check.out" >&2
        rm -f "$check"
        die "bsfg check-config refuses the zone configuration in $zdir (above): no provisioning file made"
    fi
    rm -f "$check" "$st/check.out"
    chmod -R u=rwX,g=rX,o= "$st/etc/bsfg" "$st/etc/nats"
    find "$st" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
    mkdir -p "$(dirname "$out")"
    tar --create --file "$out.tmp" --directory "$st" --sort=name --owner=0 --group=0 --numeric-owner \
        --mtime="@$SOURCE_DATE_EPOCH" --format=ustar etc
    chmod 0600 "$out.tmp"
    mv "$out.tmp" "$out"
    # The operator's password for the system account (`nats --user sys` on the appliance): next
    # to the provisioning file, never on the appliance in clear.
    (umask 077 && printf 'sys:%s\n' "$pw_sys" >"$out.operator-credentials")
    say "provisioning file for zone $zone: $out ($(tar -tf "$out" | grep -vc '/$') files; peers: $(awk '{ print $1 ":" $2 }' <<<"$peer_list" | paste -sd' ')); holds the node's private key"
}

write() {
    local img=$1 bundle=$2 off _size
    [ -f "$img" ] || die "no image $img"
    [ -f "$bundle" ] || die "no provisioning file $bundle"
    read -r off _size < <(part_offset "$img" data)
    [ -n "$off" ] || die "$img has no partition named data"
    local dev="$img?offset=$off"
    debugfs -w -R "rm /provision/bsfg-provision.tar" "$dev" >/dev/null 2>&1 || true
    debugfs -w -f - "$dev" >/dev/null 2>&1 <<EOF
mkdir /provision
write $bundle /provision/bsfg-provision.tar
set_inode_field /provision/bsfg-provision.tar mode 0100600
set_inode_field /provision/bsfg-provision.tar uid 0
set_inode_field /provision/bsfg-provision.tar gid 0
EOF
    debugfs -R "stat /provision/bsfg-provision.tar" "$dev" 2>/dev/null | grep "Size: $(stat -c %s "$bundle")" >/dev/null ||
        die "could not write $bundle to the data partition of $img"
    say "wrote $(basename "$bundle") to $(basename "$img"): data partition, /provision/bsfg-provision.tar (installed at the next boot)"
}

case ${1:-} in
bundle)
    [ $# -eq 3 ] || usage
    bundle "$2" "$3"
    ;;
write)
    [ $# -eq 3 ] || usage
    write "$2" "$3"
    ;;
*) usage ;;
esac
