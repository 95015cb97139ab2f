//! A fleet of gates sharing state on Redis (`[fleet]`): what one gate promises holds for all.
//!
//! - Sessions per mailbox ([`sessions::FleetSessions`], the [`crate::limits::SessionLimiter`] of
//!   a fleet): each session is a lease in the mailbox's sorted set (member: this gate's
//!   instance and the session, score: when the lease ends, in Redis's own clock), counted and
//!   added by one script, removed when the session ends, renewed by this module's sweeper every
//!   third of the lease. The sessions of a gate that died stop counting when their leases end.
//! - The failed-login penalty per address: a counter per address, forgotten after 15 minutes.
//! - Directory changes and requests to every gate ([`bus`]): published on channels; every gate
//!   applies a change at once (its cache forgets, disabled sessions close).
//!
//! Redis unreachable: the gate goes on alone (local counts always apply), says so once in the
//! log and in `imapgate_fleet_redis_up`, retries, and on return puts its leases back. A login
//! never waits more than [`CALL_TIMEOUT`] for Redis.

pub mod bus;
pub mod sessions;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use redis::aio::ConnectionManager;

use crate::config::FleetConfig;
use crate::metrics::Metrics;

/// The longest a login waits for Redis before going on alone.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(250);
/// Failed logins of an address are forgotten this long after the last one (as locally).
const PENALTY_MEMORY: u64 = 15 * 60;
/// Leases renewed per script call.
const RENEW_BATCH: usize = 500;

const ACQUIRE: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
";

const RENEW: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local lease = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + lease, ARGV[i + 1])
  redis.call('PEXPIRE', key, lease)
end
return #KEYS
";

pub struct Fleet {
    pub node: String,
    /// This process among the node's lifetimes: leases of a previous run never collide.
    instance: String,
    client: redis::Client,
    manager: Mutex<Option<ConnectionManager>>,
    up: AtomicBool,
    /// The bus is subscribed to the fleet's channels.
    listening: AtomicBool,
    lease: Duration,
    /// Live leases: member -> mailbox set key.
    leases: Mutex<HashMap<String, String>>,
    acquire: redis::Script,
    renew: redis::Script,
    metrics: Arc<Metrics>,
    /// Ended leases (mailbox set key, member), removed in batches by [`Fleet::run`].
    ended: tokio::sync::mpsc::UnboundedSender<(String, String)>,
    ended_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<(String, String)>>>,
}

/// Removes ended leases: all that are waiting in one pipeline, so a burst of logouts costs Redis
/// one round trip, not one each.
async fn remove_ended(
    fleet: std::sync::Weak<Fleet>,
    mut ended: tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
) {
    let mut batch = Vec::new();
    while ended.recv_many(&mut batch, RENEW_BATCH).await > 0 {
        let Some(fleet) = fleet.upgrade() else {
            return;
        };
        let Some(mut conn) = fleet.connection() else {
            batch.clear();
            continue;
        };
        let mut pipe = redis::pipe();
        for (key, member) in batch.drain(..) {
            pipe.zrem(key, member).ignore();
        }
        let _ =
            tokio::time::timeout(Duration::from_secs(2), pipe.query_async::<()>(&mut conn)).await;
    }
}

/// Aborts a helper task when the fleet's own task ends (the gate stops).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub fn sessions_key(mailbox: &str) -> String {
    format!("imapgate:sessions:{mailbox}")
}

fn penalty_key(ip: IpAddr) -> String {
    format!("imapgate:penalty:{ip}")
}

impl Fleet {
    pub fn new(config: &FleetConfig, metrics: Arc<Metrics>) -> Result<Arc<Fleet>, String> {
        let client = redis::Client::open(config.redis.as_str()).map_err(|e| e.to_string())?;
        let mut nonce = [0u8; 6];
        let _ = getrandom::getrandom(&mut nonce);
        let instance = nonce.iter().map(|b| format!("{b:02x}")).collect();
        let (ended, ended_rx) = tokio::sync::mpsc::unbounded_channel();
        Ok(Arc::new(Fleet {
            ended,
            ended_rx: Mutex::new(Some(ended_rx)),
            node: config.node_name(),
            instance,
            client,
            manager: Mutex::new(None),
            up: AtomicBool::new(false),
            listening: AtomicBool::new(false),
            lease: config.lease,
            leases: Mutex::new(HashMap::new()),
            acquire: redis::Script::new(ACQUIRE),
            renew: redis::Script::new(RENEW),
            metrics,
        }))
    }

    /// The connection, while Redis answers.
    fn connection(&self) -> Option<ConnectionManager> {
        if !self.up.load(Ordering::Relaxed) {
            return None;
        }
        lock(&self.manager).clone()
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// `imapgate_fleet_redis_up`: 1 once Redis answers and this gate hears the fleet's channels.
    fn show_state(&self) {
        let both = self.up.load(Ordering::Relaxed) && self.listening.load(Ordering::Relaxed);
        self.metrics.fleet_redis_up.set(i64::from(both));
    }

    pub(crate) fn set_listening(&self, listening: bool) {
        self.listening.store(listening, Ordering::Relaxed);
        self.show_state();
    }

    fn set_up(&self, up: bool, why: &str) {
        if self.up.swap(up, Ordering::Relaxed) != up {
            self.show_state();
            if up {
                tracing::info!(node = %self.node, "fleet: Redis reachable, sharing limits and changes");
            } else {
                tracing::warn!(node = %self.node, error = why, "fleet: Redis unreachable; this gate goes on with local limits and retries");
            }
        }
    }

    /// A member name for a new session of this gate.
    pub fn member(&self, session: u64) -> String {
        format!("{}/{}/{session}", self.node, self.instance)
    }

    /// Counts one more session of `mailbox` on the fleet unless it has `max`: `Some(true)`
    /// counted, `Some(false)` full, `None` Redis did not answer (the caller goes on alone).
    /// A session counted alone is still tracked: its lease is added when Redis answers again.
    pub async fn acquire(&self, mailbox: &str, member: &str, max: usize) -> Option<bool> {
        let key = sessions_key(mailbox);
        let Some(mut conn) = self.connection() else {
            lock(&self.leases).insert(member.to_string(), key);
            return None;
        };
        let mut invocation = self.acquire.key(&key);
        invocation
            .arg(member)
            .arg(self.lease.as_millis() as u64)
            .arg(max as u64);
        let call = invocation.invoke_async::<i64>(&mut conn);
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(1)) => {
                lock(&self.leases).insert(member.to_string(), key);
                Some(true)
            }
            Ok(Ok(_)) => Some(false),
            Ok(Err(e)) => {
                self.set_up(false, &e.to_string());
                lock(&self.leases).insert(member.to_string(), key);
                None
            }
            Err(_) => {
                self.set_up(false, "no answer in time");
                lock(&self.leases).insert(member.to_string(), key);
                None
            }
        }
    }

    /// Ends a session's lease (from a permit's drop: the removal runs in a task). A session
    /// counted while Redis was down has no lease here and nothing to remove.
    pub fn release(&self, member: &str) {
        let Some(key) = lock(&self.leases).remove(member) else {
            return;
        };
        if self.is_up() {
            let _ = self.ended.send((key, member.to_string()));
        }
    }

    /// Counts a failed login from `ip` for the whole fleet (in a task: the login goes on).
    pub fn penalty_failed(&self, ip: IpAddr) {
        let Some(mut conn) = self.connection() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let key = penalty_key(ip);
                let _ = tokio::time::timeout(
                    Duration::from_secs(2),
                    redis::pipe()
                        .atomic()
                        .incr(&key, 1)
                        .ignore()
                        .expire(&key, PENALTY_MEMORY as i64)
                        .ignore()
                        .query_async::<()>(&mut conn),
                )
                .await;
            });
        }
    }

    /// Failed logins from `ip` on every gate, when Redis answers in time.
    pub async fn penalty_failures(&self, ip: IpAddr) -> Option<u32> {
        let mut conn = self.connection()?;
        let mut get = redis::cmd("GET");
        get.arg(penalty_key(ip));
        let call = get.query_async::<Option<u32>>(&mut conn);
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(n)) => Some(n.unwrap_or(0)),
            _ => None,
        }
    }

    /// Connects, then renews the leases every third of the lease (and at once after Redis
    /// comes back, which puts them back); runs until aborted.
    pub async fn run(self: Arc<Self>) {
        let remover = lock(&self.ended_rx)
            .take()
            .map(|rx| AbortOnDrop(tokio::spawn(remove_ended(Arc::downgrade(&self), rx))));
        let _remover = remover;
        let mut retry = Duration::from_millis(500);
        loop {
            if lock(&self.manager).is_none() {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(1)))
                    .set_response_timeout(Some(Duration::from_secs(1)))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_secs(1));
                let made = tokio::time::timeout(
                    Duration::from_secs(3),
                    ConnectionManager::new_with_config(self.client.clone(), config),
                )
                .await;
                match made {
                    Ok(Ok(manager)) => {
                        *lock(&self.manager) = Some(manager);
                    }
                    Ok(Err(e)) => {
                        self.set_up(false, &e.to_string());
                        // Said once, at the first failure: set_up logs transitions only.
                        if retry == Duration::from_millis(500) {
                            tracing::warn!(node = %self.node, error = %e, "fleet: cannot reach Redis; local limits until it answers");
                        }
                        tokio::time::sleep(retry).await;
                        retry = (retry * 2).min(Duration::from_secs(5));
                        continue;
                    }
                    Err(_) => {
                        tokio::time::sleep(retry).await;
                        retry = (retry * 2).min(Duration::from_secs(5));
                        continue;
                    }
                }
            }
            match self.renew_all().await {
                Ok(()) => {
                    retry = Duration::from_millis(500);
                    self.set_up(true, "");
                    tokio::time::sleep(self.lease / 3).await;
                }
                Err(e) => {
                    self.set_up(false, &e);
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Renews every live lease (adding back those Redis lost) and this node's heartbeat.
    async fn renew_all(&self) -> Result<(), String> {
        let Some(mut conn) = lock(&self.manager).clone() else {
            return Err("not connected".into());
        };
        let leases: Vec<(String, String)> = lock(&self.leases)
            .iter()
            .map(|(m, k)| (m.clone(), k.clone()))
            .collect();
        let lease_ms = self.lease.as_millis() as u64;
        for batch in leases.chunks(RENEW_BATCH) {
            let mut call = self.renew.prepare_invoke();
            call.arg(lease_ms);
            for (member, key) in batch {
                call.key(key).arg(member);
            }
            call.invoke_async::<i64>(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
        }
        redis::cmd("SET")
            .arg(format!("imapgate:node:{}", self.node))
            .arg(&self.instance)
            .arg("PX")
            .arg(lease_ms)
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| e.to_string())
    }

    /// A connection for the bus (publishing, replies), while Redis answers.
    fn bus_connection(&self) -> Option<ConnectionManager> {
        self.connection()
    }

    pub(crate) fn client(&self) -> &redis::Client {
        &self.client
    }
}
