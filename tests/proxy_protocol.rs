//! Behind a load balancer: connections from `proxy_protocol_from` start with a PROXY protocol
//! header (v1 or v2) naming the client, and that address is the client's everywhere (limits,
//! penalty, x-originating-ip to the backend, `imapgate sessions`); TLS starts after the header;
//! a header from anyone else ends the session; a balancer that sends none is cut off.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::daemon::cli;
use common::fake::Script;
use common::fixtures::{gate_with_fake_configured, FAKE_USERS};
use common::{last, Client, GateConfig, TestGate};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A gate that takes PROXY headers from 127.0.0.2 (the test's balancer), with `settings`.
async fn behind_balancer(settings: &[&str]) -> (common::fake::FakeBackend, TestGate) {
    let settings: Vec<String> = settings.iter().map(|s| s.to_string()).collect();
    gate_with_fake_configured(Script::default(), FAKE_USERS, move |c: GateConfig| {
        settings
            .iter()
            .fold(
                c.imap4("proxy_protocol_from = [\"127.0.0.2/32\"]"),
                |c, l| c.imap4(l),
            )
            .control_socket()
    })
    .await
}

/// A TCP connection from 127.0.0.`source` that first sends `header`.
async fn connect_with(source: u8, to: SocketAddr, header: &[u8]) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(([127, 0, 0, source], 0).into()).expect("bind");
    let mut tcp = socket.connect(to).await.expect("connect");
    tcp.write_all(header).await.expect("header");
    tcp
}

fn v1(client: &str) -> Vec<u8> {
    format!("PROXY TCP4 {client} 127.0.0.1 50000 143\r\n").into_bytes()
}

fn v2(client: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend([0x21, 0x11, 0, 12]);
    h.extend(client);
    h.extend([127, 0, 0, 1]);
    h.extend(port.to_be_bytes());
    h.extend(993u16.to_be_bytes());
    h
}

/// A client whose balancer said it is `client` (v1), greeted.
async fn proxied(gate: &TestGate, client: &str) -> Client {
    let mut c = Client::from_tcp(connect_with(2, gate.plain, &v1(client)).await);
    c.greeting().await;
    c
}

#[tokio::test]
async fn the_headers_address_reaches_the_backend_and_the_sessions_list() {
    let (fake, gate) = behind_balancer(&[]).await;
    let mut c = proxied(&gate, "192.0.2.7").await;
    let r = c.cmd("a", "LOGIN user1 pass1").await;
    assert!(last(&r).starts_with("a OK"), "{r:?}");
    let ids = fake.named("ID");
    assert!(
        ids.iter()
            .any(|id| id.contains("\"x-originating-ip\" \"192.0.2.7\"")),
        "{ids:?}"
    );
    let (ok, out, err) = cli(&gate.config_path, &["sessions", "--format", "json"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("192.0.2.7:50000"), "{out}");
    assert!(!out.contains("127.0.0.2"), "{out}");
    // v2 on the TLS port: TLS starts after the header.
    let tcp = connect_with(2, gate.tls.expect("tls"), &v2([198, 51, 100, 4], 61000)).await;
    let mut t = Client::tls_over(tcp, "TLS after the PROXY header").await;
    t.greeting().await;
    let r = t.cmd("b", "LOGIN user2 pass2").await;
    assert!(last(&r).starts_with("b OK"), "{r:?}");
    let (_, out, _) = cli(&gate.config_path, &["sessions", "--format", "json"]).await;
    assert!(out.contains("198.51.100.4:61000"), "{out}");
    gate.stop().await;
}

#[tokio::test]
async fn limits_and_the_penalty_count_the_clients_address_not_the_balancers() {
    let (_fake, gate) = behind_balancer(&[
        "max_connections_from_single_ip = 2",
        "auth_penalty_initial = \"600ms\"",
    ])
    .await;
    // Two from one client, a third refused; another client behind the same balancer is not.
    let _a = proxied(&gate, "192.0.2.9").await;
    let _b = proxied(&gate, "192.0.2.9").await;
    let mut third = Client::from_tcp(connect_with(2, gate.plain, &v1("192.0.2.9")).await);
    assert_eq!(third.line().await, "* BYE [LIMIT] Too many connections.");
    let mut other = proxied(&gate, "192.0.2.10").await;
    // A failed login from 192.0.2.10 delays that client's next login, not 192.0.2.11's.
    let r = other.cmd("a", "LOGIN user1 wrong").await;
    assert!(last(&r).starts_with("a NO"), "{r:?}");
    let mut again = proxied(&gate, "192.0.2.10").await;
    let started = Instant::now();
    let r = again.cmd("b", "LOGIN user1 pass1").await;
    assert!(last(&r).starts_with("b OK"), "{r:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(550),
        "{:?}",
        started.elapsed()
    );
    let mut fresh = proxied(&gate, "192.0.2.11").await;
    let started = Instant::now();
    let r = fresh.cmd("c", "LOGIN user1 pass1").await;
    assert!(last(&r).starts_with("c OK"), "{r:?}");
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    gate.stop().await;
}

#[tokio::test]
async fn a_header_from_anyone_else_ends_the_session_and_a_balancer_must_send_one() {
    let (fake, gate) = behind_balancer(&["tls_handshake_timeout = \"1s\""]).await;
    // From 127.0.0.1, not a trusted balancer: greeted, then refused at the header.
    let mut c = Client::from_tcp(connect_with(1, gate.plain, &v1("10.9.9.9")).await);
    c.greeting().await;
    let bye = c.line().await;
    assert!(bye.starts_with("* BYE PROXY protocol header"), "{bye}");
    assert!(c.closed_within(Duration::from_secs(2)).await);
    // On the TLS port it is no TLS handshake at all.
    let tcp = connect_with(1, gate.tls.expect("tls"), &v2([10, 9, 9, 9], 1)).await;
    let handshake = common::dev_connector()
        .connect(
            tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").expect("name"),
            tcp,
        )
        .await;
    assert!(handshake.is_err());
    // From the balancer without a header: no greeting, closed after tls_handshake_timeout.
    let mut silent = Client::from_tcp(connect_with(2, gate.plain, b"").await);
    let started = Instant::now();
    assert_eq!(
        silent.try_line(Duration::from_secs(3)).await,
        Ok(None),
        "no greeting"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    // A balancer sending garbage instead: closed.
    let mut garbage =
        Client::from_tcp(connect_with(2, gate.plain, b"a LOGIN user1 pass1\r\n").await);
    assert_eq!(garbage.try_line(Duration::from_secs(2)).await, Ok(None));
    assert!(fake.named("LOGIN").is_empty(), "{:?}", fake.commands());
    gate.stop().await;
}
