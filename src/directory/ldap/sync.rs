//! Following changes made elsewhere (another admin tool, `ldapmodify`, replication) as they
//! happen, with RFC 4533 content synchronization in refreshAndPersist mode (OpenLDAP's
//! `syncprov`): one long search on a connection of its own.
//!
//! The refresh stage (the directory's current content, names only: the search asks for no
//! attribute) is skipped; in the persist stage each added or modified entry is read again and
//! announced as a [`Change`], which the gate applies (the cache forgets, the sessions of a
//! mailbox now disabled close). A deleted entry, or anything missed while reconnecting, is
//! announced as a change of everything. A server without content synchronization is said once
//! in the log; its changes then count within `cache_ttl`.

use std::sync::Arc;
use std::time::Duration;

use ldap3::controls::{MakeCritical, RefreshMode, SyncRequest};
use ldap3::Scope;
use tokio::sync::broadcast;

use super::ber::{self, SyncInfo, SyncState};
use super::pool::{describe, rc, Pool};
use super::schema::Schema;
use crate::directory::Change;

const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);

enum End {
    /// The server does not offer content synchronization (or refused the request).
    Unsupported(String),
    /// The connection or the search ended; `persisted` when it had reached the persist stage.
    Lost { why: String, persisted: bool },
}

/// Runs until aborted (the directory is dropped at a reload).
pub async fn follow(
    pool: Arc<Pool>,
    schema: Arc<Schema>,
    base_dn: String,
    changes: broadcast::Sender<Change>,
) {
    let mut first = true;
    let mut retry = FIRST_RETRY;
    loop {
        match session(&pool, &schema, &base_dn, &changes, first).await {
            End::Unsupported(why) => {
                tracing::info!(
                    reason = %why,
                    "the directory server does not offer content synchronization (RFC 4533): changes made elsewhere count within cache_ttl"
                );
                return;
            }
            End::Lost { why, persisted } => {
                if persisted {
                    retry = FIRST_RETRY;
                }
                tracing::warn!(error = %why, retry_in = ?retry, "following the directory's changes: connection lost");
            }
        }
        first = false;
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(MAX_RETRY);
    }
}

async fn session(
    pool: &Pool,
    schema: &Schema,
    base_dn: &str,
    changes: &broadcast::Sender<Change>,
    first: bool,
) -> End {
    let mut ldap = match pool.connector.connect().await {
        Ok(l) => l,
        Err(why) => {
            return End::Lost {
                why,
                persisted: false,
            }
        }
    };
    let request = SyncRequest {
        mode: RefreshMode::RefreshAndPersist,
        cookie: None,
        reload_hint: false,
    }
    .critical();
    let filter = schema.list_filter(&crate::directory::Filter::all());
    let mut stream = match ldap
        .with_controls(request)
        .streaming_search(base_dn, Scope::Subtree, &filter, vec!["1.1"])
        .await
    {
        Ok(s) => s,
        Err(e) => {
            return End::Lost {
                why: describe(&e),
                persisted: false,
            }
        }
    };
    let mut persisting = false;
    loop {
        let item = match stream.next().await {
            Ok(Some(item)) => item,
            Ok(None) => break,
            Err(e) => {
                return End::Lost {
                    why: describe(&e),
                    persisted: persisting,
                }
            }
        };
        if item.is_intermediate() {
            if !persisting && ber::sync_info(&item) == Some(SyncInfo::RefreshDone) {
                persisting = true;
                tracing::info!("following the directory's changes (RFC 4533 refreshAndPersist)");
                if !first {
                    // Changes made while the connection was down were not seen: everything.
                    let _ = changes.send(Change { mailbox: None });
                }
            }
            continue;
        }
        if !persisting {
            continue;
        }
        let Some(entry) = ber::entry(&item) else {
            continue;
        };
        let change = match ber::sync_state(&item.1) {
            Some(SyncState::Present) => continue,
            Some(SyncState::Add | SyncState::Modify) => Change {
                mailbox: read(pool, schema, &entry.dn).await,
            },
            Some(SyncState::Delete) | None => Change { mailbox: None },
        };
        tracing::debug!(dn = %entry.dn, "directory change seen");
        let _ = changes.send(change);
    }
    let result = stream.finish().await;
    let e = ldap3::LdapError::LdapResult { result };
    match rc(&e) {
        // unavailableCriticalExtension, protocolError, unwillingToPerform: not offered here.
        Some(12 | 2 | 53) if !persisting => End::Unsupported(describe(&e)),
        _ => End::Lost {
            why: format!("the synchronization search ended: {}", describe(&e)),
            persisted: persisting,
        },
    }
}

/// The mailbox at `dn` as it is now; `None` when it is gone or no longer a mailbox.
async fn read(pool: &Pool, schema: &Schema, dn: &str) -> Option<crate::directory::MailboxView> {
    let lent = pool.get().await.ok()?;
    let mut ldap = lent.ldap.clone();
    let attrs = schema.read_attributes();
    let answer = ldap
        .with_timeout(pool.connector.timeout)
        .search(dn, Scope::Base, schema.base_filter(), &attrs)
        .await;
    match answer {
        Ok(ldap3::SearchResult(entries, _)) => {
            entries.iter().find_map(ber::entry).map(|e| schema.view(&e))
        }
        Err(e) => {
            pool.failed(&lent, &e).await;
            None
        }
    }
}
