//! Interop with a real Dovecot backend and real clients (curl, Python's imaplib): STARTTLS and
//! implicit TLS towards the client, plain, STARTTLS and TLS towards the backend, reload flipping a
//! mailbox, and certificate verification towards the backend.

mod common;

use std::process::Output;

use common::dovecot::dovecot;
use common::fixtures::dovecot_demo;
use common::{certs, last, GateConfig, TestGate};
use tokio::process::Command;

async fn gate(dir_port: u16, tls_port: u16) -> TestGate {
    let ca = certs().join("ca.pem");
    GateConfig::new("unused:1")
        .imap4("login_type = \"secure-login\"")
        .backend(
            "main",
            &format!("address = \"127.0.0.1:{dir_port}\""),
        )
        .backend(
            "starttls",
            &format!("address = \"127.0.0.1:{dir_port}\"\ntls = \"starttls\"\nserver_name = \"localhost\"\nca = {ca:?}"),
        )
        .backend(
            "imaps",
            &format!("address = \"localhost:{tls_port}\"\ntls = \"tls\"\nca = {ca:?}"),
        )
        .backend("plain", &format!("address = \"127.0.0.1:{dir_port}\""))
        .mailboxes(&dovecot_demo(true))
        .start()
        .await
}

async fn curl(url: &str, user: &str, starttls: bool) -> Output {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "--cacert"])
        .arg(certs().join("ca.pem"))
        .args(["-u", user, url]);
    if starttls {
        cmd.arg("--ssl-reqd");
    }
    cmd.output().await.expect("run curl")
}

/// Asserts that curl fetches `url` as `user` (`name:password`) and prints `text` of it.
async fn curl_reads(url: &str, user: &str, starttls: bool, text: &str) {
    let out = curl(url, user, starttls).await;
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && body.contains(text),
        "{body} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs imaplib: log in (AUTHENTICATE PLAIN for a non-ASCII password), select INBOX, fetch message 1's subject, log out. Prints OK:<subject>
/// or NO:<server text>.
async fn imaplib(port: u16, mode: &str, user: &str, password: &str) -> String {
    let script = r#"
import imaplib, ssl, sys
port, mode, user, password, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context(cafile=ca)
if mode == "ssl":
    c = imaplib.IMAP4_SSL("localhost", port, ssl_context=ctx)
else:
    c = imaplib.IMAP4("localhost", port)
    c.starttls(ssl_context=ctx)
try:
    if password.isascii():
        c.login(user, password)
    else:
        c.authenticate("PLAIN", lambda _: b"\0" + user.encode() + b"\0" + password.encode())
except imaplib.IMAP4.error as e:
    print("NO:" + str(e))
    sys.exit(0)
typ, data = c.select("INBOX")
if int(data[0]) == 0:
    print("OK:empty")
else:
    typ, data = c.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    print("OK:" + data[0][1].decode().strip())
c.logout()
"#;
    let out = Command::new("python3")
        .args(["-c", script, &port.to_string(), mode, user, password])
        .arg(certs().join("ca.pem"))
        .output()
        .await
        .expect("run python3");
    assert!(
        out.status.success(),
        "imaplib: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn curl_reads_mail_over_implicit_tls_and_starttls() {
    let Some(d) = dovecot() else { return };
    let gate = gate(d.port, d.tls_port).await;
    let tls = gate.tls.expect("tls").port();
    curl_reads(
        &format!("imaps://localhost:{tls}/INBOX;UID=1"),
        "john.smith@example.com:pass1",
        false,
        "Subject: Hello 1",
    )
    .await;
    let plain = gate.plain.port();
    curl_reads(
        &format!("imap://localhost:{plain}/INBOX;UID=2"),
        "jsmith:pass1",
        true,
        "Subject: Hello 2",
    )
    .await;
    // The disabled mailbox: curl reports a refused login (exit 67).
    let out = curl(
        &format!("imaps://localhost:{tls}/INBOX;UID=1"),
        "jane.doe@example.com:pass2",
        false,
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(67),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    gate.stop().await;
}

#[tokio::test]
async fn imaplib_over_each_backend_mode_and_the_policy_replies() {
    let Some(d) = dovecot() else { return };
    let gate = gate(d.port, d.tls_port).await;
    let (plain, tls) = (gate.plain.port(), gate.tls.expect("tls").port());
    // Backend over STARTTLS (the default backend here), client over both kinds of port.
    assert_eq!(
        imaplib(tls, "ssl", "john.smith@example.com", "pass1").await,
        "OK:Subject: Hello 1"
    );
    assert_eq!(
        imaplib(plain, "starttls", "JSMITH", "pass1").await,
        "OK:Subject: Hello 1"
    );
    // user3 lives behind the implicit-TLS backend; an empty INBOX has no message 1.
    assert_eq!(imaplib(tls, "ssl", "user3", "pass3").await, "OK:empty");
    // imaplib sends the user name unquoted: `LOGIN EXAMPLE\user3 "pass3"` (as Dovecot accepts).
    assert_eq!(
        imaplib(plain, "starttls", "EXAMPLE\\user3", "pass3").await,
        "OK:empty"
    );
    // Non-ASCII password through AUTHENTICATE PLAIN, to the plain backend (base64 on both sides;
    // LOGIN with literals towards a backend is covered against the fake in tests/login.rs).
    assert_eq!(imaplib(tls, "ssl", "utf8", "pässwörd✓").await, "OK:empty");
    let r = imaplib(tls, "ssl", "john.smith@example.com", "wrong").await;
    assert!(
        r.starts_with("NO:") && r.contains("[AUTHENTICATIONFAILED] LOGIN failed."),
        "{r}"
    );
    let r = imaplib(tls, "ssl", "jane.doe@example.com", "pass2").await;
    assert!(
        r.contains("[CONTACTADMIN] IMAP4 access is disabled for this mailbox."),
        "{r}"
    );
    gate.stop().await;
}

#[tokio::test]
async fn reload_flips_a_mailbox_and_a_broken_file_changes_nothing() {
    let Some(d) = dovecot() else { return };
    let gate = gate(d.port, d.tls_port).await;
    let tls = gate.tls.expect("tls").port();
    assert_eq!(
        imaplib(tls, "ssl", "jsmith", "pass1").await,
        "OK:Subject: Hello 1"
    );
    // Disable John Smith: after the reload the very next login is refused.
    gate.write_mailboxes(&dovecot_demo(false));
    gate.handle.reload().await.expect("reload");
    let r = imaplib(tls, "ssl", "jsmith", "pass1").await;
    assert!(r.contains("[CONTACTADMIN]"), "{r}");
    // A broken file: reload fails with file and line; the last good directory stays.
    std::fs::write(
        gate.mailboxes_path(),
        "[[mailbox]]\nalias = \"x\"\nimap_enabled = maybe\n",
    )
    .expect("write");
    let e = gate
        .handle
        .reload()
        .await
        .expect_err("broken file refused")
        .to_string();
    assert!(e.contains("mailboxes.toml") && e.contains("line 3"), "{e}");
    let r = imaplib(tls, "ssl", "jsmith", "pass1").await;
    assert!(r.contains("[CONTACTADMIN]"), "still disabled: {r}");
    // Enable again.
    gate.write_mailboxes(&dovecot_demo(true));
    gate.handle.reload().await.expect("reload");
    assert_eq!(
        imaplib(tls, "ssl", "jsmith", "pass1").await,
        "OK:Subject: Hello 1"
    );
    gate.stop().await;
}

/// One login as user1 over implicit TLS through a new gate whose backend `main` is `body`: the
/// answer.
async fn login_through(body: &str) -> Vec<String> {
    let gate = GateConfig::new("unused:1")
        .backend("main", body)
        .start()
        .await;
    let mut c = gate.greeted_tls().await;
    let r = c.cmd("a", "LOGIN user1 pass1").await;
    gate.stop().await;
    r
}

#[tokio::test]
async fn backend_certificates_are_verified() {
    let Some(d) = dovecot() else { return };
    let port = d.tls_port;
    // Same Dovecot, but trusting only the system roots: the development certificate is refused.
    let r = login_through(&format!("address = \"localhost:{port}\"\ntls = \"tls\"")).await;
    assert!(last(&r).starts_with("a NO [UNAVAILABLE]"), "{r:?}");
    // Trusting the development CA but expecting another name: refused too.
    let ca = certs().join("ca.pem");
    let r = login_through(&format!("address = \"127.0.0.1:{port}\"\ntls = \"tls\"\nca = {ca:?}\nserver_name = \"mail.example.com\"")).await;
    assert!(last(&r).starts_with("a NO [UNAVAILABLE]"), "{r:?}");
    // The control: the same backend with the right CA and name works.
    let r = login_through(&format!(
        "address = \"127.0.0.1:{port}\"\ntls = \"tls\"\nca = {ca:?}\nserver_name = \"localhost\""
    ))
    .await;
    assert!(last(&r).starts_with("a OK"), "{r:?}");
}

/// A greeted plain connection from a chosen loopback source address.
async fn client_from(source: [u8; 4], to: std::net::SocketAddr) -> common::Client {
    let mut c = common::Client::plain_from(source, to).await;
    c.greeting().await;
    c
}

/// Dovecot here lower-cases names and strips their domain (`%Ln`) and has a master user: it
/// logs in `user2@anything.example`, `USER2@x` and `user2*helpdesk` as user2, who is Jane Doe,
/// disabled. The gate refuses them all, as it refuses any name outside its directory.
#[tokio::test]
async fn spellings_the_backend_accepts_do_not_bypass_a_disabled_mailbox() {
    let Some(d) = dovecot() else { return };
    let spellings = [
        ("user2@anything.example", "pass2"),
        ("USER2@x", "pass2"),
        ("user2*helpdesk", "masterpw"),
    ];
    // The backend itself lets every one of them in.
    for (user, pass) in spellings {
        let mut c = common::Client::plain(([127, 0, 0, 1], d.port).into()).await;
        c.line().await;
        let r = c.cmd("a", &format!("LOGIN {user} {pass}")).await;
        assert!(
            last(&r).starts_with("a OK"),
            "Dovecot refused {user}: {r:?}"
        );
    }
    let gate = gate(d.port, d.tls_port).await;
    let tls = gate.tls.expect("tls");
    let failed = "a NO [AUTHENTICATIONFAILED] LOGIN failed.";
    // Each from an address of its own: the refusal costs the address a failure at Dovecot too
    // (as a wrong password does), and Dovecot's penalty would slow the other tests.
    let attempts = spellings.iter().copied().chain([
        ("user1@x.example", "pass1"),
        ("USER1@alias7.example", "pass1"),
    ]);
    for (i, (user, pass)) in attempts.enumerate() {
        let mut c = common::Client::tls_from([127, 0, 1, i as u8 + 1], tls).await;
        c.greeting().await;
        let r = c.cmd("a", &format!("LOGIN {user} {pass}")).await;
        // The last two are John Smith under spellings only the backend knows: before, such a
        // session survived his mailbox being disabled, and escaped his session limit.
        assert_eq!(last(&r), failed, "{user}");
    }
    // The names in the directory work, and reach the backend as the mailbox's own login.
    let mut c = gate.greeted_tls().await;
    assert!(last(&c.cmd("a", "LOGIN JSMITH pass1").await).starts_with("a OK"));
    gate.stop().await;
}

/// The gate's penalty and Dovecot's (which sees the client's address through ID) do not add up
/// to a false "unavailable": after three wrong passwords, one after another, Dovecot holds the
/// right one back 15 s (measured), within the gate's default backend login budget (20 s), and
/// the gate's own wait comes before that budget starts. (About 30 s: Dovecot's penalty grows
/// only with failures a second or more apart.)
#[tokio::test]
async fn a_right_password_after_wrong_ones_is_not_reported_unavailable() {
    let Some(d) = dovecot() else { return };
    let gate = GateConfig::new("unused:1")
        .backend("main", &format!("address = \"127.0.0.1:{}\"", d.port))
        .imap4("trusted_networks = []")
        .imap4("auth_penalty_initial = \"100ms\"")
        .start()
        .await;
    // From an address of its own: Dovecot's penalty is per address.
    let source = [127, 0, 0, 23];
    let answer = |line: String| async move {
        let mut c = client_from(source, gate.plain).await;
        c.send(format!("{line}\r\n").as_bytes()).await;
        c.try_line(std::time::Duration::from_secs(40))
            .await
            .expect("an answer")
            .expect("open")
    };
    for i in 0..3 {
        let r = answer(format!("a LOGIN user3 wrong{i}")).await;
        assert_eq!(r, "a NO [AUTHENTICATIONFAILED] LOGIN failed.");
    }
    let started = std::time::Instant::now();
    let r = answer("b LOGIN user3 pass3".into()).await;
    assert!(r.starts_with("b OK"), "after {:?}: {r}", started.elapsed());
    // Dovecot did hold it back past the 15 s the old budget allowed.
    assert!(
        started.elapsed() > std::time::Duration::from_secs(12),
        "{:?}",
        started.elapsed()
    );
    gate.stop().await;
}

/// After COMPRESS the stream is deflate: a kick must not write a plaintext BYE into it, however
/// long the tag in front of COMPRESS was.
#[tokio::test]
async fn compress_behind_a_long_tag_is_seen() {
    let Some(d) = dovecot() else { return };
    let gate = gate(d.port, d.tls_port).await;
    let mut c = gate.greeted_tls().await;
    assert!(last(&c.cmd("a", "LOGIN jsmith pass1").await).starts_with("a OK"));
    let tag = "t".repeat(45);
    let r = c.cmd(&tag, "COMPRESS DEFLATE").await;
    assert!(last(&r).starts_with(&format!("{tag} OK")), "{r:?}");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let kicked = gate
        .handle
        .registry()
        .kick_where(imapgate::registry::Kick::Disabled, |_| true);
    assert_eq!(kicked, 1);
    assert_eq!(
        c.try_line(std::time::Duration::from_secs(2)).await,
        Ok(None),
        "closed, without a plaintext line in the compressed stream"
    );
    gate.stop().await;
}

/// AUTHENTICATE LOGIN (old clients and devices) through the gate to Dovecot: curl asked for it,
/// and by hand with and without SASL-IR; refusals as for LOGIN.
#[tokio::test]
async fn authenticate_login_reaches_dovecot() {
    let Some(d) = dovecot() else { return };
    let gate = gate(d.port, d.tls_port).await;
    let tls = gate.tls.expect("tls").port();
    let out = Command::new("curl")
        .args(["-sS", "-v", "--max-time", "20", "--cacert"])
        .arg(certs().join("ca.pem"))
        .args(["--login-options", "AUTH=LOGIN", "-u", "jsmith:pass1"])
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
    assert!(trace.contains("AUTHENTICATE LOGIN"), "{trace}");
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let tls_addr = gate.tls.expect("tls");
    // Each try from an address of its own: Dovecot's penalty for the wrong password is per
    // client address (which it learns through ID).
    for (n, (user, pass, want)) in [
        ("jsmith", "pass1", "a OK"),
        ("jsmith", "wrong", "a NO [AUTHENTICATIONFAILED]"),
        ("jane.doe@example.com", "pass2", "a NO [CONTACTADMIN]"),
    ]
    .into_iter()
    .enumerate()
    {
        let source = 60 + 2 * n as u8;
        // Two steps.
        let mut c = common::Client::tls_from([127, 0, 0, source], tls_addr).await;
        c.greeting().await;
        c.send(b"a AUTHENTICATE LOGIN\r\n").await;
        assert_eq!(c.line().await, "+ VXNlcm5hbWU6");
        c.send(format!("{}\r\n", b64(user)).as_bytes()).await;
        assert_eq!(c.line().await, "+ UGFzc3dvcmQ6");
        c.send(format!("{}\r\n", b64(pass)).as_bytes()).await;
        let r = c.until_tag("a").await;
        assert!(last(&r).starts_with(want), "{user}: {r:?}");
        // SASL-IR.
        let mut c = common::Client::tls_from([127, 0, 0, source + 1], tls_addr).await;
        c.greeting().await;
        c.send(format!("a AUTHENTICATE LOGIN {}\r\n", b64(user)).as_bytes())
            .await;
        assert_eq!(c.line().await, "+ UGFzc3dvcmQ6");
        c.send(format!("{}\r\n", b64(pass)).as_bytes()).await;
        let r = c.until_tag("a").await;
        assert!(last(&r).starts_with(want), "{user}: {r:?}");
        if want == "a OK" {
            let r = c.cmd("s", "SELECT INBOX").await;
            assert!(last(&r).starts_with("s OK"), "{r:?}");
        }
    }
    gate.stop().await;
}
