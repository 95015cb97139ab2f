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

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::boundary::Boundary;
use super::preauth::LoggedIn;
use super::splice::{self, Pipe};
use super::sweeper::proxy_row;
use super::Context as SessionContext;
use crate::errors::Blame;
use crate::limits::SessionPermit;
use crate::registry::{Kick, Registration};
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
    /// Bytes of a large literal in flight through a borrowed pipe (plain TCP both sides).
    pipe: Option<Pipe>,
    piped: usize,
    /// Client to backend (commands), or backend to client (responses).
    to_backend: bool,
    /// Splicing is tried (turned off for good when the kernel refuses it).
    splice: bool,
    /// The next read may start a large literal: read little, so that the literal's bytes go
    /// through the pipe rather than the buffer.
    probe: bool,
    boundary: Boundary,
    /// The last error was writing to the destination (not reading the source): whose fault it
    /// is follows from it.
    write_failed: bool,
}

/// Literals at least this long go through a pipe rather than a buffer, when both sides are
/// plain TCP.
const SPLICE_FROM: u64 = 64 * 1024;
/// Size of a read that may reach into a large literal: the literal's header line and a little
/// of its data come through the buffer, the rest through the pipe. (Measured against the fake
/// backend, 1 MB messages: splicing removes the gate's user-space copies, about 30% of its CPU
/// time.)
const PROBE: usize = 16 * 1024;

impl Pump {
    /// The client-to-backend direction.
    fn commands() -> Pump {
        Pump::new(Boundary::commands(), true)
    }

    /// The backend-to-client direction: the only one whose literals are followed, so the only
    /// one that splices.
    fn responses() -> Pump {
        Pump::new(Boundary::responses(), false)
    }

    fn new(boundary: Boundary, to_backend: bool) -> Pump {
        Pump {
            buf: None,
            pos: 0,
            end: 0,
            eof: false,
            done: false,
            unflushed: false,
            pipe: None,
            piped: 0,
            to_backend,
            splice: !to_backend,
            probe: true,
            boundary,
            write_failed: false,
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
            if let Err(e) = ready!(self.poll_write_pending(cx, dst)) {
                self.write_failed = true;
                return Poll::Ready(Err(e));
            }
            if self.done {
                return Poll::Ready(Ok(()));
            }
            if self.eof {
                // The client's half-close is passed on (the backend's last responses still
                // flow); the backend's end ends the session, and closing the sockets says it.
                if self.to_backend {
                    if let Err(e) = ready!(Pin::new(&mut *dst).poll_shutdown(cx)) {
                        self.write_failed = true;
                        return Poll::Ready(Err(e));
                    }
                }
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            if src.poll_read_ready(cx)?.is_pending() {
                return self.poll_flush_idle(cx, dst);
            }
            if self.splice && self.boundary.literal_left() >= SPLICE_FROM {
                if let (Stream::Plain(from), Stream::Plain(_)) = (&*src, &*dst) {
                    match self.splice_in(from, counter) {
                        Ok(()) => continue,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(e) if e.kind() == io::ErrorKind::InvalidInput => self.splice = false,
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
            }
            let mut buf = take_buffer();
            let size = if self.probe
                && self.splice
                && matches!((&*src, &*dst), (Stream::Plain(_), Stream::Plain(_)))
            {
                PROBE
            } else {
                BUFFER
            };
            let mut rb = ReadBuf::new(&mut buf[..size]);
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
                        self.probe = n < size;
                        self.boundary.feed(&buf[..n]);
                        counter.fetch_add(n as u64, Ordering::Relaxed);
                        self.pos = 0;
                        self.end = n;
                        self.buf = Some(buf);
                    }
                }
            }
        }
    }

    /// Moves the next part of the current literal from `src` into a pipe. Without a pipe (out of
    /// file descriptors), this direction goes on through the buffer.
    fn splice_in(&mut self, src: &tokio::net::TcpStream, counter: &AtomicU64) -> io::Result<()> {
        let pipe = match self.pipe.take() {
            Some(p) => p,
            None => match splice::take_pipe() {
                Ok(p) => p,
                Err(e) => {
                    tracing::debug!(error = %e, "no pipe; relaying through the buffer");
                    self.splice = false;
                    return Ok(());
                }
            },
        };
        let want = self.boundary.literal_left().min(pipe.capacity as u64) as usize;
        let moved = splice::fill(src, &pipe, want);
        match moved {
            Ok(0) => {
                // The end of the stream, or urgent data the pipe cannot take: a read through the
                // buffer tells which.
                splice::give_pipe(pipe);
                self.splice = false;
            }
            Ok(n) => {
                self.boundary.skip_literal(n as u64);
                counter.fetch_add(n as u64, Ordering::Relaxed);
                self.piped = n;
                self.pipe = Some(pipe);
                self.probe = true;
            }
            Err(_) => splice::give_pipe(pipe),
        }
        moved.map(|_| ())
    }

    /// Writes what is pending: bytes in the buffer, then bytes in the pipe.
    fn poll_write_pending(
        &mut self,
        cx: &mut Context<'_>,
        dst: &mut Stream,
    ) -> Poll<io::Result<()>> {
        ready!(self.poll_write_buffered(cx, dst))?;
        while self.piped > 0 {
            let (Some(pipe), Stream::Plain(to)) = (&self.pipe, &*dst) else {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            };
            ready!(to.poll_write_ready(cx))?;
            match splice::drain(pipe, to, self.piped) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.piped -= n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        if let Some(pipe) = self.pipe.take() {
            splice::give_pipe(pipe);
        }
        Poll::Ready(Ok(()))
    }

    fn poll_write_buffered(
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

    /// Whose connection failed: the source's when reading, the destination's when writing.
    fn failed_side(&self) -> Blame {
        match (self.to_backend, self.write_failed) {
            (true, false) | (false, true) => Blame::Client,
            (true, true) | (false, false) => Blame::Backend,
        }
    }

    /// Nothing to read now: make sure what was written leaves (TLS may hold records back).
    fn poll_flush_idle(&mut self, cx: &mut Context<'_>, dst: &mut Stream) -> Poll<io::Result<()>> {
        if self.unflushed {
            if let Err(e) = ready!(Pin::new(&mut *dst).poll_flush(cx)) {
                self.write_failed = true;
                return Poll::Ready(Err(e));
            }
            self.unflushed = false;
        }
        Poll::Pending
    }
}

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
    #[allow(clippy::manual_async_fn)] // on purpose: see above
    pub fn run(
        mut self,
        ctx: &SessionContext,
    ) -> impl std::future::Future<Output = ()> + Send + '_ {
        async move {
            let ending = poll_fn(|cx| self.poll(cx)).await;
            Box::pin(self.close(ending, ctx)).await;
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
