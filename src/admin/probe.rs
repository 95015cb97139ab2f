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
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{self, pki_types::ServerName};

use crate::backend::encode::{login_command, LoginCaps};
use crate::config::Config;
use crate::credentials::Credentials;
use crate::stream::Stream;

const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// What the operator asked for.
pub struct Options {
    pub identity: String,
    pub password_file: Option<PathBuf>,
    pub implicit_tls: bool,
    pub address: Option<SocketAddr>,
    pub server_name: String,
    pub ca: Option<PathBuf>,
    pub trust_any_certificate: bool,
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
    let password = match &o.password_file {
        Some(path) => {
            let text = std::fs::read(path).with_context(|| format!("{}", path.display()))?;
            let first = text.split(|&b| b == b'\n').next().unwrap_or_default();
            first.strip_suffix(b"\r").unwrap_or(first).to_vec()
        }
        None => rpassword::prompt_password(format!("Password for {}: ", o.identity))?.into_bytes(),
    };
    let connector = if o.trust_any_certificate {
        trust_any_connector()?
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
    run(probe, &o.identity, &password).await
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

struct Conn {
    io: BufReader<Stream>,
}

impl Conn {
    async fn line(&mut self) -> Result<String, Failed> {
        let mut buf = Vec::new();
        let n = tokio::time::timeout(
            STEP_TIMEOUT,
            (&mut self.io).take(64 * 1024).read_until(b'\n', &mut buf),
        )
        .await
        .map_err(|_| format!("no answer within {STEP_TIMEOUT:?}"))??;
        if n == 0 {
            return Err("the gate closed the connection".into());
        }
        Ok(String::from_utf8_lossy(&buf).trim_end().to_string())
    }

    /// Sends the fragments (waiting for `+` between them); returns the untagged lines and the
    /// tagged answer.
    async fn command(
        &mut self,
        tag: &str,
        fragments: &[Vec<u8>],
    ) -> Result<(Vec<String>, String), Failed> {
        let mut untagged = Vec::new();
        for (i, f) in fragments.iter().enumerate() {
            self.io.get_mut().write_all(f).await?;
            self.io.get_mut().flush().await?;
            loop {
                let line = self.line().await?;
                if line.starts_with(&format!("{tag} ")) {
                    return Ok((untagged, line));
                }
                if line.starts_with('+') && i + 1 < fragments.len() {
                    break;
                }
                untagged.push(line);
            }
        }
        Err("no tagged answer".into())
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

fn capabilities(line: &str) -> LoginCaps {
    let start = line
        .find("CAPABILITY ")
        .map(|i| i + 11)
        .unwrap_or(line.len());
    let end = line[start..]
        .find(']')
        .map(|e| start + e)
        .unwrap_or(line.len());
    LoginCaps::from_capabilities(line[start..end].split(' '))
}

/// Runs the probe; returns the process exit code (0: logged in and out).
pub async fn run(probe: Probe, user: &str, password: &[u8]) -> anyhow::Result<i32> {
    let creds = Credentials::new(user.as_bytes(), password)
        .map_err(|e| anyhow::anyhow!("unusable credentials: {e}"))?;
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
    let mut conn = Conn {
        io: BufReader::new(stream),
    };
    let started = Instant::now();
    let mut greeting = match conn.line().await {
        Ok(g) => g,
        Err(f) => return Ok(failed("greeting", started, f)),
    };
    step("greeting", started, &greeting);
    if !probe.implicit_tls {
        let started = Instant::now();
        let answer = match conn.command("t1", &[b"t1 STARTTLS\r\n".to_vec()]).await {
            Ok((_, answer)) => answer,
            Err(f) => return Ok(failed("starttls", started, f)),
        };
        if !answer.starts_with("t1 OK") {
            step("starttls", started, &answer);
            return Ok(1);
        }
        let Stream::Plain(tcp) = conn.io.into_inner() else {
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
        conn = Conn {
            io: BufReader::new(tls),
        };
        let started = Instant::now();
        match conn.command("t2", &[b"t2 CAPABILITY\r\n".to_vec()]).await {
            Ok((untagged, _)) => {
                greeting = untagged
                    .into_iter()
                    .find(|l| l.starts_with("* CAPABILITY "))
                    .unwrap_or_default();
                step("capability", started, greeting.trim_start_matches("* "));
            }
            Err(f) => return Ok(failed("capability", started, f)),
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
    let Some(fragments) = login_command("t3", &creds, capabilities(&greeting)) else {
        anyhow::bail!("the gate offers no way to log in here (LOGINDISABLED without AUTH=PLAIN)");
    };
    let answer = match conn.command("t3", &fragments).await {
        Ok((_, answer)) => answer,
        Err(f) => return Ok(failed("login", started, f)),
    };
    let refused = !answer.starts_with("t3 OK");
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
        &format!("{user}: {}{waited}", answer.trim_start_matches("t3 ")),
    );
    if refused {
        return Ok(1);
    }
    for (tag, command, name) in [("t4", "SELECT INBOX", "select"), ("t5", "LOGOUT", "logout")] {
        let started = Instant::now();
        match conn
            .command(tag, &[format!("{tag} {command}\r\n").into_bytes()])
            .await
        {
            Ok((_, answer)) => step(name, started, answer.trim_start_matches(tag).trim_start()),
            Err(f) => return Ok(failed(name, started, f)),
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

use crate::server::PenaltyView;

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

/// A connector that accepts any certificate (the handshake's signatures are still checked).
fn trust_any_connector() -> anyhow::Result<tokio_rustls::TlsConnector> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
