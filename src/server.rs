//! The gate as a library object: bind the listeners, serve until shut down, reload on request.
//!
//! Tests and the daemon use the same calls: [`Gate::bind`] with a configuration file (listeners may
//! be on port 0), [`Gate::handle`] to reload or shut down, and [`Gate::run`] to serve.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::limits::{Limits, Penalty, Usage};
use crate::listener::{self, ListenerKind};
use crate::metrics::{Metrics, ResultLabels};
use crate::protocol_log::ProtocolLog;
use crate::registry::{Kick, Registry};
use crate::state::{LoadError, State};

/// Where the gate is in its life; sessions watch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// Shutdown asked: listeners closed, sessions before login say `* BYE`, relays go on.
    Draining,
    /// Grace period over: relayed sessions are closed.
    Closing,
}

/// What every session and the control path share.
pub struct Shared {
    pub state: ArcSwap<State>,
    pub config_path: PathBuf,
    pub phase: watch::Sender<Phase>,
    pub tracker: TaskTracker,
    pub next_session: AtomicU64,
    pub registry: Arc<Registry>,
    pub limits: Arc<Limits>,
    pub penalty: Penalty,
    pub metrics: Arc<Metrics>,
    pub protocol_log: ProtocolLog,
    /// One reload at a time: two racing could put the older file in force.
    pub reload_lock: std::sync::Mutex<()>,
    /// The most connections the open-file limit allows, measured at start.
    pub descriptor_budget: Option<usize>,
}

impl Shared {
    /// `max_connections` in force under the current configuration.
    pub fn max_connections(&self) -> usize {
        crate::limits::effective_max_connections(
            self.state.load().config.imap4.max_connections,
            self.descriptor_budget,
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("cannot create the control socket {path}: {source}")]
    Control {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the protocol log in {path}: {source}")]
    ProtocolLog {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

pub struct Gate {
    shared: Arc<Shared>,
    listeners: Vec<(ListenerKind, TcpListener)>,
    control: Option<(UnixListener, PathBuf)>,
    metrics_listener: Option<TcpListener>,
}

/// What a successful reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReloadReport {
    pub mailboxes: usize,
    /// Open sessions of mailboxes now disabled, asked to close.
    pub sessions_closed: usize,
}

/// The failed-login penalty of one client address, as `imapgate test-login` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PenaltyView {
    pub address: String,
    /// Failed logins counted (forgotten after 15 minutes without one).
    pub failures: u32,
    /// What the next login from there waits.
    pub delay_ms: u64,
    /// In `trusted_networks`: never penalized.
    pub trusted: bool,
}

/// A cheap handle to a running gate: reload it or shut it down.
#[derive(Clone)]
pub struct GateHandle {
    shared: Arc<Shared>,
}

impl Gate {
    /// Loads the configuration at `config_path` and binds every listener it names.
    pub async fn bind(config_path: &Path) -> Result<Gate, StartError> {
        let metrics = Arc::new(Metrics::default());
        let state = State::load_with(config_path, metrics.cache_stats())?;
        let mut listeners = Vec::new();
        let imap4 = &state.config.imap4;
        for (kind, addresses) in [
            (ListenerKind::Plain, &imap4.unencrypted_or_tls_bindings),
            (ListenerKind::Tls, &imap4.ssl_bindings),
        ] {
            for &address in addresses {
                let l = listener::bind(address)
                    .map_err(|source| StartError::Bind { address, source })?;
                listeners.push((kind, l));
            }
        }
        let control = match &state.config.admin.control_socket {
            Some(path) => Some((
                crate::admin::control::bind(path)
                    .await
                    .map_err(|source| StartError::Control {
                        path: path.clone(),
                        source,
                    })?,
                path.clone(),
            )),
            None => None,
        };
        let metrics_listener = crate::metrics::bind(state.config.metrics.listen)
            .await
            .map_err(|source| StartError::Bind {
                address: state
                    .config
                    .metrics
                    .listen
                    .unwrap_or(([0, 0, 0, 0], 0).into()),
                source,
            })?;
        let protocol_log = ProtocolLog::start(
            &state.config.protocol_log,
            metrics.protocol_log_dropped.clone(),
        )
        .map_err(|source| StartError::ProtocolLog {
            path: state.config.protocol_log.directory.clone(),
            source,
        })?;
        let (phase, _) = watch::channel(Phase::Running);
        let descriptor_budget = descriptor_budget();
        log_connection_limit(state.config.imap4.max_connections, descriptor_budget);
        Ok(Gate {
            shared: Arc::new(Shared {
                state: ArcSwap::from_pointee(state),
                config_path: config_path.to_path_buf(),
                phase,
                tracker: TaskTracker::new(),
                next_session: AtomicU64::new(1),
                registry: Arc::new(Registry::default()),
                limits: Arc::new(Limits::default()),
                penalty: Penalty::default(),
                metrics,
                reload_lock: std::sync::Mutex::new(()),
                protocol_log,
                descriptor_budget,
            }),
            listeners,
            control,
            metrics_listener,
        })
    }

    /// Bound addresses of the plain (STARTTLS) listeners, in configuration order.
    pub fn plain_addrs(&self) -> Vec<SocketAddr> {
        self.addrs(ListenerKind::Plain)
    }

    /// Bound addresses of the implicit-TLS listeners, in configuration order.
    pub fn tls_addrs(&self) -> Vec<SocketAddr> {
        self.addrs(ListenerKind::Tls)
    }

    /// Bound address of the metrics endpoint, when configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    fn addrs(&self, kind: ListenerKind) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter(|(k, _)| *k == kind)
            .filter_map(|(_, l)| l.local_addr().ok())
            .collect()
    }

    pub fn handle(&self) -> GateHandle {
        GateHandle {
            shared: self.shared.clone(),
        }
    }

    /// Serves until [`GateHandle::shutdown`]: then stops accepting, lets relayed sessions finish
    /// for `shutdown_grace`, closes the rest, and returns.
    pub async fn run(self) {
        let shared = self.shared;
        let sweeper = tokio::spawn(crate::session::sweeper::run(shared.clone()));
        let _stop_sweeper = AbortOnDrop(sweeper);
        let mut accept_loops = Vec::new();
        for (kind, l) in self.listeners {
            accept_loops.push(tokio::spawn(listener::accept_loop(l, kind, shared.clone())));
        }
        if let Some(listener) = self.metrics_listener {
            let handle = GateHandle {
                shared: shared.clone(),
            };
            accept_loops.push(tokio::spawn(crate::metrics::serve(
                listener,
                handle,
                shared.metrics.clone(),
            )));
        }
        if let Some((listener, path)) = self.control {
            let handle = GateHandle {
                shared: shared.clone(),
            };
            accept_loops.push(tokio::spawn(crate::admin::control::serve(
                listener, path, handle,
            )));
        }
        let mut phase = shared.phase.subscribe();
        let _ = phase.wait_for(|p| *p != Phase::Running).await;
        for task in accept_loops {
            let _ = task.await;
        }
        shared.tracker.close();
        let grace = shared.state.load().config.imap4.shutdown_grace;
        tokio::select! {
            r = tokio::time::timeout(grace, shared.tracker.wait()) => {
                if r.is_err() {
                    tracing::info!(
                        sessions = shared.tracker.len(),
                        "grace period over, closing relayed sessions"
                    );
                }
            }
            // GateHandle::shutdown_now (a second SIGTERM): no more grace.
            _ = phase.wait_for(|p| *p == Phase::Closing) => {}
        }
        shared.phase.send_replace(Phase::Closing);
        shared.registry.close_all();
        if tokio::time::timeout(Duration::from_secs(5), shared.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                sessions = shared.tracker.len(),
                "sessions still open after close"
            );
        }
    }
}

impl GateHandle {
    /// Re-reads the configuration, directory and certificate; installs them only when all are
    /// valid, and empties the policy cache by installing a new one. On error nothing changes.
    pub fn reload(&self) -> Result<ReloadReport, LoadError> {
        let _one_at_a_time = self
            .shared
            .reload_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let metrics = &self.shared.metrics;
        let new = match State::load_with(&self.shared.config_path, metrics.cache_stats()) {
            Ok(new) => new,
            Err(e) => {
                metrics
                    .reloads
                    .get_or_create(&ResultLabels { result: "refused" })
                    .inc();
                return Err(e);
            }
        };
        let old = self.shared.state.load();
        if new.config.imap4.unencrypted_or_tls_bindings
            != old.config.imap4.unencrypted_or_tls_bindings
            || new.config.imap4.ssl_bindings != old.config.imap4.ssl_bindings
        {
            tracing::warn!("listener addresses changed in the configuration; they take effect at the next restart");
        }
        let mailboxes = new.policies.directory().mailboxes.len();
        let new = Arc::new(new);
        self.shared.state.store(new.clone());
        let sessions_closed = if new.config.directory.disconnect_disabled_on_reload {
            // By the mailbox each session belongs to (its canonical login): a mailbox that is
            // now disabled, or gone when names outside the directory are refused.
            let policies = &new.policies;
            self.shared.registry.kick_where(Kick::Disabled, |s| {
                policies
                    .resolve(&s.backend_login)
                    .is_none_or(|p| !p.imap_enabled)
            })
        } else {
            0
        };
        metrics
            .reloads
            .get_or_create(&ResultLabels { result: "ok" })
            .inc();
        metrics.mark_reload();
        metrics
            .sessions_closed_on_reload
            .inc_by(sessions_closed as u64);
        tracing::info!(
            mailboxes,
            sessions_closed,
            "reload complete: directory, certificate and backends in force, policy cache emptied"
        );
        Ok(ReloadReport {
            mailboxes,
            sessions_closed,
        })
    }

    /// Ends the shutdown grace period at once: relayed sessions are closed now.
    pub fn shutdown_now(&self) {
        self.shutdown();
        self.shared.phase.send_replace(Phase::Closing);
    }

    /// Asks the gate to shut down; [`Gate::run`] returns when it is done.
    pub fn shutdown(&self) {
        self.shared.phase.send_if_modified(|p| {
            if *p == Phase::Running {
                *p = Phase::Draining;
                true
            } else {
                false
            }
        });
    }

    /// The snapshot in force (for tests and the control path).
    pub fn state(&self) -> Arc<State> {
        self.shared.state.load_full()
    }

    /// Sessions currently open.
    pub fn open_sessions(&self) -> usize {
        self.shared.tracker.len()
    }

    /// Follows the gate's phase (running, draining, closing).
    pub fn phase(&self) -> watch::Receiver<Phase> {
        self.shared.phase.subscribe()
    }

    /// The gate's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// Connection counters (all back to zero when no session is open).
    pub fn usage(&self) -> Usage {
        self.shared.limits.usage()
    }

    /// The failed-login penalty the gate applies to `ip` now.
    pub fn penalty_of(&self, ip: std::net::IpAddr) -> PenaltyView {
        let state = self.shared.state.load();
        let imap4 = &state.config.imap4;
        let trusted = imap4.trusted_networks.iter().any(|n| n.contains(&ip));
        let penalty = &self.shared.penalty;
        let delay = if trusted {
            Duration::ZERO
        } else {
            penalty.delay(ip, imap4.auth_penalty_initial, imap4.auth_penalty_max)
        };
        PenaltyView {
            address: ip.to_string(),
            failures: penalty.failures(ip),
            delay_ms: delay.as_millis() as u64,
            trusted,
        }
    }

    /// The registry of logged-in sessions.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.shared.registry
    }
}

/// What the open-file limit allows this process, with one descriptor reserve per worker thread.
fn descriptor_budget() -> Option<usize> {
    let threads = tokio::runtime::Handle::try_current()
        .map(|h| h.metrics().num_workers())
        .unwrap_or(1);
    crate::limits::descriptor_budget(crate::limits::nofile_limit(), threads)
}

fn log_connection_limit(configured: Option<usize>, budget: Option<usize>) {
    let nofile = crate::limits::nofile_limit();
    let limit = crate::limits::effective_max_connections(configured, budget);
    match (configured, budget) {
        (Some(c), Some(b)) if c > b => tracing::warn!(
            configured = c,
            max_connections = limit,
            open_file_limit = nofile,
            "imap4.max_connections is more than the open-file limit allows (two descriptors per relayed session); capped"
        ),
        _ => tracing::info!(
            max_connections = limit,
            open_file_limit = nofile,
            "connection limit (two descriptors per relayed session, a reserve for listeners, logs and pipes)"
        ),
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
