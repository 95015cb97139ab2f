//! The admin center in the browser (`[admin_web]`): the seed's graphical procedure, Recipients >
//! Mailboxes > Edit > Mailbox features > IMAP4, served by the gate over HTTPS.
//!
//! Plain HTML forms, no script: pages from templates ([`render`]), administrators and roles from
//! the users file ([`crate::admin::users`]), sessions, CSRF tokens and the sign-in throttle in
//! [`auth`], the pages themselves in [`pages`]. Changes go through [`Controlled`], the same calls
//! as the control socket, and each is written to the audit log.
//!
//! Bounded like the IMAP side: at most [`MAX_CONNECTIONS`] connections (8 per address), 10 s for
//! the TLS handshake and for a request's headers (and between two requests), 30 s and 16 KiB for
//! a request's body, 10 minutes per connection.

mod auth;
mod pages;
mod render;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::control::Controlled;
use super::users::{self, Admin};
use crate::phase::Phase;
use auth::{Sessions, Signed, Throttle};
use render::Pages;

/// Connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 64;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECTION_LIFETIME: Duration = Duration::from_secs(600);
/// One request, body included (a form trickled byte by byte is cut off).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections from one address (an IPv6 /64) at once.
const PER_ADDRESS: usize = 8;
const MAX_BODY: usize = 16 * 1024;
/// Argon2 verifications at once (each takes ~19 MiB and tens of milliseconds of a core).
const VERIFICATIONS: usize = 2;

/// Binds the admin center's listener.
pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
}

/// What every request handler shares.
#[derive(Clone)]
struct App {
    gate: Arc<dyn Controlled>,
    sessions: Arc<Sessions>,
    throttle: Arc<Throttle>,
    pages: Arc<Pages>,
    verifying: Arc<Semaphore>,
}

/// The client's address, for the sign-in throttle and the log.
#[derive(Debug, Clone, Copy)]
struct Peer(SocketAddr);

/// Serves the admin center until the gate stops running.
pub async fn serve(
    listener: TcpListener,
    gate: Arc<dyn Controlled>,
    mut phase: watch::Receiver<Phase>,
) {
    let app = App {
        gate: gate.clone(),
        sessions: Arc::default(),
        throttle: Arc::default(),
        pages: Arc::new(Pages::new()),
        verifying: Arc::new(Semaphore::new(VERIFICATIONS)),
    };
    let router = routes(app);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let per_address: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = phase.wait_for(|p| *p != Phase::Running) => break,
        };
        while connections.try_join_next().is_some() {}
        let Ok((stream, peer)) = accepted else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(client = %peer, "admin center: too many connections, closed");
            continue;
        };
        let Some(mine) = PerAddress::take(&per_address, auth::client_key(peer.ip())) else {
            tracing::warn!(client = %peer, "admin center: too many connections from this address, closed");
            continue;
        };
        let (router, gate) = (router.clone(), gate.clone());
        connections.spawn(async move {
            connection(stream, peer, router, gate).await;
            drop((slot, mine));
        });
    }
    // Dropping the set closes the connections still open.
}

/// One of an address's [`PER_ADDRESS`] connections; given back when dropped.
struct PerAddress {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl PerAddress {
    fn take(counts: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr) -> Option<PerAddress> {
        let mut map = counts.lock().unwrap_or_else(PoisonError::into_inner);
        let n = map.entry(ip).or_insert(0);
        if *n >= PER_ADDRESS {
            return None;
        }
        *n += 1;
        Some(PerAddress {
            counts: counts.clone(),
            ip,
        })
    }
}

impl Drop for PerAddress {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    gate: Arc<dyn Controlled>,
) {
    let Some(web) = gate.admin_web() else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, web.acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(client = %peer, error = %e, "admin center: TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let service = TowerToHyperService::new(router.layer(Extension(Peer(peer))));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(64 * 1024);
    let serving = http.serve_connection(TokioIo::new(tls), service);
    let _ = tokio::time::timeout(CONNECTION_LIFETIME, serving).await;
}

fn routes(app: App) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/mailboxes") }))
        .route("/signin", get(pages::signin_form).post(pages::signin))
        .route("/signout", post(pages::signout))
        .route("/mailboxes", get(pages::mailboxes))
        .route("/mailboxes/edit", get(pages::edit))
        .route("/mailboxes/features", post(pages::save_features))
        .route("/sessions", get(pages::sessions))
        .route("/sessions/close", post(pages::close_sessions))
        .route("/audit", get(pages::audit))
        .route("/static/style.css", get(pages::style))
        .fallback(pages::not_found)
        .layer(axum::middleware::from_fn(same_origin))
        .layer(axum::middleware::from_fn(deadline))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        // Outermost: every answer carries them, refusals and timeouts included.
        .layer(axum::middleware::map_response(render::security_headers))
        .with_state(app)
}

/// A request, its body included, gets [`REQUEST_TIMEOUT`].
async fn deadline(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "the request took too long").into_response(),
    }
}

/// A POST whose `Origin` is another site is refused before anything else (the CSRF token and
/// `SameSite=Strict` are the other two locks).
async fn same_origin(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if request.method() == Method::POST {
        let headers = request.headers();
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        if let Some(origin) = origin {
            if host.is_none_or(|h| origin != format!("https://{h}")) {
                return (StatusCode::FORBIDDEN, "refused: a form from another site")
                    .into_response();
            }
        }
    }
    next.run(request).await
}

/// The users file's administrators (read for every request, so `imapgate admin-user remove`
/// takes effect at once).
async fn administrators(gate: &dyn Controlled) -> Result<Vec<Admin>, String> {
    let web = gate
        .admin_web()
        .ok_or_else(|| "the admin center is not configured".to_string())?;
    tokio::task::spawn_blocking(move || {
        if web.strict_modes {
            crate::permissions::check_secret_file(&web.users_file).map_err(|e| e.to_string())?;
        }
        users::load(&web.users_file).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

impl FromRequestParts<App> for Signed {
    type Rejection = Response;

    /// The signed-in administrator; otherwise a page is sent to sign in, and a form refused.
    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Signed, Response> {
        let idle = app.gate.admin_web().map(|w| w.idle_timeout);
        let signed = auth::cookie(&parts.headers, auth::SESSION_COOKIE)
            .zip(idle)
            .and_then(|(token, idle)| app.sessions.get(token, idle));
        let signed_out = || {
            if parts.method == Method::GET {
                Redirect::to("/signin").into_response()
            } else {
                pages::signin_page(
                    app,
                    StatusCode::FORBIDDEN,
                    "You are signed out, so nothing was changed. Sign in again.",
                )
            }
        };
        let Some(mut signed) = signed else {
            return Err(signed_out());
        };
        // Removed or given another role since signing in: it counts from now.
        match administrators(app.gate.as_ref()).await {
            // A new password, or another administrator given the name: signed out.
            Ok(admins) => match admins
                .iter()
                .find(|a| a.name == signed.name && a.password_hash == signed.stamp)
            {
                Some(admin) => {
                    if admin.role != signed.role {
                        app.sessions.set_role(&signed.token, admin.role);
                        signed.role = admin.role;
                    }
                }
                None => {
                    app.sessions.remove(&signed.token);
                    return Err(signed_out());
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "admin center: cannot read the administrators");
                return Err((
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the administrators file cannot be read; the gate's log says why",
                )
                    .into_response());
            }
        }
        Ok(signed)
    }
}
