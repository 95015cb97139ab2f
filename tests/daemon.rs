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

#[tokio::test]
async fn a_second_sigterm_closes_relayed_sessions_at_once() {
    let fake = FakeBackend::start(Script::default()).await;
    let dir = tempfile::tempdir().expect("tmp");
    let config = write_files(dir.path(), &fake.address());
    let text = std::fs::read_to_string(&config)
        .expect("r")
        .replace("shutdown_grace = \"500ms\"", "shutdown_grace = \"1h\"");
    std::fs::write(&config, text).expect("w");
    let (mut d, port) = Daemon::start(&config).await;
    let mut relayed = Client::plain(([127, 0, 0, 1], port).into()).await;
    relayed.greeting().await;
    assert!(last(&relayed.cmd("a", "LOGIN user1 pass1").await).starts_with("a OK"));
    d.signal("-TERM");
    d.wait_for("shutting down").await;
    // The grace period runs: the session still works.
    assert_eq!(relayed.cmd("b", "NOOP").await, vec!["b OK NOOP done"]);
    d.signal("-TERM");
    assert!(relayed.closed_within(Duration::from_secs(3)).await);
    let status = tokio::time::timeout(Duration::from_secs(5), d.child.wait())
        .await
        .expect("exits at once, not after the hour of grace")
        .expect("status");
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn reload_without_a_control_socket_signals_the_unit_main_pid() {
    let fake = FakeBackend::start(Script::default()).await;
    let dir = tempfile::tempdir().expect("tmp");
    let config = write_files(dir.path(), &fake.address());
    let (mut d, port) = Daemon::start(&config).await;
    std::fs::write(dir.path().join("mailboxes.toml"), mailboxes(false)).expect("w");
    // Outside systemd there is nobody to signal.
    let out = Command::new(BIN)
        .args(["reload", "--config"])
        .arg(&config)
        .env_remove("MAINPID")
        .output()
        .await
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no [admin] control_socket"));
    // As systemd runs ExecReload: MAINPID names the daemon.
    let pid = d.child.id().expect("pid").to_string();
    let out = Command::new(BIN)
        .args(["reload", "--config"])
        .arg(&config)
        .env("MAINPID", &pid)
        .output()
        .await
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("sent SIGHUP"));
    d.wait_for("reload complete").await;
    assert!(login(port, "john@example.com")
        .await
        .starts_with("a NO [CONTACTADMIN]"));
}

#[tokio::test]
async fn a_syntax_error_is_logged_as_one_line_and_the_penalty_wait_too() {
    let fake = FakeBackend::start(Script::default()).await;
    let dir = tempfile::tempdir().expect("tmp");
    let config = write_files(dir.path(), &fake.address());
    let text = std::fs::read_to_string(&config).expect("r").replace(
        "trusted_networks = [\"127.0.0.0/8\", \"::1/128\"]",
        "auth_penalty_initial = \"200ms\"",
    );
    std::fs::write(&config, &text).expect("w");
    let (mut d, port) = Daemon::start(&config).await;
    std::fs::write(dir.path().join("mailboxes.toml"), "[[mailbox]\nname = 1\n").expect("w");
    d.signal("-HUP");
    let line = d.wait_for("reload refused").await;
    // The whole message is on the event's line: where, what, and what was expected.
    assert!(
        line.contains("mailboxes.toml") && line.contains("line 1") && line.contains("expected"),
        "{line}"
    );
    // A failed login, then a login that waits for the penalty: logged at info, with the numbers.
    let mut c = Client::plain(([127, 0, 0, 1], port).into()).await;
    c.greeting().await;
    assert!(last(&c.cmd("a", "LOGIN user1 wrong").await).contains("AUTHENTICATIONFAILED"));
    assert!(last(&c.cmd("b", "LOGIN user1 pass1").await).starts_with("b OK"));
    let line = d.wait_for("failed-login penalty").await;
    assert!(
        line.contains("address=127.0.0.1")
            && line.contains("failures=")
            && line.contains("seconds=0.2"),
        "{line}"
    );
}

/// Like sshd's StrictModes: files that decide who may use IMAP4, in directories others can
/// write, or a private key everyone can read, are refused at start, by check-config and by a
/// reload; `[security] strict_modes = false` turns the check off.
#[tokio::test]
async fn files_others_could_change_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let chmod = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    let fake = FakeBackend::start(Script::default()).await;
    let dir = tempfile::tempdir().expect("tmp");
    let config = write_files(dir.path(), &fake.address());
    let mailboxes_file = dir.path().join("mailboxes.toml");
    // The audit's set-up: everything 0666 in a 0777 directory.
    chmod(dir.path(), 0o777);
    chmod(&config, 0o666);
    chmod(&mailboxes_file, 0o666);
    let (ok, text) = check_config(&config).await;
    assert!(!ok, "{text}");
    assert!(
        text.contains("imapgate.toml") && text.contains("0666"),
        "{text}"
    );
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .output()
        .await
        .expect("run");
    assert!(!out.status.success(), "the daemon started");
    assert!(String::from_utf8_lossy(&out.stderr).contains("strict_modes"));
    chmod(&config, 0o644);
    let (ok, text) = check_config(&config).await;
    assert!(
        !ok && text.contains("directory above") && text.contains("0777"),
        "{text}"
    );
    chmod(dir.path(), 0o755);
    let (ok, text) = check_config(&config).await;
    assert!(
        !ok && text.contains("mailboxes.toml") && text.contains("0666"),
        "{text}"
    );
    chmod(&mailboxes_file, 0o640);
    let (ok, text) = check_config(&config).await;
    assert!(ok, "{text}");
    // A key everyone can read.
    let key = dir.path().join("gate.key");
    std::fs::copy(common::dev_key(), &key).expect("key");
    chmod(&key, 0o644);
    let text = std::fs::read_to_string(&config).expect("r");
    let dev_key = format!("{:?}", common::dev_key());
    std::fs::write(&config, text.replace(&dev_key, &format!("{key:?}"))).expect("w");
    let (ok, text) = check_config(&config).await;
    assert!(
        !ok && text.contains("gate.key") && text.contains("private key"),
        "{text}"
    );
    chmod(&key, 0o640);
    // A running gate refuses a reload once the mailboxes file becomes world-writable.
    let (mut d, port) = Daemon::start(&config).await;
    chmod(&mailboxes_file, 0o666);
    std::fs::write(&mailboxes_file, mailboxes(false)).expect("w");
    d.signal("-HUP");
    let line = d.wait_for("reload refused").await;
    assert!(line.contains("0666"), "{line}");
    assert!(login(port, "john@example.com").await.starts_with("a OK"));
    // The check can be turned off (for tests and odd set-ups).
    let text = std::fs::read_to_string(&config).expect("r");
    std::fs::write(
        &config,
        format!("{text}\n[security]\nstrict_modes = false\n"),
    )
    .expect("w");
    let (ok, text) = check_config(&config).await;
    assert!(ok, "{text}");
}
