#!/usr/bin/env bash
# Made the DEVELOPMENT update PKI in this directory (run once; the files are committed so that
# every build machine makes the same images and bundles). Not for production: see README.md.
#   ca.pem / ca.key            "BSFG development update CA", ECDSA P-256, 20 years; ca.pem is the
#                              appliance's RAUC keyring (/etc/rauc/keyring.pem)
#   signing.pem / signing.key  "BSFG development bundle signing", issued by the CA, 20 years,
#                              keyUsage digitalSignature, extendedKeyUsage codeSigning (RAUC's
#                              check-purpose=codesign)
# Usage: image/dev-update-pki/make.sh [DIR]   (refuses to overwrite existing files)
set -euo pipefail
dir=${1:-$(dirname "${BASH_SOURCE[0]}")}
cd "$dir"
for f in ca.pem ca.key signing.pem signing.key; do
    [ ! -e "$f" ] || { echo "make.sh: $dir/$f exists; not overwriting" >&2; exit 1; }
done
days=7305
openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out ca.key
openssl req -new -x509 -key ca.key -out ca.pem -days "$days" -sha256 \
    -subj "/O=BSFG development (NOT FOR PRODUCTION)/CN=BSFG development update CA" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash"
openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out signing.key
openssl req -new -key signing.key -out signing.csr \
    -subj "/O=BSFG development (NOT FOR PRODUCTION)/CN=BSFG development bundle signing"
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
