//! The daemon's life under systemd (`Type=notify`, `ExecReload=imapgate reload`) or a shell: signals, readiness,
//! reload, watchdog, graceful shutdown.
//!
//! Signals come through tokio's own `signal` support (built on signal-hook-registry) rather than
//! signal-hook's iterator thread: it delivers SIGHUP/SIGTERM/SIGINT as async streams on the runtime
//! already running the gate, with no extra thread or channel.
//!
//! - Start: `READY=1` once every listener is bound.
//! - SIGHUP (`systemctl reload`, the documented "restart the IMAP4 services"): `RELOADING=1` with
//!   `MONOTONIC_USEC`, then configuration, mailbox directory and certificate are read and checked
//!   aside and swapped in whole with an empty policy cache; `READY=1` after, with `STATUS=` saying
//!   whether the reload was refused (the running state then stays, and the error is logged with
//!   file and line).
//! - SIGTERM / SIGINT: `STOPPING=1`, stop accepting, `* BYE` to sessions before login, let relayed
//!   sessions finish for `shutdown_grace`, then close them and exit 0. A second SIGTERM or SIGINT
//!   during the grace period closes them at once.
//! - `WATCHDOG=1` at half of `WatchdogSec` when systemd asks for it, and `STATUS=` with live
//!   session counts every 10 seconds.
//!
//! Without `NOTIFY_SOCKET` (not under systemd) the notifications are no-ops.

use std::path::Path;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::signal::unix::{signal, SignalKind};

use crate::server::{Gate, GateHandle, ReloadReport};

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

pub async fn run_daemon(config_path: &Path) -> anyhow::Result<()> {
    // The connection budget follows the open-file limit: use all the hard limit allows.
    crate::limits::raise_nofile_limit();
    // Handlers first: a SIGHUP that arrives while the gate starts must not kill it.
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let gate = Gate::bind(config_path).await?;
    for a in gate.plain_addrs() {
        tracing::info!(address = %a, "listening (plain, STARTTLS)");
    }
    for a in gate.tls_addrs() {
        tracing::info!(address = %a, "listening (implicit TLS)");
    }
    let handle = gate.handle();
    notify(&[NotifyState::Ready, NotifyState::Status("serving")]);
    if let Some(interval) = sd_notify::watchdog_enabled() {
        tokio::spawn(async move {
            loop {
                notify(&[NotifyState::Watchdog]);
                tokio::time::sleep(interval / 2).await;
            }
        });
    }
    let status_handle = handle.clone();
    let status = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            let open = status_handle.open_sessions();
            let relayed = status_handle.registry().len();
            let line = format!("{open} sessions open, {relayed} logged in");
            notify(&[NotifyState::Status(&line)]);
        }
    });
    let signals = tokio::spawn(async move {
        loop {
            tokio::select! {
                // In its own task: a reload stuck on a file system must not hold up SIGTERM.
                _ = hup.recv() => {
                    tokio::spawn(reload(handle.clone()));
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        tracing::info!("shutting down (a second SIGTERM or SIGINT closes relayed sessions now)");
        notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
        handle.shutdown();
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("second signal: closing relayed sessions now");
        handle.shutdown_now();
    });
    gate.run().await;
    signals.abort();
    status.abort();
    tracing::info!("stopped");
    Ok(())
}

/// Reloads with systemd told (`RELOADING=1` + `MONOTONIC_USEC`, then `READY=1` and a `STATUS=`
/// line with the outcome). Used for SIGHUP and for `imapgate reload` on the control socket.
pub async fn reload(handle: GateHandle) -> Result<ReloadReport, String> {
    tracing::info!("reload requested");
    let mut states = vec![NotifyState::Reloading];
    match NotifyState::monotonic_usec_now() {
        Ok(now) => states.push(now),
        Err(e) => tracing::debug!(error = %e, "no monotonic clock for MONOTONIC_USEC"),
    }
    notify(&states);
    let result = match tokio::task::spawn_blocking(move || handle.reload()).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(e.to_string().replace(['\r', '\n'], " ")),
        Err(e) => Err(format!("reload task failed: {e}")),
    };
    let status = match &result {
        Ok(r) => format!(
            "serving; reloaded ({} mailboxes, {} sessions of disabled mailboxes closed)",
            r.mailboxes, r.sessions_closed
        ),
        Err(e) => {
            tracing::error!(error = %e, "reload refused; the previous configuration stays in force");
            format!("serving the previous configuration; reload refused: {e}")
        }
    };
    let status = status.replace('\n', " ");
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
    result
}
