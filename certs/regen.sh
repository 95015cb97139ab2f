#!/usr/bin/env bash
# Regenerates the DEVELOPMENT-ONLY certificates in this folder: a throwaway CA (ca.pem) and a
# certificate for localhost / 127.0.0.1 / ::1 signed by it (localhost.pem, localhost.key).
# The CA's key is thrown away. Tests and the demo use these; never use them in production.
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
  -subj "/CN=imapgate development CA (do not trust)" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -keyout "$tmp/ca.key" -out ca.pem 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
  -keyout localhost.key -out "$tmp/localhost.csr" 2>/dev/null
printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature" \
  "extendedKeyUsage=serverAuth" "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" > "$tmp/ext"
openssl x509 -req -in "$tmp/localhost.csr" -CA ca.pem -CAkey "$tmp/ca.key" -CAcreateserial \
  -days 3650 -extfile "$tmp/ext" -out localhost.pem 2>/dev/null
chmod 644 localhost.key
echo "wrote $(pwd)/ca.pem, localhost.pem, localhost.key (development only)"
