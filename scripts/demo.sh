#!/usr/bin/env bash
# Brings imapgate up in front of a throwaway local Dovecot with demo mailboxes
# (config/imapgate.toml, config/mailboxes.toml): John Smith may use IMAP4, Jane Doe may not.
# Runs in the foreground; Ctrl-C stops the gate and the backend.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v dovecot >/dev/null; then
  [ "$(id -u)" = 0 ] || { echo "install Dovecot first: sudo apt-get install dovecot-imapd" >&2; exit 1; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dovecot-imapd curl >/dev/null
fi
backend=/tmp/imapgate-demo
[ -f "$backend/dovecot.conf" ] && doveadm -c "$backend/dovecot.conf" stop 2>/dev/null || true
scripts/throwaway-dovecot.sh "$backend" 21143 21993 >/dev/null
trap 'doveadm -c "$backend/dovecot.conf" stop 2>/dev/null || true' EXIT
cargo build --quiet
cat <<MSG

imapgate demo: 127.0.0.1:2143 (STARTTLS) and 127.0.0.1:2993 (TLS), backend Dovecot on 21143.
Try, from another shell in $(pwd):
  # John Smith, IMAP4 enabled: prints message 1
  curl --cacert certs/ca.pem 'imaps://localhost:2993/INBOX;UID=1' -u 'john.smith@example.com:pass1'
  curl --cacert certs/ca.pem --ssl-reqd 'imap://localhost:2143/INBOX;UID=1' -u 'jsmith:pass1'
  # Jane Doe, IMAP4 disabled: curl: (67) Login denied
  curl -v --cacert certs/ca.pem 'imaps://localhost:2993/INBOX' -u 'jane.doe@example.com:pass2' 2>&1 | grep 'NO \['
Turn IMAP4 off for John Smith and check (the seed's procedure; edits config/mailboxes.toml):
  target/debug/imapgate --config config/imapgate.toml mailbox set --identity "john.smith@example.com" --imap-enabled false
  target/debug/imapgate --config config/imapgate.toml mailbox get --identity "john.smith@example.com"
  target/debug/imapgate --config config/imapgate.toml mailbox get
  target/debug/imapgate --config config/imapgate.toml sessions

MSG
target/debug/imapgate --config config/imapgate.toml
