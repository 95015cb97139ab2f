#!/usr/bin/env bash
# Measures imapgate against direct access, nginx's mail proxy and Dovecot's login proxy, all in one
# run on this machine, and prints ratios to direct. A benchmark, not a test: nothing here runs in
# `cargo test`. Needs root on a fresh machine (installs Dovecot and nginx through bench/peers.sh).
#   bench/compare.sh [SECONDS_PER_RUN] [IDLE_SESSIONS...]     (defaults: 5, 3000 9000)
# ONLY=throughput, ONLY=sizes, ONLY=idle or ONLY=reload runs one part. The reload part holds the largest idle
# count in IDLE, runs a login storm and sends SIGHUP five times meanwhile (flipping a mailbox that
# no session uses); every held session and every login must survive.
set -euo pipefail
cd "$(dirname "$0")/.."
# git keeps no file modes: the development key must be private, or strict modes refuse it.
chmod 600 certs/localhost.key
secs=${1:-5}; shift || true
idle_counts=("${@:-3000 9000}"); read -r -a idle_counts <<< "${idle_counts[*]}"
work=/tmp/imapgate-bench; mkdir -p "$work"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build --release --quiet --bin imapgate --examples
gate=target/release/imapgate; load=target/release/examples/loadgen; fake=target/release/examples/fakebackend
bench/peers.sh start "$work/peers" 2000 >/dev/null
# Every server runs in a session of its own (`setsid`), as nginx and Dovecot do when they
# daemonize and as systemd starts a service: with the kernel's autogroup scheduling (on by
# default) each session is scheduled as one group, so a gate started in this script's session
# would share its CPU share with the fake backend and the load generator while nginx had a
# share of its own (measured: NOOP, 16 sessions, the same gate 26,000/s in this script's session,
# 30,000-38,000/s in its own; nginx 34,000-41,000/s either way).
pkill -f "examples/fakebackend --listen 127.0.0.1:20143" 2>/dev/null || true
setsid $fake --listen 127.0.0.1:20143 --messages 1 --size 1048576 >/dev/null 2>&1 &
fake_pid=$!
pids=("$fake_pid")
cleanup() { kill "${pids[@]}" 2>/dev/null || true; bench/peers.sh stop "$work/peers" >/dev/null 2>&1 || true; }
trap cleanup EXIT

# One gate per backend kind; a fresh one for each idle measurement.
gate_config() { # name plain_port tls_port backend_port
  cat > "$work/$1.toml" <<CONF
[imap4]
unencrypted_or_tls_bindings = ["127.0.0.1:$2"]
ssl_bindings = ["127.0.0.1:$3"]
login_type = "plain-text-login"
certificate = "$PWD/certs/localhost.pem"
private_key = "$PWD/certs/localhost.key"
trusted_networks = ["127.0.0.0/8"]
max_connections_per_user = 100000
# Every load comes from 127.0.0.1: the per-address caps would refuse a storm from one address.
max_connections_from_single_ip = 100000
max_preauth_connections_from_single_ip = 100000
[directory]
mailboxes = "$work/mailboxes.toml"
[backends.main]
address = "127.0.0.1:$4"
# The shipped runtime defaults (worker_threads = 0: half the cores, one here, like nginx's one
# worker), unless a fifth argument gives a worker count to compare the default with.
[runtime]
worker_threads = ${5:-0}
CONF
}
# The load's users as mailboxes (names outside the directory are refused by default).
users_file() { for i in $(seq 1 10000); do printf '[[mailbox]]\nalias = "user%d"\n\n' "$i"; done; }
users_file > "$work/mailboxes.toml"
start_gate() { # name -> pid
  RUST_LOG=warn setsid $gate --config "$work/$1.toml" >/dev/null 2>>"$work/$1.log" &
  local pid=$!; pids+=("$pid"); sleep 0.5; echo "$pid"
}
gate_config gate-dovecot 31143 31993 10143
gate_config gate-fake 32143 32993 20143
# The same gate with one worker per core (the default before issue 17), for the default's choice.
gate_config gate-dovecot-percore 33143 33993 10143 "$(nproc)"
start_gate gate-dovecot >/dev/null
start_gate gate-fake >/dev/null
start_gate gate-dovecot-percore >/dev/null
sleep 1
out="$work/results.txt"; : > "$out"
run() { # label args...
  local label=$1; shift
  $load --label "$label" --seconds "$secs" "$@" 2>>"$work/loadgen.err" | tee -a "$out" || echo "$label failed: see $work/loadgen.err"
}
ca=(--ca certs/ca.pem)
only=${ONLY:-all}
run_part() { [ "$only" = all ] || [ "$only" = "$1" ]; }
# Each load runs against every target in turn, ROUNDS times over (default 5); the table shows the
# median of the rounds, which keeps one unlucky second on this shared machine out of the ratios.
rounds=${ROUNDS:-5}
run_part throughput && for round in $(seq "$rounds"); do
  for kind in "fetch --first-user 1" "noop --sessions 16 --users 16" "noop --sessions 1" \
      "login --sessions 16 --users 2000 --first-user 2"; do
    for t in "direct 10143 plain" "nginx 11143 plain" "dovecot-proxy 12143 plain" "imapgate 31143 plain" \
        "imapgate-percore 33143 plain" "nginx-tls 11993 tls" "nginx-tls13 11995 tls" "dovecot-proxy-tls 12993 tls" \
        "imapgate-tls 31993 tls" "imapgate-tls12 31993 tls --tls12"; do
      set -- $t
      run "dovecot/$1" --addr "127.0.0.1:$2" --mode $kind --security "$3" "${ca[@]}" "${@:4}"
    done
  done
  for kind in "fetch" "noop --sessions 16" "noop --sessions 1" "login --sessions 16 --users 2000"; do
    for t in "direct 20143 plain" "nginx 11144 plain" "imapgate 32143 plain" "nginx-tls 11994 tls" \
        "nginx-tls13 11996 tls" "imapgate-tls 32993 tls" "imapgate-tls12 32993 tls --tls12"; do
      set -- $t
      run "fake/$1" --addr "127.0.0.1:$2" --mode $kind --security "$3" "${ca[@]}" "${@:4}"
    done
  done
done
# Message size: the same 1 MB per FETCH as 256 x 4 KB, 16 x 64 KB and 1 x 1 MB messages, direct and
# through a gate (plain and TLS to the client).
run_part sizes && for size in 4096 65536 1048576; do
  port=$((25000 + size % 1000)); count=$((1048576 / size)); label="size-$((size / 1024))KB"
  setsid $fake --listen "127.0.0.1:$port" --messages "$count" --size "$size" >/dev/null 2>&1 &
  fpid=$!; pids+=("$fpid")
  gate_config gate-size 25143 25993 "$port"
  pid=$(start_gate gate-size)
  run "$label/direct" --addr "127.0.0.1:$port" --mode fetch
  run "$label/imapgate" --addr 127.0.0.1:25143 --mode fetch
  run "$label/imapgate-tls" --addr 127.0.0.1:25993 --mode fetch --security tls "${ca[@]}"
  kill "$pid" "$fpid"; wait "$pid" "$fpid" 2>/dev/null || true
done
# Idle sessions held in IDLE, arriving one after another and all at once (a reconnect storm after
# a restart or a failover): a fresh gate for each, and nginx's worker measured the same way (its
# memory is not fresh: each nginx row is the growth over what its worker already held).
nginx_worker() { pgrep -P "$(cat "$work/peers/nginx/nginx.pid")" | head -1; }
# A fresh nginx for each idle measurement, as each gate is fresh (a worker keeps what it grew).
fresh_nginx() {
  local old; old=$(cat "$work/peers/nginx/nginx.pid" 2>/dev/null || true)
  [ -n "$old" ] && kill "$old" 2>/dev/null || true
  for _ in $(seq 100); do [ -n "$old" ] && kill -0 "$old" 2>/dev/null || break; sleep 0.1; done
  while (exec 3<>/dev/tcp/127.0.0.1/11144) 2>/dev/null; do sleep 0.1; done
  nginx -c "$work/peers/nginx/nginx.conf" -p "$work/peers/nginx" 2>/dev/null || true
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/11994) 2>/dev/null && break; sleep 0.1; done
}
run_part idle && for n in "${idle_counts[@]}"; do
  for arrival in one-by-one at-once; do
    storm=(); [ $arrival = at-once ] && storm=(--storm)
    for sec in plain tls; do
      gate_config gate-idle 23143 23993 20143
      pid=$(start_gate gate-idle)
      port=$([ $sec = plain ] && echo 23143 || echo 23993)
      run "fake/imapgate-idle-$sec" --addr "127.0.0.1:$port" --mode idle --sessions "$n" --security "$sec" \
        "${ca[@]}" --pids "$pid" "${storm[@]}"
      kill "$pid"; wait "$pid" 2>/dev/null || true
      port=$([ $sec = plain ] && echo 11144 || echo 11994)
      fresh_nginx
      run "fake/nginx-idle-$sec" --addr "127.0.0.1:$port" --mode idle --sessions "$n" --security "$sec" \
        "${ca[@]}" --pids "$(nginx_worker)" "${storm[@]}"
    done
  done
done
if run_part reload; then
  hold=${idle_counts[-1]}
  gate_config gate-reload 24143 24993 20143
  { users_file; printf '[[mailbox]]\nname = "Spare"\nalias = "spare"\nimap_enabled = true\n'; } > "$work/reload-mailboxes.toml"
  sed -i "s#^mailboxes = .*#mailboxes = \"$work/reload-mailboxes.toml\"#" "$work/gate-reload.toml"
  RUST_LOG=warn,imapgate::server=info setsid $gate --config "$work/gate-reload.toml" >/dev/null 2>"$work/gate-reload.log" &
  pid=$!; pids+=("$pid"); sleep 0.5
  $load --label fake/imapgate-reload-hold --addr 127.0.0.1:24143 --mode idle --sessions "$hold" --seconds 15 \
    --pids "$pid" >> "$out" 2>>"$work/loadgen.err" &
  hold_pid=$!
  for _ in $(seq 600); do # until every session is up (at most a minute)
    [ "$(ss -Htn state established "( sport = :24143 )" | wc -l)" -ge "$hold" ] && break; sleep 0.1
  done
  $load --label fake/imapgate-reload-storm --addr 127.0.0.1:24143 --mode login --sessions 16 --users 2000 \
    --seconds 6 >> "$out" 2>>"$work/loadgen.err" &
  storm_pid=$!
  for i in 1 2 3 4 5; do
    sleep 1
    flag=$([ $((i % 2)) = 1 ] && echo false || echo true)
    sed -i "s/^imap_enabled = .*/imap_enabled = $flag/" "$work/reload-mailboxes.toml"
    kill -HUP "$pid"
  done
  wait "$storm_pid" || true; wait "$hold_pid" || true
  echo "fake/imapgate-reload mode=reload sighups=5 reloads=$(grep -c 'reload complete' "$work/gate-reload.log")" >> "$out"
  kill "$pid"; wait "$pid" 2>/dev/null || true
fi
python3 - "$out" <<'PY'
import re, sys
rows = [dict(re.findall(r"(\w+)=(\S+)", l), label=l.split()[0]) for l in open(sys.argv[1]) if l.strip()]
def num(v): return float(re.sub(r"[^0-9.]", "", v))
for r in rows:  # one NOOP session measures added latency, sixteen measure throughput
    if r["mode"] == "noop" and r.get("sessions") == "1":
        r["mode"] = "noop1"
def median(group):  # the round with the median rate
    group = sorted(group, key=lambda r: num(r["rate"]))
    return group[(len(group) - 1) // 2]
print(f"\n{'load':<7} {'target':<28} {'figure':>16} {'ratio to direct':>16} {'p50/p99 (added) us':>28} {'rounds':>7}")
backends = list(dict.fromkeys(r["label"].split("/")[0] for r in rows))
for mode in ("fetch", "noop", "noop1", "login"):
    for backend in backends:
        labels = list(dict.fromkeys(r["label"] for r in rows if r["mode"] == mode
                      and r["label"].startswith(backend + "/") and "reload" not in r["label"]))
        runs = {l: [r for r in rows if r["mode"] == mode and r["label"] == l] for l in labels}
        med = {l: median(g) for l, g in runs.items()}
        direct = next((med[l] for l in labels if l.endswith("/direct")), None)
        for l in labels:
            r = med[l]
            ratio = num(r["rate"]) / num(direct["rate"]) if direct and num(direct["rate"]) else float("nan")
            lat = f"{r.get('p50','')}/{r.get('p99','')}" if mode.startswith("noop") else ""
            if mode == "noop1" and direct and r is not direct:
                lat += f" (+{num(r['p50']) - num(direct['p50']):.0f}/+{num(r['p99']) - num(direct['p99']):.0f})"
            print(f"{mode:<7} {l:<28} {r['rate']:>16} {ratio:>16.2f} {lat:>28} {len(runs[l]):>7}")
for r in rows:
    if r["mode"] == "reload":
        print(f"reload  {r['label']:<28} SIGHUPs sent {r['sighups']}, reloads done {r['reloads']}")
        for x in rows:
            if "reload-storm" in x["label"]:
                print(f"reload  {x['label']:<28} {x['cycles']} logins during the reloads, errors={x['errors']}")
for r in rows:
    if r["mode"] == "idle":
        print(f"idle    {r['label']:<28} {r.get('arrival', 'one-by-one'):>10} {r['sessions']:>7} sessions in {r.get('opened_in', '?'):>6}"
              f"  {r['per_session']:>8}/session  after close {r.get('rss_after_close', '?'):>9} (before {r['rss_before']})"
              f"  alive={r['still_alive']} errors={r['errors']}")
PY
