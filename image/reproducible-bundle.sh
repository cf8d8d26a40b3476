#!/usr/bin/env bash
# `make reproducible-bundle` (a phase of `make test`): the signed firmware bundle does not depend
# on where it was built. Builds the image and the bundle here (image/build.sh reuses out/ when
# its inputs are unchanged), then again from a copy of this checkout in another directory with
# another CARGO_HOME (scripts/reproducible.sh makes the copy and builds its static binary there;
# the copy builds its own root from scratch and reuses only the downloaded kernel package of
# out/cache), and fails unless:
#   - the root file system, its dm-verity hash tree and root hash, the initrd, the kernel, both
#     slots' unified kernel images, the image manifest (every artifact's sha256, the whole disk
#     image and its bmap included) and the bundle's .raucb.json (but the signed file's sha256)
#     are identical;
#   - the bundles are byte-identical outside the CMS signature (squashfs payload and verity hash
#     tree), the manifests they sign are byte-identical, and the signatures differ only where a
#     signature must (see below);
#   - no build-machine path (either checkout's directory, either CARGO_HOME) is in the firmware:
#     both bsfg binaries, every file of the root (extracted from the erofs), the initrd
#     (decompressed), the UKIs, the disk image (ESP, data partition), the signed manifests.
# The CMS signature is not reproducible, by design: the signing key is ECDSA (OpenSSL 3.0 draws
# a random nonce: no deterministic ECDSA before 3.2) and CMS signs its signing time; a release is
# signed in an HSM an auditor never holds anyway. So the signatures' structure is compared with
# the signature value and the signing time masked (`openssl cms -cmsout -print`): same signer,
# certificates, algorithms and message digest of the same signed manifest. image/README.md,
# "Reproducibility", says how an auditor re-runs this against a released bundle.
# ELSEWHERE=dir: the copy scripts/reproducible.sh left with REPRODUCIBLE_WORK=dir (make test does
# this: the static binary is not built a third time); without it, scripts/reproducible.sh makes
# one in a temporary directory (removed at the end). Needs root (image/build.sh) and the static
# binary here (make static). Ends with "reproducible-bundle: N identical, N different, N leaks".
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ "$(id -u)" -eq 0 ] || die "image/reproducible-bundle.sh needs root (image/build.sh)"
HERE_CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}
HERE_NATS=${NATS_BIN:-$ROOT/.tools/bin/nats-server}
# The downloaded kernel package: the one input both builds share (image/build.sh's CACHE).
KERNEL_CACHE=${CACHE:-$OUT/cache}

if [ -n "${ELSEWHERE:-}" ]; then
    work=$(cd "$ELSEWHERE" && pwd)
else
    work=$(mktemp -d /tmp/bsfg-reproducible.XXXXXX)
    # Kept when the check fails, to look into.
    trap 'if [ "${passed:-0}" = 1 ]; then rm -rf "$work"; else echo "kept: $work" >&2; fi' EXIT
    step "the static binary elsewhere (scripts/reproducible.sh)"
    REPRODUCIBLE_WORK=$work "$ROOT/scripts/reproducible.sh" | tail -3
fi
COPY=$work/elsewhere/checkout
COPY_CARGO_HOME=$work/cargo-home
[ -x "$COPY/target/x86_64-unknown-linux-musl/release/bsfg" ] ||
    die "no static binary built in $COPY (scripts/reproducible.sh failed, or ELSEWHERE= is not its REPRODUCIBLE_WORK)"
T=$work/bundle-check
rm -rf "$T"
mkdir -p "$T"

# Both builds: the non-DEBUG image, the development key and keyring, whatever the caller's
# environment says (what is compared is the content; signing is compared apart).
clean_env=(env -u OUT -u BUILD -u CACHE -u BSFG_BIN -u SIGNING_CERT -u SIGNING_KEY -u UPDATE_KEYRING -u CHECK_KEYRING
    -u BUNDLE -u BUNDLE_EXTRA_CMDLINE -u ZONE_DIR -u FORCE -u REBUILD_ROOT -u CARGO_TARGET_DIR
    DEBUG=0 NATS_BIN="$HERE_NATS")
# build_and_bundle NAME DIR [VAR=VALUE...]: image/build.sh and image/bundle.sh in checkout DIR,
# logged to $T/NAME.log; prints the lines that say what happened.
build_and_bundle() {
    local name=$1 dir=$2
    shift 2
    if ! (cd "$dir" && "${clean_env[@]}" "$@" image/build.sh && "${clean_env[@]}" "$@" image/bundle.sh) \
        >"$T/$name.log" 2>&1; then
        tail -40 "$T/$name.log" >&2
        die "the $name build failed (log: $T/$name.log)"
    fi
    sed 's/\x1b\[[0-9;]*m//g' "$T/$name.log" | grep -E 'up to date|inputs unchanged|root hash [0-9a-f]{64}$|^\[.*\] done:' |
        sed 's/^/         /' || true
}

start=$SECONDS
step "here: image and bundle in $ROOT (CARGO_HOME=$HERE_CARGO_HOME)"
build_and_bundle here "$ROOT" OUT="$OUT" CACHE="$KERNEL_CACHE"
here_seconds=$((SECONDS - start))
start=$SECONDS
step "elsewhere: image (its own root) and bundle in $COPY (CARGO_HOME=$COPY_CARGO_HOME)"
build_and_bundle elsewhere "$COPY" CARGO_HOME="$COPY_CARGO_HOME" CACHE="$KERNEL_CACHE"
elsewhere_seconds=$((SECONDS - start))
say "here ${here_seconds}s, elsewhere ${elsewhere_seconds}s"

NAME=$(basename "$(image_base "")")
H=$OUT/$NAME
E=$COPY/out/$NAME
identical=0
different=0
# same LABEL FILE_HERE FILE_ELSEWHERE: compares two files byte for byte and says so.
same() {
    if cmp -s "$2" "$3"; then
        identical=$((identical + 1))
        printf '         %-36s identical  %s\n' "$1" "$(sha256sum "$2" | cut -c1-16)…"
        return 0
    fi
    different=$((different + 1))
    printf '         %-36s DIFFERENT  %s vs %s (%s)\n' "$1" "$(sha256sum "$2" | cut -c1-16)…" \
        "$(sha256sum "$3" | cut -c1-16)…" "$(cmp "$2" "$3" 2>&1 | head -1)"
    return 1
}

step "comparison: here vs elsewhere"
h_hash=$(jq -r .root.root_hash "$H.manifest.json")
e_hash=$(jq -r .root.root_hash "$E.manifest.json")
if [ "$h_hash" = "$e_hash" ]; then
    identical=$((identical + 1))
    printf '         %-36s identical  %s\n' "verity root hash" "$h_hash"
else
    different=$((different + 1))
    printf '         %-36s DIFFERENT  %s vs %s\n' "verity root hash" "$h_hash" "$e_hash"
fi
for f in root.img root.verity initrd.img vmlinuz uki-a.efi uki-b.efi cmdline-a cmdline-b; do
    same "parts/$f" "$H.parts/$f" "$E.parts/$f" || true
done
# The manifest as the build wrote it: image/test.sh adds what it measured on a boot (.measured)
# to the image it tested, which is not a build output.
jq -S 'del(.measured)' "$H.manifest.json" >"$T/here.manifest.json"
jq -S 'del(.measured)' "$E.manifest.json" >"$T/elsewhere.manifest.json"
if ! same "image manifest (but .measured)" "$T/here.manifest.json" "$T/elsewhere.manifest.json"; then
    diff "$T/here.manifest.json" "$T/elsewhere.manifest.json" | head -20 | sed 's/^/           /' || true
    if ! cmp -s "$H.parts/root.img" "$E.parts/root.img"; then
        say "  package versions (the Debian archive may have changed since out/build's root was made: REBUILD_ROOT=1):"
        diff <(jq -r '.packages[] | "\(.name) \(.version)"' "$H.manifest.json") \
            <(jq -r '.packages[] | "\(.name) \(.version)"' "$E.manifest.json") | head -10 | sed 's/^/           /' || true
    fi
fi
# The bundle: RAUC 1.8 verity format = squashfs | hash tree | CMS signature | its size (u64 BE).
# split_bundle BUNDLE PREFIX: PREFIX.payload (everything before the signature), PREFIX.cms.
split_bundle() {
    local size sig_size sig_at
    size=$(stat -c %s "$1")
    sig_size=$(tail -c 8 "$1" | od -An -tu8 --endian=big | tr -d ' ')
    sig_at=$((size - 8 - sig_size))
    head -c "$sig_at" "$1" >"$2.payload"
    tail -c +$((sig_at + 1)) "$1" | head -c "$sig_size" >"$2.cms"
    # The signed manifest; the signature itself was checked by image/bundle.sh (rauc info with the
    # keyring, check-purpose=codesign).
    openssl cms -verify -noverify -binary -inform DER -in "$2.cms" -out "$2.raucm" 2>/dev/null ||
        die "no signed manifest in $1"
    # The CMS structure with what differs between two signings masked: the signer's signature
    # value (ECDSA) and its signing time. (mawk: no {n} in regular expressions.)
    openssl cms -cmsout -print -inform DER -in "$2.cms" |
        awk '/^ *signerInfos:/ { signer = 1 }
             signer && /^ *signature: *$/ { print; print "          <masked>"; skip = 1; next }
             skip && /^ *[0-9a-f][0-9a-f][0-9a-f][0-9a-f] - / { next }
             { skip = 0 }
             signer && /object: signingTime/ { print; time = 1; next }
             time && /UTCTIME|GENERALIZEDTIME/ { sub(/:.*/, ":<masked>"); print; time = 0; next }
             { print }' >"$2.cms.txt"
}
split_bundle "$H.raucb" "$T/here"
split_bundle "$E.raucb" "$T/elsewhere"
same "bundle outside the signature" "$T/here.payload" "$T/elsewhere.payload" || true
signed_same=1
if ! same "bundle's signed manifest" "$T/here.raucm" "$T/elsewhere.raucm"; then
    signed_same=0
    diff "$T/here.raucm" "$T/elsewhere.raucm" | head -10 | sed 's/^/           /' || true
fi
# (The CMS holds the signed manifest: its differences are shown above.)
if ! same "signature, value and time masked" "$T/here.cms.txt" "$T/elsewhere.cms.txt" && [ "$signed_same" = 1 ]; then
    diff "$T/here.cms.txt" "$T/elsewhere.cms.txt" | head -10 | sed 's/^/           /' || true
fi
jq 'del(.sha256)' "$H.raucb.json" >"$T/here.raucb.json"
jq 'del(.sha256)' "$E.raucb.json" >"$T/elsewhere.raucb.json"
if ! same ".raucb.json (but the file's sha256)" "$T/here.raucb.json" "$T/elsewhere.raucb.json"; then
    diff "$T/here.raucb.json" "$T/elsewhere.raucb.json" | head -10 | sed 's/^/           /' || true
fi
if cmp -s "$H.raucb" "$E.raucb"; then
    say "whole .raucb                         identical (the same signature bytes)"
elif [ "$different" -eq 0 ]; then
    say "whole .raucb                         differs in the CMS signature only (expected: ECDSA nonce, signing time)"
fi

step "no build-machine path in the firmware"
paths=()
for p in "$ROOT" "$HERE_CARGO_HOME" "$COPY" "$COPY_CARGO_HOME"; do
    for q in "$p" "$(realpath -m "$p")"; do
        [ "${#q}" -gt 1 ] || continue
        [[ " ${paths[*]} " == *" $q "* ]] || paths+=("$q")
    done
done
greps=()
for p in "${paths[@]}"; do greps+=(-e "$p"); done
say "looking for: ${paths[*]}"
leaks=0
# leak LABEL FILE...: fails if a path is in one of the files (raw bytes, as strings(1) sees them).
leak() {
    local label=$1 found
    shift
    found=$(grep -aoF "${greps[@]}" "$@" 2>/dev/null | sort | uniq -c | head -5 || true)
    if [ -n "$found" ]; then
        leaks=$((leaks + 1))
        printf '         %-36s LEAK\n' "$label"
        printf '%s\n' "$found" | sed 's/^/           /'
    else
        printf '         %-36s clean\n' "$label"
    fi
}
leak "bsfg binary here" "$ROOT/target/x86_64-unknown-linux-musl/release/bsfg"
leak "bsfg binary elsewhere" "$COPY/target/x86_64-unknown-linux-musl/release/bsfg"
# Each build's root (one extraction when both are the same file system).
roots=(here)
cmp -s "$H.parts/root.img" "$E.parts/root.img" || roots+=(elsewhere)
for side in "${roots[@]}"; do
    if [ "$side" = here ]; then base=$H; else base=$E; fi
    rm -rf "$T/root-$side"
    fsck.erofs --extract="$T/root-$side" --preserve "$base.parts/root.img" >/dev/null 2>"$T/fsck-$side.log" ||
        die "fsck.erofs cannot extract $base.parts/root.img: $(tail -3 "$T/fsck-$side.log")"
    files=$(find "$T/root-$side" -type f | wc -l)
    found=$(grep -rlaF -D skip "${greps[@]}" "$T/root-$side" | sed "s|^$T/root-$side||" | head -5 || true)
    if [ -n "$found" ]; then
        leaks=$((leaks + 1))
        printf '         %-36s LEAK in %s\n' "root file system ($side, $files files)" "$(echo "$found" | tr '\n' ' ')"
    else
        printf '         %-36s clean\n' "root file system ($side, $files files)"
    fi
    rm -rf "$T/root-$side"
    zstd -dcq "$base.parts/initrd.img" >"$T/initrd-$side.cpio"
    leak "initrd ($side, decompressed)" "$T/initrd-$side.cpio"
    rm -f "$T/initrd-$side.cpio"
done
# The disk image's ESP and data partition (the roots are checked above, slot b is empty), once
# when both images are the same (the manifests compare their sha256).
images=("$H.img")
cmp -s "$T/here.manifest.json" "$T/elsewhere.manifest.json" || images+=("$E.img")
for img in "${images[@]}"; do
    side=here
    [ "$img" = "$H.img" ] || side=elsewhere
    for part in esp data; do
        read -r offset size < <(part_offset "$img" "$part")
        dd if="$img" of="$T/$part.img" bs=4M iflag=skip_bytes,count_bytes skip="$offset" count="$size" conv=sparse status=none
    done
    leak "ESP and data partition ($side)" "$T/esp.img" "$T/data.img"
    rm -f "$T/esp.img" "$T/data.img"
done
leak "UKIs (here, elsewhere)" "$H.parts"/uki-?.efi "$E.parts"/uki-?.efi
leak "signed manifests" "$T/here.raucm" "$T/elsewhere.raucm"
leak "image manifests, .raucb.json" "$H.manifest.json" "$E.manifest.json" "$H.raucb.json" "$E.raucb.json"

echo "reproducible-bundle: $identical identical, $different different, $leaks leaks"
if [ "$different" -ne 0 ] || [ "$leaks" -ne 0 ]; then
    say "FAIL: the firmware depends on where it was built (logs and extracted parts: $T)"
    exit 1
fi
say "ok: the same bundle from $ROOT and from $COPY, no build-machine path in it"
passed=1
