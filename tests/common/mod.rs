//! Test harness: the gate started from the library on port 0, a line-level IMAP client (plain,
//! STARTTLS, implicit TLS), a scriptable fake backend, and a real Dovecot backend.
#![allow(dead_code)]

pub mod daemon;
pub mod dovecot;
pub mod fake;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use imapgate::{Gate, GateHandle};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{self, pki_types::ServerName, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn certs() -> PathBuf {
    repo().join("certs")
}

/// The development key as a private copy (0600): the checked-out file is world-readable (git
/// keeps no modes), and the gate's strict modes refuse such a key, as they should.
pub fn dev_key() -> PathBuf {
    static KEY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let key = dir.join("dev-localhost.key");
        let tmp = dir.join(format!("dev-localhost.key.{}", std::process::id()));
        std::fs::copy(certs().join("localhost.key"), &tmp).expect("copy key");
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::fs::rename(&tmp, &key).expect("rename key");
        key
    })
    .clone()
}

/// The fake backend's users as mailboxes of their own (backend login = alias): names outside
/// the directory are refused by default.
pub const FAKE_USERS: &str = r#"# The fake backend's users.
[[mailbox]]
alias = "user1"

[[mailbox]]
alias = "user2"

[[mailbox]]
alias = "user3"

[[mailbox]]
alias = "utf8"

[[mailbox]]
alias = "tricky"
"#;

/// A gate configuration under construction: `[imap4]` lines, backends and the mailboxes file.
pub struct GateConfig {
    pub imap4: Vec<String>,
    /// Extra lines of `[directory]`.
    pub directory: Vec<String>,
    pub backends: Vec<(String, String)>,
    pub mailboxes: String,
    pub extra: String,
}

impl GateConfig {
    /// One backend named `main` at `address` (plain), login over plain text allowed, dev cert.
    pub fn new(backend_address: &str) -> GateConfig {
        GateConfig {
            directory: Vec::new(),
            imap4: vec![
                "unencrypted_or_tls_bindings = [\"127.0.0.1:0\"]".into(),
                "ssl_bindings = [\"127.0.0.1:0\"]".into(),
                format!("certificate = {:?}", certs().join("localhost.pem")),
                format!("private_key = {:?}", dev_key()),
                "login_type = \"plain-text-login\"".into(),
                "shutdown_grace = \"500ms\"".into(),
                // Loopback is exempt from the failed-login penalty except where a test says so.
                "trusted_networks = [\"127.0.0.0/8\", \"::1/128\"]".into(),
            ],
            backends: vec![(
                "main".into(),
                format!("address = \"{backend_address}\"\nconnect_timeout = \"2s\"\nlogin_timeout = \"2s\""),
            )],
            mailboxes: FAKE_USERS.into(),
            extra: String::new(),
        }
    }

    pub fn imap4(mut self, line: &str) -> Self {
        let key = line.split('=').next().unwrap_or("").trim().to_string();
        self.imap4
            .retain(|l| l.split('=').next().unwrap_or("").trim() != key);
        self.imap4.push(line.into());
        self
    }

    /// A line for `[directory]`.
    pub fn extra_directory(mut self, line: &str) -> Self {
        self.directory.push(line.into());
        self
    }

    pub fn backend(mut self, name: &str, body: &str) -> Self {
        self.backends.retain(|(n, _)| n != name);
        self.backends.push((name.into(), body.into()));
        self
    }

    /// Prepends `[defaults] backend = NAME` to the mailboxes file (needed with several backends).
    pub fn extra_defaults(mut self, backend: &str) -> Self {
        self.mailboxes = format!("[defaults]\nbackend = \"{backend}\"\n\n{}", self.mailboxes);
        self
    }

    pub fn mailboxes(mut self, text: &str) -> Self {
        self.mailboxes = text.into();
        self
    }

    pub fn render(&self) -> String {
        let mut s = format!("[imap4]\n{}\n\n[directory]\nmailboxes = \"mailboxes.toml\"\ncache_ttl = \"5m\"\ncache_capacity = 1000\n{}\n\n", self.imap4.join("\n"), self.directory.join("\n"));
        for (name, body) in &self.backends {
            s.push_str(&format!("[backends.{name}]\n{body}\n\n"));
        }
        s.push_str(&self.extra);
        s
    }

    /// Writes the files and starts the gate on this test's runtime.
    pub async fn start(self) -> TestGate {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("imapgate.toml");
        std::fs::write(&config_path, self.render()).expect("write config");
        std::fs::write(dir.path().join("mailboxes.toml"), &self.mailboxes)
            .expect("write mailboxes");
        let gate = Gate::bind(&config_path).await.expect("gate starts");
        let plain = gate.plain_addrs()[0];
        let metrics = gate.metrics_addr();
        let tls = gate.tls_addrs().first().copied();
        let handle = gate.handle();
        let run = tokio::spawn(gate.run());
        TestGate {
            dir,
            config_path,
            plain,
            tls,
            metrics,
            handle,
            run: Some(run),
        }
    }
}

pub struct TestGate {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub plain: SocketAddr,
    pub tls: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
    pub handle: GateHandle,
    pub run: Option<tokio::task::JoinHandle<()>>,
}

impl TestGate {
    pub fn mailboxes_path(&self) -> PathBuf {
        self.dir.path().join("mailboxes.toml")
    }

    pub fn write_mailboxes(&self, text: &str) {
        std::fs::write(self.mailboxes_path(), text).expect("write mailboxes");
    }

    pub async fn plain(&self) -> Client {
        Client::plain(self.plain).await
    }

    /// A new plain connection, logged in as `user` (the login must succeed).
    pub async fn logged_in(&self, user: &str, pass: &str) -> Client {
        let mut c = self.plain().await;
        c.greeting().await;
        let r = c.cmd("a", &format!("LOGIN {user} {pass}")).await;
        assert!(last(&r).starts_with("a OK"), "login as {user}: {r:?}");
        c
    }

    pub async fn implicit_tls(&self) -> Client {
        Client::tls(self.tls.expect("tls listener")).await
    }

    /// Shuts the gate down and waits for `run` to return.
    pub async fn stop(mut self) {
        self.handle.shutdown();
        if let Some(run) = self.run.take() {
            tokio::time::timeout(Duration::from_secs(20), run)
                .await
                .expect("gate stops in time")
                .expect("gate task");
        }
    }
}

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A line-level IMAP client for tests.
pub struct Client {
    io: BufReader<Box<dyn Io>>,
}

pub fn dev_connector() -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for cert in
        rustls::pki_types::CertificateDer::pem_file_iter(certs().join("ca.pem")).expect("ca.pem")
    {
        roots.add(cert.expect("ca cert")).expect("add ca");
    }
    let config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

use rustls::pki_types::pem::PemObject;

impl Client {
    pub fn from_tcp(tcp: TcpStream) -> Client {
        Client {
            io: BufReader::new(Box::new(tcp)),
        }
    }

    pub async fn plain(addr: SocketAddr) -> Client {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        Client {
            io: BufReader::new(Box::new(tcp)),
        }
    }

    /// A plain connection from a chosen loopback source address (all of 127.0.0.0/8 is
    /// loopback on Linux): failed-login penalties, the gate's or a backend's, are per address.
    pub async fn plain_from(source: [u8; 4], addr: SocketAddr) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind((source, 0).into()).expect("bind source");
        Client::from_tcp(socket.connect(addr).await.expect("connect"))
    }

    /// Implicit TLS from a chosen loopback source address.
    pub async fn tls_from(source: [u8; 4], addr: SocketAddr) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind((source, 0).into()).expect("bind source");
        let tcp = socket.connect(addr).await.expect("connect");
        let tls = dev_connector()
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await
            .expect("tls handshake");
        Client {
            io: BufReader::new(Box::new(tls)),
        }
    }

    pub async fn tls(addr: SocketAddr) -> Client {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let tls = dev_connector()
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await
            .expect("tls handshake");
        Client {
            io: BufReader::new(Box::new(tls)),
        }
    }

    /// Reads one line (without CRLF); panics after 10 s.
    pub async fn line(&mut self) -> String {
        self.try_line(Duration::from_secs(10))
            .await
            .expect("a line from the gate in time")
            .expect("connection still open")
    }

    /// `Err` on timeout, `Ok(None)` on end of stream.
    pub async fn try_line(&mut self, wait: Duration) -> Result<Option<String>, ()> {
        let mut buf = Vec::new();
        match tokio::time::timeout(wait, self.io.read_until(b'\n', &mut buf)).await {
            Err(_) => Err(()),
            Ok(Err(_)) | Ok(Ok(0)) => Ok(None),
            Ok(Ok(_)) => {
                while matches!(buf.last(), Some(b'\n' | b'\r')) {
                    buf.pop();
                }
                Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
            }
        }
    }

    /// Exactly `n` bytes, for literals.
    pub async fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        tokio::time::timeout(Duration::from_secs(10), self.io.read_exact(&mut buf))
            .await
            .expect("literal in time")
            .expect("literal");
        buf
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.expect("send");
        self.io.get_mut().flush().await.expect("flush");
    }

    /// Sends `tag text` and returns every line up to and including the tagged one.
    pub async fn cmd(&mut self, tag: &str, text: &str) -> Vec<String> {
        self.send(format!("{tag} {text}\r\n").as_bytes()).await;
        self.until_tag(tag).await
    }

    pub async fn until_tag(&mut self, tag: &str) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let l = self.line().await;
            let done = l.starts_with(&format!("{tag} "));
            lines.push(l);
            if done {
                return lines;
            }
        }
    }

    /// The greeting, asserting it is an OK.
    pub async fn greeting(&mut self) -> String {
        let g = self.line().await;
        assert!(g.starts_with("* OK [CAPABILITY "), "greeting: {g}");
        g
    }

    /// STARTTLS then the TLS handshake with the development CA.
    pub async fn starttls(mut self) -> Client {
        let r = self.cmd("st", "STARTTLS").await;
        assert!(last(&r).starts_with("st OK"), "{r:?}");
        self.handshake_after_starttls().await
    }

    /// The TLS handshake, once the gate said OK to STARTTLS.
    pub async fn handshake_after_starttls(self) -> Client {
        assert!(
            self.io.buffer().is_empty(),
            "data after the STARTTLS answer"
        );
        let inner = self.io.into_inner();
        let tls = dev_connector()
            .connect(ServerName::try_from("localhost").expect("name"), inner)
            .await
            .expect("tls handshake after STARTTLS");
        Client {
            io: BufReader::new(Box::new(tls)),
        }
    }

    /// Closes the sending side only (TCP half-close); replies can still be read.
    pub async fn close_write(&mut self) {
        self.io.get_mut().shutdown().await.expect("shutdown");
    }

    /// True when the gate closed the connection (end of stream within `wait`).
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.try_line(left).await {
                Ok(None) => return true,
                Ok(Some(_)) => continue,
                Err(()) => return false,
            }
        }
    }
}

/// A port nobody listens on (bound then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

pub fn last(lines: &[String]) -> &str {
    lines.last().map(String::as_str).unwrap_or("")
}

/// One login on a new plain connection; the tagged answer.
pub async fn login(gate: &TestGate, user: &str, pass: &str) -> String {
    let mut c = gate.plain().await;
    c.greeting().await;
    let r = c.cmd("a", &format!("LOGIN \"{user}\" \"{pass}\"")).await;
    last(&r).to_string()
}
