//! The admin center over HTTPS, driven by a small client that keeps cookies as a browser does:
//! the seed's graphical procedure (Recipients > Mailboxes > Edit > Mailbox features > IMAP4:
//! Disable > Save) and its check, the audit log, and the refusals: a forged form, a view-only
//! administrator's change, a form after sign-out, another site's form, sign-in throttling.
//! The same procedure in a real Chromium is in `tests/browser.rs`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::daemon::cli;
use common::fake::{FakeBackend, Script};
use common::fixtures::{gate_with_fake_configured, JOHN_AND_JANE};
use common::https::{Browser, Page};
use common::TestGate;
use imapgate::admin::audit;
use imapgate::admin::users::{self, Role};

const ALICE: (&str, &str) = ("alice", "alice-password");
const VICTOR: (&str, &str) = ("victor", "victor-password");

/// The administrators of every test: alice manages recipients, victor only views.
fn add_admins(dir: &Path) {
    let file = dir.join("admins.toml");
    users::add(
        &file,
        ALICE.0,
        Role::RecipientManagement,
        ALICE.1.as_bytes(),
    )
    .expect("add alice");
    users::add(&file, VICTOR.0, Role::ViewOnly, VICTOR.1.as_bytes()).expect("add victor");
}

/// A gate with the admin center (and `admin_web` lines), John Smith and Jane Doe, in front of a
/// fake backend; alice and victor can sign in.
async fn center_with(admin_web: &str, mailboxes: &str) -> (FakeBackend, TestGate) {
    let admin_web = admin_web.to_string();
    let (fake, gate) = gate_with_fake_configured(Script::default(), mailboxes, move |c| {
        c.admin_center().section(&admin_web)
    })
    .await;
    add_admins(gate.dir.path());
    (fake, gate)
}

async fn center() -> (FakeBackend, TestGate) {
    center_with("", JOHN_AND_JANE).await
}

fn browser(gate: &TestGate) -> Browser {
    Browser::new(gate.admin_web.expect("the admin center listens"))
}

fn audit_entries(gate: &TestGate) -> Vec<audit::Entry> {
    audit::read(&gate.dir.path().join("audit.log")).expect("read the audit log")
}

const JOHN_FEATURES: &str = "/mailboxes/edit?identity=john.smith%40example.com&section=features";

/// The Mailbox features form's Save, as the page sends it.
async fn save(b: &mut Browser, page: &Page, imap4: &str) -> Page {
    let csrf = page.csrf();
    b.post(
        "/mailboxes/features",
        &[
            ("csrf", &csrf),
            ("identity", "john.smith@example.com"),
            ("imap4", imap4),
        ],
    )
    .await
}

#[tokio::test]
async fn the_seed_procedure_disables_john_closes_his_session_and_is_audited() {
    let (_fake, gate) = center().await;
    let mut john = gate.logged_in("jsmith", "pass1").await;
    let mut b = browser(&gate);
    // Not signed in: every page leads to the sign-in form.
    let page = b.get("/mailboxes").await;
    assert_eq!((page.status, page.location()), (303, Some("/signin")));
    b.signed_in(ALICE.0, ALICE.1).await;

    // Recipients > Mailboxes, search "John Smith".
    let list = b.get("/mailboxes?search=John+Smith").await;
    assert_eq!(list.status, 200);
    assert!(
        list.body.contains("1 mailbox(es) matching"),
        "{}",
        list.body
    );
    for column in ["Display Name", "Email Address", "IMAP4"] {
        assert!(list.body.contains(column), "{column}");
    }
    assert!(list
        .body
        .contains("<label for=\"select-1\">John Smith</label>"));
    assert!(!list.body.contains("Jane Doe"));

    // Select him, Edit, Mailbox features: IMAP4: Enabled with Disable.
    let features = b.get(JOHN_FEATURES).await;
    assert!(features.body.contains("Email Connectivity"));
    assert!(
        features.body.contains("IMAP4: Enabled"),
        "{}",
        features.body
    );
    assert!(features.body.contains("id=\"imap4-disable\">Disable</a>"));
    // Disable: not saved yet.
    let pending = b.get(&format!("{JOHN_FEATURES}&imap4=disabled")).await;
    assert!(pending.body.contains("IMAP4: Disabled") && pending.body.contains("Not saved yet"));
    assert!(john
        .cmd("n", "NOOP")
        .await
        .last()
        .is_some_and(|l| l.starts_with("n OK")));

    // Save.
    let saved = save(&mut b, &pending, "disabled").await;
    assert_eq!(saved.status, 303, "{saved:?}");
    let after = b.get(saved.location().expect("back to the pane")).await;
    assert!(
        after
            .body
            .contains("Saved: IMAP4 Disabled for John Smith, in force now; 1 session closed."),
        "{}",
        after.body
    );
    assert!(after.body.contains("IMAP4: Disabled") && after.body.contains("id=\"imap4-enable\""));
    // The note shows once.
    let again = b.get(JOHN_FEATURES).await;
    assert!(!again.body.contains("Saved:"));

    // Over IMAP: his open session was closed, and a new login is refused.
    assert!(john.closed_within(Duration::from_secs(5)).await);
    let refused = common::login(&gate, "john.smith@example.com", "pass1").await;
    assert!(refused.contains("NO [CONTACTADMIN]"), "{refused}");
    // The file says so too (the same path as `imapgate mailbox set`).
    let file = std::fs::read_to_string(gate.mailboxes_path()).expect("mailboxes");
    assert_eq!(file.matches("imap_enabled = false").count(), 2, "{file}");

    // The audit log, and its page.
    let entries = audit_entries(&gate);
    let entry = entries.last().expect("an audit entry");
    assert_eq!(
        (
            entry.who.as_str(),
            entry.what.as_str(),
            entry.mailbox.as_str(),
            entry.old.as_str(),
            entry.new.as_str(),
            entry.outcome.as_str()
        ),
        (
            "admin:alice",
            "set-imap4",
            "John Smith",
            "Enabled",
            "Disabled",
            "in force now; 1 session(s) closed"
        )
    );
    let log = b.get("/audit").await;
    assert!(
        log.body.contains("admin:alice") && log.body.contains("in force now; 1 session(s) closed")
    );

    // Saving the same again changes nothing, and says so.
    let same = save(&mut b, &after, "disabled").await;
    let page = b.get(same.location().expect("redirect")).await;
    assert!(page
        .body
        .contains("IMAP4 was already Disabled for John Smith; nothing changed."));

    // Enable again: he logs in.
    let enabled = save(&mut b, &page, "enabled").await;
    let page = b.get(enabled.location().expect("redirect")).await;
    assert!(
        page.body
            .contains("Saved: IMAP4 Enabled for John Smith, in force now; 0 sessions closed."),
        "{}",
        page.body
    );
    let ok = common::login(&gate, "jsmith", "pass1").await;
    assert!(ok.starts_with("a OK"), "{ok}");
    gate.stop().await;
}

#[tokio::test]
async fn forged_view_only_and_signed_out_forms_are_refused_and_change_nothing() {
    let (_fake, gate) = center().await;
    let before = std::fs::read(gate.mailboxes_path()).expect("mailboxes");
    let mut alice = browser(&gate);
    alice.signed_in(ALICE.0, ALICE.1).await;
    let features = alice.get(JOHN_FEATURES).await;

    // A forged POST: no token, then somebody else's token.
    let none = alice
        .post(
            "/mailboxes/features",
            &[
                ("identity", "john.smith@example.com"),
                ("imap4", "disabled"),
            ],
        )
        .await;
    assert_eq!(none.status, 403);
    assert!(none
        .body
        .contains("was not sent by this admin center, so nothing was changed"));
    let wrong = alice
        .post(
            "/mailboxes/features",
            &[
                ("csrf", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
                ("identity", "john.smith@example.com"),
                ("imap4", "disabled"),
            ],
        )
        .await;
    assert_eq!(wrong.status, 403);
    // Another site's form, even carrying a valid token, is refused by its Origin.
    let body = serde_urlencoded::to_string([
        ("csrf", features.csrf().as_str()),
        ("identity", "john.smith@example.com"),
        ("imap4", "disabled"),
    ])
    .expect("form");
    let cross = alice
        .request(
            "POST",
            "/mailboxes/features",
            Some(body),
            &[("Origin", "https://evil.example")],
        )
        .await;
    assert_eq!(cross.status, 403, "{cross:?}");

    // A view-only administrator sees the pane without Save, and a Save of his is refused.
    let mut victor = browser(&gate);
    victor.signed_in(VICTOR.0, VICTOR.1).await;
    let view = victor.get(JOHN_FEATURES).await;
    assert!(view.body.contains("IMAP4: Enabled") && !view.body.contains("id=\"save\""));
    assert!(view.body.contains("View-Only Organization Management"));
    let refused = save(&mut victor, &view, "disabled").await;
    assert_eq!(refused.status, 403);
    assert!(
        refused.body.contains(
            "Your role, View-Only Organization Management, can view but not change anything"
        ),
        "{}",
        refused.body
    );
    let csrf = view.csrf();
    let kick = victor
        .post("/sessions/close", &[("csrf", &csrf), ("key", "main/user1")])
        .await;
    assert_eq!(kick.status, 403);
    let entries = audit_entries(&gate);
    assert!(
        entries.iter().any(|e| e.who == "admin:victor"
            && e.what == "set-imap4"
            && e.outcome.starts_with("refused")),
        "{entries:?}"
    );

    // Sign out; the page still open in another tab then posts with its token and the old cookie.
    let stale_cookie = alice.cookies.clone();
    let csrf = features.csrf();
    let out = alice.post("/signout", &[("csrf", &csrf)]).await;
    assert_eq!((out.status, out.location()), (303, Some("/signin")));
    assert!(out
        .header("set-cookie")
        .is_some_and(|c| c.contains("Max-Age=0")));
    assert!(alice.cookies.is_empty());
    alice.cookies = stale_cookie;
    let late = save(&mut alice, &features, "disabled").await;
    assert_eq!(late.status, 403);
    assert!(late
        .body
        .contains("You are signed out, so nothing was changed"));
    let page = alice.get("/mailboxes").await;
    assert_eq!((page.status, page.location()), (303, Some("/signin")));

    assert_eq!(
        std::fs::read(gate.mailboxes_path()).expect("mailboxes"),
        before
    );
    assert!(common::login(&gate, "jsmith", "pass1")
        .await
        .starts_with("a OK"));
    gate.stop().await;
}

#[tokio::test]
async fn sign_in_is_throttled_per_name_and_per_address() {
    let (_fake, gate) = center().await;
    let addr = gate.admin_web.expect("admin center");
    let mut here = Browser::from_source(addr, [127, 0, 0, 21]);
    for _ in 0..5 {
        let page = here.sign_in(ALICE.0, "wrong password").await;
        assert_eq!(page.status, 403);
        assert!(
            page.body
                .contains("The user name or password isn&#x27;t correct"),
            "{}",
            page.body
        );
    }
    // The right password no longer helps, from here (the address) ...
    let locked = here.sign_in(ALICE.0, ALICE.1).await;
    assert_eq!(locked.status, 429, "{locked:?}");
    assert!(locked.body.contains("Too many failed sign-ins"));
    let wait: u64 = locked
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=30).contains(&wait), "{wait}");
    let other_name = here.sign_in(VICTOR.0, VICTOR.1).await;
    assert_eq!(other_name.status, 429);
    // ... nor for that name from elsewhere; others from elsewhere sign in.
    let mut there = Browser::from_source(addr, [127, 0, 0, 22]);
    assert_eq!(there.sign_in(ALICE.0, ALICE.1).await.status, 429);
    there.signed_in(VICTOR.0, VICTOR.1).await;
    // An unknown name fails the same way, and takes as long (a dummy hash is checked).
    let mut third = Browser::from_source(addr, [127, 0, 0, 23]);
    let started = Instant::now();
    let known = third.sign_in(VICTOR.0, "wrong password").await;
    let known_took = started.elapsed();
    let started = Instant::now();
    let unknown = third.sign_in("nobody", "wrong password").await;
    let unknown_took = started.elapsed();
    assert_eq!((known.status, unknown.status), (403, 403));
    assert_eq!(
        known.body.replace(&known.csrf(), ""),
        unknown.body.replace(&unknown.csrf(), "")
    );
    assert!(
        unknown_took * 3 > known_took,
        "{unknown_took:?} vs {known_took:?}"
    );

    // Twenty tries for one name sent at once from twenty addresses: no more than the five free
    // failures (and the one verification beside the fifth) are checked; the others are turned
    // away.
    let mut tries = tokio::task::JoinSet::new();
    for i in 0..20 {
        tries.spawn(async move {
            let mut b = Browser::from_source(addr, [127, 0, 1, 30 + i]);
            b.sign_in("burst", "wrong password").await.status
        });
    }
    let statuses = tries.join_all().await;
    let checked = statuses.iter().filter(|s| **s == 403).count();
    assert!(
        (5..=6).contains(&checked) && statuses.iter().all(|s| *s == 403 || *s == 429),
        "{statuses:?}"
    );
    gate.stop().await;
}

#[tokio::test]
async fn pages_escape_what_they_show_and_carry_the_security_headers() {
    let hostile = r#"
[[mailbox]]
name = "<script>alert('x')</script>"
email = "evil@example.com"
login = "user1"
"#;
    let (_fake, gate) = center_with("", hostile).await;
    let mut b = browser(&gate);
    let signin = b.get("/signin").await;
    let cookie = signin
        .header("set-cookie")
        .expect("the sign-in form's cookie");
    assert!(
        cookie.contains("HttpOnly; Secure; SameSite=Strict"),
        "{cookie}"
    );
    let answer = b.sign_in(ALICE.0, ALICE.1).await;
    let session = answer
        .headers_named("set-cookie")
        .into_iter()
        .find(|c| c.starts_with("__Host-imapgate_session="))
        .expect("a session cookie");
    assert!(
        session.contains("HttpOnly; Secure; SameSite=Strict"),
        "{session}"
    );
    let page = b.get("/mailboxes?search=%22%3E%3Cimg+src%3Dx%3E").await;
    assert!(
        !page.body.contains("<img src=x>") && page.body.contains("&quot;&gt;&lt;img src=x&gt;")
    );
    let page = b.get("/mailboxes").await;
    assert!(!page.body.contains("<script>"), "{}", page.body);
    assert!(
        page.body
            .contains("&lt;script&gt;alert(&#x27;x&#x27;)&lt;&#x2f;script&gt;"),
        "{}",
        page.body
    );
    let csp = page.header("content-security-policy").expect("CSP");
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(page.header("cache-control"), Some("no-store"));
    assert!(
        page.header("strict-transport-security").is_none(),
        "no HSTS: it would bind the host's other ports"
    );
    // Nothing on any page runs script.
    for path in [
        "/mailboxes",
        JOHN_FEATURES,
        "/sessions",
        "/audit",
        "/signin",
    ] {
        let p = b.get(path).await;
        assert!(!p.body.contains("<script"), "{path}");
    }
    let css = b.get("/static/style.css").await;
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    let missing = b.get("/nothing-here").await;
    assert_eq!(missing.status, 404);
    gate.stop().await;
}

#[tokio::test]
async fn a_hundred_thousand_mailboxes_list_a_page_at_a_time() {
    let mut text = String::from("[defaults]\nimap_enabled = true\n");
    for i in 0..100_000 {
        text.push_str(&format!(
            "[[mailbox]]\nname = \"User {i:06}\"\nemail = \"user{i:06}@example.com\"\n"
        ));
        if i % 7 == 0 {
            text.push_str("imap_enabled = false\n");
        }
    }
    let (_fake, gate) = center_with("", &text).await;
    let mut b = browser(&gate);
    b.signed_in(ALICE.0, ALICE.1).await;
    let started = Instant::now();
    let first = b.get("/mailboxes").await;
    let took = started.elapsed();
    assert!(
        first.body.contains("100000 mailbox(es); page 1 of 2000"),
        "{}",
        &first.body[..2000.min(first.body.len())]
    );
    assert_eq!(first.body.matches("type=\"radio\"").count(), 50);
    assert!(first.body.contains("rel=\"next\"") && !first.body.contains("rel=\"prev\""));
    let last_page = b.get("/mailboxes?page=1999").await;
    assert!(last_page.body.contains("page 2000 of 2000") && last_page.body.contains("User 099999"));
    // Past the end: the last page.
    let past = b.get("/mailboxes?page=99999999").await;
    assert!(past.body.contains("page 2000 of 2000"));
    let found = b.get("/mailboxes?search=user012348%40").await;
    assert!(found.body.contains("1 mailbox(es) matching") && found.body.contains("User 012348"));
    assert!(found.body.contains("Disabled"), "12348 is a multiple of 7");
    eprintln!("a page of 100,000 mailboxes: {took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    gate.stop().await;
}

#[tokio::test]
async fn idle_removed_and_demoted_administrators_lose_their_rights_at_once() {
    let (_fake, gate) = center_with("session_idle_timeout = \"1s\"\n", JOHN_AND_JANE).await;
    let mut b = browser(&gate);
    b.signed_in(ALICE.0, ALICE.1).await;
    assert_eq!(b.get("/mailboxes").await.status, 200);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let page = b.get("/mailboxes").await;
    assert_eq!(
        (page.status, page.location()),
        (303, Some("/signin")),
        "idle"
    );

    // Removed from the users file: signed out at the next request.
    let admins = gate.dir.path().join("admins.toml");
    b.signed_in(ALICE.0, ALICE.1).await;
    users::remove(&admins, ALICE.0).expect("remove alice");
    assert_eq!(b.get("/mailboxes").await.location(), Some("/signin"));
    // A new password (remove, add again): the sessions of the old one end.
    users::add(
        &admins,
        ALICE.0,
        Role::RecipientManagement,
        ALICE.1.as_bytes(),
    )
    .expect("add");
    b.signed_in(ALICE.0, ALICE.1).await;
    users::remove(&admins, ALICE.0).expect("remove");
    users::add(
        &admins,
        ALICE.0,
        Role::RecipientManagement,
        b"a new password",
    )
    .expect("add");
    assert_eq!(
        b.get("/mailboxes").await.location(),
        Some("/signin"),
        "new password"
    );
    // Signing in again ends the session the browser had.
    b.signed_in(ALICE.0, "a new password").await;
    let first = b.cookies.clone();
    let mut other = browser(&gate);
    let form = other.get("/signin").await;
    let signin_cookie = "__Host-imapgate_signin".to_string();
    b.cookies
        .insert(signin_cookie.clone(), other.cookies[&signin_cookie].clone());
    let again = b
        .post(
            "/signin",
            &[
                ("csrf", &form.csrf()),
                ("name", ALICE.0),
                ("password", "a new password"),
            ],
        )
        .await;
    assert_eq!(again.status, 303);
    let mut stale = browser(&gate);
    stale.cookies = first;
    assert_eq!(
        stale.get("/mailboxes").await.location(),
        Some("/signin"),
        "replaced"
    );
    // Given the view-only role (the file edited by hand): a Save is refused from the next
    // request on, with the role's reason.
    let features = b.get(JOHN_FEATURES).await;
    let text = std::fs::read_to_string(&admins).expect("admins");
    let demoted = text.replacen("role = \"recipient-management\"", "role = \"view-only\"", 1);
    assert_ne!(text, demoted);
    std::fs::write(&admins, demoted).expect("write");
    let refused = save(&mut b, &features, "disabled").await;
    assert_eq!(refused.status, 403);
    assert!(
        refused.body.contains("View-Only Organization Management"),
        "{}",
        refused.body
    );
    gate.stop().await;
}

/// A Save whose browser goes away at once still either happens completely (written, in
/// force, audited) or not at all: after each abandoned Save, the file, what the gate enforces
/// and the audit log agree.
#[tokio::test]
async fn a_save_abandoned_by_its_browser_is_whole_or_nothing() {
    let (_fake, gate) = center().await;
    let mut b = browser(&gate);
    b.signed_in(ALICE.0, ALICE.1).await;
    let page = b.get(JOHN_FEATURES).await;
    let csrf = page.csrf();
    let addr = gate.admin_web.expect("admin center");
    let cookies: Vec<String> = b.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
    for i in 0..30u64 {
        let imap4 = if i % 2 == 0 { "disabled" } else { "enabled" };
        let body = serde_urlencoded::to_string([
            ("csrf", csrf.as_str()),
            ("identity", "john.smith@example.com"),
            ("imap4", imap4),
        ])
        .expect("form");
        let request = format!(
            "POST /mailboxes/features HTTP/1.1\r\nHost: localhost:{}\r\nCookie: {}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            addr.port(),
            cookies.join("; "),
            body.len()
        );
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut tls = common::dev_connector()
            .connect(
                tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").expect("name"),
                tcp,
            )
            .await
            .expect("handshake");
        use tokio::io::AsyncWriteExt;
        tls.write_all(request.as_bytes()).await.expect("send");
        tls.flush().await.expect("flush");
        // Gone at a different moment of the change each time.
        tokio::time::sleep(Duration::from_micros(i * 193 % 6000)).await;
        drop(tls);
        // The change may still be running: it must end with all three in agreement, and a
        // half-applied change never does.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let file = std::fs::read_to_string(gate.mailboxes_path()).expect("mailboxes");
            let disabled_in_file = file.matches("imap_enabled = false").count() == 2;
            let login = common::login(&gate, "jsmith", "pass1").await;
            let enforced = login.contains("NO [CONTACTADMIN]");
            let last = audit_entries(&gate)
                .into_iter()
                .rfind(|e| e.what == "set-imap4" && e.outcome.starts_with("in force"));
            let audited_disabled = last.is_some_and(|e| e.new == "Disabled");
            if disabled_in_file == enforced && audited_disabled == disabled_in_file {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "try {i}: still apart after 5 s: file disabled {disabled_in_file}, \
                 enforced {enforced}, audited disabled {audited_disabled}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    gate.stop().await;
}

#[tokio::test]
async fn the_sessions_view_lists_and_closes_a_mailboxs_sessions() {
    let (_fake, gate) = center().await;
    let mut john = gate.logged_in("jsmith", "pass1").await;
    let mut b = browser(&gate);
    b.signed_in(ALICE.0, ALICE.1).await;
    let page = b.get("/sessions").await;
    assert!(
        page.body.contains("1 open IMAP4 session(s)") && page.body.contains("John Smith"),
        "{}",
        page.body
    );
    let (csrf, key) = (page.csrf(), page.field("key"));
    assert_eq!(
        key, "main&#x2f;user1",
        "the mailbox's key (backend/login), escaped"
    );
    let closed = b
        .post("/sessions/close", &[("csrf", &csrf), ("key", "main/user1")])
        .await;
    assert_eq!(closed.status, 303);
    let after = b.get("/sessions").await;
    assert!(
        after.body.contains("John Smith: 1 session(s) closed."),
        "{}",
        after.body
    );
    assert!(john.closed_within(Duration::from_secs(5)).await);
    let entry = audit_entries(&gate).pop().expect("audited");
    assert_eq!(
        (entry.who.as_str(), entry.what.as_str()),
        ("admin:alice", "close-sessions")
    );
    gate.stop().await;
}

#[tokio::test]
async fn the_certificate_follows_the_imap4_one_across_a_reload() {
    let (_fake, gate) = center().await;
    let addr = gate.admin_web.expect("admin center");
    let presented = || async {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let tls = imapgate::tls::trust_any_connector()
            .expect("connector")
            .connect(
                tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").expect("name"),
                tcp,
            )
            .await
            .expect("handshake");
        tls.get_ref().1.peer_certificates().expect("a certificate")[0]
            .as_ref()
            .to_vec()
    };
    let before = presented().await;
    let (cert, key) = (
        gate.dir.path().join("new.pem"),
        gate.dir.path().join("new.key"),
    );
    common::self_signed(&cert, &key, "/CN=localhost", &[]);
    let config = std::fs::read_to_string(&gate.config_path).expect("config");
    let key_line = config
        .lines()
        .find(|l| l.starts_with("private_key"))
        .expect("private_key line")
        .to_string();
    let cert_line = config
        .lines()
        .find(|l| l.starts_with("certificate"))
        .expect("certificate line")
        .to_string();
    let config = config
        .replace(&key_line, &format!("private_key = {key:?}"))
        .replace(&cert_line, &format!("certificate = {cert:?}"));
    std::fs::write(&gate.config_path, config).expect("write config");
    gate.handle.reload().await.expect("reload");
    let after = presented().await;
    assert_ne!(before, after);
    let pem = std::fs::read_to_string(&cert).expect("new cert");
    use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer};
    let expected = CertificateDer::from_pem_slice(pem.as_bytes()).expect("parse");
    assert_eq!(after, expected.as_ref());
    gate.stop().await;
}

#[tokio::test]
async fn admin_user_and_audit_commands() {
    let (_fake, gate) = center().await;
    let config = &gate.config_path;
    let password = gate.dir.path().join("password");
    std::fs::write(&password, "a long enough password\n").expect("write");
    let password = password.to_str().expect("path");
    let (ok, out, err) = cli(
        config,
        &[
            "admin-user",
            "add",
            "carol",
            "--role",
            "view-only",
            "--password-file",
            password,
        ],
    )
    .await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("administrator carol added"), "{out}");
    let (ok, _, err) = cli(
        config,
        &[
            "admin-user",
            "add",
            "carol",
            "--role",
            "recipient-management",
            "--password-file",
            password,
        ],
    )
    .await;
    assert!(!ok && err.contains("exists already"), "{err}");
    let (ok, out, _) = cli(config, &["admin-user", "list"]).await;
    assert!(ok && out.contains("carol") && out.contains("View-Only Organization Management"));
    assert!(
        out.contains("alice") && out.contains("Recipient Management"),
        "{out}"
    );
    let text = std::fs::read_to_string(gate.dir.path().join("admins.toml")).expect("admins");
    assert!(!text.contains("a long enough password") && text.contains("$argon2id$"));
    // Carol signs in with it.
    let mut b = browser(&gate);
    b.signed_in("carol", "a long enough password").await;
    let (ok, out, err) = cli(config, &["admin-user", "remove", "carol"]).await;
    assert!(ok, "{out}{err}");
    assert_eq!(b.get("/mailboxes").await.location(), Some("/signin"));

    // A change from the command line is audited with the Unix user who made it.
    let (ok, out, err) = cli(
        config,
        &[
            "mailbox",
            "set",
            "--identity",
            "jsmith",
            "--imap-enabled",
            "false",
        ],
    )
    .await;
    assert!(ok, "{out}{err}");
    let (ok, out, err) = cli(config, &["audit", "--identity", "john.smith@example.com"]).await;
    assert!(ok, "{err}");
    let user = audit::current_user();
    assert!(
        out.contains(&format!("{user}  set-imap4 John Smith Enabled -> Disabled: written; in force now; 0 session(s) closed")),
        "{out}"
    );
    assert!(!out.contains("admin-user"), "only John's lines: {out}");
    let (ok, out, _) = cli(config, &["audit", "--format", "json"]).await;
    let all: Vec<audit::Entry> = serde_json::from_str(&out).expect("json");
    assert!(
        ok && all
            .iter()
            .any(|e| e.what == "admin-user add" && e.new == "carol (view-only)")
    );
    assert!(all
        .iter()
        .any(|e| e.what == "admin-user remove" && e.old == "carol"));
    assert!(
        all.iter().any(|e| e.what == "reload" && e.who == user),
        "the control socket's reload"
    );
    gate.stop().await;
}

#[tokio::test]
async fn one_address_holds_at_most_eight_connections() {
    let (_fake, gate) = center().await;
    let addr = gate.admin_web.expect("admin center");
    let connect = |source: [u8; 4]| async move {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind((source, 0).into()).expect("bind");
        let tcp = socket.connect(addr).await.expect("connect");
        common::dev_connector()
            .connect(
                tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").expect("name"),
                tcp,
            )
            .await
    };
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(connect([127, 0, 0, 31]).await.expect("one of eight"));
    }
    assert!(connect([127, 0, 0, 31]).await.is_err(), "a ninth is closed");
    // Another address is served, and the first one again once a connection ends.
    let mut b = Browser::from_source(addr, [127, 0, 0, 32]);
    assert_eq!(b.get("/signin").await.status, 200);
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut b = Browser::from_source(addr, [127, 0, 0, 31]);
    assert_eq!(b.get("/signin").await.status, 200);
    gate.stop().await;
}
