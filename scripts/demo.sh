#!/usr/bin/env bash
# Brings imapgate up in front of a throwaway local Dovecot with demo mailboxes
# (config/imapgate.toml, config/mailboxes.toml): John Smith may use IMAP4, Jane Doe may not.
# With --ldap the mailboxes live in a throwaway OpenLDAP instead (config/imapgate.ldap.toml,
# scripts/throwaway-slapd.sh: Exchange's attributes, the same three people).
# Runs in the foreground; Ctrl-C stops the gate and the backend.
set -euo pipefail
cd "$(dirname "$0")/.."
config=config/imapgate.toml
ldap=""
case ${1:-} in
  --ldap) ldap=1; config=config/imapgate.ldap.toml ;;
  "") ;;
  *) echo "usage: scripts/demo.sh [--ldap]" >&2; exit 2 ;;
esac
# git keeps no file modes: the development key must be private, or strict modes refuse it.
chmod 600 certs/localhost.key
source scripts/lib/apt.sh
if ! command -v dovecot >/dev/null || ! command -v curl >/dev/null; then
  apt_install "the demo's throwaway backend is a Dovecot, and curl is the demo client" dovecot-imapd curl
fi
if [ -n "$ldap" ] && { [ ! -x /usr/sbin/slapd ] || ! command -v ldapmodify >/dev/null; }; then
  [ "$(id -u)" = 0 ] && echo "slapd slapd/no_configuration boolean true" | debconf-set-selections
  apt_install "the LDAP demo's directory is a throwaway OpenLDAP" slapd ldap-utils
fi
backend=/tmp/imapgate-demo
[ -f "$backend/dovecot.conf" ] && doveadm -c "$backend/dovecot.conf" stop 2>/dev/null || true
echo "starting the throwaway Dovecot backend in $backend (127.0.0.1:21143; as root, its mail belongs to the system user imapgate-mail)"
scripts/throwaway-dovecot.sh "$backend" 21143 21993 >/dev/null
stop_all() {
  doveadm -c "$backend/dovecot.conf" stop 2>/dev/null || true
  [ -f "$backend/ldap/slapd.pid" ] && kill "$(cat "$backend/ldap/slapd.pid")" 2>/dev/null || true
}
trap stop_all EXIT
if [ -n "$ldap" ]; then
  echo "starting the throwaway OpenLDAP directory in $backend/ldap (127.0.0.1:21389 StartTLS, 21636 LDAPS)"
  scripts/throwaway-slapd.sh "$backend/ldap" 21389 21636 >/dev/null
fi
echo "building imapgate (cargo build; the first build takes a few minutes)"
cargo build
# The admin center's demo administrator (config/imapgate.toml: [admin_web] users_file).
if ! target/debug/imapgate --config $config admin-user list 2>/dev/null | grep -q '^admin '; then
  printf 'demo-admin-password\n' > "$backend/admin-password"
  target/debug/imapgate --config $config admin-user add admin \
    --role recipient-management --password-file "$backend/admin-password" >/dev/null
  rm -f "$backend/admin-password"
fi
if [ -n "$ldap" ]; then
  where="protocolSettings in the LDAP directory"
  cat <<MSG

LDAP: John Smith's entry as the directory holds it (watch protocolSettings change):
  ldapsearch -x -LLL -H ldap://127.0.0.1:21389 -D cn=admin,dc=contoso,dc=com -w admin-demo-password -b ou=Staff,dc=contoso,dc=com '(mailNickname=jsmith)' protocolSettings
A change made elsewhere closes the session within 2 s (content synchronization):
  printf 'dn: cn=John Smith,ou=Staff,dc=contoso,dc=com\nchangetype: modify\nadd: protocolSettings\nprotocolSettings: IMAP4§0§1§4§ISO-8859-1§0§1§0§0\n' | ldapmodify -x -H ldap://127.0.0.1:21389 -D cn=admin,dc=contoso,dc=com -w admin-demo-password
MSG
else
  where="config/mailboxes.toml"
fi
cat <<MSG

imapgate demo: 127.0.0.1:2143 (STARTTLS) and 127.0.0.1:2993 (TLS), backend Dovecot on 21143.
Admin center: https://localhost:8443/ (user admin, password demo-admin-password; the certificate
is the development one: trust certs/ca.pem or accept the warning).
Try, from another shell in $(pwd):
  # John Smith, IMAP4 enabled: prints message 1
  curl --cacert certs/ca.pem 'imaps://localhost:2993/INBOX;UID=1' -u 'john.smith@example.com:pass1'
  curl --cacert certs/ca.pem --ssl-reqd 'imap://localhost:2143/INBOX;UID=1' -u 'jsmith:pass1'
  # Jane Doe, IMAP4 disabled: curl: (67) Login denied
  curl -v --cacert certs/ca.pem 'imaps://localhost:2993/INBOX' -u 'jane.doe@example.com:pass2' 2>&1 | grep 'NO \['
Turn IMAP4 off for John Smith and check (the seed's procedure; edits $where):
  target/debug/imapgate --config $config mailbox set --identity "john.smith@example.com" --imap-enabled false
  target/debug/imapgate --config $config mailbox get --identity "john.smith@example.com"
  target/debug/imapgate --config $config mailbox get
  target/debug/imapgate --config $config sessions
  target/debug/imapgate --config $config audit
Or in the browser: Recipients > Mailboxes, select John Smith, Edit, Mailbox features, Disable, Save.

MSG
target/debug/imapgate --config $config
