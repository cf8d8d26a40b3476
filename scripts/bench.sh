#!/usr/bin/env bash
# Placeholder for the benchmarks (`make bench`): not yet implemented.
set -euo pipefail
echo "bench not yet implemented" >&2
exit 1
