//! Accept loops: one per bound address, each spawning a session task inside the gate's tracker.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};

use crate::phase::Phase;
pub use crate::session::ListenerKind;
use crate::session::{self, Context};

/// Binds with `SO_REUSEADDR` (a restart must not wait for old sockets in TIME_WAIT) and, for IPv6,
/// `IPV6_V6ONLY`, so `0.0.0.0:143` and `[::]:143` can both be listed, as in Exchange's defaults.
pub fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => {
            let s = TcpSocket::new_v6()?;
            let raw = socket2::SockRef::from(&s);
            raw.set_only_v6(true)?;
            s
        }
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Connections the kernel may hold completed for the gate before it accepts them; the kernel
/// caps it at `net.core.somaxconn` (4096 on current Linux). A reconnect storm arrives faster
/// than one worker accepts: with 1,024, a storm of 7,000 overflowed the queue 9,914 times and
/// 622 clients, their handshake dropped, waited for a greeting that never came.
const LISTEN_BACKLOG: u32 = 65_535;

/// Binds and releases `address` the way the gate would: tells whether a start could listen there.
pub fn bind_std(address: SocketAddr) -> std::io::Result<()> {
    let socket = match address {
        SocketAddr::V4(_) => {
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?
        }
        SocketAddr::V6(_) => {
            let s = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None)?;
            s.set_only_v6(true)?;
            s
        }
    };
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    socket.listen(1)
}

pub async fn accept_loop(listener: TcpListener, kind: ListenerKind, shared: Arc<Context>) {
    let mut phase = shared.phase.subscribe();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = phase.wait_for(|p| *p != Phase::Running) => return,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let (caps, balancer) = {
                    let state = shared.state.load();
                    let imap4 = &state.config.imap4;
                    let caps = crate::limits::connection_caps(imap4, shared.max_connections());
                    let ip = peer.ip().to_canonical();
                    let balancer = imap4.proxy_protocol_from.iter().any(|n| n.contains(&ip));
                    (caps, balancer)
                };
                // A balancer's connections count against its clients' addresses once its
                // PROXY header has named them.
                let at_accept = if balancer { caps.total_only() } else { caps };
                match shared.connections.connect(peer.ip(), at_accept) {
                    Ok(guard) => {
                        let id = shared.next_session.fetch_add(1, Ordering::Relaxed);
                        let shared2 = shared.clone();
                        let origin = if balancer {
                            session::Origin::Balancer(caps)
                        } else {
                            session::Origin::Direct
                        };
                        shared
                            .tracker
                            .spawn(session::serve(tcp, peer, origin, kind, shared2, id, guard));
                    }
                    Err(over) => {
                        tracing::info!(peer = %peer, listener = kind.name(), ?over, "connection refused: limit reached");
                        refuse(tcp, kind);
                    }
                }
            }
            Err(e) => {
                // EMFILE/ENFILE and friends: back off instead of spinning on the error.
                tracing::warn!(error = %e, listener = kind.name(), "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Over a connection limit: `* BYE [LIMIT]` on a plain port, written without waiting (a socket
/// that cannot take one line at once gets nothing), and the connection closed at once: a refused
/// connection must not hold a descriptor, or a flood of them would exhaust what the limits
/// protect. On an implicit-TLS port a plaintext line would be garbage to the client, so the
/// connection is just closed.
fn refuse(tcp: tokio::net::TcpStream, kind: ListenerKind) {
    if kind == ListenerKind::Plain {
        let _ = tcp.try_write(b"* BYE [LIMIT] Too many connections.\r\n");
    }
}
