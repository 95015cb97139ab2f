//! Brute force: failed logins end the connection after `max_failed_login_attempts`, addresses
//! with recent failures wait longer and longer (trusted networks exempt), and an unknown user, a
//! wrong password and a disabled mailbox with a wrong password look the same, text and timing.

mod common;

use std::time::{Duration, Instant};

use common::fake::Script;
use common::fixtures::{gate_with_fake, gate_with_settings, FAKE_USERS, JOHN_AND_JANE};
use common::{last, login};

#[tokio::test]
async fn four_failed_logins_end_the_connection() {
    let (_fake, gate) = gate_with_fake(Script::default(), FAKE_USERS).await;
    let mut c = gate.greeted().await;
    for tag in ["a", "b", "c"] {
        let r = c.cmd(tag, "LOGIN user1 nope").await;
        assert_eq!(
            last(&r),
            format!("{tag} NO [AUTHENTICATIONFAILED] LOGIN failed.")
        );
    }
    let r = c.cmd("d", "LOGIN user1 nope").await;
    assert_eq!(last(&r), "d NO [AUTHENTICATIONFAILED] LOGIN failed.");
    assert_eq!(c.line().await, "* BYE Too many failed logins.");
    assert!(c.closed_within(Duration::from_secs(2)).await);
    gate.stop().await;
}

#[tokio::test]
async fn wrong_password_unknown_user_and_disabled_with_wrong_password_look_the_same() {
    let (_fake, gate) = gate_with_fake(Script::default(), JOHN_AND_JANE).await;
    let failed = "a NO [AUTHENTICATIONFAILED] LOGIN failed.";
    assert_eq!(login(&gate, "user1", "wrong").await, failed);
    assert_eq!(login(&gate, "nobody", "pass1").await, failed);
    assert_eq!(login(&gate, "jane@example.com", "wrong").await, failed);
    assert_eq!(login(&gate, "user2", "wrong").await, failed);
    gate.stop().await;
}

#[tokio::test]
async fn failures_from_an_address_make_its_next_logins_wait_longer() {
    let (_fake, gate) = gate_with_settings(&[
        "trusted_networks = []",
        "auth_penalty_initial = \"200ms\"",
        "auth_penalty_max = \"500ms\"",
    ])
    .await;
    let mut waits = Vec::new();
    for _ in 0..4 {
        let started = Instant::now();
        assert!(login(&gate, "user1", "wrong")
            .await
            .contains("AUTHENTICATIONFAILED"));
        waits.push(started.elapsed());
    }
    // 0, then 200 ms, 400 ms, then capped at 500 ms.
    assert!(waits[0] < Duration::from_millis(150), "{waits:?}");
    assert!(
        waits[1] >= Duration::from_millis(200) && waits[1] < Duration::from_millis(350),
        "{waits:?}"
    );
    assert!(
        waits[2] >= Duration::from_millis(400) && waits[2] < Duration::from_millis(550),
        "{waits:?}"
    );
    assert!(
        waits[3] >= Duration::from_millis(500) && waits[3] < Duration::from_millis(650),
        "{waits:?}"
    );
    // The right password pays the penalty too (otherwise timing would tell it apart).
    let started = Instant::now();
    assert!(login(&gate, "user1", "pass1").await.starts_with("a OK"));
    assert!(started.elapsed() >= Duration::from_millis(500));
    gate.stop().await;
}

#[tokio::test]
async fn trusted_networks_are_exempt_from_the_penalty() {
    let (_fake, gate) = gate_with_settings(&[
        "trusted_networks = [\"127.0.0.0/8\"]",
        "auth_penalty_initial = \"2s\"",
    ])
    .await;
    for _ in 0..3 {
        login(&gate, "user1", "wrong").await;
    }
    let started = Instant::now();
    assert!(login(&gate, "user1", "pass1").await.starts_with("a OK"));
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    gate.stop().await;
}

#[tokio::test]
async fn unknown_wrong_and_disabled_take_the_same_time() {
    let (_fake, gate) = gate_with_fake(
        Script::with_login_delay(Duration::from_millis(50)),
        JOHN_AND_JANE,
    )
    .await;
    let mut means = Vec::new();
    for user in [
        "nobody@example.com",
        "john.smith@example.com",
        "jane@example.com",
    ] {
        let mut total = Duration::ZERO;
        for _ in 0..8 {
            let started = Instant::now();
            let r = login(&gate, user, "wrong").await;
            total += started.elapsed();
            assert_eq!(r, "a NO [AUTHENTICATIONFAILED] LOGIN failed.", "{user}");
        }
        means.push(total / 8);
    }
    let (min, max) = (
        means.iter().min().copied().unwrap_or_default(),
        means.iter().max().copied().unwrap_or_default(),
    );
    assert!(
        max - min < Duration::from_millis(25),
        "mean latencies differ: {means:?}"
    );
    gate.stop().await;
}
