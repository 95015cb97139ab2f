//! The open sessions, so that a reload can find and close the sessions of mailboxes that became
//! disabled, and the operator can list (`imapgate sessions`) and close (`imapgate kick`) them.
//!
//! A session registers when its login has been accepted by the backend and before the gate
//! checks the policy one last time, so a reload either happens before that check (which then
//! sees the new directory) or finds the session here. The entry is removed when the
//! [`Registration`] is dropped, on every exit path.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::watch;

/// Why a session is being closed from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kick {
    /// A reload made the mailbox's ImapEnabled false.
    Disabled,
    /// `imapgate kick`.
    Admin,
}

/// Bytes moved by a relayed session, updated as they move.
#[derive(Debug, Default)]
pub struct Counters {
    pub from_client: AtomicU64,
    pub from_backend: AtomicU64,
}

/// What is known of a session once its user has logged in.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub id: u64,
    /// The login name the client used.
    pub user: String,
    /// The directory's name for the mailbox, when it is in the directory.
    pub mailbox: Option<String>,
    pub client: SocketAddr,
    pub listener: &'static str,
    pub backend: String,
    pub since: SystemTime,
    pub counters: Arc<Counters>,
}

/// A session as `imapgate sessions` shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct SessionView {
    pub id: String,
    pub user: String,
    pub mailbox: Option<String>,
    pub client: String,
    pub listener: String,
    pub backend: String,
    /// Seconds since the Unix epoch.
    pub since: u64,
    pub bytes_from_client: u64,
    pub bytes_from_backend: u64,
}

struct Entry {
    info: SessionInfo,
    kick: watch::Sender<Option<Kick>>,
}

#[derive(Default)]
pub struct Registry {
    sessions: Mutex<HashMap<u64, Entry>>,
}

/// Removes its session from the registry when dropped.
pub struct Registration {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}

impl Registry {
    /// The table, even after a panic elsewhere poisoned the lock: entries stay consistent
    /// (every change is a single insert or remove).
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a session; the receiver turns `Some` when the session must close.
    pub fn register(
        self: &Arc<Self>,
        info: SessionInfo,
    ) -> (Registration, watch::Receiver<Option<Kick>>) {
        let (tx, rx) = watch::channel(None);
        let id = info.id;
        self.lock().insert(id, Entry { info, kick: tx });
        (
            Registration {
                registry: self.clone(),
                id,
            },
            rx,
        )
    }

    /// Asks every session matching `pred` to close; returns how many were asked.
    pub fn kick_where(&self, kick: Kick, pred: impl Fn(&SessionInfo) -> bool) -> usize {
        let s = self.lock();
        let mut n = 0;
        for entry in s.values().filter(|e| pred(&e.info)) {
            entry.kick.send_if_modified(|k| {
                if k.is_none() {
                    *k = Some(kick);
                    n += 1;
                    true
                } else {
                    false
                }
            });
        }
        n
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn list(&self) -> Vec<SessionView> {
        let s = self.lock();
        let mut v: Vec<SessionView> = s
            .values()
            .map(|e| {
                let i = &e.info;
                SessionView {
                    id: format!("{:08x}", i.id),
                    user: i.user.clone(),
                    mailbox: i.mailbox.clone(),
                    client: i.client.to_string(),
                    listener: i.listener.to_string(),
                    backend: i.backend.clone(),
                    since: i
                        .since
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0),
                    bytes_from_client: i.counters.from_client.load(Ordering::Relaxed),
                    bytes_from_backend: i.counters.from_backend.load(Ordering::Relaxed),
                }
            })
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }
}
