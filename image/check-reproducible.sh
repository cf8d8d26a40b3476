#!/usr/bin/env bash
# Builds the appliance image twice from scratch (a fresh mmdebstrap root each time, in
# out/repro/1 and out/repro/2) from the same inputs and compares the results: the root hash
# must be the same (exit 1 otherwise); every other artifact (root file system, hash tree, initrd,
# unified kernel image, ESP, data partition, the whole disk) is reported as identical or not.
# Needs root; ~4 min on 2 cores, so it is not part of `make test`. Run: image/check-reproducible.sh
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

R=$OUT/repro
shared_cache=$OUT/cache
rm -rf "$R"
for n in 1 2; do
    step "build $n of 2 (fresh root)"
    OUT=$R/$n BUILD=$R/$n/build CACHE=$shared_cache REBUILD_ROOT=1 "$IMAGE_DIR/build.sh" |
        grep -E 'root hash|done:' || true
done
m1=$(ls "$R"/1/*.manifest.json)
m2=$(ls "$R"/2/*.manifest.json)
h1=$(jq -r .root.root_hash "$m1")
h2=$(jq -r .root.root_hash "$m2")
step "comparison"
same=0
if [ "$h1" = "$h2" ]; then
    say "root hash   identical  $h1"
else
    say "root hash   DIFFERENT  $h1 vs $h2"
    same=1
fi
while read -r file; do
    a=$(jq -r --arg f "$file" '.artifacts[] | select(.file == $f) | .sha256' "$m1")
    b=$(jq -r --arg f "$file" '.artifacts[] | select(.file == $f) | .sha256' "$m2")
    if [ "$a" = "$b" ]; then
        printf '         %-24s identical  %s\n' "$file" "$a"
    else
        printf '         %-24s DIFFERENT  %s vs %s\n' "$file" "$a" "$b"
    fi
done < <(jq -r '.artifacts[].file' "$m1")
if [ "$same" = 0 ]; then
    say "two builds from the same inputs give the same root file system hash"
else
    say "the root hash differs: diff the trees in $R/1/build/rootfs and $R/2/build/rootfs"
fi
exit "$same"
