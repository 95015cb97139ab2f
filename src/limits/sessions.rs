//! Logged-in sessions per mailbox, counted in this process: the first [`SessionLimiter`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;

use super::{Over, Release, SessionLimiter, SessionPermit};

#[derive(Default)]
struct Counts(Mutex<HashMap<String, usize>>);

impl Release for Counts {
    fn release(&self, mailbox: &str) {
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = counts.get_mut(mailbox) {
            *n -= 1;
            if *n == 0 {
                counts.remove(mailbox);
            }
        }
    }
}

/// Sessions per mailbox in this gate's memory. A release is a decrement under a lock, done in
/// the permit's drop: nothing to hand to a task, nothing that can be lost.
#[derive(Default, Clone)]
pub struct LocalSessions {
    counts: Arc<Counts>,
}

#[async_trait]
impl SessionLimiter for LocalSessions {
    async fn acquire(&self, mailbox: &str, max: usize) -> Result<SessionPermit, Over> {
        {
            let mut counts = self.counts.0.lock().unwrap_or_else(PoisonError::into_inner);
            let n = counts.entry(mailbox.to_string()).or_insert(0);
            if *n >= max {
                if *n == 0 {
                    counts.remove(mailbox);
                }
                return Err(Over::Mailbox);
            }
            *n += 1;
        }
        Ok(SessionPermit::new(self.counts.clone(), mailbox.to_string()))
    }

    fn mailboxes(&self) -> usize {
        self.counts
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn permits_count_and_release() {
        let l = LocalSessions::default();
        let a = l.acquire("main/user1", 1).await.unwrap();
        assert_eq!(l.acquire("main/user1", 1).await.err(), Some(Over::Mailbox));
        let b = l.acquire("main/user2", 1).await.unwrap();
        assert_eq!(l.mailboxes(), 2);
        drop((a, b));
        assert_eq!(l.mailboxes(), 0);
        // A task holding a permit that panics still releases it.
        let l2 = l.clone();
        let task = tokio::spawn(async move {
            let _p = l2.acquire("main/user1", 1).await.unwrap();
            panic!("a session that panics");
        });
        assert!(task.await.is_err());
        assert_eq!(l.mailboxes(), 0);
    }
}
