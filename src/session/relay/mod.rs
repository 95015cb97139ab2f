//! After login: move bytes both ways, parse nothing. IDLE, COMPRESS and literals of any size pass
//! through untouched.
//!
//! A client that closes its side has that passed on to the backend, and the backend's last
//! responses still reach it; when the backend closes, what it sent is delivered and the session
//! ends at once (the client's side is closed too).
//!
//! Each direction waits for its source to become readable *without* holding a buffer, borrows a
//! 256 KiB buffer from a per-thread pool only while data moves, and gives it back as soon as the
//! chunk is written: an idle session (an IMAP client in IDLE for half an hour) holds its sockets,
//! its task and its registry entry, not copy buffers nor timers. The session ends when either
//! side has closed and the other has drained, or when its registry entry is kicked: by the
//! [`sweeper`](super::sweeper) when no byte moved for `authenticated_connection_timeout`, by the
//! gate when its shutdown grace period is over, by a reload that disabled the mailbox or by
//! `imapgate kick`; for the last two the client gets `* BYE` if the response stream is between
//! two lines, and the connection is closed otherwise.

use std::future::poll_fn;
use std::io;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tracing::Instrument;

use super::preauth::LoggedIn;
use super::sweeper::proxy_row;
use super::Context as SessionContext;
use pump::Pump;

mod pump;
use crate::errors::Blame;
use crate::limits::SessionPermit;
use crate::registry::{Kick, Registration};
use crate::stream::Stream;

/// Why the relay stopped.
enum Ending {
    Closed,
    /// A connection failed: whose, and how.
    Error(Blame, io::Error),
    Kicked(Kick),
}

/// A logged-in session: its two connections, one pump each way, and its registry entry. This is
/// what a relayed session costs while idle, so it stays small: no timers (the sweeper checks
/// idleness), no copies of what the registry entry already knows.
pub struct Relay {
    client: Stream,
    server: Stream,
    c2s: Pump,
    s2c: Pump,
    registration: Registration,
    _permit: SessionPermit,
}

impl Relay {
    pub fn new(session: LoggedIn) -> Relay {
        let LoggedIn {
            client,
            client_pending,
            backend,
            registration,
            permit,
        } = session;
        Relay {
            client,
            server: backend.stream,
            c2s: Pump::commands().with_pending(client_pending),
            // What the backend sent right behind its OK is delivered (and tracked) by the relay.
            s2c: Pump::responses().with_pending(backend.pending),
            registration,
            _permit: permit,
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Ending> {
        let entry = self.registration.entry();
        if let Poll::Ready(kick) = entry.poll_kicked(cx) {
            return Poll::Ready(Ending::Kicked(kick));
        }
        let up = self
            .c2s
            .poll(cx, &mut self.client, &mut self.server, &entry.from_client);
        let down = self
            .s2c
            .poll(cx, &mut self.server, &mut self.client, &entry.from_backend);
        match (up, down) {
            (Poll::Ready(Err(e)), _) => Poll::Ready(Ending::Error(self.c2s.failed_side(), e)),
            (_, Poll::Ready(Err(e))) => Poll::Ready(Ending::Error(self.s2c.failed_side(), e)),
            // The backend ended the session (LOGOUT, BYE, crash) and everything it sent has been
            // passed on: the session is over, whether or not the client closed its side.
            (_, Poll::Ready(Ok(()))) => Poll::Ready(Ending::Closed),
            // The client closed: its end was passed on; the backend's last words still flow.
            _ => Poll::Pending,
        }
    }

    /// Relays until the session ends, then closes both sides and accounts for it.
    ///
    /// Not an `async fn`: its arguments would be stored twice in the future. The closing steps
    /// are boxed, so that their state is only allocated when the session ends.
    ///
    /// The session's span is entered for the closing steps only (see [`crate::session::serve`]).
    #[allow(clippy::manual_async_fn)] // on purpose: see above
    pub fn run(
        mut self,
        ctx: &SessionContext,
        span: tracing::Span,
    ) -> impl std::future::Future<Output = ()> + Send + '_ {
        async move {
            let ending = poll_fn(|cx| self.poll(cx)).await;
            Box::pin(self.close(ending, ctx).instrument(span)).await;
        }
    }

    async fn close(mut self, ending: Ending, ctx: &SessionContext) {
        let blame = match &ending {
            Ending::Error(blame, _) => {
                ctx.metrics.error(*blame, "relay");
                Some(*blame)
            }
            _ => None,
        };
        let reason = match &ending {
            Ending::Closed => "closed".to_string(),
            Ending::Error(blame, e) => format!("connection error ({blame}): {e}"),
            Ending::Kicked(Kick::Idle) => "idle timeout".to_string(),
            Ending::Kicked(Kick::Shutdown) => "gate shutting down".to_string(),
            Ending::Kicked(Kick::Disabled) => "mailbox disabled by reload".to_string(),
            Ending::Kicked(Kick::Admin) => "closed by the administrator".to_string(),
        };
        let bye = match ending {
            Ending::Kicked(Kick::Disabled) => Some(format!(
                "* BYE {}\r\n",
                ctx.state.load().config.imap4.disabled_message
            )),
            Ending::Kicked(Kick::Admin) => {
                Some("* BYE Session closed by the administrator.\r\n".to_string())
            }
            _ => None,
        };
        if let Some(bye) = bye {
            let said_bye = say_bye(&mut self.s2c, &self.c2s, &mut self.client, &bye).await;
            tracing::info!(said_bye, "closing session: {reason}");
        }
        // TLS ends with a close_notify; a plain socket's FIN comes with the close itself (an
        // explicit shutdown would only cost system calls on every session's end).
        if self.client.is_tls() || self.server.is_tls() {
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                if self.client.is_tls() {
                    let _ = self.client.shutdown().await;
                }
                if self.server.is_tls() {
                    let _ = self.server.shutdown().await;
                }
            })
            .await;
        }
        drop((self.client, self.server));
        let entry = self.registration.entry();
        let (c, b) = entry.unreported();
        ctx.metrics.relayed(c, b);
        // No `relaying` row may follow the closing one.
        entry.last_row_ms.store(u64::MAX, Ordering::Relaxed);
        proxy_row(entry, &format!("closed: {reason}"));
        tracing::info!(
            ending = %reason,
            blame = blame.map(Blame::as_str),
            bytes_from_client = entry.from_client.load(Ordering::Relaxed),
            bytes_from_backend = entry.from_backend.load(Ordering::Relaxed),
            seconds = entry.info.since.elapsed().map(|d| d.as_secs()).unwrap_or(0),
            "session closed"
        );
    }
}

/// Finishes the chunk being written to the client, then writes `bye` if the response stream is
/// between two lines and nothing made it opaque. Returns whether the line was written.
async fn say_bye(s2c: &mut Pump, c2s: &Pump, client: &mut Stream, bye: &str) -> bool {
    let flushed = tokio::time::timeout(
        Duration::from_secs(1),
        poll_fn(|cx| s2c.poll_write_pending(cx, client)),
    )
    .await;
    if !matches!(flushed, Ok(Ok(()))) || !s2c.boundary.at_line_start() || c2s.boundary.is_opaque() {
        return false;
    }
    let write = async {
        client.write_all(bye.as_bytes()).await?;
        client.flush().await
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), write).await,
        Ok(Ok(()))
    )
}
