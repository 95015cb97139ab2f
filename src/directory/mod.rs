//! The mailbox directory: who may use IMAP4 and which backend holds each mailbox.
//!
//! A [`Directory`] is an immutable snapshot read from the mailboxes file ([`file`](mod@file)); a reload builds a
//! new one aside and swaps it in whole. [`PolicyCache`] puts a moka cache in front of identity
//! resolution, as Exchange caches per-mailbox settings; a cache belongs to one snapshot, so a reload
//! that installs a new snapshot starts from an empty cache and no lookup in flight can put an old
//! answer into the new one.

pub mod file;

use std::collections::HashMap;
use std::sync::Arc;

pub use file::{DirectoryError, MailboxRecord};

/// What the gate decides at login for one login name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The mailbox's name in the directory, `None` when the name matched no mailbox (defaults
    /// apply, with `unknown_names = "defaults"` only).
    pub mailbox: Option<Arc<str>>,
    /// Exchange's `ImapEnabled`.
    pub imap_enabled: bool,
    /// Name of the `[backends.NAME]` entry holding the mailbox.
    pub backend: Arc<str>,
    /// The user name the backend is sent: the mailbox's canonical login
    /// ([`canonical_login`]), never another spelling the client typed. Only a name let in by
    /// `unknown_names = "defaults"` is sent as typed.
    pub backend_login: Arc<str>,
    /// What limits, kicks and logs count as one mailbox ([`mailbox_key`]).
    pub mailbox_key: Arc<str>,
}

/// The one rule for "one mailbox": its backend and its canonical backend login, case-folded.
/// Every spelling of a mailbox's names gives the same key.
pub fn mailbox_key(backend: &str, backend_login: &str) -> String {
    format!("{backend}/{}", backend_login.to_lowercase())
}

/// The user name a mailbox is logged in as on its backend: its `login`, else its `email`,
/// `upn`, `alias`, `domain_account`, in that order.
pub fn canonical_login<'a>(
    login: Option<&'a str>,
    email: Option<&'a str>,
    upn: Option<&'a str>,
    alias: Option<&'a str>,
    domain_account: Option<&'a str>,
) -> Option<&'a str> {
    login.or(email).or(upn).or(alias).or(domain_account)
}

/// What a login name that matches no mailbox gets (`[directory] unknown_names`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
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

/// Which index a login name is looked up in, by its shape (as Exchange resolves login names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NameForm {
    /// Contains `@`: an email address or a user principal name.
    Address,
    /// Contains `\` or `/`: `DOMAIN\account`.
    DomainAccount,
    /// Anything else: an alias.
    Alias,
}

impl NameForm {
    pub fn of(name: &str) -> NameForm {
        if name.contains('@') {
            NameForm::Address
        } else if name.contains(['\\', '/']) {
            NameForm::DomainAccount
        } else {
            NameForm::Alias
        }
    }
}

/// The lookup key of a login name: its form and its case-folded text (`/` read as `\`).
pub fn login_key(name: &str) -> (NameForm, String) {
    let form = NameForm::of(name);
    let mut folded = name.to_lowercase();
    if form == NameForm::DomainAccount {
        folded = folded.replace('/', "\\");
    }
    (form, folded)
}

/// An immutable, validated snapshot of the mailboxes file.
#[derive(Debug)]
pub struct Directory {
    pub mailboxes: Vec<Arc<MailboxRecord>>,
    pub default_imap_enabled: bool,
    pub default_backend: Arc<str>,
    index: HashMap<(NameForm, String), usize>,
}

impl Directory {
    /// Builds the indexes; two mailboxes claiming the same login name is an error naming both lines.
    pub(crate) fn build(
        mailboxes: Vec<MailboxRecord>,
        default_imap_enabled: bool,
        default_backend: Arc<str>,
    ) -> Result<Directory, (usize, String)> {
        let mut index: HashMap<(NameForm, String), usize> = HashMap::new();
        for (i, m) in mailboxes.iter().enumerate() {
            // The backend login is indexed too: logging in with the backend's own user name
            // must find the mailbox (and its ImapEnabled), not fall through to [defaults].
            for (field, value) in m
                .login_names()
                .chain(m.login.as_deref().map(|l| ("login", l)))
            {
                let key = login_key(value);
                let expected = match field {
                    "alias" => NameForm::Alias,
                    "domain_account" => NameForm::DomainAccount,
                    "login" => key.0,
                    _ => NameForm::Address,
                };
                if key.0 != expected {
                    return Err((
                        m.line,
                        format!("{field} = {value:?} is not of the form a {field} takes"),
                    ));
                }
                if let Some(&other) = index.get(&key) {
                    if other != i {
                        return Err((
                            m.line,
                            format!(
                                "{field} = {value:?} is already used by the mailbox at line {}",
                                mailboxes[other].line
                            ),
                        ));
                    }
                }
                index.insert(key, i);
            }
        }
        Ok(Directory {
            mailboxes: mailboxes.into_iter().map(Arc::new).collect(),
            default_imap_enabled,
            default_backend,
            index,
        })
    }

    /// The mailbox a login name designates, if any.
    pub fn find(&self, login: &str) -> Option<&Arc<MailboxRecord>> {
        self.index
            .get(&login_key(login))
            .map(|&i| &self.mailboxes[i])
    }

    /// Every mailbox with defaults applied, in file order.
    pub fn views(&self) -> Vec<MailboxView> {
        self.mailboxes
            .iter()
            .map(|m| MailboxView {
                name: m.name.clone(),
                alias: m.alias.clone(),
                email: m.email.clone(),
                upn: m.upn.clone(),
                domain_account: m.domain_account.clone(),
                guid: m.guid.clone(),
                login: m.login.clone(),
                backend: m
                    .backend
                    .clone()
                    .unwrap_or_else(|| self.default_backend.to_string()),
                imap_enabled: m.imap_enabled.unwrap_or(self.default_imap_enabled),
            })
            .collect()
    }

    /// The policy for a login name, without the cache; `None` when it names no mailbox. A
    /// mailbox's backend `login` is one of its names too (and may belong to no other mailbox),
    /// so typing the backend's user name finds the same mailbox and the same ImapEnabled.
    pub fn policy(&self, login: &str) -> Option<Policy> {
        let m = self.find(login)?;
        let backend: Arc<str> = m
            .backend
            .as_deref()
            .map(Arc::from)
            .unwrap_or_else(|| self.default_backend.clone());
        let backend_login = m.backend_login();
        Some(Policy {
            mailbox: Some(m.display_name().into()),
            imap_enabled: m.imap_enabled.unwrap_or(self.default_imap_enabled),
            mailbox_key: mailbox_key(&backend, backend_login).into(),
            backend_login: backend_login.into(),
            backend,
        })
    }

    /// What a name that matches no mailbox gets under `unknown_names = "defaults"`:
    /// `[defaults]`, logged in on the backend as typed.
    pub fn default_policy(&self, login: &str) -> Policy {
        Policy {
            mailbox: None,
            imap_enabled: self.default_imap_enabled,
            mailbox_key: mailbox_key(&self.default_backend, login).into(),
            backend: self.default_backend.clone(),
            backend_login: login.into(),
        }
    }
}

/// A mailbox with its effective settings (defaults applied), as the admin commands show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MailboxView {
    pub name: Option<String>,
    pub alias: Option<String>,
    pub email: Option<String>,
    pub upn: Option<String>,
    pub domain_account: Option<String>,
    pub guid: Option<String>,
    pub login: Option<String>,
    pub backend: String,
    pub imap_enabled: bool,
}

impl MailboxView {
    /// The key of this mailbox ([`mailbox_key`]), as sessions carry it.
    pub fn key(&self) -> String {
        let login = canonical_login(
            self.login.as_deref(),
            self.email.as_deref(),
            self.upn.as_deref(),
            self.alias.as_deref(),
            self.domain_account.as_deref(),
        )
        .unwrap_or("");
        mailbox_key(&self.backend, login)
    }

    /// True when `identity` names this mailbox in any form the admin commands accept: display
    /// name, alias, email, UPN, `DOMAIN\account` (or `DOMAIN/account`), GUID, backend login;
    /// case-insensitive.
    pub fn matches(&self, identity: &str) -> bool {
        let wanted = identity.to_lowercase().replace('/', "\\");
        [
            &self.name,
            &self.alias,
            &self.email,
            &self.upn,
            &self.domain_account,
            &self.guid,
            &self.login,
        ]
        .into_iter()
        .flatten()
        .any(|v| v.to_lowercase().replace('/', "\\") == wanted)
    }

    /// What tables and messages call this mailbox.
    pub fn label(&self) -> &str {
        label_of([
            &self.name,
            &self.email,
            &self.upn,
            &self.alias,
            &self.domain_account,
        ])
    }
}

/// The first name a mailbox has, in the order display name, email, UPN, alias, DOMAIN\account.
fn label_of(names: [&Option<String>; 5]) -> &str {
    names
        .into_iter()
        .flatten()
        .next()
        .map(String::as_str)
        .unwrap_or("")
}

/// Positions in `views` of the mailboxes `identity` names.
pub fn find_identity(views: &[MailboxView], identity: &str) -> Vec<usize> {
    views
        .iter()
        .enumerate()
        .filter(|(_, v)| v.matches(identity))
        .map(|(i, _)| i)
        .collect()
}

/// Hit and miss counters, shared by the successive caches of a running gate.
#[derive(Clone, Default)]
pub struct CacheStats {
    pub hits: prometheus_client::metrics::counter::Counter,
    pub misses: prometheus_client::metrics::counter::Counter,
}

/// Identity resolution through a moka cache, bound to one directory snapshot.
pub struct PolicyCache {
    directory: Arc<Directory>,
    cache: moka::sync::Cache<(NameForm, String), Arc<Policy>>,
    unknown: UnknownNames,
    /// Characters that mean something to backends (Dovecot's master-user separator `*`): a
    /// name with one of them is refused before any backend sees it.
    refused: Vec<char>,
    stats: CacheStats,
}

impl PolicyCache {
    pub fn new(
        directory: Arc<Directory>,
        config: &crate::config::DirectoryConfig,
        stats: CacheStats,
    ) -> PolicyCache {
        PolicyCache {
            stats,
            directory,
            unknown: config.unknown_names,
            refused: config.refused_login_characters.chars().collect(),
            cache: moka::sync::Cache::builder()
                .max_capacity(config.cache_capacity)
                .time_to_live(config.cache_ttl)
                .build(),
        }
    }

    pub fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }

    /// True when `login` carries a character backends give a meaning to.
    pub fn has_refused_character(&self, login: &str) -> bool {
        login.contains(self.refused.as_slice())
    }

    /// True for a character backends give a meaning to.
    pub fn is_refused(&self, c: char) -> bool {
        self.refused.contains(&c)
    }

    /// The policy for `login`, from the cache when present; `None` when the name may not log
    /// in at all (no such mailbox under `unknown_names = "refuse"`, or a refused character).
    /// Names that match no mailbox are never cached: whoever tries names without a password
    /// cannot fill the cache.
    pub fn resolve(&self, login: &str) -> Option<Arc<Policy>> {
        if self.has_refused_character(login) {
            return None;
        }
        let key = login_key(login);
        if !self.directory.index.contains_key(&key) {
            return match self.unknown {
                UnknownNames::Refuse => None,
                UnknownNames::Defaults => Some(Arc::new(self.directory.default_policy(login))),
            };
        }
        if let Some(hit) = self.cache.get(&key) {
            self.stats.hits.inc();
            return Some(hit);
        }
        self.stats.misses.inc();
        let policy = self.directory.policy(login)?;
        Some(self.cache.get_with(key, || Arc::new(policy)))
    }

    pub fn cached_entries(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }
}
