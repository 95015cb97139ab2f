//! The `imapgate` binary itself: check-config, SIGHUP reload (good and broken), SIGTERM shutdown.

mod common;

use std::path::Path;
use std::time::Duration;

use common::daemon::{Daemon, BIN};
use common::fake::{FakeBackend, Script};
use common::{last, Client, GateConfig};
use tokio::process::Command;

fn mailboxes(enabled: bool) -> String {
    format!("# operators' comment\n[[mailbox]]\nname = \"John Smith\"\nemail = \"john@example.com\"\nlogin = \"user1\"\nimap_enabled = {enabled}\n")
}

fn write_files(dir: &Path, backend: &str) -> std::path::PathBuf {
    let mut config = GateConfig::new(backend);
    // The daemon's own runtime settings are read before it starts serving.
    config.extra = "[runtime]\nworker_threads = 1\n".into();
    let config = config.render();
    let path = dir.join("imapgate.toml");
    std::fs::write(&path, config).expect("config");
    std::fs::write(dir.join("mailboxes.toml"), mailboxes(true)).expect("mailboxes");
    path
}

async fn check_config(path: &Path) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(path)
        .output()
        .await
        .expect("run");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn check_config_accepts_good_files_and_names_what_is_wrong() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = write_files(dir.path(), "127.0.0.1:1993");
    let (ok, text) = check_config(&path).await;
    assert!(ok, "{text}");
    assert!(text.contains("OK (1 mailboxes, 1 backends)"), "{text}");
    std::fs::write(
        dir.path().join("mailboxes.toml"),
        "[[mailbox]]\nemail = \"a@x\"\nbackend = \"elsewhere\"\n",
    )
    .expect("w");
    let (ok, text) = check_config(&path).await;
    assert!(!ok);
    assert!(
        text.contains("mailboxes.toml: line 1") && text.contains("elsewhere"),
        "{text}"
    );
    let (ok, text) = check_config(&dir.path().join("missing.toml")).await;
    assert!(!ok && text.contains("missing.toml"), "{text}");
}

async fn login(port: u16, user: &str) -> String {
    let mut c = Client::plain(([127, 0, 0, 1], port).into()).await;
    c.greeting().await;
    last(&c.cmd("a", &format!("LOGIN {user} pass1")).await).to_string()
}

#[tokio::test]
async fn sighup_reloads_and_a_broken_reload_keeps_serving() {
    let fake = FakeBackend::start(Script::default()).await;
    let dir = tempfile::tempdir().expect("tmp");
    let config = write_files(dir.path(), &fake.address());
    let (mut d, port) = Daemon::start(&config).await;
    assert!(login(port, "john@example.com").await.starts_with("a OK"));

    std::fs::write(dir.path().join("mailboxes.toml"), mailboxes(false)).expect("w");
    d.signal("-HUP");
    d.wait_for("reload complete").await;
    assert!(login(port, "john@example.com")
        .await
        .starts_with("a NO [CONTACTADMIN]"));

    std::fs::write(dir.path().join("mailboxes.toml"), "[[mailbox]\n").expect("w");
    d.signal("-HUP");
    let line = d.wait_for("reload refused").await;
    assert!(
        line.contains("mailboxes.toml") && line.contains("line 1"),
        "{line}"
    );
    assert!(
        login(port, "john@example.com")
            .await
            .starts_with("a NO [CONTACTADMIN]"),
        "old directory stays"
    );

    std::fs::write(dir.path().join("mailboxes.toml"), mailboxes(true)).expect("w");
    d.signal("-HUP");
    d.wait_for("reload complete").await;
    assert!(login(port, "john@example.com").await.starts_with("a OK"));
    d.signal("-TERM");
    let status = tokio::time::timeout(Duration::from_secs(10), d.child.wait())
        .await
        .expect("exits")
        .expect("status");
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn sigterm_says_bye_before_login_lets_relays_finish_and_exits_zero() {
    let fake = FakeBackend::start(Script::default()).await;
    let dir = tempfile::tempdir().expect("tmp");
    let config = write_files(dir.path(), &fake.address());
    let text = std::fs::read_to_string(&config)
        .expect("r")
        .replace("shutdown_grace = \"500ms\"", "shutdown_grace = \"3s\"");
    std::fs::write(&config, text).expect("w");
    let (mut d, port) = Daemon::start(&config).await;
    let mut waiting = Client::plain(([127, 0, 0, 1], port).into()).await;
    waiting.greeting().await;
    let mut relayed = Client::plain(([127, 0, 0, 1], port).into()).await;
    relayed.greeting().await;
    assert!(last(&relayed.cmd("a", "LOGIN user1 pass1").await).starts_with("a OK"));

    d.signal("-TERM");
    assert_eq!(
        waiting.line().await,
        "* BYE [UNAVAILABLE] Server shutting down."
    );
    assert!(waiting.closed_within(Duration::from_secs(2)).await);
    // New connections are refused at once.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err());
    // The relayed session still works during the grace period, then is closed.
    assert_eq!(relayed.cmd("b", "NOOP").await, vec!["b OK NOOP done"]);
    assert!(relayed.closed_within(Duration::from_secs(6)).await);
    let status = tokio::time::timeout(Duration::from_secs(10), d.child.wait())
        .await
        .expect("exits")
        .expect("status");
    assert!(status.success(), "{status:?}");
}
