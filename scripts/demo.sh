#!/usr/bin/env bash
# Placeholder for the end-to-end demo (`make demo`): not yet implemented.
set -euo pipefail
echo "demo not yet implemented" >&2
exit 1
