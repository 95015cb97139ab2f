//! The LDAP directory (`[directory] source = "ldap"`): mailboxes and their `ImapEnabled` where an
//! organisation keeps them, in Active Directory with Exchange's attributes or in any LDAP server
//! ([`schema`]).
//!
//! - A login is one search per cache miss (the cache in front is [`super::CachedDirectory`]): the
//!   typed name against every login attribute, escaped (RFC 4515); two matches refuse the name.
//! - Listings are paged (RFC 2696) and filtered by the server, so 100,000 entries list without
//!   holding them.
//! - A change is one LDAP modify of the flag's own value ([`schema::Schema::flag_change`]); the
//!   bind account's rights are the only authority.
//! - Changes made elsewhere are followed as they happen where the server offers content
//!   synchronization (RFC 4533 refreshAndPersist, [`sync`]); otherwise within `cache_ttl`.
//! - Every operation has the configured timeout; the connections fail over across the URLs
//!   ([`pool`]). An unreachable directory is an error, never a yes.

mod ber;
mod pool;
pub mod schema;
mod sync;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{Scope, SearchOptions};
use tokio::sync::broadcast;

pub use ber::Entry;
use pool::{describe, rc, Connector, Pool};
use schema::Schema;

use super::{Change, Directory, DirectoryError, Filter, Listing, MailboxView, Page, SetOutcome};
use crate::config::LdapConfig;
use crate::credentials::Secret;
use crate::metrics::DirectoryStats;

pub struct LdapDirectory {
    schema: Arc<Schema>,
    pool: Arc<Pool>,
    base_dn: String,
    page_size: i32,
    follow_changes: bool,
    changes: broadcast::Sender<Change>,
    follower: OnceLock<AbortOnDrop>,
    stats: DirectoryStats,
}

/// Aborts the task following the server's changes when the directory goes (a reload).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl LdapDirectory {
    /// Reads the bind password and the CA; connects only when first used.
    pub fn open(
        config: &LdapConfig,
        backends: &[&str],
        stats: DirectoryStats,
    ) -> Result<LdapDirectory, DirectoryError> {
        let path = &config.bind_password_file;
        let text = std::fs::read(path).map_err(|source| DirectoryError::Read {
            path: path.clone(),
            source,
        })?;
        let first = text.split(|&b| b == b'\n').next().unwrap_or_default();
        let password = first.strip_suffix(b"\r").unwrap_or(first);
        if password.is_empty() || std::str::from_utf8(password).is_err() {
            return Err(DirectoryError::Parse {
                path: path.clone(),
                message: "the first line must be the bind password (UTF-8, not empty)".into(),
            });
        }
        let tls =
            crate::tls::client_config(config.ca.as_deref()).map_err(|e| DirectoryError::Parse {
                path: config.ca.clone().unwrap_or_default(),
                message: e.to_string(),
            })?;
        let connector = Connector::new(
            config.urls.clone(),
            config.starttls,
            tls,
            config.bind_dn.clone(),
            Secret::new(password.to_vec()),
            config.timeout,
        );
        Ok(LdapDirectory {
            schema: Arc::new(Schema::new(config, backends)),
            pool: Arc::new(Pool::new(Arc::new(connector), config.pool_size)),
            base_dn: config.base_dn.clone(),
            page_size: config.page_size,
            follow_changes: config.follow_changes,
            changes: broadcast::channel(256).0,
            follower: OnceLock::new(),
            stats,
        })
    }

    fn timeout(&self) -> Duration {
        self.pool.connector.timeout
    }

    /// The entries `filter` selects, at most `limit` (more than `limit` are not asked for:
    /// `limit + 1` tells an ambiguity). One retry on a new connection after a connection error.
    async fn search(&self, filter: &str, limit: i32) -> Result<Vec<Entry>, DirectoryError> {
        let attrs = self.schema.read_attributes();
        let mut last = String::new();
        for _ in 0..2 {
            let lent = self.pool.get().await.map_err(DirectoryError::Unavailable)?;
            let mut ldap = lent.ldap.clone();
            let answer = ldap
                .with_search_options(SearchOptions::new().sizelimit(limit))
                .with_timeout(self.timeout())
                .search(&self.base_dn, Scope::Subtree, filter, &attrs)
                .await;
            match answer {
                Ok(ldap3::SearchResult(entries, result)) => {
                    // sizeLimitExceeded (4) still returns the entries found.
                    if result.rc != 0 && result.rc != 4 {
                        let e = ldap3::LdapError::LdapResult { result };
                        return Err(DirectoryError::Unavailable(format!(
                            "search under {}: {}",
                            self.base_dn,
                            describe(&e)
                        )));
                    }
                    return Ok(entries.iter().filter_map(ber::entry).collect());
                }
                Err(e) => {
                    self.pool.failed(&lent, &e).await;
                    last = describe(&e);
                    if rc(&e).is_some() {
                        break;
                    }
                }
            }
        }
        Err(DirectoryError::Unavailable(format!(
            "search under {}: {last}",
            self.base_dn
        )))
    }

    /// The one entry `identity` names (any identity form).
    async fn one(&self, identity: &str) -> Result<Entry, DirectoryError> {
        let mut found = self
            .search(&self.schema.identity_filter(identity), 2)
            .await?;
        match found.len() {
            0 => Err(DirectoryError::NoSuchMailbox(identity.to_string())),
            1 => Ok(found.remove(0)),
            _ => Err(DirectoryError::Ambiguous {
                identity: identity.to_string(),
                matches: found.iter().map(|e| e.dn.clone()).collect(),
            }),
        }
    }

    /// `check-config`: connects, binds and searches once; says which step failed.
    pub async fn probe(&self) -> Result<String, String> {
        let ldap = self.pool.connector.connect().await?;
        drop(ldap);
        let found = self
            .search(&self.schema.list_filter(&Filter::all()), 1)
            .await
            .map_err(|e| e.to_string())?;
        Ok(format!(
            "bound as {}, searched {} ({})",
            self.pool.connector.bind_dn,
            self.base_dn,
            if found.is_empty() {
                "no mailbox found: check base_dn and filter"
            } else {
                "mailboxes found"
            }
        ))
    }

    fn record(&self, outcome: &'static str, started: Instant) {
        self.stats.lookup(outcome, started.elapsed());
    }
}

#[async_trait]
impl Directory for LdapDirectory {
    async fn resolve(&self, name: &str) -> Result<Option<MailboxView>, DirectoryError> {
        let Some(filter) = self.schema.login_filter(name) else {
            return Ok(None);
        };
        let started = Instant::now();
        let found = match self.search(&filter, 2).await {
            Ok(found) => found,
            Err(e) => {
                self.record("error", started);
                return Err(e);
            }
        };
        match found.as_slice() {
            [] => {
                self.record("not_found", started);
                Ok(None)
            }
            [one] => {
                self.record("found", started);
                Ok(Some(self.schema.view(one)))
            }
            many => {
                self.record("ambiguous", started);
                tracing::warn!(
                    entries = many.len(),
                    "a login name matches several directory entries; refused"
                );
                Ok(None)
            }
        }
    }

    async fn list(&self, filter: &Filter, page: Page) -> Result<Listing, DirectoryError> {
        let query = self.schema.list_filter(filter);
        let attrs = self.schema.read_attributes();
        let lent = self.pool.get().await.map_err(DirectoryError::Unavailable)?;
        let mut ldap = lent.ldap.clone();
        let adapters: Vec<Box<dyn Adapter<_, _>>> = vec![
            Box::new(EntriesOnly::new()),
            Box::new(PagedResults::new(self.page_size)),
        ];
        let failed = |e: ldap3::LdapError| {
            DirectoryError::Unavailable(format!("listing under {}: {}", self.base_dn, describe(&e)))
        };
        let mut stream = ldap
            .streaming_search_with(adapters, &self.base_dn, Scope::Subtree, &query, attrs)
            .await
            .map_err(failed)?;
        let mut listing = Listing {
            mailboxes: Vec::new(),
            total: 0,
        };
        let end = page.offset.saturating_add(page.limit);
        loop {
            let next = tokio::time::timeout(self.timeout(), stream.next())
                .await
                .map_err(|_| {
                    DirectoryError::Unavailable(format!(
                        "listing under {}: no answer in {:?}",
                        self.base_dn,
                        self.timeout()
                    ))
                })?;
            match next {
                Ok(Some(re)) => {
                    if (page.offset..end).contains(&listing.total) {
                        if let Some(e) = ber::entry(&re) {
                            listing.mailboxes.push(self.schema.view(&e));
                        }
                    }
                    listing.total += 1;
                }
                Ok(None) => break,
                Err(e) => {
                    self.pool.failed(&lent, &e).await;
                    return Err(failed(e));
                }
            }
        }
        let result = stream.finish().await;
        if result.rc != 0 {
            return Err(failed(ldap3::LdapError::LdapResult { result }));
        }
        Ok(listing)
    }

    async fn set_imap_enabled(
        &self,
        identity: &str,
        enabled: bool,
        create: bool,
    ) -> Result<SetOutcome, DirectoryError> {
        // A value changed by someone else between the read and the write makes the modify
        // fail (the old value is named); read again and retry.
        for _ in 0..3 {
            let entry = match self.one(identity).await {
                Err(DirectoryError::NoSuchMailbox(_)) if create => {
                    return Err(DirectoryError::Unsupported(
                        "the LDAP directory does not create mailboxes: create the user there"
                            .into(),
                    ))
                }
                other => other?,
            };
            let Some(mods) = self.schema.flag_change(&entry, enabled) else {
                return Ok(SetOutcome {
                    mailbox: self.schema.view(&entry),
                    created: false,
                    changed: false,
                });
            };
            let lent = self.pool.get().await.map_err(DirectoryError::Unavailable)?;
            let mut ldap = lent.ldap.clone();
            let answer = ldap
                .with_timeout(self.timeout())
                .modify(&entry.dn, mods)
                .await
                .and_then(|r| r.success());
            match answer {
                Ok(_) => {
                    let mailbox = match self.one(identity).await {
                        Ok(now) => self.schema.view(&now),
                        Err(_) => MailboxView {
                            imap_enabled: enabled,
                            ..self.schema.view(&entry)
                        },
                    };
                    let _ = self.changes.send(Change {
                        mailbox: Some(mailbox.clone()),
                    });
                    return Ok(SetOutcome {
                        mailbox,
                        created: false,
                        changed: true,
                    });
                }
                Err(e) if matches!(rc(&e), Some(16 | 20)) => continue,
                Err(e) if rc(&e) == Some(50) => {
                    return Err(DirectoryError::Denied(format!(
                        "the bind account {} may not change {} of {}: {} (grant it write access to that attribute)",
                        self.pool.connector.bind_dn,
                        self.schema.flag_attribute(),
                        entry.dn,
                        describe(&e)
                    )))
                }
                Err(e) => {
                    self.pool.failed(&lent, &e).await;
                    return Err(DirectoryError::Unavailable(format!(
                        "modify {}: {}",
                        entry.dn,
                        describe(&e)
                    )));
                }
            }
        }
        Err(DirectoryError::Unavailable(format!(
            "{identity:?}: its {} kept changing while being written; try again",
            self.schema.flag_attribute()
        )))
    }

    fn defaults(&self) -> (bool, Arc<str>) {
        (
            self.schema.default_enabled,
            self.schema.fallback_backend.clone(),
        )
    }

    fn watch(&self) -> broadcast::Receiver<Change> {
        let receiver = self.changes.subscribe();
        if self.follow_changes {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                self.follower.get_or_init(|| {
                    AbortOnDrop(runtime.spawn(sync::follow(
                        self.pool.clone(),
                        self.schema.clone(),
                        self.base_dn.clone(),
                        self.changes.clone(),
                    )))
                });
            }
        }
        receiver
    }
}
