#!/usr/bin/env bash
# The benchmarks behind `make bench`. Each figure is printed next to its anchor measured in the
# same run (a direct JetStream publish; a native JetStream mirror) as a ratio, and written to
# bench/results/. Everything runs on 127.0.0.1 against a nats-server the benchmark starts.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p bench/results
echo "== idempotency mechanism: ingest rate and nats-server memory per million facts"
cargo bench --bench idempotency_memory
echo
echo "== replication: catch-up throughput per sync policy (anchor: native JetStream mirror) and"
echo "   steady-state lag per hop at 1 000 facts/s"
cargo bench --bench replication
echo
echo "== resume after a link that died silently (anchor: the native mirror through the same proxy)"
cargo bench --bench resume
echo
echo "results are in bench/results/"
