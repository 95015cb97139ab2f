//! A scriptable fake IMAP backend for faults and for checking exactly what the gate sends.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(Clone, Debug)]
pub enum Greeting {
    /// `* OK [CAPABILITY <caps>] fake ready` (or without the code when `false`).
    Ok(bool),
    /// Accept and say nothing.
    Never,
    /// Something that is not IMAP.
    Garbage,
    /// `* BYE` and close.
    Bye,
    /// `* OK` lines every 300 ms, never a greeting that ends.
    Trickle,
}

#[derive(Clone, Debug)]
pub struct Script {
    pub greeting: Greeting,
    /// Capabilities before login.
    pub caps: String,
    /// Capabilities after login; sent in the tagged OK when `caps_in_ok`, else only on CAPABILITY.
    pub post_caps: String,
    pub caps_in_ok: bool,
    pub users: Vec<(String, String)>,
    pub login_delay: Duration,
    pub close_during_login: bool,
    /// Replaces the text after the tag of a successful login (e.g. `OK [ALERT] ...`).
    pub login_ok: Option<String>,
    /// Replaces the whole answer to any login (e.g. `NO [UNAVAILABLE] ...`).
    pub login_reply: Option<String>,
    /// Untagged lines sent before the tagged answer to a login.
    pub login_untagged: Vec<String>,
    /// Implicit TLS with the development `localhost` certificate.
    pub tls: bool,
    /// Raw bytes sent right behind a successful login's tagged OK.
    pub after_login: Vec<u8>,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            greeting: Greeting::Ok(true),
            caps: "IMAP4rev1 SASL-IR AUTH=PLAIN ID LITERAL+".into(),
            post_caps: "IMAP4rev1 IDLE COMPRESS=DEFLATE X-FAKE-POSTLOGIN".into(),
            caps_in_ok: true,
            users: vec![
                ("user1".into(), "pass1".into()),
                ("user2".into(), "pass2".into()),
                ("user3".into(), "pass3".into()),
                ("utf8".into(), "pässwörd✓".into()),
                ("tricky".into(), "p\"a\\ss {3}".into()),
            ],
            login_delay: Duration::ZERO,
            close_during_login: false,
            login_ok: None,
            login_reply: None,
            login_untagged: Vec::new(),
            tls: false,
            after_login: Vec::new(),
        }
    }
}

pub struct FakeBackend {
    pub addr: SocketAddr,
    /// Every complete command received, lossily decoded.
    pub commands: Arc<Mutex<Vec<String>>>,
}

impl FakeBackend {
    pub async fn start(script: Script) -> FakeBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake");
        let addr = listener.local_addr().expect("addr");
        let commands = Arc::new(Mutex::new(Vec::new()));
        let log = commands.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let script = script.clone();
                let log = log.clone();
                tokio::spawn(async move {
                    let io: Box<dyn super::Io> = if script.tls {
                        match dev_acceptor().accept(tcp).await {
                            Ok(tls) => Box::new(tls),
                            Err(_) => return,
                        }
                    } else {
                        Box::new(tcp)
                    };
                    let _ = serve(io, script, log).await;
                });
            }
        });
        FakeBackend { addr, commands }
    }

    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    pub fn commands(&self) -> Vec<String> {
        self.commands.lock().expect("lock").clone()
    }

    /// Received commands whose name (second word) is `name`.
    pub fn named(&self, name: &str) -> Vec<String> {
        self.commands()
            .into_iter()
            .filter(|c| {
                c.split(' ')
                    .nth(1)
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            })
            .collect()
    }
}

fn dev_acceptor() -> tokio_rustls::TlsAcceptor {
    use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let certs = super::certs();
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(certs.join("localhost.pem"))
            .expect("cert")
            .collect::<Result<_, _>>()
            .expect("cert");
    let key = PrivateKeyDer::from_pem_file(certs.join("localhost.key")).expect("key");
    let config = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config))
}

/// What `read_command` returns for a command it already refused.
const REFUSED: &[u8] = b"\0refused";

type Reader = BufReader<Box<dyn super::Io>>;

/// Reads one command, answering `+` to synchronizing literals; returns the raw bytes (CRLF cut).
async fn read_command(r: &mut Reader) -> std::io::Result<Option<Vec<u8>>> {
    let mut cmd = Vec::new();
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line).await? == 0 {
            return Ok(None);
        }
        cmd.extend_from_slice(&line);
        let trimmed = line.strip_suffix(b"\r\n").unwrap_or(&line);
        if let Some(open) = trimmed.iter().rposition(|&b| b == b'{') {
            if trimmed.ends_with(b"}") {
                let inner = &trimmed[open + 1..trimmed.len() - 1];
                let (digits, plus) = match inner.strip_suffix(b"+") {
                    Some(d) => (d, true),
                    None => (inner, false),
                };
                if let Some(n) = std::str::from_utf8(digits)
                    .ok()
                    .and_then(|d| d.parse::<usize>().ok())
                {
                    if !plus && n > 50_000 {
                        // Refuse big synchronizing literals: the client sends no data then.
                        let tag = String::from_utf8_lossy(
                            cmd.split(|&b| b == b' ').next().unwrap_or_default(),
                        )
                        .into_owned();
                        r.get_mut()
                            .write_all(format!("{tag} NO [TOOBIG] literal too big\r\n").as_bytes())
                            .await?;
                        return Ok(Some(REFUSED.to_vec()));
                    }
                    if !plus {
                        r.get_mut().write_all(b"+ go ahead\r\n").await?;
                    }
                    let mut data = vec![0; n];
                    r.read_exact(&mut data).await?;
                    cmd.extend_from_slice(&data);
                    continue;
                }
            }
        }
        while matches!(cmd.last(), Some(b'\r' | b'\n')) {
            cmd.pop();
        }
        return Ok(Some(cmd));
    }
}

/// Parses one IMAP astring at the start of `s`: atom, quoted (with escapes) or literal.
fn astring(s: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    match s.first()? {
        b'"' => {
            let mut out = Vec::new();
            let mut i = 1;
            while i < s.len() {
                match s[i] {
                    b'\\' => {
                        out.push(*s.get(i + 1)?);
                        i += 2;
                    }
                    b'"' => return Some((out, &s[i + 1..])),
                    b => {
                        out.push(b);
                        i += 1;
                    }
                }
            }
            None
        }
        b'{' => {
            let close = s.iter().position(|&b| b == b'}')?;
            let digits = s[1..close].strip_suffix(b"+").unwrap_or(&s[1..close]);
            let n: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
            let start = close + 3; // "}\r\n"
            Some((s.get(start..start + n)?.to_vec(), &s[start + n..]))
        }
        _ => {
            let end = s.iter().position(|&b| b == b' ').unwrap_or(s.len());
            Some((s[..end].to_vec(), &s[end..]))
        }
    }
}

async fn serve(
    io: Box<dyn super::Io>,
    script: Script,
    log: Arc<Mutex<Vec<String>>>,
) -> std::io::Result<()> {
    let mut r = BufReader::new(io);
    match &script.greeting {
        Greeting::Ok(true) => {
            let g = format!("* OK [CAPABILITY {}] fake ready\r\n", script.caps);
            r.get_mut().write_all(g.as_bytes()).await?
        }
        Greeting::Ok(false) => r.get_mut().write_all(b"* OK fake ready\r\n").await?,
        Greeting::Never => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return Ok(());
        }
        Greeting::Garbage => {
            r.get_mut()
                .write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                .await?;
            return Ok(());
        }
        Greeting::Bye => {
            r.get_mut()
                .write_all(b"* BYE [UNAVAILABLE] overloaded\r\n")
                .await?;
            return Ok(());
        }
        Greeting::Trickle => loop {
            r.get_mut().write_all(b"* OK still thinking\r\n").await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
        },
    }
    let mut user: Option<String> = None;
    while let Some(cmd) = read_command(&mut r).await? {
        if cmd == REFUSED {
            continue;
        }
        log.lock()
            .expect("lock")
            .push(String::from_utf8_lossy(&cmd).into_owned());
        let mut words = cmd.splitn(3, |&b| b == b' ');
        let tag = String::from_utf8_lossy(words.next().unwrap_or_default()).into_owned();
        let name = String::from_utf8_lossy(words.next().unwrap_or_default()).to_ascii_uppercase();
        let args = words.next().unwrap_or_default().to_vec();
        let w = r.get_mut();
        match name.as_str() {
            "CAPABILITY" => {
                let caps = if user.is_some() {
                    &script.post_caps
                } else {
                    &script.caps
                };
                w.write_all(format!("* CAPABILITY {caps}\r\n{tag} OK done\r\n").as_bytes())
                    .await?;
            }
            "ID" => {
                w.write_all(format!("* ID NIL\r\n{tag} OK ID done\r\n").as_bytes())
                    .await?
            }
            "LOGIN" | "AUTHENTICATE" => {
                let creds = if name == "LOGIN" {
                    astring(&args).and_then(|(u, rest)| {
                        let (p, _) = astring(rest.strip_prefix(b" ")?)?;
                        Some((u, p))
                    })
                } else {
                    let ir = match args.strip_prefix(b"PLAIN ") {
                        Some(ir) => ir.to_vec(),
                        None => {
                            w.write_all(b"+ \r\n").await?;
                            let mut line = Vec::new();
                            r.read_until(b'\n', &mut line).await?;
                            log.lock()
                                .expect("lock")
                                .push(String::from_utf8_lossy(&line).trim_end().to_string());
                            line.truncate(line.len().saturating_sub(2));
                            line
                        }
                    };
                    base64::engine::general_purpose::STANDARD
                        .decode(ir)
                        .ok()
                        .and_then(|m| {
                            let parts: Vec<&[u8]> = m.splitn(3, |&b| b == 0).collect();
                            (parts.len() == 3).then(|| (parts[1].to_vec(), parts[2].to_vec()))
                        })
                };
                let w = r.get_mut();
                tokio::time::sleep(script.login_delay).await;
                if script.close_during_login {
                    return Ok(());
                }
                let ok = creds.as_ref().is_some_and(|(u, p)| {
                    script
                        .users
                        .iter()
                        .any(|(su, sp)| su.as_bytes() == u && sp.as_bytes() == p)
                });
                for line in &script.login_untagged {
                    w.write_all(format!("{line}\r\n").as_bytes()).await?;
                }
                if let Some(reply) = &script.login_reply {
                    w.write_all(format!("{tag} {reply}\r\n").as_bytes()).await?;
                } else if let (true, Some(text)) = (ok, &script.login_ok) {
                    user = creds.map(|(u, _)| String::from_utf8_lossy(&u).into_owned());
                    w.write_all(format!("{tag} {text}\r\n").as_bytes()).await?;
                } else if ok {
                    user = creds.map(|(u, _)| String::from_utf8_lossy(&u).into_owned());
                    let text = if script.caps_in_ok {
                        format!("{tag} OK [CAPABILITY {}] Logged in\r\n", script.post_caps)
                    } else {
                        format!("{tag} OK Logged in\r\n")
                    };
                    w.write_all(text.as_bytes()).await?;
                    w.write_all(&script.after_login).await?;
                } else {
                    w.write_all(
                        format!("{tag} NO [AUTHENTICATIONFAILED] Authentication failed.\r\n")
                            .as_bytes(),
                    )
                    .await?;
                }
            }
            "LOGOUT" => {
                w.write_all(format!("* BYE bye\r\n{tag} OK LOGOUT done\r\n").as_bytes())
                    .await?;
                return Ok(());
            }
            "IDLE" => {
                w.write_all(b"+ idling\r\n").await?;
                let mut line = Vec::new();
                r.read_until(b'\n', &mut line).await?;
                r.get_mut()
                    .write_all(format!("{tag} OK IDLE terminated\r\n").as_bytes())
                    .await?;
            }
            // XBIG n: one FETCH literal of n bytes; XDIE n: half of it, then the connection drops;
            // XHALF n: half of it, then nothing more (the connection stays open).
            "XBIG" | "XDIE" | "XHALF" => {
                let n: usize = String::from_utf8_lossy(&args).trim().parse().unwrap_or(0);
                w.write_all(format!("* 1 FETCH (BODY[] {{{n}}}\r\n").as_bytes())
                    .await?;
                let body: Vec<u8> = (0..n)
                    .map(|i| b"abcdefghijklmnopqrstuvwxyz\r\n"[i % 28])
                    .collect();
                if name == "XDIE" || name == "XHALF" {
                    w.write_all(&body[..n / 2]).await?;
                    w.flush().await?;
                    if name == "XHALF" {
                        let mut sink = Vec::new();
                        let _ = r.read_to_end(&mut sink).await;
                    }
                    return Ok(());
                }
                w.write_all(&body).await?;
                w.write_all(format!(")\r\n{tag} OK FETCH done\r\n").as_bytes())
                    .await?;
            }
            _ => {
                w.write_all(format!("{tag} OK {name} done\r\n").as_bytes())
                    .await?
            }
        }
    }
    Ok(())
}
