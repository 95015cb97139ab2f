//! The IMAP4 Backend service side: connect to the mailbox's server, set up TLS, and log in on the
//! user's behalf, then hand the logged-in stream to the relay.
//!
//! Every exchange here has a deadline (`connect_timeout` for TCP, `login_timeout` for each later
//! step), and every response is read through a bounded line reader, so a backend that stalls or
//! floods cannot hold a session. Errors say which phase failed; they all mean `NO [UNAVAILABLE]`
//! to the client.

pub mod encode;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::config::{BackendConfig, BackendTls};
use crate::credentials::Credentials;
use crate::metrics::{BackendLabels, Metrics};
use crate::session::boundary::literal_announced;
use crate::stream::Stream;
use encode::{login_command, quotable, LoginCaps};

/// Longest backend response line accepted before login, literals included.
const MAX_RESPONSE: usize = 64 * 1024;

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
    #[error("{phase}: no answer within {after:?}")]
    Timeout {
        phase: &'static str,
        after: Duration,
    },
    #[error("TLS handshake with {server_name}: {source}")]
    Tls {
        server_name: String,
        source: std::io::Error,
    },
    #[error("{phase}: {message}")]
    Protocol {
        phase: &'static str,
        message: String,
    },
    #[error("{phase}: backend closed the connection")]
    Closed { phase: &'static str },
    #[error("{phase}: {source}")]
    Io {
        phase: &'static str,
        source: std::io::Error,
    },
}

/// What the backend said about the credentials.
pub enum LoginResult {
    LoggedIn(BackendSession),
    /// The backend refused the credentials (a tagged NO or BAD).
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
    pub async fn logout(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            self.stream.write_all(b"ig9 LOGOUT\r\n").await?;
            let mut sink = [0u8; 512];
            while self.stream.read(&mut sink).await? > 0 {}
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

/// A parsed tagged response.
struct Tagged {
    status: String,
    text: String,
}

static TAGS: AtomicU64 = AtomicU64::new(1);

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

    /// Connects, sets up TLS as configured, and logs in as `creds`.
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
        let conn = self.connect().await?;
        metrics
            .backend_connect
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        let connected = std::time::Instant::now();
        // One budget for everything after the TCP connect, on top of the per-read deadlines: a
        // backend trickling lines cannot stretch a login.
        let after = self.config.login_timeout;
        let result = deadline("login", after, self.login_on(conn, creds, client)).await;
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
        mut conn: Conn,
        creds: &Credentials,
        client: &ClientInfo,
    ) -> Result<LoginResult, BackendError> {
        if self.config.tls == BackendTls::Tls {
            conn = conn.handshake(self.tls_parts()?).await?;
        }
        let mut caps = conn.greeting().await?;
        if self.config.tls == BackendTls::Starttls {
            conn = conn.starttls(self.tls_parts()?).await?;
            caps = None;
        }
        let caps = match caps {
            Some(c) => c,
            None => conn.capability("capability").await?,
        };
        let has = |name: &str| caps.iter().any(|c| c.eq_ignore_ascii_case(name));
        if has("ID") {
            conn.send_id(client).await?;
        }
        let login_caps = LoginCaps::from_capabilities(caps.iter().map(String::as_str));
        let tag = conn.next_tag();
        let Some(fragments) = login_command(&tag, creds, login_caps) else {
            return Err(BackendError::Protocol {
                phase: "login",
                message: "backend offers neither AUTH=PLAIN nor LOGIN".into(),
            });
        };
        // Untagged lines the backend sends with its answer (an [ALERT], say) are the client's.
        let mut prelude = Vec::new();
        let reply = conn
            .command_with(&tag, &fragments, "login", |line| {
                let ours = strip_prefix_ci(line, "* ID ").is_some()
                    || strip_prefix_ci(line, "* CAPABILITY ").is_some();
                if !ours && line.starts_with("* ") && prelude.len() < 16 * 1024 {
                    prelude.extend_from_slice(line.as_bytes());
                    prelude.extend_from_slice(b"\r\n");
                }
            })
            .await?;
        match reply.status.as_str() {
            "OK" => {}
            "NO" if starts_with_code(&reply.text, "UNAVAILABLE") => {
                return Err(BackendError::Protocol {
                    phase: "login",
                    message: format!("backend is unavailable: {}", printable(&reply.text)),
                })
            }
            _ => return Ok(LoginResult::Rejected),
        }
        let ok_text = if starts_with_code(&reply.text, "CAPABILITY") {
            reply.text
        } else {
            let caps = conn.capability("post-login capability").await?.join(" ");
            if reply.text.starts_with('[') {
                // Another response code is there (one per response): keep it, and give the
                // capabilities as an untagged line before the OK.
                prelude.extend_from_slice(format!("* CAPABILITY {caps}\r\n").as_bytes());
                reply.text
            } else {
                format!("[CAPABILITY {caps}] {}", reply.text)
            }
        };
        Ok(LoginResult::LoggedIn(BackendSession {
            stream: conn.stream,
            pending: conn.buf,
            prelude,
            ok_text,
        }))
    }

    fn tls_parts(&self) -> Result<(&TlsConnector, ServerName<'static>), BackendError> {
        let server_name = self.config.tls_server_name();
        let connector = self.connector.as_ref().ok_or(BackendError::Protocol {
            phase: "tls",
            message: "no TLS configuration".into(),
        })?;
        let name =
            ServerName::try_from(server_name.clone()).map_err(|e| BackendError::Protocol {
                phase: "tls",
                message: format!("server_name {server_name:?}: {e}"),
            })?;
        Ok((connector, name))
    }

    async fn connect(&self) -> Result<Conn, BackendError> {
        let address = &self.config.address;
        let tcp = deadline("connect", self.config.connect_timeout, async {
            TcpStream::connect(address.as_str())
                .await
                .map_err(|source| BackendError::Connect {
                    address: address.clone(),
                    source,
                })
        })
        .await?;
        let _ = tcp.set_nodelay(true);
        Ok(Conn {
            stream: Stream::Plain(tcp),
            buf: Vec::new(),
            timeout: self.config.login_timeout,
        })
    }
}

/// Runs `fut` under a deadline, naming the phase when it passes.
async fn deadline<T>(
    phase: &'static str,
    after: Duration,
    fut: impl std::future::Future<Output = Result<T, BackendError>>,
) -> Result<T, BackendError> {
    tokio::time::timeout(after, fut)
        .await
        .map_err(|_| BackendError::Timeout { phase, after })?
}

/// A backend connection during login: the stream and what was read but not yet consumed.
struct Conn {
    stream: Stream,
    buf: Vec<u8>,
    timeout: Duration,
}

impl Conn {
    fn next_tag(&self) -> String {
        format!("ig{}", TAGS.fetch_add(1, Ordering::Relaxed))
    }

    /// Wraps the connection in TLS; nothing read ahead may be pending (it would be plaintext).
    async fn handshake(
        self,
        (connector, name): (&TlsConnector, ServerName<'static>),
    ) -> Result<Conn, BackendError> {
        let Conn {
            stream,
            buf,
            timeout,
        } = self;
        let Stream::Plain(tcp) = stream else {
            return Err(protocol("tls", "TLS is already on"));
        };
        if !buf.is_empty() {
            return Err(protocol("tls", "data ahead of the TLS handshake"));
        }
        let server_name = name.to_str().into_owned();
        let tls = deadline("tls handshake", timeout, async {
            connector
                .connect(name, tcp)
                .await
                .map_err(|source| BackendError::Tls {
                    server_name,
                    source,
                })
        })
        .await?;
        Ok(Conn {
            stream: Stream::ClientTls(Box::new(tls)),
            buf,
            timeout,
        })
    }

    /// Reads the greeting; returns the capabilities when it carries them.
    async fn greeting(&mut self) -> Result<Option<Vec<String>>, BackendError> {
        let line = self.read_line("greeting").await?;
        let text = String::from_utf8_lossy(&line);
        let rest = text
            .strip_prefix("* ")
            .ok_or_else(|| protocol("greeting", &text))?;
        let (status, text) = split_status(rest);
        if status != "OK" {
            return Err(protocol("greeting", rest));
        }
        Ok(code_capabilities(&text))
    }

    async fn starttls(
        mut self,
        parts: (&TlsConnector, ServerName<'static>),
    ) -> Result<Conn, BackendError> {
        let tag = self.next_tag();
        let reply = self
            .command(
                &tag,
                &[format!("{tag} STARTTLS\r\n").into_bytes()],
                "starttls",
            )
            .await?;
        if reply.status != "OK" {
            return Err(protocol("starttls", &reply.text));
        }
        self.handshake(parts).await
    }

    async fn capability(&mut self, phase: &'static str) -> Result<Vec<String>, BackendError> {
        let tag = self.next_tag();
        let mut found = None;
        let reply = self
            .command_with(
                &tag,
                &[format!("{tag} CAPABILITY\r\n").into_bytes()],
                phase,
                |line| {
                    if let Some(rest) = strip_prefix_ci(line, "* CAPABILITY ") {
                        found = Some(rest.split_ascii_whitespace().map(String::from).collect());
                    }
                },
            )
            .await?;
        match (reply.status.as_str(), found) {
            ("OK", Some(caps)) => Ok(caps),
            _ => Err(protocol(phase, "no CAPABILITY answer")),
        }
    }

    /// Sends ID with the client's own parameters and where it connects from, without waiting: the
    /// answer is read (and ignored) on the way to the login's answer.
    async fn send_id(&mut self, client: &ClientInfo) -> Result<(), BackendError> {
        let tag = self.next_tag();
        let mut params: Vec<(String, String)> = client
            .id
            .iter()
            .filter(|(k, _)| !k.to_ascii_lowercase().starts_with("x-"))
            .filter_map(|(k, v)| v.as_ref().map(|v| (k.clone(), v.clone())))
            .collect();
        // RFC 2971 allows 30 pairs; keep room for the three the gate adds.
        params.truncate(27);
        if let Some(peer) = client.peer {
            params.push(("x-originating-ip".into(), peer.ip().to_string()));
            params.push(("x-originating-port".into(), peer.port().to_string()));
        }
        params.push(("x-session-id".into(), client.session_id.clone()));
        let mut line = format!("{tag} ID (");
        for (i, (k, v)) in params
            .iter()
            .filter(|(k, v)| quotable(k.as_bytes()) && quotable(v.as_bytes()))
            .enumerate()
        {
            if i > 0 {
                line.push(' ');
            }
            line.push_str(&format!("\"{k}\" \"{v}\""));
        }
        line.push_str(")\r\n");
        self.write("id", line.as_bytes()).await
    }

    async fn write(&mut self, phase: &'static str, bytes: &[u8]) -> Result<(), BackendError> {
        let t = self.timeout;
        let stream = &mut self.stream;
        deadline(phase, t, async {
            stream
                .write_all(bytes)
                .await
                .map_err(|source| BackendError::Io { phase, source })
        })
        .await
    }

    async fn command(
        &mut self,
        tag: &str,
        fragments: &[Vec<u8>],
        phase: &'static str,
    ) -> Result<Tagged, BackendError> {
        self.command_with(tag, fragments, phase, |_| {}).await
    }

    /// Sends `fragments`, waiting for a `+` between them, and reads up to the tagged answer.
    /// `untagged` sees every other line.
    async fn command_with(
        &mut self,
        tag: &str,
        fragments: &[Vec<u8>],
        phase: &'static str,
        mut untagged: impl FnMut(&str),
    ) -> Result<Tagged, BackendError> {
        let prefix = format!("{tag} ");
        for (i, fragment) in fragments.iter().enumerate() {
            self.write(phase, fragment).await?;
            let last = i + 1 == fragments.len();
            loop {
                let line = self.read_line(phase).await?;
                let text = String::from_utf8_lossy(&line);
                if let Some(rest) = text.strip_prefix(&prefix) {
                    let (status, text) = split_status(rest);
                    return Ok(Tagged { status, text });
                }
                if text.starts_with('+') {
                    if last {
                        // Nothing more to send: cancel whatever the backend is waiting for.
                        self.write(phase, b"*\r\n").await?;
                        continue;
                    }
                    break;
                }
                untagged(&text);
            }
        }
        Err(protocol(phase, "no answer"))
    }

    /// One response line without its CRLF; literals inside it are kept, bounded by `MAX_RESPONSE`.
    async fn read_line(&mut self, phase: &'static str) -> Result<Vec<u8>, BackendError> {
        let t = self.timeout;
        deadline(phase, t, async {
            let mut scanned = 0;
            loop {
                if let Some(pos) = self.buf[scanned..].iter().position(|&b| b == b'\n') {
                    let end = scanned + pos + 1;
                    let line = &self.buf[..end];
                    if let Some(len) = literal_announced(line).and_then(|n| usize::try_from(n).ok())
                    {
                        if end + len > MAX_RESPONSE {
                            return Err(protocol(phase, "response too long"));
                        }
                        while self.buf.len() < end + len {
                            self.fill(phase).await?;
                        }
                        scanned = end + len;
                        continue;
                    }
                    let mut line: Vec<u8> = self.buf.drain(..end).collect();
                    line.truncate(line.len() - 1);
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    return Ok(line);
                }
                scanned = self.buf.len();
                if self.buf.len() >= MAX_RESPONSE {
                    return Err(protocol(phase, "response line too long"));
                }
                self.fill(phase).await?;
            }
        })
        .await
    }

    async fn fill(&mut self, phase: &'static str) -> Result<(), BackendError> {
        let mut chunk = [0u8; 4096];
        let n = self
            .stream
            .read(&mut chunk)
            .await
            .map_err(|source| BackendError::Io { phase, source })?;
        if n == 0 {
            return Err(BackendError::Closed { phase });
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn protocol(phase: &'static str, what: &str) -> BackendError {
    BackendError::Protocol {
        phase,
        message: format!("unexpected answer: {}", printable(what)),
    }
}

/// At most 200 characters of backend text, for logs.
fn printable(text: &str) -> String {
    text.chars()
        .take(200)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// `OK text` -> ("OK", "text"), status upper-cased.
fn split_status(rest: &str) -> (String, String) {
    let (status, text) = rest.split_once(' ').unwrap_or((rest, ""));
    (status.to_ascii_uppercase(), text.to_string())
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// True when `text` starts with the response code `[CODE` (case-insensitive).
fn starts_with_code(text: &str, code: &str) -> bool {
    text.strip_prefix('[')
        .and_then(|t| t.get(..code.len()))
        .is_some_and(|c| c.eq_ignore_ascii_case(code))
}

/// Capabilities from a `[CAPABILITY ...]` response code at the start of `text`.
fn code_capabilities(text: &str) -> Option<Vec<String>> {
    if !starts_with_code(text, "CAPABILITY") {
        return None;
    }
    let inner = text.get("[CAPABILITY".len()..)?;
    let end = inner.find(']')?;
    Some(
        inner[..end]
            .split_ascii_whitespace()
            .map(String::from)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_helpers() {
        assert_eq!(literal_announced(b"* 1 FETCH (BODY[] {12}\r\n"), Some(12));
        assert_eq!(literal_announced(b"* OK {x}\r\n"), None);
        assert_eq!(
            code_capabilities("[CAPABILITY IMAP4rev1 IDLE] Logged in"),
            Some(vec!["IMAP4rev1".to_string(), "IDLE".to_string()])
        );
        assert_eq!(code_capabilities("Logged in"), None);
        assert!(starts_with_code("[unavailable] try later", "UNAVAILABLE"));
        assert_eq!(split_status("ok done"), ("OK".into(), "done".into()));
    }
}
