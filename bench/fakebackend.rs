//! An instant IMAP backend for benchmarks: greets, accepts any LOGIN (and AUTHENTICATE PLAIN),
//! answers NOOP, SELECT, IDLE/DONE and LOGOUT at once, and serves `FETCH 1:* BODY.PEEK[]` as
//! `--messages` messages of `--size` bytes from memory. It shows a proxy's own cost, with no
//! mail store behind it.
//!
//! cargo run --release --example fakebackend -- --listen 127.0.0.1:20143

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Parser;
use imapgate::wire::literal_announced;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:20143")]
    listen: SocketAddr,
    #[arg(long, default_value_t = 1)]
    messages: usize,
    #[arg(long, default_value_t = 1024 * 1024)]
    size: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let line = b"The quick brown fox jumps over the lazy dog, again and again and again....\r\n";
    let mut body = Vec::with_capacity(args.size);
    while body.len() < args.size {
        body.extend_from_slice(&line[..line.len().min(args.size - body.len())]);
    }
    let mut fetch = Vec::with_capacity(args.messages * (args.size + 64));
    for i in 1..=args.messages {
        fetch.extend_from_slice(format!("* {i} FETCH (BODY[] {{{}}}\r\n", body.len()).as_bytes());
        fetch.extend_from_slice(&body);
        fetch.extend_from_slice(b")\r\n");
    }
    let fetch = Arc::new(fetch);
    // A deep accept queue: a proxy that connects a whole reconnect storm at once must not
    // find the backend's queue full.
    let socket = if args.listen.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(args.listen)?;
    let listener: TcpListener = socket.listen(65535)?;
    eprintln!("fake backend on {}", listener.local_addr()?);
    loop {
        let (tcp, _) = listener.accept().await?;
        let fetch = fetch.clone();
        let messages = args.messages;
        tokio::spawn(async move {
            let _ = serve(tcp, fetch, messages).await;
        });
    }
}

async fn serve(tcp: TcpStream, fetch: Arc<Vec<u8>>, messages: usize) -> std::io::Result<()> {
    tcp.set_nodelay(true)?;
    let mut io = BufReader::new(tcp);
    io.get_mut()
        .write_all(b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN IDLE LITERAL+] fake ready\r\n")
        .await?;
    let mut line = String::new();
    loop {
        line.clear();
        if io.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        // Literals (a proxy may send LOGIN's arguments as `{n}`): accept them and read on.
        while let Some(n) = literal_announced(line.as_bytes()) {
            if !line.trim_end().ends_with("+}") {
                io.get_mut().write_all(b"+ go ahead\r\n").await?;
            }
            let mut data = vec![0u8; n as usize];
            io.read_exact(&mut data).await?;
            line.push_str(&String::from_utf8_lossy(&data));
            if io.read_line(&mut line).await? == 0 {
                return Ok(());
            }
        }
        let mut words = line.split_whitespace();
        let tag = words.next().unwrap_or("*").to_string();
        let mut cmd = words.next().unwrap_or("").to_ascii_uppercase();
        if cmd == "UID" {
            // `UID FETCH` (curl's way to fetch a message) is served like FETCH.
            cmd = words.next().unwrap_or("").to_ascii_uppercase();
        }
        let w = io.get_mut();
        match cmd.as_str() {
            "LOGIN" | "AUTHENTICATE" => {
                w.write_all(
                    format!("{tag} OK [CAPABILITY IMAP4rev1 IDLE LITERAL+] Logged in\r\n")
                        .as_bytes(),
                )
                .await?
            }
            "CAPABILITY" => {
                w.write_all(
                    format!("* CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN IDLE\r\n{tag} OK done\r\n")
                        .as_bytes(),
                )
                .await?
            }
            "SELECT" => {
                w.write_all(
                    format!("* {messages} EXISTS\r\n{tag} OK [READ-WRITE] done\r\n").as_bytes(),
                )
                .await?
            }
            "FETCH" => {
                w.write_all(&fetch).await?;
                w.write_all(format!("{tag} OK FETCH done\r\n").as_bytes())
                    .await?;
            }
            "IDLE" => {
                w.write_all(b"+ idling\r\n").await?;
                line.clear();
                if io.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                io.get_mut()
                    .write_all(format!("{tag} OK IDLE done\r\n").as_bytes())
                    .await?;
            }
            "LOGOUT" => {
                w.write_all(format!("* BYE\r\n{tag} OK LOGOUT done\r\n").as_bytes())
                    .await?;
                return Ok(());
            }
            _ => {
                w.write_all(format!("{tag} OK {cmd} done\r\n").as_bytes())
                    .await?
            }
        }
    }
}
