//! Failing backends: each fault ends in `NO [UNAVAILABLE]` or a clean close within the deadlines,
//! and nothing is invented on the client's side.

mod common;

use std::time::{Duration, Instant};

use common::fake::{FakeBackend, Greeting, Script};
use common::fixtures::{gate_for, gate_with_fake, gate_with_fake_configured, FAKE_USERS};
use common::{closed_port, last, login, GateConfig};

#[tokio::test]
async fn unreachable_or_broken_backends_get_unavailable_promptly() {
    let unavailable = "a NO [UNAVAILABLE] The mailbox server is not available; try again later.";
    let mut backends = vec![("refused", format!("127.0.0.1:{}", closed_port()))];
    for (what, script) in [
        ("never greets", Script::with_greeting(Greeting::Never)),
        ("garbage greeting", Script::with_greeting(Greeting::Garbage)),
        ("BYE greeting", Script::with_greeting(Greeting::Bye)),
        (
            "closes during login",
            Script {
                close_during_login: true,
                ..Script::default()
            },
        ),
        (
            "slow login",
            Script::with_login_delay(Duration::from_secs(30)),
        ),
    ] {
        backends.push((what, FakeBackend::start(script).await.address()));
    }
    for (what, address) in backends {
        let gate = GateConfig::new(&address)
            .main_backend("connect_timeout = \"1s\"\nlogin_timeout = \"1s\"")
            .start()
            .await;
        let started = Instant::now();
        let mut c = gate.greeted().await;
        let r = c.cmd("a", "LOGIN user1 pass1").await;
        assert_eq!(last(&r), unavailable, "{what}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{what}: {:?}",
            started.elapsed()
        );
        // The client may try again on the same connection.
        assert_eq!(
            c.cmd("b", "NOOP").await,
            vec!["b OK NOOP completed."],
            "{what}"
        );
        gate.stop().await;
    }
}

#[tokio::test]
async fn backend_dying_mid_fetch_gives_the_client_what_arrived_then_closes() {
    let (_fake, gate) = gate_with_fake(Script::default(), FAKE_USERS).await;
    let mut c = gate.logged_in("user1", "pass1").await;
    c.send(b"f XDIE 100000\r\n").await;
    assert_eq!(c.line().await, "* 1 FETCH (BODY[] {100000}");
    // Exactly the half that was sent, byte for byte, then end of stream (not a timeout).
    let half = c.read_exact(50_000).await;
    assert!(half
        .chunks(28)
        .all(|l| b"abcdefghijklmnopqrstuvwxyz\r\n".starts_with(l)));
    assert_eq!(
        c.try_line(Duration::from_secs(5)).await,
        Ok(None),
        "closed, nothing invented"
    );
    gate.stop().await;
}

#[tokio::test]
async fn a_backend_trickling_lines_cannot_stretch_a_login() {
    let (_fake, gate) = gate_with_fake(Script::with_greeting(Greeting::Trickle), FAKE_USERS).await;
    let started = Instant::now();
    let r = login(&gate, "user1", "pass1").await;
    assert!(r.starts_with("a NO [UNAVAILABLE]"), "{r}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    gate.stop().await;
}

#[tokio::test]
async fn a_backend_saying_unavailable_is_reported_as_unavailable() {
    let (_fake, gate) = gate_with_fake(
        Script::with_login_reply("NO [UNAVAILABLE] Maintenance"),
        FAKE_USERS,
    )
    .await;
    assert!(login(&gate, "user1", "pass1")
        .await
        .starts_with("a NO [UNAVAILABLE]"));
    gate.stop().await;
}

#[tokio::test]
async fn shutdown_during_a_backend_login_says_bye() {
    let (_fake, gate) = gate_with_fake_configured(
        Script::with_login_delay(Duration::from_secs(30)),
        FAKE_USERS,
        |config| config.main_backend("login_timeout = \"60s\""),
    )
    .await;
    let mut c = gate.greeted().await;
    c.send(b"a LOGIN user1 pass1\r\n").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let handle = gate.handle.clone();
    let stopping = tokio::spawn(gate.stop());
    handle.shutdown();
    assert_eq!(c.line().await, "* BYE [UNAVAILABLE] Server shutting down.");
    stopping.await.expect("stopped");
}

/// One login as user1 through a new gate whose backend `main` is `body`: the tagged answer.
async fn login_through(fake: &FakeBackend, body: &str) -> String {
    let gate = gate_for(fake, FAKE_USERS, |config| config.backend("main", body)).await;
    let reply = login(&gate, "user1", "pass1").await;
    gate.stop().await;
    reply
}

#[tokio::test]
async fn an_invalid_backend_certificate_is_refused_when_verification_is_on() {
    let fake = FakeBackend::start(Script::tls()).await;
    let port = fake.addr.port();
    // System roots only: the development certificate is not trusted.
    let body = format!("address = \"localhost:{port}\"\ntls = \"tls\"");
    assert!(login_through(&fake, &body)
        .await
        .starts_with("a NO [UNAVAILABLE]"));
    // Trusted CA, wrong name: refused too.
    let ca = common::certs().join("ca.pem");
    let body = format!("address = \"127.0.0.1:{port}\"\ntls = \"tls\"\nca = {ca:?}\nserver_name = \"imap.example.com\"");
    assert!(login_through(&fake, &body)
        .await
        .starts_with("a NO [UNAVAILABLE]"));
    // The control: trusted CA and the right name.
    let body = format!("address = \"localhost:{port}\"\ntls = \"tls\"\nca = {ca:?}");
    assert!(login_through(&fake, &body).await.starts_with("a OK"));
}

/// The gate offers a TLS backend AES-128-GCM first (`tls::provider`), and a backend that follows
/// the client's order (rustls' and OpenSSL's default) picks it.
#[tokio::test]
async fn the_gate_offers_tls_backends_aes_128_gcm_first() {
    let fake = FakeBackend::start(Script::tls()).await;
    let ca = common::certs().join("ca.pem");
    let body = format!(
        "address = \"localhost:{}\"\ntls = \"tls\"\nca = {ca:?}",
        fake.addr.port()
    );
    assert!(login_through(&fake, &body).await.starts_with("a OK"));
    let suites = fake.suites.lock().expect("lock").clone();
    assert!(!suites.is_empty());
    assert!(
        suites.iter().all(|s| s == "TLS13_AES_128_GCM_SHA256"),
        "{suites:?}"
    );
}

/// A backend that answers the gate's login `BAD` did not judge the password: the client hears
/// `UNAVAILABLE` (not `AUTHENTICATIONFAILED`), its address is not penalized, and the error is the
/// backend's in the metrics.
#[tokio::test]
async fn a_backend_bad_is_unavailable_without_penalty_and_blamed_on_the_backend() {
    let (_fake, gate) = gate_with_fake_configured(
        Script::with_login_reply("BAD [PARSE] Unexpected argument"),
        FAKE_USERS,
        |config| config.imap4("trusted_networks = []"),
    )
    .await;
    for _ in 0..2 {
        assert_eq!(
            login(&gate, "user1", "pass1").await,
            "a NO [UNAVAILABLE] The mailbox server is not available; try again later."
        );
    }
    let penalty = gate.handle.penalty_of("127.0.0.1".parse().expect("ip"));
    assert_eq!((penalty.failures, penalty.delay_ms), (0, 0));
    let metrics = gate.handle.metrics().encode();
    assert!(
        metrics.contains("imapgate_errors_total{blame=\"backend\",stage=\"login\"} 2"),
        "{metrics}"
    );
    gate.stop().await;
}
