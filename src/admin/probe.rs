//! `imapgate test-login`: a real login through the gate, step by step with latencies, like
//! Exchange's `Test-ImapConnectivity`. The password comes from a file or a prompt, never from the
//! command line (where `ps` would show it).
//!
//! Every step prints its name, its latency and what the server said; a step that fails says so
//! in words, with what to do about it (a certificate the probe cannot verify: `--ca FILE` or
//! `--trust-any-certificate`). When the gate's control socket is reachable, the failed-login
//! penalty the gate applies to the probe's own address is shown before the login, so a slow
//! login is not mistaken for a slow backend.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio_rustls::rustls::{self, pki_types::ServerName};

use super::control::PenaltyView;
use crate::backend::client::{Client, Kind, Message, StatusOf};
use crate::backend::encode::{self, login_command, LoginCaps};
use crate::config::Config;
use anyhow::Context;

use crate::credentials::{Credentials, TokenMechanism};
use crate::stream::Stream;

const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// What the operator asked for.
pub struct Options {
    pub identity: String,
    pub password_file: Option<PathBuf>,
    /// A bearer token's file instead of a password.
    pub token_file: Option<PathBuf>,
    pub mechanism: TokenMechanism,
    pub implicit_tls: bool,
    pub address: Option<SocketAddr>,
    pub server_name: String,
    pub ca: Option<PathBuf>,
    pub trust_any_certificate: bool,
}

/// `--mechanism` of `test-login --oauth2-token-file`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum TokenMechanismArg {
    Oauthbearer,
    Xoauth2,
}

impl From<TokenMechanismArg> for TokenMechanism {
    fn from(m: TokenMechanismArg) -> TokenMechanism {
        match m {
            TokenMechanismArg::Oauthbearer => TokenMechanism::OAuthBearer,
            TokenMechanismArg::Xoauth2 => TokenMechanism::XOAuth2,
        }
    }
}

/// Where and how to connect.
pub struct Probe {
    pub address: SocketAddr,
    /// Implicit TLS (the imaps listener) instead of STARTTLS.
    pub implicit_tls: bool,
    pub server_name: String,
    pub connector: tokio_rustls::TlsConnector,
    /// Whether the certificate is checked (for the hint when TLS fails).
    pub verifying: bool,
    /// The control socket, to show the penalty the gate applies to this probe's address.
    pub control_socket: Option<PathBuf>,
}

/// The command: resolves the address and password, then runs the probe.
pub async fn test_login(config: &Config, o: Options) -> anyhow::Result<i32> {
    let bindings = if o.implicit_tls {
        &config.imap4.ssl_bindings
    } else {
        &config.imap4.unencrypted_or_tls_bindings
    };
    let address = match o.address.or_else(|| bindings.first().copied()) {
        Some(mut a) => {
            if a.ip().is_unspecified() {
                a.set_ip(match a {
                    SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            a
        }
        None => anyhow::bail!("no listener of that kind is configured; give --address"),
    };
    let creds = match &o.token_file {
        Some(file) => {
            let text = std::fs::read(file)
                .with_context(|| format!("cannot read the token file {}", file.display()))?;
            let first = text.split(|&b| b == b'\n').next().unwrap_or_default();
            let token = first.strip_suffix(b"\r").unwrap_or(first);
            Credentials::bearer(&o.identity, token, o.mechanism)
        }
        None => {
            let password = super::read_password(
                o.password_file.as_deref(),
                &format!("Password for {}: ", o.identity),
            )?;
            Credentials::password(o.identity.as_bytes(), password.expose())
        }
    }
    .map_err(|e| anyhow::anyhow!("unusable credentials: {e}"))?;
    let connector = if o.trust_any_certificate {
        crate::tls::trust_any_connector()?
    } else {
        crate::tls::connector(o.ca.as_deref())?
    };
    let probe = Probe {
        address,
        implicit_tls: o.implicit_tls,
        server_name: o.server_name,
        connector,
        verifying: !o.trust_any_certificate,
        control_socket: config.admin.control_socket.clone(),
    };
    run(probe, creds).await
}

/// A step that did not work: what went wrong in words, and what to do about it.
struct Failed {
    reason: String,
    hint: Option<String>,
}

impl<E: std::fmt::Display> From<E> for Failed {
    fn from(e: E) -> Failed {
        Failed {
            reason: e.to_string(),
            hint: None,
        }
    }
}

fn step(name: &str, started: Instant, outcome: &str) {
    println!(
        "{name:<10} {:>9.1} ms  {outcome}",
        started.elapsed().as_secs_f64() * 1000.0
    );
}

/// Prints a failed step; the probe's exit code.
fn failed(name: &str, started: Instant, f: Failed) -> i32 {
    step(name, started, &format!("FAILED: {}", f.reason));
    if let Some(hint) = f.hint {
        println!("{:<10} {hint}", "");
    }
    1
}

/// A message's text for a person: one line, no CRLF.
fn shown(m: &Message) -> String {
    String::from_utf8_lossy(&m.raw).trim_end().to_string()
}

/// The tagged answer after `tag `.
fn answer_text(m: &Message, tag: &str) -> String {
    shown(m)
        .strip_prefix(tag)
        .map(|t| t.trim_start().to_string())
        .unwrap_or_else(|| shown(m))
}

fn is_ok(m: &Message) -> bool {
    matches!(
        m.kind,
        Kind::Tagged {
            status: StatusOf::Ok,
            ..
        }
    )
}

/// Runs the probe; returns the process exit code (0: logged in and out).
pub async fn run(probe: Probe, creds: Credentials) -> anyhow::Result<i32> {
    let user = creds.user().to_string();
    let name = ServerName::try_from(probe.server_name.clone())?;
    let started = Instant::now();
    let tcp = match tokio::time::timeout(STEP_TIMEOUT, TcpStream::connect(probe.address)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Ok(failed("connect", started, e.into())),
        Err(_) => return Ok(failed("connect", started, "no answer within 30 s".into())),
    };
    step("connect", started, &probe.address.to_string());
    let from = tcp.local_addr().map(|a| a.ip()).ok();
    let stream = if probe.implicit_tls {
        let started = Instant::now();
        match handshake(&probe, name.clone(), tcp).await {
            Ok(tls) => {
                step(
                    "tls",
                    started,
                    &verified_as(probe.verifying, &probe.server_name),
                );
                tls
            }
            Err(f) => return Ok(failed("tls", started, f)),
        }
    } else {
        Stream::Plain(tcp)
    };
    let mut conn = Client::new(stream, STEP_TIMEOUT);
    let started = Instant::now();
    let greeting = match conn.greeting().await {
        Ok(g) => g,
        Err(e) => return Ok(failed("greeting", started, e.into())),
    };
    step(
        "greeting",
        started,
        String::from_utf8_lossy(&greeting.raw).trim_end(),
    );
    let mut caps = greeting.capabilities.unwrap_or_default();
    if !probe.implicit_tls {
        let started = Instant::now();
        let line = encode::simple("t1", "STARTTLS");
        let answer = match conn.command("t1", &[line], "starttls", |_| {}).await {
            Ok(answer) => answer,
            Err(e) => return Ok(failed("starttls", started, e.into())),
        };
        if !is_ok(&answer) {
            step("starttls", started, &shown(&answer));
            return Ok(1);
        }
        let (stream, _) = conn.into_parts();
        let Stream::Plain(tcp) = stream else {
            anyhow::bail!("unexpected stream");
        };
        let tls = match handshake(&probe, name, tcp).await {
            Ok(tls) => tls,
            Err(f) => return Ok(failed("starttls", started, f)),
        };
        step(
            "starttls",
            started,
            &verified_as(probe.verifying, &probe.server_name),
        );
        conn = Client::new(tls, STEP_TIMEOUT);
        let started = Instant::now();
        match conn.capability("t2", "capability").await {
            Ok(c) => {
                step(
                    "capability",
                    started,
                    &format!("CAPABILITY {}", c.join(" ")),
                );
                caps = c;
            }
            Err(e) => return Ok(failed("capability", started, e.into())),
        }
    }
    let penalty = match (&probe.control_socket, from) {
        (Some(socket), Some(ip)) => penalty_of(socket, ip).await,
        _ => None,
    };
    if let Some(p) = &penalty {
        println!("{:<10} {:>12}  {}", "penalty", "", p.describe());
    }
    let started = Instant::now();
    let login_caps = LoginCaps::from_capabilities(caps.iter().map(String::as_str));
    let Some(fragments) = login_command("t3", &creds, login_caps) else {
        match creds.token_mechanism() {
            Some(m) => anyhow::bail!(
                "the gate does not offer AUTH={} here (is [oauth] configured, and does the default backend offer it?)",
                m.name()
            ),
            None => anyhow::bail!(
                "the gate offers no way to log in here (LOGINDISABLED without AUTH=PLAIN)"
            ),
        }
    };
    // A refused token comes as an error challenge first: the dummy response, then the NO.
    let challenge_reply: &[u8] = match creds.token_mechanism() {
        Some(TokenMechanism::OAuthBearer) => b"AQ==\r\n",
        Some(TokenMechanism::XOAuth2) => b"\r\n",
        None => b"*\r\n",
    };
    let answer = match conn
        .command_answering("t3", &fragments, "login", challenge_reply, |_| {})
        .await
    {
        Ok(answer) => answer,
        Err(e) => return Ok(failed("login", started, e.into())),
    };
    let waited = match &penalty {
        Some(p) if p.delay_ms > 0 => format!(
            " (of which {:.1} s failed-login penalty)",
            p.delay_ms as f64 / 1000.0
        ),
        _ => String::new(),
    };
    step(
        "login",
        started,
        &format!("{user}: {}{waited}", answer_text(&answer, "t3")),
    );
    if !is_ok(&answer) {
        return Ok(1);
    }
    let select = encode::select("t4", "INBOX").unwrap_or_default();
    let logout = encode::simple("t5", "LOGOUT");
    for (tag, line, name) in [("t4", select, "select"), ("t5", logout, "logout")] {
        let started = Instant::now();
        match conn.command(tag, &[line], name, |_| {}).await {
            Ok(answer) => step(name, started, &answer_text(&answer, tag)),
            Err(e) => return Ok(failed(name, started, e.into())),
        }
    }
    Ok(0)
}

fn verified_as(verifying: bool, server_name: &str) -> String {
    if verifying {
        format!("verified as {server_name}")
    } else {
        "certificate NOT verified (--trust-any-certificate)".into()
    }
}

async fn handshake(
    probe: &Probe,
    name: ServerName<'static>,
    tcp: TcpStream,
) -> Result<Stream, Failed> {
    match tokio::time::timeout(STEP_TIMEOUT, probe.connector.connect(name, tcp)).await {
        Ok(Ok(tls)) => Ok(Stream::ClientTls(Box::new(tls))),
        Ok(Err(e)) => Err(Failed {
            reason: describe_tls_error(&e, &probe.server_name),
            hint: Some(
                "to check the gate against the CA that signed its certificate, give --ca FILE; \
                 to skip the check (Test-ImapConnectivity -TrustAnySSLCertificate), give \
                 --trust-any-certificate"
                    .into(),
            ),
        }),
        Err(_) => Err(format!("no TLS handshake within {STEP_TIMEOUT:?}").into()),
    }
}

/// A TLS failure in words an operator can act on.
fn describe_tls_error(e: &std::io::Error, server_name: &str) -> String {
    use rustls::{CertificateError, Error};
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<Error>()) else {
        return format!("TLS handshake failed: {e}");
    };
    let words = match tls {
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "the gate's certificate is not signed by a CA this probe trusts".to_string()
        }
        Error::InvalidCertificate(CertificateError::Other(other))
            if other.to_string().contains("CaUsedAsEndEntity") =>
        {
            "the gate's certificate is a CA certificate used as a server certificate (as \
             `openssl req -x509` makes by default), which verification refuses"
                .to_string()
        }
        Error::InvalidCertificate(CertificateError::NotValidForName)
        | Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => {
            format!("the gate's certificate is not valid for the name {server_name:?} (see --server-name)")
        }
        Error::InvalidCertificate(CertificateError::Expired)
        | Error::InvalidCertificate(CertificateError::ExpiredContext { .. }) => {
            "the gate's certificate has expired".to_string()
        }
        other => format!("the TLS handshake failed ({other})"),
    };
    format!("{words} [{tls}]")
}

/// The penalty in words.
trait Describe {
    fn describe(&self) -> String;
}

impl Describe for PenaltyView {
    fn describe(&self) -> String {
        if self.trusted {
            format!(
                "{} is in trusted_networks: no failed-login penalty",
                self.address
            )
        } else if self.delay_ms == 0 {
            format!("none for {} (no recent failed login)", self.address)
        } else {
            format!(
                "{} has {} recent failed login(s): the gate waits {:.1} s before each login from it",
                self.address,
                self.failures,
                self.delay_ms as f64 / 1000.0
            )
        }
    }
}

async fn penalty_of(socket: &std::path::Path, ip: IpAddr) -> Option<PenaltyView> {
    super::control::request(socket, &format!("PENALTY {ip}"))
        .await
        .ok()
}
