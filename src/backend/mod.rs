//! The IMAP4 Backend service side: connect to the mailbox's server, set up TLS, and log in on the
//! user's behalf with the [`client`] (imap-codec both ways), then hand the logged-in stream to the
//! relay.
//!
//! Every exchange has a deadline (`connect_timeout` for TCP, then one `login_timeout` budget for
//! everything after it), and every response is read through a bounded fragmentizer, so a backend
//! that stalls or floods cannot hold a session. Errors say which phase failed and who is to blame;
//! they all mean `NO [UNAVAILABLE]` to the client, without a failed-login penalty.

pub mod client;
pub mod encode;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::config::{BackendConfig, BackendTls};
use crate::credentials::Credentials;
use crate::errors::{Blame, Blamed};
use crate::metrics::{BackendLabels, Metrics};
use crate::stream::Stream;
use client::{Client, ClientError, Kind, Message, StatusOf};
use encode::{login_command, LoginCaps};

/// A configured backend, with its TLS connector built once per reload.
pub struct Backend {
    pub name: Arc<str>,
    pub config: BackendConfig,
    connector: Option<TlsConnector>,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("connect to {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("connect to {address}: no answer within {after:?}")]
    ConnectTimeout { address: String, after: Duration },
    #[error("login: no answer within {after:?}")]
    Budget { after: Duration },
    #[error("TLS handshake with {server_name}: {source}")]
    Tls {
        server_name: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Exchange(#[from] ClientError),
    /// The backend answered the login `NO [UNAVAILABLE]`.
    #[error("login: backend is unavailable: {0}")]
    Unavailable(String),
    /// The backend did not understand the gate's login (`BAD`).
    #[error("login: the backend refused the command: {0}")]
    Refused(String),
    #[error("login: backend offers neither AUTH=PLAIN nor LOGIN")]
    NoLoginMethod,
    /// The gate's own set-up: no TLS configuration or an unusable server name.
    #[error("tls: {0}")]
    Configuration(String),
}

impl Blamed for BackendError {
    fn blame(&self) -> Blame {
        match self {
            BackendError::Configuration(_) => Blame::Gate,
            _ => Blame::Backend,
        }
    }
}

/// What the backend said about the credentials.
pub enum LoginResult {
    LoggedIn(BackendSession),
    /// The backend refused the credentials (a tagged NO).
    Rejected,
}

/// A backend connection logged in as the user, ready to relay.
pub struct BackendSession {
    pub stream: Stream,
    /// Bytes the backend sent after its tagged OK; they belong to the client.
    pub pending: Vec<u8>,
    /// Untagged lines (CRLF-terminated) for the client before the tagged OK.
    pub prelude: Vec<u8>,
    /// The text after `OK` to give the client, starting with `[CAPABILITY ...]`.
    pub ok_text: String,
}

impl BackendSession {
    /// Logs the backend session out without waiting long: used when the mailbox is disabled.
    pub async fn logout(self) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = self.stream;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            stream.write_all(&encode::simple("ig0", "LOGOUT")).await?;
            let mut sink = [0u8; 512];
            while stream.read(&mut sink).await? > 0 {}
            std::io::Result::Ok(())
        })
        .await;
    }
}

/// What the gate tells the backend about the client (RFC 2971 ID), when the backend offers ID.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub peer: Option<SocketAddr>,
    pub session_id: String,
    /// The client's own ID parameters, already filtered to quotable values.
    pub id: Vec<(String, Option<String>)>,
}

static TAGS: AtomicU64 = AtomicU64::new(1);

fn next_tag() -> String {
    format!("ig{}", TAGS.fetch_add(1, Ordering::Relaxed))
}

/// Longest prelude (untagged lines before the login's OK) passed to the client.
const MAX_PRELUDE: usize = 16 * 1024;

impl Backend {
    pub fn new(name: &str, config: BackendConfig) -> Result<Backend, crate::tls::TlsError> {
        let connector = match config.tls {
            BackendTls::None => None,
            BackendTls::Starttls | BackendTls::Tls => {
                Some(crate::tls::connector(config.ca.as_deref())?)
            }
        };
        Ok(Backend {
            name: Arc::from(name),
            config,
            connector,
        })
    }

    /// Connects, sets up TLS as configured, and logs in with `creds`.
    pub async fn login(
        &self,
        creds: &Credentials,
        client: &ClientInfo,
        metrics: &Metrics,
    ) -> Result<LoginResult, BackendError> {
        let labels = BackendLabels {
            backend: self.name.to_string(),
        };
        let started = std::time::Instant::now();
        let tcp = self.connect().await?;
        metrics
            .backend_connect
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        let connected = std::time::Instant::now();
        // One budget for everything after the TCP connect, on top of the per-read deadlines: a
        // backend trickling lines cannot stretch a login.
        let after = self.config.login_timeout;
        let result = tokio::time::timeout(after, self.login_on(tcp, creds, client))
            .await
            .map_err(|_| BackendError::Budget { after })?;
        if result.is_ok() {
            metrics
                .backend_login
                .get_or_create(&labels)
                .observe(connected.elapsed().as_secs_f64());
        }
        result
    }

    async fn login_on(
        &self,
        tcp: TcpStream,
        creds: &Credentials,
        info: &ClientInfo,
    ) -> Result<LoginResult, BackendError> {
        let timeout = self.config.login_timeout;
        let mut conn = match self.config.tls {
            BackendTls::Tls => Client::new(self.handshake(tcp).await?, timeout),
            _ => Client::new(Stream::Plain(tcp), timeout),
        };
        let greeting = conn.greeting().await?;
        if !greeting.ok {
            return Err(ClientError::Protocol {
                phase: "greeting",
                message: format!("unexpected answer: {}", client::printable(&greeting.raw)),
            }
            .into());
        }
        let mut caps = greeting.capabilities;
        if self.config.tls == BackendTls::Starttls {
            conn = self.starttls(conn).await?;
            caps = None;
        }
        let caps = match caps {
            Some(c) => c,
            None => conn.capability(&next_tag(), "capability").await?,
        };
        let has = |name: &str| caps.iter().any(|c| c.eq_ignore_ascii_case(name));
        if has("ID") {
            // Pipelined: its answer is read (and dropped) on the way to the login's.
            if let Some(line) = encode::id(&next_tag(), &id_parameters(info)) {
                conn.write("id", &line).await?;
            }
        }
        let login_caps = LoginCaps::from_capabilities(caps.iter().map(String::as_str));
        let tag = next_tag();
        let fragments =
            login_command(&tag, creds, login_caps).ok_or(BackendError::NoLoginMethod)?;
        // Untagged lines the backend sends with its answer (an [ALERT], say) are the client's.
        let mut prelude = Vec::new();
        let reply = conn
            .command(&tag, &fragments, "login", |m: &Message| {
                // Untagged lines only: `* ID`, `* CAPABILITY` and the pipelined ID's own answer
                // are the gate's.
                let theirs = matches!(m.kind, Kind::Untagged | Kind::Bye);
                if theirs && prelude.len() + m.raw.len() <= MAX_PRELUDE {
                    prelude.extend_from_slice(&m.raw);
                }
            })
            .await?;
        let Kind::Tagged {
            status,
            code,
            capabilities,
            ..
        } = &reply.kind
        else {
            return Err(BackendError::Refused("no tagged answer".into()));
        };
        match (status, code.as_deref()) {
            (StatusOf::Ok, _) => {}
            (StatusOf::No, Some("UNAVAILABLE")) => {
                return Err(BackendError::Unavailable(client::printable(&reply.raw)))
            }
            (StatusOf::No, _) => return Ok(LoginResult::Rejected),
            (StatusOf::Bad, _) => return Err(BackendError::Refused(client::printable(&reply.raw))),
        }
        let text = reply.status_text();
        let ok_text = if capabilities.is_some() {
            text
        } else {
            let caps = conn
                .capability(&next_tag(), "post-login capability")
                .await?
                .join(" ");
            if code.is_some() {
                // Another response code is there (one per response): keep it, and give the
                // capabilities as an untagged line before the OK.
                prelude.extend_from_slice(format!("* CAPABILITY {caps}\r\n").as_bytes());
                text
            } else {
                format!("[CAPABILITY {caps}] {text}")
            }
        };
        let (stream, pending) = conn.into_parts();
        Ok(LoginResult::LoggedIn(BackendSession {
            stream,
            pending,
            prelude,
            ok_text,
        }))
    }

    async fn starttls(&self, mut conn: Client) -> Result<Client, BackendError> {
        let tag = next_tag();
        let reply = conn
            .command(
                &tag,
                &[encode::simple(&tag, "STARTTLS")],
                "starttls",
                |_| {},
            )
            .await?;
        if !matches!(
            reply.kind,
            Kind::Tagged {
                status: StatusOf::Ok,
                ..
            }
        ) {
            return Err(ClientError::Protocol {
                phase: "starttls",
                message: format!("unexpected answer: {}", client::printable(&reply.raw)),
            }
            .into());
        }
        let timeout = self.config.login_timeout;
        let (stream, ahead) = conn.into_parts();
        let Stream::Plain(tcp) = stream else {
            return Err(BackendError::Configuration("TLS is already on".into()));
        };
        if !ahead.is_empty() {
            return Err(ClientError::Protocol {
                phase: "starttls",
                message: "data ahead of the TLS handshake".into(),
            }
            .into());
        }
        Ok(Client::new(self.handshake(tcp).await?, timeout))
    }

    async fn handshake(&self, tcp: TcpStream) -> Result<Stream, BackendError> {
        let server_name = self.config.tls_server_name();
        let connector = self
            .connector
            .as_ref()
            .ok_or_else(|| BackendError::Configuration("no TLS configuration".into()))?;
        let name = ServerName::try_from(server_name.clone()).map_err(|e| {
            BackendError::Configuration(format!("server_name {server_name:?}: {e}"))
        })?;
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|source| BackendError::Tls {
                server_name,
                source,
            })?;
        Ok(Stream::ClientTls(Box::new(tls)))
    }

    async fn connect(&self) -> Result<TcpStream, BackendError> {
        let address = &self.config.address;
        let after = self.config.connect_timeout;
        let tcp = tokio::time::timeout(after, TcpStream::connect(address.as_str()))
            .await
            .map_err(|_| BackendError::ConnectTimeout {
                address: address.clone(),
                after,
            })?
            .map_err(|source| BackendError::Connect {
                address: address.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    }
}

/// The client's own ID fields (client-supplied `x-*` dropped) and where it connects from.
fn id_parameters(client: &ClientInfo) -> Vec<(String, String)> {
    let mut params: Vec<(String, String)> = client
        .id
        .iter()
        .filter(|(k, _)| !k.to_ascii_lowercase().starts_with("x-"))
        .filter_map(|(k, v)| v.as_ref().map(|v| (k.clone(), v.clone())))
        .filter(|(k, v)| encode::quotable(k.as_bytes()) && encode::quotable(v.as_bytes()))
        .collect();
    // RFC 2971 allows 30 pairs; keep room for the three the gate adds.
    params.truncate(27);
    if let Some(peer) = client.peer {
        params.push(("x-originating-ip".into(), peer.ip().to_string()));
        params.push(("x-originating-port".into(), peer.port().to_string()));
    }
    params.push(("x-session-id".into(), client.session_id.clone()));
    params
}
