//! `[directory.ldap]`: where the mailboxes and their `ImapEnabled` live when `[directory] source
//! = "ldap"` (Active Directory with Exchange's attributes, or any LDAP server).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::humantime_serde_compat;

/// Where the directory comes from (`[directory] source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DirectorySource {
    /// The mailboxes file (`[directory] mailboxes`).
    #[default]
    File,
    /// An LDAP server (`[directory.ldap]`).
    Ldap,
}

/// Which attributes hold what (`schema`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LdapSchema {
    /// Active Directory with Exchange's attributes (`protocolSettings`, `mailNickname`, ...).
    #[default]
    Exchange,
    /// `[directory.ldap.attributes]` names each attribute.
    Custom,
}

/// How the attribute holding the flag says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FlagFormat {
    /// Exchange's multi-valued `protocolSettings`: `IMAP4§1§...` (enabled) or `IMAP4§0§...`.
    #[default]
    ProtocolSettings,
    /// A boolean attribute: `TRUE` or `FALSE`.
    Boolean,
}

/// The attributes read and written, per identity form.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapAttributes {
    /// The display name (the first one an entry has).
    #[serde(default)]
    pub display_name: Vec<String>,
    pub alias: Option<String>,
    /// The primary email address.
    pub email: Option<String>,
    /// Further addresses as `smtp:addr` values (`SMTP:` marks the primary one).
    pub proxy_addresses: Option<String>,
    pub upn: Option<String>,
    /// The account of `DOMAIN\account` (with `netbios_domain`).
    pub account: Option<String>,
    /// A binary GUID (`objectGUID`), shown in the usual text form.
    pub guid: Option<String>,
    /// Names the mailbox server (Exchange's `msExchHomeServerName`: its last `cn=`), mapped to
    /// a backend by `[directory.ldap.servers]`.
    pub server: Option<String>,
    /// The flag.
    pub imap_enabled: String,
    #[serde(default)]
    pub imap_enabled_format: FlagFormat,
}

impl LdapAttributes {
    /// Active Directory with Exchange.
    pub fn exchange() -> LdapAttributes {
        LdapAttributes {
            display_name: vec!["displayName".into(), "cn".into()],
            alias: Some("mailNickname".into()),
            email: Some("mail".into()),
            proxy_addresses: Some("proxyAddresses".into()),
            upn: Some("userPrincipalName".into()),
            account: Some("sAMAccountName".into()),
            guid: Some("objectGUID".into()),
            server: Some("msExchHomeServerName".into()),
            imap_enabled: "protocolSettings".into(),
            imap_enabled_format: FlagFormat::ProtocolSettings,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    /// Tried in order: the first that answers serves; one that fails waits a back-off.
    pub urls: Vec<String>,
    /// StartTLS on `ldap://` URLs (the bind password must not cross the network in clear).
    #[serde(default = "yes")]
    pub starttls: bool,
    /// CA certificates to trust instead of the system roots (PEM).
    pub ca: Option<PathBuf>,
    pub bind_dn: String,
    /// The bind password, on the first line of this file (a secret like a private key).
    pub bind_password_file: PathBuf,
    /// Where the mailboxes are searched (subtree).
    pub base_dn: String,
    /// ANDed with every search.
    #[serde(default = "default_filter")]
    pub filter: String,
    #[serde(default)]
    pub schema: LdapSchema,
    /// With `schema = "custom"`: the attributes.
    pub attributes: Option<LdapAttributes>,
    /// The `DOMAIN` of `DOMAIN\account` logins and identities.
    pub netbios_domain: Option<String>,
    /// The user name the backend knows the mailbox by.
    #[serde(default = "default_backend_login")]
    pub backend_login_attribute: String,
    /// A mailbox server named by the entry -> `[backends.NAME]`.
    #[serde(default)]
    pub servers: BTreeMap<String, String>,
    /// The backend of an entry that names no server (or one not in `servers`); the only
    /// backend when there is one.
    pub default_backend: Option<String>,
    /// Without an `IMAP4§` value (or the boolean attribute), IMAP4 is this (Exchange: enabled).
    #[serde(default = "yes")]
    pub default_imap_enabled: bool,
    /// Every LDAP operation (connect, bind, search, modify) gets this long.
    #[serde(default = "default_timeout", with = "humantime_serde_compat")]
    pub timeout: Duration,
    /// Bound connections kept (operations are multiplexed on each).
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Entries per page of a listing (RFC 2696 paged results).
    #[serde(default = "default_page_size")]
    pub page_size: i32,
    /// Follow changes made elsewhere as they happen (RFC 4533 refreshAndPersist) when the
    /// server offers it; otherwise they count within `cache_ttl`.
    #[serde(default = "yes")]
    pub follow_changes: bool,
}

fn yes() -> bool {
    true
}

fn default_filter() -> String {
    "(objectClass=user)".into()
}

fn default_backend_login() -> String {
    "sAMAccountName".into()
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_pool_size() -> usize {
    4
}

fn default_page_size() -> i32 {
    500
}

impl LdapConfig {
    /// The attributes in force: the preset's or the custom table.
    pub fn attributes(&self) -> LdapAttributes {
        match (&self.schema, &self.attributes) {
            (LdapSchema::Custom, Some(a)) => a.clone(),
            _ => LdapAttributes::exchange(),
        }
    }

    /// What `validate` refuses, as (key, message).
    pub fn check(&self, backends: &[&str]) -> Result<(), (String, String)> {
        let fail = |k: &str, m: &str| Err((format!("directory.ldap.{k}"), m.to_string()));
        if self.urls.is_empty() {
            return fail("urls", "at least one ldap:// or ldaps:// URL is needed");
        }
        for url in &self.urls {
            if !(url.starts_with("ldap://") || url.starts_with("ldaps://")) {
                return fail(
                    "urls",
                    &format!("{url:?} is not an ldap:// or ldaps:// URL"),
                );
            }
        }
        if self.schema == LdapSchema::Custom && self.attributes.is_none() {
            return fail(
                "attributes",
                "schema = \"custom\" needs a [directory.ldap.attributes] table",
            );
        }
        if self.schema == LdapSchema::Exchange && self.attributes.is_some() {
            return fail(
                "attributes",
                "only used with schema = \"custom\" (the exchange preset names its own)",
            );
        }
        if !(self.filter.starts_with('(') && self.filter.ends_with(')')) {
            return fail("filter", "must be an LDAP filter in parentheses");
        }
        if ldap3::parse_filter(&self.filter).is_err() {
            return fail("filter", "is not a valid LDAP filter");
        }
        for (server, backend) in &self.servers {
            if !backends.contains(&backend.as_str()) {
                return fail(
                    &format!("servers.{server}"),
                    &format!("names no [backends.{backend}]"),
                );
            }
        }
        match &self.default_backend {
            Some(b) if !backends.contains(&b.as_str()) => {
                return fail("default_backend", &format!("names no [backends.{b}]"));
            }
            None if backends.len() > 1 => {
                return fail(
                    "default_backend",
                    "needed with several [backends] (for entries naming no known server)",
                );
            }
            _ => {}
        }
        if self.timeout < Duration::from_millis(100) || self.timeout > Duration::from_secs(120) {
            return fail("timeout", "must be between 100ms and 2m");
        }
        if !(1..=64).contains(&self.pool_size) {
            return fail("pool_size", "must be between 1 and 64");
        }
        if !(1..=10_000).contains(&self.page_size) {
            return fail("page_size", "must be between 1 and 10000");
        }
        Ok(())
    }

    /// The backend entries go to when they name no known server.
    pub fn fallback_backend<'a>(&'a self, backends: &[&'a str]) -> &'a str {
        self.default_backend
            .as_deref()
            .or_else(|| backends.first().copied())
            .unwrap_or("")
    }
}
