//! Who is signed in to the admin center, and who may try: the session store (a random token in
//! an `HttpOnly; Secure; SameSite=Strict` cookie, forgotten after the idle timeout or at sign-out),
//! one CSRF token per session, and the sign-in throttle (per address and per name).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;

use crate::admin::users::Role;

/// The session cookie. `__Host-`: browsers take it only from this host over HTTPS, with
/// `Path=/` and no `Domain`, so a sibling host cannot plant or shadow it.
pub const SESSION_COOKIE: &str = "__Host-imapgate_session";
/// The sign-in form's own CSRF cookie (double submit: there is no session yet).
pub const SIGNIN_COOKIE: &str = "__Host-imapgate_signin";

/// Signed-in administrators kept at most; more sign-ins wait for some to expire.
const MAX_SESSIONS: usize = 1024;
/// However active, a session ends this long after its sign-in.
const MAX_SESSION_AGE: Duration = Duration::from_secs(12 * 3600);

/// 32 random bytes, URL-safe base64: a session token or a CSRF token.
pub fn random_token() -> Option<String> {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).ok()?;
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Equal, in a time that does not depend on where they differ.
pub fn same_token(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    !a.is_empty()
        && a.len() == b.len()
        && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value for a browser-session cookie only this site's HTTPS pages send back.
pub fn set_cookie(name: &str, value: &str, path: &str) -> String {
    format!("{name}={value}; Path={path}; HttpOnly; Secure; SameSite=Strict")
}

/// A `Set-Cookie` value that makes the browser forget the cookie.
pub fn clear_cookie(name: &str, path: &str) -> String {
    format!("{name}=; Path={path}; HttpOnly; Secure; SameSite=Strict; Max-Age=0")
}

/// A note shown once, on the page after a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flash {
    Message(String),
    Problem(String),
}

/// A signed-in administrator, as a request sees them.
#[derive(Debug, Clone)]
pub struct Signed {
    pub name: String,
    pub role: Role,
    /// What this session's forms must carry.
    pub csrf: String,
    pub token: String,
    /// The password hash the administrator signed in with: a new password (or the name given
    /// to a new administrator) ends the session.
    pub stamp: String,
}

struct Record {
    name: String,
    role: Role,
    csrf: String,
    stamp: String,
    signed_in: Instant,
    last_seen: Instant,
    flash: Option<Flash>,
}

impl Record {
    fn live(&self, idle: Duration) -> bool {
        self.last_seen.elapsed() < idle && self.signed_in.elapsed() < MAX_SESSION_AGE
    }
}

/// The signed-in administrators, by token.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Record>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Record>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new session; `None` when the store is full of live sessions or no randomness.
    pub fn create(&self, name: &str, role: Role, stamp: &str, idle: Duration) -> Option<Signed> {
        let token = random_token()?;
        let csrf = random_token()?;
        let mut map = self.lock();
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, r| r.live(idle));
            if map.len() >= MAX_SESSIONS {
                return None;
            }
        }
        map.insert(
            token.clone(),
            Record {
                name: name.to_string(),
                role,
                csrf: csrf.clone(),
                stamp: stamp.to_string(),
                signed_in: Instant::now(),
                last_seen: Instant::now(),
                flash: None,
            },
        );
        Some(Signed {
            name: name.to_string(),
            role,
            csrf,
            token,
            stamp: stamp.to_string(),
        })
    }

    /// The session of `token`, if it has not been idle for `idle`; touching it restarts the
    /// idle clock.
    pub fn get(&self, token: &str, idle: Duration) -> Option<Signed> {
        let mut map = self.lock();
        let record = map.get_mut(token)?;
        if !record.live(idle) {
            map.remove(token);
            return None;
        }
        record.last_seen = Instant::now();
        Some(Signed {
            name: record.name.clone(),
            role: record.role,
            csrf: record.csrf.clone(),
            token: token.to_string(),
            stamp: record.stamp.clone(),
        })
    }

    /// Follows a change of the administrator's role in the users file.
    pub fn set_role(&self, token: &str, role: Role) {
        if let Some(r) = self.lock().get_mut(token) {
            r.role = role;
        }
    }

    pub fn remove(&self, token: &str) {
        self.lock().remove(token);
    }

    pub fn set_flash(&self, token: &str, flash: Flash) {
        if let Some(r) = self.lock().get_mut(token) {
            r.flash = Some(flash);
        }
    }

    pub fn take_flash(&self, token: &str) -> Option<Flash> {
        self.lock().get_mut(token).and_then(|r| r.flash.take())
    }
}

/// Failures before a sign-in key is locked.
const FREE_FAILURES: u32 = 5;
/// The first lock; each further failure doubles it, up to [`MAX_LOCK`].
const FIRST_LOCK: Duration = Duration::from_secs(30);
const MAX_LOCK: Duration = Duration::from_secs(300);
/// Failures are forgotten after this long without one.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Keys remembered at most (the oldest is forgotten first).
const MAX_KEYS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    /// An IPv4 address, or the /64 of an IPv6 one.
    Address(IpAddr),
    /// A user name as typed, lowercased (known or not: the throttle says nothing about names).
    Name(String),
}

struct Failures {
    count: u32,
    last: Instant,
}

impl Failures {
    fn locked_for(&self) -> Option<Duration> {
        if self.count < FREE_FAILURES {
            return None;
        }
        let doublings = (self.count - FREE_FAILURES).min(16);
        let lock = FIRST_LOCK.saturating_mul(1 << doublings).min(MAX_LOCK);
        lock.checked_sub(self.last.elapsed())
            .filter(|d| !d.is_zero())
    }
}

/// Sign-in failures per address and per name.
#[derive(Default)]
pub struct Throttle {
    map: Mutex<HashMap<Key, Failures>>,
}

/// What counts as one client: an IPv4 address, or the /64 of an IPv6 one (an IPv6 client
/// has a whole /64 to move around in).
pub fn client_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(prefix.into())
        }
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

fn keys(address: IpAddr, name: &str) -> [Key; 2] {
    let name: String = name.to_lowercase().chars().take(64).collect();
    [Key::Address(client_key(address)), Key::Name(name)]
}

impl Throttle {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Failures>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How long a sign-in from `address` as `name` must wait; `None` when it may try now. A
    /// table full of locked keys locks the keys it has no room for.
    pub fn wait(&self, address: IpAddr, name: &str) -> Option<Duration> {
        let map = self.lock();
        let keys = keys(address, name);
        if map.len() >= MAX_KEYS && keys.iter().any(|k| !map.contains_key(k)) {
            return Some(FIRST_LOCK);
        }
        keys.iter()
            .filter_map(|k| map.get(k).and_then(Failures::locked_for))
            .max()
    }

    pub fn failed(&self, address: IpAddr, name: &str) {
        let mut map = self.lock();
        if map.len() >= MAX_KEYS {
            // Room is made from what is forgotten or not locked, never from a lock.
            map.retain(|_, f| f.last.elapsed() < FORGET_AFTER && f.locked_for().is_some());
        }
        for key in keys(address, name) {
            if map.len() >= MAX_KEYS && !map.contains_key(&key) {
                continue;
            }
            let entry = map.entry(key).or_insert(Failures {
                count: 0,
                last: Instant::now(),
            });
            if entry.last.elapsed() >= FORGET_AFTER {
                entry.count = 0;
            }
            entry.count = entry.count.saturating_add(1);
            entry.last = Instant::now();
        }
    }

    /// A successful sign-in forgets the name's and the address's failures.
    pub fn succeeded(&self, address: IpAddr, name: &str) {
        let mut map = self.lock();
        for key in keys(address, name) {
            map.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_lock_the_name_and_the_address() {
        let t = Throttle::default();
        let here: IpAddr = [192, 0, 2, 1].into();
        let there: IpAddr = [192, 0, 2, 2].into();
        for _ in 0..4 {
            t.failed(here, "Alice");
        }
        assert_eq!(t.wait(here, "alice"), None);
        t.failed(here, "alice");
        let wait = t.wait(here, "bob").expect("the address is locked");
        assert!(wait > Duration::from_secs(25) && wait <= FIRST_LOCK);
        assert!(
            t.wait(there, "ALICE").is_some(),
            "the name is locked anywhere"
        );
        assert_eq!(t.wait(there, "bob"), None);
        t.failed(here, "alice");
        assert!(t.wait(here, "alice").unwrap() > FIRST_LOCK, "doubled");
        t.succeeded(here, "alice");
        assert_eq!(t.wait(here, "alice"), None);
    }

    #[test]
    fn ipv6_addresses_share_their_slash_64() {
        let t = Throttle::default();
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::ffff:1".parse().unwrap();
        let c: IpAddr = "2001:db8:0:1::1".parse().unwrap();
        for i in 0..5 {
            t.failed(a, &format!("name{i}"));
        }
        assert!(t.wait(b, "other").is_some());
        assert!(t.wait(c, "other").is_none());
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "ab"));
        assert!(!same_token("", ""));
        let (a, b) = (random_token().unwrap(), random_token().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
    }

    #[test]
    fn idle_sessions_are_forgotten() {
        let s = Sessions::default();
        let signed = s
            .create(
                "alice",
                Role::ViewOnly,
                "$argon2id$stamp",
                Duration::from_secs(60),
            )
            .unwrap();
        assert!(s.get(&signed.token, Duration::from_secs(60)).is_some());
        assert!(s.get(&signed.token, Duration::ZERO).is_none());
        assert!(
            s.get(&signed.token, Duration::from_secs(60)).is_none(),
            "removed"
        );
    }
}
