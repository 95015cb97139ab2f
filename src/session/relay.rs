//! After login: move bytes both ways, parse nothing. IDLE, COMPRESS and literals of any size pass
//! through untouched. The session ends when either side closes, when no byte has moved for
//! `authenticated_connection_timeout`, or when the gate closes after its shutdown grace period.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;

use super::preauth::LoggedIn;
use crate::server::Phase;
use crate::stream::Stream;

/// Per-direction copy buffer.
const BUFFER: usize = 16 * 1024;

pub async fn run(session: LoggedIn, idle_timeout: Duration, mut phase: watch::Receiver<Phase>) {
    let LoggedIn {
        client,
        client_pending,
        backend,
        ..
    } = session;
    let start = Instant::now();
    let activity = Arc::new(AtomicU64::new(0));
    let mut client = Counted::new(client, start, activity.clone());
    let mut server = Counted::new(backend.stream, start, activity.clone());
    if !client_pending.is_empty() && server.inner.write_all(&client_pending).await.is_err() {
        tracing::info!("backend closed before the pipelined commands could be sent");
        return;
    }
    let check_every = (idle_timeout / 8).clamp(Duration::from_millis(100), Duration::from_secs(30));
    let idle = async {
        loop {
            tokio::time::sleep(check_every).await;
            let last = start + Duration::from_millis(activity.load(Ordering::Relaxed));
            if last.elapsed() >= idle_timeout {
                return;
            }
        }
    };
    let ending = tokio::select! {
        r = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut server, BUFFER, BUFFER) => match r {
            Ok(_) => "closed",
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => "closed",
            Err(_) => "connection error",
        },
        _ = idle => "idle timeout",
        _ = phase.wait_for(|p| *p == Phase::Closing) => "gate shutting down",
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = client.inner.shutdown().await;
        let _ = server.inner.shutdown().await;
    })
    .await;
    tracing::info!(
        ending,
        bytes_from_client = client.read,
        bytes_from_backend = server.read,
        seconds = start.elapsed().as_secs(),
        "session closed"
    );
}

/// A stream that counts what is read from it and stamps the time of the last read.
struct Counted {
    inner: Stream,
    read: u64,
    start: Instant,
    activity: Arc<AtomicU64>,
}

impl Counted {
    fn new(inner: Stream, start: Instant, activity: Arc<AtomicU64>) -> Counted {
        Counted {
            inner,
            read: 0,
            start,
            activity,
        }
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.read += n as u64;
            let now = this.start.elapsed().as_millis() as u64;
            this.activity.store(now, Ordering::Relaxed);
        }
        r
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
