#!/usr/bin/env bash
# A quick check that the benchmark harness itself runs (used by scripts/test.sh; not a benchmark):
# the fake backend, a gate in front of it, and one second of each load through the gate.
set -euo pipefail
cd "$(dirname "$0")/.."
# git keeps no file modes: the development key must be private, or strict modes refuse it.
chmod 600 certs/localhost.key
cargo build --quiet --bin imapgate --examples
work=$(mktemp -d); pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT
target/debug/examples/fakebackend --listen 127.0.0.1:29144 --messages 2 --size 65536 2>/dev/null &
pids+=($!)
cat > "$work/gate.toml" <<CONF
[imap4]
unencrypted_or_tls_bindings = ["127.0.0.1:29143"]
ssl_bindings = ["127.0.0.1:29993"]
login_type = "plain-text-login"
certificate = "$PWD/certs/localhost.pem"
private_key = "$PWD/certs/localhost.key"
trusted_networks = ["127.0.0.0/8"]
[directory]
mailboxes = "mailboxes.toml"
[backends.main]
address = "127.0.0.1:29144"
CONF
# The load's users (names outside the directory are refused by default).
for i in $(seq 1 20); do printf '[[mailbox]]\nalias = "user%d"\n\n' "$i"; done > "$work/mailboxes.toml"
RUST_LOG=warn target/debug/imapgate --config "$work/gate.toml" 2>"$work/gate.log" &
gate=$!
pids+=($gate)
for port in 29144 29143; do
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done
fail=0
for args in "--mode login --sessions 4" "--mode noop --sessions 4" "--mode fetch" \
    "--mode login --sessions 4 --security tls --tls12 --ca certs/ca.pem" "--mode idle --sessions 20 --users 20 --security tls --ca certs/ca.pem --pids $gate"; do
  line=$(target/debug/examples/loadgen --addr "127.0.0.1:$([[ $args == *tls* ]] && echo 29993 || echo 29143)" --seconds 1 $args)
  echo "bench smoke: $line"
  [[ $line == *"errors=0"* ]] || fail=1
  # A memory figure is a measurement of the gate's process, never a placeholder zero.
  if [[ $args == *--pids* ]]; then
    [[ $line =~ rss_before=([0-9]+)KB ]] && ((BASH_REMATCH[1] > 0)) || { echo "bench smoke: no memory figure for the gate" >&2; fail=1; }
  fi
done
exit $fail
