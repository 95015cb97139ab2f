//! One stream type for both sides of a session: plain TCP, or TLS as server (towards clients) or as
//! client (towards backends). Keeping the variants in one enum lets the pre-login code and the relay
//! work the same way whichever side has TLS.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub enum Stream {
    Plain(TcpStream),
    ServerTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    ClientTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// What is left behind when the stream was moved out (into a TLS handshake or the relay):
    /// reads see end of file, writes fail.
    Detached,
}

impl Stream {
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::ServerTls(_) | Stream::ClientTls(_))
    }

    /// Ready when a read would make progress (data, end of stream or an error), without needing a
    /// buffer: the relay borrows one only then. For TLS, plaintext rustls already holds counts.
    pub fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Plain(s) => s.poll_read_ready(cx),
            Stream::ServerTls(s) => {
                let (tcp, conn) = s.get_mut();
                tls_read_ready(tcp, conn, cx)
            }
            Stream::ClientTls(s) => {
                let (tcp, conn) = s.get_mut();
                tls_read_ready(tcp, conn, cx)
            }
            Stream::Detached => Poll::Ready(Ok(())),
        }
    }

    /// Takes the stream out, leaving [`Stream::Detached`].
    pub fn detach(&mut self) -> Stream {
        std::mem::replace(self, Stream::Detached)
    }
}

fn tls_read_ready<D>(
    tcp: &TcpStream,
    conn: &mut tokio_rustls::rustls::ConnectionCommon<D>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    match conn.process_new_packets() {
        Ok(state) if state.plaintext_bytes_to_read() == 0 && !state.peer_has_closed() => {
            tcp.poll_read_ready(cx)
        }
        // Plaintext waiting, the peer's close_notify, or an error the next read will report.
        _ => Poll::Ready(Ok(())),
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::ServerTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::ClientTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Detached => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::ServerTls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::ClientTls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Detached => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::ServerTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::ClientTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Detached => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::ServerTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::ClientTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Detached => Poll::Ready(Ok(())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::ServerTls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Stream::ClientTls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Stream::Detached => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::ServerTls(s) => s.is_write_vectored(),
            Stream::ClientTls(s) => s.is_write_vectored(),
            Stream::Detached => false,
        }
    }
}

/// The most a read before login (the client's, or a backend's answers) takes at once.
pub const READ_CHUNK: usize = 4096;

/// Reads at most `want` (up to [`READ_CHUNK`]) bytes and hands them to `take`; the number read,
/// 0 at the end of the stream.
///
/// The bytes land in a buffer on the stack of each poll, not in the waiting future: a session
/// waiting for its client (or a backend login waiting for its backend) holds no read buffer.
/// In a reconnect storm every connection waits at once, and 4 KB each held in the futures was
/// the largest part of the storm's peak, which the allocator then kept.
pub async fn read_into(
    stream: &mut Stream,
    want: usize,
    mut take: impl FnMut(&[u8]),
) -> std::io::Result<usize> {
    use std::task::Poll;
    std::future::poll_fn(|cx| {
        let mut chunk = [0u8; READ_CHUNK];
        let mut buf = ReadBuf::new(&mut chunk[..want.clamp(1, READ_CHUNK)]);
        std::task::ready!(Pin::new(&mut *stream).poll_read(cx, &mut buf))?;
        take(buf.filled());
        Poll::Ready(Ok(buf.filled().len()))
    })
    .await
}

/// Any byte stream a client of the gate's own talks over (TCP, or TLS over it).
pub trait AsyncIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> AsyncIo for T {}
