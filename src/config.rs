//! The daemon's configuration file (`imapgate.toml`): serde structs with defaults, and `validate()`.
//!
//! Names follow Exchange's `Set-ImapSettings` where a counterpart exists (`login_type`,
//! `unencrypted_or_tls_bindings`, `ssl_bindings`, `banner`). Relative paths in the file (certificate,
//! private key, mailboxes file, backend CA) are resolved against the directory that holds the
//! configuration file, not the process's working directory, so a unit file and a shell give the same
//! result.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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
            sni_certificates: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DirectoryConfig {
    /// The mailboxes file (`config/mailboxes.toml`).
    pub mailboxes: PathBuf,
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
            mailboxes: PathBuf::from("mailboxes.toml"),
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
    /// `host:port` of the backend IMAP server.
    pub address: String,
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

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Threads serving sessions; 0 means one per CPU core. Read at start only.
    pub worker_threads: usize,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Unix socket for `imapgate reload|mailbox|sessions|kick`; created with mode 0600.
    pub control_socket: Option<PathBuf>,
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
    /// Where the file was read from; relative paths were resolved against its directory.
    #[serde(skip)]
    pub path: PathBuf,
}

impl Config {
    /// Reads, resolves relative paths and validates the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses `text` as if read from `path` (used by `load` and by tests).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: describe_toml_error(text, &e),
        })?;
        config.path = path.to_path_buf();
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(p) = config.imap4.certificate.as_mut() {
            resolve(p);
        }
        if let Some(p) = config.imap4.private_key.as_mut() {
            resolve(p);
        }
        resolve(&mut config.directory.mailboxes);
        if let Some(p) = config.admin.control_socket.as_mut() {
            resolve(p);
        }
        resolve(&mut config.protocol_log.directory);
        for sni in config.imap4.sni_certificates.iter_mut() {
            resolve(&mut sni.certificate);
            resolve(&mut sni.private_key);
        }
        for backend in config.backends.values_mut() {
            if let Some(p) = backend.ca.as_mut() {
                resolve(p);
            }
        }
        config.validate()?;
        Ok(config)
    }

    fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.clone(),
            key: key.into(),
            message: message.into(),
        }
    }

    /// Checks what serde cannot: cross-field rules and ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let i = &self.imap4;
        if i.unencrypted_or_tls_bindings.is_empty() && i.ssl_bindings.is_empty() {
            return Err(self.invalid(
                "imap4.unencrypted_or_tls_bindings",
                "no listener: set unencrypted_or_tls_bindings and/or ssl_bindings",
            ));
        }
        if i.certificate.is_some() != i.private_key.is_some() {
            return Err(self.invalid(
                "imap4.certificate",
                "certificate and private_key must be set together",
            ));
        }
        if i.certificate.is_none() {
            if !i.ssl_bindings.is_empty() {
                return Err(self.invalid(
                    "imap4.ssl_bindings",
                    "implicit-TLS listeners need imap4.certificate and imap4.private_key",
                ));
            }
            if i.login_type != LoginType::PlainTextLogin {
                return Err(self.invalid(
                    "imap4.login_type",
                    "without a certificate no client could ever log in; set a certificate or use \"plain-text-login\"",
                ));
            }
        }
        if !(1024..=65536).contains(&i.max_command_size) {
            return Err(self.invalid("imap4.max_command_size", "must be between 1024 and 65536"));
        }
        let secs = Duration::from_secs;
        for (key, value, min, max) in [
            (
                "imap4.preauthenticated_connection_timeout",
                i.preauthenticated_connection_timeout,
                secs(1),
                secs(3600),
            ),
            // Exchange allows 30 s..1 h; 1 s..1 day here. Under 30 min cuts IDLE clients, which
            // re-issue IDLE only every 29 minutes (RFC 9051).
            (
                "imap4.authenticated_connection_timeout",
                i.authenticated_connection_timeout,
                secs(1),
                secs(86400),
            ),
            (
                "imap4.tls_handshake_timeout",
                i.tls_handshake_timeout,
                secs(1),
                secs(300),
            ),
            (
                "imap4.shutdown_grace",
                i.shutdown_grace,
                Duration::ZERO,
                secs(3600),
            ),
            (
                "directory.cache_ttl",
                self.directory.cache_ttl,
                Duration::ZERO,
                secs(86400),
            ),
            (
                "directory.negative_cache_ttl",
                self.directory.negative_cache_ttl,
                Duration::ZERO,
                secs(3600),
            ),
        ] {
            if value < min || value > max {
                return Err(self.invalid(
                    key,
                    format!(
                        "must be between {} and {}",
                        humantime::format_duration(min),
                        humantime::format_duration(max)
                    ),
                ));
            }
        }
        if !(i.pressure_threshold > 0.0 && i.pressure_threshold <= 1.0) {
            return Err(self.invalid(
                "imap4.pressure_threshold",
                "must be a share of max_connections, above 0 and at most 1",
            ));
        }
        // (Longer than preauthenticated_connection_timeout is allowed: it only ever shortens.)
        if i.preauthenticated_connection_timeout_under_pressure < Duration::from_secs(1)
            || i.preauthenticated_connection_timeout_under_pressure > Duration::from_secs(3600)
        {
            return Err(self.invalid(
                "imap4.preauthenticated_connection_timeout_under_pressure",
                "must be between 1s and 1h",
            ));
        }
        if i.banner.contains(['\r', '\n']) || i.disabled_message.contains(['\r', '\n']) {
            return Err(self.invalid("imap4.banner", "texts sent to clients must be one line"));
        }
        for (key, value) in [
            ("imap4.max_connections", i.max_connections.unwrap_or(1)),
            (
                "imap4.max_connections_from_single_ip",
                i.max_connections_from_single_ip,
            ),
            ("imap4.max_connections_per_user", i.max_connections_per_user),
            (
                "imap4.max_preauth_connections_from_single_ip",
                i.max_preauth_connections_from_single_ip,
            ),
            (
                "imap4.max_logins_in_progress_from_single_ip",
                i.max_logins_in_progress_from_single_ip,
            ),
        ] {
            if value == 0 {
                return Err(self.invalid(key, "must be at least 1 (2147483647 means unlimited)"));
            }
        }
        if !i.sni_certificates.is_empty() && i.certificate.is_none() {
            return Err(self.invalid(
                "imap4.sni_certificates",
                "needs a default imap4.certificate as well",
            ));
        }
        if self.protocol_log.queue == 0 {
            return Err(self.invalid("protocol_log.queue", "must be at least 1"));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(self.invalid(
                "log.level",
                "not a tracing filter (e.g. \"info\" or \"imapgate=debug\")",
            ));
        }
        if self.directory.cache_capacity == 0 {
            return Err(self.invalid("directory.cache_capacity", "must be at least 1"));
        }
        if self.backends.is_empty() {
            return Err(self.invalid("backends", "at least one [backends.NAME] is needed"));
        }
        for (name, b) in &self.backends {
            let key = format!("backends.{name}.address");
            let Some((host, port)) = b.address.rsplit_once(':') else {
                return Err(self.invalid(&key, "expected host:port"));
            };
            if host.is_empty() || port.parse::<u16>().is_err() {
                return Err(self.invalid(&key, "expected host:port"));
            }
            for (what, value) in [
                ("connect_timeout", b.connect_timeout),
                ("login_timeout", b.login_timeout),
            ] {
                if value < Duration::from_millis(100) || value > Duration::from_secs(300) {
                    return Err(self.invalid(
                        &format!("backends.{name}.{what}"),
                        "must be between 100ms and 5m",
                    ));
                }
            }
            if b.tls != BackendTls::None {
                let server_name = b
                    .server_name
                    .clone()
                    .unwrap_or_else(|| strip_brackets(host));
                if tokio_rustls::rustls::pki_types::ServerName::try_from(server_name).is_err() {
                    return Err(self.invalid(
                        &format!("backends.{name}.server_name"),
                        "not a valid DNS name or IP address",
                    ));
                }
            }
        }
        Ok(())
    }
}

impl BackendConfig {
    /// The name checked against the backend's certificate.
    pub fn tls_server_name(&self) -> String {
        self.server_name.clone().unwrap_or_else(|| {
            let host = self
                .address
                .rsplit_once(':')
                .map(|(h, _)| h)
                .unwrap_or(&self.address);
            strip_brackets(host)
        })
    }
}

fn strip_brackets(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}

/// A toml error with its line and column, which `toml` reports as a byte span.
pub(crate) fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    // One line: a log event is one line, and the toml crate's messages have several.
    let message = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    match e.span() {
        Some(span) => {
            let (line, col) = line_col(text, span.start);
            format!("line {line}, column {col}: {message}")
        }
        None => message,
    }
}

/// 1-based line and column of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    LineIndex::new(text).line_col(offset)
}

/// Line starts of a text, for many offset-to-line lookups in one pass over the text.
pub(crate) struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub(crate) fn new(text: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(memchr::memchr_iter(b'\n', text.as_bytes()).map(|i| i + 1));
        LineIndex { starts }
    }

    /// 1-based line and column of a byte offset.
    pub(crate) fn line_col(&self, offset: usize) -> (usize, usize) {
        let line = self.starts.partition_point(|&s| s <= offset);
        let col = offset - self.starts[line.saturating_sub(1)] + 1;
        (line, col)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_resolve_against_the_config_directory() {
        let text = r#"
[imap4]
unencrypted_or_tls_bindings = ["127.0.0.1:143"]
certificate = "certs/gate.pem"
private_key = "/abs/key.pem"
[directory]
mailboxes = "mailboxes.toml"
cache_ttl = "5m"
[backends.main]
address = "127.0.0.1:1993"
"#;
        let c = Config::parse(Path::new("/etc/imapgate/imapgate.toml"), text).unwrap();
        assert_eq!(
            c.imap4.certificate.unwrap(),
            Path::new("/etc/imapgate/certs/gate.pem")
        );
        assert_eq!(c.imap4.private_key.unwrap(), Path::new("/abs/key.pem"));
        assert_eq!(
            c.directory.mailboxes,
            Path::new("/etc/imapgate/mailboxes.toml")
        );
        assert_eq!(c.directory.cache_ttl, Duration::from_secs(300));
        assert_eq!(c.imap4.login_type, LoginType::SecureLogin);
    }

    #[test]
    fn durations_out_of_range_are_refused() {
        let base = "[imap4]\nunencrypted_or_tls_bindings=[\"127.0.0.1:1\"]\nlogin_type=\"plain-text-login\"\n";
        let backend = "[backends.b]\naddress=\"h:1\"\n";
        for (extra, key) in [
            (
                "preauthenticated_connection_timeout = \"500000000000years\"\n",
                "preauthenticated",
            ),
            (
                "authenticated_connection_timeout = \"500ms\"\n",
                "authenticated_connection_timeout",
            ),
        ] {
            let text = format!("{base}{extra}{backend}");
            let e = Config::parse(Path::new("/x/g.toml"), &text).unwrap_err();
            assert!(e.to_string().contains(key), "{e}");
        }
        let text = format!("{base}{backend}connect_timeout = \"0s\"\n");
        let e = Config::parse(Path::new("/x/g.toml"), &text).unwrap_err();
        assert!(e.to_string().contains("backends.b.connect_timeout"), "{e}");
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let e = Config::parse(Path::new("/x/gate.toml"), "[imap4]\nbogus = 1\n").unwrap_err();
        let s = e.to_string();
        assert!(s.contains("/x/gate.toml") && s.contains("line 2"), "{s}");
        let e = Config::parse(
            Path::new("/x/gate.toml"),
            "[imap4]\nunencrypted_or_tls_bindings=[\"127.0.0.1:1\"]\nlogin_type=\"plain-text-login\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("backends"), "{e}");
    }
}
