//! The daemon's life under systemd (`Type=notify`, `ExecReload=imapgate reload`) or a shell:
//! signals, readiness, reload notifications, watchdog, and the second signal that ends a
//! graceful shutdown. It acts on a [`Target`] (the composition root implements it) and knows
//! nothing else of the gate.
//!
//! Signals come through tokio's own `signal` support (built on signal-hook-registry) rather than
//! signal-hook's iterator thread: it delivers SIGHUP/SIGTERM/SIGINT as async streams on the
//! runtime already running the gate, with no extra thread or channel.
//!
//! - Start: `READY=1` once every listener is bound ([`ready`]).
//! - SIGHUP (`systemctl reload`, the documented "restart the IMAP4 services"), and a reload asked
//!   on the control socket: `RELOADING=1` with `MONOTONIC_USEC`, the reload, then `READY=1` with
//!   `STATUS=` saying whether it was refused ([`reloading`]).
//! - SIGTERM / SIGINT: `STOPPING=1` and a graceful shutdown; a second one ends the grace period.
//! - `WATCHDOG=1` at half of `WatchdogSec` when systemd asks for it, and `STATUS=` with live
//!   session counts every 10 seconds.
//!
//! Without `NOTIFY_SOCKET` (not under systemd) the notifications are no-ops.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sd_notify::NotifyState;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::task::JoinHandle;

/// What the daemon's signals act on.
#[async_trait]
pub trait Target: Send + Sync + 'static {
    /// Reloads; a line for systemd's `STATUS=`, or the reason it was refused.
    async fn reload(&self) -> Result<String, String>;
    /// Starts a graceful shutdown.
    fn shutdown(&self);
    /// Ends the shutdown's grace period now.
    fn shutdown_now(&self);
    /// A line for systemd's `STATUS=` (open session counts).
    fn status(&self) -> String;
}

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// The signals the daemon reacts to, installed before anything else: a SIGHUP that arrives while
/// the gate starts must not kill it.
pub struct Signals {
    hup: Signal,
    term: Signal,
    int: Signal,
}

impl Signals {
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }
}

/// The gate is serving.
pub fn ready() {
    notify(&[NotifyState::Ready, NotifyState::Status("serving")]);
}

/// Runs a reload with systemd told: `RELOADING=1` + `MONOTONIC_USEC`, then `READY=1` and a
/// `STATUS=` line with the outcome.
pub async fn reloading<T>(
    reload: impl std::future::Future<Output = Result<T, String>>,
    describe: impl FnOnce(&T) -> String,
) -> Result<T, String> {
    tracing::info!("reload requested");
    let mut states = vec![NotifyState::Reloading];
    match NotifyState::monotonic_usec_now() {
        Ok(now) => states.push(now),
        Err(e) => tracing::debug!(error = %e, "no monotonic clock for MONOTONIC_USEC"),
    }
    notify(&states);
    let result = reload.await;
    let status = match &result {
        Ok(r) => format!("serving; {}", describe(r)),
        Err(e) => {
            tracing::error!(error = %e, "reload refused; the previous configuration stays in force");
            format!("serving the previous configuration; reload refused: {e}")
        }
    };
    let status = status.replace('\n', " ");
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
    result
}

/// Follows the signals, feeds the watchdog and reports status until aborted (drop the handles).
pub fn spawn(signals: Signals, target: Arc<dyn Target>) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    if let Some(interval) = sd_notify::watchdog_enabled() {
        tasks.push(tokio::spawn(async move {
            loop {
                notify(&[NotifyState::Watchdog]);
                tokio::time::sleep(interval / 2).await;
            }
        }));
    }
    let status = target.clone();
    tasks.push(tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            let line = status.status();
            notify(&[NotifyState::Status(&line)]);
        }
    }));
    let Signals {
        mut hup,
        mut term,
        mut int,
    } = signals;
    tasks.push(tokio::spawn(async move {
        loop {
            tokio::select! {
                // In its own task: a reload stuck on a file system must not hold up SIGTERM.
                _ = hup.recv() => {
                    let target = target.clone();
                    tokio::spawn(async move {
                        let _ = reloading(target.reload(), String::clone).await;
                    });
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        tracing::info!("shutting down (a second SIGTERM or SIGINT closes relayed sessions now)");
        notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
        target.shutdown();
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("second signal: closing relayed sessions now");
        target.shutdown_now();
    }));
    tasks
}
