//! Limits: connections and logins in progress (local to this gate, [`connections`]), logged-in
//! sessions per mailbox (behind the [`SessionLimiter`] seam: in-process counters now,
//! [`sessions::LocalSessions`]; fleet-wide ones next), and the failed-login [`penalty`].

pub mod connections;
pub mod penalty;
pub mod sessions;

use std::sync::Arc;

use async_trait::async_trait;

pub use connections::{
    connection_caps, descriptor_budget, effective_max_connections, nofile_limit,
    raise_nofile_limit, reserved_descriptors, ConnectionCaps, ConnectionGuard, Connections,
    LoginSlot, Pressure,
};
pub use penalty::Penalty;
pub use sessions::LocalSessions;

/// What was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    Gate,
    Address,
    /// Too many connections from the address that have not logged in.
    AddressBeforeLogin,
    Mailbox,
}

/// Counts logged-in sessions per mailbox (`max_connections_per_user`), wherever the counts live.
#[async_trait]
pub trait SessionLimiter: Send + Sync {
    /// Counts one more session of `mailbox` unless it already has `max`; the permit counts it
    /// until it is dropped.
    async fn acquire(&self, mailbox: &str, max: usize) -> Result<SessionPermit, Over>;

    /// Mailboxes with sessions counted (for tests and usage figures).
    fn mailboxes(&self) -> usize;
}

/// Ends a counted session. Called from a permit's drop, so it must neither block nor await: an
/// implementation whose counts live elsewhere hands the release to a task of its own.
pub trait Release: Send + Sync {
    fn release(&self, mailbox: &str);
}

/// One counted session; dropping it (however the session ends, a panic included) releases it.
pub struct SessionPermit {
    release: Arc<dyn Release>,
    mailbox: String,
}

impl SessionPermit {
    pub fn new(release: Arc<dyn Release>, mailbox: String) -> SessionPermit {
        SessionPermit { release, mailbox }
    }
}

impl Drop for SessionPermit {
    fn drop(&mut self) {
        self.release.release(&self.mailbox);
    }
}

/// Counter values, for tests and `imapgate sessions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub connections: usize,
    pub addresses: usize,
    pub mailboxes: usize,
    /// Addresses with connections that have not logged in.
    pub addresses_before_login: usize,
    /// Addresses with logins in progress.
    pub addresses_logging_in: usize,
}
