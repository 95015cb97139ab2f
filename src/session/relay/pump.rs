//! One direction of a relayed session: waits for its source without a buffer, borrows one from
//! a per-thread pool while bytes move, splices large literals between plain sockets, and follows
//! the stream's line and literal boundaries.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::errors::Blame;
use crate::session::boundary::Boundary;
use crate::session::splice::{self, Pipe};
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
pub(super) struct Pump {
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
    pub(super) boundary: Boundary,
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
    pub(super) fn commands() -> Pump {
        Pump::new(Boundary::commands(), true)
    }

    /// The backend-to-client direction: the only one whose literals are followed, so the only
    /// one that splices.
    pub(super) fn responses() -> Pump {
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
    pub(super) fn with_pending(mut self, pending: Vec<u8>) -> Pump {
        if !pending.is_empty() {
            self.boundary.feed(&pending);
            self.end = pending.len();
            self.buf = Some(pending);
        }
        self
    }

    /// Writes what is pending, then reads and writes until the source would block; `Ready(Ok)`
    /// once the source ended and the end was passed on.
    pub(super) fn poll(
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
    pub(super) fn poll_write_pending(
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
    pub(super) fn failed_side(&self) -> Blame {
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
