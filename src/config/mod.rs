//! The daemon's configuration file (`imapgate.toml`): serde structs with defaults, and `validate()`.
//!
//! Names follow Exchange's `Set-ImapSettings` where a counterpart exists (`login_type`,
//! `unencrypted_or_tls_bindings`, `ssl_bindings`, `banner`). Relative paths in the file (certificate,
//! private key, mailboxes file, backend CA) are resolved against the directory that holds the
//! configuration file, not the process's working directory, so a unit file and a shell give the same
//! result. Reading, resolving and checking are in [`load`](mod@load).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Errors found while reading or checking the configuration. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// How clients may authenticate before TLS, as Exchange's `LoginType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LoginType {
    /// LOGIN and AUTHENTICATE PLAIN allowed without TLS.
    PlainTextLogin,
    /// AUTHENTICATE PLAIN allowed without TLS; LOGIN only after TLS (`LOGINDISABLED` before).
    PlainTextAuthentication,
    /// No authentication before TLS: `LOGINDISABLED`, no `AUTH=`, `NO [PRIVACYREQUIRED]`.
    #[default]
    SecureLogin,
}

/// How the gate reaches a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendTls {
    /// Plain TCP (for a backend on loopback or a trusted network).
    #[default]
    None,
    /// Plain TCP, then `STARTTLS` before logging in.
    Starttls,
    /// TLS from the first byte (like port 993).
    Tls,
}

/// What a login name that matches no mailbox gets (`[directory] unknown_names`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownNames {
    /// The same `NO [AUTHENTICATIONFAILED]` as a wrong password (Exchange: the directory is
    /// authoritative).
    #[default]
    Refuse,
    /// `[defaults]`, the name sent to the backend as typed: only as safe as the match between
    /// the directory's names and the backend's own name normalization.
    Defaults,
}

/// Exchange's "unlimited" (2147483647).
pub const UNLIMITED: usize = 2_147_483_647;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Imap4 {
    /// Plain listeners that offer STARTTLS (Exchange's port 143).
    pub unencrypted_or_tls_bindings: Vec<SocketAddr>,
    /// Implicit-TLS listeners (Exchange's port 993).
    pub ssl_bindings: Vec<SocketAddr>,
    pub login_type: LoginType,
    /// PEM certificate chain presented to clients; needed for STARTTLS and `ssl_bindings`.
    pub certificate: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
    /// Text of the greeting after `* OK [CAPABILITY ...]`.
    pub banner: String,
    /// Text of the `NO [CONTACTADMIN]` answer to a correct login on a mailbox with IMAP4 disabled.
    pub disabled_message: String,
    /// Longest command accepted before login, literals included (Exchange's `MaxCommandSize`).
    pub max_command_size: usize,
    #[serde(with = "humantime_serde_compat")]
    pub preauthenticated_connection_timeout: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub authenticated_connection_timeout: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub tls_handshake_timeout: Duration,
    /// How long relayed sessions may go on after SIGTERM before they are closed.
    #[serde(with = "humantime_serde_compat")]
    pub shutdown_grace: Duration,
    /// Consecutive unparseable or unknown commands before `* BYE`.
    pub max_bad_commands: u32,
    /// Failed logins on one connection before the answer is followed by `* BYE` (Exchange: 4).
    pub max_failed_login_attempts: u32,
    /// Connections to the whole gate (Exchange's `MaxConnections`). Default, and ceiling: what
    /// the open-file limit allows (two descriptors per relayed session, after a reserve).
    pub max_connections: Option<usize>,
    /// Connections from one client address (`MaxConnectionFromSingleIP`).
    pub max_connections_from_single_ip: usize,
    /// Logged-in sessions of one mailbox, from all addresses (`MaxConnectionsPerUser`).
    pub max_connections_per_user: usize,
    /// Connections from one address that have not logged in yet (a NATed office logs in, and
    /// then counts per mailbox).
    pub max_preauth_connections_from_single_ip: usize,
    /// Logins (directory, penalty, backend) in progress at once from one address; more wait.
    pub max_logins_in_progress_from_single_ip: usize,
    /// Share of `max_connections` above which the gate is under pressure.
    pub pressure_threshold: f64,
    /// Under pressure, a connection that has not logged in this long after connecting is
    /// closed (instead of `preauthenticated_connection_timeout`).
    #[serde(with = "humantime_serde_compat")]
    pub preauthenticated_connection_timeout_under_pressure: Duration,
    /// Delay before a login from an address with recent failed logins, doubling per failure.
    #[serde(with = "humantime_serde_compat")]
    pub auth_penalty_initial: Duration,
    /// Cap of that delay; `0s` for `auth_penalty_initial` turns the penalty off.
    #[serde(with = "humantime_serde_compat")]
    pub auth_penalty_max: Duration,
    /// Client networks exempt from the penalty (a webmail host, a monitoring probe).
    pub trusted_networks: Vec<ipnet::IpNet>,
    /// Load balancers: connections from these networks start with a PROXY protocol header (v1
    /// or v2) whose source address is the client's; others that send one are closed.
    pub proxy_protocol_from: Vec<ipnet::IpNet>,
    /// Certificates for other names, picked by SNI; `certificate` is the default.
    pub sni_certificates: Vec<SniCertificate>,
}

impl Default for Imap4 {
    fn default() -> Self {
        Imap4 {
            unencrypted_or_tls_bindings: vec![],
            ssl_bindings: vec![],
            login_type: LoginType::SecureLogin,
            certificate: None,
            private_key: None,
            banner: "The imapgate IMAP4 service is ready.".into(),
            disabled_message: "IMAP4 access is disabled for this mailbox.".into(),
            max_command_size: 10240,
            preauthenticated_connection_timeout: Duration::from_secs(60),
            authenticated_connection_timeout: Duration::from_secs(30 * 60),
            tls_handshake_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
            max_bad_commands: 10,
            max_failed_login_attempts: 4,
            max_connections: None,
            max_connections_from_single_ip: UNLIMITED,
            max_connections_per_user: 16,
            max_preauth_connections_from_single_ip: 100,
            max_logins_in_progress_from_single_ip: 4,
            pressure_threshold: 0.8,
            preauthenticated_connection_timeout_under_pressure: Duration::from_secs(5),
            auth_penalty_initial: Duration::from_secs(2),
            auth_penalty_max: Duration::from_secs(15),
            trusted_networks: Vec::new(),
            proxy_protocol_from: Vec::new(),
            sni_certificates: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DirectoryConfig {
    /// Where mailboxes come from: the mailboxes file (default) or LDAP.
    pub source: DirectorySource,
    /// The mailboxes file (`config/mailboxes.toml`).
    pub mailboxes: PathBuf,
    /// With `source = "ldap"`.
    pub ldap: Option<LdapConfig>,
    #[serde(with = "humantime_serde_compat")]
    pub cache_ttl: Duration,
    /// How long a name that resolves to no mailbox is remembered (in a cache of its own).
    #[serde(with = "humantime_serde_compat")]
    pub negative_cache_ttl: Duration,
    pub cache_capacity: u64,
    /// On reload, close the open sessions of mailboxes that became disabled.
    pub disconnect_disabled_on_reload: bool,
    /// What a login name that matches no mailbox gets: `"refuse"` (the same answer as a wrong
    /// password) or `"defaults"`.
    pub unknown_names: UnknownNames,
    /// Characters that refuse a login name before any backend sees it (Dovecot's master-user
    /// separator `*` by default).
    pub refused_login_characters: String,
}

impl Default for DirectoryConfig {
    fn default() -> Self {
        DirectoryConfig {
            source: DirectorySource::File,
            mailboxes: PathBuf::from("mailboxes.toml"),
            ldap: None,
            cache_ttl: Duration::from_secs(300),
            negative_cache_ttl: Duration::from_secs(30),
            cache_capacity: 100_000,
            disconnect_disabled_on_reload: true,
            unknown_names: UnknownNames::Refuse,
            refused_login_characters: "*".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// `host:port` of the backend IMAP server, or several (copies of the same mailboxes), tried
    /// in order.
    pub address: BackendAddresses,
    #[serde(default)]
    pub tls: BackendTls,
    /// Name the backend's certificate must carry; defaults to the host part of `address`.
    pub server_name: Option<String>,
    /// PEM file of CA certificates to trust instead of the system roots.
    pub ca: Option<PathBuf>,
    #[serde(default = "default_connect_timeout", with = "humantime_serde_compat")]
    pub connect_timeout: Duration,
    /// Deadline for each backend exchange before relaying (greeting, TLS, login).
    #[serde(default = "default_login_timeout", with = "humantime_serde_compat")]
    pub login_timeout: Duration,
    /// How often an address marked down is tried again (connect and greeting).
    #[serde(
        default = "default_health_check_interval",
        with = "humantime_serde_compat"
    )]
    pub health_check_interval: Duration,
    /// Send a PROXY protocol header with the client's address first (Dovecot's
    /// `haproxy_trusted_networks`).
    pub proxy_protocol: Option<ProxyProtocolVersion>,
    /// The SASL mechanisms to offer for this backend (`PLAIN`, `OAUTHBEARER`, `XOAUTH2`);
    /// default: what its CAPABILITY says.
    pub mechanisms: Option<Vec<String>>,
}

/// The PROXY protocol version sent to a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocolVersion {
    V1,
    V2,
}

/// A backend's `address`: one `host:port` string, or a list of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendAddresses(pub Vec<String>);

impl BackendAddresses {
    /// The first address (the one whose host names the certificate by default).
    pub fn first(&self) -> &str {
        self.0.first().map(String::as_str).unwrap_or("")
    }

    pub fn iter(&self) -> impl Iterator<Item = &String> {
        self.0.iter()
    }
}

impl std::fmt::Display for BackendAddresses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}

impl<'de> Deserialize<'de> for BackendAddresses {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        Ok(match OneOrMany::deserialize(d)? {
            OneOrMany::One(a) => BackendAddresses(vec![a]),
            OneOrMany::Many(list) => BackendAddresses(list),
        })
    }
}

fn default_health_check_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
/// Covers Dovecot's own failed-login penalty (up to 15 s, applied to the client's address it
/// learns through ID) and its 2 s failure delay: a right password after wrong ones must not
/// time out at the gate.
fn default_login_timeout() -> Duration {
    Duration::from_secs(20)
}

/// Further certificates chosen by the name the client asks for (SNI).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SniCertificate {
    /// DNS name as the client sends it in SNI (case-insensitive).
    pub name: String,
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of the Prometheus endpoint (`GET /metrics`); off when absent.
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Rollover {
    #[default]
    Hourly,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProtocolLogConfig {
    /// Exchange's `ProtocolLogEnabled`.
    pub enabled: bool,
    /// Exchange's `LogFileLocation`.
    pub directory: PathBuf,
    pub rollover: Rollover,
    /// Rows waiting for the writer; past that, rows are dropped (and counted), never waited for.
    pub queue: usize,
    /// How often a relayed session writes a `proxy` row (Exchange: every 30 s).
    #[serde(with = "humantime_serde_compat")]
    pub proxy_row_interval: Duration,
}

impl Default for ProtocolLogConfig {
    fn default() -> Self {
        ProtocolLogConfig {
            enabled: false,
            directory: PathBuf::from("protocol-log"),
            rollover: Rollover::Hourly,
            queue: 65536,
            proxy_row_interval: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter (`info`, `imapgate=debug`); `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Threads serving sessions; 0 (the default) means half the CPU cores, at least one (see
    /// [`RuntimeConfig::workers`]). Read at start only.
    pub worker_threads: usize,
    /// After a burst of connections has settled (a reconnect storm), hand the memory it freed
    /// back to the system instead of keeping the storm's peak.
    pub release_memory_after_bursts: bool,
}

impl RuntimeConfig {
    /// The worker threads to start: `worker_threads`, or when 0 half of `cores`, at least one.
    /// The gate's sessions spend most of their time in the kernel's TCP path, which runs on
    /// every core; measured on two cores next to the backend, one worker beat one per core on
    /// fetch and NOOP (logins were within the run's noise either way; bench/RESULTS.md). With one
    /// worker the gate runs tokio's single-threaded scheduler (no work stealing, no cross-thread
    /// wake-ups): one NOOP round trip through it costs 3% less CPU, and its latency went below
    /// nginx's (same run).
    pub fn workers(&self, cores: usize) -> usize {
        if self.worker_threads > 0 {
            self.worker_threads
        } else {
            (cores / 2).max(1)
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            worker_threads: 0,
            release_memory_after_bursts: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Unix socket for `imapgate reload|mailbox|sessions|kick`; created with mode 0600.
    pub control_socket: Option<PathBuf>,
    /// Where every change (browser, CLI, control socket) appends a line (as Exchange's
    /// administrator audit log); off when absent.
    pub audit_log: Option<PathBuf>,
}

/// The admin center in the browser (`[admin_web]`); off when the section is absent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminWebConfig {
    /// Address of the HTTPS listener.
    pub listen: SocketAddr,
    /// Certificate and key; `[imap4]`'s when absent (both reloaded with the configuration).
    pub certificate: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
    /// The administrators and their roles (`imapgate admin-user`).
    #[serde(default = "default_users_file")]
    pub users_file: PathBuf,
    /// A signed-in administrator who does nothing this long is signed out.
    #[serde(default = "default_session_idle", with = "humantime_serde_compat")]
    pub session_idle_timeout: Duration,
}

fn default_users_file() -> PathBuf {
    PathBuf::from("admins.toml")
}

fn default_session_idle() -> Duration {
    Duration::from_secs(15 * 60)
}

impl AdminWebConfig {
    /// The certificate and key the admin center presents: its own, else `[imap4]`'s.
    pub fn tls_files<'a>(&'a self, imap4: &'a Imap4) -> Option<(&'a PathBuf, &'a PathBuf)> {
        match (&self.certificate, &self.private_key) {
            (Some(c), Some(k)) => Some((c, k)),
            _ => imap4.certificate.as_ref().zip(imap4.private_key.as_ref()),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Refuse files others could change (see [`crate::permissions`]), as sshd's `StrictModes`.
    pub strict_modes: bool,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig { strict_modes: true }
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub imap4: Imap4,
    #[serde(default)]
    pub directory: DirectoryConfig,
    #[serde(default)]
    pub backends: BTreeMap<String, BackendConfig>,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub protocol_log: ProtocolLogConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub runtime: RuntimeConfig,
    #[serde(default)]
    pub security: SecurityConfig,
    /// The admin center; off when absent.
    pub admin_web: Option<AdminWebConfig>,
    /// State shared by a fleet of gates on Redis; off when absent.
    pub fleet: Option<FleetConfig>,
    /// Bearer tokens (OAUTHBEARER, XOAUTH2); not offered when absent.
    pub oauth: Option<OAuthConfig>,
    /// Where the file was read from; relative paths were resolved against its directory.
    #[serde(skip)]
    pub path: PathBuf,
}

/// `[oauth]`: sign-in with OAuth 2.0 bearer tokens.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct OAuthConfig {
    #[serde(default)]
    pub mode: OAuthMode,
    /// RFC 7662 endpoint (`mode = "introspect"`).
    pub introspection_url: Option<String>,
    /// The gate's client at the endpoint (HTTP Basic with the secret's first line).
    pub client_id: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    /// CA certificates for an https endpoint (system roots otherwise).
    pub ca: Option<PathBuf>,
    /// The claim naming the token's user (then `sub`).
    #[serde(default = "default_username_claim")]
    pub username_claim: String,
    /// How long a verdict is kept (never past the token's `exp`).
    #[serde(default = "default_oauth_cache", with = "humantime_serde_compat")]
    pub cache_ttl: Duration,
    /// Each introspection gets this long.
    #[serde(default = "default_oauth_timeout", with = "humantime_serde_compat")]
    pub timeout: Duration,
}

fn default_username_claim() -> String {
    "username".into()
}

fn default_oauth_cache() -> Duration {
    Duration::from_secs(60)
}

fn default_oauth_timeout() -> Duration {
    Duration::from_secs(5)
}

/// Who checks that a token belongs to the user it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OAuthMode {
    /// The mailbox's backend (Dovecot's oauth2 passdb compares the token's user with the
    /// login name): the gate resolves the named user and enforces the flag and limits.
    #[default]
    Backend,
    /// The gate first, with RFC 7662 token introspection, then the backend.
    Introspect,
}

/// `[fleet]`: gates sharing limits, the penalty and directory changes on Redis.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// `redis://host:port/db` (or `rediss://` for TLS); Valkey speaks the same protocol.
    pub redis: String,
    /// This gate's name in the fleet (default: the host name).
    pub node: Option<String>,
    /// How long a session counts on Redis without its gate renewing it: the sessions of a gate
    /// that died stop counting after this.
    #[serde(default = "default_lease", with = "humantime_serde_compat")]
    pub lease: Duration,
}

fn default_lease() -> Duration {
    Duration::from_secs(30)
}

impl FleetConfig {
    /// The node name in force.
    pub fn node_name(&self) -> String {
        self.node.clone().unwrap_or_else(|| {
            rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned()
        })
    }
}

impl BackendConfig {
    /// The name checked against the backend's certificate.
    pub fn tls_server_name(&self) -> String {
        self.server_name.clone().unwrap_or_else(|| {
            let first = self.address.first();
            let host = first.rsplit_once(':').map(|(h, _)| h).unwrap_or(first);
            strip_brackets(host)
        })
    }
}

pub(crate) fn strip_brackets(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}

/// Durations written the human way (`"30s"`, `"5m"`, `"1h"`).
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

mod ldap;
mod load;
pub use ldap::{DirectorySource, FlagFormat, LdapAttributes, LdapConfig, LdapSchema};

pub(crate) use load::{describe_toml_error, LineIndex};

#[cfg(test)]
mod tests;
