//! The composition root: builds every part of the gate from its configuration and hands each
//! what it needs; nothing below imports from here.
//!
//! Tests and the daemon use the same calls: [`Gate::bind`] with a configuration file (listeners may
//! be on port 0), [`Gate::handle`] to reload or shut down, and [`Gate::run`] to serve;
//! [`run_daemon`] adds signals and systemd.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use crate::admin::control::{self, Controlled};
pub use crate::admin::control::{PenaltyView, ReloadReport};
use crate::lifecycle;
use crate::limits::{Connections, LocalSessions};
use crate::listener::{self, ListenerKind};
use crate::login::{Configured, Login};
use crate::metrics::Metrics;
pub use crate::phase::Phase;
use crate::protocol_log::ProtocolLog;
use crate::registry::Registry;
use crate::session::{sweeper, Context};
use crate::state::{LoadError, State};

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
    #[error("[fleet]: {0}")]
    Fleet(String),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

mod handle;

/// What the root keeps besides what sessions share.
struct Root {
    ctx: Arc<Context>,
    config_path: PathBuf,
    /// One reload at a time: two racing could put the older file in force.
    reload_lock: tokio::sync::Mutex<()>,
    /// The task following the directory in force (its changes close disabled sessions).
    follower: Mutex<Option<JoinHandle<()>>>,
    /// `[fleet]`: state shared with the other gates on Redis (read at start).
    fleet: Option<Arc<crate::fleet::Fleet>>,
}

pub struct Gate {
    root: Arc<Root>,
    listeners: Vec<(ListenerKind, TcpListener)>,
    control: Option<(UnixListener, PathBuf)>,
    metrics_listener: Option<TcpListener>,
    admin_web: Option<TcpListener>,
}

/// A cheap handle to a running gate: reload it or shut it down.
#[derive(Clone)]
pub struct GateHandle {
    root: Arc<Root>,
}

impl Gate {
    /// Loads the configuration at `config_path` and binds every listener it names.
    pub async fn bind(config_path: &Path) -> Result<Gate, StartError> {
        let metrics = Arc::new(Metrics::default());
        let state = load(config_path, &metrics).await?;
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
                control::bind(path)
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
        let admin_web = match &state.config.admin_web {
            Some(web) => Some(
                crate::admin::web::bind(web.listen)
                    .await
                    .map_err(|source| StartError::Bind {
                        address: web.listen,
                        source,
                    })?,
            ),
            None => None,
        };
        let protocol_log = ProtocolLog::start(
            &state.config.protocol_log,
            metrics.protocol_log_dropped.clone(),
        )
        .map_err(|source| StartError::ProtocolLog {
            path: state.config.protocol_log.directory.clone(),
            source,
        })?;
        let descriptor_budget = descriptor_budget();
        log_connection_limit(state.config.imap4.max_connections, descriptor_budget);
        let state = Arc::new(ArcSwap::from_pointee(state));
        let registry = Arc::new(Registry::default());
        let connections = Arc::new(Connections::default());
        let fleet = match &state.load().config.fleet {
            Some(config) => Some(
                crate::fleet::Fleet::new(config, metrics.clone())
                    .map_err(|e| StartError::Fleet(e.to_string()))?,
            ),
            None => None,
        };
        let sessions: Arc<dyn crate::limits::SessionLimiter> = match &fleet {
            Some(fleet) => Arc::new(crate::fleet::sessions::FleetSessions::new(fleet.clone())),
            None => Arc::new(LocalSessions::default()),
        };
        let mut login = Login::new(
            state.clone(),
            Arc::new(Configured {
                metrics: metrics.clone(),
            }),
            sessions,
            connections.clone(),
            registry.clone(),
            metrics.clone(),
        );
        if let Some(fleet) = &fleet {
            login = login.with_fleet(fleet.clone());
        }
        let ctx = Arc::new(Context {
            state,
            phase: watch::channel(Phase::Running).0,
            tracker: TaskTracker::new(),
            next_session: AtomicU64::new(1),
            registry,
            connections,
            login,
            metrics,
            protocol_log,
            descriptor_budget,
        });
        let root = Arc::new(Root {
            ctx,
            config_path: config_path.to_path_buf(),
            reload_lock: tokio::sync::Mutex::new(()),
            follower: Mutex::new(None),
            fleet,
        });
        GateHandle { root: root.clone() }.follow_directory();
        Ok(Gate {
            root,
            listeners,
            control,
            metrics_listener,
            admin_web,
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

    /// Bound address of the admin center, when configured.
    pub fn admin_web_addr(&self) -> Option<SocketAddr> {
        self.admin_web.as_ref().and_then(|l| l.local_addr().ok())
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
            root: self.root.clone(),
        }
    }

    /// Serves until [`GateHandle::shutdown`]: then stops accepting, lets relayed sessions finish
    /// for `shutdown_grace`, closes the rest, and returns.
    pub async fn run(self) {
        let ctx = self.root.ctx.clone();
        let sweeper = AbortOnDrop(tokio::spawn(sweeper::run(ctx.clone())));
        let _release = AbortOnDrop(tokio::spawn(sweeper::release_after_bursts(ctx.clone())));
        probe_backends(&ctx.state.load(), &ctx.metrics);
        // The fleet's own sweeper (leases) and its channels.
        let _fleet_tasks = self.root.fleet.clone().map(|fleet| {
            let member: Arc<dyn crate::fleet::bus::Member> = Arc::new(GateHandle {
                root: self.root.clone(),
            });
            (
                AbortOnDrop(tokio::spawn(fleet.clone().run())),
                AbortOnDrop(tokio::spawn(crate::fleet::bus::listen(fleet, member))),
            )
        });
        let mut accept_loops = Vec::new();
        for (kind, l) in self.listeners {
            accept_loops.push(tokio::spawn(listener::accept_loop(l, kind, ctx.clone())));
        }
        if let Some(listener) = self.metrics_listener {
            let state = ctx.state.clone();
            let refresh = Arc::new(move |m: &Metrics| {
                m.cache_entries
                    .set(state.load().policies.cached_entries() as i64);
            });
            accept_loops.push(tokio::spawn(crate::metrics::serve(
                listener,
                ctx.phase.subscribe(),
                ctx.metrics.clone(),
                refresh,
            )));
        }
        let gate: Arc<dyn Controlled> = Arc::new(GateHandle {
            root: self.root.clone(),
        });
        if let Some((listener, path)) = self.control {
            accept_loops.push(tokio::spawn(control::serve(
                listener,
                path,
                gate.clone(),
                ctx.phase.subscribe(),
            )));
        }
        if let Some(listener) = self.admin_web {
            accept_loops.push(tokio::spawn(crate::admin::web::serve(
                listener,
                gate,
                ctx.phase.subscribe(),
            )));
        }
        let mut phase = ctx.phase.subscribe();
        let _ = phase.wait_for(|p| *p != Phase::Running).await;
        for task in accept_loops {
            let _ = task.await;
        }
        ctx.tracker.close();
        let grace = ctx.state.load().config.imap4.shutdown_grace;
        tokio::select! {
            r = tokio::time::timeout(grace, ctx.tracker.wait()) => {
                if r.is_err() {
                    tracing::info!(
                        sessions = ctx.tracker.len(),
                        "grace period over, closing relayed sessions"
                    );
                }
            }
            // GateHandle::shutdown_now (a second SIGTERM): no more grace.
            _ = phase.wait_for(|p| *p == Phase::Closing) => {}
        }
        ctx.phase.send_replace(Phase::Closing);
        ctx.registry.close_all();
        if tokio::time::timeout(Duration::from_secs(5), ctx.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                sessions = ctx.tracker.len(),
                "sessions still open after close"
            );
        }
        drop(sweeper);
        if let Some(follower) = lock(&self.root.follower).take() {
            follower.abort();
        }
    }
}

/// Asks each backend for its capabilities (the mechanisms offered before login), in tasks of
/// their own: a backend that does not answer now is learned about at its first login.
pub(crate) fn probe_backends(state: &State, metrics: &Arc<Metrics>) {
    // Only bearer tokens depend on it (`[oauth]`); passwords work with whatever is offered.
    if state.config.oauth.is_none() {
        return;
    }
    for backend in state.backends.values() {
        let (backend, metrics) = (backend.clone(), metrics.clone());
        tokio::spawn(async move {
            if let Err(e) = backend.probe(&metrics).await {
                tracing::info!(backend = %backend.name, error = %e, "backend capabilities not known yet");
            }
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads everything the configuration names, off the runtime's threads (files, certificates).
async fn load(path: &Path, metrics: &Metrics) -> Result<State, LoadError> {
    let (path, stats) = (path.to_path_buf(), metrics.directory_stats());
    tokio::task::spawn_blocking(move || State::load_with(&path, stats))
        .await
        .unwrap_or_else(|e| Err(LoadError::Internal(e.to_string())))
}

/// The daemon: signals and systemd around a gate, until SIGTERM.
pub async fn run_daemon(config_path: &Path) -> anyhow::Result<()> {
    // The connection budget follows the open-file limit: use all the hard limit allows.
    crate::limits::raise_nofile_limit();
    let signals = lifecycle::Signals::install()?;
    let gate = Gate::bind(config_path).await?;
    for a in gate.plain_addrs() {
        tracing::info!(address = %a, "listening (plain, STARTTLS)");
    }
    for a in gate.tls_addrs() {
        tracing::info!(address = %a, "listening (implicit TLS)");
    }
    if let Some(a) = gate.admin_web_addr() {
        tracing::info!(address = %a, "admin center listening (HTTPS)");
    }
    lifecycle::ready();
    let tasks = lifecycle::spawn(signals, Arc::new(gate.handle()));
    gate.run().await;
    for task in tasks {
        task.abort();
    }
    tracing::info!("stopped");
    Ok(())
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
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
