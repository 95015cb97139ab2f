//! Two gates of one fleet sharing state on a real Redis (Debian's redis-server), in front of one
//! backend and one directory: the per-mailbox session limit counts both gates, a change made
//! through one gate closes the mailbox's session on the other within a second, `sessions
//! --fleet` and `kick --fleet` reach both, the failed-login penalty is shared, and with Redis
//! gone logins go on (local limits) until it returns and the fleet counts again.

mod common;

use std::time::{Duration, Instant};

use common::daemon::{cli, mailbox_set};
use common::fake::{FakeBackend, Script};
use common::redis::{self, Redis};
use common::{last, Client, GateConfig, TestGate};

const DIRECTORY: &str = r#"
[[mailbox]]
name = "John Smith"
alias = "jsmith"
login = "user1"

[[mailbox]]
name = "Sam Lee"
alias = "sam"
login = "user3"
"#;

struct Fleet {
    _fake: FakeBackend,
    a: TestGate,
    b: TestGate,
}

fn fleet_section(redis: &Redis, node: &str) -> String {
    format!(
        "[fleet]\nredis = {:?}\nnode = {node:?}\nlease = \"6s\"\n\n\
         [admin]\ncontrol_socket = \"control.sock\"\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n",
        redis.url()
    )
}

/// Gates `gate-a` and `gate-b` on `redis`, both reading gate A's mailboxes file, both with
/// `settings` in `[imap4]`; returns once both share state on Redis.
async fn two_gates(redis: &Redis, settings: &[&str]) -> Fleet {
    let fake = FakeBackend::start(Script::default()).await;
    let configure = |c: GateConfig| settings.iter().fold(c, |c, l| c.imap4(l));
    let a = configure(GateConfig::new(&fake.address()))
        .mailboxes(DIRECTORY)
        .section(&fleet_section(redis, "gate-a"))
        .start()
        .await;
    let b = configure(GateConfig::new(&fake.address()))
        .shared_mailboxes(&a.mailboxes_path())
        .section(&fleet_section(redis, "gate-b"))
        .start()
        .await;
    for gate in [&a, &b] {
        wait_for_redis(gate, true).await;
    }
    Fleet { _fake: fake, a, b }
}

async fn wait_for_redis(gate: &TestGate, up: bool) {
    let want = format!("imapgate_fleet_redis_up {}", u8::from(up));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = common::scrape(gate.metrics.expect("metrics")).await;
        if text.lines().any(|l| l == want) {
            return;
        }
        assert!(Instant::now() < deadline, "never {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The fake backend's password of each directory entry.
fn password(user: &str) -> &'static str {
    if user == "sam" {
        "pass3"
    } else {
        "pass1"
    }
}

async fn logged_in(gate: &TestGate, user: &str) -> Client {
    gate.logged_in(user, password(user)).await
}

async fn try_login(gate: &TestGate, user: &str) -> String {
    common::login(gate, user, password(user)).await
}

/// Retries a login until it gets `want` (a prefix) or `within` passes; the last answer.
async fn login_until(gate: &TestGate, user: &str, want: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let answer = try_login(gate, user).await;
        if answer.starts_with(want) || Instant::now() >= deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_session_limit_counts_both_gates() {
    if !redis::available() {
        return;
    }
    let redis = Redis::start();
    let f = two_gates(&redis, &["max_connections_per_user = 3"]).await;
    let mut held = vec![
        logged_in(&f.a, "jsmith").await,
        logged_in(&f.a, "jsmith").await,
        logged_in(&f.b, "jsmith").await,
    ];
    for gate in [&f.a, &f.b] {
        let r = try_login(gate, "jsmith").await;
        assert!(r.starts_with("a NO [LIMIT]"), "{r}");
    }
    // Another mailbox is not affected.
    assert!(try_login(&f.b, "sam").await.starts_with("a OK"));
    // One session ends on A: B may log in one more.
    let mut first = held.remove(0);
    first.cmd("z", "LOGOUT").await;
    let r = login_until(&f.b, "jsmith", "a OK", Duration::from_secs(1)).await;
    assert!(r.starts_with("a OK"), "{r}");
    f.a.stop().await;
    f.b.stop().await;
}

#[tokio::test]
async fn a_change_through_one_gate_closes_the_session_on_the_other_within_a_second() {
    if !redis::available() {
        return;
    }
    let redis = Redis::start();
    let f = two_gates(&redis, &[]).await;
    let mut on_b = logged_in(&f.b, "jsmith").await;
    let started = Instant::now();
    let (ok, out, err) = mailbox_set(&f.a.config_path, "jsmith", false, &[]).await;
    assert!(ok, "{out}{err}");
    assert!(
        on_b.closed_within(Duration::from_secs(1)).await,
        "gate B closed John's session"
    );
    eprintln!(
        "closed on gate B {:?} after mailbox set on gate A",
        started.elapsed()
    );
    let r = try_login(&f.b, "jsmith").await;
    assert!(r.starts_with("a NO [CONTACTADMIN]"), "{r}");
    // And back on: B lets him in again (its cache was emptied for the mailbox).
    let (ok, _, err) = mailbox_set(&f.a.config_path, "jsmith", true, &[]).await;
    assert!(ok, "{err}");
    let r = login_until(&f.b, "jsmith", "a OK", Duration::from_secs(1)).await;
    assert!(r.starts_with("a OK"), "{r}");
    f.a.stop().await;
    f.b.stop().await;
}

#[tokio::test]
async fn sessions_and_kick_reach_every_gate() {
    if !redis::available() {
        return;
    }
    let redis = Redis::start();
    let f = two_gates(&redis, &[]).await;
    let mut on_a = logged_in(&f.a, "jsmith").await;
    let mut on_b = logged_in(&f.b, "jsmith").await;
    let _sam = logged_in(&f.b, "sam").await;
    let (ok, out, err) = cli(&f.a.config_path, &["sessions", "--fleet"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("3 session(s)"), "{out}");
    for node in ["gate-a", "gate-b"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(node) && l.contains("jsmith")),
            "{out}"
        );
    }
    let (ok, out, err) = cli(
        &f.b.config_path,
        &["sessions", "--fleet", "--format", "json"],
    )
    .await;
    assert!(ok, "{err}");
    let all: Vec<serde_json::Value> = serde_json::from_str(&out).expect("json");
    assert_eq!(all.len(), 3, "{out}");
    let (ok, out, err) = cli(
        &f.b.config_path,
        &["kick", "--fleet", "--identity", "John Smith"],
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("2 session(s) closed on 2 gate(s)"), "{out}");
    assert!(on_a.closed_within(Duration::from_secs(2)).await);
    assert!(on_b.closed_within(Duration::from_secs(2)).await);
    f.a.stop().await;
    f.b.stop().await;
}

#[tokio::test]
async fn the_failed_login_penalty_is_shared() {
    if !redis::available() {
        return;
    }
    let redis = Redis::start();
    let f = two_gates(
        &redis,
        &["trusted_networks = []", "auth_penalty_initial = \"700ms\""],
    )
    .await;
    let mut c = Client::plain_from([127, 0, 0, 41], f.a.plain).await;
    c.greeting().await;
    let r = c.cmd("a", "LOGIN jsmith wrong").await;
    assert!(last(&r).starts_with("a NO"), "{r:?}");
    // The count reaches Redis in a task of its own.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut d = Client::plain_from([127, 0, 0, 41], f.b.plain).await;
    d.greeting().await;
    let started = Instant::now();
    let r = d.cmd("b", "LOGIN jsmith pass1").await;
    assert!(last(&r).starts_with("b OK"), "{r:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(650),
        "gate B applied gate A's penalty: {:?}",
        started.elapsed()
    );
    f.a.stop().await;
    f.b.stop().await;
}

#[tokio::test]
async fn without_redis_logins_go_on_and_the_fleet_counts_again_when_it_returns() {
    if !redis::available() {
        return;
    }
    let mut redis = Redis::start();
    let f = two_gates(&redis, &["max_connections_per_user = 2"]).await;
    let mut on_a = vec![logged_in(&f.a, "jsmith").await];
    redis.stop();
    // Logins never fail because Redis is down: each gate counts alone (2 each).
    on_a.push(logged_in(&f.a, "jsmith").await);
    let _on_b = [
        logged_in(&f.b, "jsmith").await,
        logged_in(&f.b, "jsmith").await,
    ];
    for gate in [&f.a, &f.b] {
        wait_for_redis(gate, false).await;
        let r = try_login(gate, "jsmith").await;
        assert!(
            r.starts_with("a NO [LIMIT]"),
            "local limit still holds: {r}"
        );
    }
    // Redis back, empty: each gate puts its leases back (those counted alone included).
    redis.start_again();
    for gate in [&f.a, &f.b] {
        wait_for_redis(gate, true).await;
    }
    // A's sessions end: A alone would let John in again, but B's two count on the fleet.
    for mut c in on_a {
        c.cmd("z", "LOGOUT").await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = try_login(&f.a, "jsmith").await;
    assert!(
        r.starts_with("a NO [LIMIT]"),
        "counted across the gates again: {r}"
    );
    f.a.stop().await;
    f.b.stop().await;
}

/// A gate that dies (SIGKILL: no logout, no release) stops counting when its leases end.
#[tokio::test]
async fn the_sessions_of_a_gate_that_died_stop_counting_when_their_leases_end() {
    if !redis::available() {
        return;
    }
    let redis = Redis::start();
    let fake = FakeBackend::start(Script::default()).await;
    let (dir, config) = GateConfig::new(&fake.address())
        .imap4("max_connections_per_user = 2")
        .mailboxes(DIRECTORY)
        .section(&fleet_section(&redis, "gate-a"))
        .write();
    let (mut a, port) = common::daemon::Daemon::start(&config).await;
    a.wait_for("fleet: Redis reachable").await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let (c, answer) = common::login_at(port, "jsmith", "pass1").await;
        assert!(answer.starts_with("a OK"), "{answer}");
        held.push(c);
    }
    let b = GateConfig::new(&fake.address())
        .imap4("max_connections_per_user = 2")
        .shared_mailboxes(&dir.path().join("mailboxes.toml"))
        .section(&fleet_section(&redis, "gate-b"))
        .start()
        .await;
    wait_for_redis(&b, true).await;
    let r = try_login(&b, "jsmith").await;
    assert!(r.starts_with("a NO [LIMIT]"), "{r}");
    a.signal("-KILL");
    let killed = Instant::now();
    let r = try_login(&b, "jsmith").await;
    assert!(r.starts_with("a NO [LIMIT]"), "the leases still run: {r}");
    let r = login_until(&b, "jsmith", "a OK", Duration::from_secs(10)).await;
    assert!(r.starts_with("a OK"), "{r}");
    let after = killed.elapsed();
    eprintln!("gate A's sessions stopped counting {after:?} after it died (lease 6 s)");
    assert!(after <= Duration::from_secs(7), "{after:?}");
    drop(held);
    b.stop().await;
}
