#!/usr/bin/env bash
# The end-to-end demo behind `make demo`: one zone on loopback (a nats-server with JetStream and a
# bsfg node with a development PKI), a producer appending facts (one referencing an artifact), and
# a peer fetching a page, fetching it again (same page), confirming, and fetching the next one.
# Every call is a real mTLS Connect call made with curl. Everything runs in a temporary directory
# and is stopped and removed at the end.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BSFG=${BSFG_BIN:-$ROOT/target/release/bsfg}
NATS=${BSFG_NATS_SERVER:-$ROOT/.tools/bin/nats-server}
WORK=$(mktemp -d /tmp/bsfg-demo.XXXXXX)
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
NATS_PORT=${DEMO_NATS_PORT:-$(free_port)}
NODE_PORT=${DEMO_NODE_PORT:-$(free_port)}
pids=()

cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
say() { printf '   %s\n' "$*"; }

for tool in "$BSFG" "$NATS"; do
  [[ -x $tool ]] || { echo "missing $tool: run 'make setup build' first" >&2; exit 1; }
done

step "Development PKI for zone plant-a (CA, node plant-a-bsfg, producer mes, peer idmz-bsfg)"
"$BSFG" dev-pki --out "$WORK/pki" --zone plant-a --client mes --client idmz-bsfg --client ops | sed 's/^/   /'

step "Zone plant-a: nats-server (JetStream, loopback) and the bsfg node (mTLS on 127.0.0.1:$NODE_PORT)"
cat >"$WORK/nats-server.conf" <<EOF
listen: 127.0.0.1:$NATS_PORT
jetstream { store_dir: "$WORK/jetstream" }
EOF
"$NATS" -c "$WORK/nats-server.conf" >"$WORK/nats.log" 2>&1 &
pids+=($!)
cat >"$WORK/bsfg.toml" <<EOF
zone = "plant-a"
[listen]
address = "127.0.0.1:$NODE_PORT"
[tls]
certificate = "$WORK/pki/plant-a-bsfg.pem"
private_key = "$WORK/pki/plant-a-bsfg.key"
client_ca = "$WORK/pki/ca.pem"
[nats]
url = "nats://127.0.0.1:$NATS_PORT"
[[consumers]]
name = "idmz-operational"
category = "operational"
[[buckets]]
name = "batch-files"
[[access]]
identity = "mes"
append = ["operational"]
assert_zones = ["plant-a"]
put_objects = ["batch-files"]
[[access]]
identity = "idmz-bsfg"
fetch = ["idmz-operational"]
get_objects = ["batch-files"]
[[access]]
identity = "ops"
operator = true
EOF
"$BSFG" check-config --config "$WORK/bsfg.toml" | sed 's/^/   /'
RUST_LOG=info,async_nats=warn "$BSFG" serve --config "$WORK/bsfg.toml" >"$WORK/node.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  grep -q "bsfg node serving" "$WORK/node.log" 2>/dev/null && break
  kill -0 "${pids[-1]}" 2>/dev/null || { cat "$WORK/node.log" >&2; exit 1; }
  sleep 0.1
done
grep -q "bsfg node serving" "$WORK/node.log" || { echo "the node did not start:" >&2; cat "$WORK/node.log" >&2; exit 1; }
say "node is serving"

# call IDENTITY METHOD JSON: one Connect call over HTTP/2 + mTLS as IDENTITY.
call() {
  local service=bsfg.v1.BoundaryService
  [[ $2 == GetObject ]] && service=bsfg.v1.ArtifactService
  curl -sS --cacert "$WORK/pki/ca.pem" --cert "$WORK/pki/$1.pem" --key "$WORK/pki/$1.key" \
    -H 'content-type: application/json' -d "$3" "https://127.0.0.1:$NODE_PORT/$service/$2"
}

fact() { # message_id subject predicate object_json [media_type]
  jq -nc --arg id "$1" --arg s "$2" --arg p "$3" --arg o "$4" --arg mt "${5:-}" \
    '{envelope: ({messageId: $id, fromZone: "plant-a", toZone: "enterprise",
                  producedAtUnixMs: (now * 1000 | floor | tostring)}
                 + (if $mt == "" then {} else {objectMediaType: $mt} end)),
      fact: {subject: $s, predicate: $p, objectJson: $o}}'
}

step "Producer mes stores a batch report in the Object Store (PutObject)"
report=$(printf 'Batch B-1042 release report\nyield: 98.2%%\n' | base64 -w0)
put=$(call mes PutObject "{\"bucket\":\"batch-files\",\"key\":\"B-1042/report.txt\",\"data\":\"$report\",\"mediaType\":\"text/plain\"}")
digest=$(jq -r .digest <<<"$put")
size=$(jq -r .size <<<"$put")
say "stored batch-files/B-1042/report.txt  $digest  $size bytes"

step "Producer mes appends facts (AppendFact); object_json is canonical JSON (RFC 8785)"
append() {
  local reply
  reply=$(call mes AppendFact "$(fact "$@")")
  printf '   %-28s %-18s -> %s\n' "$2 $3" "($1)" "$(jq -c . <<<"$reply")"
}
append evt-1001 batch:B-1042 batch_started '{"line":"L2","recipe":"R-77"}'
append evt-1002 batch:B-1042 step_completed '{"step":1,"temp_c":71.5}'
append evt-1003 batch:B-1042 step_completed '{"step":2,"temp_c":72}'
append evt-1004 batch:B-1042 report_attached \
  "{\"bucket\":\"batch-files\",\"digest\":\"$digest\",\"key\":\"B-1042/report.txt\",\"media_type\":\"text/plain\",\"size\":$size}" text/plain
append evt-1005 batch:B-1042 batch_released '{"released_by":"QA-7"}'

step "Retries are idempotent; a different fact under a used message_id is refused"
append evt-1002 batch:B-1042 step_completed '{"step":1,"temp_c":71.5}'
append evt-1002 batch:B-1042 step_completed '{"step":1,"temp_c":99}'
append evt-1006 batch:B-1042 step_completed '{ "step": 3 }'

page() {
  jq -r '.facts[] | "   offset \(.offset)  \(.envelope.messageId)  \(.fact.subject) \(.fact.predicate) \(.fact.objectJson)"' <<<"$1"
  say "high watermark: $(jq -r .highWatermark <<<"$1")"
}

step "Peer idmz-bsfg fetches a page of 3 from its durable consumer (FetchFacts)"
first=$(call idmz-bsfg FetchFacts '{"consumerName":"idmz-operational","limit":3}')
page "$first"

step "Fetching again without confirming returns the same page"
again=$(call idmz-bsfg FetchFacts '{"consumerName":"idmz-operational","limit":3}')
if [[ $again == "$first" ]]; then say "identical page: yes"; else say "identical page: NO"; exit 1; fi

step "The peer confirms offset 3 (ConfirmReceipt), then fetches the next page"
say "$(call idmz-bsfg ConfirmReceipt '{"consumerName":"idmz-operational","offset":"3"}')"
page "$(call idmz-bsfg FetchFacts '{"consumerName":"idmz-operational","limit":3}')"

step "The peer reads the referenced artifact (GetObject) and checks its digest"
got=$(call idmz-bsfg GetObject '{"bucket":"batch-files","key":"B-1042/report.txt"}')
jq -r .data <<<"$got" | base64 -d | sed 's/^/   | /'
say "digest $(jq -r .digest <<<"$got") (eof: $(jq -r .eof <<<"$got"))"

step "Authorization is by certificate identity: the producer may not read the consumer"
say "$(call mes FetchFacts '{"consumerName":"idmz-operational","limit":3}')"

step "Metrics an operator sees (GET /metrics with the ops certificate)"
curl -sS --cacert "$WORK/pki/ca.pem" --cert "$WORK/pki/ops.pem" --key "$WORK/pki/ops.key" \
  "https://127.0.0.1:$NODE_PORT/metrics" | grep -E '^bsfg_(append|fetch|confirm)_requests_total|^bsfg_rpc_requests_total' | sed 's/^/   /'

step "Done: stopping the node and nats-server, removing $WORK"
