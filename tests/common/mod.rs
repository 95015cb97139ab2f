//! Test harness: the gate started from the library on port 0, a line-level IMAP client (plain,
//! STARTTLS, implicit TLS), a scriptable fake backend, and a real Dovecot backend.
#![allow(dead_code)]

pub mod daemon;
pub mod dovecot;
pub mod fake;
pub mod fixtures;
pub mod https;
pub mod oauth;
pub mod redis;
pub mod slapd;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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

/// A gate configuration under construction: `[imap4]` lines, backends and the mailboxes file.
pub struct GateConfig {
    /// The address of the backend `main`.
    pub backend_address: String,
    pub imap4: Vec<String>,
    /// Extra lines of `[directory]`.
    pub directory: Vec<String>,
    pub backends: Vec<(String, String)>,
    pub mailboxes: String,
    /// Another gate's mailboxes file to read instead of writing one (gates of one fleet).
    pub mailboxes_file: Option<PathBuf>,
    /// Sections after the backends (`[admin]`, `[metrics]`, ...).
    pub extra: String,
}

impl GateConfig {
    /// One backend named `main` at `address` (plain), login over plain text allowed, dev cert,
    /// the fake backend's users as the directory ([`fixtures::FAKE_USERS`]).
    pub fn new(backend_address: &str) -> GateConfig {
        GateConfig {
            backend_address: backend_address.into(),
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
            mailboxes: fixtures::FAKE_USERS.into(),
            mailboxes_file: None,
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

    /// The backend `main` at the same address with other settings (`connect_timeout = ...`)
    /// in place of the default timeouts.
    pub fn main_backend(self, settings: &str) -> Self {
        let body = format!("address = \"{}\"\n{settings}", self.backend_address);
        self.backend("main", &body)
    }

    /// A section of its own after the backends, e.g. `"[metrics]\nlisten = ...\n"`.
    pub fn section(mut self, text: &str) -> Self {
        self.extra.push_str(text);
        self
    }

    /// The admin center on a port of its own (`[admin_web] listen = "127.0.0.1:0"`, the
    /// administrators in `admins.toml`), with the control socket and the audit log `audit.log`
    /// beside the configuration file.
    pub fn admin_center(self) -> Self {
        self.section(
            "[admin]\ncontrol_socket = \"control.sock\"\naudit_log = \"audit.log\"\n\n\
             [admin_web]\nlisten = \"127.0.0.1:0\"\n",
        )
    }

    /// `[admin] control_socket`: `control.sock` beside the configuration file.
    pub fn control_socket(self) -> Self {
        self.section("[admin]\ncontrol_socket = \"control.sock\"\n")
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

    /// Reads this mailboxes file (another gate's) instead of a file of its own.
    pub fn shared_mailboxes(mut self, path: &Path) -> Self {
        self.mailboxes_file = Some(path.to_path_buf());
        self
    }

    pub fn render(&self) -> String {
        let mailboxes = self
            .mailboxes_file
            .clone()
            .unwrap_or_else(|| PathBuf::from("mailboxes.toml"));
        let mut s = format!("[imap4]\n{}\n\n[directory]\nmailboxes = {mailboxes:?}\ncache_ttl = \"5m\"\ncache_capacity = 1000\n{}\n\n", self.imap4.join("\n"), self.directory.join("\n"));
        for (name, body) in &self.backends {
            s.push_str(&format!("[backends.{name}]\n{body}\n\n"));
        }
        s.push_str(&self.extra);
        s
    }

    /// Writes `imapgate.toml` and its `mailboxes.toml` into `dir`; the configuration's path.
    pub fn write_to(&self, dir: &Path) -> PathBuf {
        let config_path = dir.join("imapgate.toml");
        std::fs::write(&config_path, self.render()).expect("write config");
        std::fs::write(dir.join("mailboxes.toml"), &self.mailboxes).expect("write mailboxes");
        config_path
    }

    /// The files in a new directory, for the `imapgate` binary: (directory, configuration path).
    pub fn write(&self) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = self.write_to(dir.path());
        (dir, config_path)
    }

    /// Writes the files and starts the gate on this test's runtime.
    pub async fn start(self) -> TestGate {
        let (dir, config_path) = self.write();
        let gate = Gate::bind(&config_path).await.expect("gate starts");
        let plain = gate.plain_addrs()[0];
        let metrics = gate.metrics_addr();
        let tls = gate.tls_addrs().first().copied();
        let admin_web = gate.admin_web_addr();
        let handle = gate.handle();
        let run = tokio::spawn(gate.run());
        TestGate {
            dir,
            config_path,
            plain,
            tls,
            metrics,
            admin_web,
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
    /// The admin center, when configured ([`GateConfig::admin_center`]).
    pub admin_web: Option<SocketAddr>,
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

    /// A new plain connection, its greeting read (an OK).
    pub async fn greeted(&self) -> Client {
        let mut c = self.plain().await;
        c.greeting().await;
        c
    }

    /// A new implicit-TLS connection, its greeting read (an OK).
    pub async fn greeted_tls(&self) -> Client {
        let mut c = self.implicit_tls().await;
        c.greeting().await;
        c
    }

    /// A new plain connection, logged in as `user` (the login must succeed).
    pub async fn logged_in(&self, user: &str, pass: &str) -> Client {
        let mut c = self.greeted().await;
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
    let config = ClientConfig::builder()
        .with_root_certificates(dev_roots())
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// The development CA (certs/ca.pem) as the only trust anchor.
pub fn dev_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for cert in
        rustls::pki_types::CertificateDer::pem_file_iter(certs().join("ca.pem")).expect("ca.pem")
    {
        roots.add(cert.expect("ca cert")).expect("add ca");
    }
    roots
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
        Client::tls_over(
            socket.connect(addr).await.expect("connect"),
            "tls handshake",
        )
        .await
    }

    pub async fn tls(addr: SocketAddr) -> Client {
        Client::tls_over(
            TcpStream::connect(addr).await.expect("connect"),
            "tls handshake",
        )
        .await
    }

    /// The TLS handshake for `localhost` with the development CA over a connected stream.
    pub async fn tls_over(io: impl Io + 'static, what: &str) -> Client {
        let tls = dev_connector()
            .connect(ServerName::try_from("localhost").expect("name"), io)
            .await
            .expect(what);
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
        Client::tls_over(self.io.into_inner(), "tls handshake after STARTTLS").await
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

/// Runs `openssl ARGS`; panics with what it said when it fails.
pub fn openssl(args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A new P-256 key at `key` and a certificate for `subject` (`/CN=...`) at `cert`, signed by
/// that key (`openssl req -x509`, which makes it a CA certificate), with `extra` arguments.
pub fn self_signed(cert: &Path, key: &Path, subject: &str, extra: &[&str]) {
    let (cert, key) = (cert.to_str().expect("path"), key.to_str().expect("path"));
    let args = [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "2",
        "-subj",
        subject,
        "-keyout",
        key,
        "-out",
        cert,
    ];
    openssl(&[&args[..], extra].concat());
}

/// A port nobody listens on (bound then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

pub fn last(lines: &[String]) -> &str {
    lines.last().map(String::as_str).unwrap_or("")
}

/// One login (`LOGIN user pass`, as written) on a new plain connection to a daemon's `port` on
/// 127.0.0.1: the client and the tagged answer.
pub async fn login_at(port: u16, user: &str, pass: &str) -> (Client, String) {
    let mut c = Client::plain(([127, 0, 0, 1], port).into()).await;
    c.greeting().await;
    let r = c.cmd("a", &format!("LOGIN {user} {pass}")).await;
    let reply = last(&r).to_string();
    (c, reply)
}

/// One login on a new plain connection; the tagged answer.
pub async fn login(gate: &TestGate, user: &str, pass: &str) -> String {
    let mut c = gate.greeted().await;
    let r = c.cmd("a", &format!("LOGIN \"{user}\" \"{pass}\"")).await;
    last(&r).to_string()
}

/// The metrics endpoint's page (`GET /metrics`), headers included; it must answer 200.
pub async fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut body = String::new();
    s.read_to_string(&mut body).await.expect("read");
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    body
}

/// True when every one of `commands` is installed. Outside CI a missing one skips the test (it
/// says so, and `packages` to install); in CI (`CI` set) it fails the test.
pub fn installed(commands: &[&str], packages: &str) -> bool {
    let missing: Vec<&str> = commands
        .iter()
        .copied()
        .filter(|c| {
            !std::process::Command::new("sh")
                .args(["-c", &format!("command -v {c}")])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{missing:?} required in CI (apt-get install {packages})"
    );
    eprintln!("SKIP: {missing:?} not installed; run scripts/test.sh to install {packages}");
    false
}
