//! One task watches every relayed session, so that a session holds no timer of its own: it
//! closes sessions in which no byte moved for `authenticated_connection_timeout`, adds the bytes
//! relayed since its last pass to the metrics, and writes the protocol log's periodic `proxy`
//! rows. It reads the configuration in force at each pass, so a reload that changes the idle
//! timeout applies to open sessions too.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::Context;
use crate::memory::{self, BurstWatch};
use crate::protocol_log::Entry;
use crate::registry::{Kick, SessionEntry};

/// Runs until the gate's runtime stops (the gate aborts it when it returns).
pub async fn run(shared: Arc<Context>) {
    loop {
        let (idle, rows) = {
            let state = shared.state.load();
            (
                state.config.imap4.authenticated_connection_timeout,
                state.config.protocol_log.proxy_row_interval,
            )
        };
        let every = interval(idle, rows, shared.protocol_log.enabled());
        tokio::time::sleep(every).await;
        sweep(&shared, idle, rows, every);
    }
}

/// Once a second, reads the gate's connection churn; when a burst of connections (a reconnect
/// storm, or its sessions closing together) has settled, hands the memory it freed back to the
/// system (`[runtime] release_memory_after_bursts`). Runs until the gate's runtime stops.
pub async fn release_after_bursts(shared: Arc<Context>) {
    const EVERY: Duration = Duration::from_secs(1);
    let mut bursts = BurstWatch::default();
    loop {
        tokio::time::sleep(EVERY).await;
        let settled = bursts.settled(shared.connections.churn(), EVERY);
        if settled
            && shared
                .state
                .load()
                .config
                .runtime
                .release_memory_after_bursts
        {
            // Walking the heap takes milliseconds: not on a thread that serves sessions.
            if tokio::task::spawn_blocking(memory::release_free_memory)
                .await
                .is_ok()
            {
                shared.metrics.memory_releases.inc();
            }
        }
    }
}

/// How often to pass: an idle session is closed at most an eighth of its timeout late.
fn interval(idle: Duration, rows: Duration, logging: bool) -> Duration {
    let every = (idle / 8).clamp(Duration::from_millis(100), Duration::from_secs(30));
    if logging {
        every.min(rows.max(Duration::from_millis(100)))
    } else {
        every
    }
}

/// One pass over the registry, `every` after the last one. Timeouts and rows fall due within
/// half a pass of their time, rather than a whole pass late.
pub fn sweep(shared: &Context, idle: Duration, rows: Duration, every: Duration) {
    let registry = &shared.registry;
    let now = registry.now_ms();
    // Due within half a pass counts as due now.
    let slack = every.as_millis() as u64 / 2;
    let idle_ms = idle.as_millis() as u64;
    let rows_ms = rows.as_millis() as u64;
    let logging = shared.protocol_log.enabled();
    let (mut from_client, mut from_backend) = (0, 0);
    for entry in registry.snapshot() {
        let (c, b) = entry.unreported();
        from_client += c;
        from_backend += b;
        let total = entry.total();
        if entry.seen.swap(total, Ordering::Relaxed) != total {
            entry.quiet_since_ms.store(now, Ordering::Relaxed);
        } else if (now + slack).saturating_sub(entry.quiet_since_ms.load(Ordering::Relaxed))
            >= idle_ms
        {
            entry.kick(Kick::Idle);
        }
        // A closing relay sets `last_row_ms` to u64::MAX before its own last row.
        let last_row = entry.last_row_ms.load(Ordering::Relaxed);
        if logging
            && last_row != u64::MAX
            && (now + slack).saturating_sub(last_row) >= rows_ms
            && entry
                .last_row_ms
                .compare_exchange(last_row, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            proxy_row(&entry, "relaying");
        }
    }
    shared.metrics.relayed(from_client, from_backend);
}

/// A `proxy` row for a relayed session: while it relays, and when it closes.
pub fn proxy_row(entry: &SessionEntry, context: &str) {
    let Some(log) = &entry.log else {
        return;
    };
    let info = &entry.info;
    let c = entry.from_client.load(Ordering::Relaxed);
    let b = entry.from_backend.load(Ordering::Relaxed);
    log.row(Entry {
        user: info.user.clone(),
        duration_ms: 0,
        rq_size: c,
        rp_size: b,
        command: "proxy".into(),
        parameters: format!("backend={}", info.backend),
        context: format!("{context};bytes_from_client={c};bytes_from_backend={b}"),
    });
}
