//! The mailbox directory: who may use IMAP4 and which backend holds each mailbox.
//!
//! [`Directory`] is the seam: an asynchronous source of mailboxes (the mailboxes file,
//! [`file`](mod@file), or an LDAP server, [`ldap`]) that resolves login names, lists mailboxes,
//! sets `ImapEnabled` and tells of changes; [`open`] picks the configured one. [`cache::CachedDirectory`] sits in front of any source with moka (one
//! lookup per name at a time, a negative TTL for names that resolve to nothing), and turns a
//! mailbox into the [`Policy`] the login path enforces. The login path, the reload's closing of
//! disabled sessions, and the operator's commands all go through the trait.

pub mod cache;
pub mod edit;
pub mod file;
pub mod index;
pub mod ldap;

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

pub use crate::metrics::DirectoryStats;
pub use cache::CachedDirectory;
pub use index::{Index, MailboxRecord};

use crate::errors::{Blame, Blamed};

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

impl Policy {
    /// The policy of a mailbox.
    pub fn of(view: &MailboxView) -> Policy {
        let backend_login = view.backend_login();
        Policy {
            mailbox: Some(view.label().into()),
            imap_enabled: view.imap_enabled,
            mailbox_key: mailbox_key(&view.backend, backend_login).into(),
            backend_login: backend_login.into(),
            backend: view.backend.as_str().into(),
        }
    }

    /// `[defaults]` for a name that names no mailbox, sent to the backend as typed.
    pub fn defaults(imap_enabled: bool, backend: &Arc<str>, login: &str) -> Policy {
        Policy {
            mailbox: None,
            imap_enabled,
            mailbox_key: mailbox_key(backend, login).into(),
            backend: backend.clone(),
            backend_login: login.into(),
        }
    }
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

pub use crate::config::UnknownNames;

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
    /// The user name this mailbox is logged in as on its backend ([`canonical_login`]).
    pub fn backend_login(&self) -> &str {
        canonical_login(
            self.login.as_deref(),
            self.email.as_deref(),
            self.upn.as_deref(),
            self.alias.as_deref(),
            self.domain_account.as_deref(),
        )
        .unwrap_or("")
    }

    /// The key of this mailbox ([`mailbox_key`]), as sessions carry it.
    pub fn key(&self) -> String {
        mailbox_key(&self.backend, self.backend_login())
    }

    /// True when `identity` names this mailbox in any form the admin commands accept: display
    /// name, alias, email, UPN, `DOMAIN\account` (or `DOMAIN/account`), GUID, backend login;
    /// case-insensitive.
    pub fn matches(&self, identity: &str) -> bool {
        let wanted = identity.to_lowercase().replace('/', "\\");
        self.names()
            .any(|v| v.to_lowercase().replace('/', "\\") == wanted)
    }

    /// True when `text` appears in one of the mailbox's names (case-insensitive), for searches.
    pub fn mentions(&self, text: &str) -> bool {
        let wanted = text.to_lowercase();
        self.names().any(|v| v.to_lowercase().contains(&wanted))
    }

    fn names(&self) -> impl Iterator<Item = &String> {
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

/// Which mailboxes a listing wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only those named by this identity (any form, exact, case-insensitive).
    pub identity: Option<String>,
    /// Only those with this `ImapEnabled`.
    pub imap_enabled: Option<bool>,
    /// Only those with this text in one of their names (case-insensitive).
    pub search: Option<String>,
}

impl Filter {
    pub fn all() -> Filter {
        Filter::default()
    }

    pub fn accepts(&self, v: &MailboxView) -> bool {
        self.identity.as_deref().is_none_or(|i| v.matches(i))
            && self.imap_enabled.is_none_or(|e| v.imap_enabled == e)
            && self.search.as_deref().is_none_or(|s| v.mentions(s))
    }
}

/// Which part of a listing: `limit` mailboxes from the `offset`th.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub offset: usize,
    pub limit: usize,
}

impl Page {
    /// Everything at once.
    pub const ALL: Page = Page {
        offset: 0,
        limit: usize::MAX,
    };
}

/// One page of a listing, and how many mailboxes the filter selects in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub mailboxes: Vec<MailboxView>,
    pub total: usize,
}

/// What `set_imap_enabled` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetOutcome {
    pub mailbox: MailboxView,
    pub created: bool,
    /// False when the source already said so (nothing was written).
    pub changed: bool,
}

/// A change of a directory: the mailbox whose settings changed, as it is now; `None` when
/// anything may have changed (an entry deleted, changes missed while reconnecting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub mailbox: Option<MailboxView>,
}

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: line {line}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no mailbox matches {identity:?}; add --create to create one (with an email address or alias as identity)")]
    NotFound { identity: String },
    #[error("{identity:?} matches {} mailboxes; use a unique identity (email, UPN, alias or GUID):\n{}", .matches.len(), .matches.join("\n"))]
    Ambiguous {
        identity: String,
        matches: Vec<String>,
    },
    #[error("--create needs an email address or an alias as identity, not {0:?}")]
    CannotCreate(String),
    /// The source could not answer (unreachable, failing).
    #[error("the directory could not answer: {0}")]
    Unavailable(String),
    /// The source refused the change (the LDAP bind account's rights).
    #[error("the directory refused the change: {0}")]
    Denied(String),
    #[error("no mailbox matches {0:?} in the directory")]
    NoSuchMailbox(String),
    #[error("{0}")]
    Unsupported(String),
}

impl Blamed for DirectoryError {
    /// The directory is the gate's own business.
    fn blame(&self) -> Blame {
        Blame::Gate
    }
}

/// A source of mailboxes. Implementations are cheap to share (`Arc<dyn Directory>`); a reload
/// of the gate opens a new one.
#[async_trait]
pub trait Directory: Send + Sync {
    /// The mailbox a login name designates (by its shape: `@`, `\`, else an alias), if any.
    async fn resolve(&self, name: &str) -> Result<Option<MailboxView>, DirectoryError>;

    /// The mailboxes `filter` selects, `page` of them, in the source's order.
    async fn list(&self, filter: &Filter, page: Page) -> Result<Listing, DirectoryError>;

    /// Turns IMAP4 on or off for the one mailbox `identity` names (any identity form); with
    /// `create`, a mailbox is created when none matches (where the source allows it).
    async fn set_imap_enabled(
        &self,
        identity: &str,
        enabled: bool,
        create: bool,
    ) -> Result<SetOutcome, DirectoryError>;

    /// What a name that names no mailbox gets under `unknown_names = "defaults"`.
    fn defaults(&self) -> (bool, Arc<str>);

    /// Changes made through this directory, as they are made (the gate follows them: the cache
    /// forgets, the sessions of a mailbox now disabled are closed).
    fn watch(&self) -> tokio::sync::broadcast::Receiver<Change>;
}

/// The configured directory: the mailboxes file, or LDAP (`[directory] source`). Opening reads
/// the file (or the LDAP bind password); an LDAP server is first contacted when first asked.
pub fn open(
    config: &crate::config::DirectoryConfig,
    backends: &[&str],
    stats: DirectoryStats,
) -> Result<Arc<dyn Directory>, DirectoryError> {
    match (&config.source, &config.ldap) {
        (crate::config::DirectorySource::Ldap, Some(ldap)) => {
            Ok(Arc::new(ldap::LdapDirectory::open(ldap, backends, stats)?))
        }
        _ => Ok(Arc::new(file::FileDirectory::open(
            &config.mailboxes,
            backends,
        )?)),
    }
}
