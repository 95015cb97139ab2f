//! Deadlines: before login (a slowloris client is cut), the TLS handshake, and idle relayed
//! sessions (while active ones live on).

mod common;

use std::time::{Duration, Instant};

use common::fixtures::gate_with_settings;
use common::last;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

#[tokio::test]
async fn a_slowloris_client_is_cut_at_the_pre_login_deadline() {
    let (_fake, gate) = gate_with_settings(&["preauthenticated_connection_timeout = \"2s\""]).await;
    let mut c = gate.greeted().await;
    let started = Instant::now();
    // One byte every 200 ms: the command would take 4 s to arrive.
    let line = b"a LOGIN user1 pass1\r\n";
    let mut cut = None;
    for byte in line {
        c.send(std::slice::from_ref(byte)).await;
        if let Ok(got) = c.try_line(Duration::from_millis(200)).await {
            cut = Some(got);
            break;
        }
    }
    assert_eq!(
        cut,
        Some(Some("* BYE Timed out waiting for login.".to_string()))
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1800) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    assert!(c.closed_within(Duration::from_secs(1)).await);
    gate.stop().await;
}

#[tokio::test]
async fn a_silent_tls_client_is_cut_at_the_handshake_deadline() {
    let (_fake, gate) = gate_with_settings(&["tls_handshake_timeout = \"1s\""]).await;
    let started = Instant::now();
    let mut s = TcpStream::connect(gate.tls.expect("tls"))
        .await
        .expect("connect");
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // STARTTLS, then silence: the same deadline.
    let mut c = gate.greeted().await;
    c.send(b"s STARTTLS\r\n").await;
    assert_eq!(c.line().await, "s OK Begin TLS negotiation now.");
    assert!(c.closed_within(Duration::from_secs(2)).await);
    assert_eq!(gate.handle.usage().connections, 0);
    gate.stop().await;
}

#[tokio::test]
async fn idle_relayed_sessions_are_closed_and_active_ones_are_not() {
    let (_fake, gate) = gate_with_settings(&["authenticated_connection_timeout = \"1s\""]).await;
    let mut idle = gate.logged_in("user1", "pass1").await;
    let mut active = gate.logged_in("user2", "pass2").await;
    let started = Instant::now();
    for i in 0..8 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(last(&active.cmd(&format!("n{i}"), "NOOP").await).starts_with(&format!("n{i} OK")));
    }
    assert!(idle.closed_within(Duration::from_secs(1)).await);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(
        last(&active.cmd("z", "NOOP").await).starts_with("z OK"),
        "the active session lives on"
    );
    gate.stop().await;
}
