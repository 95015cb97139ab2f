//! Connection limits: the whole gate, one client address, one mailbox; and counters that come
//! back to zero however connections end.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::fake::Script;
use common::fixtures::{
    files_with_fake, gate_with_fake_configured, gate_with_settings, CONTOSO, FAKE_USERS,
};
use common::{last, Client, TestGate};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

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
    let (_fake, gate) =
        gate_with_settings(&["max_connections = 4", "max_connections_from_single_ip = 2"]).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let c = gate.greeted().await;
        held.push(c);
    }
    let mut third = gate.plain().await;
    assert_eq!(third.line().await, "* BYE [LIMIT] Too many connections.");
    assert!(third.closed_within(Duration::from_secs(2)).await);
    // Another address still gets in, up to the gate's limit.
    let mut others = Vec::new();
    for source in [[127, 0, 0, 2], [127, 0, 0, 3]] {
        let mut c = Client::plain_from(source, gate.plain).await;
        c.greeting().await;
        others.push(c);
    }
    let mut fifth = Client::plain_from([127, 0, 0, 4], gate.plain).await;
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
    let again = gate.greeted().await;
    drop((held, others, again));
    wait_for_zero(&gate).await;
    gate.stop().await;
}

#[tokio::test]
async fn one_mailbox_is_limited_across_names_and_addresses() {
    let (_fake, gate) = gate_with_fake_configured(Script::default(), CONTOSO, |config| {
        config.imap4("max_connections_per_user = 2")
    })
    .await;
    let mut sessions = Vec::new();
    for (source, name) in [
        ([127, 0, 0, 1], "jsmith"),
        ([127, 0, 0, 2], "john.smith@example.com"),
    ] {
        let mut c = Client::plain_from(source, gate.plain).await;
        c.greeting().await;
        assert!(last(&c.cmd("a", &format!("LOGIN {name} pass1")).await).starts_with("a OK"));
        sessions.push(c);
    }
    // The third, under the backend's own name and from a third address: refused after the
    // password was checked (without the password nobody learns the mailbox is busy).
    let mut third = Client::plain_from([127, 0, 0, 3], gate.plain).await;
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
    let (_fake, gate) = gate_with_settings(&[
        "max_connections_per_user = 100000",
        "tls_handshake_timeout = \"2s\"",
    ])
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

/// One address opening connections and sending nothing: it gets its share of connections
/// before login, and other addresses still log in.
#[tokio::test]
async fn one_address_cannot_hold_the_gate_before_login() {
    let (_fake, gate) = gate_with_settings(&["max_preauth_connections_from_single_ip = 20"]).await;
    let mut idle = Vec::new();
    for _ in 0..20 {
        let mut c = Client::plain_from([127, 0, 0, 9], gate.plain).await;
        c.greeting().await;
        idle.push(c);
    }
    let mut over = Client::plain_from([127, 0, 0, 9], gate.plain).await;
    assert_eq!(over.line().await, "* BYE [LIMIT] Too many connections.");
    assert!(over.closed_within(Duration::from_secs(1)).await);
    // Another address logs in; a logged-in session no longer counts before login.
    let mut other = Client::plain_from([127, 0, 0, 10], gate.plain).await;
    other.greeting().await;
    assert!(last(&other.cmd("a", "LOGIN user1 pass1").await).starts_with("a OK"));
    let mut first = idle.remove(0);
    assert!(last(&first.cmd("a", "LOGIN user2 pass2").await).starts_with("a OK"));
    let mut again = Client::plain_from([127, 0, 0, 9], gate.plain).await;
    again.greeting().await;
    drop((idle, over, other, first, again));
    wait_for_zero(&gate).await;
    gate.stop().await;
}

/// Above `pressure_threshold` of `max_connections`, connections waiting to log in get the short
/// pre-login timeout; below it, the normal one.
#[tokio::test]
async fn under_pressure_idle_connections_before_login_are_cut_early() {
    let (_fake, gate) = gate_with_settings(&[
        "max_connections = 10",
        "pressure_threshold = 0.5",
        "preauthenticated_connection_timeout_under_pressure = \"1s\"",
    ])
    .await;
    let mut held = Vec::new();
    for i in 0..4u8 {
        let mut c = Client::plain_from([127, 0, 0, 20 + i], gate.plain).await;
        c.greeting().await;
        held.push(c);
    }
    // Four of ten: no pressure, nobody is cut.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for c in held.iter_mut() {
        assert_eq!(c.try_line(Duration::from_millis(10)).await, Err(()));
    }
    // The fifth makes five of ten: every waiting connection older than 1 s is cut now.
    let started = Instant::now();
    let mut fifth = Client::plain_from([127, 0, 0, 30], gate.plain).await;
    fifth.greeting().await;
    for c in held.iter_mut() {
        assert_eq!(c.line().await, "* BYE Timed out waiting for login.");
    }
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    // The newcomer gets its second, not the minute of preauthenticated_connection_timeout.
    assert_eq!(fifth.line().await, "* BYE Timed out waiting for login.");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    drop((held, fifth));
    wait_for_zero(&gate).await;
    gate.stop().await;
}

/// A daemon whose open-file limit is low: the connection limit follows it (logged), and a
/// flood of connections from many addresses is refused with `* BYE [LIMIT]`, never by running
/// out of descriptors.
#[tokio::test]
async fn the_connection_limit_follows_the_open_file_limit() {
    let (_fake, _dir, config) =
        files_with_fake(Script::default(), FAKE_USERS, |config| config).await;
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 400 && RUST_LOG=info exec {} --config {}",
            common::daemon::BIN,
            config.display()
        ))
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("daemon");
    use tokio::io::AsyncBufReadExt;
    let mut log = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let (mut limit, mut port) = (None, None);
    while port.is_none() {
        let line = tokio::time::timeout(Duration::from_secs(10), log.next_line())
            .await
            .expect("log in time")
            .expect("read")
            .expect("a line");
        if line.contains("connection limit") {
            limit = line
                .split("max_connections=")
                .nth(1)
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<usize>().ok());
        }
        if line.contains("listening (plain") {
            port = line
                .rsplit_once("127.0.0.1:")
                .and_then(|(_, p)| p.split_whitespace().next())
                .and_then(|p| p.parse::<u16>().ok());
        }
    }
    // (400 - reserve) / 2: a relayed session holds two descriptors.
    let limit = limit.expect("the limit is logged");
    assert!(limit > 50 && limit < 200, "max_connections={limit}");
    let addr = SocketAddr::from(([127, 0, 0, 1], port.expect("port")));
    let mut held = Vec::new();
    let mut refused = 0;
    for i in 0..limit + 40 {
        let source = [127, 0, 2 + (i / 50) as u8, 1 + (i % 50) as u8];
        let mut c = Client::plain_from(source, addr).await;
        let first = c.line().await;
        if first.starts_with("* BYE [LIMIT]") {
            refused += 1;
        } else {
            held.push(c);
        }
    }
    assert_eq!(held.len(), limit);
    assert_eq!(refused, 40);
    // Room again after some leave; a login works.
    held.truncate(limit - 5);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut c = Client::plain_from([127, 0, 9, 1], addr).await;
    c.greeting().await;
    assert!(last(&c.cmd("a", "LOGIN user1 pass1").await).starts_with("a OK"));
    drop((held, c));
    let _ = child.start_kill();
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        let mut text = String::new();
        while let Ok(Some(l)) = log.next_line().await {
            text.push_str(&l);
            text.push('\n');
        }
        text
    })
    .await
    .unwrap_or_default();
    assert!(!rest.contains("Too many open files"), "{rest}");
}

/// A hundred connections from one address sending wrong passwords at once: a few logins are
/// in progress at a time, and each waits for the failures of those before it.
#[tokio::test]
async fn parallel_wrong_passwords_from_one_address_are_paced() {
    let (_fake, gate) = gate_with_settings(&[
        "trusted_networks = []",
        "auth_penalty_initial = \"300ms\"",
        "auth_penalty_max = \"1s\"",
    ])
    .await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut clients = Vec::new();
    for _ in 0..100 {
        let c = gate.greeted().await;
        clients.push(c);
    }
    let started = Instant::now();
    for mut c in clients {
        let tx = tx.clone();
        tokio::spawn(async move {
            let r = c.cmd("a", "LOGIN user1 wrong").await;
            let _ = tx.send((started.elapsed(), last(&r).to_string()));
            c
        });
    }
    let mut answers = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
    while let Ok(Some(a)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        answers.push(a);
    }
    assert!(answers
        .iter()
        .all(|(_, r)| r.contains("AUTHENTICATIONFAILED")));
    // The first four answer at once; the next four wait for four failures' penalty (1 s).
    let quick = answers
        .iter()
        .filter(|(t, _)| *t < Duration::from_millis(800))
        .count();
    assert_eq!(quick, 4, "{answers:?}");
    assert!(answers.len() <= 8, "{answers:?}");
    gate.stop().await;
}
