//! One snapshot of a directory's mailboxes, indexed by every login name, with the defaults for
//! what a mailbox does not set. A source (the file today) builds an [`Index`] from its records;
//! lookups, listings and identity matching then work alike whatever the source.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;

use super::{label_of, login_key, MailboxView, NameForm, Policy};

/// One mailbox as a source stores it. Every identity field is optional, but a mailbox needs at
/// least one login name (alias, email, upn or domain_account).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MailboxRecord {
    /// Display name ("John Smith").
    pub name: Option<String>,
    pub alias: Option<String>,
    pub email: Option<String>,
    pub upn: Option<String>,
    pub domain_account: Option<String>,
    pub guid: Option<String>,
    /// User name sent to the backend; when absent, the first of email, upn, alias and
    /// domain_account ([`MailboxRecord::backend_login`]).
    pub login: Option<String>,
    /// Exchange's `ImapEnabled`; `[defaults] imap_enabled` when absent.
    pub imap_enabled: Option<bool>,
    pub backend: Option<String>,
    /// Where the record is in its source (the line of the file's `[[mailbox]]` header).
    #[serde(skip)]
    pub line: usize,
}

impl MailboxRecord {
    /// The names a client may log in with, with the field each comes from.
    pub fn login_names(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("alias", &self.alias),
            ("email", &self.email),
            ("upn", &self.upn),
            ("domain_account", &self.domain_account),
        ]
        .into_iter()
        .filter_map(|(field, value)| value.as_deref().map(|v| (field, v)))
    }

    /// The user name this mailbox is logged in as on its backend ([`super::canonical_login`]).
    /// Every mailbox has one: a source refuses a mailbox without a login name.
    pub fn backend_login(&self) -> &str {
        super::canonical_login(
            self.login.as_deref(),
            self.email.as_deref(),
            self.upn.as_deref(),
            self.alias.as_deref(),
            self.domain_account.as_deref(),
        )
        .unwrap_or_default()
    }

    /// What logs and admin output call this mailbox.
    pub fn display_name(&self) -> &str {
        label_of([
            &self.name,
            &self.email,
            &self.upn,
            &self.alias,
            &self.domain_account,
        ])
    }
}

/// An immutable, validated snapshot of a directory.
#[derive(Debug)]
pub struct Index {
    pub mailboxes: Vec<Arc<MailboxRecord>>,
    pub default_imap_enabled: bool,
    pub default_backend: Arc<str>,
    index: HashMap<(NameForm, String), usize>,
}

impl Index {
    /// Builds the indexes; two mailboxes claiming the same login name is an error naming both.
    pub fn build(
        mailboxes: Vec<MailboxRecord>,
        default_imap_enabled: bool,
        default_backend: Arc<str>,
    ) -> Result<Index, (usize, String)> {
        let mut index: HashMap<(NameForm, String), usize> = HashMap::new();
        for (i, m) in mailboxes.iter().enumerate() {
            // The backend login is indexed too: logging in with the backend's own user name
            // must find the mailbox (and its ImapEnabled).
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
        Ok(Index {
            mailboxes: mailboxes.into_iter().map(Arc::new).collect(),
            default_imap_enabled,
            default_backend,
            index,
        })
    }

    /// True when `login` is one of a mailbox's names.
    pub fn knows(&self, login: &str) -> bool {
        self.index.contains_key(&login_key(login))
    }

    /// The mailbox a login name designates, if any.
    pub fn find(&self, login: &str) -> Option<&Arc<MailboxRecord>> {
        self.index
            .get(&login_key(login))
            .map(|&i| &self.mailboxes[i])
    }

    /// A mailbox with the defaults applied.
    pub fn view(&self, m: &MailboxRecord) -> MailboxView {
        MailboxView {
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
        }
    }

    /// Every mailbox with defaults applied, in the source's order.
    pub fn views(&self) -> Vec<MailboxView> {
        self.mailboxes.iter().map(|m| self.view(m)).collect()
    }

    /// The policy for a login name; `None` when it names no mailbox. A mailbox's backend
    /// `login` is one of its names too (and may belong to no other mailbox), so typing the
    /// backend's user name finds the same mailbox and the same ImapEnabled.
    pub fn policy(&self, login: &str) -> Option<Policy> {
        self.find(login).map(|m| Policy::of(&self.view(m)))
    }

    /// What a name that matches no mailbox gets under `unknown_names = "defaults"`:
    /// `[defaults]`, logged in on the backend as typed.
    pub fn default_policy(&self, login: &str) -> Policy {
        Policy::defaults(self.default_imap_enabled, &self.default_backend, login)
    }
}
