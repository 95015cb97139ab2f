//! imapgate's load generator: `login`, `noop`, `fetch` and `idle` loads against any IMAP server
//! (direct, imapgate, nginx, Dovecot's proxy), plain, STARTTLS or implicit TLS. Prints one line of
//! figures per run. A benchmark tool, not a test: see bench/compare.sh and bench/RESULTS.md.
//!
//! cargo run --release --example loadgen -- --addr 127.0.0.1:10143 --mode noop --sessions 16 --seconds 5

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use futures_util::FutureExt;
use imapgate::stream::Stream;
use imapgate::wire::literal_announced;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum Mode {
    Login,
    Noop,
    Fetch,
    Idle,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum Security {
    Plain,
    Starttls,
    Tls,
}

#[derive(Parser, Clone)]
struct Args {
    #[arg(long)]
    addr: SocketAddr,
    #[arg(long, value_enum)]
    mode: Mode,
    #[arg(long, value_enum, default_value = "plain")]
    security: Security,
    /// CA to verify the server with (TLS and STARTTLS).
    #[arg(long)]
    ca: Option<std::path::PathBuf>,
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Concurrent sessions (login, noop, idle).
    #[arg(long, default_value_t = 16)]
    sessions: usize,
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Users are `{user_prefix}{i}` with password `{pass_prefix}{i}`, i in 1..=users.
    #[arg(long, default_value = "user")]
    user_prefix: String,
    #[arg(long, default_value = "pass")]
    pass_prefix: String,
    #[arg(long, default_value_t = 1)]
    users: usize,
    /// First user number (the fetch load uses this one: it has the big mailbox).
    #[arg(long, default_value_t = 1)]
    first_user: usize,
    /// Processes whose RSS is measured around the idle hold (the proxy's).
    #[arg(long)]
    pids: Vec<u32>,
    /// Start each connection with a PROXY protocol v2 header (as HAProxy's send-proxy-v2),
    /// naming a client address of 198.51.100.0/24.
    #[arg(long)]
    proxy_v2: bool,
    /// Idle load: every session connects and logs in at once (a reconnect storm after a restart
    /// or a failover) instead of one after another.
    #[arg(long)]
    storm: bool,
    /// Offer TLS 1.2 only (nginx 1.22, Debian 12's, speaks 1.2 by default): compares proxies on the
    /// same protocol version, since a resumed TLS 1.3 handshake costs the client a key exchange.
    #[arg(long)]
    tls12: bool,
    /// Label printed with the figures.
    #[arg(long, default_value = "")]
    label: String,
}

struct Conn {
    io: BufReader<Stream>,
    /// Reused line buffer and literal sink: the load generator must stay cheap next to what it
    /// measures (it shares the cores with the proxy and the backend).
    line: Vec<u8>,
    sink: Vec<u8>,
}

impl Conn {
    async fn open(args: &Args, tls: &Option<TlsConnector>) -> anyhow::Result<Conn> {
        let mut tcp = TcpStream::connect(args.addr).await?;
        tcp.set_nodelay(true)?;
        if args.proxy_v2 {
            use tokio::io::AsyncWriteExt;
            let local = tcp.local_addr()?;
            let client: std::net::SocketAddr =
                ([198, 51, 100, local.port() as u8], local.port()).into();
            let header = ppp::v2::Builder::with_addresses(
                ppp::v2::Version::Two | ppp::v2::Command::Proxy,
                ppp::v2::Protocol::Stream,
                (client, args.addr),
            )
            .build()?;
            tcp.write_all(&header).await?;
        }
        let name = ServerName::try_from(args.server_name.clone())?;
        let stream = match (args.security, tls) {
            (Security::Tls, Some(c)) => {
                Stream::ClientTls(Box::new(c.connect(name.clone(), tcp).await?))
            }
            _ => Stream::Plain(tcp),
        };
        let mut conn = Conn {
            io: BufReader::with_capacity(256 * 1024, stream),
            line: Vec::new(),
            sink: Vec::new(),
        };
        let greeting = conn.line().await?;
        anyhow::ensure!(greeting.starts_with("* OK"), "greeting: {greeting}");
        if let (Security::Starttls, Some(c)) = (args.security, tls) {
            conn.command("s", "STARTTLS").await?;
            let Stream::Plain(tcp) = conn.io.into_inner() else {
                anyhow::bail!("stream")
            };
            let tls = c.connect(name, tcp).await?;
            conn = Conn {
                io: BufReader::with_capacity(256 * 1024, Stream::ClientTls(Box::new(tls))),
                line: Vec::new(),
                sink: Vec::new(),
            };
        }
        Ok(conn)
    }

    async fn line(&mut self) -> anyhow::Result<String> {
        self.read_line().await?;
        Ok(String::from_utf8_lossy(&self.line).trim_end().to_string())
    }

    /// Reads one line into `self.line`.
    async fn read_line(&mut self) -> anyhow::Result<()> {
        self.line.clear();
        let n = self.io.read_until(b'\n', &mut self.line).await?;
        anyhow::ensure!(n > 0, "closed");
        Ok(())
    }

    async fn send(&mut self, text: &str) -> anyhow::Result<()> {
        self.send_bytes(text.as_bytes()).await
    }

    async fn send_bytes(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.io.get_mut().write_all(bytes).await?;
        self.io.get_mut().flush().await?;
        Ok(())
    }

    /// Sends `tag text` and reads to the tagged answer, skipping literals; returns literal bytes.
    async fn command(&mut self, tag: &str, text: &str) -> anyhow::Result<u64> {
        self.send(&format!("{tag} {text}\r\n")).await?;
        self.until(tag).await
    }

    /// Reads to the response tagged `tag`, skipping literals; returns the literal bytes read.
    async fn until(&mut self, tag: &str) -> anyhow::Result<u64> {
        let mut literal_bytes = 0u64;
        loop {
            self.read_line().await?;
            let line = &self.line;
            if line.len() > tag.len() && line.starts_with(tag.as_bytes()) && line[tag.len()] == b' '
            {
                let rest = &line[tag.len() + 1..];
                anyhow::ensure!(rest.starts_with(b"OK"), "{}", String::from_utf8_lossy(line));
                return Ok(literal_bytes);
            }
            if let Some(n) = literal_announced(line) {
                if self.sink.is_empty() {
                    self.sink = vec![0u8; 256 * 1024];
                }
                let mut left = n;
                while left > 0 {
                    let want = left.min(self.sink.len() as u64) as usize;
                    self.io.read_exact(&mut self.sink[..want]).await?;
                    left -= want as u64;
                }
                literal_bytes += n;
            }
        }
    }

    async fn login(&mut self, args: &Args, i: usize) -> anyhow::Result<()> {
        let (u, p) = (
            format!("{}{i}", args.user_prefix),
            format!("{}{i}", args.pass_prefix),
        );
        self.command("l", &format!("LOGIN {u} {p}"))
            .await
            .map(|_| ())
    }
}

fn connector(args: &Args) -> anyhow::Result<Option<TlsConnector>> {
    if args.security == Security::Plain {
        return Ok(None);
    }
    let versions: &[&'static tokio_rustls::rustls::SupportedProtocolVersion] = if args.tls12 {
        &[&tokio_rustls::rustls::version::TLS12]
    } else {
        &[
            &tokio_rustls::rustls::version::TLS13,
            &tokio_rustls::rustls::version::TLS12,
        ]
    };
    let config = imapgate::tls::client_config_for(args.ca.as_deref(), versions)?;
    Ok(Some(TlsConnector::from(config)))
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tls = connector(&args)?;
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let errors = Arc::new(AtomicU64::new(0));
    let label = if args.label.is_empty() {
        String::new()
    } else {
        format!("{} ", args.label)
    };
    match args.mode {
        Mode::Login => {
            let done = Arc::new(AtomicU64::new(0));
            let started = Instant::now();
            let mut tasks = Vec::new();
            for s in 0..args.sessions {
                let (args, tls, done, errors) =
                    (args.clone(), tls.clone(), done.clone(), errors.clone());
                tasks.push(tokio::spawn(async move {
                    let mut i = s;
                    while Instant::now() < deadline {
                        let user = args.first_user + i % args.users;
                        i += args.sessions;
                        let r = async {
                            let mut c = Conn::open(&args, &tls).await?;
                            c.login(&args, user).await?;
                            c.send("o LOGOUT\r\n").await?;
                            let _ = c.until("o").await;
                            anyhow::Ok(())
                        }
                        .await;
                        match r {
                            Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                            Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                }));
            }
            for t in tasks {
                t.await?;
            }
            let secs = started.elapsed().as_secs_f64();
            let n = done.load(Ordering::Relaxed);
            println!(
                "{label}mode=login security={:?} sessions={} cycles={n} rate={:.0}/s errors={}",
                args.security,
                args.sessions,
                n as f64 / secs,
                errors.load(Ordering::Relaxed)
            );
        }
        Mode::Noop => {
            let mut tasks = Vec::new();
            let started = Instant::now();
            for s in 0..args.sessions {
                let (args, tls, errors) = (args.clone(), tls.clone(), errors.clone());
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::new();
                    let r = async {
                        let mut c = Conn::open(&args, &tls).await?;
                        c.login(&args, args.first_user + s % args.users).await?;
                        while Instant::now() < deadline {
                            let t = Instant::now();
                            c.send_bytes(b"n NOOP\r\n").await?;
                            c.until("n").await?;
                            lat.push(t.elapsed().as_micros() as u64);
                        }
                        c.command("o", "LOGOUT").await.ok();
                        anyhow::Ok(())
                    }
                    .await;
                    if r.is_err() {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    lat
                }));
            }
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await?);
            }
            let secs = started.elapsed().as_secs_f64();
            all.sort_unstable();
            println!("{label}mode=noop security={:?} sessions={} ops={} rate={:.0}/s p50={}us p99={}us errors={}", args.security, args.sessions, all.len(), all.len() as f64 / secs, percentile(&all, 0.5), percentile(&all, 0.99), errors.load(Ordering::Relaxed));
        }
        Mode::Fetch => {
            let mut c = Conn::open(&args, &tls).await?;
            c.login(&args, args.first_user).await?;
            c.command("s", "SELECT INBOX").await?;
            let started = Instant::now();
            let mut bytes = 0u64;
            let mut rounds = 0u64;
            while Instant::now() < deadline || rounds == 0 {
                bytes += c.command("f", "FETCH 1:* BODY.PEEK[]").await?;
                rounds += 1;
            }
            let secs = started.elapsed().as_secs_f64();
            c.command("o", "LOGOUT").await.ok();
            println!("{label}mode=fetch security={:?} rounds={rounds} bytes={bytes} rate={:.0}MB/s errors=0", args.security, bytes as f64 / secs / 1e6);
        }
        Mode::Idle => {
            let before: u64 = args.pids.iter().map(|&p| rss_kb(p)).sum();
            // A session not in IDLE within 60 s counts as an error (a proxy that drops part of
            // a storm must not hang the run).
            let open = |s: usize, args: Arc<Args>, tls: Option<TlsConnector>| async move {
                let session = async {
                    let mut c = Conn::open(&args, &tls).await?;
                    c.login(&args, args.first_user + s % args.users).await?;
                    c.command("s", "SELECT INBOX").await?;
                    c.send("i IDLE\r\n").await?;
                    let plus = c.line().await?;
                    anyhow::ensure!(plus.starts_with('+'), "{plus}");
                    anyhow::Ok(c)
                };
                tokio::time::timeout(Duration::from_secs(60), session)
                    .await
                    .map_err(|_| anyhow::anyhow!("not in IDLE after 60 s"))?
            };
            let shared = Arc::new(args.clone());
            let started = Instant::now();
            let mut results = Vec::with_capacity(args.sessions);
            if args.storm {
                // All at once: every connection is started before any has logged in.
                let mut tasks = tokio::task::JoinSet::new();
                for s in 0..args.sessions {
                    tasks.spawn(open(s, shared.clone(), tls.clone()).map(move |r| (s, r)));
                }
                while let Some(r) = tasks.join_next().await {
                    results.push(r?);
                }
            } else {
                for s in 0..args.sessions {
                    results.push((s, open(s, shared.clone(), tls.clone()).await));
                }
            }
            let took = started.elapsed().as_secs_f64();
            let mut held = Vec::new();
            for (s, r) in results {
                match r {
                    Ok(c) => held.push(c),
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("idle session {s}: {e}");
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
            let during: u64 = args.pids.iter().map(|&p| rss_kb(p)).sum();
            let n = held.len() as u64;
            let per = if n > 0 {
                (during.saturating_sub(before)) as f64 / n as f64
            } else {
                0.0
            };
            let mut ended = 0;
            for mut c in held {
                if c.send("DONE\r\n").await.is_ok() && c.until("i").await.is_ok() {
                    ended += 1;
                }
            }
            // Memory only when there is a process to measure: no figure rather than a zero. The
            // RSS once every session has closed (and the proxy has had 3 s to settle) tells
            // whether the memory of the peak stays.
            let memory = if args.pids.is_empty() {
                String::new()
            } else {
                tokio::time::sleep(Duration::from_secs(3)).await;
                let after: u64 = args.pids.iter().map(|&p| rss_kb(p)).sum();
                format!(
                    " rss_before={before}KB rss_during={during}KB per_session={per:.1}KB \
                     rss_after_close={after}KB"
                )
            };
            println!(
                "{label}mode=idle security={:?} arrival={} sessions={n} opened_in={took:.1}s \
                 still_alive={ended}{memory} errors={}",
                args.security,
                if args.storm { "at-once" } else { "one-by-one" },
                errors.load(Ordering::Relaxed)
            );
        }
    }
    Ok(())
}
