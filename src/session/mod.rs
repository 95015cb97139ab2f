//! One client connection from accept to close: TLS for implicit-TLS ports, the pre-login dialogue
//! ([`preauth`]), then the relay ([`relay`]). Each session runs in its own tracing span carrying
//! the session id, the client's address, the listener and, after login, the user.

pub mod boundary;
pub mod input;
pub mod preauth;
pub mod relay;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tracing::Instrument;

use crate::limits::ConnectionGuard;
use crate::listener::ListenerKind;
use crate::server::Shared;
use crate::stream::Stream;
use preauth::{PreAuth, PreAuthEnd};

pub async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    kind: ListenerKind,
    shared: Arc<Shared>,
    id: u64,
    connection: ConnectionGuard,
) {
    let session_id = format!("{id:08x}");
    let span = tracing::info_span!(
        "session",
        id = %session_id,
        peer = %peer,
        listener = kind.name(),
        user = tracing::field::Empty,
    );
    async move {
        let _ = tcp.set_nodelay(true);
        let local = tcp.local_addr().unwrap_or(([0, 0, 0, 0], 0).into());
        let state = shared.state.load_full();
        let imap4 = &state.config.imap4;
        let stream = match kind {
            ListenerKind::Plain => Stream::Plain(tcp),
            ListenerKind::Tls => {
                let Some(acceptor) = state.acceptor.clone() else {
                    return;
                };
                // Boxed, like the pre-login phase below: their large states must not stay in the
                // session's future (and its memory) for the whole relayed session.
                let handshake = Box::pin(acceptor.accept(tcp));
                match tokio::time::timeout(imap4.tls_handshake_timeout, handshake).await {
                    Ok(Ok(tls)) => Stream::ServerTls(Box::new(tls)),
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!("TLS handshake timed out");
                        return;
                    }
                }
            }
        };
        tracing::debug!("connected");
        let preauth_gauge = shared.metrics.session("preauth", kind.name());
        let preauth = PreAuth::new(
            id,
            stream,
            local,
            kind,
            peer,
            session_id.clone(),
            shared.clone(),
        );
        let end = Box::pin(preauth.run()).await;
        drop(preauth_gauge);
        match end {
            PreAuthEnd::Closed => tracing::debug!("closed before login"),
            PreAuthEnd::LoggedIn(mut session) => {
                let state = shared.state.load();
                let params = relay::RelayParams {
                    idle_timeout: state.config.imap4.authenticated_connection_timeout,
                    phase: shared.phase.subscribe(),
                    kick: session.kick.clone(),
                    disabled_bye: format!("* BYE {}\r\n", state.config.imap4.disabled_message),
                    proxy_log: relay::ProxyLog {
                        log: shared.protocol_log.clone(),
                        session: session_id.clone(),
                        server: local,
                        client: peer,
                        user: session.user.clone(),
                        backend: session.backend_name.clone(),
                        seq: session.seq,
                        every: state.config.protocol_log.proxy_row_interval,
                    },
                };
                drop(state);
                session.kick.mark_unchanged();
                let _relay_gauge = shared.metrics.session("relay", kind.name());
                relay::run(*session, params, &shared.metrics).await;
            }
        }
    }
    .instrument(span)
    .await;
    drop(connection);
}
