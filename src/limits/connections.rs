//! Connections (Exchange's `MaxConnections`, `MaxConnectionFromSingleIP`, plus a cap on one
//! address's connections before login), logins in progress per address, and the descriptor
//! budget that `max_connections` must fit in. All local to this gate: they protect its own
//! descriptors and memory.
//!
//! Every count is held by an RAII guard, released on drop: whatever way a session ends (closed,
//! timed out, cancelled by shutdown, panicked), the counters come back down. Locks are never held
//! across an await, and a poisoned lock is recovered.
//!
//! Pressure: when the gate holds `pressure_threshold` of its maximum connections, the
//! [`Connections::pressure`] watch records a new episode, and sessions waiting before login
//! shorten their deadline (as HAProxy and nginx do under load), so idle pre-login connections
//! cannot hold it. The episode ends below 90% of the threshold.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use super::Over;

/// The caps that apply to a new connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionCaps {
    pub total: usize,
    pub per_ip: usize,
    pub preauth_per_ip: usize,
    /// Connections at which pressure starts (it ends below 90% of this).
    pub pressure_at: usize,
}

/// The gate's pressure: whether it is under pressure now, and how many episodes began. A
/// session waiting to log in shortens its deadline when a new episode begins (the level alone
/// could be over again before the session looks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pressure {
    pub on: bool,
    pub episodes: u64,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
    preauth_per_ip: HashMap<IpAddr, usize>,
    pressure_at: usize,
}

pub struct Connections {
    counts: Mutex<Counts>,
    /// Connections that came or went, ever (a burst of them is what leaves freed memory behind).
    churn: AtomicU64,
    pressure: watch::Sender<Pressure>,
    logins: Mutex<HashMap<IpAddr, Arc<Semaphore>>>,
}

impl Default for Connections {
    fn default() -> Self {
        Connections {
            counts: Mutex::default(),
            churn: AtomicU64::new(0),
            pressure: watch::channel(Pressure::default()).0,
            logins: Mutex::default(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn decrement(map: &mut HashMap<IpAddr, usize>, ip: &IpAddr) {
    if let Some(n) = map.get_mut(ip) {
        *n -= 1;
        if *n == 0 {
            map.remove(ip);
        }
    }
}

/// One connection counted against the gate and its client address, and against the address's
/// connections before login until [`ConnectionGuard::logged_in`].
pub struct ConnectionGuard {
    limits: Arc<Connections>,
    ip: IpAddr,
    before_login: bool,
    /// The gate was under pressure when this connection came.
    under_pressure: bool,
}

/// One login in progress from an address.
pub struct LoginSlot {
    limits: Arc<Connections>,
    ip: IpAddr,
    permit: Option<OwnedSemaphorePermit>,
}

impl Connections {
    /// Counts a new connection from `ip`, unless that would pass one of `caps`.
    pub fn connect(
        self: &Arc<Self>,
        ip: IpAddr,
        caps: ConnectionCaps,
    ) -> Result<ConnectionGuard, Over> {
        let mut c = lock(&self.counts);
        if c.total >= caps.total {
            return Err(Over::Gate);
        }
        let n = c.per_ip.get(&ip).copied().unwrap_or(0);
        if n >= caps.per_ip {
            return Err(Over::Address);
        }
        let before = c.preauth_per_ip.get(&ip).copied().unwrap_or(0);
        if before >= caps.preauth_per_ip {
            return Err(Over::AddressBeforeLogin);
        }
        c.total += 1;
        self.churn.fetch_add(1, Ordering::Relaxed);
        c.per_ip.insert(ip, n + 1);
        c.preauth_per_ip.insert(ip, before + 1);
        c.pressure_at = caps.pressure_at;
        let under_pressure = c.total >= caps.pressure_at;
        if under_pressure {
            self.pressure.send_if_modified(|p| {
                if p.on {
                    return false;
                }
                p.on = true;
                p.episodes += 1;
                true
            });
        }
        Ok(ConnectionGuard {
            limits: self.clone(),
            ip,
            before_login: true,
            under_pressure,
        })
    }

    /// Waits until `ip` has fewer than `max` logins in progress, then holds one until dropped.
    pub async fn login_slot(self: &Arc<Self>, ip: IpAddr, max: usize) -> LoginSlot {
        let semaphore = lock(&self.logins)
            .entry(ip)
            .or_insert_with(|| Arc::new(Semaphore::new(max.max(1))))
            .clone();
        // The semaphore is never closed.
        let permit = semaphore.acquire_owned().await.ok();
        LoginSlot {
            limits: self.clone(),
            ip,
            permit,
        }
    }

    /// The gate's pressure, followed.
    pub fn pressure(&self) -> watch::Receiver<Pressure> {
        self.pressure.subscribe()
    }

    /// Connections that came or went since the gate started.
    pub fn churn(&self) -> u64 {
        self.churn.load(Ordering::Relaxed)
    }

    /// Counter values: (connections, addresses, addresses with connections before login,
    /// addresses with logins in progress).
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let c = lock(&self.counts);
        (
            c.total,
            c.per_ip.len(),
            c.preauth_per_ip.len(),
            lock(&self.logins).len(),
        )
    }
}

impl ConnectionGuard {
    /// Whether the gate was under pressure when this connection came (however soon that
    /// ended): such a connection gets the short pre-login deadline.
    pub fn came_under_pressure(&self) -> bool {
        self.under_pressure
    }

    /// The connection's client is `ip` after all (a PROXY protocol header named it): counted
    /// against `ip` from now on, unless that would pass one of `caps` (the guard then still
    /// counts the balancer's address, and dropping it releases that).
    pub fn move_to(&mut self, ip: IpAddr, caps: ConnectionCaps) -> Result<(), Over> {
        if ip == self.ip {
            return Ok(());
        }
        let mut c = lock(&self.limits.counts);
        let n = c.per_ip.get(&ip).copied().unwrap_or(0);
        if n >= caps.per_ip {
            return Err(Over::Address);
        }
        let before = c.preauth_per_ip.get(&ip).copied().unwrap_or(0);
        if self.before_login && before >= caps.preauth_per_ip {
            return Err(Over::AddressBeforeLogin);
        }
        decrement(&mut c.per_ip, &self.ip);
        c.per_ip.insert(ip, n + 1);
        if self.before_login {
            decrement(&mut c.preauth_per_ip, &self.ip);
            c.preauth_per_ip.insert(ip, before + 1);
        }
        self.ip = ip;
        Ok(())
    }

    /// The connection logged in: it no longer counts against its address's connections before
    /// login.
    pub fn logged_in(&mut self) {
        if std::mem::replace(&mut self.before_login, false) {
            decrement(&mut lock(&self.limits.counts).preauth_per_ip, &self.ip);
        }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let mut c = lock(&self.limits.counts);
        c.total = c.total.saturating_sub(1);
        self.limits.churn.fetch_add(1, Ordering::Relaxed);
        decrement(&mut c.per_ip, &self.ip);
        if self.before_login {
            decrement(&mut c.preauth_per_ip, &self.ip);
        }
        if c.total < c.pressure_at - c.pressure_at / 10 {
            self.limits
                .pressure
                .send_if_modified(|p| std::mem::replace(&mut p.on, false));
        }
    }
}

impl Drop for LoginSlot {
    fn drop(&mut self) {
        drop(self.permit.take());
        let mut logins = lock(&self.limits.logins);
        // Nobody holds or waits for a slot of this address: forget it.
        if logins
            .get(&self.ip)
            .is_some_and(|s| Arc::strong_count(s) == 1)
        {
            logins.remove(&self.ip);
        }
    }
}

/// Descriptors kept out of the connection budget: listeners, the control socket, metrics,
/// logs, the runtime's own, and the relay's pooled pipes (two descriptors each, four per thread).
pub fn reserved_descriptors(threads: usize) -> u64 {
    128 + 8 * threads as u64
}

/// The most connections the descriptor limit allows: two descriptors per relayed session
/// (client and backend) after the reserve. `None` when the limit is unlimited.
pub fn descriptor_budget(nofile: u64, threads: usize) -> Option<usize> {
    if nofile == u64::MAX {
        return None;
    }
    let usable = nofile.saturating_sub(reserved_descriptors(threads)) / 2;
    Some(usize::try_from(usable.max(1)).unwrap_or(usize::MAX))
}

/// `max_connections` in force: the configured value, never more than the descriptor budget;
/// the budget when none is configured.
pub fn effective_max_connections(configured: Option<usize>, budget: Option<usize>) -> usize {
    match (configured, budget) {
        (Some(c), Some(b)) => c.min(b),
        (Some(c), None) => c,
        (None, Some(b)) => b,
        (None, None) => crate::config::UNLIMITED,
    }
}

impl ConnectionCaps {
    /// Only the gate's total: for a connection from a balancer before its PROXY header says
    /// whose it is (the balancer's own address carries every client's connections).
    pub fn total_only(self) -> ConnectionCaps {
        ConnectionCaps {
            per_ip: usize::MAX,
            preauth_per_ip: usize::MAX,
            ..self
        }
    }
}

/// The caps for new connections under `imap4`, with `max_connections` in force.
pub fn connection_caps(imap4: &crate::config::Imap4, max_connections: usize) -> ConnectionCaps {
    ConnectionCaps {
        total: max_connections,
        per_ip: imap4.max_connections_from_single_ip,
        preauth_per_ip: imap4.max_preauth_connections_from_single_ip,
        pressure_at: ((max_connections as f64 * imap4.pressure_threshold) as usize).max(1),
    }
}

/// The process's open-file limit (the soft one, which is what counts).
pub fn nofile_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX)
}

/// Raises the soft open-file limit to the hard one (as nginx's `worker_rlimit_nofile` and the
/// Go runtime do); returns the limit in force.
pub fn raise_nofile_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::debug!(error = %e, "cannot raise the open-file limit");
        }
    }
    nofile_limit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn caps(total: usize, per_ip: usize, preauth_per_ip: usize) -> ConnectionCaps {
        ConnectionCaps {
            total,
            per_ip,
            preauth_per_ip,
            pressure_at: total,
        }
    }

    #[test]
    fn guards_count_and_release() {
        let l = Arc::new(Connections::default());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let a = l.connect(ip, caps(3, 2, 9)).unwrap();
        let b = l.connect(ip, caps(3, 2, 9)).unwrap();
        assert_eq!(l.connect(ip, caps(3, 2, 9)).err(), Some(Over::Address));
        let other = l
            .connect("192.0.2.2".parse().unwrap(), caps(3, 2, 9))
            .unwrap();
        assert_eq!(
            l.connect("192.0.2.3".parse().unwrap(), caps(3, 2, 9)).err(),
            Some(Over::Gate)
        );
        drop((a, b, other));
        assert_eq!(l.counts(), (0, 0, 0, 0));
    }

    #[test]
    fn connections_before_login_are_capped_per_address() {
        let l = Arc::new(Connections::default());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let mut a = l.connect(ip, caps(9, 9, 2)).unwrap();
        let _b = l.connect(ip, caps(9, 9, 2)).unwrap();
        assert_eq!(
            l.connect(ip, caps(9, 9, 2)).err(),
            Some(Over::AddressBeforeLogin)
        );
        // Logged-in sessions count against the address's total only.
        a.logged_in();
        let _c = l.connect(ip, caps(9, 9, 2)).unwrap();
        assert_eq!(l.counts().0, 3);
    }

    #[test]
    fn pressure_starts_at_the_threshold_and_ends_below_ninety_percent() {
        let l = Arc::new(Connections::default());
        let pressure = l.pressure();
        let c = ConnectionCaps {
            total: 100,
            per_ip: 100,
            preauth_per_ip: 100,
            pressure_at: 10,
        };
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let mut held: Vec<_> = (0..9).map(|_| l.connect(ip, c).unwrap()).collect();
        assert_eq!(*pressure.borrow(), Pressure::default());
        held.push(l.connect(ip, c).unwrap());
        assert_eq!(
            *pressure.borrow(),
            Pressure {
                on: true,
                episodes: 1
            }
        );
        held.truncate(9);
        assert!(pressure.borrow().on, "9 of 10: still under pressure");
        held.truncate(8);
        assert!(!pressure.borrow().on);
        held.push(l.connect(ip, c).unwrap());
        held.push(l.connect(ip, c).unwrap());
        assert_eq!(pressure.borrow().episodes, 2);
    }

    #[tokio::test]
    async fn logins_in_progress_are_limited_per_address() {
        let l = Arc::new(Connections::default());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let a = l.login_slot(ip, 2).await;
        let _b = l.login_slot(ip, 2).await;
        let third = tokio::time::timeout(Duration::from_millis(50), l.login_slot(ip, 2)).await;
        assert!(third.is_err(), "a third login from the address waits");
        drop(a);
        let _c = tokio::time::timeout(Duration::from_millis(50), l.login_slot(ip, 2))
            .await
            .expect("a slot after one ended");
        let _other = l.login_slot("192.0.2.2".parse().unwrap(), 2).await;
        assert_eq!(l.counts().3, 2);
    }

    #[test]
    fn the_descriptor_budget_keeps_a_reserve() {
        assert_eq!(descriptor_budget(1024, 2), Some((1024 - 144) / 2));
        assert_eq!(descriptor_budget(100, 2), Some(1));
        assert_eq!(descriptor_budget(u64::MAX, 2), None);
    }
}
