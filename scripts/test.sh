#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what the tests need (Debian's
# dovecot-imapd, slapd, ldap-utils, redis-server, haproxy, curl, chromium and chromium-driver; as
# root), then formatting, lints and every
# test, Dovecot interop and the admin center in Chromium included.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/apt.sh
need=()
command -v dovecot >/dev/null || need+=(dovecot-imapd)
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3)
command -v openssl >/dev/null || need+=(openssl)
if ((${#need[@]})); then
  apt_install "the interop tests run a real Dovecot backend and real clients (curl, Python's imaplib)" "${need[@]}"
fi
# tests/ldap.rs starts throwaway OpenLDAP directories (scripts/throwaway-slapd.sh). Debian's own
# slapd instance is not wanted: its package is told not to create one.
if [ ! -x /usr/sbin/slapd ] || ! command -v ldapmodify >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    echo "slapd slapd/no_configuration boolean true" | debconf-set-selections
  fi
  apt_install "the LDAP directory is tested against a real OpenLDAP (slapd, ldap-utils)" slapd ldap-utils
fi
# tests/fleet.rs and tests/topology.rs run gates sharing state on a throwaway Redis, behind
# HAProxy (Debian's own services are not started: the tests start their own on free ports).
fleet=()
command -v redis-server >/dev/null || fleet+=(redis-server)
command -v haproxy >/dev/null || fleet+=(haproxy)
if ((${#fleet[@]})); then
  apt_install "a fleet of gates is tested on Redis behind HAProxy" "${fleet[@]}"
  for unit in redis-server haproxy; do
    systemctl disable --now "$unit" >/dev/null 2>&1 || true
  done
fi
# tests/browser.rs drives the admin center in a real Chromium over WebDriver.
browser=()
[ -x /usr/bin/chromium ] || browser+=(chromium)
[ -x /usr/bin/chromedriver ] || browser+=(chromium-driver)
if ((${#browser[@]})); then
  apt_install "the admin center is tested in a real browser (Chromium over WebDriver)" "${browser[@]}"
fi
# scripts/test-package.sh renders the manual page with man, as an administrator would.
command -v man >/dev/null || apt_install "the package test reads the manual page with man -l" man-db
command -v ss >/dev/null || apt_install "a test reads the listeners' accept queue with ss" iproute2
# The scripts' own checks (each exits non-zero on failure).
scripts/check-apt-lock.sh
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# The benchmark harness runs (a smoke, not a benchmark); then every test (unit and integration;
# the bench tools are built by clippy above but hold no tests).
bench/smoke.sh
log=$(mktemp)
set +e
cargo test --lib --tests --locked 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
awk '/^test result:/ {p += $4; f += $6} END {printf "tests: %d passed, %d failed\n", p, f}' "$log"
rm -f "$log"
[ "$status" = 0 ] || exit "$status"
# The Debian package, installed on this machine, checked and purged (as root; it leaves the
# machine as it was).
if [ "$(id -u)" = 0 ]; then
  scripts/test-package.sh
else
  echo "test-package: skipped (needs root for dpkg -i)"
fi
