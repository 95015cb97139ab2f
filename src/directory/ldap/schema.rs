//! Where each identity form and the flag live in the directory's entries, and the filters and
//! modifications that follow from it. Pure functions, unit-tested.
//!
//! Exchange keeps IMAP4 in `protocolSettings`, a multi-valued string whose IMAP4 value reads
//! `IMAP4§<enabled>§...` (fields joined by `§`, U+00A7); without such a value IMAP4 is enabled.
//! Disabling writes one; enabling flips its first field; nothing else is touched.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ldap3::{ldap_escape, Mod};

use super::ber::Entry;
use crate::config::{FlagFormat, LdapAttributes, LdapConfig};
use crate::directory::{Filter, MailboxView, NameForm};

/// The value a first disabling writes (Exchange's, with IMAP4 off).
pub const IMAP4_DISABLED: &str = "IMAP4§0§1§4§ISO-8859-1§0§1§0§0";
const IMAP4_PREFIX: &str = "IMAP4§";

/// The directory's layout, from `[directory.ldap]`.
#[derive(Debug, Clone)]
pub struct Schema {
    pub attrs: LdapAttributes,
    netbios: Option<String>,
    login_attribute: String,
    /// Server name (lowercase) -> backend.
    servers: HashMap<String, String>,
    pub fallback_backend: Arc<str>,
    pub default_enabled: bool,
    /// ANDed with every search.
    base_filter: String,
}

impl Schema {
    pub fn new(config: &LdapConfig, backends: &[&str]) -> Schema {
        Schema {
            attrs: config.attributes(),
            netbios: config.netbios_domain.clone(),
            login_attribute: config.backend_login_attribute.clone(),
            servers: config
                .servers
                .iter()
                .map(|(k, v)| (k.to_lowercase(), v.clone()))
                .collect(),
            fallback_backend: config.fallback_backend(backends).into(),
            default_enabled: config.default_imap_enabled,
            base_filter: config.filter.clone(),
        }
    }

    /// Every attribute a mailbox is built from.
    pub fn read_attributes(&self) -> Vec<String> {
        let a = &self.attrs;
        let mut names: Vec<String> = a.display_name.clone();
        names.extend(
            [
                &a.alias,
                &a.email,
                &a.proxy_addresses,
                &a.upn,
                &a.account,
                &a.guid,
                &a.server,
            ]
            .into_iter()
            .flatten()
            .cloned(),
        );
        names.push(a.imap_enabled.clone());
        names.push(self.login_attribute.clone());
        let mut seen = HashSet::new();
        names.retain(|n| seen.insert(n.to_lowercase()));
        names
    }

    /// The attribute holding the flag.
    pub fn flag_attribute(&self) -> &str {
        &self.attrs.imap_enabled
    }

    /// The mailbox an entry describes, with defaults applied.
    pub fn view(&self, e: &Entry) -> MailboxView {
        let a = &self.attrs;
        let get =
            |attr: &Option<String>| attr.as_deref().and_then(|n| e.first(n)).map(String::from);
        let name = a
            .display_name
            .iter()
            .find_map(|n| e.first(n))
            .map(String::from);
        let email = get(&a.email).or_else(|| {
            let proxy = a.proxy_addresses.as_deref()?;
            e.strings(proxy)
                .find_map(|v| v.strip_prefix("SMTP:"))
                .map(String::from)
        });
        let domain_account = match (&self.netbios, get(&a.account)) {
            (Some(domain), Some(account)) => Some(format!("{domain}\\{account}")),
            _ => None,
        };
        let guid = a.guid.as_deref().and_then(|g| {
            let value = e.values(g).next()?;
            Some(match <[u8; 16]>::try_from(value) {
                Ok(bytes) => guid_text(&bytes),
                Err(_) => String::from_utf8_lossy(value).into_owned(),
            })
        });
        let backend = a
            .server
            .as_deref()
            .and_then(|s| e.first(s))
            .and_then(home_server)
            .and_then(|server| self.servers.get(&server.to_lowercase()))
            .cloned()
            .unwrap_or_else(|| self.fallback_backend.to_string());
        MailboxView {
            name,
            alias: get(&a.alias),
            email,
            upn: get(&a.upn),
            domain_account,
            guid,
            login: e.first(&self.login_attribute).map(String::from),
            backend,
            imap_enabled: self.imap_enabled(e),
        }
    }

    /// The entry's IMAP4 setting.
    pub fn imap_enabled(&self, e: &Entry) -> bool {
        let values: Vec<&str> = e.strings(&self.attrs.imap_enabled).collect();
        match self.attrs.imap_enabled_format {
            FlagFormat::ProtocolSettings => imap4_setting(&values).unwrap_or(self.default_enabled),
            FlagFormat::Boolean => match values.first() {
                Some(v) if v.eq_ignore_ascii_case("TRUE") => true,
                Some(v) if v.eq_ignore_ascii_case("FALSE") => false,
                // Anything else is not a yes: fail closed.
                Some(_) => false,
                None => self.default_enabled,
            },
        }
    }

    /// The filter finding the mailbox a login name designates: the name against every login
    /// attribute (alias, email, other addresses, UPN, account, backend login; `DOMAIN\account`
    /// against the account when the domain is ours). `None` when no entry can match.
    pub fn login_filter(&self, name: &str) -> Option<String> {
        let a = &self.attrs;
        let clauses = if NameForm::of(name) == NameForm::DomainAccount {
            let (domain, account) = name.split_once(['\\', '/'])?;
            let ours = self.netbios.as_deref()?;
            if !domain.eq_ignore_ascii_case(ours) || account.is_empty() {
                return None;
            }
            vec![eq(a.account.as_deref()?, account)]
        } else {
            let mut c: Vec<String> = [&a.alias, &a.email, &a.upn, &a.account]
                .into_iter()
                .flatten()
                .map(|attr| eq(attr, name))
                .collect();
            if let Some(p) = &a.proxy_addresses {
                c.push(eq(p, &format!("smtp:{name}")));
            }
            c.push(eq(&self.login_attribute, name));
            c
        };
        Some(self.and(&any(clauses)))
    }

    /// The filter finding the mailboxes an administrator's identity names: any login name,
    /// the display name, or the GUID.
    pub fn identity_filter(&self, identity: &str) -> String {
        let a = &self.attrs;
        let mut clauses: Vec<String> = a.display_name.iter().map(|n| eq(n, identity)).collect();
        if let Some(login) = self.login_filter(identity) {
            clauses.push(login);
        }
        if let Some(g) = &a.guid {
            if let Some(bytes) = guid_bytes(identity.trim_matches(['{', '}'])) {
                clauses.push(format!("({g}={})", escape_bytes(&bytes)));
            }
        }
        self.and(&any(clauses))
    }

    /// The filter of a listing: identity, search text, and the flag, server-side.
    pub fn list_filter(&self, filter: &Filter) -> String {
        let mut parts = Vec::new();
        if let Some(identity) = &filter.identity {
            parts.push(self.identity_filter(identity));
        }
        if let Some(text) = filter.search.as_deref().filter(|t| !t.is_empty()) {
            let a = &self.attrs;
            let value = ldap_escape(text);
            let clauses = a
                .display_name
                .iter()
                .chain(
                    [&a.alias, &a.email, &a.upn, &a.account]
                        .into_iter()
                        .flatten(),
                )
                .chain(std::iter::once(&self.login_attribute))
                .map(|attr| format!("({attr}=*{value}*)"))
                .collect();
            parts.push(any(clauses));
        }
        if let Some(enabled) = filter.imap_enabled {
            parts.push(self.flag_filter(enabled));
        }
        let mut all = self.base_filter.clone();
        for p in parts {
            all.push_str(&p);
        }
        format!("(&{all})")
    }

    /// The entries whose IMAP4 setting is `enabled`.
    fn flag_filter(&self, enabled: bool) -> String {
        let attr = &self.attrs.imap_enabled;
        let (set, unset) = match self.attrs.imap_enabled_format {
            FlagFormat::ProtocolSettings => {
                (format!("({attr}=IMAP4§1*)"), format!("({attr}=IMAP4§0*)"))
            }
            FlagFormat::Boolean => (format!("({attr}=TRUE)"), format!("({attr}=FALSE)")),
        };
        // What says the default is what does not say the other value.
        match (enabled, self.default_enabled) {
            (true, true) => format!("(!{unset})"),
            (true, false) => set,
            (false, true) => unset,
            (false, false) => format!("(!{set})"),
        }
    }

    /// What every search is ANDed with (`[directory.ldap] filter`).
    pub fn base_filter(&self) -> &str {
        &self.base_filter
    }

    fn and(&self, clause: &str) -> String {
        format!("(&{}{clause})", self.base_filter)
    }

    /// The modification that makes `e`'s IMAP4 setting `enabled`; `None` when it already is.
    /// Only the flag's own value changes: other protocols' values stay as they are.
    pub fn flag_change(&self, e: &Entry, enabled: bool) -> Option<Vec<Mod<String>>> {
        if self.imap_enabled(e) == enabled {
            return None;
        }
        let attr = self.attrs.imap_enabled.clone();
        match self.attrs.imap_enabled_format {
            FlagFormat::ProtocolSettings => {
                let current: Vec<&str> = e.strings(&attr).filter(|v| is_imap4(v)).collect();
                if current.is_empty() {
                    let value = with_imap4(IMAP4_DISABLED, enabled);
                    return Some(vec![Mod::Add(attr, HashSet::from([value]))]);
                }
                let old: HashSet<String> = current.iter().map(|v| v.to_string()).collect();
                let new: HashSet<String> = current.iter().map(|v| with_imap4(v, enabled)).collect();
                Some(vec![Mod::Delete(attr.clone(), old), Mod::Add(attr, new)])
            }
            FlagFormat::Boolean => {
                let value = if enabled { "TRUE" } else { "FALSE" };
                Some(vec![Mod::Replace(attr, HashSet::from([value.to_string()]))])
            }
        }
    }
}

fn eq(attr: &str, value: &str) -> String {
    format!("({attr}={})", ldap_escape(value))
}

fn any(clauses: Vec<String>) -> String {
    match clauses.len() {
        1 => clauses.into_iter().next().unwrap_or_default(),
        _ => format!("(|{})", clauses.concat()),
    }
}

fn is_imap4(value: &str) -> bool {
    value
        .get(..IMAP4_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(IMAP4_PREFIX))
}

/// The IMAP4 setting among `protocolSettings` values: `None` without an IMAP4 value. A value
/// whose first field is not `1` reads as disabled (fail closed), as does any of several that is.
pub fn imap4_setting(values: &[&str]) -> Option<bool> {
    let mut found = None;
    for v in values.iter().filter(|v| is_imap4(v)) {
        let enabled = v[IMAP4_PREFIX.len()..].split('§').next() == Some("1");
        found = Some(found.unwrap_or(true) && enabled);
    }
    found
}

/// `value` (an IMAP4 value) with its first field set for `enabled`, the rest unchanged.
pub fn with_imap4(value: &str, enabled: bool) -> String {
    let rest = &value[IMAP4_PREFIX.len().min(value.len())..];
    let after_first = rest.find('§').map_or("", |i| &rest[i..]);
    format!("{IMAP4_PREFIX}{}{after_first}", if enabled { 1 } else { 0 })
}

/// The mailbox server an `msExchHomeServerName` names: the last `cn=` of Exchange's
/// slash-separated form (`/o=Org/.../cn=Servers/cn=MBX01`), or the first of a comma-separated
/// DN (`CN=MBX01,CN=Servers,...`).
pub fn home_server(value: &str) -> Option<&str> {
    fn cn(part: &str) -> Option<&str> {
        let part = part.trim();
        part.get(..3)
            .filter(|p| p.eq_ignore_ascii_case("cn="))
            .and_then(|_| part.get(3..))
            .filter(|s| !s.is_empty())
    }
    if value.contains('/') {
        value.rsplit('/').find_map(cn)
    } else {
        value.split(',').find_map(cn)
    }
}

/// Active Directory's text form of an `objectGUID`: the first three fields little-endian.
pub fn guid_text(b: &[u8; 16]) -> String {
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    )
}

/// The 16 bytes of a GUID in text form (`8-4-4-4-12` hex digits).
pub fn guid_bytes(text: &str) -> Option<[u8; 16]> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    let groups: Vec<usize> = text.split('-').map(str::len).collect();
    if hex.len() != 32 || groups != [8, 4, 4, 4, 12] {
        return None;
    }
    let mut raw = [0u8; 16];
    for (i, byte) in raw.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    let order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
    let mut out = [0u8; 16];
    for (i, &from) in order.iter().enumerate() {
        out[i] = raw[from];
    }
    Some(out)
}

/// Bytes as an LDAP filter value (`\xx` each).
pub fn escape_bytes(b: &[u8]) -> String {
    b.iter().map(|x| format!("\\{x:02x}")).collect()
}

#[cfg(test)]
mod tests;
