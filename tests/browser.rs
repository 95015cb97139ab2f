//! The seed's graphical procedure in a real browser: Debian's Chromium, driven over WebDriver
//! (chromedriver), against a gate in front of a real Dovecot. Sign in, Recipients > Mailboxes,
//! search "John Smith", select him, Edit, Mailbox features, Disable, Save, read "IMAP4:
//! Disabled"; over IMAP his open session is closed and his login refused with
//! `NO [CONTACTADMIN]`; then Enable again. Then the refusals a browser can produce: another
//! site's form, a Save after signing out in another window, a view-only administrator without
//! Save. Screenshots go to `target/tmp/admin-center/` (the README shows two, copied to
//! `docs/images/`).
//!
//! Without chromium and chromedriver the test says so and returns; in CI (`CI` set) it fails.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::dovecot::dovecot;
use common::fixtures::JOHN_AND_JANE;
use common::{GateConfig, TestGate};
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use imapgate::admin::users::{self, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver on a port of its own; killed when dropped.
struct Driver {
    _child: tokio::process::Child,
    port: u16,
}

async fn driver() -> Option<Driver> {
    let installed = [CHROMIUM, CHROMEDRIVER]
        .iter()
        .all(|p| std::path::Path::new(p).exists());
    if !installed {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium and chromium-driver are required in CI (apt-get install chromium chromium-driver)"
        );
        eprintln!(
            "SKIP: chromium or chromedriver is not installed; run scripts/test.sh to install them"
        );
        return None;
    }
    let port = common::closed_port();
    let child = tokio::process::Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start chromedriver");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Some(Driver {
                _child: child,
                port,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not listen on {port}");
}

/// A headless Chromium with a profile of its own; the development certificate is accepted
/// (it is issued by the repository's test CA, which the browser does not know).
async fn chromium(driver: &Driver, profile: &std::path::Path) -> Client {
    let args = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1100,760",
        &format!("--user-data-dir={}", profile.display()),
    ];
    let capabilities = serde_json::json!({
        "browserName": "chrome",
        "acceptInsecureCerts": true,
        "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
    });
    let serde_json::Value::Object(capabilities) = capabilities else {
        unreachable!("an object")
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session")
}

fn shots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("admin-center");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(shots().join(format!("{name}.png")), png).expect("save screenshot");
}

async fn text(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .expect("text")
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

/// Waits (up to 5 s) until the element `css` has the text `want` (after a click that navigates).
async fn shows(c: &Client, css: &str, want: &str) {
    let mut seen = String::new();
    for _ in 0..50 {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            seen = e.text().await.unwrap_or_default();
            if seen.contains(want) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shot(c, "failed-shows").await;
    panic!("{css} shows {seen:?}, not {want:?}");
}

async fn exists(c: &Client, css: &str) -> bool {
    c.find(Locator::Css(css)).await.is_ok()
}

async fn path(c: &Client) -> String {
    c.current_url().await.expect("url").path().to_string()
}

/// Waits (up to 5 s) until the browser shows `want`, as after a form's submission by a key.
async fn arrive(c: &Client, want: &str) {
    for _ in 0..50 {
        if path(c).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shot(c, "failed-arrival").await;
    panic!(
        "still on {} instead of {want}: {}",
        path(c).await,
        text(c, "body").await
    );
}

/// A page on another site (another origin) with a form that posts to the admin center without
/// a token, as an attacker's page would; the button is `#go`.
async fn evil_site(target: &str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let page = format!(
        "<!DOCTYPE html><title>Win</title><form method=\"post\" action=\"{target}/mailboxes/features\">\
         <input type=\"hidden\" name=\"identity\" value=\"john.smith@example.com\">\
         <input type=\"hidden\" name=\"imap4\" value=\"disabled\">\
         <button id=\"go\">Win a prize</button></form>"
    );
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
            let _ = s.write_all(response.as_bytes()).await;
        }
    });
    port
}

async fn gate_before_dovecot(port: u16) -> TestGate {
    let gate = GateConfig::new(&format!("127.0.0.1:{port}"))
        .mailboxes(JOHN_AND_JANE)
        .admin_center()
        .start()
        .await;
    let admins = gate.dir.path().join("admins.toml");
    users::add(
        &admins,
        "alice",
        Role::RecipientManagement,
        b"alice-password",
    )
    .expect("alice");
    users::add(&admins, "victor", Role::ViewOnly, b"victor-password").expect("victor");
    gate
}

#[tokio::test]
async fn the_seed_procedure_in_chromium_against_dovecot() {
    let Some(d) = dovecot() else { return };
    let Some(driver) = driver().await else { return };
    let gate = gate_before_dovecot(d.port).await;
    let site = format!(
        "https://localhost:{}",
        gate.admin_web.expect("admin center").port()
    );
    // John Smith has IMAP open on Dovecot through the gate.
    let mut john = gate.logged_in("john.smith@example.com", "pass1").await;
    let r = john.cmd("s", "SELECT INBOX").await;
    assert!(common::last(&r).starts_with("s OK"), "{r:?}");

    let profile = tempfile::tempdir().expect("profile");
    let c = chromium(&driver, profile.path()).await;
    c.goto(&format!("{site}/"))
        .await
        .expect("open the admin center");
    assert_eq!(path(&c).await, "/signin");
    shot(&c, "01-sign-in").await;
    // From the keyboard: the name field has the focus; Tab to the password, Enter to sign in.
    let focused = c.active_element().await.expect("focus");
    assert_eq!(
        focused.attr("id").await.expect("id").as_deref(),
        Some("name")
    );
    focused.send_keys("alice").await.expect("type");
    focused.send_keys(&(Key::Tab + "")).await.expect("tab");
    let focused = c.active_element().await.expect("focus");
    assert_eq!(
        focused.attr("id").await.expect("id").as_deref(),
        Some("password")
    );
    focused
        .send_keys(&("alice-password".to_string() + &Key::Enter.to_string()))
        .await
        .expect("type and submit");

    // Recipients > Mailboxes.
    arrive(&c, "/mailboxes").await;
    assert!(text(&c, "table").await.contains("Jane Doe"));
    shot(&c, "02-mailboxes").await;
    // Search "John Smith" (Enter submits the search).
    let search = c.find(Locator::Css("#search")).await.expect("search box");
    search
        .send_keys(&("John Smith".to_string() + &Key::Enter.to_string()))
        .await
        .expect("search");
    for _ in 0..50 {
        if c.current_url().await.expect("url").query().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let table = text(&c, "table").await;
    assert!(
        table.contains("John Smith") && !table.contains("Jane Doe"),
        "{table}"
    );
    assert!(
        table.contains("DISPLAY NAME") || table.contains("Display Name"),
        "{table}"
    );
    // Select him, Edit.
    click(&c, "label[for=select-1]").await;
    click(&c, "#edit").await;
    arrive(&c, "/mailboxes/edit").await;
    assert!(text(&c, "h1").await.contains("John Smith"));
    // Mailbox features: Email Connectivity, IMAP4: Enabled.
    click(&c, "#mailbox-features").await;
    shows(&c, ".pane h2", "Mailbox Features").await;
    assert!(text(&c, ".pane").await.contains("Email Connectivity"));
    assert_eq!(text(&c, "#imap4-status").await, "IMAP4: Enabled");
    // Disable, Save.
    click(&c, "#imap4-disable").await;
    shows(&c, "#imap4-status", "IMAP4: Disabled").await;
    click(&c, "#save").await;
    shows(&c, ".message", "in force now; 1 session closed").await;
    assert_eq!(text(&c, "#imap4-status").await, "IMAP4: Disabled");
    shot(&c, "03-mailbox-features-disabled").await;

    // Over IMAP: John's open session is closed, his login refused.
    assert!(
        john.closed_within(Duration::from_secs(5)).await,
        "his session was closed"
    );
    let refused = common::login(&gate, "john.smith@example.com", "pass1").await;
    assert!(refused.contains("NO [CONTACTADMIN]"), "{refused}");

    // Enable again.
    click(&c, "#imap4-enable").await;
    shows(&c, ".pending", "Not saved yet").await;
    click(&c, "#save").await;
    shows(&c, ".message", "Saved: IMAP4 Enabled for John Smith").await;
    assert_eq!(text(&c, "#imap4-status").await, "IMAP4: Enabled");
    shot(&c, "04-mailbox-features-enabled").await;
    let ok = common::login(&gate, "john.smith@example.com", "pass1").await;
    assert!(ok.starts_with("a OK"), "{ok}");

    // The Sessions view and the audit log show what happened.
    let mut john = gate.logged_in("john.smith@example.com", "pass1").await;
    click(&c, "a[href='/sessions']").await;
    shows(&c, "h1", "Sessions").await;
    assert!(text(&c, "table").await.contains("John Smith"));
    shot(&c, "05-sessions").await;
    click(&c, "a[href='/audit']").await;
    shows(&c, "h1", "audit log").await;
    let audit = text(&c, "table").await;
    assert!(
        audit.contains("admin:alice") && audit.contains("set-imap4"),
        "{audit}"
    );
    shot(&c, "06-audit").await;

    // Another site's form (no token, another origin) changes nothing.
    let evil = evil_site(&site).await;
    c.goto(&format!("http://127.0.0.1:{evil}/"))
        .await
        .expect("evil page");
    click(&c, "#go").await;
    shows(&c, "body", "refused").await;
    assert!(john
        .cmd("n", "NOOP")
        .await
        .last()
        .is_some_and(|l| l.starts_with("n OK")));

    // A Save after signing out in another window is refused.
    c.goto(&format!(
        "{site}/mailboxes/edit?identity=john.smith%40example.com&section=features"
    ))
    .await
    .expect("features");
    click(&c, "#imap4-disable").await;
    shows(&c, ".pending", "Not saved yet").await;
    let first = c.window().await.expect("window");
    let second = c.new_window(false).await.expect("new window");
    c.switch_to_window(second.handle).await.expect("switch");
    c.goto(&format!("{site}/mailboxes")).await.expect("list");
    click(&c, ".signout button").await;
    arrive(&c, "/signin").await;
    c.close_window().await.expect("close the second window");
    c.switch_to_window(first).await.expect("back");
    click(&c, "#save").await;
    shows(&c, ".problem", "You are signed out, so nothing was changed").await;
    assert!(john
        .cmd("n", "NOOP")
        .await
        .last()
        .is_some_and(|l| l.starts_with("n OK")));

    // A view-only administrator sees IMAP4 but has neither Disable nor Save.
    c.goto(&format!("{site}/signin")).await.expect("sign in");
    c.find(Locator::Css("#name"))
        .await
        .expect("name")
        .send_keys("victor")
        .await
        .expect("type");
    c.find(Locator::Css("#password"))
        .await
        .expect("password")
        .send_keys("victor-password")
        .await
        .expect("type");
    click(&c, "#signin").await;
    arrive(&c, "/mailboxes").await;
    c.goto(&format!(
        "{site}/mailboxes/edit?identity=john.smith%40example.com&section=features"
    ))
    .await
    .expect("features");
    assert_eq!(text(&c, "#imap4-status").await, "IMAP4: Enabled");
    assert!(!exists(&c, "#save").await && !exists(&c, "#imap4-disable").await);
    assert!(text(&c, ".note")
        .await
        .contains("View-Only Organization Management"));

    // A narrow window (a phone): no page is wider than the screen.
    c.set_window_size(390, 844).await.expect("resize");
    for (page, name) in [
        ("/mailboxes", "07-narrow-mailboxes"),
        (
            "/mailboxes/edit?identity=john.smith%40example.com&section=features",
            "08-narrow-features",
        ),
        ("/sessions", "09-narrow-sessions"),
        ("/audit", "10-narrow-audit"),
    ] {
        c.goto(&format!("{site}{page}")).await.expect("page");
        let fits = c
            .execute(
                "return document.documentElement.scrollWidth <= window.innerWidth;",
                vec![],
            )
            .await
            .expect("measure");
        shot(&c, name).await;
        assert_eq!(
            fits,
            serde_json::Value::Bool(true),
            "{page} scrolls sideways"
        );
    }

    c.close().await.expect("close the browser");
    gate.stop().await;
}
