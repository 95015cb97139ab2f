//! No password or SASL blob reaches a log line at any level: every login path runs with a TRACE
//! subscriber (which also captures `log` records of dependencies such as rustls), and the captured
//! text is searched for the secrets in every encoding the gate saw or produced.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use base64::Engine;
use common::fake::{FakeBackend, Script};
use common::{last, GateConfig};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn trace_output_never_contains_passwords_or_sasl_blobs() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .expect("subscriber");

    let secret = "Zq7-secret-pässwörd";
    let script = Script {
        users: vec![("user1".into(), secret.into())],
        ..Script::default()
    };
    let fake = FakeBackend::start(script).await;
    let lit_fake = FakeBackend::start(Script {
        caps: "IMAP4rev1".into(),
        users: vec![("user1".into(), secret.into())],
        ..Script::default()
    })
    .await;
    let mailboxes = "[[mailbox]]\nalias = \"off\"\nlogin = \"user1\"\nimap_enabled = false\n\n[[mailbox]]\nalias = \"lit\"\nlogin = \"user1\"\nbackend = \"literal\"\n";
    let gate = GateConfig::new(&fake.address())
        .backend("literal", &format!("address = \"{}\"", lit_fake.address()))
        .mailboxes(mailboxes)
        .extra_defaults("main")
        .start()
        .await;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let blob = b64(&format!("\0user1\0{secret}"));
    let wrong_blob = b64("\0user1\0wrong-Zq7");

    // LOGIN with a literal (ok), through STARTTLS, with a wrong password, on a disabled mailbox,
    // on a backend without AUTH=PLAIN (LOGIN with literal towards the backend).
    for (user, pass, expect) in [
        ("user1", secret, "OK"),
        ("user1", "wrong-Zq7", "NO [AUTHENTICATIONFAILED]"),
        ("off", secret, "NO [CONTACTADMIN]"),
        ("lit", secret, "OK"),
    ] {
        let mut c = gate.plain().await;
        c.greeting().await;
        let mut c = c.starttls().await;
        c.send(format!("a LOGIN {user} {{{}}}\r\n", pass.len()).as_bytes())
            .await;
        assert!(c.line().await.starts_with("+ "));
        c.send(format!("{pass}\r\n").as_bytes()).await;
        let r = c.until_tag("a").await;
        assert!(
            last(&r).starts_with(&format!("a {expect}")),
            "{user}: {r:?}"
        );
    }
    // AUTHENTICATE with SASL-IR and with a continuation, right and wrong.
    for (ir, expect) in [(&blob, "OK"), (&wrong_blob, "NO")] {
        let mut c = gate.implicit_tls().await;
        c.greeting().await;
        let r = c.cmd("b", &format!("AUTHENTICATE PLAIN {ir}")).await;
        assert!(last(&r).starts_with(&format!("b {expect}")), "{r:?}");
        let mut c = gate.implicit_tls().await;
        c.greeting().await;
        c.send(b"c AUTHENTICATE PLAIN\r\n").await;
        assert_eq!(c.line().await, "+ ");
        c.send(format!("{ir}\r\n").as_bytes()).await;
        let r = c.until_tag("c").await;
        assert!(last(&r).starts_with(&format!("c {expect}")), "{r:?}");
    }
    // A malformed command carrying a password.
    let mut c = gate.plain().await;
    c.greeting().await;
    let r = c.cmd("d", &format!("LOGIN user1 \"{secret}")).await;
    assert!(last(&r).starts_with("d BAD"), "{r:?}");
    gate.stop().await;

    let log = String::from_utf8_lossy(&capture.0.lock().expect("lock")).into_owned();
    assert!(
        log.contains("outcome=\"ok\"") || log.contains("outcome=ok"),
        "login outcomes are logged:\n{log}"
    );
    assert!(
        log.contains("auth_failed") && log.contains("disabled"),
        "{log}"
    );
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "verbose levels were captured"
    );
    for needle in [
        secret,
        "Zq7-secret",
        "wrong-Zq7",
        &blob,
        &wrong_blob,
        &b64(secret),
    ] {
        assert!(
            !log.contains(needle),
            "{needle:?} leaked into the log:\n{log}"
        );
    }
    // The backend-side encodings too: the LOGIN literal and AUTHENTICATE towards the fakes.
    assert!(
        fake.commands().iter().any(|c| c.contains(&blob)),
        "the fake saw the blob, so it was produced"
    );
}
