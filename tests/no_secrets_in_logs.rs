//! No password or SASL blob reaches a log line at any level: every login path runs with a TRACE
//! subscriber (which also captures `log` records of dependencies such as rustls), and the captured
//! text is searched for the secrets in every encoding the gate saw or produced: text, base64,
//! hex, and the decimal byte lists `Debug` prints for a `Vec<u8>`.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use base64::Engine;
use common::fake::{FakeBackend, Script};
use common::fixtures::{gate_for, FAKE_USERS};
use common::last;

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

const SECRET: &str = "Zq7-secret-pässwörd";

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Every form in which `secret` could show up in a log line.
fn encodings(secret: &str) -> Vec<String> {
    let bytes = secret.as_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let decimal = bytes[..6]
        .iter()
        .map(u8::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    vec![
        secret.to_string(),
        secret[..10].to_string(),
        b64(secret),
        b64(&format!("\0user1\0{secret}")),
        hex[..20].to_string(),
        decimal,
        format!("{:?}", &secret[..10]),
    ]
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

    let users = vec![("user1".to_string(), SECRET.to_string())];
    let fake = |caps: &str| Script {
        caps: caps.into(),
        users: users.clone(),
        ..Script::default()
    };
    let main = FakeBackend::start(fake("IMAP4rev1 AUTH=PLAIN SASL-IR ID")).await;
    let twostep = FakeBackend::start(fake("IMAP4rev1 AUTH=PLAIN")).await;
    let litplus = FakeBackend::start(fake("IMAP4rev1 LITERAL+")).await;
    let literal = FakeBackend::start(fake("IMAP4rev1")).await;
    let down = FakeBackend::start(Script {
        login_reply: Some("NO [UNAVAILABLE] maintenance".into()),
        ..fake("IMAP4rev1 AUTH=PLAIN SASL-IR")
    })
    .await;
    // One gate per backend path; the mailbox `alias` logs in as user1 there (`login` may belong
    // to one mailbox only, hence one gate each). "down" answers NO [UNAVAILABLE].
    let mut gates = Vec::new();
    for (alias, backend, address, enabled) in [
        ("off", "main", main.address(), false),
        ("two", "twostep", twostep.address(), true),
        ("lp", "litplus", litplus.address(), true),
        ("lit", "literal", literal.address(), true),
    ] {
        let mailboxes = format!(
            "[defaults]\nbackend = \"main\"\n\n[[mailbox]]\nalias = \"{alias}\"\nlogin = \"user1\"\nbackend = \"{backend}\"\nimap_enabled = {enabled}\n\n[[mailbox]]\nalias = \"down\"\nbackend = \"down\"\n"
        );
        let gate = gate_for(&main, &mailboxes, |config| {
            config
                .backend(backend, &format!("address = \"{address}\""))
                .backend("down", &format!("address = \"{}\"", down.address()))
        })
        .await;
        gates.push((alias, gate));
    }
    let secure = gate_for(&main, FAKE_USERS, |config| {
        config.imap4("login_type = \"secure-login\"")
    })
    .await;

    for (alias, gate) in &gates {
        // LOGIN with a synchronizing literal, through STARTTLS: right, and wrong.
        for (pass, expect) in [
            (
                SECRET,
                if *alias == "off" {
                    "NO [CONTACTADMIN]"
                } else {
                    "OK"
                },
            ),
            ("wrong-Zq7-pw", "NO [AUTHENTICATIONFAILED]"),
        ] {
            let c = gate.greeted().await;
            let mut c = c.starttls().await;
            c.send(format!("a LOGIN {alias} {{{}}}\r\n", pass.len()).as_bytes())
                .await;
            assert!(c.line().await.starts_with("+ "));
            c.send(format!("{pass}\r\n").as_bytes()).await;
            let r = c.until_tag("a").await;
            assert!(
                last(&r).starts_with(&format!("a {expect}")),
                "{alias}: {r:?}"
            );
        }
        // AUTHENTICATE with SASL-IR and with a continuation, on the implicit-TLS port.
        let blob = b64(&format!("\0{alias}\0{SECRET}"));
        let mut c = gate.greeted_tls().await;
        let r = c.cmd("b", &format!("AUTHENTICATE PLAIN {blob}")).await;
        assert!(last(&r).starts_with("b "), "{r:?}");
        let mut c = gate.greeted_tls().await;
        c.send(b"c AUTHENTICATE PLAIN\r\n").await;
        assert_eq!(c.line().await, "+ ");
        c.send(format!("{blob}\r\n").as_bytes()).await;
        c.until_tag("c").await;
        // The backend that is down, malformed SASL, and a malformed LOGIN carrying the secret.
        let mut c = gate.greeted().await;
        let r = c
            .cmd(
                "d",
                &format!("AUTHENTICATE PLAIN {}", b64(&format!("\0down\0{SECRET}"))),
            )
            .await;
        assert!(last(&r).starts_with("d "), "{r:?}");
        let r = c
            .cmd(
                "e",
                &format!("AUTHENTICATE PLAIN {}", b64(&format!("{SECRET}\0only-two"))),
            )
            .await;
        assert!(last(&r).starts_with("e NO"), "{r:?}");
        let r = c.cmd("f", &format!("AUTHENTICATE PLAIN !{SECRET}!")).await;
        assert!(last(&r).starts_with("f BAD"), "{r:?}");
        let r = c
            .cmd("g", &format!("LOGIN user1 \"{}", &SECRET[..10]))
            .await;
        assert!(last(&r).starts_with("g BAD"), "{r:?}");
    }
    // Credentials before TLS under secure-login.
    let mut c = secure.greeted().await;
    let r = c
        .cmd("p", &format!("LOGIN user1 \"{}\"", &SECRET[..10]))
        .await;
    assert!(last(&r).starts_with("p NO [PRIVACYREQUIRED]"), "{r:?}");
    let r = c
        .cmd(
            "q",
            &format!("AUTHENTICATE PLAIN {}", b64(&format!("\0user1\0{SECRET}"))),
        )
        .await;
    assert!(last(&r).starts_with("q NO [PRIVACYREQUIRED]"), "{r:?}");
    // The admin center: a right sign-in, a wrong one, and the password typed into the name box.
    let center = gate_for(&main, FAKE_USERS, |config| config.admin_center()).await;
    let admins = center.dir.path().join("admins.toml");
    imapgate::admin::users::add(
        &admins,
        "alice",
        imapgate::admin::users::Role::RecipientManagement,
        SECRET.as_bytes(),
    )
    .expect("add alice");
    let hash = std::fs::read_to_string(&admins).expect("admins");
    let hash = hash
        .split('"')
        .find(|s| s.starts_with("$argon2id$"))
        .expect("a hash")
        .to_string();
    let mut browser = common::https::Browser::new(center.admin_web.expect("admin center"));
    browser.signed_in("alice", SECRET).await;
    let session = browser
        .cookies
        .get("__Host-imapgate_session")
        .cloned()
        .expect("session");
    let page = browser.get("/mailboxes").await;
    let csrf = page.csrf();
    let mut stranger = common::https::Browser::new(center.admin_web.expect("admin center"));
    assert_eq!(stranger.sign_in("alice", "wrong-Zq7-pw").await.status, 403);
    assert_eq!(stranger.sign_in(SECRET, "alice").await.status, 403);
    center.stop().await;
    let admin_secrets = [hash, session, csrf];

    for (_, gate) in gates {
        gate.stop().await;
    }
    secure.stop().await;

    // Each backend path was really taken.
    assert!(main
        .named("AUTHENTICATE")
        .iter()
        .any(|c| c.contains(&b64(&format!("\0user1\0{SECRET}")))));
    assert!(
        twostep
            .commands()
            .iter()
            .any(|c| c.ends_with("AUTHENTICATE PLAIN")),
        "{:?}",
        twostep.commands()
    );
    assert!(
        litplus.named("LOGIN").iter().any(|c| c.contains("+}")),
        "{:?}",
        litplus.commands()
    );
    assert!(
        literal.named("LOGIN").iter().any(|c| c.contains("}\r\n")),
        "{:?}",
        literal.commands()
    );
    assert!(!down.named("AUTHENTICATE").is_empty());

    let log = String::from_utf8_lossy(&capture.0.lock().expect("lock")).into_owned();
    for outcome in [
        "ok",
        "auth_failed",
        "disabled",
        "unavailable",
        "privacy_required",
    ] {
        assert!(
            log.contains(&format!("outcome=\"{outcome}\"")),
            "outcome {outcome} is logged:\n{log}"
        );
    }
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "verbose levels were captured"
    );
    assert!(log.contains("admin center: sign-in failed"), "{log}");
    for needle in encodings(SECRET)
        .iter()
        .chain(&encodings("wrong-Zq7-pw"))
        .chain(&admin_secrets)
    {
        assert!(
            !log.contains(needle.as_str()),
            "{needle:?} leaked into the log:\n{log}"
        );
    }
}
