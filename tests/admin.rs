//! Mailbox administration (`imapgate mailbox set|get`, `reload`, `sessions`, `kick`) against the
//! running daemon over its control socket, and reloads that close the sessions of mailboxes that
//! became disabled.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::daemon::{cli, mailbox_set as set_imap_enabled, Daemon};
use common::dovecot::dovecot;
use common::fake::{FakeBackend, Script};
use common::fixtures::{files_with_fake, gate_with_fake, gate_with_fake_configured, CONTOSO};
use common::{last, login_at as login, Client, GateConfig, TestGate};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The Contoso directory and a control socket, in front of `backend`: (directory, config path).
fn setup(backend: &str) -> (tempfile::TempDir, PathBuf) {
    GateConfig::new(backend)
        .control_socket()
        .mailboxes(CONTOSO)
        .write()
}

/// [`setup`] in front of a default fake backend.
async fn setup_with_fake() -> (FakeBackend, tempfile::TempDir, PathBuf) {
    files_with_fake(Script::default(), CONTOSO, GateConfig::control_socket).await
}

/// `imapgate mailbox get --identity IDENTITY`.
async fn get(config: &Path, identity: &str) -> (bool, String, String) {
    cli(config, &["mailbox", "get", "--identity", identity]).await
}

#[tokio::test]
async fn the_seed_procedure_is_one_command_and_one_check_against_dovecot() {
    let Some(d) = dovecot() else { return };
    let (dir, config) = setup(&format!("127.0.0.1:{}", d.port));
    let (_daemon, port) = Daemon::start(&config).await;
    // An open IDLE session of John Smith, and one of another user.
    let (mut john, r) = login(port, "john.smith@example.com", "pass1").await;
    assert!(r.starts_with("a OK"), "{r}");
    john.cmd("s", "SELECT INBOX").await;
    john.send(b"i IDLE\r\n").await;
    assert!(john.line().await.starts_with("+ "));
    let (mut other, r) = login(port, "john.smith2@example.com", "pass3").await;
    assert!(r.starts_with("a OK"), "{r}");
    other.cmd("s", "SELECT INBOX").await;
    other.send(b"i IDLE\r\n").await;
    assert!(other.line().await.starts_with("+ "));

    // Set-CASMailbox -Identity john.smith@example.com -ImapEnabled $false
    let started = Instant::now();
    let (ok, out, err) = set_imap_enabled(&config, "john.smith@example.com", false, &[]).await;
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("IMAP4 set to Disabled") && out.contains("reloaded"),
        "{out}"
    );
    assert_eq!(
        john.line().await,
        "* BYE IMAP4 access is disabled for this mailbox."
    );
    assert!(john.closed_within(Duration::from_secs(1)).await);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The other user's session is untouched.
    other.send(b"DONE\r\n").await;
    assert!(other
        .until_tag("i")
        .await
        .last()
        .unwrap()
        .starts_with("i OK"));
    assert!(last(&other.cmd("n", "NOOP").await).starts_with("n OK"));
    // A real login is refused; the check shows IMAP4: Disabled; the comments survived.
    assert!(login(port, "jsmith", "pass1")
        .await
        .1
        .starts_with("a NO [CONTACTADMIN]"));
    let (ok, out, _) = get(&config, "jsmith").await;
    assert!(ok);
    assert_eq!(out.lines().last(), Some("IMAP4: Disabled"), "{out}");
    let text = std::fs::read_to_string(dir.path().join("mailboxes.toml")).expect("read");
    assert!(
        text.contains("# Contoso directory: keep this comment")
            && text.contains("name = \"John Smith\"   # the boss"),
        "{text}"
    );
    assert!(
        text.contains("imap_enabled = false   # flipped by the tests"),
        "{text}"
    );

    // And back.
    let (ok, out, err) = set_imap_enabled(&config, "JSMITH", true, &[]).await;
    assert!(ok, "{out}{err}");
    assert!(login(port, "jsmith", "pass1").await.1.starts_with("a OK"));
    let (_, out, _) = get(&config, "john.smith@example.com").await;
    assert_eq!(out.lines().last(), Some("IMAP4: Enabled"), "{out}");
}

#[tokio::test]
async fn ambiguous_and_unknown_identities_are_refused() {
    let (_fake, dir, config) = setup_with_fake().await;
    let before = std::fs::read_to_string(dir.path().join("mailboxes.toml")).expect("read");
    let (ok, _, err) = set_imap_enabled(&config, "john smith", false, &["--no-reload"]).await;
    assert!(!ok);
    assert!(
        err.contains("matches 2 mailboxes")
            && err.contains("john.smith@example.com")
            && err.contains("john.smith2@example.com"),
        "{err}"
    );
    let (ok, _, err) =
        set_imap_enabled(&config, "nobody@example.com", false, &["--no-reload"]).await;
    assert!(!ok && err.contains("--create"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("mailboxes.toml")).expect("read"),
        before
    );
    // With --create the entry is added (no daemon running: the change applies at start).
    let (ok, out, err) =
        set_imap_enabled(&config, "nobody@example.com", false, &["--create"]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("created") && out.contains("not running"),
        "{out}"
    );
    let (_, out, _) = get(&config, "nobody@example.com").await;
    assert_eq!(out.lines().last(), Some("IMAP4: Disabled"), "{out}");
}

#[tokio::test]
async fn concurrent_edits_from_several_processes_lose_nothing() {
    let (_fake, dir, config) = setup_with_fake().await;
    let mut runs = Vec::new();
    for i in 0..12 {
        let config = config.clone();
        runs.push(tokio::spawn(async move {
            let id = format!("user{i}@example.com");
            set_imap_enabled(&config, &id, false, &["--create", "--no-reload"]).await
        }));
    }
    // Meanwhile, flips of an existing mailbox.
    for enabled in [false, true, false] {
        let (ok, _, err) =
            set_imap_enabled(&config, "jane@example.com", enabled, &["--no-reload"]).await;
        assert!(ok, "{err}");
    }
    for r in runs {
        let (ok, _, err) = r.await.expect("task");
        assert!(ok, "{err}");
    }
    let text = std::fs::read_to_string(dir.path().join("mailboxes.toml")).expect("read");
    for i in 0..12 {
        assert!(
            text.contains(&format!("email = \"user{i}@example.com\"")),
            "user{i} lost:\n{text}"
        );
    }
    assert!(text.starts_with("# Contoso directory: keep this comment"));
    let (ok, out, _) = cli(
        &config,
        &[
            "mailbox",
            "get",
            "--filter",
            "imap-enabled=false",
            "--format",
            "json",
        ],
    )
    .await;
    assert!(ok);
    let list: Vec<serde_json::Value> = serde_json::from_str(&out).expect("json");
    assert_eq!(list.len(), 13, "{out}");
    assert!(!dir.path().read_dir().expect("dir").any(|e| e
        .expect("e")
        .file_name()
        .to_string_lossy()
        .contains(".tmp-")));
}

#[tokio::test]
async fn get_says_when_the_file_differs_from_what_is_in_force() {
    let (_fake, _dir, config) = setup_with_fake().await;
    let (_daemon, port) = Daemon::start(&config).await;
    let (ok, out, _) = get(&config, "jane@example.com").await;
    assert!(ok && !out.contains("differs"), "{out}");
    assert!(
        out.contains("Source            : the running gate"),
        "{out}"
    );
    let (ok, _, _) = set_imap_enabled(&config, "jane@example.com", false, &["--no-reload"]).await;
    assert!(ok);
    let (_, out, _) = get(&config, "jane@example.com").await;
    assert!(out.contains("on disk differs from in force"), "{out}");
    assert_eq!(
        out.lines().last(),
        Some("IMAP4: Enabled"),
        "what the gate enforces: {out}"
    );
    let (_, table, _) = cli(&config, &["mailbox", "get"]).await;
    assert!(
        table.contains("Jane Doe")
            && table.contains("True *")
            && table.contains("on disk differs from in force"),
        "{table}"
    );
    assert!(login(port, "jane@example.com", "pass2")
        .await
        .1
        .starts_with("a OK"));
    let (ok, out, _) = cli(&config, &["reload"]).await;
    assert!(ok && out.contains("reloaded"), "{out}");
    let (_, out, _) = get(&config, "Jane Doe").await;
    assert!(!out.contains("differs"), "{out}");
    assert_eq!(out.lines().last(), Some("IMAP4: Disabled"));
    assert!(login(port, "jane@example.com", "pass2")
        .await
        .1
        .starts_with("a NO [CONTACTADMIN]"));
}

async fn raw_request(socket: &Path, bytes: &[u8]) -> String {
    let mut s = tokio::net::UnixStream::connect(socket)
        .await
        .expect("connect");
    s.write_all(bytes).await.expect("write");
    let _ = s.shutdown().await;
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut reply))
        .await
        .expect("answer")
        .expect("read");
    reply
}

#[tokio::test]
async fn the_control_socket_is_owner_only_and_refuses_malformed_requests() {
    let (_fake, dir, config) = setup_with_fake().await;
    let (_daemon, port) = Daemon::start(&config).await;
    let socket = dir.path().join("control.sock");
    let mode = std::fs::metadata(&socket)
        .expect("socket")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    for (request, expect) in [
        (&b"FROB\n"[..], "ERR unknown request"),
        (b"KICK\n", "ERR KICK needs an identity"),
        (b"RELOAD now\n", "ERR RELOAD takes no argument"),
        (b"\xff\xfe\n", "ERR request is not UTF-8"),
        (b"RELOAD", "ERR request too long or not terminated"),
        (&[b'A'; 5000][..], "ERR request too long"),
    ] {
        let reply = raw_request(&socket, request).await;
        assert!(
            reply.starts_with(expect),
            "{:?} -> {reply}",
            String::from_utf8_lossy(&request[..request.len().min(20)])
        );
    }
    assert!(raw_request(&socket, b"PING\n")
        .await
        .starts_with("OK {\"version\""));
    // A refused reload: `imapgate reload` exits 1 with the reason; the gate keeps its directory.
    std::fs::write(
        dir.path().join("mailboxes.toml"),
        "[[mailbox]]\nemail = \"a@example.com\"\nimap_enabled = \"no\"\n",
    )
    .expect("w");
    let (ok, _, err) = cli(&config, &["reload"]).await;
    assert!(
        !ok && err.contains("mailboxes.toml") && err.contains("line 3"),
        "{err}"
    );
    assert!(login(port, "jane@example.com", "pass2")
        .await
        .1
        .starts_with("a OK"));
}

#[tokio::test]
async fn sessions_lists_and_kick_closes() {
    let (_fake, _dir, config) = setup_with_fake().await;
    let (_daemon, port) = Daemon::start(&config).await;
    let (mut john, _) = login(port, "jsmith", "pass1").await;
    let (mut jane, _) = login(port, "jane@example.com", "pass2").await;
    john.send(b"i IDLE\r\n").await;
    assert_eq!(john.line().await, "+ idling");
    let (ok, out, _) = cli(&config, &["sessions", "--format", "json"]).await;
    assert!(ok);
    let list: Vec<serde_json::Value> = serde_json::from_str(&out).expect("json");
    assert_eq!(list.len(), 2, "{out}");
    let js = list
        .iter()
        .find(|s| s["user"] == "jsmith")
        .expect("john listed");
    assert_eq!(js["mailbox"], "John Smith");
    assert_eq!(js["backend"], "main");
    assert!(js["bytes_from_client"].as_u64().unwrap_or(0) >= 8, "{js}");
    let (ok, table, _) = cli(&config, &["sessions"]).await;
    assert!(ok && table.contains("2 session(s)"), "{table}");
    // Kick by another identity form of the same mailbox.
    let (ok, out, _) = cli(&config, &["kick", "--identity", "john.smith@example.com"]).await;
    assert!(ok && out.contains("1 session(s) closed"), "{out}");
    assert_eq!(
        john.line().await,
        "* BYE Session closed by the administrator."
    );
    assert!(john.closed_within(Duration::from_secs(1)).await);
    assert!(last(&jane.cmd("n", "NOOP").await).starts_with("n OK"));
}

#[tokio::test]
async fn a_kick_mid_literal_or_after_compress_closes_without_a_bye_line() {
    let (_fake, gate) = gate_with_fake(Script::default(), CONTOSO).await;
    // Mid-literal: the response stream is inside a FETCH literal.
    let mut c = gate.logged_in("jsmith", "pass1").await;
    c.send(b"f XHALF 1000\r\n").await;
    assert_eq!(c.line().await, "* 1 FETCH (BODY[] {1000}");
    let half = c.read_exact(500).await;
    assert!(half.starts_with(b"abc"));
    let n =
        kick_all_and_see_a_silent_close(&gate, &mut c, "closed, with no BYE inside the literal")
            .await;
    assert_eq!(n, 1);
    // After COMPRESS the stream is deflate: no plaintext line may be injected.
    let mut c = gate.logged_in("jsmith", "pass1").await;
    assert_eq!(
        c.cmd("z", "COMPRESS DEFLATE").await,
        vec!["z OK COMPRESS done"]
    );
    kick_all_and_see_a_silent_close(&gate, &mut c, "closed, no line").await;
    gate.stop().await;
}

#[tokio::test]
async fn a_reload_during_a_login_in_flight_is_not_missed() {
    let (_fake, gate) = gate_with_fake(
        Script::with_login_delay(Duration::from_millis(700)),
        CONTOSO,
    )
    .await;
    let mut c = gate.greeted().await;
    c.send(b"a LOGIN jsmith pass1\r\n").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    gate.write_mailboxes(&CONTOSO.replace(
        "imap_enabled = true   # flipped",
        "imap_enabled = false   # flipped",
    ));
    gate.handle.reload().await.expect("reload");
    let r = c.until_tag("a").await;
    assert!(last(&r).starts_with("a NO [CONTACTADMIN]"), "{r:?}");
    gate.stop().await;
}

#[tokio::test]
async fn reload_moves_mailboxes_between_backends_and_removed_ones_get_defaults() {
    let two = FakeBackend::start(Script::default()).await;
    let base = CONTOSO.replace(
        "imap_enabled = true\n\n",
        "imap_enabled = true\nbackend = \"main\"\n\n",
    );
    let (one, gate) = gate_with_fake_configured(Script::default(), &base, |config| {
        config.backend("two", &format!("address = \"{}\"", two.address()))
    })
    .await;
    let _first = gate.logged_in("jsmith", "pass1").await;
    assert_eq!(one.named("AUTHENTICATE").len(), 1);
    // Move John Smith to backend "two".
    gate.write_mailboxes(&base.replace(
        "login = \"user1\"\n",
        "login = \"user1\"\nbackend = \"two\"\n",
    ));
    gate.handle.reload().await.expect("reload");
    let _second = gate.logged_in("jsmith", "pass1").await;
    assert_eq!(
        two.named("AUTHENTICATE").len(),
        1,
        "new sessions go to the new backend"
    );
    // Remove Jane Doe: her address now gets the defaults (no `login` mapping: the typed name is sent).
    gate.write_mailboxes(
        base.split("[[mailbox]]\nname = \"Jane Doe\"")
            .next()
            .expect("split"),
    );
    gate.handle.reload().await.expect("reload");
    let mut c = gate.greeted().await;
    let r = c.cmd("a", "LOGIN jane@example.com pass2").await;
    assert!(
        last(&r).starts_with("a NO [AUTHENTICATIONFAILED]"),
        "the backend knows no jane@example.com: {r:?}"
    );
    gate.stop().await;
}

#[tokio::test]
async fn bytes_right_behind_the_login_ok_count_for_the_bye_decision() {
    // The backend's OK is followed at once by the start of a literal; a kick must not put a BYE
    // inside it.
    let (_fake, gate) = gate_with_fake(
        Script {
            after_login: b"* 1 FETCH (BODY[] {10}\r\nabc".to_vec(),
            ..Script::default()
        },
        CONTOSO,
    )
    .await;
    let mut c = gate.greeted().await;
    c.send(b"a LOGIN jsmith pass1\r\n").await;
    let l = c.line().await;
    assert!(l.starts_with("a OK"), "{l}");
    assert_eq!(c.line().await, "* 1 FETCH (BODY[] {10}");
    assert_eq!(c.read_exact(3).await, b"abc");
    kick_all_and_see_a_silent_close(&gate, &mut c, "closed without a BYE").await;
    gate.stop().await;
}

#[tokio::test]
async fn compress_after_a_refused_literal_is_still_seen() {
    let (_fake, gate) = gate_with_fake(Script::default(), CONTOSO).await;
    let mut c = gate.logged_in("jsmith", "pass1").await;
    // The backend refuses the literal: no data follows the announcement.
    let r = c.cmd("b", "APPEND INBOX {100000}").await;
    assert_eq!(r, vec!["b NO [TOOBIG] literal too big"]);
    assert_eq!(
        c.cmd("z", "COMPRESS DEFLATE").await,
        vec!["z OK COMPRESS done"]
    );
    kick_all_and_see_a_silent_close(&gate, &mut c, "no plaintext BYE after COMPRESS").await;
    gate.stop().await;
}

#[tokio::test]
async fn after_large_literals_a_kick_still_finds_the_line_boundary() {
    // Literals this large go through a pipe (splice) between two plain sockets, unseen by the
    // gate; its tracker must still know where the response lines end.
    let (_fake, gate) = gate_with_fake(Script::default(), CONTOSO).await;
    let mut c = gate.logged_in("jsmith", "pass1").await;
    let pattern = b"abcdefghijklmnopqrstuvwxyz\r\n";
    for (i, n) in [3_000_000usize, 65_537, 1_048_576].into_iter().enumerate() {
        c.send(format!("f{i} XBIG {n}\r\n").as_bytes()).await;
        assert_eq!(c.line().await, format!("* 1 FETCH (BODY[] {{{n}}}"));
        let body = c.read_exact(n).await;
        assert!(body.iter().enumerate().all(|(j, b)| *b == pattern[j % 28]));
        assert_eq!(c.line().await, ")");
        assert_eq!(c.line().await, format!("f{i} OK FETCH done"));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sessions = gate.handle.registry().list();
    assert!(sessions[0].bytes_from_backend > 4_114_113, "{sessions:?}");
    disable_all(&gate);
    assert_eq!(
        c.line().await,
        "* BYE IMAP4 access is disabled for this mailbox."
    );

    // In the middle of such a literal: closed, no BYE inside it.
    let mut c = gate.logged_in("jsmith", "pass1").await;
    c.send(b"f XHALF 3000000\r\n").await;
    assert_eq!(c.line().await, "* 1 FETCH (BODY[] {3000000}");
    assert_eq!(c.read_exact(1_500_000).await.len(), 1_500_000);
    kick_all_and_see_a_silent_close(&gate, &mut c, "closed, no line").await;
    gate.stop().await;
}

/// Closes every relayed session as a reload that disabled their mailboxes would; how many.
fn disable_all(gate: &TestGate) -> usize {
    gate.handle
        .registry()
        .kick_where(imapgate::registry::Kick::Disabled, |_| true)
}

/// Once what was sent has settled, closes every relayed session as [`disable_all`] does, and
/// asserts that `c` then sees the end of the stream, no line before it (`why`); how many closed.
async fn kick_all_and_see_a_silent_close(gate: &TestGate, c: &mut Client, why: &str) -> usize {
    tokio::time::sleep(Duration::from_millis(100)).await;
    let closed = disable_all(gate);
    assert_eq!(c.try_line(Duration::from_secs(2)).await, Ok(None), "{why}");
    closed
}

#[tokio::test]
async fn mailbox_get_shows_what_is_enforced_when_the_file_is_broken() {
    let (_fake, dir, config) = setup_with_fake().await;
    let (_daemon, _port) = Daemon::start(&config).await;
    let broken = CONTOSO.replace("name = \"Jane Doe\"", "name = \"Jane Doe");
    std::fs::write(dir.path().join("mailboxes.toml"), broken).expect("write");
    let (ok, out, err) = get(&config, "jsmith").await;
    assert!(ok, "{out}{err}");
    assert_eq!(out.lines().last(), Some("IMAP4: Enabled"), "{out}");
    assert!(out.contains("Name              : John Smith"), "{out}");
    assert!(
        err.contains("mailboxes.toml") && err.contains("broken") && err.contains("line 18"),
        "{err}"
    );
    let (ok, out, err) = cli(&config, &["mailbox", "get"]).await;
    assert!(
        ok && out.contains("Jane Doe") && out.contains("broken"),
        "{out}{err}"
    );
}

#[tokio::test]
async fn kick_of_an_identity_nobody_has_is_an_error() {
    let (_fake, _dir, config) = setup_with_fake().await;
    let (_daemon, _port) = Daemon::start(&config).await;
    let (ok, out, err) = cli(&config, &["kick", "--identity", "nosuch"]).await;
    assert!(!ok, "{out}{err}");
    assert!(err.contains("no mailbox matches \"nosuch\""), "{err}");
    // A mailbox without open sessions is fine: nothing to close.
    let (ok, out, err) = cli(&config, &["kick", "--identity", "jane@example.com"]).await;
    assert!(ok && out.contains("0 session(s) closed"), "{out}{err}");
}

#[tokio::test]
async fn mailbox_set_does_not_follow_a_symlinked_lock_file() {
    let (dir, config) = setup("127.0.0.1:1");
    // Whoever can write the directory points the lock at a file root would then create.
    let target = dir.path().join("created-by-root");
    std::os::unix::fs::symlink(&target, dir.path().join("mailboxes.toml.lock")).expect("link");
    let args = [
        "mailbox",
        "set",
        "--identity",
        "jsmith",
        "--imap-enabled",
        "false",
        "--no-reload",
    ];
    let (ok, out, err) = cli(&config, &args).await;
    assert!(!ok, "{out}{err}");
    assert!(err.contains("symbolic link"), "{err}");
    assert!(!target.exists());
    let text = std::fs::read_to_string(dir.path().join("mailboxes.toml")).expect("read");
    assert_eq!(text, CONTOSO, "the file was not changed");
}

/// A change made through the directory (as the admin center will make it) is in force at once:
/// the cache forgets, the mailbox's open sessions close, the next login is refused; no reload.
#[tokio::test]
async fn a_change_through_the_directory_closes_the_mailboxs_sessions() {
    let (_fake, gate) = gate_with_fake(Script::default(), CONTOSO).await;
    let mut john = gate.logged_in("jsmith", "pass1").await;
    let mut jane = gate.logged_in("jane@example.com", "pass2").await;
    let directory = gate.handle.state().policies.source().clone();
    let outcome = directory
        .set_imap_enabled("john.smith@example.com", false, false)
        .await
        .expect("set");
    assert!(outcome.changed && !outcome.mailbox.imap_enabled);
    assert_eq!(
        john.line().await,
        "* BYE IMAP4 access is disabled for this mailbox."
    );
    assert!(john.closed_within(Duration::from_secs(1)).await);
    assert!(last(&jane.cmd("n", "NOOP").await).starts_with("n OK"));
    assert!(common::login(&gate, "jsmith", "pass1")
        .await
        .starts_with("a NO [CONTACTADMIN]"));
    // The file says so too: a reload keeps it.
    let text = std::fs::read_to_string(gate.mailboxes_path()).expect("read");
    assert!(
        text.contains("imap_enabled = false   # flipped by the tests"),
        "{text}"
    );
    gate.stop().await;
}
