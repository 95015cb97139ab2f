//! The `imapgate` binary itself: check-config, SIGHUP reload (good and broken), SIGTERM shutdown.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::daemon::{Daemon, BIN};
use common::fake::{FakeBackend, Script};
use common::fixtures::{files_with_fake, john_alone};
use common::{last, login_at, Client, GateConfig};
use tokio::process::Command;

/// The daemon's own runtime settings, read before it starts serving.
const RUNTIME: &str = "[runtime]\nworker_threads = 1\n";

/// A default fake backend, and the daemon's files in front of it (John Smith alone, enabled),
/// adjusted by `configure`: (fake, directory, configuration path).
async fn files(
    configure: impl FnOnce(GateConfig) -> GateConfig,
) -> (FakeBackend, tempfile::TempDir, PathBuf) {
    files_with_fake(Script::default(), &john_alone(true), |config| {
        configure(config.section(RUNTIME))
    })
    .await
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
    let (dir, path) = GateConfig::new("127.0.0.1:1993")
        .mailboxes(&john_alone(true))
        .section(RUNTIME)
        .write();
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

/// A login with user1's password on a new connection to the daemon: the tagged answer.
async fn login(port: u16, user: &str) -> String {
    login_at(port, user, "pass1").await.1
}

#[tokio::test]
async fn sighup_reloads_and_a_broken_reload_keeps_serving() {
    let (_fake, dir, config) = files(|config| config).await;
    let (mut d, port) = Daemon::start(&config).await;
    assert!(login(port, "john@example.com").await.starts_with("a OK"));

    std::fs::write(dir.path().join("mailboxes.toml"), john_alone(false)).expect("w");
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

    std::fs::write(dir.path().join("mailboxes.toml"), john_alone(true)).expect("w");
    d.signal("-HUP");
    d.wait_for("reload complete").await;
    assert!(login(port, "john@example.com").await.starts_with("a OK"));
    d.signal("-TERM");
    d.exits_zero_within(Duration::from_secs(10), "exits").await;
}

#[tokio::test]
async fn sigterm_says_bye_before_login_lets_relays_finish_and_exits_zero() {
    let (_fake, _dir, config) = files(|config| config.imap4("shutdown_grace = \"3s\"")).await;
    let (mut d, port) = Daemon::start(&config).await;
    let mut waiting = Client::plain(([127, 0, 0, 1], port).into()).await;
    waiting.greeting().await;
    let (mut relayed, r) = login_at(port, "user1", "pass1").await;
    assert!(r.starts_with("a OK"), "{r}");

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
    d.exits_zero_within(Duration::from_secs(10), "exits").await;
}

#[tokio::test]
async fn a_second_sigterm_closes_relayed_sessions_at_once() {
    let (_fake, _dir, config) = files(|config| config.imap4("shutdown_grace = \"1h\"")).await;
    let (mut d, port) = Daemon::start(&config).await;
    let (mut relayed, r) = login_at(port, "user1", "pass1").await;
    assert!(r.starts_with("a OK"), "{r}");
    d.signal("-TERM");
    d.wait_for("shutting down").await;
    // The grace period runs: the session still works.
    assert_eq!(relayed.cmd("b", "NOOP").await, vec!["b OK NOOP done"]);
    d.signal("-TERM");
    assert!(relayed.closed_within(Duration::from_secs(3)).await);
    d.exits_zero_within(
        Duration::from_secs(5),
        "exits at once, not after the hour of grace",
    )
    .await;
}

#[tokio::test]
async fn reload_without_a_control_socket_signals_the_unit_main_pid() {
    let (_fake, dir, config) = files(|config| config).await;
    let (mut d, port) = Daemon::start(&config).await;
    std::fs::write(dir.path().join("mailboxes.toml"), john_alone(false)).expect("w");
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
    let (_fake, dir, config) = files(|config| {
        config
            .imap4("trusted_networks = []")
            .imap4("auth_penalty_initial = \"200ms\"")
    })
    .await;
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
    let (_fake, dir, config) = files(|config| config).await;
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
    std::fs::write(&mailboxes_file, john_alone(false)).expect("w");
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
