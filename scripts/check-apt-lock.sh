#!/usr/bin/env bash
# Checks scripts/lib/apt.sh against a held dpkg lock (another apt-get or unattended upgrade):
# apt_install must wait for it, then succeed, rather than fail at once. Run by scripts/test.sh.
# Needs root and apt; skipped (exit 0, saying so) otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/apt.sh
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "check-apt-lock: SKIP (needs root and apt-get)"; exit 0
fi
hold=4
# apt and dpkg lock with fcntl(2); Python's lockf takes the same kind of lock.
python3 - "$hold" <<'PY' &
import fcntl, os, sys, time
fds = []
for path in ("/var/lib/apt/lists/lock", "/var/lib/dpkg/lock-frontend", "/var/lib/dpkg/lock"):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
    fcntl.lockf(fd, fcntl.LOCK_EX)
    fds.append(fd)
print("held", flush=True)
time.sleep(float(sys.argv[1]))
PY
holder=$!
sleep 1
started=$SECONDS
# curl is installed already: the install only has to take the locks.
if ! out=$(APT_LOCK_WAIT=60 apt_install "checking that a held lock is waited for" curl 2>&1); then
  echo "check-apt-lock: FAILED: apt_install did not wait for the lock: $out" >&2; exit 1
fi
waited=$((SECONDS - started))
wait "$holder"
if ((waited < hold - 2)); then
  echo "check-apt-lock: FAILED: finished in ${waited}s while the lock was held ${hold}s" >&2; exit 1
fi
[[ $out == *"installing curl with apt-get: checking that a held lock is waited for"* ]] || {
  echo "check-apt-lock: FAILED: apt_install did not say what it installs and why: $out" >&2; exit 1; }
echo "check-apt-lock: ok (waited ${waited}s for a lock held ${hold}s)"
