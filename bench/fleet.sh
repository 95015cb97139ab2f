#!/usr/bin/env bash
# What the fleet features cost a login, in one run: login cycles (16 sessions, LOGIN + LOGOUT,
# 2,000 users) through a plain gate, through a gate behind a balancer (every connection starts
# with a PROXY v2 header, as HAProxy's send-proxy-v2), and through a gate with [fleet] on a
# loopback Redis (a lease added and removed per session, the penalty read per login), all in
# front of the instant fake backend, interleaved over ROUNDS rounds (default 3), medians.
# A benchmark, not a test.   bench/fleet.sh [SECONDS_PER_RUN]   (needs redis-server)
set -euo pipefail
cd "$(dirname "$0")/.."
chmod 600 certs/localhost.key
secs=${1:-5}; rounds=${ROUNDS:-3}
work=/tmp/imapgate-bench-fleet; mkdir -p "$work"
ulimit -n 65536 2>/dev/null || true
cargo build --release --quiet --bin imapgate --examples
gate=target/release/imapgate; load=target/release/examples/loadgen; fake=target/release/examples/fakebackend
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; }
trap cleanup EXIT
setsid $fake --listen 127.0.0.1:27143 --messages 1 --size 1024 >/dev/null 2>&1 &
pids+=($!)
setsid redis-server --bind 127.0.0.1 --port 27379 --save "" --appendonly no >/dev/null 2>&1 &
pids+=($!)
for i in $(seq 1 2000); do printf '[[mailbox]]\nalias = "user%d"\n\n' "$i"; done > "$work/mailboxes.toml"
config() { # name port extra_imap4 extra_sections
  printf '[imap4]\nunencrypted_or_tls_bindings = ["127.0.0.1:%s"]\nlogin_type = "plain-text-login"\n%s\n' "$2" "$3" > "$work/$1.toml"
  printf 'max_connections_per_user = 100000\n[directory]\nmailboxes = "%s"\n' "$work/mailboxes.toml" >> "$work/$1.toml"
  printf '[backends.main]\naddress = "127.0.0.1:27143"\n[runtime]\nworker_threads = 1\n%s\n' "$4" >> "$work/$1.toml"
  RUST_LOG=warn setsid $gate --config "$work/$1.toml" >/dev/null 2>>"$work/$1.log" &
  pids+=($!)
}
# The load comes from 127.0.0.1: trusted (no penalty) for the first two; behind the balancer the
# client addresses are the header's (198.51.100.x), trusted too, so all three do the same work.
config plain 27001 'trusted_networks = ["127.0.0.0/8"]' ''
config proxy 27002 'trusted_networks = ["198.51.100.0/24"]
proxy_protocol_from = ["127.0.0.1/32"]' ''
config fleet 27003 'trusted_networks = ["127.0.0.0/8"]' '[fleet]
redis = "redis://127.0.0.1:27379/0"
node = "bench"'
sleep 1.5
out="$work/results.txt"; : > "$out"
run() { # label port [flags]
  local label=$1 port=$2; shift 2
  $load --label "$label" --addr "127.0.0.1:$port" --mode login --sessions 16 --users 2000 \
    --seconds "$secs" "$@" 2>>"$work/loadgen.err" | tee -a "$out"
}
for _ in $(seq "$rounds"); do
  run plain 27001
  run proxy 27002 --proxy-v2
  run fleet 27003
done
python3 - "$out" <<'PY'
import re, sys, statistics
rows = [dict(re.findall(r"(\w+)=(\S+)", l), label=l.split()[0]) for l in open(sys.argv[1]) if l.strip()]
rate = lambda label: statistics.median(float(r["rate"].rstrip("/s")) for r in rows if r["label"] == label)
p, x, f = rate("plain"), rate("proxy"), rate("fleet")
errors = sum(int(r.get("errors", 0)) for r in rows)
print(f"login cycles/s (median of rounds): plain {p:.0f}, behind a balancer (PROXY v2) {x:.0f}, [fleet] on Redis {f:.0f}")
print(f"proxy/plain = {x / p:.2f} (target: no measurable cost), fleet/plain = {f / p:.2f} (target >= 0.9); errors {errors}")
PY
