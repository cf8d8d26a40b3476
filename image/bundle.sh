#!/usr/bin/env bash
# `make bundle`: a signed RAUC bundle (format=verity) from a built image, for the appliance's A/B
# upgrade: out/bsfg-appliance-<version>-x86_64[-debug].raucb and a .raucb.json beside it.
#   manifest  [update] compatible=bsfg-appliance-x86_64, version=<VERSION>, build=<image build id>
#   rootfs    root.img         the erofs root          -> root-a|root-b (raw)
#   verity    root-verity.img  its dm-verity hash tree -> root-a-verity|root-b-verity (raw)
#   uki       uki.tar          uki-a.efi + uki-b.efi (the same kernel, initrd and root hash; the
#                              command line names the slot), installed by the bundle hook:
#   hook.sh   slot-install for class uki: extracts uki-$RAUC_SLOT_BOOTNAME.efi and runs
#             `bsfg boot-backend install-uki <slot> FILE` (-> EFI/Linux/bsfg-<slot>+3.efi)
# Inputs: the image's <base>.parts/ and .manifest.json (image/build.sh; `make bundle` builds the
# image first). Variables: VERSION, DEBUG=1 (the DEBUG image's UKIs: serial console and shell),
# SIGNING_CERT / SIGNING_KEY (file or PKCS#11 URI, for rauc --cert/--key; default: the
# DEVELOPMENT signing key in image/dev-update-pki/), UPDATE_KEYRING (the CA the image trusts and
# the bundle is checked against afterwards; default the development CA), CHECK_KEYRING (check
# against this CA instead: an auditor rebuilding a release with UPDATE_KEYRING=its CA signs with
# the development key, CHECK_KEYRING=image/dev-update-pki/ca.pem), BUNDLE_EXTRA_CMDLINE (appended to both UKIs'
# command lines, e.g. systemd.mask=bsfg.service for a test firmware that cannot become healthy;
# the default output name then ends in -extra-cmdline), BUNDLE=path (the output file),
# SECUREBOOT_DB_CERT/SECUREBOOT_DB_KEY (the Secure Boot db key that signs a UKI made here with the
# extra command line; default the DEVELOPMENT key; it must be the image's).
# Both UKIs in the bundle are signed with the Secure Boot db key (the image's are, by
# image/build.sh; one re-made here is signed here) and checked against the image's db
# certificate: the hook installs the file as it is, and the firmware starts it only if signed.
# The squashfs payload is made deterministically (fixed times, root owner, no xattrs), so the same
# inputs give the same squashfs, the same image checksums and the same verity hash in the signed
# manifest (`rauc info`, .raucb.json): RAUC 1.8 draws the verity salt at random, so the hash tree
# is re-made with a salt derived from the payload and the manifest signed again (file keys only;
# with a PKCS#11 key the salt stays RAUC's). The CMS signature carries its signing time and an
# ECDSA signature a random nonce, so the .raucb file itself differs between runs in its signature
# only (image/reproducible-bundle.sh compares the rest).
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DEBUG=${DEBUG:-0}
BUNDLE_EXTRA_CMDLINE=${BUNDLE_EXTRA_CMDLINE:-}
SIGNING_CERT=${SIGNING_CERT:-$DEV_UPDATE_PKI/signing.pem}
SIGNING_KEY=${SIGNING_KEY:-$DEV_UPDATE_PKI/signing.key}
KEYRING=${UPDATE_KEYRING:-$DEV_UPDATE_PKI/ca.pem}
# The CA the new bundle is checked against: the image's keyring, unless an auditor rebuilding a
# release (UPDATE_KEYRING=the release CA, so the same root) signs with a key of another CA.
CHECK_KEYRING=${CHECK_KEYRING:-$KEYRING}

suffix=
if [ "$DEBUG" = 1 ]; then suffix=debug; fi
BASE=$(image_base "$suffix")
PARTS=$BASE.parts
MANIFEST=$BASE.manifest.json
if [ ! -d "$PARTS" ] || [ ! -f "$MANIFEST" ]; then
    die "no $PARTS: build the image first (make image VERSION=$VERSION DEBUG=$DEBUG)"
fi
for tool in rauc mksquashfs; do
    command -v "$tool" >/dev/null || die "$tool is missing: run image/setup.sh"
done
for f in "$SIGNING_CERT" "$SIGNING_KEY"; do
    case $f in pkcs11:*) ;; *) [ -f "$f" ] || die "no signing certificate or key at $f" ;; esac
done
[ "$(jq -r .version "$MANIFEST")" = "$VERSION" ] || die "$MANIFEST is not version $VERSION"
BUILD_ID=$(jq -r .build_id "$MANIFEST")
ROOTHASH=$(jq -r .root.root_hash "$MANIFEST")
image_keyring=$(jq -r .update_keyring.sha256 "$MANIFEST")
if [ "$image_keyring" != "$(sha256sum "$KEYRING" | cut -d' ' -f1)" ]; then
    die "the image trusts another update keyring (sha256 $image_keyring) than $KEYRING: set UPDATE_KEYRING= as for make image"
fi
# The UKIs must be signed by the db key the image's systemd-boot and UKIs are signed by: a UKI that
# the gateway's firmware refuses would install fine and never boot.
image_db=$(jq -r '.secure_boot.certificates.db.sha256 // empty' "$MANIFEST")
[ -n "$image_db" ] || die "$MANIFEST has no Secure Boot db certificate: rebuild the image (make image)"
[ "$image_db" = "$(sha256sum "$SECUREBOOT_DB_CERT" | cut -d' ' -f1)" ] ||
    die "the image is signed for another Secure Boot db certificate (sha256 $image_db) than $SECUREBOOT_DB_CERT: set SECUREBOOT_DB_CERT=/SECUREBOOT_DB_KEY= as for make image"
name=bsfg-appliance-$VERSION-$ARCH${suffix:+-$suffix}
if [ -n "$BUNDLE_EXTRA_CMDLINE" ]; then name=$name-extra-cmdline; fi
BUNDLE=${BUNDLE:-$OUT/$name.raucb}

step "RAUC bundle $(basename "$BUNDLE") (version $VERSION, build ${BUILD_ID:0:16}, root hash ${ROOTHASH:0:16}...)"
mkdir -p "$OUT"
WORK=$(mktemp -d "$OUT/.bundle.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
C=$WORK/content
mkdir -p "$C" "$WORK/uki"

# The UKIs: the image's, or rebuilt with the extra command line.
for slot in a b; do
    if [ -n "$BUNDLE_EXTRA_CMDLINE" ]; then
        printf '%s %s' "$(cat "$PARTS/cmdline-$slot")" "$BUNDLE_EXTRA_CMDLINE" >"$WORK/cmdline-$slot"
        make_uki "$WORK/uki-$slot.unsigned.efi" "$PARTS/os-release-$slot" "$WORK/cmdline-$slot" \
            "$PARTS/vmlinuz" "$PARTS/initrd.img"
        [ -n "${SECUREBOOT_SOURCE:-}" ] || secureboot_keys_check
        sign_efi "$WORK/uki-$slot.unsigned.efi" "$WORK/uki/uki-$slot.efi"
    else
        cp "$PARTS/uki-$slot.efi" "$WORK/uki/uki-$slot.efi"
        cp "$PARTS/cmdline-$slot" "$WORK/cmdline-$slot"
    fi
    efi_signed_by "$WORK/uki/uki-$slot.efi" "$SECUREBOOT_DB_CERT" ||
        die "uki-$slot.efi is not signed with the Secure Boot db key ($SECUREBOOT_DB_CERT): rebuild the image"
    say "uki-$slot.efi (signed): $(cat "$WORK/cmdline-$slot")"
done
find "$WORK/uki" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
chmod 0644 "$WORK"/uki/*.efi
tar --create --file "$C/uki.tar" --directory "$WORK/uki" --sort=name --format=gnu \
    --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner uki-a.efi uki-b.efi
ln -f "$PARTS/root.img" "$C/root.img" 2>/dev/null || cp "$PARTS/root.img" "$C/root.img"
cp "$PARTS/root.verity" "$C/root-verity.img"
install -m 0755 "$IMAGE_DIR/bundle-hook.sh" "$C/hook.sh"
cat >"$C/manifest.raucm" <<MANIFEST_EOF
[update]
compatible=$RAUC_COMPATIBLE
version=$VERSION
build=$BUILD_ID
description=BSFG appliance firmware $VERSION${suffix:+ ($suffix)}${BUNDLE_EXTRA_CMDLINE:+ + $BUNDLE_EXTRA_CMDLINE}

[bundle]
format=verity

[hooks]
filename=hook.sh

[image.rootfs]
filename=root.img

[image.verity]
filename=root-verity.img

[image.uki]
filename=uki.tar
hooks=install
MANIFEST_EOF
chmod 0644 "$C/root.img" "$C/root-verity.img" "$C/uki.tar" "$C/manifest.raucm"

# fixed_verity_salt FILE: RAUC 1.8 draws the verity salt of a bundle at random, so two bundles
# of the same payload get different verity hashes. This re-makes FILE's hash tree with a salt
# derived from the payload (the sha256 of the squashfs) and signs the manifest with the new salt
# and hash again (openssl cms, the flags RAUC uses: binary, attached, no S/MIME capabilities).
# Bundle layout (RAUC 1.8, format=verity): squashfs | hash tree | CMS signature | its size (u64
# big-endian). Done only when the tree RAUC made is the one veritysetup makes (checked first) and
# the signing key is a file; otherwise FILE keeps RAUC's random salt. Returns 1 if not done.
fixed_verity_salt() {
    local file=$1 size sig_size sig_at verity_size data_size salt old_salt old_hash new_hash
    size=$(stat -c %s "$file")
    sig_size=$(tail -c 8 "$file" | od -An -tu8 --endian=big | tr -d ' ')
    sig_at=$((size - 8 - sig_size))
    tail -c +$((sig_at + 1)) "$file" | head -c "$sig_size" >"$WORK/sig.der"
    openssl cms -verify -noverify -binary -inform DER -in "$WORK/sig.der" -out "$WORK/signed.raucm" 2>/dev/null ||
        return 1
    verity_size=$(sed -n 's/^verity-size=//p' "$WORK/signed.raucm")
    old_salt=$(sed -n 's/^verity-salt=//p' "$WORK/signed.raucm")
    old_hash=$(sed -n 's/^verity-hash=//p' "$WORK/signed.raucm")
    data_size=$((sig_at - verity_size))
    [ -n "$verity_size" ] && [ $((data_size % 4096)) = 0 ] || return 1
    head -c "$sig_at" "$file" >"$WORK/payload"
    # The tree RAUC made must be the one veritysetup makes from the same salt.
    veritysetup verify "$WORK/payload" "$WORK/payload" "$old_hash" --no-superblock --hash-offset="$data_size" \
        --data-blocks=$((data_size / 4096)) --salt="$old_salt" >/dev/null 2>&1 || return 1
    salt=$(head -c "$data_size" "$WORK/payload" | sha256sum | cut -d' ' -f1)
    veritysetup format "$WORK/payload" "$WORK/payload" --no-superblock --hash-offset="$data_size" \
        --data-blocks=$((data_size / 4096)) --salt="$salt" >"$WORK/verity.txt" 2>&1 || return 1
    new_hash=$(sed -n 's/^Root hash:[[:space:]]*//p' "$WORK/verity.txt")
    [ "$(stat -c %s "$WORK/payload")" = "$sig_at" ] && [ -n "$new_hash" ] || return 1
    sed -e "s/^verity-salt=.*/verity-salt=$salt/" -e "s/^verity-hash=.*/verity-hash=$new_hash/" \
        "$WORK/signed.raucm" >"$WORK/resigned.raucm"
    openssl cms -sign -binary -nodetach -nosmimecap -md sha256 -signer "$SIGNING_CERT" -inkey "$SIGNING_KEY" \
        -outform DER -in "$WORK/resigned.raucm" -out "$WORK/sig2.der" 2>"$WORK/cms.log" || return 1
    python3 -c 'import os, struct, sys; sys.stdout.buffer.write(struct.pack(">Q", os.path.getsize(sys.argv[1])))' \
        "$WORK/sig2.der" >"$WORK/sig2.size"
    cat "$WORK/payload" "$WORK/sig2.der" "$WORK/sig2.size" >"$file.salted"
    mv "$file.salted" "$file"
    rm -f "$WORK/payload"
}

step "rauc bundle (signing with $(basename "$SIGNING_CERT"))"
rm -f "$BUNDLE" "$BUNDLE.tmp"
rauc bundle --cert="$SIGNING_CERT" --key="$SIGNING_KEY" \
    --mksquashfs-args="-all-time $SOURCE_DATE_EPOCH -mkfs-time $SOURCE_DATE_EPOCH -no-xattrs" \
    "$C" "$BUNDLE.tmp" >"$WORK/rauc.log" 2>&1 || { cat "$WORK/rauc.log" >&2; die "rauc bundle failed"; }
salt_source="derived from the payload (the same for the same inputs)"
case $SIGNING_KEY in
pkcs11:*) salt_source="drawn at random by RAUC 1.8 (PKCS#11 key: not re-signed here)" ;;
*) fixed_verity_salt "$BUNDLE.tmp" || salt_source="drawn at random by RAUC 1.8 (the re-made tree or signature failed: kept RAUC's)" ;;
esac
# Checked as the appliance checks it: its keyring and check-purpose=codesign
# (image/rootfs/etc/rauc/system.conf).
cat >"$WORK/check.conf" <<CONF_EOF
[system]
compatible=$RAUC_COMPATIBLE
bootloader=noop
[keyring]
path=$CHECK_KEYRING
check-purpose=codesign
CONF_EOF
rauc --conf="$WORK/check.conf" info --output-format=json "$BUNDLE.tmp" >"$WORK/info.json" 2>"$WORK/info.log" ||
    { cat "$WORK/info.log" >&2; die "the new bundle does not verify against $CHECK_KEYRING (check-purpose=codesign)"; }
rauc --conf="$WORK/check.conf" info "$BUNDLE.tmp" 2>/dev/null >"$WORK/info.txt"
# The payload against the signed verity hash, as RAUC checks it before an extraction.
rauc --conf="$WORK/check.conf" extract "$BUNDLE.tmp" "$WORK/extracted" >"$WORK/extract.log" 2>&1 ||
    { cat "$WORK/extract.log" >&2; die "RAUC refuses the new bundle's payload"; }
rm -rf "$WORK/extracted"
verity_of() { sed -n "s/^ *Verity $1:[[:space:]]*'\{0,1\}\([0-9a-f]*\)'\{0,1\}.*/\1/p" "$WORK/info.txt"; }
mv "$BUNDLE.tmp" "$BUNDLE"

jq -n --arg file "$(basename "$BUNDLE")" --arg sha "$(sha256sum "$BUNDLE" | cut -d' ' -f1)" \
    --arg version "$VERSION" --arg build "$BUILD_ID" --arg compatible "$RAUC_COMPATIBLE" \
    --arg roothash "$ROOTHASH" --arg extra "$BUNDLE_EXTRA_CMDLINE" --argjson debug "$DEBUG" \
    --arg image "$(basename "$BASE").img" \
    --arg signer "$(case $SIGNING_CERT in pkcs11:*) echo "$SIGNING_CERT" ;; *) openssl x509 -in "$SIGNING_CERT" -noout -subject | sed 's/^subject=//' ;; esac)" \
    --arg cmdline_a "$(cat "$WORK/cmdline-a")" --arg cmdline_b "$(cat "$WORK/cmdline-b")" \
    --slurpfile info "$WORK/info.json" --arg vhash "$(verity_of Hash)" --arg vsalt "$(verity_of Salt)" \
    --arg saltsource "$salt_source" \
    --arg sbdb "$(openssl x509 -in "$SECUREBOOT_DB_CERT" -noout -subject | sed 's/^subject=//')" \
    --arg ukiasha "$(sha256sum "$WORK/uki/uki-a.efi" | cut -d' ' -f1)" \
    --arg ukibsha "$(sha256sum "$WORK/uki/uki-b.efi" | cut -d' ' -f1)" \
    '{file: $file, sha256: $sha, compatible: $compatible, version: $version, build: $build,
      from_image: $image, debug: ($debug == 1), root_hash: $roothash, signer: $signer,
      extra_cmdline: (if $extra == "" then null else $extra end),
      cmdline: {a: $cmdline_a, b: $cmdline_b},
      uki: {signed_by: $sbdb, "uki-a.efi": $ukiasha, "uki-b.efi": $ukibsha},
      payload_sha256: ([$info[0].images[] | to_entries[] | {(.key): .value.checksum}] | add),
      verity: {hash: $vhash, salt: $vsalt, salt_source: $saltsource},
      rauc_info: $info[0]}' >"$BUNDLE.json"
step "done: $BUNDLE"
say "$(du -h "$BUNDLE" | cut -f1), sha256 $(jq -r .sha256 "$BUNDLE.json")"
say "images: $(jq -r '.payload_sha256 | to_entries | map("\(.key) \(.value[0:16])…") | join(", ")' "$BUNDLE.json") (the same for the same inputs)"
say "verity hash $(jq -r .verity.hash "$BUNDLE.json"), salt $salt_source"
case $SIGNING_KEY in
"$DEV_UPDATE_PKI"/*) printf '\033[1;31m%s\033[0m\n' "WARNING: signed with the DEVELOPMENT key (image/dev-update-pki): for development and test appliances only" >&2 ;;
esac
