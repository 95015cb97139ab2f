//! The daemon's life: signals, reload, graceful shutdown.
//!
//! Signals come through tokio's own `signal` support (built on signal-hook-registry) rather than
//! signal-hook's iterator thread: it delivers SIGHUP/SIGTERM/SIGINT as async streams on the runtime
//! already running the gate, with no extra thread or channel.
//!
//! - SIGHUP: reload (the documented "restart the IMAP4 services"): configuration, mailbox
//!   directory and certificate are read and checked aside, then swapped in whole with an empty
//!   policy cache. On any error the running state stays and the error is logged with file and line.
//! - SIGTERM / SIGINT: stop accepting, `* BYE` to sessions before login, let relayed sessions finish
//!   for `shutdown_grace`, then close them and exit 0.

use std::path::Path;

use tokio::signal::unix::{signal, SignalKind};

use crate::server::{Gate, GateHandle};

pub async fn run_daemon(config_path: &Path) -> anyhow::Result<()> {
    let gate = Gate::bind(config_path).await?;
    for a in gate.plain_addrs() {
        tracing::info!(address = %a, "listening (plain, STARTTLS)");
    }
    for a in gate.tls_addrs() {
        tracing::info!(address = %a, "listening (implicit TLS)");
    }
    let handle = gate.handle();
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
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
        tracing::info!("shutting down");
        handle.shutdown();
    });
    gate.run().await;
    signals.abort();
    tracing::info!("stopped");
    Ok(())
}

async fn reload(handle: GateHandle) {
    tracing::info!("reload requested");
    match tokio::task::spawn_blocking(move || handle.reload()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::error!(error = %e, "reload refused; the previous configuration stays in force")
        }
        Err(e) => {
            tracing::error!(error = %e, "reload task failed; the previous configuration stays in force")
        }
    }
}
