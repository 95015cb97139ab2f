//! The open sessions, so that a reload can find and close the sessions of mailboxes that became
//! disabled, and the operator can list (`imapgate sessions`) and close (`imapgate kick`) them.
//!
//! A session registers when its login has been accepted by the backend and before the gate
//! checks the policy one last time, so a reload either happens before that check (which then
//! sees the new directory) or finds the session here. The entry is removed when the
//! [`Registration`] is dropped, on every exit path.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use atomic_waker::AtomicWaker;
use serde::Serialize;

use crate::protocol_log::SessionLog;

/// Why a session is being closed from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kick {
    /// A reload made the mailbox's ImapEnabled false.
    Disabled,
    /// `imapgate kick`.
    Admin,
    /// No byte moved for `authenticated_connection_timeout` (found by the sweeper).
    Idle,
    /// The gate's shutdown grace period is over.
    Shutdown,
}

impl Kick {
    fn code(self) -> u8 {
        match self {
            Kick::Disabled => 1,
            Kick::Admin => 2,
            Kick::Idle => 3,
            Kick::Shutdown => 4,
        }
    }

    fn from_code(code: u8) -> Option<Kick> {
        match code {
            1 => Some(Kick::Disabled),
            2 => Some(Kick::Admin),
            3 => Some(Kick::Idle),
            4 => Some(Kick::Shutdown),
            _ => None,
        }
    }
}

/// A session's id as logs, the protocol log and `imapgate sessions` show it.
pub fn session_id(id: u64) -> String {
    format!("{id:08x}")
}

/// What is known of a session once its user has logged in.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub id: u64,
    /// The login name the client used.
    pub user: String,
    /// The directory's name for the mailbox, when it is in the directory.
    pub mailbox: Option<String>,
    /// One mailbox, whatever name the client typed ([`crate::directory::mailbox_key`]): what
    /// limits and kicks count.
    pub mailbox_key: String,
    /// The user name the backend was sent.
    pub backend_login: String,
    pub client: SocketAddr,
    /// The gate's address the client connected to (for the protocol log).
    pub server: SocketAddr,
    pub listener: &'static str,
    pub backend: String,
    pub since: SystemTime,
}

/// A logged-in session as the rest of the gate sees it: shared between the session's relay
/// (which counts bytes and watches for a kick) and the registry, the sweeper and the admin
/// commands. It is all a relayed session keeps besides its two sockets and its task.
#[derive(Debug)]
pub struct SessionEntry {
    pub info: SessionInfo,
    /// Bytes moved, updated by the relay as they move.
    pub from_client: AtomicU64,
    pub from_backend: AtomicU64,
    kick: AtomicU8,
    waker: AtomicWaker,
    /// The sweeper's bookkeeping: bytes seen at its last pass and since when they have not
    /// changed (milliseconds on the registry's clock), what the metrics already have, and the
    /// protocol log's last `proxy` row.
    pub(crate) seen: AtomicU64,
    pub(crate) quiet_since_ms: AtomicU64,
    pub(crate) reported_client: AtomicU64,
    pub(crate) reported_backend: AtomicU64,
    pub(crate) last_row_ms: AtomicU64,
    /// The session's protocol log (shared with its pre-login rows), when the log is on.
    pub log: Option<Arc<SessionLog>>,
}

impl SessionEntry {
    /// Asks the session to close, unless it already was; true when this call asked.
    pub fn kick(&self, kick: Kick) -> bool {
        let asked = self
            .kick
            .compare_exchange(0, kick.code(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if asked {
            self.waker.wake();
        }
        asked
    }

    /// The kick, once there is one; until then the task is woken when it comes.
    pub fn poll_kicked(&self, cx: &mut Context<'_>) -> Poll<Kick> {
        if let Some(k) = Kick::from_code(self.kick.load(Ordering::Acquire)) {
            return Poll::Ready(k);
        }
        self.waker.register(cx.waker());
        match Kick::from_code(self.kick.load(Ordering::Acquire)) {
            Some(k) => Poll::Ready(k),
            None => Poll::Pending,
        }
    }

    /// Bytes moved both ways.
    pub fn total(&self) -> u64 {
        self.from_client.load(Ordering::Relaxed) + self.from_backend.load(Ordering::Relaxed)
    }

    /// The bytes moved since the last call (client, backend), for the metrics. The sweeper and
    /// the closing relay may call it at once: `fetch_max` keeps either from counting twice.
    pub fn unreported(&self) -> (u64, u64) {
        let c = self.from_client.load(Ordering::Relaxed);
        let b = self.from_backend.load(Ordering::Relaxed);
        let pc = self.reported_client.fetch_max(c, Ordering::Relaxed);
        let pb = self.reported_backend.fetch_max(b, Ordering::Relaxed);
        (c.saturating_sub(pc), b.saturating_sub(pb))
    }
}

/// A session as `imapgate sessions` shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct SessionView {
    pub id: String,
    pub user: String,
    pub mailbox: Option<String>,
    /// The user name the backend was sent (the mailbox's canonical login).
    pub backend_login: String,
    pub client: String,
    pub listener: String,
    pub backend: String,
    /// Seconds since the Unix epoch.
    pub since: u64,
    pub bytes_from_client: u64,
    pub bytes_from_backend: u64,
}

pub struct Registry {
    sessions: Mutex<HashMap<u64, Arc<SessionEntry>>>,
    /// Set when the gate closes its relayed sessions: later registrations are told at once.
    closing: AtomicBool,
    /// The clock of `quiet_since_ms` and `last_row_ms`.
    epoch: std::time::Instant,
}

impl Default for Registry {
    fn default() -> Registry {
        Registry {
            sessions: Mutex::default(),
            closing: AtomicBool::new(false),
            epoch: std::time::Instant::now(),
        }
    }
}

/// Removes its session from the registry when dropped.
pub struct Registration {
    registry: Arc<Registry>,
    entry: Arc<SessionEntry>,
}

impl Registration {
    pub fn entry(&self) -> &Arc<SessionEntry> {
        &self.entry
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.entry.info.id);
    }
}

impl Registry {
    /// The table, even after a panic elsewhere poisoned the lock: entries stay consistent
    /// (every change is a single insert or remove).
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<SessionEntry>>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Milliseconds on the registry's clock.
    pub(crate) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Adds a session; its entry tells the relay when the session must close.
    pub fn register(
        self: &Arc<Self>,
        info: SessionInfo,
        log: Option<Arc<SessionLog>>,
    ) -> Registration {
        let now = self.now_ms();
        let entry = Arc::new(SessionEntry {
            info,
            from_client: AtomicU64::new(0),
            from_backend: AtomicU64::new(0),
            kick: AtomicU8::new(0),
            waker: AtomicWaker::new(),
            seen: AtomicU64::new(0),
            quiet_since_ms: AtomicU64::new(now),
            reported_client: AtomicU64::new(0),
            reported_backend: AtomicU64::new(0),
            last_row_ms: AtomicU64::new(now),
            log,
        });
        {
            let mut sessions = self.lock();
            sessions.insert(entry.info.id, entry.clone());
            if self.closing.load(Ordering::Acquire) {
                entry.kick(Kick::Shutdown);
            }
        }
        Registration {
            registry: self.clone(),
            entry,
        }
    }

    /// Closes every relayed session, now and from now on (the end of the shutdown grace).
    pub fn close_all(&self) -> usize {
        let sessions = self.lock();
        self.closing.store(true, Ordering::Release);
        sessions.values().filter(|e| e.kick(Kick::Shutdown)).count()
    }

    /// The entries, for the sweeper (the lock is not held while it works on them).
    pub(crate) fn snapshot(&self) -> Vec<Arc<SessionEntry>> {
        self.lock().values().cloned().collect()
    }

    /// Asks every session matching `pred` to close; returns how many were asked.
    pub fn kick_where(&self, kick: Kick, pred: impl Fn(&SessionInfo) -> bool) -> usize {
        let s = self.lock();
        s.values().filter(|e| pred(&e.info) && e.kick(kick)).count()
    }

    /// What is known of every open session.
    pub fn list_infos(&self) -> Vec<SessionInfo> {
        self.lock().values().map(|e| e.info.clone()).collect()
    }

    /// True when some session matches `pred`.
    pub fn any(&self, pred: impl Fn(&SessionInfo) -> bool) -> bool {
        self.lock().values().any(|e| pred(&e.info))
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
                let (bytes_from_client, bytes_from_backend) = (
                    e.from_client.load(Ordering::Relaxed),
                    e.from_backend.load(Ordering::Relaxed),
                );
                SessionView {
                    id: session_id(i.id),
                    user: i.user.clone(),
                    mailbox: i.mailbox.clone(),
                    backend_login: i.backend_login.clone(),
                    client: i.client.to_string(),
                    listener: i.listener.to_string(),
                    backend: i.backend.clone(),
                    since: i
                        .since
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0),
                    bytes_from_client,
                    bytes_from_backend,
                }
            })
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }
}
