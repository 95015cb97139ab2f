//! Connection limits (Exchange's `MaxConnections`, `MaxConnectionFromSingleIP`,
//! `MaxConnectionsPerUser`) and the per-address penalty after failed logins.
//!
//! Every count is held by an RAII guard, released on drop: whatever way a session ends (closed,
//! timed out, cancelled by shutdown, panicked), the counters come back down. Locks are never held
//! across an await, and a poisoned lock is recovered, so one panicking session cannot wedge the
//! counters of all the others.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// What was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    Gate,
    Address,
    Mailbox,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
    per_user: HashMap<String, usize>,
}

#[derive(Default)]
pub struct Limits {
    counts: Mutex<Counts>,
}

fn lock(m: &Mutex<Counts>) -> MutexGuard<'_, Counts> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One connection counted against the gate and its client address.
pub struct ConnectionGuard {
    limits: Arc<Limits>,
    ip: IpAddr,
}

/// One logged-in session counted against its mailbox.
pub struct UserGuard {
    limits: Arc<Limits>,
    key: String,
}

/// Counter values, for tests and `imapgate sessions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub connections: usize,
    pub addresses: usize,
    pub mailboxes: usize,
}

impl Limits {
    /// Counts a new connection from `ip`, unless that would pass `max_total` or `max_per_ip`.
    pub fn connect(
        self: &Arc<Self>,
        ip: IpAddr,
        max_total: usize,
        max_per_ip: usize,
    ) -> Result<ConnectionGuard, Over> {
        let mut c = lock(&self.counts);
        if c.total >= max_total {
            return Err(Over::Gate);
        }
        let n = c.per_ip.get(&ip).copied().unwrap_or(0);
        if n >= max_per_ip {
            return Err(Over::Address);
        }
        c.total += 1;
        c.per_ip.insert(ip, n + 1);
        Ok(ConnectionGuard {
            limits: self.clone(),
            ip,
        })
    }

    /// Counts a logged-in session of the mailbox `key`, unless it already has `max`.
    pub fn login(self: &Arc<Self>, key: String, max: usize) -> Result<UserGuard, Over> {
        let mut c = lock(&self.counts);
        let n = c.per_user.get(&key).copied().unwrap_or(0);
        if n >= max {
            return Err(Over::Mailbox);
        }
        c.per_user.insert(key.clone(), n + 1);
        Ok(UserGuard {
            limits: self.clone(),
            key,
        })
    }

    pub fn usage(&self) -> Usage {
        let c = lock(&self.counts);
        Usage {
            connections: c.total,
            addresses: c.per_ip.len(),
            mailboxes: c.per_user.len(),
        }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let mut c = lock(&self.limits.counts);
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

impl Drop for UserGuard {
    fn drop(&mut self) {
        let mut c = lock(&self.limits.counts);
        if let Some(n) = c.per_user.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                c.per_user.remove(&self.key);
            }
        }
    }
}

/// Failed logins per client address, forgotten after 15 minutes without a failure; the delay
/// before the next login from there doubles per failure from `initial` up to `max` (Dovecot's
/// "auth penalty": 2 s doubling to 15 s).
pub struct Penalty {
    failures: moka::sync::Cache<IpAddr, u32>,
}

impl Default for Penalty {
    fn default() -> Self {
        Penalty {
            failures: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(15 * 60))
                .build(),
        }
    }
}

impl Penalty {
    /// The delay owed before the next login from `ip`.
    pub fn delay(&self, ip: IpAddr, initial: Duration, max: Duration) -> Duration {
        let failures = self.failures.get(&ip).unwrap_or(0);
        if failures == 0 || initial.is_zero() {
            return Duration::ZERO;
        }
        let factor = 1u32 << (failures - 1).min(16);
        initial.saturating_mul(factor).min(max)
    }

    /// Failed logins counted for `ip` (forgotten after 15 minutes without one).
    pub fn failures(&self, ip: IpAddr) -> u32 {
        self.failures.get(&ip).unwrap_or(0)
    }

    pub fn failed(&self, ip: IpAddr) {
        self.failures
            .entry(ip)
            .and_upsert_with(|n| n.map_or(1, |e| e.into_value().saturating_add(1)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_and_release() {
        let l = Arc::new(Limits::default());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let a = l.connect(ip, 3, 2).unwrap();
        let b = l.connect(ip, 3, 2).unwrap();
        assert_eq!(l.connect(ip, 3, 2).err(), Some(Over::Address));
        let other = l.connect("192.0.2.2".parse().unwrap(), 3, 2).unwrap();
        assert_eq!(
            l.connect("192.0.2.3".parse().unwrap(), 3, 2).err(),
            Some(Over::Gate)
        );
        let u = l.login("main/user1".into(), 1).unwrap();
        assert_eq!(l.login("main/user1".into(), 1).err(), Some(Over::Mailbox));
        drop((a, b, other, u));
        assert_eq!(l.usage(), Usage::default());
    }

    #[test]
    fn penalty_doubles_up_to_the_cap() {
        let p = Penalty::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let (i, m) = (Duration::from_secs(2), Duration::from_secs(15));
        assert_eq!(p.delay(ip, i, m), Duration::ZERO);
        let mut seen = Vec::new();
        for _ in 0..5 {
            p.failed(ip);
            seen.push(p.delay(ip, i, m).as_secs());
        }
        assert_eq!(seen, [2, 4, 8, 15, 15]);
    }
}
