#!/usr/bin/env bash
# Installs the Debian package on this machine and checks it the way an administrator meets it,
# then purges it and checks that nothing it created is left (scripts/test.sh runs this as root):
#   - files where the unit and the README say; conffiles and the modes strict checks require;
#   - the imapgate user and group; the unit enabled but not started;
#   - systemd-analyze verify on the installed unit; man -l renders imapgate(8); completions load;
#   - imapgate --version names the git revision; check-config passes as the imapgate user once a
#     certificate is in place;
#   - the installed gate runs as imapgate with only CAP_NET_BIND_SERVICE, greets on 993, reloads
#     with `imapgate reload` and stops cleanly on SIGTERM;
#   - an edited conffile survives a reinstall; dpkg --purge removes everything the package made.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "test-package: needs root (dpkg -i)" >&2; exit 1; }
if dpkg -s imapgate >/dev/null 2>&1 || id imapgate >/dev/null 2>&1 || [ -e /etc/imapgate ]; then
  echo "test-package: imapgate is already installed here (package, user or /etc/imapgate); not touching it" >&2
  exit 1
fi
fail() { echo "test-package: FAILED: $*" >&2; exit 1; }
deb=$(scripts/build-deb.sh | tail -1)
echo "test-package: $deb"
cleanup() {
  dpkg --purge imapgate >/dev/null 2>&1 || true
  rm -f /etc/imapgate/tls/fullchain.pem /etc/imapgate/tls/privkey.pem
  rmdir /etc/imapgate/tls /etc/imapgate 2>/dev/null || true
}
trap cleanup EXIT
dpkg -i "$deb" >/dev/null

# Files where the unit and the README say they are.
unit=/lib/systemd/system/imapgate.service
for f in /usr/bin/imapgate "$unit" /etc/imapgate/imapgate.toml /etc/imapgate/mailboxes.toml \
    /usr/share/doc/imapgate/README.md /usr/share/doc/imapgate/changelog.Debian.gz \
    /usr/share/doc/imapgate/copyright /usr/share/man/man8/imapgate.8.gz \
    /usr/share/bash-completion/completions/imapgate /usr/share/zsh/vendor-completions/_imapgate; do
  [ -e "$f" ] || fail "$f is missing"
done
grep -q '^ExecStart=/usr/bin/imapgate ' "$unit" || fail "the unit does not run /usr/bin/imapgate"
grep -q '^Documentation=file:///usr/share/doc/imapgate/README.md' "$unit" || fail "Documentation="
cmp -s config/imapgate.production.toml /etc/imapgate/imapgate.toml || fail "the configuration is not the production one"
conffiles=$(dpkg-query --showformat='${Conffiles}\n' --show imapgate)
for f in /etc/imapgate/imapgate.toml /etc/imapgate/mailboxes.toml; do
  grep -q " $f " <<<"$conffiles" || fail "$f is not a conffile"
done

# User, group and modes.
getent passwd imapgate >/dev/null || fail "no imapgate user"
getent group imapgate >/dev/null || fail "no imapgate group"
[ "$(stat -c '%U:%G %a' /etc/imapgate)" = "root:imapgate 750" ] || fail "/etc/imapgate is $(stat -c '%U:%G %a' /etc/imapgate)"
for f in /etc/imapgate/imapgate.toml /etc/imapgate/mailboxes.toml; do
  [ "$(stat -c '%U:%G %a' "$f")" = "root:imapgate 640" ] || fail "$f is $(stat -c '%U:%G %a' "$f")"
done
[ "$(stat -c '%U:%G %a' /etc/imapgate/tls)" = "root:imapgate 750" ] || fail "/etc/imapgate/tls"

# The unit: enabled, not started, and accepted by this machine's systemd as installed.
if [ -d /run/systemd/system ]; then
  [ "$(systemctl is-enabled imapgate)" = enabled ] || fail "the unit is not enabled"
  ! systemctl is-active --quiet imapgate || fail "the unit was started before it was configured"
else
  [ -L /etc/systemd/system/multi-user.target.wants/imapgate.service ] || fail "the unit is not enabled"
fi
if command -v systemd-analyze >/dev/null; then
  out=$(systemd-analyze verify "$unit" 2>&1) || fail "systemd-analyze verify: $out"
  [ -z "$out" ] || fail "systemd-analyze verify said: $out"
fi

# The manual page, the completions, the version.
page=$(MANWIDTH=100 MANPAGER=cat man -l /usr/share/man/man8/imapgate.8.gz 2>&1) || fail "man -l: $page"
for want in "check-config" "mailbox set" "--imap-enabled" "admin-user add" "completions" "FILES" \
    "SIGNALS" "EXIT STATUS" "SIGHUP" "/etc/imapgate/imapgate.toml"; do
  grep -qF -- "$want" <<<"$page" || fail "the manual page does not mention $want"
done
bash -c 'source /usr/share/bash-completion/completions/imapgate && complete -p imapgate' >/dev/null \
  || fail "the bash completion does not load"
grep -q '^#compdef imapgate' /usr/share/zsh/vendor-completions/_imapgate || fail "zsh completion"
version=$(/usr/bin/imapgate --version)
rev=$(git rev-parse --short=12 HEAD)
[ "$version" = "imapgate $(awk -F'"' '/^version =/ {print $2; exit}' Cargo.toml) (git $rev)" ] || fail "--version: $version"
dpkg-query --showformat='${Version}' --show imapgate | grep -q "^$(awk -F'"' '/^version =/ {print $2; exit}' Cargo.toml)" \
  || fail "the package version does not follow the crate's"

# check-config as the imapgate user, once a certificate is in place.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=mail.example.com \
  -keyout /etc/imapgate/tls/privkey.pem -out /etc/imapgate/tls/fullchain.pem 2>/dev/null
chown root:imapgate /etc/imapgate/tls/privkey.pem /etc/imapgate/tls/fullchain.pem
chmod 0640 /etc/imapgate/tls/privkey.pem /etc/imapgate/tls/fullchain.pem
out=$(runuser -u imapgate -- /usr/bin/imapgate check-config --config /etc/imapgate/imapgate.toml 2>&1) \
  || fail "check-config as imapgate: $out"

# Running and reloadable as the unit runs it: user imapgate with CAP_NET_BIND_SERVICE only, in
# the runtime and logs directories systemd makes for it (RuntimeDirectory=, LogsDirectory=).
for port in 143 993; do
  ! (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null || fail "port $port is taken on this machine"
done
install -d -m 0750 -o imapgate -g imapgate /run/imapgate /var/log/imapgate
gate_log=$(mktemp)
setpriv --reuid imapgate --regid imapgate --init-groups --inh-caps +net_bind_service \
  --ambient-caps +net_bind_service /usr/bin/imapgate --config /etc/imapgate/imapgate.toml \
  </dev/null >/dev/null 2>"$gate_log" &
gate=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/993) 2>/dev/null && break; sleep 0.1; done
greeting=$(timeout 10 openssl s_client -connect 127.0.0.1:993 -quiet </dev/null 2>/dev/null | head -1 || true)
[[ "$greeting" == "* OK"* ]] || fail "no greeting on 993 from the installed gate: $greeting $(cat "$gate_log")"
out=$(/usr/bin/imapgate reload --config /etc/imapgate/imapgate.toml 2>&1) || fail "imapgate reload: $out"
grep -q "reload complete" "$gate_log" || fail "no reload in the gate's log: $(cat "$gate_log")"
kill -TERM "$gate"
wait "$gate" || fail "the gate did not stop cleanly: $(cat "$gate_log")"
rm -f "$gate_log"

# An administrator's edit of a conffile survives a reinstall (an upgrade's unpack).
echo "# edited by the administrator" >> /etc/imapgate/imapgate.toml
dpkg -i --force-confold "$deb" >/dev/null
grep -q "edited by the administrator" /etc/imapgate/imapgate.toml || fail "the edit was lost"
[ "$(stat -c '%U:%G %a' /etc/imapgate/imapgate.toml)" = "root:imapgate 640" ] || fail "the mode was lost on reinstall"

# Purge: everything the package made goes; the administrator's certificate is theirs to remove.
mkdir -p /var/log/imapgate && touch /var/log/imapgate/audit.log
files=$(dpkg -L imapgate | grep -v '^/\.$')
rm -f /etc/imapgate/tls/fullchain.pem /etc/imapgate/tls/privkey.pem
dpkg --purge imapgate >/dev/null
left=()
while read -r f; do
  [ -e "$f" ] && ! [ -d "$f" ] && left+=("$f")
done <<<"$files"
for d in /etc/imapgate /var/log/imapgate /run/imapgate /usr/share/doc/imapgate \
    /etc/systemd/system/multi-user.target.wants/imapgate.service; do
  [ -e "$d" ] && left+=("$d")
done
((${#left[@]} == 0)) || fail "left after purge: ${left[*]}"
! id imapgate >/dev/null 2>&1 || fail "the imapgate user is left"
! getent group imapgate >/dev/null || fail "the imapgate group is left"
[ -z "$(dpkg-statoverride --list | grep /etc/imapgate || true)" ] || fail "stat overrides are left"
echo "test-package: installed, checked and purged: ok"
