#!/usr/bin/env bash
# Starts the peers imapgate is measured against, on loopback (Debian packages; installs them as
# root when missing):
#   10143  Dovecot 2.3 as the IMAP backend: user1..userN / pass1..passN, user1 holds 20 x 1 MB
#   11143  nginx mail proxy in front of Dovecot (auth_http answered by nginx itself)
#   11144  nginx mail proxy in front of the fake backend (bench/fakebackend.rs on 20143)
#   12143  Dovecot's login proxy in front of Dovecot
#   11993, 11994, 12993  the same proxies with implicit TLS to the client (nginx to Dovecot, nginx
#          to the fake backend, Dovecot's proxy), with certs/localhost.pem like imapgate's; nginx
#          1.22 negotiates TLS 1.2 on these (its default), Dovecot's proxy TLS 1.3
#   11995, 11996  nginx with TLS 1.3 enabled (to Dovecot, to the fake backend)
# Usage: bench/peers.sh start|stop [DIR] [USERS]   (default /tmp/imapgate-peers, 2000 users)
set -euo pipefail
action=${1:-start}; dir=${2:-/tmp/imapgate-peers}; users=${3:-2000}
if [ "$action" = stop ]; then
  for c in backend dproxy; do [ -f "$dir/$c/dovecot.conf" ] && doveadm -c "$dir/$c/dovecot.conf" stop 2>/dev/null || true; done
  [ -f "$dir/nginx/nginx.pid" ] && kill "$(cat "$dir/nginx/nginx.pid")" 2>/dev/null || true
  exit 0
fi
missing=()
command -v dovecot >/dev/null || missing+=(dovecot-imapd)
command -v nginx >/dev/null || missing+=(nginx-light)
[ -e /usr/lib/nginx/modules/ngx_mail_module.so ] || missing+=(libnginx-mod-mail)
if ((${#missing[@]})); then
  [ "$(id -u)" = 0 ] || { echo "needs: ${missing[*]}" >&2; exit 1; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
id imapgate-mail >/dev/null 2>&1 || useradd -r -M -s /usr/sbin/nologin imapgate-mail
uid=$(id -u imapgate-mail); gid=$(id -g imapgate-mail)
certs=$(cd "$(dirname "$0")/../certs" && pwd)
mkdir -p "$dir"/{backend/run,backend/mail,dproxy/run,nginx}
: > "$dir/backend/users"; : > "$dir/dproxy/users"
for i in $(seq 1 "$users"); do
  echo "user$i:{PLAIN}pass$i:$uid:$gid::$dir/backend/mail/user$i::" >> "$dir/backend/users"
  echo "user$i:{PLAIN}pass$i::::::proxy=y host=127.0.0.1 port=10143" >> "$dir/dproxy/users"
done
md="$dir/backend/mail/user1/Maildir"; mkdir -p "$md"/{cur,new,tmp}
if [ -z "$(ls -A "$md/cur")" ]; then
  python3 - "$md" <<'PY'
import sys
md = sys.argv[1]
line = ("imapgate bench payload " * 3)[:76] + "\r\n"
for i in range(20):
    head = f"From: bench@example.com\r\nTo: user1@example.com\r\nSubject: big {i}\r\nMessage-ID: <{i}@bench>\r\n\r\n"
    with open(f"{md}/cur/{1700000000 + i}.M{i}P1.bench:2,S", "w") as f:
        f.write(head + line * (1024 * 1024 // 78))
PY
fi
chown -R "$uid:$gid" "$dir/backend/mail"
common="protocols = imap
listen = 127.0.0.1
default_process_limit = 5000
default_client_limit = 40000
disable_plaintext_auth = no
auth_mechanisms = plain login
login_trusted_networks = 127.0.0.0/8
service auth {
  client_limit = 50000
}
service anvil {
  client_limit = 50000
}"
for c in backend dproxy; do
  port=$([ $c = backend ] && echo 10143 || echo 12143)
  if [ $c = backend ]; then
    db="passdb {
  driver = passwd-file
  args = $dir/backend/users
}
userdb {
  driver = passwd-file
  args = $dir/backend/users
}
mail_location = maildir:~/Maildir
first_valid_uid = 1"
  else
    db="passdb {
  driver = passwd-file
  args = $dir/dproxy/users
}
userdb {
  driver = static
  args = uid=$uid gid=$gid
}"
  fi
  if [ $c = backend ]; then
    tls="ssl = no"; tls_port=0
  else
    tls="ssl = yes
ssl_cert = <$certs/localhost.pem
ssl_key = <$certs/localhost.key"; tls_port=12993
  fi
  cat > "$dir/$c/dovecot.conf" <<CONF
base_dir = $dir/$c/run
instance_name = imapgate-bench-$c
$common
$tls
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $port
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $tls_port
  }
  process_min_avail = 2
  service_count = 0
  client_limit = 20000
}
$db
log_path = $dir/$c/dovecot.log
CONF
  doveadm -c "$dir/$c/dovecot.conf" stop 2>/dev/null || true
  dovecot -c "$dir/$c/dovecot.conf"
done
cat > "$dir/nginx/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_mail_module.so;
worker_processes 1;
pid $dir/nginx/nginx.pid;
error_log $dir/nginx/error.log warn;
events { worker_connections 20000; }
http {
  access_log off;
  server {
    listen 127.0.0.1:18080;
    location /dovecot { add_header Auth-Status OK; add_header Auth-Server 127.0.0.1; add_header Auth-Port 10143; return 204; }
    location /fake { add_header Auth-Status OK; add_header Auth-Server 127.0.0.1; add_header Auth-Port 20143; return 204; }
  }
}
mail {
  server_name bench.local;
  proxy_pass_error_message on;
  imap_capabilities IMAP4rev1 IDLE LITERAL+ SASL-IR ID;
  imap_auth plain login;
  server { listen 127.0.0.1:11143; protocol imap; proxy on; auth_http 127.0.0.1:18080/dovecot; }
  server { listen 127.0.0.1:11144; protocol imap; proxy on; auth_http 127.0.0.1:18080/fake; }
  ssl_certificate $certs/localhost.pem;
  ssl_certificate_key $certs/localhost.key;
  server { listen 127.0.0.1:11993 ssl; protocol imap; proxy on; auth_http 127.0.0.1:18080/dovecot; }
  server { listen 127.0.0.1:11994 ssl; protocol imap; proxy on; auth_http 127.0.0.1:18080/fake; }
  # nginx 1.22 (Debian 12's) speaks TLS 1.2 by default; TLS 1.3, the default from 1.23.4, on these.
  server { listen 127.0.0.1:11995 ssl; ssl_protocols TLSv1.2 TLSv1.3; protocol imap; proxy on; auth_http 127.0.0.1:18080/dovecot; }
  server { listen 127.0.0.1:11996 ssl; ssl_protocols TLSv1.2 TLSv1.3; protocol imap; proxy on; auth_http 127.0.0.1:18080/fake; }
}
CONF
[ -f "$dir/nginx/nginx.pid" ] && kill "$(cat "$dir/nginx/nginx.pid")" 2>/dev/null && sleep 0.5 || true
nginx -c "$dir/nginx/nginx.conf" -p "$dir/nginx" 2>/dev/null
for p in 10143 11143 12143 11993 11995 12993; do
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.1; done
done
echo "peers up in $dir"
