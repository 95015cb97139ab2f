//! After login: move bytes both ways, parse nothing. IDLE, COMPRESS and literals of any size pass
//! through untouched.
//!
//! A client that closes its side has that passed on to the backend, and the backend's last
//! responses still reach it; when the backend closes, what it sent is delivered and the session
//! ends at once (the client's side is closed too).
//!
//! Each direction waits for its source to become readable *without* holding a buffer, borrows a
//! 64 KiB buffer from a per-thread pool only while data moves, and gives it back as soon as the
//! chunk is written: an idle session (an IMAP client in IDLE for half an hour) holds its sockets,
//! its task and a few counters, not copy buffers. The session ends when either side has closed and
//! the other has drained, when no byte moved for `authenticated_connection_timeout`, when the gate
//! closes after its shutdown grace period, or when it is kicked (its mailbox was disabled by a
//! reload, or `imapgate kick`): then the client gets `* BYE` if the response stream is between
//! two lines, and the connection is closed otherwise.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;

use super::boundary::Boundary;
use super::preauth::LoggedIn;
use crate::metrics::Metrics;
use crate::protocol_log::{ProtocolLog, Row};
use crate::registry::{Counters, Kick};
use crate::server::Phase;
use crate::stream::Stream;

/// Size of a relay buffer: large reads when data flows.
const BUFFER: usize = 256 * 1024;
/// Buffers kept per thread for reuse.
const POOL: usize = 16;

thread_local! {
    static BUFFERS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

fn take_buffer() -> Vec<u8> {
    BUFFERS
        .with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| vec![0; BUFFER])
}

fn give_buffer(buf: Vec<u8>) {
    if buf.len() == BUFFER {
        BUFFERS.with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < POOL {
                p.push(buf);
            }
        });
    }
}

/// One direction of the relay.
struct Pump {
    /// Data read and not yet written, `buf[pos..end]`; `None` while waiting for data.
    buf: Option<Vec<u8>>,
    pos: usize,
    end: usize,
    eof: bool,
    done: bool,
    unflushed: bool,
    last_read: Instant,
    boundary: Boundary,
}

impl Pump {
    fn new(boundary: Boundary, start: Instant) -> Pump {
        Pump {
            buf: None,
            pos: 0,
            end: 0,
            eof: false,
            done: false,
            unflushed: false,
            last_read: start,
            boundary,
        }
    }

    /// Starts with bytes already read (the client's commands pipelined behind its login).
    fn with_pending(mut self, pending: Vec<u8>) -> Pump {
        if !pending.is_empty() {
            self.boundary.feed(&pending);
            self.end = pending.len();
            self.buf = Some(pending);
        }
        self
    }

    /// Writes what is pending, then reads and writes until the source would block; `Ready(Ok)`
    /// once the source ended and the end was passed on.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        src: &mut Stream,
        dst: &mut Stream,
        counter: &AtomicU64,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.poll_write_pending(cx, dst))?;
            if self.done {
                return Poll::Ready(Ok(()));
            }
            if self.eof {
                ready!(Pin::new(&mut *dst).poll_shutdown(cx))?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            if src.poll_read_ready(cx)?.is_pending() {
                return self.poll_flush_idle(cx, dst);
            }
            let mut buf = take_buffer();
            let mut rb = ReadBuf::new(&mut buf);
            match Pin::new(&mut *src).poll_read(cx, &mut rb) {
                Poll::Pending => {
                    give_buffer(buf);
                    return self.poll_flush_idle(cx, dst);
                }
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    give_buffer(buf);
                    self.eof = true;
                }
                Poll::Ready(Err(e)) => {
                    give_buffer(buf);
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    if n == 0 {
                        give_buffer(buf);
                        self.eof = true;
                    } else {
                        self.boundary.feed(&buf[..n]);
                        counter.fetch_add(n as u64, Ordering::Relaxed);
                        self.last_read = Instant::now();
                        self.pos = 0;
                        self.end = n;
                        self.buf = Some(buf);
                    }
                }
            }
        }
    }

    fn poll_write_pending(
        &mut self,
        cx: &mut Context<'_>,
        dst: &mut Stream,
    ) -> Poll<io::Result<()>> {
        if let Some(buf) = &self.buf {
            while self.pos < self.end {
                let n = ready!(Pin::new(&mut *dst).poll_write(cx, &buf[self.pos..self.end]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.pos += n;
            }
            if let Some(buf) = self.buf.take() {
                give_buffer(buf);
            }
            self.unflushed = true;
        }
        Poll::Ready(Ok(()))
    }

    /// Nothing to read now: make sure what was written leaves (TLS may hold records back).
    fn poll_flush_idle(&mut self, cx: &mut Context<'_>, dst: &mut Stream) -> Poll<io::Result<()>> {
        if self.unflushed {
            ready!(Pin::new(&mut *dst).poll_flush(cx))?;
            self.unflushed = false;
        }
        Poll::Pending
    }
}

/// Why the relay stopped.
enum Ending {
    Closed,
    Error(io::Error),
    Idle,
    Shutdown,
    Kicked(Kick),
}

pub struct RelayParams {
    pub idle_timeout: Duration,
    pub phase: watch::Receiver<Phase>,
    pub kick: watch::Receiver<Option<Kick>>,
    /// The line sent before closing a session whose mailbox was disabled.
    pub disabled_bye: String,
    pub proxy_log: ProxyLog,
}

/// The relay's `proxy` rows in the protocol log: at least every 30 s, and at close.
pub struct ProxyLog {
    pub log: ProtocolLog,
    pub session: String,
    pub server: std::net::SocketAddr,
    pub client: std::net::SocketAddr,
    pub user: String,
    pub backend: String,
    /// Sequence number of the next row.
    pub seq: u64,
    /// `[protocol_log] proxy_row_interval`.
    pub every: Duration,
}

impl ProxyLog {
    fn row(&mut self, counters: &Counters, context: &str) {
        if !self.log.enabled() {
            return;
        }
        let c = counters.from_client.load(Ordering::Relaxed);
        let b = counters.from_backend.load(Ordering::Relaxed);
        self.log.log(Row {
            time: std::time::SystemTime::now(),
            session: self.session.clone(),
            seq: self.seq,
            server: self.server,
            client: self.client,
            user: self.user.clone(),
            duration_ms: 0,
            rq_size: c,
            rp_size: b,
            command: "proxy".into(),
            parameters: format!("backend={}", self.backend),
            context: format!("{context};bytes_from_client={c};bytes_from_backend={b}"),
        });
        self.seq += 1;
    }
}

pub async fn run(session: LoggedIn, mut params: RelayParams, metrics: &Metrics) {
    let LoggedIn {
        mut client,
        client_pending,
        backend,
        counters,
        ..
    } = session;
    let mut server = backend.stream;
    let start = Instant::now();
    let mut c2s = Pump::new(Boundary::commands(), start).with_pending(client_pending);
    // What the backend sent right behind its OK is delivered (and tracked) by the relay.
    let mut s2c = Pump::new(Boundary::responses(), start).with_pending(backend.pending);
    let idle_timeout = params.idle_timeout;
    let mut check_every =
        (idle_timeout / 8).clamp(Duration::from_millis(100), Duration::from_secs(30));
    if params.proxy_log.log.enabled() {
        check_every = check_every.min(params.proxy_log.every);
    }
    let mut reported = Reported::default();
    let mut last_proxy_row = Instant::now();
    let ending = loop {
        let both = poll_fn(|cx| {
            let up = c2s.poll(cx, &mut client, &mut server, &counters.from_client);
            let down = s2c.poll(cx, &mut server, &mut client, &counters.from_backend);
            match (up, down) {
                (Poll::Ready(Err(e)), _) | (_, Poll::Ready(Err(e))) => Poll::Ready(Err(e)),
                // The backend ended the session (LOGOUT, BYE, crash) and everything it sent has
                // been passed on: the session is over, whether or not the client closed its side.
                (_, Poll::Ready(Ok(()))) => Poll::Ready(Ok(())),
                // The client closed: its end was passed on; the backend's last words still flow.
                _ => Poll::Pending,
            }
        });
        tokio::select! {
            r = both => break match r {
                Ok(()) => Ending::Closed,
                Err(e) => Ending::Error(e),
            },
            _ = tokio::time::sleep(check_every) => {
                reported.report(&counters, metrics);
                if last_proxy_row.elapsed() >= params.proxy_log.every {
                    params.proxy_log.row(&counters, "relaying");
                    last_proxy_row = Instant::now();
                }
                let last = c2s.last_read.max(s2c.last_read);
                if last.elapsed() >= idle_timeout {
                    break Ending::Idle;
                }
            }
            Some(kick) = kicked(&mut params.kick) => break Ending::Kicked(kick),
            _ = params.phase.wait_for(|p| *p == Phase::Closing) => break Ending::Shutdown,
        }
    };
    let reason = match &ending {
        Ending::Closed => "closed".to_string(),
        Ending::Error(e) => format!("connection error: {e}"),
        Ending::Idle => "idle timeout".to_string(),
        Ending::Shutdown => "gate shutting down".to_string(),
        Ending::Kicked(Kick::Disabled) => "mailbox disabled by reload".to_string(),
        Ending::Kicked(Kick::Admin) => "closed by the administrator".to_string(),
    };
    if let Ending::Kicked(kick) = ending {
        let bye = match kick {
            Kick::Disabled => params.disabled_bye.as_str(),
            Kick::Admin => "* BYE Session closed by the administrator.\r\n",
        };
        let said_bye = say_bye(&mut s2c, &c2s, &mut client, bye).await;
        tracing::info!(said_bye, "closing session: {reason}");
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = client.shutdown().await;
        let _ = server.shutdown().await;
    })
    .await;
    reported.report(&counters, metrics);
    params
        .proxy_log
        .row(&counters, &format!("closed: {reason}"));
    tracing::info!(
        ending = %reason,
        bytes_from_client = counters.from_client.load(Ordering::Relaxed),
        bytes_from_backend = counters.from_backend.load(Ordering::Relaxed),
        seconds = start.elapsed().as_secs(),
        "session closed"
    );
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

/// What of a session's byte counts the metrics already have.
#[derive(Default)]
struct Reported {
    from_client: u64,
    from_backend: u64,
}

impl Reported {
    /// Adds what moved since the last report to the gate's counters.
    fn report(&mut self, counters: &Counters, metrics: &Metrics) {
        let c = counters.from_client.load(Ordering::Relaxed);
        let b = counters.from_backend.load(Ordering::Relaxed);
        metrics.relayed(
            c.saturating_sub(self.from_client),
            b.saturating_sub(self.from_backend),
        );
        (self.from_client, self.from_backend) = (c, b);
    }
}

/// The kick for this session, when one comes; never if the registry side is gone.
async fn kicked(rx: &mut watch::Receiver<Option<Kick>>) -> Option<Kick> {
    let kick = match rx.wait_for(Option::is_some).await {
        Ok(kick) => *kick,
        Err(_) => None,
    };
    match kick {
        Some(k) => Some(k),
        None => std::future::pending().await,
    }
}
