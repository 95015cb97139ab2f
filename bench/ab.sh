#!/usr/bin/env bash
# A/B: two imapgate binaries side by side, in front of the same Dovecot and the same instant fake
# backend, the loads interleaved round by round (A, B, A, B...), so machine drift falls on both
# alike. Prints the median of each load for A and B and the ratio B/A. A benchmark, not a test.
#   bench/ab.sh OLD_BINARY NEW_BINARY [ROUNDS] [SECONDS]      (defaults: 5 rounds of 3 s)
# Build the old binary in a worktree: git worktree add /tmp/old REV && (cd /tmp/old &&
# cargo build --release --bin imapgate), then bench/ab.sh /tmp/old/target/release/imapgate
# target/release/imapgate.
set -euo pipefail
cd "$(dirname "$0")/.."
chmod 600 certs/localhost.key
a=$(realpath "$1"); b=$(realpath "$2"); rounds=${3:-5}; secs=${4:-3}
work=/tmp/imapgate-ab; mkdir -p "$work"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build --release --quiet --examples
load=target/release/examples/loadgen; fake=target/release/examples/fakebackend
bench/peers.sh start "$work/peers" 2000 >/dev/null
pkill -f "examples/fakebackend --listen 127.0.0.1:20143" 2>/dev/null || true
setsid $fake --listen 127.0.0.1:20143 --messages 1 --size 1048576 >/dev/null 2>&1 &
pids=($!)
cleanup() { kill "${pids[@]}" 2>/dev/null || true; bench/peers.sh stop "$work/peers" >/dev/null 2>&1 || true; }
trap cleanup EXIT
for i in $(seq 1 10000); do printf '[[mailbox]]\nalias = "user%d"\n\n' "$i"; done > "$work/mailboxes.toml"
gate() { # binary name plain_port backend_port
  cat > "$work/$2.toml" <<CONF
[imap4]
unencrypted_or_tls_bindings = ["127.0.0.1:$3"]
login_type = "plain-text-login"
certificate = "$PWD/certs/localhost.pem"
private_key = "$PWD/certs/localhost.key"
trusted_networks = ["127.0.0.0/8"]
max_connections_per_user = 100000
[directory]
mailboxes = "$work/mailboxes.toml"
[backends.main]
address = "127.0.0.1:$4"
[runtime]
worker_threads = 1
CONF
  RUST_LOG=warn setsid "$1" --config "$work/$2.toml" >/dev/null 2>>"$work/$2.log" &
  pids+=($!)
}
gate "$a" a-dovecot 41143 10143; gate "$a" a-fake 42143 20143
gate "$b" b-dovecot 43143 10143; gate "$b" b-fake 44143 20143
sleep 1
declare -A ports=([a-dovecot]=41143 [a-fake]=42143 [b-dovecot]=43143 [b-fake]=44143)
out="$work/results.txt"; : > "$out"
for round in $(seq "$rounds"); do
  for kind in "fetch" "noop --sessions 16 --users 16" "noop --sessions 1" "login --sessions 16 --users 2000 --first-user 2"; do
    for side in a b; do
      for backend in dovecot fake; do
        port=${ports[$side-$backend]}
        $load --label "$backend/$side" --addr "127.0.0.1:$port" --seconds "$secs" --mode $kind >> "$out" 2>>"$work/loadgen.err" || true
      done
    done
  done
done
python3 - "$out" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"(\S+)/(a|b) mode=(\w+).*?sessions=(\d+)?.*?rate=([\d.]+)", line)
    if not m:
        m2 = re.match(r"(\S+)/(a|b) mode=(\w+).*?rate=([\d.]+)", line)
        if not m2:
            continue
        backend, side, mode, rate = m2.groups(); sessions = None
    else:
        backend, side, mode, sessions, rate = m.groups()
    load = mode + ("1" if mode == "noop" and sessions == "1" else "")
    rows.setdefault((load, backend), {}).setdefault(side, []).append(float(rate))
print(f"{'load':<8}{'backend':<10}{'A median':>12}{'B median':>12}{'B/A':>8}  rounds")
for (load, backend), sides in sorted(rows.items()):
    a, b = statistics.median(sides.get("a", [0])), statistics.median(sides.get("b", [0]))
    print(f"{load:<8}{backend:<10}{a:>12.0f}{b:>12.0f}{(b / a if a else 0):>8.2f}  {len(sides.get('a', []))}")
PY
