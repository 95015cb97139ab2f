//! `imapgate test-login`: a real login through the gate, step by step with latencies, like
//! Exchange's `Test-ImapConnectivity`. The password comes from a file or a prompt, never from the
//! command line (where `ps` would show it).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;

use crate::backend::encode::{login_command, LoginCaps};
use crate::credentials::Credentials;
use crate::stream::Stream;

const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and how to connect.
pub struct Probe {
    pub address: SocketAddr,
    /// Implicit TLS (the imaps listener) instead of STARTTLS.
    pub implicit_tls: bool,
    pub server_name: String,
    pub connector: tokio_rustls::TlsConnector,
}

struct Conn {
    io: BufReader<Stream>,
}

impl Conn {
    async fn line(&mut self) -> anyhow::Result<String> {
        let mut buf = Vec::new();
        let n = tokio::time::timeout(
            STEP_TIMEOUT,
            (&mut self.io).take(64 * 1024).read_until(b'\n', &mut buf),
        )
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {STEP_TIMEOUT:?}"))??;
        if n == 0 {
            anyhow::bail!("the gate closed the connection");
        }
        Ok(String::from_utf8_lossy(&buf).trim_end().to_string())
    }

    /// Sends the fragments (waiting for `+` between them); returns the untagged lines and the
    /// tagged answer.
    async fn command(
        &mut self,
        tag: &str,
        fragments: &[Vec<u8>],
    ) -> anyhow::Result<(Vec<String>, String)> {
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
        anyhow::bail!("no tagged answer")
    }
}

fn step(name: &str, started: Instant, outcome: &str) {
    println!(
        "{name:<10} {:>9.1} ms  {outcome}",
        started.elapsed().as_secs_f64() * 1000.0
    );
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
    let tcp = tokio::time::timeout(STEP_TIMEOUT, TcpStream::connect(probe.address)).await??;
    step("connect", started, &probe.address.to_string());
    let stream = if probe.implicit_tls {
        let started = Instant::now();
        let tls = probe.connector.connect(name.clone(), tcp).await?;
        step(
            "tls",
            started,
            &format!("verified as {}", probe.server_name),
        );
        Stream::ClientTls(Box::new(tls))
    } else {
        Stream::Plain(tcp)
    };
    let mut conn = Conn {
        io: BufReader::new(stream),
    };
    let started = Instant::now();
    let mut greeting = conn.line().await?;
    step("greeting", started, &greeting);
    if !probe.implicit_tls {
        let started = Instant::now();
        let (_, answer) = conn.command("t1", &[b"t1 STARTTLS\r\n".to_vec()]).await?;
        if !answer.starts_with("t1 OK") {
            step("starttls", started, &answer);
            return Ok(1);
        }
        let Stream::Plain(tcp) = conn.io.into_inner() else {
            anyhow::bail!("unexpected stream");
        };
        let tls = probe.connector.connect(name, tcp).await?;
        step(
            "starttls",
            started,
            &format!("verified as {}", probe.server_name),
        );
        conn = Conn {
            io: BufReader::new(Stream::ClientTls(Box::new(tls))),
        };
        let started = Instant::now();
        let (untagged, _) = conn.command("t2", &[b"t2 CAPABILITY\r\n".to_vec()]).await?;
        greeting = untagged
            .into_iter()
            .find(|l| l.starts_with("* CAPABILITY "))
            .unwrap_or_default();
        step("capability", started, greeting.trim_start_matches("* "));
    }
    let started = Instant::now();
    let Some(fragments) = login_command("t3", &creds, capabilities(&greeting)) else {
        anyhow::bail!("the gate offers no way to log in here (LOGINDISABLED without AUTH=PLAIN)");
    };
    let (_, answer) = conn.command("t3", &fragments).await?;
    let refused = !answer.starts_with("t3 OK");
    step(
        "login",
        started,
        &format!("{user}: {}", answer.trim_start_matches("t3 ")),
    );
    if refused {
        return Ok(1);
    }
    let started = Instant::now();
    let (_, answer) = conn
        .command("t4", &[b"t4 SELECT INBOX\r\n".to_vec()])
        .await?;
    step("select", started, answer.trim_start_matches("t4 "));
    let started = Instant::now();
    let (_, answer) = conn.command("t5", &[b"t5 LOGOUT\r\n".to_vec()]).await?;
    step("logout", started, answer.trim_start_matches("t5 "));
    Ok(0)
}

/// A client TLS configuration trusting `ca` (or the system roots).
pub fn connector(ca: Option<&std::path::Path>) -> anyhow::Result<tokio_rustls::TlsConnector> {
    Ok(crate::tls::connector(ca)?)
}
