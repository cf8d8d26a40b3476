#!/usr/bin/env bash
# The development estate that both demos and the image test run (sourced, not run): plant-a and
# enterprise, configured the same way whether the IDMZ between them is a node on this host
# (scripts/demo.sh) or the appliance under QEMU (image/zones.sh); a zone's bsfg.toml; the IDMZ's
# policy; pulls; starting zones; one Connect call; an AppendFact request. The sourcing script sets:
#   ESTATE_DIR              a directory holding pki/ (bsfg dev-pki); each zone's files go below it
#   NODE_PORT, NATS_PORT    associative arrays: a zone's node and nats-server ports on 127.0.0.1;
#                           NODE_PORT[idmz] is where the IDMZ answers (a host node, or the
#                           appliance's forwarded port)
#   ESTATE_BSFG, ESTATE_NATS  the bsfg and nats-server binaries
#   ESTATE_PIDS             an array the started processes are added to
# shellcheck disable=SC2034 # ESTATE_PIDS is the sourcing script's
set -euo pipefail

# zone_config ZONE EXTRA: a zone's bsfg.toml on 127.0.0.1 (listener, certificates, nats-server,
# the batch-files bucket, the ops operator), then EXTRA.
zone_config() {
    cat <<EOF
zone = "$1"
[listen]
address = "127.0.0.1:${NODE_PORT[$1]}"
[tls]
certificate = "$ESTATE_DIR/pki/$1-bsfg.pem"
private_key = "$ESTATE_DIR/pki/$1-bsfg.key"
client_ca = "$ESTATE_DIR/pki/ca.pem"
[nats]
url = "nats://127.0.0.1:${NATS_PORT[$1]}"
[[buckets]]
name = "batch-files"
$2
[[access]]
identity = "ops"
operator = true
EOF
}

# pull_config NAME URL PEER_IDENTITY CONSUMER CATEGORY ZONES: a [[pulls]] table; ZONES is the
# TOML list body of accept_from_zones, the origin zones that peer may relay (e.g. '"plant-a"').
pull_config() {
    cat <<EOF
[[pulls]]
name = "$1"
peer_url = "$2"
peer_identity = "$3"
consumer = "$4"
category = "$5"
accept_from_zones = [$6]
idle_wait = "2s"
EOF
}

# pull NAME PEER_ZONE CONSUMER CATEGORY ZONES: a pull from another zone of this estate.
pull() { pull_config "$1" "https://127.0.0.1:${NODE_PORT[$2]}" "$2-bsfg" "$3" "$4" "$5"; }

# plant_config: plant-a. Its MES appends operational facts and stores batch reports; the IDMZ
# fetches them (to-idmz); orders from the enterprise arrive in plant-inbox (pulled from the IDMZ).
plant_config() {
    zone_config plant-a "
[[consumers]]
name = \"to-idmz\"
category = \"operational\"
[[consumers]]
name = \"plant-inbox\"
category = \"documents\"
[[access]]
identity = \"plant-a-mes\"
append = [\"operational\"]
assert_zones = [\"plant-a\"]
put_objects = [\"batch-files\"]
fetch = [\"plant-inbox\"]
[[access]]
identity = \"idmz-bsfg\"
fetch = [\"to-idmz\"]
get_objects = [\"batch-files\"]
$(pull from-idmz idmz to-plant documents '"enterprise", "idmz"')"
}

# idmz_policy: the IDMZ's consumers and who may fetch from them (plant-a gets the documents,
# enterprise the operational facts) — the same whether the IDMZ is a node on this host
# (scripts/demo.sh) or the appliance (image/zones.sh).
idmz_policy() {
    cat <<'EOF'
[[consumers]]
name = "to-enterprise"
category = "operational"
[[consumers]]
name = "to-plant"
category = "documents"
[[consumers]]
name = "audit-to-enterprise"
category = "audit"
[[access]]
identity = "enterprise-bsfg"
fetch = ["to-enterprise", "audit-to-enterprise"]
get_objects = ["batch-files"]
[[access]]
identity = "plant-a-bsfg"
fetch = ["to-plant"]
EOF
}

# enterprise_config: enterprise. The historian reads what the plant sent (archive, pulled from the
# IDMZ) and the IDMZ's audit trail (audit-archive: its operator calls and firmware steps); the ERP
# appends orders (documents) that the IDMZ fetches (to-idmz); the release team puts firmware
# bundles into the firmware bucket and announces them with a release fact (documents), which the
# IDMZ pulls with its bundle (image/upgrade-test.sh).
enterprise_config() {
    zone_config enterprise "
[[consumers]]
name = \"to-idmz\"
category = \"documents\"
[[consumers]]
name = \"archive\"
category = \"operational\"
[[access]]
identity = \"enterprise-erp\"
append = [\"documents\"]
assert_zones = [\"enterprise\"]
[[consumers]]
name = \"audit-archive\"
category = \"audit\"
[[buckets]]
name = \"firmware\"
[[access]]
identity = \"enterprise-historian\"
fetch = [\"archive\", \"audit-archive\"]
get_objects = [\"batch-files\"]
[[access]]
identity = \"enterprise-release\"
append = [\"documents\"]
assert_zones = [\"enterprise\"]
put_objects = [\"firmware\"]
[[access]]
identity = \"idmz-bsfg\"
fetch = [\"to-idmz\"]
get_objects = [\"firmware\"]
$(pull from-idmz idmz to-enterprise operational '"plant-a", "idmz"')
$(pull from-idmz-audit idmz audit-to-enterprise audit '"idmz"')"
}

# start_zones ZONE...: for each zone, a nats-server with JetStream and a bsfg node serving
# ESTATE_DIR/ZONE.toml (checked first); returns once every node serves. Logs in ESTATE_DIR/ZONE/.
start_zones() {
    local zone
    for zone in "$@"; do
        mkdir -p "$ESTATE_DIR/$zone"
        # max_file_store: what the zone's streams and buckets reserve (1 GiB each by default, 6 in
        # all for enterprise) must fit; nats-server's default is 75 % of the disk's free space,
        # which a busy build machine may not have (the zones write far less than they reserve).
        printf 'listen: 127.0.0.1:%s\njetstream { store_dir: "%s", max_file_store: 16GB }\n' "${NATS_PORT[$zone]}" \
            "$ESTATE_DIR/$zone/js" >"$ESTATE_DIR/$zone/nats.conf"
        "$ESTATE_NATS" -c "$ESTATE_DIR/$zone/nats.conf" >"$ESTATE_DIR/$zone/nats.log" 2>&1 &
        ESTATE_PIDS+=($!)
    done
    for zone in "$@"; do
        "$ESTATE_BSFG" check-config --config "$ESTATE_DIR/$zone.toml" >/dev/null
        RUST_LOG=info,async_nats=warn "$ESTATE_BSFG" serve --config "$ESTATE_DIR/$zone.toml" \
            >"$ESTATE_DIR/$zone/node.log" 2>&1 &
        ESTATE_PIDS+=($!)
    done
    for zone in "$@"; do
        for _ in $(seq 100); do
            grep -q "bsfg node serving" "$ESTATE_DIR/$zone/node.log" 2>/dev/null && break
            sleep 0.1
        done
        if ! grep -q "bsfg node serving" "$ESTATE_DIR/$zone/node.log"; then
            echo "error: $zone did not start:" >&2
            cat "$ESTATE_DIR/$zone/node.log" >&2
            return 1
        fi
    done
}

# call ZONE IDENTITY METHOD JSON: one Connect call (JSON) over mTLS to ZONE's node.
call() {
    local service=bsfg.v1.BoundaryService
    [[ $3 == GetObject ]] && service=bsfg.v1.ArtifactService
    curl -sS --max-time 30 --cacert "$ESTATE_DIR/pki/ca.pem" --cert "$ESTATE_DIR/pki/$2.pem" \
        --key "$ESTATE_DIR/pki/$2.key" -H 'content-type: application/json' -d "$4" \
        "https://127.0.0.1:${NODE_PORT[$1]}/$service/$3"
}

# fact MESSAGE_ID FROM TO SUBJECT PREDICATE OBJECT_JSON [MEDIA_TYPE]: an AppendFact request.
fact() {
    jq -nc --arg id "$1" --arg from "$2" --arg to "$3" --arg s "$4" --arg p "$5" --arg o "$6" --arg mt "${7:-}" \
        '{envelope: ({messageId: $id, fromZone: $from, toZone: $to,
                      producedAtUnixMs: (now * 1000 | floor | tostring)}
                     + (if $mt == "" then {} else {objectMediaType: $mt} end)),
          fact: {subject: $s, predicate: $p, objectJson: $o}}'
}
