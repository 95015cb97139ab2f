//! Connection limits: the whole gate, one client address, one mailbox; and counters that come
//! back to zero however connections end.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::fake::{FakeBackend, Script};
use common::{last, Client, GateConfig, TestGate};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

const MAILBOXES: &str = "[[mailbox]]\nname = \"John Smith\"\nalias = \"jsmith\"\nemail = \"john.smith@example.com\"\nlogin = \"user1\"\n";

/// Connects from a chosen loopback source address (127.0.0.0/8 is all loopback on Linux).
async fn connect_from(source: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind((source, 0).into()).expect("bind source");
    socket.connect(to).await.expect("connect")
}

async fn wait_for_zero(gate: &TestGate) {
    for _ in 0..200 {
        let u = gate.handle.usage();
        if u.connections == 0
            && u.addresses == 0
            && u.mailboxes == 0
            && gate.handle.registry().is_empty()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "counters drifted: {:?}, {} registered",
        gate.handle.usage(),
        gate.handle.registry().len()
    );
}

#[tokio::test]
async fn the_whole_gate_and_one_address_are_limited() {
    let fake = FakeBackend::start(Script::default()).await;
    let gate = GateConfig::new(&fake.address())
        .imap4("max_connections = 4")
        .imap4("max_connections_from_single_ip = 2")
        .start()
        .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = gate.plain().await;
        c.greeting().await;
        held.push(c);
    }
    let mut third = gate.plain().await;
    assert_eq!(third.line().await, "* BYE [LIMIT] Too many connections.");
    assert!(third.closed_within(Duration::from_secs(2)).await);
    // Another address still gets in, up to the gate's limit.
    let mut others = Vec::new();
    for source in [[127, 0, 0, 2], [127, 0, 0, 3]] {
        let tcp = connect_from(source, gate.plain).await;
        let mut c = Client::from_tcp(tcp);
        c.greeting().await;
        others.push(c);
    }
    let mut fifth = Client::from_tcp(connect_from([127, 0, 0, 4], gate.plain).await);
    assert_eq!(fifth.line().await, "* BYE [LIMIT] Too many connections.");
    // On the implicit-TLS port an over-limit connection is closed without a handshake.
    let tls = TcpStream::connect(gate.tls.expect("tls"))
        .await
        .expect("connect");
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").expect("name");
    assert!(common::dev_connector().connect(name, tls).await.is_err());
    // Closing one makes room.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = gate.plain().await;
    again.greeting().await;
    drop((held, others, again));
    wait_for_zero(&gate).await;
    gate.stop().await;
}

#[tokio::test]
async fn one_mailbox_is_limited_across_names_and_addresses() {
    let fake = FakeBackend::start(Script::default()).await;
    let gate = GateConfig::new(&fake.address())
        .imap4("max_connections_per_user = 2")
        .mailboxes(MAILBOXES)
        .start()
        .await;
    let mut sessions = Vec::new();
    for (source, name) in [
        ([127, 0, 0, 1], "jsmith"),
        ([127, 0, 0, 2], "john.smith@example.com"),
    ] {
        let mut c = Client::from_tcp(connect_from(source, gate.plain).await);
        c.greeting().await;
        assert!(last(&c.cmd("a", &format!("LOGIN {name} pass1")).await).starts_with("a OK"));
        sessions.push(c);
    }
    // The third, under the backend's own name and from a third address: refused after the
    // password was checked (without the password nobody learns the mailbox is busy).
    let mut third = Client::from_tcp(connect_from([127, 0, 0, 3], gate.plain).await);
    third.greeting().await;
    let r = third.cmd("a", "LOGIN user1 wrong").await;
    assert_eq!(last(&r), "a NO [AUTHENTICATIONFAILED] LOGIN failed.");
    let r = third.cmd("b", "LOGIN user1 pass1").await;
    assert_eq!(
        last(&r),
        "b NO [LIMIT] Too many connections for this mailbox."
    );
    // Another user is not affected.
    assert!(last(&third.cmd("c", "LOGIN user2 pass2").await).starts_with("c OK"));
    // One logs out: room again.
    let mut first = sessions.remove(0);
    first.cmd("z", "LOGOUT").await;
    assert!(first.closed_within(Duration::from_secs(2)).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let c = gate.logged_in("jsmith", "pass1").await;
    drop((sessions, third, c));
    wait_for_zero(&gate).await;
    gate.stop().await;
}

#[tokio::test]
async fn thousands_of_connections_ending_every_way_leave_every_counter_at_zero() {
    let fake = FakeBackend::start(Script::default()).await;
    let gate = GateConfig::new(&fake.address())
        .imap4("max_connections_per_user = 100000")
        .imap4("tls_handshake_timeout = \"2s\"")
        .start()
        .await;
    let (plain, tls) = (gate.plain, gate.tls.expect("tls"));
    for batch in 0..20 {
        let mut tasks = Vec::new();
        for i in 0..100 {
            tasks.push(tokio::spawn(async move {
                match (batch * 100 + i) % 6 {
                    // Connect and drop at once.
                    0 => drop(TcpStream::connect(plain).await),
                    // Half a command, then gone.
                    1 => {
                        if let Ok(mut s) = TcpStream::connect(plain).await {
                            let _ = s.write_all(b"a LOGIN us").await;
                        }
                    }
                    // A login, then the client vanishes mid-session.
                    2 => {
                        let mut c = Client::plain(plain).await;
                        c.greeting().await;
                        c.send(b"a LOGIN user1 pass1\r\n").await;
                        let _ = c.try_line(Duration::from_secs(5)).await;
                    }
                    // Mid-TLS-handshake: a few bytes of a ClientHello, then gone.
                    3 => {
                        if let Ok(mut s) = TcpStream::connect(tls).await {
                            let _ = s.write_all(&[0x16, 0x03, 0x01, 0x00, 0xa0, 0x01]).await;
                        }
                    }
                    // A full TLS handshake, then gone.
                    4 => drop(Client::tls(tls).await),
                    // STARTTLS, then gone before the handshake.
                    _ => {
                        let mut c = Client::plain(plain).await;
                        c.greeting().await;
                        c.send(b"s STARTTLS\r\n").await;
                    }
                }
            }));
        }
        for t in tasks {
            t.await.expect("client task");
        }
    }
    wait_for_zero(&gate).await;
    // And the gate still serves.
    let c = gate.logged_in("user1", "pass1").await;
    drop(c);
    wait_for_zero(&gate).await;
    gate.stop().await;
}
