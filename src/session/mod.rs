//! One client connection from accept to close: TLS for implicit-TLS ports, the pre-login
//! [`dialogue`] (a state machine without I/O) driven by [`preauth`], the [`crate::login`]
//! service, then the [`relay`], watched by the [`sweeper`]. Each session runs in its own tracing
//! span carrying the session id, the client's address, the listener and, after login, the user.

pub mod boundary;
pub mod dialogue;
pub mod input;
pub mod preauth;
pub mod proxy_header;
pub mod relay;
pub mod splice;
pub mod sweeper;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::limits::{ConnectionGuard, Connections};
use crate::login::Login;
use crate::metrics::Metrics;
use crate::phase::Phase;
use crate::protocol_log::ProtocolLog;
use crate::registry::{session_id, Registry};
use crate::state::State;
use crate::stream::Stream;
use preauth::PreAuth;

/// Which kind of port a connection arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// Plain, with STARTTLS (Exchange's `UnencryptedOrTLSBindings`, port 143).
    Plain,
    /// Implicit TLS (Exchange's `SSLBindings`, port 993).
    Tls,
}

impl ListenerKind {
    pub fn name(self) -> &'static str {
        match self {
            ListenerKind::Plain => "imap",
            ListenerKind::Tls => "imaps",
        }
    }
}

/// What every session shares, handed down by the composition root.
pub struct Context {
    pub state: Arc<ArcSwap<State>>,
    pub phase: watch::Sender<Phase>,
    pub tracker: TaskTracker,
    pub next_session: AtomicU64,
    pub registry: Arc<Registry>,
    pub connections: Arc<Connections>,
    pub login: Login,
    pub metrics: Arc<Metrics>,
    pub protocol_log: ProtocolLog,
    /// The most connections the open-file limit allows, measured at start.
    pub descriptor_budget: Option<usize>,
}

impl Context {
    /// `max_connections` in force under the current configuration.
    pub fn max_connections(&self) -> usize {
        crate::limits::effective_max_connections(
            self.state.load().config.imap4.max_connections,
            self.descriptor_budget,
        )
    }
}

/// Where a connection comes from.
#[derive(Debug, Clone, Copy)]
pub enum Origin {
    /// The client itself.
    Direct,
    /// A load balancer in `proxy_protocol_from`: a PROXY header names the client, whose
    /// address then gets these caps.
    Balancer(crate::limits::ConnectionCaps),
}

/// The future of one session, from accept to close, in its own tracing span.
///
/// Not an `async fn`: its arguments would be stored twice in every session's future.
pub fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    origin: Origin,
    kind: ListenerKind,
    ctx: Arc<Context>,
    id: u64,
    connection: ConnectionGuard,
) -> impl std::future::Future<Output = ()> + Send {
    let span = tracing::info_span!(
        "session",
        id = %session_id(id),
        peer = tracing::field::Empty,
        balancer = tracing::field::Empty,
        listener = kind.name(),
        user = tracing::field::Empty,
    );
    // Boxed, and gone once logged in: the PROXY header's read (with its look-ahead buffer and
    // timer) and the pre-login phase would otherwise size every session's task for good (1,464
    // bytes, where the relay needs about half of that). Made here, not inside the session's
    // future, so that the arguments are not kept there too.
    let admitting =
        Box::pin(admit(tcp, peer, origin, kind, ctx, id, connection).instrument(span.clone()));
    async move {
        let Some((session, mut connection, ctx)) = admitting.await else {
            return;
        };
        connection.logged_in();
        // `unbox` frees the login's allocation now; `*session` here would keep it until the
        // session ends.
        let relay = relay::Relay::new(unbox(session));
        let _relay_gauge = ctx.metrics.session("relay", kind.name());
        // The span is entered around the pre-login phase and the closing steps, not around
        // every poll of the relay: entering and leaving it cost about a tenth of the gate's own
        // CPU time per relayed command (perf, 16 sessions doing NOOP), and nothing logs while
        // bytes move.
        relay.run(&ctx, span).await;
    }
}

/// From accept to login: the PROXY header from a balancer, then [`prelogin`]. The session's
/// connection guard and context come back with the logged-in session.
async fn admit(
    mut tcp: TcpStream,
    peer: SocketAddr,
    origin: Origin,
    kind: ListenerKind,
    ctx: Arc<Context>,
    id: u64,
    mut connection: ConnectionGuard,
) -> Option<(Box<preauth::LoggedIn>, ConnectionGuard, Arc<Context>)> {
    let peer = match origin {
        Origin::Direct => peer,
        Origin::Balancer(caps) => {
            tracing::Span::current().record("balancer", tracing::field::display(peer));
            let wait = ctx.state.load().config.imap4.tls_handshake_timeout;
            let client = match tokio::time::timeout(wait, proxy_header::read_tcp(&mut tcp, peer))
                .await
            {
                Ok(Ok(client)) => client,
                Ok(Err(e)) => {
                    tracing::info!(blame = "client", balancer = %peer, error = %e, "connection from a balancer refused");
                    return None;
                }
                Err(_) => {
                    tracing::info!(blame = "client", balancer = %peer, "no PROXY protocol header in time");
                    return None;
                }
            };
            if let Err(over) = connection.move_to(client.ip(), caps) {
                tracing::info!(peer = %client, ?over, "connection refused: limit reached");
                if kind == ListenerKind::Plain {
                    let _ = tcp.try_write(b"* BYE [LIMIT] Too many connections.\r\n");
                }
                return None;
            }
            client
        }
    };
    tracing::Span::current().record("peer", tracing::field::display(peer));
    let under_pressure = connection.came_under_pressure();
    let logged_in = prelogin(tcp, peer, kind, ctx.clone(), id, under_pressure).await?;
    Some((logged_in, connection, ctx))
}

#[allow(clippy::boxed_local)] // the box by value is the point: it is freed on return
fn unbox<T>(b: Box<T>) -> T {
    *b
}

/// TLS for implicit-TLS ports, then the pre-login dialogue; the session once logged in.
async fn prelogin(
    tcp: TcpStream,
    peer: SocketAddr,
    kind: ListenerKind,
    ctx: Arc<Context>,
    id: u64,
    under_pressure: bool,
) -> Option<Box<preauth::LoggedIn>> {
    let _ = tcp.set_nodelay(true);
    let local = tcp.local_addr().unwrap_or(([0, 0, 0, 0], 0).into());
    let state = ctx.state.load_full();
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
                    tracing::debug!(blame = "client", error = %e, "TLS handshake failed");
                    return None;
                }
                Err(_) => {
                    tracing::debug!(blame = "client", "TLS handshake timed out");
                    return None;
                }
            }
        }
    };
    drop(state);
    tracing::debug!("connected");
    let _preauth_gauge = ctx.metrics.session("preauth", kind.name());
    let preauth = PreAuth::new(id, stream, local, kind, peer, ctx, under_pressure);
    let logged_in = preauth.run().await;
    if logged_in.is_none() {
        tracing::debug!("closed before login");
    }
    logged_in
}
