//! Prometheus metrics (`[metrics] listen`, off by default), encoded by prometheus-client in the
//! OpenMetrics text format on `GET /metrics`.
//!
//! Nothing here runs per relayed byte: relayed sessions add their byte counts when the relay wakes
//! for its idle check (at most every 30 s) and when they end.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::errors::Blame;
use crate::phase::Phase;
use tokio::sync::watch;

/// The directory's counters, shared by the successive directories and caches of a gate: cache
/// hits and misses, and the lookups a source made (LDAP) by outcome, with their latency.
#[derive(Clone)]
pub struct DirectoryStats {
    pub hits: Counter,
    pub misses: Counter,
    pub lookups: Family<LookupLabels, Counter>,
    pub lookup_seconds: Histogram,
}

impl Default for DirectoryStats {
    fn default() -> DirectoryStats {
        DirectoryStats {
            hits: Counter::default(),
            misses: Counter::default(),
            lookups: Family::default(),
            lookup_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
        }
    }
}

impl DirectoryStats {
    /// One lookup in the source: `found`, `not_found`, `ambiguous` or `error`.
    pub fn lookup(&self, outcome: &'static str, took: std::time::Duration) {
        self.lookups.get_or_create(&LookupLabels { outcome }).inc();
        self.lookup_seconds.observe(took.as_secs_f64());
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LookupLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SessionLabels {
    /// `preauth` or `relay`.
    pub phase: &'static str,
    /// `imap` or `imaps`.
    pub listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    /// `client_to_backend` or `backend_to_client`.
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// `client`, `backend` or `gate`.
    pub blame: &'static str,
    /// `login` or `relay`.
    pub stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AddressLabels {
    pub backend: String,
    pub address: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

type Latency = Family<BackendLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms .. about 8 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

pub struct Metrics {
    registry: Registry,
    pub sessions: Family<SessionLabels, Gauge>,
    pub logins: Family<OutcomeLabels, Counter>,
    pub relayed_bytes: Family<DirectionLabels, Counter>,
    pub backend_connect: Latency,
    pub backend_login: Latency,
    /// Logins that went on to another address of their backend.
    pub backend_failovers: Family<BackendLabels, Counter>,
    /// 1 while an address is up, 0 while it is marked down.
    pub backend_address_up: Family<AddressLabels, Gauge>,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    directory: DirectoryStats,
    pub cache_entries: Gauge,
    pub reloads: Family<ResultLabels, Counter>,
    pub last_reload: Gauge<f64, AtomicU64>,
    pub sessions_closed_on_reload: Counter,
    pub protocol_log_dropped: Counter,
    pub penalty_waits: Counter,
    pub penalty_seconds: Counter<f64, AtomicU64>,
    /// Memory handed back to the system after a burst of connections had settled.
    pub memory_releases: Counter,
    /// `[fleet]`: 1 while Redis answers, 0 while this gate goes on alone.
    pub fleet_redis_up: Gauge,
    pub errors: Family<ErrorLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("imapgate");
        let sessions = Family::<SessionLabels, Gauge>::default();
        let logins = Family::<OutcomeLabels, Counter>::default();
        let relayed_bytes = Family::<DirectionLabels, Counter>::default();
        let backend_connect: Latency = Family::new_with_constructor(latency_histogram);
        let backend_login: Latency = Family::new_with_constructor(latency_histogram);
        let fleet_redis_up = Gauge::default();
        registry.register(
            "fleet_redis_up",
            "With [fleet]: 1 while Redis answers and this gate hears the fleet's channels (limits and changes shared), 0 while it goes on alone",
            fleet_redis_up.clone(),
        );
        let backend_failovers = Family::<BackendLabels, Counter>::default();
        let backend_address_up = Family::<AddressLabels, Gauge>::default();
        registry.register(
            "backend_failovers",
            "Logins that went on to the next address of their backend after one failed",
            backend_failovers.clone(),
        );
        registry.register(
            "backend_address_up",
            "1 while a backend address is up, 0 while marked down (until a health check passes)",
            backend_address_up.clone(),
        );
        let directory = DirectoryStats::default();
        let cache_hits = directory.hits.clone();
        let cache_misses = directory.misses.clone();
        registry.register(
            "directory_lookups",
            "Lookups the directory source made on a cache miss (LDAP), by outcome",
            directory.lookups.clone(),
        );
        registry.register(
            "directory_lookup_seconds",
            "Time of the directory source's lookups (LDAP)",
            directory.lookup_seconds.clone(),
        );
        let cache_entries = Gauge::default();
        let reloads = Family::<ResultLabels, Counter>::default();
        let last_reload = Gauge::<f64, AtomicU64>::default();
        let sessions_closed_on_reload = Counter::default();
        let protocol_log_dropped = Counter::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "errors",
            "Logins and relayed sessions ended by an error, by who is to blame",
            errors.clone(),
        );
        let memory_releases = Counter::default();
        registry.register(
            "memory_releases",
            "Times the gate handed freed memory back to the system after a burst of connections had settled ([runtime] release_memory_after_bursts)",
            memory_releases.clone(),
        );
        let penalty_waits = Counter::default();
        let penalty_seconds = Counter::<f64, AtomicU64>::default();
        registry.register(
            "auth_penalty_waits",
            "Logins held back by the failed-login penalty of their client address",
            penalty_waits.clone(),
        );
        registry.register(
            "auth_penalty_seconds",
            "Time logins waited for the failed-login penalty",
            penalty_seconds.clone(),
        );
        registry.register(
            "sessions",
            "Open sessions by phase and listener",
            sessions.clone(),
        );
        registry.register("logins", "Login attempts by outcome", logins.clone());
        registry.register(
            "relayed_bytes",
            "Bytes relayed after login, by direction",
            relayed_bytes.clone(),
        );
        registry.register(
            "backend_connect_seconds",
            "Time to open the TCP connection to a backend",
            backend_connect.clone(),
        );
        registry.register(
            "backend_login_seconds",
            "Time from connected to logged in (TLS, greeting, capabilities, login) per backend",
            backend_login.clone(),
        );
        registry.register(
            "policy_cache_hits",
            "Policy lookups answered by the cache",
            cache_hits.clone(),
        );
        registry.register(
            "policy_cache_misses",
            "Policy lookups that went to the directory",
            cache_misses.clone(),
        );
        registry.register(
            "policy_cache_entries",
            "Entries in the policy cache",
            cache_entries.clone(),
        );
        registry.register(
            "reloads",
            "Reloads by result (ok, refused)",
            reloads.clone(),
        );
        registry.register(
            "last_reload_timestamp_seconds",
            "Unix time of the last successful reload (or of the start)",
            last_reload.clone(),
        );
        registry.register(
            "sessions_closed_on_reload",
            "Open sessions closed because a reload disabled their mailbox",
            sessions_closed_on_reload.clone(),
        );
        registry.register(
            "protocol_log_dropped_rows",
            "Protocol log rows dropped because the writer fell behind",
            protocol_log_dropped.clone(),
        );
        let m = Metrics {
            registry,
            sessions,
            logins,
            relayed_bytes,
            backend_connect,
            backend_login,
            backend_failovers,
            backend_address_up,
            cache_hits,
            cache_misses,
            directory,
            cache_entries,
            reloads,
            last_reload,
            sessions_closed_on_reload,
            protocol_log_dropped,
            penalty_waits,
            penalty_seconds,
            memory_releases,
            fleet_redis_up,
            errors,
        };
        m.mark_reload();
        m
    }
}

impl Metrics {
    /// The cache counters, for the policy caches of successive snapshots.
    pub fn directory_stats(&self) -> DirectoryStats {
        self.directory.clone()
    }

    /// An error that ended a login or a relayed session.
    pub fn error(&self, blame: Blame, stage: &'static str) {
        self.errors
            .get_or_create(&ErrorLabels {
                blame: blame.as_str(),
                stage,
            })
            .inc();
    }

    pub fn login(&self, outcome: &'static str) {
        self.logins.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub fn mark_reload(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.last_reload.set(now);
    }

    pub fn relayed(&self, from_client: u64, from_backend: u64) {
        if from_client > 0 {
            self.relayed_bytes
                .get_or_create(&DirectionLabels {
                    direction: "client_to_backend",
                })
                .inc_by(from_client);
        }
        if from_backend > 0 {
            self.relayed_bytes
                .get_or_create(&DirectionLabels {
                    direction: "backend_to_client",
                })
                .inc_by(from_backend);
        }
    }

    /// A session in `phase` on `listener`, counted until the returned guard is dropped.
    pub fn session(&self, phase: &'static str, listener: &'static str) -> SessionGauge {
        let gauge = self
            .sessions
            .get_or_create(&SessionLabels { phase, listener })
            .clone();
        gauge.inc();
        SessionGauge(gauge)
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Decrements its gauge when dropped.
pub struct SessionGauge(Gauge);

impl Drop for SessionGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Serves `GET /metrics` until the gate stops. One request per connection, bounded in size and
/// time; anything else gets 404. `refresh` runs before each scrape (gauges read on demand).
pub async fn serve(
    listener: TcpListener,
    mut phase: watch::Receiver<Phase>,
    metrics: Arc<Metrics>,
    refresh: Arc<dyn Fn(&Metrics) + Send + Sync>,
) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = phase.wait_for(|p| *p != Phase::Running) => return,
        };
        let Ok((mut stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let metrics = metrics.clone();
        let refresh = refresh.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                let mut head = Vec::with_capacity(1024);
                let mut chunk = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                    let n = stream.read(&mut chunk).await?;
                    if n == 0 {
                        break;
                    }
                    head.extend_from_slice(&chunk[..n]);
                }
                let response = if head.starts_with(b"GET /metrics ") || head.starts_with(b"GET /metrics?") {
                    refresh(&metrics);
                    let body = metrics.encode();
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
                };
                stream.write_all(response.as_bytes()).await?;
                stream.shutdown().await
            })
            .await;
        });
    }
}

/// Binds the metrics listener when configured.
pub async fn bind(address: Option<SocketAddr>) -> std::io::Result<Option<TcpListener>> {
    match address {
        Some(a) => Ok(Some(TcpListener::bind(a).await?)),
        None => Ok(None),
    }
}
