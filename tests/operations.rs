//! Operating the gate: the systemd unit, sd_notify (against a fake NOTIFY_SOCKET), the
//! Prometheus endpoint, the protocol log, JSON logs, `test-login` and `check-config`.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::daemon::{cli, BIN};
use common::fake::Script;
use common::fixtures::{files_with_fake, gate_with_fake_configured, FAKE_USERS, JOHN_AND_JANE};
use common::{last, GateConfig, TestGate};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UnixDatagram;
use tokio::process::Command;

/// `[metrics]` on a port of its own.
const METRICS: &str = "[metrics]\nlisten = \"127.0.0.1:0\"\n";

/// A gate in front of a default fake backend, writing its protocol log in `plog` beside its
/// configuration; `more` lines of `[protocol_log]`.
async fn gate_with_protocol_log(more: &str) -> TestGate {
    let section = format!("[protocol_log]\nenabled = true\ndirectory = \"plog\"\n{more}");
    let (_fake, gate) = gate_with_fake_configured(Script::default(), FAKE_USERS, |config| {
        config.section(&section)
    })
    .await;
    gate
}

/// The unit exactly as shipped, checked by the systemd of this machine (Debian 12: 252) in a
/// root holding the unit, the binary where the unit expects it, and systemd's own units.
#[tokio::test]
async fn the_shipped_systemd_unit_verifies_on_this_systemd() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .await
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze is needed in CI"
        );
        eprintln!("SKIP: systemd-analyze is not installed");
        return;
    }
    let shipped = common::repo().join("systemd/imapgate.service");
    let unit = std::fs::read_to_string(&shipped).expect("unit");
    let root = tempfile::tempdir().expect("tmp");
    let r = root.path();
    for d in ["etc/systemd/system", "usr/bin", "lib/systemd"] {
        std::fs::create_dir_all(r.join(d)).expect("mkdir");
    }
    std::fs::copy(&shipped, r.join("etc/systemd/system/imapgate.service")).expect("copy unit");
    std::fs::copy(BIN, r.join("usr/bin/imapgate")).expect("copy binary");
    let copied = std::process::Command::new("cp")
        .args(["-a", "/lib/systemd/system"])
        .arg(r.join("lib/systemd/"))
        .status()
        .expect("cp");
    assert!(copied.success());
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", r.display()))
        .arg("imapgate.service")
        .output()
        .await
        .expect("verify");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(
        said.trim().is_empty(),
        "systemd-analyze had remarks: {said}"
    );
    // `systemctl reload` runs `imapgate reload`, which waits for the outcome.
    let exec_reload = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecReload="))
        .expect("ExecReload");
    assert!(
        exec_reload.starts_with("/usr/bin/imapgate reload "),
        "{exec_reload}"
    );
    assert!(unit.contains("\nType=notify\n"), "{unit}");
    // Documentation= names a file the README's install steps put there.
    let doc = unit
        .lines()
        .find_map(|l| l.strip_prefix("Documentation=file://"))
        .expect("Documentation=");
    let readme = std::fs::read_to_string(common::repo().join("README.md")).expect("README");
    assert!(readme.contains(doc), "the README does not install {doc}");
}

/// Reads notifications until one contains `needle`.
async fn notified(socket: &UnixDatagram, needle: &str) -> String {
    let mut buf = vec![0u8; 4096];
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let n = socket.recv(&mut buf).await.expect("recv");
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            if msg.contains(needle) {
                return msg;
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no notification with {needle:?}"))
}

#[tokio::test]
async fn sd_notify_ready_reloading_watchdog_status_and_stopping() {
    let (_fake, dir, config_path) =
        files_with_fake(Script::default(), JOHN_AND_JANE, GateConfig::control_socket).await;
    let notify_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&notify_path).expect("notify socket");
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&config_path)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "400000")
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("daemon");
    let ready = notified(&socket, "READY=1").await;
    assert!(ready.contains("STATUS=serving"), "{ready}");
    notified(&socket, "WATCHDOG=1").await;
    let pid = child.id().expect("pid").to_string();
    let signal = |sig: &str| {
        std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill")
    };
    signal("-HUP");
    let reloading = notified(&socket, "RELOADING=1").await;
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    let after = notified(&socket, "READY=1").await;
    assert!(after.contains("STATUS=serving; reloaded"), "{after}");
    // A refused reload says so in STATUS (through the control socket this time).
    std::fs::write(dir.path().join("mailboxes.toml"), "[[mailbox\n").expect("w");
    let (ok, _, _) = cli(&config_path, &["reload"]).await;
    assert!(!ok);
    notified(&socket, "RELOADING=1").await;
    let refused = notified(&socket, "READY=1").await;
    assert!(
        refused.contains("reload refused") && refused.contains("mailboxes.toml"),
        "{refused}"
    );
    signal("-TERM");
    notified(&socket, "STOPPING=1").await;
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exit")
        .expect("status");
    assert!(status.success());
}

fn value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
}

#[tokio::test]
async fn metrics_are_scraped() {
    let (_fake, gate) = gate_with_fake_configured(Script::default(), JOHN_AND_JANE, |config| {
        config
            .section(METRICS)
            .imap4("login_type = \"secure-login\"")
    })
    .await;
    let addr = gate.metrics.expect("metrics endpoint");
    let mut ok = gate.greeted_tls().await;
    assert!(last(&ok.cmd("a", "LOGIN user1 pass1").await).starts_with("a OK"));
    ok.cmd("n", "NOOP").await;
    let mut other = gate.greeted_tls().await;
    other.cmd("a", "LOGIN user1 wrong").await;
    other.cmd("b", "LOGIN jane@example.com pass2").await;
    // Plain text on the plain port is refused (secure-login).
    let mut plain = gate.greeted().await;
    plain.cmd("a", "LOGIN user1 pass1").await;
    let m = common::scrape(addr).await;
    // One login of each outcome, and one session still open in each phase and listener.
    for series in [
        "imapgate_logins_total{outcome=\"ok\"}",
        "imapgate_logins_total{outcome=\"auth_failed\"}",
        "imapgate_logins_total{outcome=\"disabled\"}",
        "imapgate_logins_total{outcome=\"privacy_required\"}",
        "imapgate_sessions{phase=\"relay\",listener=\"imaps\"}",
        "imapgate_sessions{phase=\"preauth\",listener=\"imaps\"}",
        "imapgate_sessions{phase=\"preauth\",listener=\"imap\"}",
    ] {
        assert_eq!(value(&m, series), 1.0, "{series}");
    }
    assert!(
        value(
            &m,
            "imapgate_backend_connect_seconds_count{backend=\"main\"}"
        ) >= 3.0
    );
    assert_eq!(
        value(&m, "imapgate_backend_login_seconds_count{backend=\"main\"}"),
        3.0
    );
    assert!(value(&m, "imapgate_policy_cache_misses_total") >= 1.0);
    // user1 and Jane Doe (names outside the directory would not be cached).
    assert_eq!(value(&m, "imapgate_policy_cache_entries"), 2.0);
    // A reload that closes the open session of a newly disabled mailbox, and one refused.
    gate.write_mailboxes(&JOHN_AND_JANE.replace(
        "login = \"user1\"\n",
        "login = \"user1\"\nimap_enabled = false\n",
    ));
    gate.handle.reload().await.expect("reload");
    assert!(ok.closed_within(Duration::from_secs(2)).await);
    gate.write_mailboxes("[[mailbox\n");
    assert!(gate.handle.reload().await.is_err());
    let m = common::scrape(addr).await;
    assert_eq!(value(&m, "imapgate_reloads_total{result=\"ok\"}"), 1.0);
    assert_eq!(value(&m, "imapgate_reloads_total{result=\"refused\"}"), 1.0);
    assert_eq!(value(&m, "imapgate_sessions_closed_on_reload_total"), 1.0);
    assert!(value(&m, "imapgate_last_reload_timestamp_seconds") > 1.7e9);
    assert!(
        value(
            &m,
            "imapgate_relayed_bytes_total{direction=\"client_to_backend\"}"
        ) >= 8.0
    );
    assert!(
        value(
            &m,
            "imapgate_relayed_bytes_total{direction=\"backend_to_client\"}"
        ) >= 8.0
    );
    assert_eq!(
        value(&m, "imapgate_sessions{phase=\"relay\",listener=\"imaps\"}"),
        0.0
    );
    assert_eq!(value(&m, "imapgate_protocol_log_dropped_rows_total"), 0.0);
    gate.stop().await;
}

#[tokio::test]
async fn the_protocol_log_has_exchange_rows_and_no_password() {
    let gate = gate_with_protocol_log("").await;
    let mut c = gate.greeted().await;
    c.cmd("a", "CAPABILITY").await;
    c.cmd("b", "LOGIN user1 wrong-Secret-9").await;
    assert!(last(&c.cmd("c", "LOGIN user1 pass1").await).starts_with("c OK"));
    c.cmd("d", "LOGOUT").await;
    assert!(c.closed_within(Duration::from_secs(2)).await);
    // The writer flushes after a second without rows.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let dir = gate.dir.path().join("plog");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .expect("log dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0]
        .file_name()
        .expect("name")
        .to_string_lossy()
        .to_string();
    assert!(
        name.starts_with("IMAP4_")
            && name.ends_with(".LOG")
            && name.len() == "IMAP4_2026112522.LOG".len(),
        "{name}"
    );
    let text = std::fs::read_to_string(&files[0]).expect("read");
    assert!(text.contains("#Fields: dateTime,sessionId,seqNumber,sIp,cIp,user,duration,rqsize,rpsize,command,parameters,context"), "{text}");
    let rows: Vec<Vec<String>> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(',').map(String::from).collect())
        .collect();
    let commands: Vec<&str> = rows.iter().map(|r| r[9].as_str()).collect();
    assert_eq!(
        commands,
        ["CAPABILITY", "LOGIN", "LOGIN", "proxy"],
        "{text}"
    );
    assert_eq!(rows[1][10], "user1 *****");
    assert_eq!(rows[1][11], "auth_failed");
    assert_eq!(rows[2][11], "ok");
    assert_eq!(rows[2][5], "user1");
    assert!(
        rows[3][10].contains("backend=main") && rows[3][11].starts_with("closed"),
        "{text}"
    );
    assert!(rows.iter().all(|r| r.len() == 12), "{text}");
    assert!(
        !text.contains("pass1") && !text.contains("wrong-Secret-9"),
        "{text}"
    );
    gate.stop().await;
}

#[tokio::test]
async fn json_logs_and_test_login() {
    let (_fake, dir, path) = files_with_fake(Script::default(), JOHN_AND_JANE, |config| {
        config.section("[log]\nformat = \"json\"\n")
    })
    .await;
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("daemon");
    let mut log = BufReader::new(child.stderr.take().expect("stderr")).lines();
    // Every line is JSON; the two listeners' addresses come in order.
    let mut ports = Vec::new();
    while ports.len() < 2 {
        let line = log.next_line().await.expect("line").expect("a log line");
        let json: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
        if let Some(port) = json["fields"]["address"]
            .as_str()
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse::<u16>().ok())
        {
            ports.push(port);
        }
    }
    let (port, tls_port) = (ports[0], ports[1]);
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "pass1\n").expect("pw");
    let ca = common::certs().join("ca.pem");
    let probe = |args: Vec<String>| {
        let path = path.clone();
        async move {
            let mut a = vec!["test-login".to_string()];
            a.extend(args);
            let refs: Vec<&str> = a.iter().map(String::as_str).collect();
            cli(&path, &refs).await
        }
    };
    let base = |user: &str, port: u16| {
        vec![
            "--identity".into(),
            user.into(),
            "--password-file".into(),
            pw.display().to_string(),
            "--ca".into(),
            ca.display().to_string(),
            "--address".into(),
            format!("127.0.0.1:{port}"),
        ]
    };
    let (ok, out, err) = probe(base("user1", port)).await;
    assert!(ok, "{out}{err}");
    for stepname in [
        "connect",
        "greeting",
        "starttls",
        "capability",
        "login",
        "select",
        "logout",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(stepname) && l.contains(" ms ")),
            "{stepname}: {out}"
        );
    }
    let mut tls_args = base("user1", tls_port);
    tls_args.push("--tls".into());
    let (ok, out, _) = probe(tls_args).await;
    assert!(
        ok && out.contains("tls") && !out.contains("starttls"),
        "{out}"
    );
    std::fs::write(&pw, "pass2\n").expect("pw");
    let (ok, out, _) = probe(base("jane@example.com", port)).await;
    assert!(!ok && out.contains("NO [CONTACTADMIN]"), "{out}");
    let _ = child.kill().await;
}

#[tokio::test]
async fn check_config_leaves_a_running_gates_ports_alone_and_names_what_is_wrong() {
    let dir = tempfile::tempdir().expect("tmp");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = busy.local_addr().expect("addr").port();
    let write = |config: GateConfig| config.mailboxes("").write_to(dir.path());
    // Edit, check, reload: the gate holding its port does not fail the check...
    let path = write(GateConfig::new("127.0.0.1:1993").imap4(&format!(
        "unencrypted_or_tls_bindings = [\"127.0.0.1:{port}\"]"
    )));
    let (ok, out, err) = cli(&path, &["check-config"]).await;
    assert!(ok, "{out}{err}");
    // ...unless the ports are to be tried.
    let (ok, _, err) = cli(&path, &["check-config", "--bind"]).await;
    assert!(
        !ok && err.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
    // An address that is not this host's.
    let path = write(
        GateConfig::new("127.0.0.1:1993")
            .imap4("unencrypted_or_tls_bindings = [\"192.0.2.7:143\"]"),
    );
    let (ok, _, err) = cli(&path, &["check-config"]).await;
    assert!(!ok && err.contains("not an address of this host"), "{err}");
    // A backend name that does not resolve now is a warning: a start does not need it.
    let path = write(GateConfig::new("no-such-host.invalid:1993"));
    let (ok, out, err) = cli(&path, &["check-config"]).await;
    assert!(
        ok && err.contains("warning") && err.contains("does not resolve"),
        "{out}{err}"
    );
    // The opt-out from a fail-closed directory is said to be only as safe as the name match.
    let path =
        write(GateConfig::new("127.0.0.1:1993").extra_directory("unknown_names = \"defaults\""));
    let (ok, out, err) = cli(&path, &["check-config"]).await;
    assert!(
        ok && err.contains("unknown_names = \"defaults\"") && err.contains("only as safe"),
        "{out}{err}"
    );
    // More connections than descriptors for them.
    let path = write(GateConfig::new("127.0.0.1:1993").imap4("max_connections = 2000000000"));
    let (ok, out, err) = cli(&path, &["check-config"]).await;
    assert!(ok && err.contains("open-file limit"), "{out}{err}");
    // A grace period systemd would cut short.
    let path = write(GateConfig::new("127.0.0.1:1993").imap4("shutdown_grace = \"1m\""));
    let (ok, out, err) = cli(&path, &["check-config"]).await;
    assert!(
        ok && err.contains("warning") && err.contains("TimeoutStopSec (30s"),
        "{out}{err}"
    );
    // The development key with another certificate.
    let other = dir.path().join("other.pem");
    common::self_signed(&other, &dir.path().join("other.key"), "/CN=x", &[]);
    let path = write(GateConfig::new("127.0.0.1:1993").imap4(&format!("certificate = {other:?}")));
    let (ok, _, err) = cli(&path, &["check-config"]).await;
    assert!(!ok && err.contains("usable TLS identity"), "{err}");
    let path = write(GateConfig::new("127.0.0.1:1993"));
    let (ok, out, err) = cli(&path, &["check-config"]).await;
    assert!(ok, "{out}{err}");
    drop(busy);
}

/// The production starting point, byte for byte, with the demo's mailboxes file beside it (as
/// in the repository) and a certificate where it expects one.
#[tokio::test]
async fn the_production_configuration_passes_check_config() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let repo = common::repo();
    std::fs::copy(
        repo.join("config/imapgate.production.toml"),
        d.join("imapgate.toml"),
    )
    .expect("copy");
    std::fs::copy(repo.join("config/mailboxes.toml"), d.join("mailboxes.toml")).expect("copy");
    std::fs::create_dir(d.join("tls")).expect("mkdir");
    std::fs::copy(
        common::certs().join("localhost.pem"),
        d.join("tls/fullchain.pem"),
    )
    .expect("cert");
    std::fs::copy(common::dev_key(), d.join("tls/privkey.pem")).expect("key");
    let (ok, out, err) = cli(&d.join("imapgate.toml"), &["check-config"]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("OK (2 mailboxes, 1 backends)"), "{out}");
}

/// `--help` of every command documents every option.
#[tokio::test]
async fn every_option_has_a_help_text() {
    let commands: &[&[&str]] = &[
        &[],
        &["check-config"],
        &["reload"],
        &["mailbox", "set"],
        &["mailbox", "get"],
        &["sessions"],
        &["kick"],
        &["backends"],
        &["test-login"],
        &["admin-user", "add"],
        &["admin-user", "remove"],
        &["admin-user", "list"],
        &["audit"],
    ];
    for command in commands {
        let out = std::process::Command::new(BIN)
            .args(*command)
            .arg("--help")
            .output()
            .expect("help");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{command:?}: {text}");
        let options = text
            .split("Options:")
            .nth(1)
            .unwrap_or_else(|| panic!("{command:?}: no options: {text}"));
        let lines: Vec<&str> = options.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if !line.trim_start().starts_with('-') {
                continue;
            }
            // `  --name <VALUE>  Help text`: something after the option's own words, or (clap's
            // layout when some option is long) the help on the next, further indented line.
            let words: Vec<&str> = line.split("  ").filter(|w| !w.trim().is_empty()).collect();
            let below = lines.get(i + 1).is_some_and(|next| {
                let text = next.trim_start();
                !text.is_empty()
                    && !text.starts_with('-')
                    && next.len() - text.len() > line.len() - line.trim_start().len()
            });
            assert!(
                words.len() >= 2 || below,
                "{command:?}: no help for {line:?}"
            );
        }
    }
}

#[tokio::test]
async fn relayed_sessions_write_proxy_rows_while_they_last() {
    let gate = gate_with_protocol_log("proxy_row_interval = \"1s\"\n").await;
    let mut c = gate.logged_in("user1", "pass1").await;
    c.cmd("n", "NOOP").await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let dir = gate.dir.path().join("plog");
    let file = std::fs::read_dir(&dir)
        .expect("dir")
        .next()
        .expect("a file")
        .expect("entry")
        .path();
    let text = std::fs::read_to_string(&file).expect("read");
    let relaying: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(",proxy,") && l.contains("relaying;"))
        .collect();
    assert!(relaying.len() >= 2, "{text}");
    assert!(
        relaying
            .iter()
            .all(|l| l.contains("backend=main") && l.contains("bytes_from_client=")),
        "{text}"
    );
    // The closing row is the session's last, and nothing comes after it.
    c.cmd("z", "LOGOUT").await;
    // The log writer flushes after a second without rows: wait for the row, up to 5 s.
    let closed = |text: &str| text.contains("closed: closed;");
    let mut text = String::new();
    for _ in 0..50 {
        text = std::fs::read_to_string(&file).expect("read");
        if closed(&text) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A row written after it would be on disk within 2.5 s (1 s interval, 1 s flush).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let text_after = std::fs::read_to_string(&file).expect("read");
    let last_proxy = text_after.lines().rev().find(|l| l.contains(",proxy,"));
    assert!(closed(&text), "{text}");
    assert!(
        last_proxy.is_some_and(|l| l.contains("closed: closed;")),
        "{text_after}"
    );
    gate.stop().await;
}

#[tokio::test]
async fn bytes_of_open_sessions_reach_the_metrics_while_they_relay() {
    // The sweeper reports what open sessions moved; it passes every eighth of the idle timeout.
    let (_fake, gate) = gate_with_fake_configured(Script::default(), FAKE_USERS, |config| {
        config
            .imap4("authenticated_connection_timeout = \"2s\"")
            .section(METRICS)
    })
    .await;
    let addr = gate.metrics.expect("metrics endpoint");
    let mut c = gate.logged_in("user1", "pass1").await;
    assert_eq!(c.cmd("n", "NOOP").await, vec!["n OK NOOP done"]);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let m = common::scrape(addr).await;
    let up = "imapgate_relayed_bytes_total{direction=\"client_to_backend\"}";
    let down = "imapgate_relayed_bytes_total{direction=\"backend_to_client\"}";
    assert_eq!(value(&m, up), 8.0, "\"n NOOP\\r\\n\"");
    assert_eq!(value(&m, down), 16.0, "\"n OK NOOP done\\r\\n\"");
    assert_eq!(
        value(&m, "imapgate_sessions{phase=\"relay\",listener=\"imap\"}"),
        1.0
    );
    // Closing adds nothing twice.
    assert_eq!(c.cmd("z", "LOGOUT").await.len(), 2);
    assert!(c.closed_within(Duration::from_secs(3)).await);
    let mut m = common::scrape(addr).await;
    for _ in 0..30 {
        if value(&m, "imapgate_sessions{phase=\"relay\",listener=\"imap\"}") == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        m = common::scrape(addr).await;
    }
    assert_eq!(value(&m, up), 8.0 + 10.0, "and \"z LOGOUT\\r\\n\"");
    assert_eq!(
        value(&m, down),
        16.0 + 11.0 + 18.0,
        "and the BYE and OK lines"
    );
    gate.stop().await;
}

/// A self-signed certificate as `openssl req -x509` makes it (a CA certificate) for `name`.
fn self_signed(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("self.pem"), dir.join("self.key"));
    let san = format!("subjectAltName=DNS:{name}");
    common::self_signed(&cert, &key, &format!("/CN={name}"), &["-addext", &san]);
    (cert, key)
}

#[tokio::test]
async fn test_login_names_the_failing_step_and_shows_the_penalty() {
    let dir = tempfile::tempdir().expect("tmp");
    // The development certificate by default; a self-signed one for another name.
    let (cert, key) = self_signed(dir.path(), "self.example");
    let (_fake, gate) = gate_with_fake_configured(Script::default(), FAKE_USERS, |config| {
        config
            .imap4(&format!(
                "sni_certificates = [{{ name = \"self.example\", certificate = {cert:?}, private_key = {key:?} }}]"
            ))
            .imap4("trusted_networks = []")
            .imap4("auth_penalty_initial = \"300ms\"")
            .imap4("auth_penalty_max = \"1s\"")
            .control_socket()
    })
    .await;
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "pass1\n").expect("pw");
    let probe = |extra: &[&str]| {
        let mut args = vec![
            "test-login".to_string(),
            "--identity".into(),
            "user1".into(),
            "--password-file".into(),
            pw.display().to_string(),
            "--address".into(),
            gate.plain.to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let config = gate.config_path.clone();
        async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            cli(&config, &refs).await
        }
    };
    let self_ca = cert.display().to_string();
    let (ok, out, err) = probe(&["--ca", &self_ca]).await;
    assert!(!ok, "{out}{err}");
    let failed = out
        .lines()
        .find(|l| l.contains("FAILED"))
        .unwrap_or_default();
    assert!(
        failed.starts_with("starttls") && failed.contains("not signed by a CA this probe trusts"),
        "{out}"
    );
    assert!(
        out.contains("--ca FILE") && out.contains("--trust-any-certificate"),
        "{out}"
    );
    let (ok, out, _) = probe(&["--ca", &self_ca, "--server-name", "self.example"]).await;
    assert!(
        !ok && out.contains("a CA certificate used as a server certificate"),
        "{out}"
    );
    let (ok, out, err) = probe(&["--trust-any-certificate"]).await;
    assert!(ok && out.contains("NOT verified"), "{out}{err}");
    assert!(
        out.contains("penalty") && out.contains("no recent failed login"),
        "{out}"
    );
    // Two wrong passwords from this address: the next login waits, and the probe says why.
    for _ in 0..2 {
        assert!(common::login(&gate, "user1", "wrong")
            .await
            .contains("AUTHENTICATIONFAILED"));
    }
    let (ok, out, err) = probe(&["--trust-any-certificate"]).await;
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("127.0.0.1 has 2 recent failed login(s): the gate waits 0.6 s"),
        "{out}"
    );
    let login = out
        .lines()
        .find(|l| l.starts_with("login"))
        .unwrap_or_default();
    assert!(
        login.contains("(of which 0.6 s failed-login penalty)"),
        "{out}"
    );
    let metrics = gate.handle.metrics().encode();
    assert!(
        metrics.contains("imapgate_auth_penalty_waits_total 2"),
        "{metrics}"
    );
    gate.stop().await;
}

/// A user name that is a literal holding CR LF must not forge a row (or a comment line) in the
/// protocol log: every line of the file is a header or one whole row.
#[tokio::test]
async fn a_user_name_cannot_forge_protocol_log_rows() {
    let gate = gate_with_protocol_log("").await;
    let mut c = gate.greeted().await;
    let forged = "x\r\n2026-12-02T00:00:00.000Z,00000001,1,127.0.0.1:143,10.0.0.1:1,ceo@example.com,0,1,1,LOGIN,ceo@example.com *****,ok\r\n#Fields: forged";
    c.send(format!("a LOGIN {{{}+}}\r\n{forged} pw\r\n", forged.len()).as_bytes())
        .await;
    assert_eq!(c.line().await, "a NO [AUTHENTICATIONFAILED] LOGIN failed.");
    c.cmd("b", "LOGOUT").await;
    let dir = gate.dir.path().join("plog");
    let mut text = String::new();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(Ok(entry)) = std::fs::read_dir(&dir).ok().and_then(|mut d| d.next()) {
            text = std::fs::read_to_string(entry.path()).expect("read");
            if text.contains(",LOGOUT,") {
                break;
            }
        }
    }
    let lines: Vec<&str> = text.lines().collect();
    let headers = lines.iter().filter(|l| l.starts_with('#')).count();
    assert_eq!(headers, 3, "{text}");
    for line in lines.iter().filter(|l| !l.starts_with('#')) {
        let row = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(line.as_bytes())
            .records()
            .next()
            .expect("a row")
            .expect("CSV");
        assert_eq!(row.len(), 12, "{line}");
        assert!(
            row[0].starts_with("20") && &row[5] != "ceo@example.com",
            "{line}"
        );
    }
    assert_eq!(lines.len(), 3 + 2, "the LOGIN and LOGOUT rows only: {text}");
    let login = lines
        .iter()
        .find(|l| l.contains(",LOGIN,"))
        .expect("the LOGIN row");
    assert!(login.contains("x\\x0d\\x0a2026-12-02"), "{login}");
    assert_eq!(
        lines.iter().filter(|l| l.contains(",LOGIN,")).count(),
        1,
        "{text}"
    );
    gate.stop().await;
}

/// The files users get are fail-closed as shipped.
#[test]
fn the_shipped_configurations_are_fail_closed() {
    use imapgate::config::Config;
    use imapgate::directory::UnknownNames;
    for file in ["config/imapgate.toml", "config/imapgate.production.toml"] {
        let config = Config::load(&common::repo().join(file)).expect(file);
        assert_eq!(
            config.directory.unknown_names,
            UnknownNames::Refuse,
            "{file}"
        );
        assert_eq!(config.directory.refused_login_characters, "*", "{file}");
        assert!(config.security.strict_modes, "{file}");
        assert_eq!(
            config.imap4.max_connections, None,
            "{file}: follows RLIMIT_NOFILE"
        );
    }
}

/// `imapgate --version` names the build's git revision, and the manual page and completions the
/// package installs are generated from the command line itself: every command and option of
/// `--help` is in the page, with the files, signals and exit codes.
#[test]
fn version_manual_page_and_completions_come_from_the_command_line() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(BIN)
            .args(args)
            .output()
            .expect("run");
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let version = run(&["--version"]);
    let expected = format!("imapgate {} (git ", env!("CARGO_PKG_VERSION"));
    assert!(version.starts_with(&expected), "{version}");
    assert!(
        !version.contains("(git unknown)"),
        "built in a git checkout: {version}"
    );
    let page = run(&["man-page"]);
    for section in [
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH COMMANDS",
        ".SH FILES",
        ".SH SIGNALS",
    ] {
        assert!(page.contains(section), "no {section}");
    }
    assert!(page.contains(".SH \"EXIT STATUS\""));
    // Every command and each of its options, as --help lists them.
    let commands = [
        vec!["check-config"],
        vec!["reload"],
        vec!["mailbox", "set"],
        vec!["mailbox", "get"],
        vec!["sessions"],
        vec!["backends"],
        vec!["kick"],
        vec!["test-login"],
        vec!["admin-user", "add"],
        vec!["admin-user", "remove"],
        vec!["admin-user", "list"],
        vec!["audit"],
        vec!["completions"],
    ];
    for command in commands {
        let title = format!(".SS \"imapgate {}", command.join(" ").replace('-', "\\-"));
        assert!(page.contains(&title), "no {title}");
        let mut args = command.clone();
        args.push("--help");
        let help = run(&args);
        for long in help
            .split_whitespace()
            .filter(|w| w.starts_with("--") && *w != "--help" && *w != "--config")
        {
            let long = long.trim_end_matches(',');
            let roff = long.replace('-', "\\-");
            assert!(
                page.contains(&roff),
                "{command:?}: {long} is not in the page"
            );
        }
    }
    assert!(run(&["--help"]).contains("completions"), "listed");
    assert!(!run(&["--help"]).contains("man-page"), "hidden");
    let bash = run(&["completions", "bash"]);
    assert!(bash.contains("complete -F") && bash.contains("check-config"));
    let zsh = run(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef imapgate") && zsh.contains("test-login"));
}

/// A burst of connections, once it has settled, has the gate hand the memory it freed back to
/// the system (counted in the metrics); with `release_memory_after_bursts = false` it does not.
#[tokio::test]
async fn a_settled_burst_of_connections_releases_memory_unless_turned_off() {
    for release in [true, false] {
        let (_fake, gate) = gate_with_fake_configured(Script::default(), FAKE_USERS, |config| {
            config
                .section(METRICS)
                .section(&format!(
                    "[runtime]\nrelease_memory_after_bursts = {release}\n"
                ))
                // The waves come from one address faster than a loaded gate may see the last
                // one's closes: the per-address cap before login is not what is tested here.
                .imap4("max_preauth_connections_from_single_ip = 10000")
        })
        .await;
        let addr = gate.metrics.expect("metrics endpoint");
        // 300 connections in waves of 60 at once, each wave gone before the next: 600
        // comings and goings.
        for _ in 0..5 {
            let wave = futures_util::future::join_all((0..60).map(|_| gate.greeted())).await;
            drop(wave);
        }
        // It is looked at once a second; released within two quiet seconds or not at all.
        let series = "imapgate_memory_releases_total";
        let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
        let mut released = 0.0;
        while tokio::time::Instant::now() < deadline {
            released = value(&common::scrape(addr).await, series);
            if released >= 1.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(
            released >= 1.0,
            release,
            "release_memory_after_bursts = {release}"
        );
        gate.stop().await;
    }
}

/// A reconnect storm arrives faster than one worker accepts: the listeners ask the kernel for
/// the longest accept queue it allows (`net.core.somaxconn`), not 1,024 (with which a storm of
/// 7,000 lost hundreds of handshakes). `ss` shows a listener's queue length as its Send-Q.
#[tokio::test]
async fn listeners_take_the_longest_accept_queue_the_kernel_allows() {
    let (_fake, gate) = gate_with_fake_configured(Script::default(), FAKE_USERS, |c| c).await;
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .expect("somaxconn")
        .trim()
        .parse()
        .expect("a number");
    let out = std::process::Command::new("ss")
        .args(["-Hltn", &format!("sport = :{}", gate.plain.port())])
        .output()
        .expect("ss (iproute2) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let queue: u32 = text
        .split_whitespace()
        .nth(2)
        .and_then(|q| q.parse().ok())
        .unwrap_or_else(|| panic!("no listener line from ss: {text:?}"));
    assert_eq!(queue, somaxconn.min(65_535), "ss said: {text}");
    gate.stop().await;
}
