//! A scriptable fake IMAP backend for faults and for checking exactly what the gate sends.
//!
//! Commands are framed with the gate's own literal detection (`imapgate::wire`), and the
//! credentials of LOGIN and AUTHENTICATE read with imap-codec, which the gate encodes them with.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use imap_codec::decode::Decoder;
use imap_codec::imap_types::auth::AuthenticateData;
use imap_codec::imap_types::command::CommandBody;
use imap_codec::{AuthenticateDataCodec, CommandCodec};
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

impl Script {
    /// The default script with another greeting.
    pub fn with_greeting(greeting: Greeting) -> Script {
        Script {
            greeting,
            ..Script::default()
        }
    }

    /// The default script, answering every login after `delay` (or not at all, when the gate
    /// gives up first).
    pub fn with_login_delay(delay: Duration) -> Script {
        Script {
            login_delay: delay,
            ..Script::default()
        }
    }

    /// The default script, answering every login `tag <reply>` (e.g. `NO [UNAVAILABLE] ...`).
    /// Implicit TLS with the development certificate (certs/localhost.pem).
    pub fn tls() -> Script {
        Script {
            tls: true,
            ..Script::default()
        }
    }

    pub fn with_login_reply(reply: &str) -> Script {
        Script {
            login_reply: Some(reply.into()),
            ..Script::default()
        }
    }
}

pub struct FakeBackend {
    pub addr: SocketAddr,
    /// Every complete command received, lossily decoded.
    pub commands: Arc<Mutex<Vec<String>>>,
    /// The cipher suite of each TLS connection, as rustls names it.
    pub suites: Arc<Mutex<Vec<String>>>,
}

impl FakeBackend {
    pub async fn start(script: Script) -> FakeBackend {
        FakeBackend::start_at("127.0.0.1:0".parse().expect("address"), script).await
    }

    /// A fake backend on a chosen address (a port a test kept free).
    pub async fn start_at(address: SocketAddr, script: Script) -> FakeBackend {
        let listener = TcpListener::bind(address).await.expect("bind fake");
        let addr = listener.local_addr().expect("addr");
        let commands = Arc::new(Mutex::new(Vec::new()));
        let suites = Arc::new(Mutex::new(Vec::new()));
        let log = commands.clone();
        let suite_log = suites.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let script = script.clone();
                let log = log.clone();
                let suite_log = suite_log.clone();
                tokio::spawn(async move {
                    let io: Box<dyn super::Io> = if script.tls {
                        match dev_acceptor().accept(tcp).await {
                            Ok(tls) => {
                                if let Some(suite) = tls.get_ref().1.negotiated_cipher_suite() {
                                    let name = format!("{:?}", suite.suite());
                                    suite_log.lock().expect("lock").push(name);
                                }
                                Box::new(tls)
                            }
                            Err(_) => return,
                        }
                    } else {
                        Box::new(tcp)
                    };
                    let _ = serve(io, script, log).await;
                });
            }
        });
        FakeBackend {
            addr,
            commands,
            suites,
        }
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

/// Synchronizing literals above this size are refused with `NO [TOOBIG]` (as a server refuses an
/// APPEND over its size limit): the client then sends no data.
const MAX_SYNC_LITERAL: u64 = 50_000;

type Reader = BufReader<Box<dyn super::Io>>;

/// One command read off the connection.
enum Read {
    /// The command's bytes, literals included, without the final CRLF.
    Command(Vec<u8>),
    /// A synchronizing literal over [`MAX_SYNC_LITERAL`], already answered `NO [TOOBIG]`.
    Refused,
}

/// Reads one command line by line, framed as the gate frames them: a line ending in a literal's
/// announcement (`imapgate::wire::literal_announcement`) goes on after that many bytes. Answers
/// `+` to synchronizing literals; `None` at end of stream.
async fn read_command(r: &mut Reader) -> std::io::Result<Option<Read>> {
    let mut cmd = Vec::new();
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line).await? == 0 {
            return Ok(None);
        }
        cmd.extend_from_slice(&line);
        let Some((length, non_sync)) = imapgate::wire::literal_announcement(&line) else {
            while matches!(cmd.last(), Some(b'\r' | b'\n')) {
                cmd.pop();
            }
            return Ok(Some(Read::Command(cmd)));
        };
        if !non_sync && length > MAX_SYNC_LITERAL {
            let tag = cmd.split(|&b| b == b' ').next().unwrap_or_default();
            let tag = String::from_utf8_lossy(tag);
            r.get_mut()
                .write_all(format!("{tag} NO [TOOBIG] literal too big\r\n").as_bytes())
                .await?;
            return Ok(Some(Read::Refused));
        }
        if !non_sync {
            r.get_mut().write_all(b"+ go ahead\r\n").await?;
        }
        // Taken as it arrives: a LITERAL+ length may be anything.
        if (&mut *r).take(length).read_to_end(&mut cmd).await? as u64 != length {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// What a LOGIN or AUTHENTICATE command carries, as imap-codec reads it.
enum Login {
    /// (user, password); `None` when there are none to read.
    Credentials(Option<(Vec<u8>, Vec<u8>)>),
    /// An AUTHENTICATE without an initial response: the SASL message comes after a `+`.
    AwaitsMessage,
}

/// Reads a command (its bytes as [`read_command`] returns them) with imap-codec's command codec.
fn login_of(cmd: &[u8]) -> Login {
    let wire = [cmd, b"\r\n"].concat();
    match CommandCodec::default().decode(&wire).map(|(_, c)| c.body) {
        Ok(CommandBody::Login { username, password }) => Login::Credentials(Some((
            username.as_ref().to_vec(),
            password.declassify().as_ref().to_vec(),
        ))),
        Ok(CommandBody::Authenticate {
            initial_response: Some(message),
            ..
        }) => Login::Credentials(sasl_plain(message.declassify())),
        Ok(CommandBody::Authenticate { .. }) => Login::AwaitsMessage,
        _ => Login::Credentials(None),
    }
}

/// (user, password) of a SASL PLAIN message `authzid NUL user NUL password`.
fn sasl_plain(message: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let parts: Vec<&[u8]> = message.splitn(3, |&b| b == 0).collect();
    (parts.len() == 3).then(|| (parts[1].to_vec(), parts[2].to_vec()))
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
    while let Some(read) = read_command(&mut r).await? {
        let Read::Command(cmd) = read else { continue };
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
                let creds = match login_of(&cmd) {
                    Login::Credentials(creds) => creds,
                    Login::AwaitsMessage => {
                        w.write_all(b"+ \r\n").await?;
                        let mut line = Vec::new();
                        r.read_until(b'\n', &mut line).await?;
                        log.lock()
                            .expect("lock")
                            .push(String::from_utf8_lossy(&line).trim_end().to_string());
                        match AuthenticateDataCodec::default().decode(&line) {
                            Ok((_, AuthenticateData::Continue(message))) => {
                                sasl_plain(message.declassify())
                            }
                            _ => None,
                        }
                    }
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
