//! Login outcomes against the scriptable fake backend: failed, disabled, unavailable, success and
//! the relay after it.

mod common;

use common::fake::{FakeBackend, Script};
use common::fixtures::{
    gate_for, gate_with_fake, gate_with_fake_configured, FAKE_USERS, JOHN_AND_JANE,
};
use common::{last, login};
use std::time::Duration;

#[tokio::test]
async fn disabled_mailbox_with_the_right_password_is_told_and_logged_out_of_the_backend() {
    let (fake, gate) = gate_with_fake(Script::default(), JOHN_AND_JANE).await;
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
    let (_fake, gate) = gate_with_fake_configured(Script::default(), JOHN_AND_JANE, |config| {
        config
            .imap4("disabled_message = \"IMAP is off for you; see https://help.example.com/imap\"")
    })
    .await;
    assert_eq!(
        login(&gate, "user2", "pass2").await,
        "a NO [CONTACTADMIN] IMAP is off for you; see https://help.example.com/imap"
    );
    gate.stop().await;
}

#[tokio::test]
async fn every_identity_form_maps_to_the_backend_login() {
    let (fake, gate) = gate_with_fake(Script::default(), JOHN_AND_JANE).await;
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
    let (fake, gate) = gate_with_fake(script, FAKE_USERS).await;
    assert!(login(&gate, "user1", "pass1").await.starts_with("a OK"));
    let mut c = gate.greeted().await;
    let r = c.cmd("b", r#"LOGIN tricky "p\"a\\ss {3}""#).await;
    assert!(last(&r).starts_with("b OK"), "{r:?}");
    let mut c = gate.greeted().await;
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
async fn success_relays_everything_after_the_tagged_ok() {
    let (_fake, gate) = gate_with_fake(Script::default(), FAKE_USERS).await;
    let mut c = gate.greeted().await;
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
    let (_fake, gate) = gate_with_fake(
        Script {
            caps_in_ok: false,
            ..Script::default()
        },
        FAKE_USERS,
    )
    .await;
    assert_eq!(
        login(&gate, "user1", "pass1").await,
        "a OK [CAPABILITY IMAP4rev1 IDLE COMPRESS=DEFLATE X-FAKE-POSTLOGIN] Logged in"
    );
    gate.stop().await;
}

#[tokio::test]
async fn untagged_lines_and_response_codes_of_the_backend_reach_the_client() {
    let (_fake, gate) = gate_with_fake(
        Script {
            login_ok: Some("OK [ALERT] Your password expires in 3 days".into()),
            login_untagged: vec!["* OK [ALERT] Maintenance tonight".into()],
            ..Script::default()
        },
        FAKE_USERS,
    )
    .await;
    let mut c = gate.greeted().await;
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
async fn names_without_a_mailbox_never_enter_the_cache_and_long_names_are_refused() {
    let (fake, gate) = gate_with_fake(Script::default(), JOHN_AND_JANE).await;
    let mut c = gate.greeted().await;
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
    let (fake, gate) = gate_with_fake(Script::default(), FAKE_USERS).await;
    let mut c = gate.greeted().await;
    let pairs: Vec<String> = (0..30).map(|i| format!("\"k{i}\" \"v{i}\"")).collect();
    c.cmd("i", &format!("ID ({})", pairs.join(" "))).await;
    assert!(last(&c.cmd("a", "LOGIN user1 pass1").await).starts_with("a OK"));
    let id = &fake.named("ID")[0];
    // 27 of the client's pairs, then the gate's three.
    assert_eq!(id.matches("\"k").count(), 27, "{id}");
    assert_eq!(id.matches("\"x-").count(), 3, "{id}");
    gate.stop().await;
}

#[tokio::test]
async fn a_large_literal_waits_for_a_slow_client_and_arrives_whole() {
    // 16 MB cannot fit in the sockets' buffers: the gate must wait for the client to read, with
    // part of the literal held in its pipe (plain to plain) and go on where it stopped.
    let (_fake, gate) = gate_with_fake(Script::default(), FAKE_USERS).await;
    let mut c = gate.logged_in("user1", "pass1").await;
    let n = 16 * 1024 * 1024;
    c.send(format!("f XBIG {n}\r\n").as_bytes()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(c.line().await, format!("* 1 FETCH (BODY[] {{{n}}}"));
    let pattern = b"abcdefghijklmnopqrstuvwxyz\r\n";
    let mut at = 0;
    while at < n {
        let part = c.read_exact((n - at).min(1 << 20)).await;
        assert!(part
            .iter()
            .enumerate()
            .all(|(j, b)| *b == pattern[(at + j) % 28]));
        at += part.len();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(c.line().await, ")");
    assert_eq!(c.line().await, "f OK FETCH done");
    assert_eq!(c.cmd("n", "NOOP").await, vec!["n OK NOOP done"]);
    gate.stop().await;
}

#[tokio::test]
async fn a_client_half_close_reaches_the_backend_and_its_last_replies_the_client() {
    // The client sends a command and closes its sending side: the gate passes the end on, the
    // backend still answers, then ends the session itself, which the client sees as end of stream.
    let (_fake, gate) = gate_with_fake(Script::default(), FAKE_USERS).await;
    let mut c = gate.logged_in("user1", "pass1").await;
    c.send(b"n NOOP\r\n").await;
    c.close_write().await;
    assert_eq!(c.line().await, "n OK NOOP done");
    assert!(
        c.closed_within(Duration::from_secs(2)).await,
        "the backend saw the end and closed"
    );
    gate.stop().await;
}

/// The SASL PLAIN logins the fake backend received, decoded: (user, password).
fn plain_logins(fake: &FakeBackend) -> Vec<(String, String)> {
    use base64::Engine;
    fake.named("AUTHENTICATE")
        .iter()
        .filter_map(|c| c.split(' ').nth(3))
        .filter_map(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .map(|m| {
            let parts: Vec<String> = m
                .split(|&b| b == 0)
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            (parts[1].clone(), parts[2].clone())
        })
        .collect()
}

/// A name outside the directory gets a wrong password's answer after a wrong password's round
/// trip to the backend, but the client's password never reaches the backend; a spelling of a
/// mailbox reaches it as the mailbox's own login; a master-user name is refused before it.
#[tokio::test]
async fn only_the_directory_decides_which_names_log_in() {
    let (fake, gate) = gate_with_fake(Script::default(), JOHN_AND_JANE).await;
    let failed = "a NO [AUTHENTICATIONFAILED] LOGIN failed.";
    // user3 exists on the backend, but not in the directory.
    assert_eq!(login(&gate, "user3", "pass3").await, failed);
    assert_eq!(login(&gate, "user2*helpdesk", "pass2").await, failed);
    let seen = plain_logins(&fake);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].0, "user3");
    assert_eq!(seen[1].0, "user2_helpdesk", "no `*` reaches the backend");
    for (_, password) in &seen {
        assert!(password != "pass3" && password != "pass2" && password.len() == 32);
    }
    // Any spelling of John Smith is logged in as user1.
    assert!(login(&gate, "CORP/JSMITH", "pass1")
        .await
        .starts_with("a OK"));
    assert_eq!(
        plain_logins(&fake).last().map(|l| l.0.as_str()),
        Some("user1")
    );
    gate.stop().await;
    // The opt-out: names outside the directory get [defaults] and go to the backend as typed.
    let gate = gate_for(&fake, JOHN_AND_JANE, |config| {
        config.extra_directory("unknown_names = \"defaults\"")
    })
    .await;
    assert!(login(&gate, "user3", "pass3").await.starts_with("a OK"));
    assert_eq!(
        plain_logins(&fake).last(),
        Some(&("user3".to_string(), "pass3".to_string()))
    );
    // Backend-special characters are refused in this mode too.
    assert_eq!(login(&gate, "user3*helpdesk", "pass3").await, failed);
    gate.stop().await;
}
