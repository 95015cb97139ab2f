//! Login outcomes against the scriptable fake backend: failed, disabled, unavailable, success and
//! the relay after it.

mod common;

use std::time::{Duration, Instant};

use common::fake::{FakeBackend, Greeting, Script};
use common::{closed_port, last, GateConfig};

const MAILBOXES: &str = r#"
[defaults]
imap_enabled = true

[[mailbox]]
name = "John Smith"
alias = "jsmith"
email = "john.smith@example.com"
domain_account = "CORP\\jsmith"
login = "user1"

[[mailbox]]
name = "Jane Doe"
email = "jane@example.com"
login = "user2"
imap_enabled = false
"#;

async fn login(gate: &common::TestGate, user: &str, pass: &str) -> String {
    let mut c = gate.plain().await;
    c.greeting().await;
    let r = c.cmd("a", &format!("LOGIN \"{user}\" \"{pass}\"")).await;
    last(&r).to_string()
}

#[tokio::test]
async fn wrong_password_unknown_user_and_disabled_with_wrong_password_look_the_same() {
    let fake = FakeBackend::start(Script::default()).await;
    let gate = GateConfig::new(&fake.address())
        .mailboxes(MAILBOXES)
        .start()
        .await;
    let failed = "a NO [AUTHENTICATIONFAILED] LOGIN failed.";
    assert_eq!(login(&gate, "user1", "wrong").await, failed);
    assert_eq!(login(&gate, "nobody", "pass1").await, failed);
    assert_eq!(login(&gate, "jane@example.com", "wrong").await, failed);
    assert_eq!(login(&gate, "user2", "wrong").await, failed);
    gate.stop().await;
}

#[tokio::test]
async fn disabled_mailbox_with_the_right_password_is_told_and_logged_out_of_the_backend() {
    let fake = FakeBackend::start(Script::default()).await;
    let gate = GateConfig::new(&fake.address())
        .mailboxes(MAILBOXES)
        .start()
        .await;
    // "user2" is the name the backend knows her by: it must not bypass the flag.
    for name in ["jane@example.com", "JANE@EXAMPLE.COM", "user2"] {
        assert_eq!(
            login(&gate, name, "pass2").await,
            "a NO [CONTACTADMIN] IMAP4 access is disabled for this mailbox."
        );
    }
    // Each refused session was logged in on the backend (as user2), then logged out.
    let logins = fake.named("AUTHENTICATE");
    assert_eq!(logins.len(), 3, "{:?}", fake.commands());
    assert_eq!(fake.named("LOGOUT").len(), 3, "{:?}", fake.commands());
    gate.stop().await;
}

#[tokio::test]
async fn disabled_text_is_configurable() {
    let fake = FakeBackend::start(Script::default()).await;
    let gate = GateConfig::new(&fake.address())
        .imap4("disabled_message = \"IMAP is off for you; see https://help.example.com/imap\"")
        .mailboxes(MAILBOXES)
        .start()
        .await;
    assert_eq!(
        login(&gate, "user2", "pass2").await,
        "a NO [CONTACTADMIN] IMAP is off for you; see https://help.example.com/imap"
    );
    gate.stop().await;
}

#[tokio::test]
async fn every_identity_form_maps_to_the_backend_login() {
    let fake = FakeBackend::start(Script::default()).await;
    let gate = GateConfig::new(&fake.address())
        .mailboxes(MAILBOXES)
        .start()
        .await;
    for name in [
        "jsmith",
        "John.Smith@Example.com",
        "corp\\jsmith",
        "CORP/JSMITH",
    ] {
        let quoted = name.replace('\\', "\\\\");
        let r = login(&gate, &quoted, "pass1").await;
        assert!(r.starts_with("a OK [CAPABILITY"), "{name}: {r}");
    }
    // The backend only ever saw user1 (AUTHENTICATE PLAIN of "\0user1\0pass1").
    let sent = fake.named("AUTHENTICATE");
    assert_eq!(sent.len(), 4);
    assert!(
        sent.iter().all(|c| c.ends_with("PLAIN AHVzZXIxAHBhc3Mx")),
        "{sent:?}"
    );
    gate.stop().await;
}

#[tokio::test]
async fn login_without_auth_plain_uses_quoted_strings_or_literals() {
    let script = Script {
        caps: "IMAP4rev1 ID".into(),
        ..Script::default()
    };
    let fake = FakeBackend::start(script).await;
    let gate = GateConfig::new(&fake.address()).start().await;
    assert!(login(&gate, "user1", "pass1").await.starts_with("a OK"));
    let mut c = gate.plain().await;
    c.greeting().await;
    let r = c.cmd("b", r#"LOGIN tricky "p\"a\\ss {3}""#).await;
    assert!(last(&r).starts_with("b OK"), "{r:?}");
    let mut c = gate.plain().await;
    c.greeting().await;
    let pw = "pässwörd✓";
    c.send(format!("c LOGIN utf8 {{{}+}}\r\n{pw}\r\n", pw.len()).as_bytes())
        .await;
    let r = c.until_tag("c").await;
    assert!(last(&r).starts_with("c OK"), "{r:?}");
    let logins = fake.named("LOGIN");
    assert_eq!(
        logins[0].split_once(' ').unwrap().1,
        "LOGIN \"user1\" \"pass1\""
    );
    // No LITERAL+ on this backend: synchronizing literals, sent after the backend's `+`.
    assert_eq!(
        logins[1].split_once(' ').unwrap().1,
        "LOGIN \"tricky\" {10}\r\np\"a\\ss {3}"
    );
    assert_eq!(
        logins[2].split_once(' ').unwrap().1,
        format!("LOGIN \"utf8\" {{{}}}\r\n{pw}", pw.len())
    );
    gate.stop().await;
}

#[tokio::test]
async fn unreachable_or_broken_backends_get_unavailable_promptly() {
    let unavailable = "a NO [UNAVAILABLE] The mailbox server is not available; try again later.";
    let closed = format!("127.0.0.1:{}", closed_port());
    let never = FakeBackend::start(Script {
        greeting: Greeting::Never,
        ..Script::default()
    })
    .await;
    let garbage = FakeBackend::start(Script {
        greeting: Greeting::Garbage,
        ..Script::default()
    })
    .await;
    let bye = FakeBackend::start(Script {
        greeting: Greeting::Bye,
        ..Script::default()
    })
    .await;
    let closes = FakeBackend::start(Script {
        close_during_login: true,
        ..Script::default()
    })
    .await;
    let slow = FakeBackend::start(Script {
        login_delay: Duration::from_secs(30),
        ..Script::default()
    })
    .await;
    for (what, address) in [
        ("refused", closed),
        ("never greets", never.address()),
        ("garbage greeting", garbage.address()),
        ("BYE greeting", bye.address()),
        ("closes during login", closes.address()),
        ("slow login", slow.address()),
    ] {
        let gate = GateConfig::new(&address)
            .backend(
                "main",
                &format!(
                    "address = \"{address}\"\nconnect_timeout = \"1s\"\nlogin_timeout = \"1s\""
                ),
            )
            .start()
            .await;
        let started = Instant::now();
        let mut c = gate.plain().await;
        c.greeting().await;
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
async fn success_relays_everything_after_the_tagged_ok() {
    let fake = FakeBackend::start(Script::default()).await;
    let gate = GateConfig::new(&fake.address()).start().await;
    let mut c = gate.plain().await;
    c.greeting().await;
    // A command pipelined behind LOGIN reaches the backend after the login.
    c.send(b"a LOGIN user1 pass1\r\nb NOOP\r\n").await;
    assert_eq!(
        c.line().await,
        "a OK [CAPABILITY IMAP4rev1 IDLE COMPRESS=DEFLATE X-FAKE-POSTLOGIN] Logged in"
    );
    assert_eq!(c.line().await, "b OK NOOP done");
    // IDLE passes through.
    c.send(b"i IDLE\r\n").await;
    assert_eq!(c.line().await, "+ idling");
    c.send(b"DONE\r\n").await;
    assert_eq!(c.line().await, "i OK IDLE terminated");
    // A large literal passes through whole.
    let n = 3 * 1024 * 1024;
    c.send(format!("f XBIG {n}\r\n").as_bytes()).await;
    assert_eq!(c.line().await, format!("* 1 FETCH (BODY[] {{{n}}}"));
    let body = c.read_exact(n).await;
    assert!(body
        .chunks(28)
        .all(|l| b"abcdefghijklmnopqrstuvwxyz\r\n".starts_with(l)));
    assert_eq!(c.line().await, ")");
    assert_eq!(c.line().await, "f OK FETCH done");
    // Commands the gate would refuse before login are the backend's business now.
    assert_eq!(c.cmd("s", "SELECT INBOX").await, vec!["s OK SELECT done"]);
    gate.stop().await;
}

#[tokio::test]
async fn capabilities_are_fetched_when_the_backend_ok_lacks_them() {
    let fake = FakeBackend::start(Script {
        caps_in_ok: false,
        ..Script::default()
    })
    .await;
    let gate = GateConfig::new(&fake.address()).start().await;
    assert_eq!(
        login(&gate, "user1", "pass1").await,
        "a OK [CAPABILITY IMAP4rev1 IDLE COMPRESS=DEFLATE X-FAKE-POSTLOGIN] Logged in"
    );
    gate.stop().await;
}

#[tokio::test]
async fn four_failed_logins_end_the_connection() {
    let fake = FakeBackend::start(Script::default()).await;
    let gate = GateConfig::new(&fake.address()).start().await;
    let mut c = gate.plain().await;
    c.greeting().await;
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
async fn backend_dying_mid_fetch_gives_the_client_what_arrived_then_closes() {
    let fake = FakeBackend::start(Script::default()).await;
    let gate = GateConfig::new(&fake.address()).start().await;
    let mut c = gate.plain().await;
    c.greeting().await;
    c.cmd("a", "LOGIN user1 pass1").await;
    c.send(b"f XDIE 100000\r\n").await;
    assert_eq!(c.line().await, "* 1 FETCH (BODY[] {100000}");
    let mut got = 0;
    while let Ok(Some(l)) = c.try_line(Duration::from_secs(5)).await {
        got += l.len() + 2;
    }
    // Half the literal arrived (the last partial line has no CRLF, hence the slack); nothing else.
    assert!((49_990..=50_002).contains(&got), "{got}");
    gate.stop().await;
}

#[tokio::test]
async fn a_backend_trickling_lines_cannot_stretch_a_login() {
    let fake = FakeBackend::start(Script {
        greeting: Greeting::Trickle,
        ..Script::default()
    })
    .await;
    let gate = GateConfig::new(&fake.address()).start().await;
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
async fn shutdown_during_a_backend_login_says_bye() {
    let fake = FakeBackend::start(Script {
        login_delay: Duration::from_secs(30),
        ..Script::default()
    })
    .await;
    let gate = GateConfig::new(&fake.address())
        .backend(
            "main",
            &format!("address = \"{}\"\nlogin_timeout = \"60s\"", fake.address()),
        )
        .start()
        .await;
    let mut c = gate.plain().await;
    c.greeting().await;
    c.send(b"a LOGIN user1 pass1\r\n").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let handle = gate.handle.clone();
    let stopping = tokio::spawn(gate.stop());
    handle.shutdown();
    assert_eq!(c.line().await, "* BYE [UNAVAILABLE] Server shutting down.");
    stopping.await.expect("stopped");
}

#[tokio::test]
async fn untagged_lines_and_response_codes_of_the_backend_reach_the_client() {
    let fake = FakeBackend::start(Script {
        login_ok: Some("OK [ALERT] Your password expires in 3 days".into()),
        login_untagged: vec!["* OK [ALERT] Maintenance tonight".into()],
        ..Script::default()
    })
    .await;
    let gate = GateConfig::new(&fake.address()).start().await;
    let mut c = gate.plain().await;
    c.greeting().await;
    let r = c.cmd("a", "LOGIN user1 pass1").await;
    assert_eq!(
        r,
        vec![
            "* OK [ALERT] Maintenance tonight",
            "* CAPABILITY IMAP4rev1 IDLE COMPRESS=DEFLATE X-FAKE-POSTLOGIN",
            "a OK [ALERT] Your password expires in 3 days",
        ]
    );
    gate.stop().await;
}

#[tokio::test]
async fn a_backend_saying_unavailable_is_reported_as_unavailable() {
    let fake = FakeBackend::start(Script {
        login_reply: Some("NO [UNAVAILABLE] Maintenance".into()),
        ..Script::default()
    })
    .await;
    let gate = GateConfig::new(&fake.address()).start().await;
    assert!(login(&gate, "user1", "pass1")
        .await
        .starts_with("a NO [UNAVAILABLE]"));
    gate.stop().await;
}

#[tokio::test]
async fn names_without_a_mailbox_never_enter_the_cache_and_long_names_are_refused() {
    let fake = FakeBackend::start(Script::default()).await;
    let gate = GateConfig::new(&fake.address())
        .mailboxes(MAILBOXES)
        .start()
        .await;
    let mut c = gate.plain().await;
    c.greeting().await;
    for i in 0..3 {
        let r = c
            .cmd(&format!("t{i}"), &format!("LOGIN nobody{i}@example.com x"))
            .await;
        assert!(last(&r).contains("[AUTHENTICATIONFAILED]"));
    }
    assert_eq!(gate.handle.state().policies.cached_entries(), 0);
    assert!(login(&gate, "jsmith", "pass1").await.starts_with("a OK"));
    assert_eq!(gate.handle.state().policies.cached_entries(), 1);
    let before = fake.commands().len();
    let long = "x".repeat(300);
    assert_eq!(
        login(&gate, &long, "pass1").await,
        "a NO [AUTHENTICATIONFAILED] LOGIN failed."
    );
    assert_eq!(
        fake.commands().len(),
        before,
        "a 300-byte name never reaches the backend"
    );
    gate.stop().await;
}

#[tokio::test]
async fn id_towards_the_backend_stays_within_30_pairs() {
    let fake = FakeBackend::start(Script::default()).await;
    let gate = GateConfig::new(&fake.address()).start().await;
    let mut c = gate.plain().await;
    c.greeting().await;
    let pairs: Vec<String> = (0..30).map(|i| format!("\"k{i}\" \"v{i}\"")).collect();
    c.cmd("i", &format!("ID ({})", pairs.join(" "))).await;
    assert!(last(&c.cmd("a", "LOGIN user1 pass1").await).starts_with("a OK"));
    let id = &fake.named("ID")[0];
    let quoted = id.matches('"').count();
    assert_eq!(quoted / 4, 30, "{id}");
    gate.stop().await;
}
