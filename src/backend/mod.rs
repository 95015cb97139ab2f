//! The IMAP4 Backend service side: connect to the mailbox's server, set up TLS, and log in on the
//! user's behalf with the [`client`] (imap-codec both ways), then hand the logged-in stream to the
//! relay.
//!
//! Every exchange has a deadline (`connect_timeout` for TCP, then one `login_timeout` budget for
//! everything after it), and every response is read through a bounded fragmentizer, so a backend
//! that stalls or floods cannot hold a session. Errors say which phase failed and who is to blame;
//! they all mean `NO [UNAVAILABLE]` to the client, without a failed-login penalty.
//!
//! A backend with several addresses fails over: a failed connect or greeting marks the address
//! down ([`health`]) and the login goes on to the next one within the same budget (each address
//! gets at most `connect_timeout` to connect and its share of `login_timeout` to greet); a
//! health check brings it back. With `proxy_protocol`, each connection starts with a PROXY
//! header naming the client.

pub mod client;
pub mod encode;
pub mod health;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::config::{BackendConfig, BackendTls, ProxyProtocolVersion};
use crate::credentials::{Credentials, TokenMechanism};
use crate::errors::{Blame, Blamed};
use crate::metrics::{AddressLabels, BackendLabels, Metrics};
use crate::stream::Stream;
use client::{Client, ClientError, Kind, Message, StatusOf};
use encode::{login_command, LoginCaps};

/// A configured backend, with its TLS connector built once per reload.
pub struct Backend {
    pub name: Arc<str>,
    pub config: BackendConfig,
    connector: Option<TlsConnector>,
    pub health: health::Health,
    /// The SASL mechanisms its CAPABILITY offered, once seen.
    learned: Mutex<Option<Vec<String>>>,
    /// The task checking addresses marked down, while there are any.
    checker: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(task) = self
            .checker
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
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
    #[error("{address}: no greeting within {after:?}")]
    Greeting { address: String, after: Duration },
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
    #[error("login: the backend offers no mechanism for these credentials (AUTH=PLAIN or LOGIN for a password, AUTH=OAUTHBEARER or AUTH=XOAUTH2 for a token)")]
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
    /// The gate's address the client connected to (the PROXY header's destination).
    pub local: Option<SocketAddr>,
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
        let health = health::Health::new(config.address.0.clone());
        Ok(Backend {
            name: Arc::from(name),
            config,
            connector,
            health,
            learned: Mutex::new(None),
            checker: Mutex::new(None),
        })
    }

    /// Connects (failing over across the addresses), sets up TLS as configured, and logs in
    /// with `creds`.
    pub async fn login(
        self: &Arc<Self>,
        creds: &Credentials,
        client: &ClientInfo,
        metrics: &Arc<Metrics>,
    ) -> Result<LoginResult, BackendError> {
        let labels = BackendLabels {
            backend: self.name.to_string(),
        };
        let started = Instant::now();
        // One budget for the whole login, on top of the per-read deadlines: a backend trickling
        // lines cannot stretch it, and failing over happens within it.
        let budget = self.config.connect_timeout + self.config.login_timeout;
        let deadline = started + budget;
        let (conn, caps, connected) = self.open_any(client, metrics, deadline).await?;
        metrics
            .backend_connect
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        let greeted = Instant::now();
        // `login_timeout` counts from the connect of the address that answered.
        let end = (connected + self.config.login_timeout).min(deadline);
        let left = end.saturating_duration_since(greeted);
        let result = tokio::time::timeout(left, self.login_on(conn, caps, creds, client))
            .await
            .map_err(|_| BackendError::Budget {
                after: self.config.login_timeout,
            })?;
        if result.is_ok() {
            metrics
                .backend_login
                .get_or_create(&labels)
                .observe(greeted.elapsed().as_secs_f64());
        }
        result
    }

    /// A greeted connection to the first address that answers: those up first, then those
    /// down; each failure marks its address down.
    async fn open_any(
        self: &Arc<Self>,
        client: &ClientInfo,
        metrics: &Arc<Metrics>,
        deadline: Instant,
    ) -> Result<(Client, Option<Vec<String>>, Instant), BackendError> {
        let order = self.health.order();
        let share = self.config.login_timeout / order.len().max(1) as u32;
        let mut last = None;
        for (n, &i) in order.iter().enumerate() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if n > 0 {
                metrics
                    .backend_failovers
                    .get_or_create(&BackendLabels {
                        backend: self.name.to_string(),
                    })
                    .inc();
            }
            let greet = share.min(left);
            let attempt = tokio::time::timeout(left, self.open_at(i, client, greet))
                .await
                .unwrap_or_else(|_| {
                    Err(BackendError::Budget {
                        after: self.config.login_timeout,
                    })
                });
            match attempt {
                Ok(open) => {
                    if self.health.mark_up(i) {
                        self.announce(i, true, metrics, None);
                    }
                    return Ok(open);
                }
                Err(e) => {
                    let why = e.to_string();
                    if self.health.mark_down(i, &why) {
                        self.announce(i, false, metrics, Some(&why));
                        self.watch_down(metrics);
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(BackendError::Budget {
            after: self.config.login_timeout,
        }))
    }

    /// Logs and counts an address going up or down.
    fn announce(&self, i: usize, up: bool, metrics: &Metrics, why: Option<&str>) {
        let address = self.health.address(i);
        metrics
            .backend_address_up
            .get_or_create(&AddressLabels {
                backend: self.name.to_string(),
                address: address.to_string(),
            })
            .set(i64::from(up));
        if up {
            tracing::info!(backend = %self.name, address, "backend address up again");
        } else {
            let others = self.health.count() > 1;
            tracing::warn!(backend = %self.name, address, error = why.unwrap_or(""), next = others, "backend address down");
        }
    }

    /// Starts the health check of the addresses marked down, unless it runs.
    fn watch_down(self: &Arc<Self>, metrics: &Arc<Metrics>) {
        let mut checker = self.checker.lock().unwrap_or_else(PoisonError::into_inner);
        if checker.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = Arc::downgrade(self);
        let metrics = metrics.clone();
        let interval = self.config.health_check_interval;
        *checker = Some(runtime.spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let Some(backend) = weak.upgrade() else {
                    return;
                };
                let down = backend.health.down();
                if down.is_empty() {
                    return;
                }
                for i in down {
                    let greet = backend.config.login_timeout;
                    if let Ok((conn, _, _)) =
                        backend.open_at(i, &ClientInfo::default(), greet).await
                    {
                        drop(conn);
                        if backend.health.mark_up(i) {
                            backend.announce(i, true, &metrics, None);
                        }
                    }
                }
            }
        }));
    }

    /// Connects to address `i` (within `connect_timeout`), sends the PROXY header if
    /// configured, sets up implicit TLS and reads the greeting (within `greet`); the greeting's
    /// capabilities, if it had them, and when the connect completed.
    async fn open_at(
        &self,
        i: usize,
        info: &ClientInfo,
        greet: Duration,
    ) -> Result<(Client, Option<Vec<String>>, Instant), BackendError> {
        let mut tcp = self.connect(self.health.address(i)).await?;
        let connected = Instant::now();
        let timeout = self.config.login_timeout;
        let open = async {
            if let Some(version) = self.config.proxy_protocol {
                use tokio::io::AsyncWriteExt;
                let header = proxy_header(version, info, &tcp);
                tcp.write_all(&header)
                    .await
                    .map_err(|source| BackendError::Connect {
                        address: self.health.address(i).to_string(),
                        source,
                    })?;
            }
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
            Ok((conn, greeting.capabilities, connected))
        };
        tokio::time::timeout(greet, open)
            .await
            .map_err(|_| BackendError::Greeting {
                address: self.health.address(i).to_string(),
                after: greet,
            })?
    }

    /// STARTTLS when configured, then the capabilities (learning the mechanisms offered).
    async fn prepare(
        &self,
        mut conn: Client,
        mut caps: Option<Vec<String>>,
    ) -> Result<(Client, Vec<String>), BackendError> {
        if self.config.tls == BackendTls::Starttls {
            conn = self.starttls(conn).await?;
            caps = None;
        }
        let caps = match caps {
            Some(c) => c,
            None => conn.capability(&next_tag(), "capability").await?,
        };
        let mechanisms: Vec<String> = caps
            .iter()
            .filter_map(|c| {
                c.get(..5)
                    .filter(|p| p.eq_ignore_ascii_case("AUTH="))
                    .map(|_| c[5..].to_ascii_uppercase())
            })
            .collect();
        *self.learned.lock().unwrap_or_else(PoisonError::into_inner) = Some(mechanisms);
        Ok((conn, caps))
    }

    /// Connects, reads the capabilities and logs out: what the gate offers for this backend
    /// before anyone logged in (run at start and at each reload).
    pub async fn probe(self: &Arc<Self>, metrics: &Arc<Metrics>) -> Result<(), BackendError> {
        let budget = self.config.connect_timeout + self.config.login_timeout;
        let deadline = Instant::now() + budget;
        let (conn, caps, _) = self
            .open_any(&ClientInfo::default(), metrics, deadline)
            .await?;
        let left = deadline.saturating_duration_since(Instant::now());
        let (conn, _) = tokio::time::timeout(left, self.prepare(conn, caps))
            .await
            .map_err(|_| BackendError::Budget { after: budget })??;
        let (stream, pending) = conn.into_parts();
        BackendSession {
            stream,
            pending,
            prelude: Vec::new(),
            ok_text: String::new(),
        }
        .logout()
        .await;
        Ok(())
    }

    /// The bearer-token mechanisms this backend takes: `mechanisms` when configured, else what
    /// its CAPABILITY said (at start, at reload, at each login).
    pub fn token_mechanisms(&self) -> Vec<TokenMechanism> {
        let learned;
        let names: &[String] = match &self.config.mechanisms {
            Some(list) => list,
            None => {
                learned = self
                    .learned
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
                    .unwrap_or_default();
                &learned
            }
        };
        [TokenMechanism::OAuthBearer, TokenMechanism::XOAuth2]
            .into_iter()
            .filter(|m| names.iter().any(|n| n.eq_ignore_ascii_case(m.name())))
            .collect()
    }

    async fn login_on(
        &self,
        conn: Client,
        caps: Option<Vec<String>>,
        creds: &Credentials,
        info: &ClientInfo,
    ) -> Result<LoginResult, BackendError> {
        let (mut conn, caps) = self.prepare(conn, caps).await?;
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
        // A token refused: RFC 7628's error challenge gets its dummy response (XOAUTH2 an
        // empty one), then the NO.
        let challenge_reply: &[u8] = match creds.token_mechanism() {
            Some(TokenMechanism::OAuthBearer) => b"AQ==\r\n",
            Some(TokenMechanism::XOAuth2) => b"\r\n",
            None => b"*\r\n",
        };
        let reply = conn
            .command_answering(&tag, &fragments, "login", challenge_reply, |m: &Message| {
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

    async fn connect(&self, address: &str) -> Result<TcpStream, BackendError> {
        let after = self.config.connect_timeout;
        let tcp = tokio::time::timeout(after, TcpStream::connect(address))
            .await
            .map_err(|_| BackendError::ConnectTimeout {
                address: address.to_string(),
                after,
            })?
            .map_err(|source| BackendError::Connect {
                address: address.to_string(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    }
}

/// The PROXY protocol header for a connection to a backend: the client's address and the
/// gate's it connected to; a `LOCAL` (v2) or `UNKNOWN` (v1) header for the gate's own
/// connections (health checks) or when the two addresses are of different families.
fn proxy_header(version: ProxyProtocolVersion, info: &ClientInfo, tcp: &TcpStream) -> Vec<u8> {
    let pair = match (info.peer, info.local.or_else(|| tcp.local_addr().ok())) {
        (Some(src), Some(dst)) if src.is_ipv4() == dst.is_ipv4() => Some((src, dst)),
        _ => None,
    };
    match version {
        ProxyProtocolVersion::V1 => match pair {
            Some(p) => ppp::v1::Addresses::from(p).to_string().into_bytes(),
            None => ppp::v1::Addresses::Unknown.to_string().into_bytes(),
        },
        ProxyProtocolVersion::V2 => {
            use ppp::v2::{Builder, Command, Protocol, Version};
            let built = match pair {
                Some(p) => {
                    Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, p)
                        .build()
                }
                None => Builder::with_addresses(
                    Version::Two | Command::Local,
                    Protocol::Unspecified,
                    ppp::v2::Addresses::Unspecified,
                )
                .build(),
            };
            // Building into a Vec cannot fail.
            built.unwrap_or_default()
        }
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
