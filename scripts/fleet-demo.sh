#!/usr/bin/env bash
# A fleet of gates on one machine, all on loopback, under /tmp/imapgate-fleet:
#
#   clients --> HAProxy 127.0.0.1:3143 (STARTTLS) / :3993 (TLS)      config/haproxy.cfg
#                 |  send-proxy-v2, health checks on the greeting
#                 +--> gate A :3243/:3293   config/fleet/gate-a.toml
#                 +--> gate B :3343/:3393   config/fleet/gate-b.toml
#                        |  sessions, penalty, changes: Redis 127.0.0.1:3679
#                        +--> Dovecot mbx1 :3444 | Dovecot mbx2 :3544 (PROXY v2, failover)
#
#   scripts/fleet-demo.sh           starts it all, says what to try; Ctrl-C stops it all
#   scripts/fleet-demo.sh --start   starts it all in the background and returns (the tests)
#   scripts/fleet-demo.sh --stop    stops what --start started
# The gates are target/debug/imapgate (IMAPGATE_BIN to use another build); the directory is a
# copy of config/mailboxes.toml (John Smith enabled, Jane Doe disabled) both gates read.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=/tmp/imapgate-fleet
bin=${IMAPGATE_BIN:-target/debug/imapgate}
mode=${1:-}

stop_all() {
  for name in haproxy gate-a gate-b redis; do
    if [ -f "$dir/$name.pid" ]; then
      kill "$(cat "$dir/$name.pid")" 2>/dev/null || true
      rm -f "$dir/$name.pid"
    fi
  done
  for mbx in mbx1 mbx2; do
    [ -f "$dir/$mbx/dovecot.conf" ] && doveadm -c "$dir/$mbx/dovecot.conf" stop 2>/dev/null || true
  done
}

wait_port() { # port what: until something listens there (without connecting to it)
  for _ in $(seq 400); do
    [ -n "$(ss -Hltn "sport = :$1")" ] && return 0
    sleep 0.05
  done
  echo "$2 did not listen on 127.0.0.1:$1 (logs in $dir)" >&2
  exit 1
}

case $mode in
  --stop) stop_all; exit 0 ;;
  --start|"") ;;
  *) echo "usage: scripts/fleet-demo.sh [--start|--stop]" >&2; exit 2 ;;
esac
# git keeps no file modes: the development key must be private, or strict modes refuse it.
chmod 600 certs/localhost.key
source scripts/lib/apt.sh
need=()
command -v dovecot >/dev/null || need+=(dovecot-imapd)
command -v redis-server >/dev/null || need+=(redis-server)
command -v haproxy >/dev/null || need+=(haproxy)
if ((${#need[@]})); then
  apt_install "the fleet demo runs HAProxy, Redis and two Dovecots" "${need[@]}"
fi
[ -x "$bin" ] || cargo build
stop_all
mkdir -p "$dir"
cp config/mailboxes.toml "$dir/mailboxes.toml"
chmod 644 "$dir/mailboxes.toml"
redis-server --bind 127.0.0.1 --port 3679 --save "" --appendonly no --daemonize yes \
  --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" </dev/null >/dev/null 2>&1
wait_port 3679 redis-server
HAPROXY_PORT=3444 scripts/throwaway-dovecot.sh "$dir/mbx1" 3443 3493 </dev/null >/dev/null 2>>"$dir/mbx1.log" ||
  { cat "$dir/mbx1.log" >&2; exit 1; }
HAPROXY_PORT=3544 scripts/throwaway-dovecot.sh "$dir/mbx2" 3543 3593 </dev/null >/dev/null 2>>"$dir/mbx2.log" ||
  { cat "$dir/mbx2.log" >&2; exit 1; }
for gate in gate-a gate-b; do
  RUST_LOG=${RUST_LOG:-info} "$bin" --config "config/fleet/$gate.toml" </dev/null >/dev/null 2>>"$dir/$gate.log" &
  echo $! > "$dir/$gate.pid"
done
wait_port 3243 "gate A"
wait_port 3343 "gate B"
haproxy -f config/haproxy.cfg -D -p "$dir/haproxy.pid" </dev/null >>"$dir/haproxy.log" 2>&1
wait_port 3143 haproxy
if [ "$mode" = --start ]; then
  echo "ready"
  exit 0
fi
trap stop_all EXIT
cat <<MSG

The fleet is up: HAProxy on 127.0.0.1:3143 (STARTTLS) and :3993 (TLS), gates A and B behind it.
Try, from another shell in $(pwd):
  curl --cacert certs/ca.pem 'imaps://localhost:3993/INBOX;UID=1' -u 'jsmith:pass1'
  target/debug/imapgate --config config/fleet/gate-a.toml sessions --fleet
  target/debug/imapgate --config config/fleet/gate-b.toml mailbox set --identity jsmith --imap-enabled false
  target/debug/imapgate --config config/fleet/gate-a.toml backends
  kill \$(cat $dir/gate-a.pid)        # clients reconnect through HAProxy to gate B
  doveadm -c $dir/mbx1/dovecot.conf stop   # logins fail over to mbx2
Logs: $dir/*.log. Ctrl-C stops everything.

MSG
while true; do sleep 3600; done
