#!/usr/bin/env bash
# Starts a throwaway Dovecot (Debian's dovecot-imapd) on loopback as a demo/test IMAP backend.
#   throwaway-dovecot.sh DIR IMAP_PORT IMAPS_PORT [--hold]
# DIR gets the config, users, mail and log. IMAP_PORT is plain IMAP with STARTTLS, IMAPS_PORT
# implicit TLS; both use certs/localhost.pem (development CA: certs/ca.pem).
# Users (password file DIR/users): user1/pass1 (3 messages), user2/pass2, user3/pass3,
# utf8/"pässwörd✓", tricky/'p"a\ss {3}'. Like many installations, it lower-cases user names
# and strips their domain (auth_username_format = %Ln: user2@anything.example is user2), and
# has a master user (helpdesk/masterpw: "user2*helpdesk" logs in as user2): the spellings a
# gate must not let through for a disabled mailbox. COMPRESS=DEFLATE is on (imap_zlib).
# With OAUTH_INTROSPECTION_URL set, OAUTHBEARER and XOAUTH2 tokens are checked there (oauth2
# passdb, RFC 7662 introspection by POST). With HAPROXY_PORT set, a third listener there takes only connections that start with a PROXY
# protocol header (haproxy = yes; haproxy_trusted_networks = 127.0.0.0/8), as behind HAProxy.
# With --hold the script stays in the foreground until its standard input closes, then stops
# Dovecot: a test harness keeps the pipe open and the backend dies with the harness.
set -euo pipefail
dir=$1; port=$2; tls_port=$3; hold=${4:-}
here=$(cd "$(dirname "$0")/.." && pwd)
command -v dovecot >/dev/null || { echo "dovecot not installed (apt-get install dovecot-imapd)" >&2; exit 1; }
mkdir -p "$dir/run" "$dir/mail"
dir=$(cd "$dir" && pwd)
if [ "$(id -u)" = 0 ]; then
  id imapgate-mail >/dev/null 2>&1 || useradd -r -M -s /usr/sbin/nologin imapgate-mail
  uid=$(id -u imapgate-mail); gid=$(id -g imapgate-mail)
  users_as="default_internal_user = dovecot
default_login_user = dovenull"
else
  uid=$(id -u); gid=$(id -g); me=$(id -un)
  users_as="default_internal_user = $me
default_login_user = $me"
fi
{
  for i in 1 2 3; do echo "user$i:{PLAIN}pass$i:$uid:$gid::$dir/mail/user$i::"; done
  echo "utf8:{PLAIN}pässwörd✓:$uid:$gid::$dir/mail/utf8::"
  echo "tricky:{PLAIN}p\"a\\ss {3}:$uid:$gid::$dir/mail/tricky::"
} > "$dir/users"
echo "helpdesk:{PLAIN}masterpw" > "$dir/masters"
md="$dir/mail/user1/Maildir"
mkdir -p "$md/cur" "$md/new" "$md/tmp"
for i in 1 2 3; do
  f="$md/cur/170000000$i.M${i}P1.demo:2,"
  [ -e "$f" ] || printf 'From: demo@example.com\r\nTo: user1@example.com\r\nSubject: Hello %s\r\nMessage-ID: <%s@demo.example.com>\r\n\r\nThis is message %s, delivered by the imapgate demo.\r\n' "$i" "$i" "$i" > "$f"
done
chown -R "$uid:$gid" "$dir/mail"
cat > "$dir/dovecot.conf" <<CONF
base_dir = $dir/run
instance_name = imapgate-backend-$port
$users_as
protocols = imap
listen = 127.0.0.1
disable_plaintext_auth = no
auth_mechanisms = plain login
login_trusted_networks = 127.0.0.0/8
ssl = yes
ssl_cert = <$here/certs/localhost.pem
ssl_key = <$here/certs/localhost.key
ssl_min_protocol = TLSv1.2
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $port
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $tls_port
  }
}
auth_username_format = %Ln
auth_master_user_separator = *
passdb {
  driver = passwd-file
  args = $dir/masters
  master = yes
  result_success = continue
}
passdb {
  driver = passwd-file
  args = $dir/users
}
mail_plugins = \$mail_plugins zlib
protocol imap {
  mail_plugins = \$mail_plugins imap_zlib
}
userdb {
  driver = passwd-file
  args = $dir/users
}
mail_location = maildir:~/Maildir
first_valid_uid = 1
log_path = $dir/dovecot.log
CONF
if [ -n "${OAUTH_INTROSPECTION_URL:-}" ]; then
  # Bearer tokens (OAUTHBEARER, XOAUTH2) checked by RFC 7662 introspection at that URL; the
  # token's "username" must be the login name.
  cat > "$dir/oauth2.conf.ext" <<CONF
introspection_mode = post
introspection_url = $OAUTH_INTROSPECTION_URL
force_introspection = yes
username_attribute = username
active_attribute = active
active_value = true
CONF
  cat >> "$dir/dovecot.conf" <<CONF
auth_mechanisms = plain login oauthbearer xoauth2
passdb {
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = $dir/oauth2.conf.ext
}
CONF
fi
if [ -n "${HAPROXY_PORT:-}" ]; then
  cat >> "$dir/dovecot.conf" <<CONF
haproxy_trusted_networks = 127.0.0.0/8
service imap-login {
  inet_listener imap_haproxy {
    address = 127.0.0.1
    port = $HAPROXY_PORT
    haproxy = yes
  }
}
CONF
fi
if [ "$hold" = "--hold" ]; then
  dovecot -F -c "$dir/dovecot.conf" &
  pid=$!
  trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT
else
  dovecot -c "$dir/dovecot.conf"
fi
for _ in $(seq 400); do  # up to 20 s: a loaded machine starts Dovecot slowly
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.05
done
(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "dovecot did not start; see $dir/dovecot.log" >&2; exit 1; }
echo "ready"
if [ "$hold" = "--hold" ]; then
  cat >/dev/null || true
else
  echo "dovecot backend on 127.0.0.1:$port (STARTTLS) and :$tls_port (TLS); stop: doveadm -c $dir/dovecot.conf stop"
fi
