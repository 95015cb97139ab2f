//! Reading the configuration file: TOML parsing with errors that name the file and line,
//! relative paths resolved against the file's directory, and the checks serde cannot make.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{BackendTls, Config, ConfigError, LoginType};

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
        if let Some(ldap) = config.directory.ldap.as_mut() {
            resolve(&mut ldap.bind_password_file);
            if let Some(p) = ldap.ca.as_mut() {
                resolve(p);
            }
        }
        if let Some(p) = config.admin.control_socket.as_mut() {
            resolve(p);
        }
        if let Some(p) = config.admin.audit_log.as_mut() {
            resolve(p);
        }
        if let Some(web) = config.admin_web.as_mut() {
            for p in [web.certificate.as_mut(), web.private_key.as_mut()]
                .into_iter()
                .flatten()
            {
                resolve(p);
            }
            resolve(&mut web.users_file);
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
        match (self.directory.source, &self.directory.ldap) {
            (super::DirectorySource::Ldap, None) => {
                return Err(self.invalid(
                    "directory.ldap",
                    "source = \"ldap\" needs a [directory.ldap] section",
                ))
            }
            (super::DirectorySource::Ldap, Some(ldap)) => {
                let names: Vec<&str> = self.backends.keys().map(String::as_str).collect();
                if let Err((key, message)) = ldap.check(&names) {
                    return Err(self.invalid(&key, message));
                }
            }
            (super::DirectorySource::File, Some(_)) => {
                return Err(self.invalid(
                    "directory.source",
                    "[directory.ldap] is set but source is \"file\": set source = \"ldap\" or remove it",
                ))
            }
            (super::DirectorySource::File, None) => {}
        }
        if let Some(web) = &self.admin_web {
            if web.certificate.is_some() != web.private_key.is_some() {
                return Err(self.invalid(
                    "admin_web.certificate",
                    "certificate and private_key must be set together",
                ));
            }
            if web.tls_files(&self.imap4).is_none() {
                return Err(self.invalid(
                    "admin_web.certificate",
                    "the admin center is HTTPS only: set a certificate here or in [imap4]",
                ));
            }
            if web.session_idle_timeout < Duration::from_secs(1)
                || web.session_idle_timeout > Duration::from_secs(24 * 3600)
            {
                return Err(self.invalid(
                    "admin_web.session_idle_timeout",
                    "must be between 1s and 24h",
                ));
            }
        }
        if let Some(oauth) = &self.oauth {
            if oauth.mode == super::OAuthMode::Introspect && oauth.introspection_url.is_none() {
                return Err(self.invalid(
                    "oauth.introspection_url",
                    "needed with mode = \"introspect\"",
                ));
            }
            if oauth.client_id.is_some() != oauth.client_secret_file.is_some() {
                return Err(self.invalid(
                    "oauth.client_id",
                    "client_id and client_secret_file go together",
                ));
            }
            if oauth.timeout < Duration::from_millis(100) || oauth.timeout > Duration::from_secs(60)
            {
                return Err(self.invalid("oauth.timeout", "must be between 100ms and 1m"));
            }
            if oauth.cache_ttl > Duration::from_secs(3600) {
                return Err(self.invalid("oauth.cache_ttl", "must be at most 1h"));
            }
        }
        if let Some(fleet) = &self.fleet {
            if !(fleet.redis.starts_with("redis://") || fleet.redis.starts_with("rediss://")) {
                return Err(self.invalid("fleet.redis", "expected a redis:// or rediss:// URL"));
            }
            if redis::Client::open(fleet.redis.as_str()).is_err() {
                return Err(self.invalid("fleet.redis", "not a valid Redis URL"));
            }
            if fleet.lease < Duration::from_secs(5) || fleet.lease > Duration::from_secs(300) {
                return Err(self.invalid("fleet.lease", "must be between 5s and 5m"));
            }
            if fleet.node.as_deref().is_some_and(|n| {
                n.is_empty()
                    || !n
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            }) {
                return Err(self.invalid("fleet.node", "letters, digits, '-', '_' and '.' only"));
            }
        }
        if self.backends.is_empty() {
            return Err(self.invalid("backends", "at least one [backends.NAME] is needed"));
        }
        for (name, b) in &self.backends {
            let key = format!("backends.{name}.address");
            if b.address.0.is_empty() {
                return Err(self.invalid(&key, "expected host:port or a list of them"));
            }
            for address in b.address.iter() {
                let Some((host, port)) = address.rsplit_once(':') else {
                    return Err(self.invalid(&key, format!("{address:?}: expected host:port")));
                };
                if host.is_empty() || port.parse::<u16>().is_err() {
                    return Err(self.invalid(&key, format!("{address:?}: expected host:port")));
                }
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
            if let Some(m) = b.mechanisms.as_ref().and_then(|list| {
                list.iter().find(|m| {
                    !["PLAIN", "LOGIN", "OAUTHBEARER", "XOAUTH2"]
                        .contains(&m.to_ascii_uppercase().as_str())
                })
            }) {
                return Err(self.invalid(
                    &format!("backends.{name}.mechanisms"),
                    format!("{m:?}: expected PLAIN, LOGIN, OAUTHBEARER or XOAUTH2"),
                ));
            }
            if b.health_check_interval < Duration::from_secs(1)
                || b.health_check_interval > Duration::from_secs(3600)
            {
                return Err(self.invalid(
                    &format!("backends.{name}.health_check_interval"),
                    "must be between 1s and 1h",
                ));
            }
            if b.tls != BackendTls::None {
                let server_name = b.tls_server_name();
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
