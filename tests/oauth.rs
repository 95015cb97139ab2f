//! Sign-in with OAuth 2.0 bearer tokens (OAUTHBEARER, XOAUTH2) through the gate to a real
//! Dovecot whose oauth2 passdb checks each token at an introspection endpoint the tests run:
//! a good token logs in and relays, a token for another user or an inactive one gets RFC 7628's
//! error challenge then `NO [AUTHENTICATIONFAILED]`, a disabled mailbox with a good token gets
//! `CONTACTADMIN` (never without one), and curl's `--oauth2-bearer` fetches a message.

mod common;

use common::fixtures::dovecot_demo;
use common::oauth::{dovecot, issuer};
use common::{certs, last, Client, GateConfig, TestGate};

const OAUTHBEARER_ERROR: &str = "+ eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIiwic2NoZW1lcyI6ImJlYXJlciJ9";

async fn gate(port: u16, oauth: bool) -> TestGate {
    gate_with(
        port,
        if oauth {
            "[oauth]\nmode = \"backend\"\n\n"
        } else {
            ""
        },
    )
    .await
}

async fn gate_with(port: u16, oauth_section: &str) -> TestGate {
    let ca = certs().join("ca.pem");
    let mut config = GateConfig::new("unused:1")
        .imap4("login_type = \"secure-login\"")
        .backend(
            "starttls",
            &format!(
                "address = \"127.0.0.1:{port}\"\ntls = \"starttls\"\nserver_name = \"localhost\"\nca = {ca:?}"
            ),
        )
        .backend("main", &format!("address = \"127.0.0.1:{port}\""))
        .backend("imaps", &format!("address = \"127.0.0.1:{port}\""))
        .backend("plain", &format!("address = \"127.0.0.1:{port}\""))
        .mailboxes(&dovecot_demo(true));
    if !oauth_section.is_empty() {
        config = config.section(oauth_section);
    }
    config.start().await
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn oauthbearer(user: &str, token: &str) -> String {
    b64(
        format!("n,a={user},\x01host=localhost\x01port=993\x01auth=Bearer {token}\x01\x01")
            .as_bytes(),
    )
}

fn xoauth2(user: &str, token: &str) -> String {
    b64(format!("user={user}\x01auth=Bearer {token}\x01\x01").as_bytes())
}

/// A TLS client of the gate, greeted, from 127.0.0.`source`.
async fn client(gate: &TestGate, source: u8) -> Client {
    let mut c = Client::tls_from([127, 0, 0, source], gate.tls.expect("tls")).await;
    c.greeting().await;
    c
}

/// Waits until the gate offers OAUTHBEARER (it learns the backend's mechanisms at start).
async fn offered(gate: &TestGate) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let mut c = client(gate, 1).await;
        let r = c.cmd("c", "CAPABILITY").await;
        if r[0].contains("AUTH=OAUTHBEARER") || std::time::Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn good_tokens_log_in_with_both_mechanisms_and_relay() {
    let Some(d) = dovecot() else { return };
    let gate = gate(d.port, true).await;
    let caps = offered(&gate).await;
    assert!(
        caps[0].contains("AUTH=OAUTHBEARER") && caps[0].contains("AUTH=XOAUTH2"),
        "{caps:?}"
    );
    // John's token (Dovecot knows him as user1); he names himself as jsmith: the gate sends
    // the backend his own login.
    let token = issuer().issue("user1", true);
    let mut c = client(&gate, 10).await;
    let r = c
        .cmd(
            "a",
            &format!("AUTHENTICATE OAUTHBEARER {}", oauthbearer("jsmith", &token)),
        )
        .await;
    assert!(last(&r).starts_with("a OK"), "{r:?}");
    let r = c.cmd("s", "SELECT INBOX").await;
    assert!(last(&r).starts_with("s OK"), "{r:?}");
    // XOAUTH2 without SASL-IR: the message after an empty `+`.
    let mut c = client(&gate, 11).await;
    c.send(b"b AUTHENTICATE XOAUTH2\r\n").await;
    assert_eq!(c.line().await, "+ ");
    c.send(format!("{}\r\n", xoauth2("john.smith@example.com", &token)).as_bytes())
        .await;
    let r = c.until_tag("b").await;
    assert!(last(&r).starts_with("b OK"), "{r:?}");
    gate.stop().await;
}

#[tokio::test]
async fn refused_tokens_get_the_error_challenge_then_no() {
    let Some(d) = dovecot() else { return };
    let gate = gate(d.port, true).await;
    offered(&gate).await;
    let others = issuer().issue("user3", true);
    let expired = issuer().issue("user1", false);
    for (n, token) in [others.as_str(), expired.as_str(), "never-issued"]
        .iter()
        .enumerate()
    {
        let mut c = client(&gate, 20 + n as u8).await;
        c.send(
            format!(
                "a AUTHENTICATE OAUTHBEARER {}\r\n",
                oauthbearer("jsmith", token)
            )
            .as_bytes(),
        )
        .await;
        assert_eq!(c.line().await, OAUTHBEARER_ERROR, "{token}");
        c.send(b"AQ==\r\n").await;
        let r = c.until_tag("a").await;
        assert!(
            last(&r).starts_with("a NO [AUTHENTICATIONFAILED]"),
            "{token}: {r:?}"
        );
    }
    // XOAUTH2's own form.
    let mut c = client(&gate, 30).await;
    c.send(format!("x AUTHENTICATE XOAUTH2 {}\r\n", xoauth2("jsmith", &others)).as_bytes())
        .await;
    let challenge = c.line().await;
    assert!(challenge.starts_with("+ ey"), "{challenge}");
    c.send(b"\r\n").await;
    let r = c.until_tag("x").await;
    assert!(last(&r).starts_with("x NO [AUTHENTICATIONFAILED]"), "{r:?}");
    // Garbage: not base64, or not the mechanism's message.
    let mut c = client(&gate, 31).await;
    let r = c.cmd("g", "AUTHENTICATE OAUTHBEARER !!!notbase64").await;
    assert!(last(&r).starts_with("g BAD"), "{r:?}");
    let mut c = client(&gate, 32).await;
    c.send(format!("h AUTHENTICATE OAUTHBEARER {}\r\n", b64(b"hello")).as_bytes())
        .await;
    assert_eq!(c.line().await, OAUTHBEARER_ERROR);
    c.send(b"AQ==\r\n").await;
    let r = c.until_tag("h").await;
    assert!(last(&r).starts_with("h NO [AUTHENTICATIONFAILED]"), "{r:?}");
    gate.stop().await;
}

#[tokio::test]
async fn a_disabled_mailbox_is_told_only_with_a_good_token() {
    let Some(d) = dovecot() else { return };
    let gate = gate(d.port, true).await;
    offered(&gate).await;
    // Jane (user2) is disabled in the demo directory.
    let good = issuer().issue("user2", true);
    let mut c = client(&gate, 40).await;
    let r = c
        .cmd(
            "a",
            &format!(
                "AUTHENTICATE OAUTHBEARER {}",
                oauthbearer("jane.doe@example.com", &good)
            ),
        )
        .await;
    assert!(last(&r).starts_with("a NO [CONTACTADMIN]"), "{r:?}");
    let bad = issuer().issue("user1", true);
    let mut c = client(&gate, 41).await;
    c.send(
        format!(
            "b AUTHENTICATE OAUTHBEARER {}\r\n",
            oauthbearer("jane.doe@example.com", &bad)
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(c.line().await, OAUTHBEARER_ERROR);
    c.send(b"AQ==\r\n").await;
    let r = c.until_tag("b").await;
    assert!(last(&r).starts_with("b NO [AUTHENTICATIONFAILED]"), "{r:?}");
    gate.stop().await;
}

#[tokio::test]
async fn tokens_are_offered_only_with_oauth_configured() {
    let Some(d) = dovecot() else { return };
    let gate = gate(d.port, false).await;
    let mut c = client(&gate, 50).await;
    let r = c.cmd("c", "CAPABILITY").await;
    assert!(
        !r[0].contains("OAUTHBEARER") && !r[0].contains("XOAUTH2"),
        "{r:?}"
    );
    let token = issuer().issue("user1", true);
    let r = c
        .cmd(
            "a",
            &format!("AUTHENTICATE OAUTHBEARER {}", oauthbearer("jsmith", &token)),
        )
        .await;
    assert!(last(&r).starts_with("a NO [CANNOT]"), "{r:?}");
    gate.stop().await;
}

#[tokio::test]
async fn curl_fetches_a_message_with_a_bearer_token() {
    let Some(d) = dovecot() else { return };
    let gate = gate(d.port, true).await;
    offered(&gate).await;
    let token = issuer().issue("user1", true);
    let tls = gate.tls.expect("tls").port();
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "-v", "--max-time", "20", "--cacert"])
        .arg(certs().join("ca.pem"))
        .args(["--oauth2-bearer", &token, "-u", "jsmith:"])
        .arg(format!("imaps://localhost:{tls}/INBOX;UID=1"))
        .output()
        .await
        .expect("run curl");
    let body = String::from_utf8_lossy(&out.stdout);
    let trace = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && body.contains("Subject: Hello 1"),
        "{body}{trace}"
    );
    assert!(
        trace.contains("AUTHENTICATE OAUTHBEARER") || trace.contains("AUTHENTICATE XOAUTH2"),
        "{trace}"
    );
    gate.stop().await;
}

/// `[oauth] mode = "introspect"` with the tests' client credentials.
fn introspect_section(url: &str) -> String {
    let secret = tempfile::NamedTempFile::new().expect("tempfile");
    let (file, path) = secret.keep().expect("keep");
    std::fs::write(&path, format!("{}\n", common::oauth::CLIENT.1)).expect("write");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    drop(file);
    format!(
        "[oauth]\nmode = \"introspect\"\nintrospection_url = {url:?}\nclient_id = {:?}\n\
         client_secret_file = {path:?}\ncache_ttl = \"30s\"\ntimeout = \"2s\"\n\n",
        common::oauth::CLIENT.0
    )
}

#[tokio::test]
async fn introspect_mode_checks_tokens_at_the_gate_first() {
    let Some(d) = dovecot() else { return };
    let gate = gate_with(d.port, &introspect_section(&issuer().url)).await;
    offered(&gate).await;
    // John's token naming him by alias: the same mailbox as the token's user1.
    let john = issuer().issue("user1", true);
    let mut c = client(&gate, 60).await;
    let r = c
        .cmd(
            "a",
            &format!("AUTHENTICATE OAUTHBEARER {}", oauthbearer("jsmith", &john)),
        )
        .await;
    assert!(last(&r).starts_with("a OK"), "{r:?}");
    // The gate asked once (the backend asks on its own); a second login is answered from the
    // gate's cache.
    let asked = issuer().asked(&john);
    let mut c = client(&gate, 61).await;
    let r = c
        .cmd(
            "a",
            &format!("AUTHENTICATE XOAUTH2 {}", xoauth2("user1", &john)),
        )
        .await;
    assert!(last(&r).starts_with("a OK"), "{r:?}");
    assert_eq!(
        issuer().asked(&john),
        asked + 1,
        "only the backend's own introspection"
    );
    // No user named: the token's.
    let mut c = client(&gate, 62).await;
    let message = b64(format!("n,,\x01auth=Bearer {john}\x01\x01").as_bytes());
    let r = c
        .cmd("a", &format!("AUTHENTICATE OAUTHBEARER {message}"))
        .await;
    assert!(last(&r).starts_with("a OK"), "{r:?}");
    // Another user's token, an inactive one, and one called active but past its `exp`: refused
    // by the gate, before any backend.
    let sams = issuer().issue("user3", true);
    let inactive = issuer().issue("user1", false);
    let expired = issuer().issue_until("user1", true, Some(1_000_000_000));
    for (n, token) in [&sams, &inactive, &expired].into_iter().enumerate() {
        let mut c = client(&gate, 63 + n as u8).await;
        c.send(
            format!(
                "b AUTHENTICATE OAUTHBEARER {}\r\n",
                oauthbearer("jsmith", token)
            )
            .as_bytes(),
        )
        .await;
        assert_eq!(c.line().await, OAUTHBEARER_ERROR);
        c.send(b"AQ==\r\n").await;
        let r = c.until_tag("b").await;
        assert!(last(&r).starts_with("b NO [AUTHENTICATIONFAILED]"), "{r:?}");
        assert_eq!(issuer().asked(token), 1, "the backend never saw it");
    }
    // A disabled mailbox with a good token.
    let jane = issuer().issue("user2", true);
    let mut c = client(&gate, 69).await;
    let r = c
        .cmd(
            "a",
            &format!(
                "AUTHENTICATE OAUTHBEARER {}",
                oauthbearer("jane.doe@example.com", &jane)
            ),
        )
        .await;
    assert!(last(&r).starts_with("a NO [CONTACTADMIN]"), "{r:?}");
    gate.stop().await;
    // The endpoint unreachable: unavailable, never a yes.
    let dead = format!("http://127.0.0.1:{}/introspect", common::closed_port());
    let gate = gate_with(d.port, &introspect_section(&dead)).await;
    offered(&gate).await;
    let token = issuer().issue("user1", true);
    let mut c = client(&gate, 67).await;
    let r = c
        .cmd(
            "a",
            &format!("AUTHENTICATE OAUTHBEARER {}", oauthbearer("jsmith", &token)),
        )
        .await;
    assert!(last(&r).starts_with("a NO [UNAVAILABLE]"), "{r:?}");
    gate.stop().await;
}

#[tokio::test]
async fn test_login_tries_the_token_path_step_by_step() {
    let Some(d) = dovecot() else { return };
    let gate = gate(d.port, true).await;
    offered(&gate).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good-token");
    std::fs::write(&good, format!("{}\n", issuer().issue("user1", true))).expect("write");
    let bad = dir.path().join("bad-token");
    std::fs::write(&bad, format!("{}\n", issuer().issue("user3", true))).expect("write");
    let address = format!("127.0.0.1:{}", gate.plain.port());
    let ca = certs().join("ca.pem");
    for (file, mechanism, ok_expected) in [
        (&good, "oauthbearer", true),
        (&good, "xoauth2", true),
        (&bad, "oauthbearer", false),
    ] {
        let (ok, out, err) = common::daemon::cli(
            &gate.config_path,
            &[
                "test-login",
                "--identity",
                "jsmith",
                "--oauth2-token-file",
                file.to_str().expect("path"),
                "--mechanism",
                mechanism,
                "--address",
                &address,
                "--ca",
                ca.to_str().expect("path"),
            ],
        )
        .await;
        assert_eq!(ok, ok_expected, "{mechanism}: {out}{err}");
        let login = out
            .lines()
            .find(|l| l.starts_with("login"))
            .expect("login step");
        let token = std::fs::read_to_string(file).expect("read");
        assert!(!out.contains(token.trim()), "the token is never printed");
        if ok_expected {
            assert!(login.contains("OK"), "{out}");
            assert!(out.lines().any(|l| l.starts_with("select")), "{out}");
        } else {
            assert!(login.contains("NO [AUTHENTICATIONFAILED]"), "{out}");
        }
    }
    gate.stop().await;
}
