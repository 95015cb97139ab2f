#!/usr/bin/env bash
# The LDAP directory source against the mailboxes file, in one run: login cycles through a gate
# reading a throwaway slapd (10,000 entries with Exchange's attributes) and through a gate reading
# the same 10,000 mailboxes from a file, both in front of the instant fake backend, interleaved
# over ROUNDS rounds (default 3), medians; then cold lookups (cache_ttl = "0s": every login asks
# slapd) with their p99 from the gate's imapgate_directory_lookup_seconds histogram, and a warm
# round counting the LDAP lookups it made (none expected). A benchmark, not a test.
#   bench/ldap.sh [SECONDS_PER_RUN]      (default 5; needs slapd and ldap-utils)
set -euo pipefail
cd "$(dirname "$0")/.."
chmod 600 certs/localhost.key
secs=${1:-5}; rounds=${ROUNDS:-3}; users=10000
work=/tmp/imapgate-bench-ldap; mkdir -p "$work"
ulimit -n 65536 2>/dev/null || true
cargo build --release --quiet --bin imapgate --examples
gate=target/release/imapgate; load=target/release/examples/loadgen; fake=target/release/examples/fakebackend
pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  [ -f "$work/slapd/slapd.pid" ] && kill "$(cat "$work/slapd/slapd.pid")" 2>/dev/null || true
}
trap cleanup EXIT
setsid $fake --listen 127.0.0.1:26143 --messages 1 --size 1024 >/dev/null 2>&1 &
pids+=($!)
# The load's users (userN / passN) as directory entries and as a mailboxes file; from user4 on,
# since the demo entries the throwaway slapd always has are user1 to user3.
first=4; last=$((first + users - 1))
for i in $(seq $first $last); do
  printf 'dn: cn=User %d,ou=Staff,dc=contoso,dc=com\nobjectClass: inetOrgPerson\nobjectClass: imapgateExchangeUser\ncn: User %d\nsn: User\ndisplayName: User %d\nmail: user%d@example.com\nmailNickname: user%d\nsAMAccountName: user%d\nprotocolSettings: HTTP§1§1§§§§§§\n\n' "$i" "$i" "$i" "$i" "$i" "$i"
done > "$work/users.ldif"
for i in $(seq $first $last); do printf '[[mailbox]]\nalias = "user%d"\nlogin = "user%d"\n\n' "$i" "$i"; done > "$work/mailboxes.toml"
scripts/throwaway-slapd.sh "$work/slapd" 26389 26636 --bulk "$work/users.ldif" >/dev/null
config() { # name port metrics_port directory_lines...
  local name=$1 port=$2 metrics=$3; shift 3
  {
    printf '[imap4]\nunencrypted_or_tls_bindings = ["127.0.0.1:%s"]\nlogin_type = "plain-text-login"\n' "$port"
    printf 'trusted_networks = ["127.0.0.0/8"]\nmax_connections_per_user = 100000\n'
    printf '[directory]\n'; printf '%s\n' "$@"
    printf '[backends.main]\naddress = "127.0.0.1:26143"\n'
    printf '[metrics]\nlisten = "127.0.0.1:%s"\n[runtime]\nworker_threads = 1\n' "$metrics"
  } > "$work/$name.toml"
  RUST_LOG=warn setsid $gate --config "$work/$name.toml" >/dev/null 2>>"$work/$name.log" &
  pids+=($!)
}
ldap=(
  'source = "ldap"'
  '[directory.ldap]'
  'urls = ["ldap://127.0.0.1:26389"]'
  "ca = \"$PWD/certs/ca.pem\""
  'bind_dn = "cn=imapgate,ou=Services,dc=contoso,dc=com"'
  "bind_password_file = \"$work/slapd/imapgate-password\""
  'base_dn = "ou=Staff,dc=contoso,dc=com"'
  'filter = "(objectClass=imapgateExchangeUser)"'
)
config file 26001 26101 "mailboxes = \"$work/mailboxes.toml\""
config ldap 26002 26102 'cache_ttl = "5m"' "${ldap[@]}"
config ldap-cold 26003 26103 'cache_ttl = "0s"' "${ldap[@]}"
sleep 1
scrape() { curl -s "http://127.0.0.1:$1/metrics"; }
lookups() { scrape "$1" | awk '/^imapgate_directory_lookups_total/ {s += $2} END {print s + 0}'; }
out="$work/results.txt"; : > "$out"
run() { # label port [sessions]
  $load --label "$1" --addr "127.0.0.1:$2" --mode login --sessions "${3:-16}" --users $users \
    --first-user $first --seconds "$secs" 2>>"$work/loadgen.err" | tee -a "$out"
}
# Warm the LDAP gate's cache with every user (not measured: each of the 16 sessions goes through
# its own sixteenth of the users, more than once in twice the time), then interleave.
$load --addr 127.0.0.1:26002 --mode login --sessions 16 --users $users --first-user $first \
  --seconds "$((secs * 2))" >/dev/null 2>>"$work/loadgen.err"
before=$(lookups 26102)
for _ in $(seq "$rounds"); do
  run file 26001
  run ldap 26002
done
warm=$(( $(lookups 26102) - before ))
# Cold: one client at a time, so the figure is the lookup's own time on loopback rather than
# a queue behind 16 sessions on two cores (the 16-session cold rate is printed too).
run ldap-cold 26003 1
cold_one=$(scrape 26103)
run ldap-cold16 26003 16
python3 - "$out" "$warm" "$cold_one" <<'PY'
import re, sys, statistics
rows = [dict(re.findall(r"(\w+)=(\S+)", l), label=l.split()[0]) for l in open(sys.argv[1]) if l.strip()]
rate = lambda label: statistics.median(float(r["rate"].rstrip("/s")) for r in rows if r["label"] == label)
f, l = rate("file"), rate("ldap")
cold = [r for r in rows if r["label"] == "ldap-cold"][0]
cold16 = [r for r in rows if r["label"] == "ldap-cold16"][0]
buckets = [(float(m.group(1)), float(m.group(2))) for m in re.finditer(
    r'imapgate_directory_lookup_seconds_bucket\{le="([0-9.e+-]+)"\} (\d+)', sys.argv[3])]
total = buckets[-1][1] if buckets else 0
p99 = next((le for le, n in buckets if total and n >= 0.99 * total), float("nan"))
p50 = next((le for le, n in buckets if total and n >= 0.5 * total), float("nan"))
errors = sum(int(r.get("errors", 0)) for r in rows)
print(f"login cycles/s (median of rounds): file {f:.0f}, ldap {l:.0f}: ldap/file = {l / f:.2f} (target >= 0.9)")
print(f"warm ldap rounds: {sys.argv[2]} LDAP lookups (target 0)")
print(f"cold lookups: {int(total)} through the cache to slapd, p50 <= {p50 * 1000:g} ms, p99 <= {p99 * 1000:g} ms "
      f"(histogram bucket bounds; target p99 < 5 ms); cold login cycles {float(cold['rate'].rstrip('/s')):.0f}/s "
      f"with one client, {float(cold16['rate'].rstrip('/s')):.0f}/s with 16")
print(f"errors: {errors}")
PY
