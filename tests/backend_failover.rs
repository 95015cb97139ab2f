//! A backend with several addresses: a failed connect or greeting marks an address down and the
//! login goes on to the next within its budget; `imapgate backends` shows the states; a health
//! check brings an address back. And the PROXY protocol towards a backend, against a Dovecot
//! listener that takes nothing else (haproxy = yes).

mod common;

use std::time::{Duration, Instant};

use common::daemon::cli;
use common::dovecot::dovecot;
use common::fake::{FakeBackend, Greeting, Script};
use common::fixtures::FAKE_USERS;
use common::{closed_port, login, GateConfig, TestGate};

async fn gate_over(addresses: &[String], extra: &str) -> TestGate {
    let list: Vec<String> = addresses.iter().map(|a| format!("{a:?}")).collect();
    GateConfig::new("unused:1")
        .backend(
            "main",
            &format!(
                "address = [{}]\nconnect_timeout = \"1s\"\nlogin_timeout = \"2s\"\n\
                 health_check_interval = \"1s\"\n{extra}",
                list.join(", ")
            ),
        )
        .mailboxes(FAKE_USERS)
        .control_socket()
        .section("[metrics]\nlisten = \"127.0.0.1:0\"\n\n")
        .start()
        .await
}

/// Logins the fake backend received (LOGIN or AUTHENTICATE).
fn logins(fake: &FakeBackend) -> usize {
    fake.named("LOGIN").len() + fake.named("AUTHENTICATE").len()
}

fn failovers(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("imapgate_backend_failovers_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_dead_address_is_skipped_shown_down_and_brought_back_by_the_health_check() {
    let dead = format!("127.0.0.1:{}", closed_port());
    let second = FakeBackend::start(Script::default()).await;
    let gate = gate_over(&[dead.clone(), second.address()], "").await;
    let r = login(&gate, "user1", "pass1").await;
    assert!(r.starts_with("a OK"), "{r}");
    assert_eq!(logins(&second), 1);
    let (ok, out, _) = cli(&gate.config_path, &["backends"]).await;
    assert!(!ok, "an address down: exit 1\n{out}");
    let down = out
        .lines()
        .find(|l| l.contains(&dead))
        .expect("dead listed");
    assert!(down.contains("down"), "{out}");
    let up = out
        .lines()
        .find(|l| l.contains(&second.address()))
        .expect("second listed");
    assert!(up.contains("up"), "{out}");
    let metrics = gate.metrics.expect("metrics");
    let counted = failovers(&common::scrape(metrics).await);
    assert_eq!(counted, 1.0);
    // Down addresses are tried last: no failover for the next login.
    let r = login(&gate, "user2", "pass2").await;
    assert!(r.starts_with("a OK"), "{r}");
    assert_eq!(failovers(&common::scrape(metrics).await), 1.0);
    // The address comes back; the health check (every second) sees it.
    let first = FakeBackend::start_at(dead.parse().expect("address"), Script::default()).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (ok, out, _) = cli(&gate.config_path, &["backends"]).await;
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "still down:\n{out}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = login(&gate, "user3", "pass3").await;
    assert!(r.starts_with("a OK"), "{r}");
    assert_eq!(logins(&first), 1, "the first address serves again");
    gate.stop().await;
}

#[tokio::test]
async fn a_bad_or_missing_greeting_fails_over_within_the_login_budget() {
    let bye = FakeBackend::start(Script::with_greeting(Greeting::Bye)).await;
    let silent = FakeBackend::start(Script::with_greeting(Greeting::Never)).await;
    let good = FakeBackend::start(Script::default()).await;
    let gate = gate_over(&[bye.address(), silent.address(), good.address()], "").await;
    let started = Instant::now();
    let r = login(&gate, "user1", "pass1").await;
    assert!(r.starts_with("a OK"), "{r}");
    // The silent one gets its share of login_timeout (2 s over 3 addresses), not all of it.
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert_eq!(logins(&good), 1);
    let (ok, out, _) = cli(&gate.config_path, &["backends", "--format", "json"]).await;
    assert!(!ok);
    let list: Vec<serde_json::Value> = serde_json::from_str(&out).expect("json");
    let up: Vec<bool> = list.iter().map(|a| a["up"] == true).collect();
    assert_eq!(up, [false, false, true], "{out}");
    // Every address down: a login still tries them, and says unavailable.
    let all_dead = gate_over(
        &[
            format!("127.0.0.1:{}", closed_port()),
            format!("127.0.0.1:{}", closed_port()),
        ],
        "",
    )
    .await;
    for _ in 0..2 {
        let r = login(&all_dead, "user1", "pass1").await;
        assert!(r.starts_with("a NO [UNAVAILABLE]"), "{r}");
    }
    all_dead.stop().await;
    gate.stop().await;
}

#[tokio::test]
async fn the_proxy_protocol_reaches_a_dovecot_that_requires_it() {
    let Some(d) = dovecot() else { return };
    let haproxy = format!("127.0.0.1:{}", d.haproxy_port);
    for version in ["v1", "v2"] {
        let gate = gate_over(
            std::slice::from_ref(&haproxy),
            &format!("proxy_protocol = {version:?}"),
        )
        .await;
        let mut c = common::Client::plain_from([127, 0, 0, 23], gate.plain).await;
        c.greeting().await;
        let r = c.cmd("a", "LOGIN user3 pass3").await;
        assert!(common::last(&r).starts_with("a OK"), "{version}: {r:?}");
        let r = c.cmd("b", "SELECT INBOX").await;
        assert!(common::last(&r).starts_with("b OK"), "{version}: {r:?}");
        gate.stop().await;
    }
    // Dovecot logged the client's address, as the header gave it.
    let log = std::fs::read_to_string(d.dir.path().join("dovecot.log")).expect("dovecot log");
    assert!(
        log.lines()
            .any(|l| l.contains("user=<user3>") && l.contains("rip=127.0.0.23")),
        "{log}"
    );
    // Without the header that listener refuses the connection: the gate says unavailable.
    let gate = gate_over(std::slice::from_ref(&haproxy), "").await;
    let r = login(&gate, "user3", "pass3").await;
    assert!(r.starts_with("a NO [UNAVAILABLE]"), "{r}");
    gate.stop().await;
}
