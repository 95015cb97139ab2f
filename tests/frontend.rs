//! The IMAP4 service before login: greeting, capabilities per login_type, STARTTLS, ID, literals,
//! AUTHENTICATE, bad input. Backend: the scriptable fake.

mod common;

use std::time::Duration;

use base64::Engine;
use common::fake::{FakeBackend, Script};
use common::fixtures::{gate_for, gate_with_fake, gate_with_settings, FAKE_USERS};
use common::last;

fn caps_of(line: &str) -> Vec<String> {
    let start = line.find("CAPABILITY ").map(|i| i + 11).unwrap_or(0);
    let rest = &line[start..];
    let end = rest.find(']').unwrap_or(rest.len());
    rest[..end].split(' ').map(String::from).collect()
}

#[tokio::test]
async fn capabilities_follow_login_type_and_tls() {
    let fake = FakeBackend::start(Script::default()).await;
    for (login_type, plain_has, plain_lacks) in [
        (
            "secure-login",
            vec!["STARTTLS", "LOGINDISABLED"],
            vec!["AUTH=PLAIN", "AUTH=LOGIN", "SASL-IR"],
        ),
        (
            "plain-text-authentication",
            vec!["STARTTLS", "LOGINDISABLED", "AUTH=PLAIN", "AUTH=LOGIN"],
            vec![],
        ),
        (
            "plain-text-login",
            vec!["STARTTLS", "AUTH=PLAIN", "AUTH=LOGIN", "SASL-IR"],
            vec!["LOGINDISABLED"],
        ),
    ] {
        let gate = gate_for(&fake, FAKE_USERS, |config| {
            config.imap4(&format!("login_type = \"{login_type}\""))
        })
        .await;
        let mut c = gate.plain().await;
        let greeting = c.greeting().await;
        assert!(
            greeting.ends_with("The imapgate IMAP4 service is ready."),
            "{greeting}"
        );
        let caps = caps_of(&greeting);
        for cap in ["IMAP4rev1", "ID", "LITERAL+"].iter().chain(&plain_has) {
            assert!(
                caps.iter().any(|c| c == cap),
                "{login_type}: {cap} missing in {caps:?}"
            );
        }
        for cap in &plain_lacks {
            assert!(
                !caps.iter().any(|c| c == cap),
                "{login_type}: {cap} present in {caps:?}"
            );
        }
        let r = c.cmd("a", "CAPABILITY").await;
        assert_eq!(caps_of(&r[0]), caps, "CAPABILITY matches the greeting");
        assert_eq!(last(&r), "a OK CAPABILITY completed.");

        // After STARTTLS and on the implicit-TLS port everything is allowed, and STARTTLS is gone.
        let mut c = c.starttls().await;
        let r = c.cmd("b", "CAPABILITY").await;
        let caps = caps_of(&r[0]);
        assert!(caps.contains(&"AUTH=PLAIN".to_string()), "{caps:?}");
        assert!(!caps.contains(&"LOGINDISABLED".to_string()), "{caps:?}");
        assert!(!caps.contains(&"STARTTLS".to_string()), "{caps:?}");
        let r = c.cmd("c", "STARTTLS").await;
        assert!(last(&r).starts_with("c BAD"), "{r:?}");
        let mut t = gate.implicit_tls().await;
        let caps = caps_of(&t.greeting().await);
        assert!(
            caps.contains(&"AUTH=PLAIN".to_string()) && !caps.contains(&"STARTTLS".to_string())
        );
        gate.stop().await;
    }
}

#[tokio::test]
async fn secure_login_refuses_credentials_before_tls_without_contacting_the_backend() {
    let (fake, gate) = gate_with_settings(&["login_type = \"secure-login\""]).await;
    let mut c = gate.greeted().await;
    let r = c.cmd("a", "LOGIN user1 pass1").await;
    assert!(last(&r).starts_with("a NO [PRIVACYREQUIRED]"), "{r:?}");
    let r = c.cmd("b", "AUTHENTICATE PLAIN AHVzZXIxAHBhc3Mx").await;
    assert!(last(&r).starts_with("b NO [PRIVACYREQUIRED]"), "{r:?}");
    assert!(
        fake.commands().is_empty(),
        "backend was contacted: {:?}",
        fake.commands()
    );
    // The same login works once TLS is on.
    let mut c = c.starttls().await;
    let r = c.cmd("c", "LOGIN user1 pass1").await;
    assert!(last(&r).starts_with("c OK"), "{r:?}");
    gate.stop().await;
}

#[tokio::test]
async fn noop_logout_and_bad_commands() {
    let (_fake, gate) = gate_with_fake(Script::default(), FAKE_USERS).await;
    let mut c = gate.greeted().await;
    assert_eq!(c.cmd("a", "NOOP").await, vec!["a OK NOOP completed."]);
    let r = c.cmd("b", "SELECT INBOX").await;
    assert_eq!(last(&r), "b BAD Command is not valid before login.");
    let r = c.cmd("c", "FROB").await;
    assert_eq!(last(&r), "c BAD Command not understood.");
    c.send(b"\r\n").await;
    assert_eq!(c.line().await, "* BAD Command not understood.");
    let r = c.cmd("d", "LOGOUT").await;
    assert_eq!(r, vec!["* BYE Logging out.", "d OK LOGOUT completed."]);
    assert!(c.closed_within(Duration::from_secs(2)).await);
    gate.stop().await;
}

#[tokio::test]
async fn too_many_bad_commands_end_the_session() {
    let (_fake, gate) = gate_with_settings(&["max_bad_commands = 3"]).await;
    let mut c = gate.greeted().await;
    c.cmd("a", "FROB").await;
    c.cmd("b", "FROB").await;
    let r = c.cmd("c", "FROB").await;
    assert_eq!(last(&r), "c BAD Command not understood.");
    assert_eq!(c.line().await, "* BYE Too many invalid commands.");
    assert!(c.closed_within(Duration::from_secs(2)).await);
    gate.stop().await;
}

#[tokio::test]
async fn id_is_answered_and_forwarded_with_the_client_address() {
    let (fake, gate) = gate_with_fake(Script::default(), FAKE_USERS).await;
    let mut c = gate.greeted().await;
    let r = c
        .cmd(
            "a",
            "ID (\"name\" \"mutt\" \"x-originating-ip\" \"6.6.6.6\")",
        )
        .await;
    assert!(r[0].starts_with("* ID (\"name\" \"imapgate\""), "{r:?}");
    assert_eq!(last(&r), "a OK ID completed.");
    let r = c.cmd("b", "LOGIN user1 pass1").await;
    assert!(last(&r).starts_with("b OK"), "{r:?}");
    let ids = fake.named("ID");
    assert_eq!(ids.len(), 1, "{:?}", fake.commands());
    assert!(ids[0].contains("\"name\" \"mutt\""), "{}", ids[0]);
    assert!(
        ids[0].contains("\"x-originating-ip\" \"127.0.0.1\""),
        "{}",
        ids[0]
    );
    assert!(
        !ids[0].contains("6.6.6.6"),
        "client-supplied x- fields are dropped: {}",
        ids[0]
    );
    gate.stop().await;
}

#[tokio::test]
async fn literals_sync_and_literal_plus_carry_utf8_passwords() {
    let (_fake, gate) = gate_with_fake(Script::default(), FAKE_USERS).await;
    let password = "pässwörd✓";
    // Synchronizing: the gate must say `+` before the client sends the literal.
    let mut c = gate.greeted().await;
    c.send(format!("a LOGIN utf8 {{{}}}\r\n", password.len()).as_bytes())
        .await;
    assert!(c.line().await.starts_with("+ "), "continuation expected");
    c.send(format!("{password}\r\n").as_bytes()).await;
    let r = c.until_tag("a").await;
    assert!(last(&r).starts_with("a OK [CAPABILITY"), "{r:?}");
    // LITERAL+: no continuation, everything in one write.
    let mut c = gate.greeted().await;
    c.send(
        format!(
            "b LOGIN {{4+}}\r\nutf8 {{{}+}}\r\n{password}\r\n",
            password.len()
        )
        .as_bytes(),
    )
    .await;
    let r = c.until_tag("b").await;
    assert_eq!(r.len(), 1, "no continuation for LITERAL+: {r:?}");
    assert!(last(&r).starts_with("b OK"), "{r:?}");
    // UTF-8 inside a quoted string (8-bit quoted strings are outside IMAP4rev1, but clients send
    // them and servers such as Dovecot accept them).
    let mut c = gate.greeted().await;
    let r = c.cmd("u", &format!("LOGIN utf8 \"{password}\"")).await;
    assert!(last(&r).starts_with("u OK"), "{r:?}");
    // Quotes, backslashes and braces in a quoted password.
    let mut c = gate.greeted().await;
    let r = c.cmd("c", r#"LOGIN tricky "p\"a\\ss {3}""#).await;
    assert!(last(&r).starts_with("c OK"), "{r:?}");
    gate.stop().await;
}

#[tokio::test]
async fn a_literal_over_the_limit_is_refused_before_it_is_sent() {
    let (_fake, gate) = gate_with_fake(Script::default(), FAKE_USERS).await;
    let mut c = gate.greeted().await;
    c.send(b"a LOGIN user1 {20000}\r\n").await;
    assert_eq!(
        c.line().await,
        "a BAD [TOOBIG] Command exceeds the size limit."
    );
    // The session goes on.
    assert_eq!(c.cmd("b", "NOOP").await, vec!["b OK NOOP completed."]);
    // A LITERAL+ literal over the limit cannot be refused politely: BYE.
    c.send(b"c LOGIN user1 {20000+}\r\n").await;
    assert_eq!(
        c.line().await,
        "* BYE [TOOBIG] Command exceeds the size limit."
    );
    assert!(c.closed_within(Duration::from_secs(2)).await);
    gate.stop().await;
}

#[tokio::test]
async fn a_command_line_over_the_limit_is_answered_and_the_session_goes_on() {
    let (fake, gate) = gate_with_fake(Script::default(), FAKE_USERS).await;
    let mut c = gate.greeted().await;
    // ImapTest's `id` script: an ID of 31,807 bytes, over the 10,240-byte default, with a
    // LITERAL+ literal inside (skipped by count, whatever it holds) and a command behind it.
    let mut id = b"a ID (".to_vec();
    while id.len() < 29_000 {
        id.extend_from_slice(format!("\"k{}\" \"{}\" ", id.len(), "v".repeat(1000)).as_bytes());
    }
    id.extend_from_slice(b"\"lit\" {12+}\r\nb LOGOUT\r\n\r\n");
    id.resize(31_807 - 6, b' ');
    id.extend_from_slice(b"\"z\")\r\n");
    assert_eq!(id.len(), 31_807);
    id.extend_from_slice(b"c NOOP\r\n");
    c.send(&id).await;
    assert_eq!(
        c.line().await,
        "a BAD [TOOBIG] Command exceeds the size limit."
    );
    assert_eq!(c.line().await, "c OK NOOP completed.");
    // Sent slowly, a byte at a time around the end, it is the same.
    c.send(&[b'y'; 12_000]).await;
    for b in b" x\r\n" {
        c.send(&[*b]).await;
    }
    assert_eq!(
        c.line().await,
        "* BAD [TOOBIG] Command exceeds the size limit."
    );
    // A synchronizing literal announced past the limit is never answered `+`: the client
    // abandons the command, and the next one is read.
    let mut long = b"d ID (\"x\" ".to_vec();
    long.extend_from_slice(&[b'y'; 11_000]);
    long.extend_from_slice(b" {5}\r\n");
    c.send(&long).await;
    assert_eq!(
        c.line().await,
        "d BAD [TOOBIG] Command exceeds the size limit."
    );
    assert_eq!(c.cmd("e", "NOOP").await, vec!["e OK NOOP completed."]);
    assert!(fake.commands().is_empty());
    gate.stop().await;
}

#[tokio::test]
async fn authenticate_plain_with_and_without_initial_response() {
    let (fake, gate) = gate_with_fake(Script::default(), FAKE_USERS).await;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut c = gate.greeted().await;
    let r = c
        .cmd(
            "a",
            &format!("AUTHENTICATE PLAIN {}", b64("\0user1\0pass1")),
        )
        .await;
    assert!(
        last(&r).starts_with("a OK [CAPABILITY IMAP4rev1 IDLE"),
        "{r:?}"
    );

    let mut c = gate.greeted().await;
    c.send(b"b AUTHENTICATE PLAIN\r\n").await;
    assert_eq!(c.line().await, "+ ");
    c.send(format!("{}\r\n", b64("user1\0user1\0pass1")).as_bytes())
        .await;
    let r = c.until_tag("b").await;
    assert!(last(&r).starts_with("b OK"), "{r:?}");

    let mut c = gate.greeted().await;
    c.send(b"c AUTHENTICATE PLAIN\r\n").await;
    assert_eq!(c.line().await, "+ ");
    c.send(b"*\r\n").await;
    assert_eq!(c.line().await, "c BAD AUTHENTICATE cancelled.");
    let r = c
        .cmd(
            "d",
            &format!("AUTHENTICATE PLAIN {}", b64("\0user1\0wrong")),
        )
        .await;
    assert_eq!(last(&r), "d NO [AUTHENTICATIONFAILED] AUTHENTICATE failed.");
    let r = c.cmd("e", "AUTHENTICATE CRAM-MD5").await;
    assert!(last(&r).starts_with("e NO [CANNOT]"), "{r:?}");
    // CR/LF smuggled inside the SASL message never reaches the backend.
    let before = fake.commands().len();
    let r = c
        .cmd(
            "f",
            &format!(
                "AUTHENTICATE PLAIN {}",
                b64("\0user1\0pass1\r\nx DELETE INBOX")
            ),
        )
        .await;
    assert_eq!(last(&r), "f NO [AUTHENTICATIONFAILED] AUTHENTICATE failed.");
    assert_eq!(fake.commands().len(), before, "{:?}", fake.commands());
    gate.stop().await;
}

#[tokio::test]
async fn an_empty_literal_waits_for_the_rest_of_the_command() {
    let (_fake, gate) = gate_with_fake(Script::default(), FAKE_USERS).await;
    let mut c = gate.greeted().await;
    c.send(b"a LOGIN user1 {0}\r\n").await;
    assert!(c.line().await.starts_with("+ "));
    // Exactly one continuation, then silence until the command is complete.
    assert_eq!(c.try_line(Duration::from_millis(300)).await, Err(()));
    c.send(b"\r\n").await;
    assert_eq!(c.line().await, "a NO [AUTHENTICATIONFAILED] LOGIN failed.");
    gate.stop().await;
}

#[tokio::test]
async fn a_bad_command_carrying_a_literal_ends_the_session_instead_of_running_its_data() {
    let (_fake, gate) = gate_with_fake(Script::default(), FAKE_USERS).await;
    let mut c = gate.greeted().await;
    // The literal holds something that looks like a command; it must not run.
    c.send(b"d LOGIN {14}\r\n").await;
    assert!(c.line().await.starts_with("+ "));
    c.send(b"e CAPABILITY\r\n\0\r\n").await;
    assert_eq!(c.line().await, "d BAD Command not understood.");
    assert_eq!(
        c.line().await,
        "* BYE Cannot resynchronize after an invalid command with a literal."
    );
    assert!(c.closed_within(Duration::from_secs(2)).await);
    // A bad line arriving in pieces is answered once, and the next command still runs.
    let mut c = gate.greeted().await;
    c.send(b"a FROB").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.send(b" x y\r\nb NOOP\r\n").await;
    assert_eq!(c.line().await, "a BAD Command not understood.");
    assert_eq!(c.line().await, "b OK NOOP completed.");
    gate.stop().await;
}
