#!/usr/bin/env bash
# The host side of the appliance test and demo (sourced by image/test.sh and image/demo.sh, not
# run): a plant zone and an enterprise zone on 127.0.0.1 (each a nats-server with JetStream and a
# bsfg node, as in scripts/demo.sh), the appliance as the IDMZ zone between them, one development
# estate CA for all three, and the QEMU networking that joins them:
#   host -> appliance  hostfwd 127.0.0.1:APP_PORT -> guest :9443 (the zones pull from the IDMZ)
#   appliance -> host  guestfwd 10.0.2.100:9443 -> plant-a's node, 10.0.2.101:9443 -> enterprise's
# The appliance knows its peers by name (plant-a-bsfg, enterprise-bsfg: the names in their
# certificates) through a provisioned /etc/hosts.
# The zones' configuration, start-up and calls are scripts/estate.sh's, shared with
# scripts/demo.sh; here the IDMZ is the appliance, reached at NODE_PORT[idmz] = the hostfwd port.
# shellcheck disable=SC2034 # variables are used by the scripts that source this file
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=../scripts/estate.sh
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/estate.sh"

PLANT_GUEST_ADDR=10.0.2.100
ENTERPRISE_GUEST_ADDR=10.0.2.101
APPLIANCE_GUEST_ADDR=10.0.2.15
ESTATE_PIDS=()

# zones_init WORK: PKI, ports and configuration for plant-a, enterprise and the appliance (idmz).
zones_init() {
    ESTATE_DIR=$1
    ESTATE_BSFG=${HOST_BSFG:-$ROOT/target/x86_64-unknown-linux-musl/release/bsfg}
    ESTATE_NATS=${HOST_NATS:-$ROOT/.tools/bin/nats-server}
    [ -x "$ESTATE_BSFG" ] || die "no bsfg at $ESTATE_BSFG"
    [ -x "$ESTATE_NATS" ] || die "no nats-server at $ESTATE_NATS"
    declare -gA NODE_PORT NATS_PORT
    for zone in plant-a enterprise; do
        NODE_PORT[$zone]=$(free_port)
        NATS_PORT[$zone]=$(free_port)
    done
    APP_PORT=$(free_port)      # -> appliance :9443 (mTLS)
    APP_NATS_PORT=$(free_port) # -> appliance :4222 (nats-server: must not answer)
    APP_SSH_PORT=$(free_port)  # -> appliance :22 (nothing: must not answer)
    # The host zones pull from, and the test calls, the appliance through the forwarded port.
    NODE_PORT[idmz]=$APP_PORT
    "$ESTATE_BSFG" dev-pki --out "$ESTATE_DIR/pki" --zone plant-a --zone idmz --zone enterprise \
        --client plant-a-mes --client enterprise-erp --client enterprise-historian --client enterprise-release \
        --client ops >/dev/null
    plant_config >"$ESTATE_DIR/plant-a.toml"
    enterprise_config >"$ESTATE_DIR/enterprise.toml"

    # The appliance's zone directory (image/provision.sh bundle): the IDMZ node.
    local zd=$ESTATE_DIR/idmz-zone
    mkdir -p "$zd/network"
    cp "$ESTATE_DIR/pki/ca.pem" "$ESTATE_DIR/pki/idmz-bsfg.pem" "$ESTATE_DIR/pki/idmz-bsfg.key" "$zd/"
    cat >"$zd/bsfg.toml" <<EOF
zone = "idmz"
[listen]
address = "0.0.0.0:9443"
[tls]
certificate = "/etc/bsfg/tls/idmz-bsfg.pem"
private_key = "/etc/bsfg/tls/idmz-bsfg.key"
client_ca = "/etc/bsfg/tls/ca.pem"
[nats]
url = "nats://127.0.0.1:4222"
[[buckets]]
name = "batch-files"
$(idmz_policy)
[[buckets]]
name = "firmware"
[firmware]
bucket = "firmware"
[[access]]
identity = "ops"
operator = true
operate = ["status", "firmware_status", "firmware_install"]
$(pull_config from-plant "https://plant-a-bsfg:9443" plant-a-bsfg to-idmz operational '"plant-a"')
$(pull_config from-enterprise "https://enterprise-bsfg:9443" enterprise-bsfg to-idmz documents '"enterprise"')
EOF
    printf '%s plant-a-bsfg\n%s enterprise-bsfg\n' "$PLANT_GUEST_ADDR" "$ENTERPRISE_GUEST_ADDR" >"$zd/hosts"
    # QEMU's user-mode network: the host side of hostfwd connections is 10.0.2.2.
    printf '10.0.2.2\n' >"$zd/allow"
    cat >"$zd/network/10-lan.network" <<EOF
[Match]
Name=en*
[Network]
Address=$APPLIANCE_GUEST_ADDR/24
LinkLocalAddressing=no
IPv6AcceptRA=no
EOF
    ZONE_DIR_IDMZ=$zd
    # QEMU -netdev options: in through 127.0.0.1 only, out to the two host zones only.
    APP_NETDEV="hostfwd=tcp:127.0.0.1:$APP_PORT-:9443,hostfwd=tcp:127.0.0.1:$APP_NATS_PORT-:4222"
    APP_NETDEV="$APP_NETDEV,hostfwd=tcp:127.0.0.1:$APP_SSH_PORT-:22"
    APP_NETDEV="$APP_NETDEV,guestfwd=tcp:$PLANT_GUEST_ADDR:9443-cmd:socat - TCP:127.0.0.1:${NODE_PORT[plant-a]}"
    APP_NETDEV="$APP_NETDEV,guestfwd=tcp:$ENTERPRISE_GUEST_ADDR:9443-cmd:socat - TCP:127.0.0.1:${NODE_PORT[enterprise]}"
}

# zones_start: the host zones' nats-servers and nodes.
zones_start() { start_zones plant-a enterprise || die "the host zones did not start"; }

zones_stop() {
    local pid
    for pid in "${ESTATE_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${ESTATE_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    ESTATE_PIDS=()
}

# fetch_until ZONE IDENTITY CONSUMER COUNT SECONDS: FetchFacts until COUNT facts are there; prints
# the last page.
fetch_until() {
    local page='{}' i
    for ((i = 0; i < $5 * 2; i++)); do
        page=$(call "$1" "$2" FetchFacts "{\"consumerName\":\"$3\",\"limit\":20}") || page='{}'
        if [ "$(jq '.facts // [] | length' <<<"$page")" -ge "$4" ]; then break; fi
        sleep 0.5
    done
    echo "$page"
}

# facts_cross: the plant's MES stores a batch report and appends four facts (one referencing
# the report); they cross plant-a -> appliance -> enterprise; the ERP's order crosses back
# enterprise -> appliance -> plant-a. Prints each step; returns non-zero if something did not
# arrive.
facts_cross() {
    local report put digest size page got inbox ok=0
    report=$(printf 'Batch B-1042 release report\nyield: 98.2%%\n' | base64 -w0)
    put=$(call plant-a plant-a-mes PutObject "{\"bucket\":\"batch-files\",\"key\":\"B-1042/report.txt\",\"data\":\"$report\",\"mediaType\":\"text/plain\"}")
    digest=$(jq -r .digest <<<"$put")
    size=$(jq -r .size <<<"$put")
    say "plant-a: PutObject batch-files/B-1042/report.txt -> $digest ($size bytes)"
    append_plant evt-1001 batch:B-1042 batch_started '{"line":"L2","recipe":"R-77"}'
    append_plant evt-1002 batch:B-1042 step_completed '{"step":1,"temp_c":71.5}'
    append_plant evt-1003 batch:B-1042 report_attached \
        "{\"bucket\":\"batch-files\",\"digest\":\"$digest\",\"key\":\"B-1042/report.txt\",\"media_type\":\"text/plain\",\"size\":$size}" text/plain
    append_plant evt-1004 batch:B-1042 batch_released '{"released_by":"QA-7"}'

    say "enterprise: the historian reads what crossed plant-a -> appliance (idmz) -> enterprise"
    page=$(fetch_until enterprise enterprise-historian archive 4 90)
    jq -r '.facts // [] | .[] | "  offset \(.offset)  \(.envelope.messageId)  from \(.envelope.fromZone)  \(.fact.predicate) \(.fact.objectJson)"' <<<"$page" | sed 's/^/       /'
    if [ "$(jq '[.facts // [] | .[] | select(.envelope.fromZone == "plant-a")] | length' <<<"$page")" -ne 4 ]; then
        say "FAILED: expected 4 facts from plant-a in enterprise"
        ok=1
    fi
    got=$(call enterprise enterprise-historian GetObject '{"bucket":"batch-files","key":"B-1042/report.txt"}') || got='{}'
    if [ "$(jq -r .digest <<<"$got")" = "$digest" ]; then
        say "enterprise: the report crossed too: $(jq -r .digest <<<"$got") ($(jq -r .size <<<"$got") bytes)"
    else
        say "FAILED: the report did not reach enterprise: $got"
        ok=1
    fi

    say "enterprise -> appliance -> plant-a: the ERP sends a production order back"
    local order
    order=$(fact ord-77 enterprise plant-a order:ENT-12345 order_created '{"qty":1200,"sku":"A-77"}' | jq -c '.category = "CATEGORY_DOCUMENTS"')
    say "enterprise: AppendFact ord-77 -> $(call enterprise enterprise-erp AppendFact "$order")"
    inbox=$(fetch_until plant-a plant-a-mes plant-inbox 1 90)
    jq -r '.facts // [] | .[] | "  plant-a inbox: offset \(.offset)  \(.envelope.messageId)  from \(.envelope.fromZone) to \(.envelope.toZone)  \(.fact.subject) \(.fact.objectJson)"' <<<"$inbox" | sed 's/^/       /'
    if [ "$(jq '[.facts // [] | .[] | select(.envelope.messageId == "ord-77")] | length' <<<"$inbox")" -ne 1 ]; then
        say "FAILED: the order did not reach plant-a"
        ok=1
    fi
    return "$ok"
}

append_plant() {
    local reply
    reply=$(call plant-a plant-a-mes AppendFact "$(fact "$1" plant-a enterprise "$2" "$3" "$4" "${5:-}")")
    say "plant-a: AppendFact $1 $3 -> $(jq -c . <<<"$reply")"
}
