//! `max_connections_per_user` for the whole fleet: this gate's own count (which always holds,
//! Redis or not) and a lease on Redis counted across every gate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;

use super::Fleet;
use crate::limits::{LocalSessions, Over, Release, SessionLimiter, SessionPermit};

pub struct FleetSessions {
    local: LocalSessions,
    fleet: Arc<Fleet>,
    next: AtomicU64,
}

impl FleetSessions {
    pub fn new(fleet: Arc<Fleet>) -> FleetSessions {
        FleetSessions {
            local: LocalSessions::default(),
            fleet,
            next: AtomicU64::new(1),
        }
    }
}

/// One session's lease: ends the local count and the lease on Redis.
struct Lease {
    fleet: Arc<Fleet>,
    member: String,
    local: Mutex<Option<SessionPermit>>,
}

impl Release for Lease {
    fn release(&self, _mailbox: &str) {
        drop(
            self.local
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        self.fleet.release(&self.member);
    }
}

#[async_trait]
impl SessionLimiter for FleetSessions {
    async fn acquire(&self, mailbox: &str, max: usize) -> Result<SessionPermit, Over> {
        let local = self.local.acquire(mailbox, max).await?;
        let member = self.fleet.member(self.next.fetch_add(1, Ordering::Relaxed));
        // Redis not answering: this gate's count alone decides.
        if self.fleet.acquire(mailbox, &member, max).await == Some(false) {
            return Err(Over::Mailbox);
        }
        let lease = Lease {
            fleet: self.fleet.clone(),
            member,
            local: Mutex::new(Some(local)),
        };
        Ok(SessionPermit::new(Arc::new(lease), mailbox.to_string()))
    }

    fn mailboxes(&self) -> usize {
        self.local.mailboxes()
    }
}
