//! Bound connections to the directory: the URLs tried in order (one that fails waits a back-off
//! before it is tried first again), StartTLS or LDAPS verified like a backend, a simple bind as
//! the service account, and a few connections kept, each multiplexing operations, re-opened
//! after an error.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError};
use tokio_rustls::rustls::ClientConfig;

use crate::credentials::Secret;

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The result code of an LDAP error, when the server answered one.
pub fn rc(e: &LdapError) -> Option<u32> {
    match e {
        LdapError::LdapResult { result } => Some(result.rc),
        _ => None,
    }
}

/// An LDAP error in words: the server's result code by name, or what failed on the way.
pub fn describe(e: &LdapError) -> String {
    match e {
        LdapError::LdapResult { result } => {
            let name = match result.rc {
                1 => "operationsError",
                2 => "protocolError",
                3 => "timeLimitExceeded",
                4 => "sizeLimitExceeded",
                12 => "unavailableCriticalExtension",
                16 => "noSuchAttribute",
                19 => "constraintViolation",
                20 => "attributeOrValueExists",
                21 => "invalidAttributeSyntax",
                32 => "noSuchObject",
                34 => "invalidDNSyntax",
                48 => "inappropriateAuthentication",
                49 => "invalidCredentials",
                50 => "insufficientAccessRights",
                51 => "busy",
                52 => "unavailable",
                53 => "unwillingToPerform",
                _ => "error",
            };
            let text = result.text.trim();
            if text.is_empty() {
                format!("{name} ({})", result.rc)
            } else {
                format!("{name} ({}): {text}", result.rc)
            }
        }
        other => other.to_string(),
    }
}

struct Backoff {
    until: Option<Instant>,
    delay: Duration,
}

/// Opens bound connections, failing over across the URLs.
pub struct Connector {
    urls: Vec<String>,
    starttls: bool,
    tls: Arc<ClientConfig>,
    pub bind_dn: String,
    password: Secret,
    pub timeout: Duration,
    down: Mutex<Vec<Backoff>>,
}

impl Connector {
    pub fn new(
        urls: Vec<String>,
        starttls: bool,
        tls: Arc<ClientConfig>,
        bind_dn: String,
        password: Secret,
        timeout: Duration,
    ) -> Connector {
        let down = urls
            .iter()
            .map(|_| Backoff {
                until: None,
                delay: FIRST_BACKOFF,
            })
            .collect();
        Connector {
            urls,
            starttls,
            tls,
            bind_dn,
            password,
            timeout,
            down: Mutex::new(down),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Backoff>> {
        self.down.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A bound connection to the first URL that answers: those not waiting out a back-off
    /// first, in order, then the others. The error names every URL tried and the failed step.
    pub async fn connect(&self) -> Result<Ldap, String> {
        let now = Instant::now();
        let (up, waiting): (Vec<usize>, Vec<usize>) = {
            let down = self.lock();
            (0..self.urls.len()).partition(|&i| down[i].until.is_none_or(|t| t <= now))
        };
        let mut errors = Vec::new();
        for i in up.into_iter().chain(waiting) {
            let attempt = tokio::time::timeout(self.timeout * 3, self.connect_to(i)).await;
            match attempt.unwrap_or_else(|_| Err(format!("{}: no answer in time", self.urls[i]))) {
                Ok(ldap) => {
                    let mut down = self.lock();
                    down[i] = Backoff {
                        until: None,
                        delay: FIRST_BACKOFF,
                    };
                    return Ok(ldap);
                }
                Err(e) => {
                    let mut down = self.lock();
                    let b = &mut down[i];
                    b.until = Some(Instant::now() + b.delay);
                    b.delay = (b.delay * 2).min(MAX_BACKOFF);
                    errors.push(e);
                }
            }
        }
        Err(errors.join("; "))
    }

    async fn connect_to(&self, i: usize) -> Result<Ldap, String> {
        let url = &self.urls[i];
        let starttls = self.starttls && url.starts_with("ldap://");
        let settings = LdapConnSettings::new()
            .set_conn_timeout(self.timeout)
            .set_config(self.tls.clone())
            .set_starttls(starttls);
        let step = if starttls {
            "connect and StartTLS"
        } else if url.starts_with("ldaps://") {
            "connect (TLS)"
        } else {
            "connect"
        };
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, url)
            .await
            .map_err(|e| format!("{url}: {step}: {}", describe(&e)))?;
        ldap3::drive!(conn);
        let password = std::str::from_utf8(self.password.expose()).unwrap_or_default();
        ldap.with_timeout(self.timeout)
            .simple_bind(&self.bind_dn, password)
            .await
            .and_then(|r| r.success())
            .map_err(|e| format!("{url}: bind as {}: {}", self.bind_dn, describe(&e)))?;
        Ok(ldap)
    }
}

/// A few bound connections, used in turn; a slot whose connection failed opens a new one at
/// its next use.
pub struct Pool {
    pub connector: Arc<Connector>,
    slots: Vec<tokio::sync::Mutex<Option<Ldap>>>,
    next: AtomicUsize,
}

/// A connection lent by the pool; tell the pool when it failed.
pub struct Lent {
    pub ldap: Ldap,
    slot: usize,
}

impl Pool {
    pub fn new(connector: Arc<Connector>, size: usize) -> Pool {
        Pool {
            connector,
            slots: (0..size.max(1))
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// A connection (opening one if its slot has none).
    pub async fn get(&self) -> Result<Lent, String> {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut guard = self.slots[slot].lock().await;
        if let Some(ldap) = guard.as_mut() {
            if !ldap.is_closed() {
                return Ok(Lent {
                    ldap: ldap.clone(),
                    slot,
                });
            }
        }
        let ldap = self.connector.connect().await?;
        *guard = Some(ldap.clone());
        Ok(Lent { ldap, slot })
    }

    /// Drops the connection of a failed operation when the failure was the connection's (not
    /// an answer of the server's).
    pub async fn failed(&self, lent: &Lent, e: &LdapError) {
        if rc(e).is_none() {
            *self.slots[lent.slot].lock().await = None;
        }
    }
}
