//! One client connection from accept to close: TLS for implicit-TLS ports, the pre-login dialogue
//! ([`preauth`]), then the relay ([`relay`]), watched by the [`sweeper`]. Each session runs in its own tracing span carrying
//! the session id, the client's address, the listener and, after login, the user.

pub mod boundary;
pub mod input;
pub mod preauth;
pub mod relay;
pub mod splice;
pub mod sweeper;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tracing::Instrument;

use crate::limits::ConnectionGuard;
use crate::listener::ListenerKind;
use crate::registry::session_id;
use crate::server::Shared;
use crate::stream::Stream;
use preauth::{PreAuth, PreAuthEnd};

/// The future of one session, from accept to close, in its own tracing span.
///
/// Not an `async fn`: its arguments would be stored twice in every session's future.
pub fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    kind: ListenerKind,
    shared: Arc<Shared>,
    id: u64,
    mut connection: ConnectionGuard,
) -> impl std::future::Future<Output = ()> + Send {
    let span = tracing::info_span!(
        "session",
        id = %session_id(id),
        peer = %peer,
        listener = kind.name(),
        user = tracing::field::Empty,
    );
    async move {
        // Boxed: the pre-login phase's large state (read buffers, the backend login, the TLS
        // handshake) must not stay in the session's future, and its memory, while it relays.
        let under_pressure = connection.came_under_pressure();
        let logged_in = Box::pin(prelogin(
            tcp,
            peer,
            kind,
            shared.clone(),
            id,
            under_pressure,
        ))
        .await;
        if let Some(session) = logged_in {
            connection.logged_in();
            let _relay_gauge = shared.metrics.session("relay", kind.name());
            relay::Relay::new(*session).run(&shared).await;
        }
        drop(connection);
    }
    .instrument(span)
}

/// TLS for implicit-TLS ports, then the pre-login dialogue; the session once logged in.
async fn prelogin(
    tcp: TcpStream,
    peer: SocketAddr,
    kind: ListenerKind,
    shared: Arc<Shared>,
    id: u64,
    under_pressure: bool,
) -> Option<Box<preauth::LoggedIn>> {
    let _ = tcp.set_nodelay(true);
    let local = tcp.local_addr().unwrap_or(([0, 0, 0, 0], 0).into());
    let state = shared.state.load_full();
    let stream = match kind {
        ListenerKind::Plain => Stream::Plain(tcp),
        ListenerKind::Tls => {
            let acceptor = state.acceptor.clone()?;
            match tokio::time::timeout(
                state.config.imap4.tls_handshake_timeout,
                acceptor.accept(tcp),
            )
            .await
            {
                Ok(Ok(tls)) => Stream::ServerTls(Box::new(tls)),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    return None;
                }
                Err(_) => {
                    tracing::debug!("TLS handshake timed out");
                    return None;
                }
            }
        }
    };
    drop(state);
    tracing::debug!("connected");
    let _preauth_gauge = shared.metrics.session("preauth", kind.name());
    let preauth = PreAuth::new(id, stream, local, kind, peer, shared, under_pressure);
    match preauth.run().await {
        PreAuthEnd::Closed => {
            tracing::debug!("closed before login");
            None
        }
        PreAuthEnd::LoggedIn(session) => Some(session),
    }
}
