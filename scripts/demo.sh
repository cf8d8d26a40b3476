#!/usr/bin/env bash
# The loopback demo behind `make demo-local` (no VM): a three-zone chain on loopback,
#   plant-a  <->  idmz  <->  enterprise
# each zone a nats-server with JetStream plus a bsfg node, one development estate CA. A producer in
# plant-a appends facts (one referencing an artifact); the receiving zones pull them hop by hop
# (FetchFacts -> GetObject -> local AppendFact -> ConfirmReceipt); the facts are read in
# enterprise with their origin intact; an order travels back from enterprise to plant-a; lag
# figures come from `bsfg status` and /metrics. Every call is mTLS. Everything runs in a temporary
# directory and is stopped and removed at the end.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=estate.sh
. "$ROOT/scripts/estate.sh"
BSFG=${BSFG_BIN:-$ROOT/target/release/bsfg}
NATS=${BSFG_NATS_SERVER:-$ROOT/.tools/bin/nats-server}
WORK=$(mktemp -d /tmp/bsfg-demo.XXXXXX)
ESTATE_DIR=$WORK ESTATE_BSFG=$BSFG ESTATE_NATS=$NATS
ESTATE_PIDS=()

cleanup() {
  for pid in "${ESTATE_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
say() { printf '   %s\n' "$*"; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

for tool in "$BSFG" "$NATS"; do
  [[ -x $tool ]] || { echo "missing $tool: run 'make setup build' first" >&2; exit 1; }
done

declare -A NODE_PORT NATS_PORT
for zone in plant-a idmz enterprise; do
  NODE_PORT[$zone]=$(free_port)
  NATS_PORT[$zone]=$(free_port)
done

step "Development estate PKI: one CA, a certificate per node and per client"
"$BSFG" dev-pki --out "$WORK/pki" --zone plant-a --zone idmz --zone enterprise \
  --client plant-a-mes --client enterprise-erp --client enterprise-historian --client ops | fold -s -w 100 | sed 's/^/   /'

plant_config >"$WORK/plant-a.toml"

zone_config idmz "
$(idmz_policy)
$(pull from-plant plant-a to-idmz operational '"plant-a"')
$(pull from-enterprise enterprise to-idmz documents '"enterprise"')" >"$WORK/idmz.toml"

enterprise_config >"$WORK/enterprise.toml"

step "Three zones, each a nats-server (JetStream, loopback) and a bsfg node (mTLS)"
start_zones plant-a idmz enterprise
for zone in plant-a idmz enterprise; do
  say "$zone-bsfg serving on 127.0.0.1:${NODE_PORT[$zone]}"
done

step "plant-a: the MES stores a batch report and appends five facts (operational)"
report=$(printf 'Batch B-1042 release report\nyield: 98.2%%\n' | base64 -w0)
put=$(call plant-a plant-a-mes PutObject "{\"bucket\":\"batch-files\",\"key\":\"B-1042/report.txt\",\"data\":\"$report\",\"mediaType\":\"text/plain\"}")
digest=$(jq -r .digest <<<"$put")
size=$(jq -r .size <<<"$put")
say "PutObject batch-files/B-1042/report.txt -> $digest ($size bytes)"
append() {
  local reply
  reply=$(call plant-a plant-a-mes AppendFact "$(fact "$1" plant-a enterprise "$2" "$3" "$4" "${5:-}")")
  printf '   AppendFact %-9s %-30s -> %s\n' "$1" "$2 $3" "$(jq -c . <<<"$reply")"
}
append evt-1001 batch:B-1042 batch_started '{"line":"L2","recipe":"R-77"}'
append evt-1002 batch:B-1042 step_completed '{"step":1,"temp_c":71.5}'
append evt-1003 batch:B-1042 step_completed '{"step":2,"temp_c":72}'
append evt-1004 batch:B-1042 report_attached \
  "{\"bucket\":\"batch-files\",\"digest\":\"$digest\",\"key\":\"B-1042/report.txt\",\"media_type\":\"text/plain\",\"size\":$size}" text/plain
append evt-1005 batch:B-1042 batch_released '{"released_by":"QA-7"}'
append evt-1002 batch:B-1042 step_completed '{"step":1,"temp_c":71.5}'
say "(the repeated evt-1002 is a retry: same offset, duplicate, nothing new written)"

step "enterprise: the historian reads what crossed plant-a -> idmz -> enterprise"
page='{}'
for _ in $(seq 100); do
  page=$(call enterprise enterprise-historian FetchFacts '{"consumerName":"archive","limit":10}')
  [[ $(jq '.facts | length' <<<"$page") -ge 5 ]] && break
  sleep 0.1
done
jq -r '.facts[] | "   offset \(.offset)  \(.envelope.messageId)  from \(.envelope.fromZone)  \(.fact.predicate) \(.fact.objectJson)"' <<<"$page"
[[ $(jq '.facts | length' <<<"$page") -eq 5 ]] || { echo "expected 5 facts in enterprise" >&2; exit 1; }
say "$(call enterprise enterprise-historian ConfirmReceipt '{"consumerName":"archive","offset":"5"}')"
got=$(call enterprise enterprise-historian GetObject '{"bucket":"batch-files","key":"B-1042/report.txt"}')
say "the report crossed too: $(jq -r .digest <<<"$got") ($(jq -r .size <<<"$got") bytes)"
jq -r .data <<<"$got" | base64 -d | sed 's/^/   | /'

step "enterprise -> idmz -> plant-a: the ERP sends a production order back (documents)"
order=$(fact ord-77 enterprise plant-a order:ENT-12345 order_created '{"qty":1200,"sku":"A-77"}' | jq -c '.category = "CATEGORY_DOCUMENTS"')
say "AppendFact ord-77 in enterprise -> $(call enterprise enterprise-erp AppendFact "$order")"
inbox='{}'
for _ in $(seq 100); do
  inbox=$(call plant-a plant-a-mes FetchFacts '{"consumerName":"plant-inbox","limit":10}')
  [[ $(jq '.facts | length' <<<"$inbox") -ge 1 ]] && break
  sleep 0.1
done
jq -r '.facts[] | "   plant-a inbox: offset \(.offset)  \(.envelope.messageId)  from \(.envelope.fromZone) to \(.envelope.toZone)  \(.fact.subject) \(.fact.objectJson)"' <<<"$inbox"
[[ $(jq -r '.facts[0].envelope.messageId // empty' <<<"$inbox") == ord-77 ]] ||
  { echo "the order did not reach plant-a's inbox" >&2; exit 1; }

step "Lag and cursors, as an operator sees them (bsfg status)"
sleep 1.5 # status is recorded once a second
for zone in idmz enterprise; do
  say "--- $zone"
  "$BSFG" status --config "$WORK/$zone.toml" | sed 's/^/   /' || true
done
say "--- idmz /metrics"
curl -sS --cacert "$WORK/pki/ca.pem" --cert "$WORK/pki/ops.pem" --key "$WORK/pki/ops.key" \
  "https://127.0.0.1:${NODE_PORT[idmz]}/metrics" | grep -E '^bsfg_replication_(lag|cursor|facts_total)' | sed 's/^/   /'

step "Done: stopping three nodes and three nats-servers, removing $WORK"
