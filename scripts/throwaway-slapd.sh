#!/usr/bin/env bash
# Starts a throwaway OpenLDAP (Debian's slapd) on loopback as a demo/test directory.
#   throwaway-slapd.sh DIR LDAP_PORT LDAPS_PORT [--entries FILE]... [--bulk FILE] [--hold]
# DIR gets a cn=config of its own (back_mdb, the syncprov overlay for RFC 4533 content
# synchronization), the database and the bind passwords. LDAP_PORT is plain LDAP with StartTLS,
# LDAPS_PORT implicit TLS (certs/localhost.pem; CA certs/ca.pem), DIR/ldapi a local socket.
# The schema is loaded the way the README says (ldapadd -Y EXTERNAL -H ldapi:/// -f
# config/ldap/exchange.ldif), then config/ldap/demo.ldif and each --entries file (ldapadd);
# --bulk FILE is loaded offline with slapadd -q (100,000 entries in seconds).
# Suffix dc=contoso,dc=com. Accounts: cn=admin,dc=contoso,dc=com (the root DN, password
# admin-demo-password); cn=imapgate,ou=Services,... reads everything under the suffix and
# writes protocolSettings and imapEnabled only (password in DIR/imapgate-password);
# cn=reader,ou=Services,... reads only (DIR/reader-password).
# With --hold the script stays until its standard input closes, then stops slapd: a test
# harness keeps the pipe open and the directory dies with the harness.
set -euo pipefail
dir=$1; port=$2; tls_port=$3; shift 3
here=$(cd "$(dirname "$0")/.." && pwd)
entries=("$here/config/ldap/demo.ldif"); bulk=""; hold=""
while (($#)); do
  case $1 in
    --entries) entries+=("$2"); shift 2 ;;
    --bulk) bulk=$2; shift 2 ;;
    --hold) hold=1; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
export PATH=$PATH:/usr/sbin
command -v slapd >/dev/null || { echo "slapd not installed (apt-get install slapd ldap-utils)" >&2; exit 1; }
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
stop() {
  local pid
  pid=$(cat "$dir/slapd.pid" 2>/dev/null) || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  rm -f "$dir/slapd.pid"
}
stop
rm -rf "$dir/slapd.d" "$dir/db"
mkdir -p "$dir/slapd.d" "$dir/db"
ldapi="ldapi://$(printf '%s' "$dir/ldapi" | sed 's,/,%2F,g')"
base="dc=contoso,dc=com"
service="cn=imapgate,ou=Services,$base"
reader="cn=reader,ou=Services,$base"
printf 'imapgate-demo-password\n' > "$dir/imapgate-password"
printf 'reader-demo-password\n' > "$dir/reader-password"
chmod 600 "$dir/imapgate-password" "$dir/reader-password"
unlimited="size.soft=unlimited size.hard=unlimited size.prtotal=unlimited"
cat > "$dir/config.ldif" <<CONF
dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: $dir/slapd.pid
olcTLSCACertificateFile: $here/certs/ca.pem
olcTLSCertificateFile: $here/certs/localhost.pem
olcTLSCertificateKeyFile: $here/certs/localhost.key
olcLogLevel: none

dn: cn=module{0},cn=config
objectClass: olcModuleList
cn: module{0}
olcModulePath: /usr/lib/ldap
olcModuleLoad: back_mdb
olcModuleLoad: syncprov

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

include: file:///etc/ldap/schema/core.ldif

include: file:///etc/ldap/schema/cosine.ldif

include: file:///etc/ldap/schema/inetorgperson.ldif

dn: olcDatabase={-1}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {-1}frontend

dn: olcDatabase={0}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {0}config
olcAccess: {0}to * by dn.exact=gidNumber=$(id -g)+uidNumber=$(id -u),cn=peercred,cn=external,cn=auth manage by * break
CONF
# The database names attributes of the shipped schema: added once the schema is in.
cat > "$dir/database.ldif" <<CONF
dn: olcDatabase={1}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {1}mdb
olcSuffix: $base
olcRootDN: cn=admin,$base
olcRootPW: admin-demo-password
olcDbDirectory: $dir/db
olcDbMaxSize: 4294967296
olcDbIndex: objectClass eq
olcDbIndex: entryCSN,entryUUID eq
olcDbIndex: cn,displayName,mail,mailNickname,userPrincipalName,sAMAccountName,proxyAddresses eq
olcDbIndex: objectGUID eq
olcDbIndex: protocolSettings eq
olcLimits: {0}dn.exact="$service" $unlimited
olcLimits: {1}dn.exact="$reader" $unlimited
olcAccess: {0}to attrs=userPassword by anonymous auth by * none
olcAccess: {1}to attrs=protocolSettings,imapEnabled by dn.exact="$service" write by users read by * none
olcAccess: {2}to * by users read by * none

dn: olcOverlay={0}syncprov,olcDatabase={1}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcSyncProvConfig
olcOverlay: {0}syncprov
olcSpCheckpoint: 100 10
CONF
slapadd -n0 -F "$dir/slapd.d" -l "$dir/config.ldif" >"$dir/slapadd.log" 2>&1 || { cat "$dir/slapadd.log" >&2; exit 1; }
start() {
  slapd -F "$dir/slapd.d" -h "ldap://127.0.0.1:$port/ ldaps://127.0.0.1:$tls_port/ $ldapi/"
  for _ in $(seq 400); do  # up to 20 s on a loaded machine
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "slapd did not start on 127.0.0.1:$port" >&2
  exit 1
}
start
# The shipped schema, the way the README loads it.
ldapadd -Q -Y EXTERNAL -H "$ldapi" -f "$here/config/ldap/exchange.ldif" >/dev/null
ldapadd -Q -Y EXTERNAL -H "$ldapi" -f "$dir/database.ldif" >/dev/null
for f in "${entries[@]}"; do
  ldapadd -x -H "ldap://127.0.0.1:$port" -D "cn=admin,$base" -w admin-demo-password -f "$f" >/dev/null
done
if [ -n "$bulk" ]; then
  stop
  slapadd -q -F "$dir/slapd.d" -b "$base" -l "$bulk" >"$dir/slapadd.log" 2>&1 || { cat "$dir/slapadd.log" >&2; exit 1; }
  start
fi
echo "ready"
if [ -n "$hold" ]; then
  cat >/dev/null || true
  stop
else
  echo "slapd on 127.0.0.1:$port (StartTLS) and :$tls_port (LDAPS), base $base; stop: kill \$(cat $dir/slapd.pid)"
fi
