# Sourced by scripts/test.sh and scripts/demo.sh: installs Debian packages, saying what and why,
# and waits for another apt-get or dpkg (unattended upgrades on a fresh machine) to finish
# instead of failing at once. APT_LOCK_WAIT (seconds, default 600) bounds the wait.

# apt_install WHY PACKAGE...
apt_install() {
  local why=$1; shift
  local wait=${APT_LOCK_WAIT:-600}
  if [ "$(id -u)" != 0 ]; then
    echo "missing: $* ($why); run as root, or: sudo apt-get install $*" >&2
    return 1
  fi
  echo "installing $* with apt-get: $why (waiting up to ${wait}s for another apt or dpkg to finish)" >&2
  # apt-get update does not wait for the package lists' lock by itself: retry while it is held.
  local deadline=$((SECONDS + wait)) out
  until out=$(apt-get -o DPkg::Lock::Timeout="$wait" update -qq 2>&1); do
    if [[ $out != *"Could not get lock"* ]] || ((SECONDS >= deadline)); then
      echo "$out" >&2
      return 1
    fi
    sleep 2
  done
  # dpkg's own locks: apt-get waits for them itself with DPkg::Lock::Timeout.
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout="$wait" install -y -qq "$@" >/dev/null
}
