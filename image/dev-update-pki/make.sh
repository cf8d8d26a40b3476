#!/usr/bin/env bash
# Made the DEVELOPMENT update and Secure Boot keys in this directory (run once; the files are
# committed so that every build machine makes the same images, UKIs and bundles). Not for
# production: see README.md.
#   ca.pem / ca.key            "BSFG development update CA", ECDSA P-256, 20 years; ca.pem is the
#                              appliance's RAUC keyring (/etc/rauc/keyring.pem)
#   signing.pem / signing.key  "BSFG development bundle signing", issued by the CA, 20 years,
#                              keyUsage digitalSignature, extendedKeyUsage codeSigning (RAUC's
#                              check-purpose=codesign)
#   sb-pk.*, sb-kek.*, sb-db.* the Secure Boot platform key, key exchange key and signature
#                              database key ("BSFG development Secure Boot PK|KEK|db"), each a
#                              self-signed RSA 2048 certificate (what UEFI firmware verifies:
#                              Authenticode with RSA 2048/SHA-256), 20 years. sb-db signs
#                              systemd-boot and the UKIs (sbsign); the OVMF variables of the QEMU
#                              tests enroll all three (image/lib.sh, secureboot_vars).
# Usage: image/dev-update-pki/make.sh [DIR]. Makes each set (update PKI, Secure Boot keys) only
# when none of its files exists; never overwrites one, and refuses a set that is half there.
set -euo pipefail
dir=${1:-$(dirname "${BASH_SOURCE[0]}")}
cd "$dir"
days=7305
org="BSFG development (NOT FOR PRODUCTION)"

# missing FILE...: true when none of FILE exists; false when all do; fails when only some do.
missing() {
    local n=0 f
    for f in "$@"; do [ ! -e "$f" ] || n=$((n + 1)); done
    [ "$n" = 0 ] && return 0
    [ "$n" = $# ] && return 1
    echo "make.sh: only some of $* exist in $dir; not overwriting (remove them all to re-make the set)" >&2
    exit 1
}

if missing ca.pem ca.key signing.pem signing.key; then
    openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out ca.key
    openssl req -new -x509 -key ca.key -out ca.pem -days "$days" -sha256 \
        -subj "/O=$org/CN=BSFG development update CA" \
        -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -addext "subjectKeyIdentifier=hash"
    openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out signing.key
    openssl req -new -key signing.key -out signing.csr \
        -subj "/O=$org/CN=BSFG development bundle signing"
    cat >signing.ext <<'EXT'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=codeSigning
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EXT
    openssl x509 -req -in signing.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out signing.pem \
        -days "$days" -sha256 -extfile signing.ext
    rm -f signing.csr signing.ext ca.srl
    chmod 0644 ca.pem signing.pem ca.key signing.key
    openssl verify -CAfile ca.pem -purpose any signing.pem
fi

if missing sb-pk.pem sb-pk.key sb-kek.pem sb-kek.key sb-db.pem sb-db.key; then
    for k in pk:PK kek:KEK db:db; do
        name=sb-${k%%:*}
        openssl req -new -x509 -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.pem" \
            -days "$days" -sha256 -subj "/O=$org/CN=BSFG development Secure Boot ${k#*:}" \
            -addext "basicConstraints=critical,CA:FALSE" \
            -addext "keyUsage=critical,digitalSignature" \
            -addext "subjectKeyIdentifier=hash" 2>/dev/null
        chmod 0644 "$name.pem" "$name.key"
        openssl x509 -in "$name.pem" -noout -subject
    done
fi
