//! The fleet as `scripts/fleet-demo.sh` starts it (the shipped config/haproxy.cfg and
//! config/fleet/gate-{a,b}.toml): HAProxy with send-proxy-v2 in front of two gates sharing
//! state on Redis, in front of two Dovecots taking PROXY headers. On that topology: the
//! 16-session limit holds across both gates, `mailbox set` on gate A closes the mailbox's
//! sessions on gate B within a second, the gates see the clients' own addresses, a PROXY header
//! from elsewhere is refused, a backend address that dies fails over, Redis stopping keeps
//! logins working, and a gate that dies costs a reconnect through HAProxy.
//!
//! The demo's ports are fixed (31xx-36xx on 127.0.0.1): outside CI the test is skipped when they
//! are taken; in CI they must be free.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::{cli, mailbox_set, BIN};
use common::{last, Client};

const DIR: &str = "/tmp/imapgate-fleet";
const HAPROXY: u16 = 3143;
const GATE_B: u16 = 3343;

struct Topology;

impl Topology {
    fn start() -> Option<Topology> {
        if !common::installed(
            &["haproxy", "redis-server", "dovecot"],
            "haproxy redis-server dovecot-imapd",
        ) {
            return None;
        }
        for port in [3143, 3243, 3343, 3444, 3544, 3679] {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "port {port} is taken: the fleet demo's ports must be free in CI"
                );
                eprintln!("SKIP: port {port} is taken (is scripts/fleet-demo.sh running?)");
                return None;
            }
        }
        let out = Command::new(common::repo().join("scripts/fleet-demo.sh"))
            .arg("--start")
            .env("IMAPGATE_BIN", BIN)
            .output()
            .expect("run scripts/fleet-demo.sh");
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Some(Topology)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = Command::new(common::repo().join("scripts/fleet-demo.sh"))
            .arg("--stop")
            .status();
    }
}

fn config(gate: &str) -> std::path::PathBuf {
    common::repo().join(format!("config/fleet/{gate}.toml"))
}

/// A client through HAProxy from 127.0.0.`source`, after STARTTLS, logged in as `user`; or
/// the login's tagged answer when it was refused.
async fn through_haproxy(source: u8, user: &str, pass: &str) -> Result<Client, String> {
    let mut c = Client::plain_from([127, 0, 0, source], ([127, 0, 0, 1], HAPROXY).into()).await;
    c.greeting().await;
    let mut c = c.starttls().await;
    let r = c.cmd("a", &format!("LOGIN {user} {pass}")).await;
    let answer = last(&r).to_string();
    if answer.starts_with("a OK") {
        Ok(c)
    } else {
        Err(answer)
    }
}

async fn fleet_sessions() -> Vec<serde_json::Value> {
    let (ok, out, err) = cli(
        &config("gate-a"),
        &["sessions", "--fleet", "--format", "json"],
    )
    .await;
    assert!(ok, "{err}");
    serde_json::from_str(&out).expect("json")
}

fn pid(name: &str) -> String {
    std::fs::read_to_string(Path::new(DIR).join(format!("{name}.pid")))
        .expect("pid file")
        .trim()
        .to_string()
}

#[tokio::test]
async fn the_fleet_behind_haproxy() {
    let Some(_topology) = Topology::start() else {
        return;
    };

    // 16 sessions of John through HAProxy, spread over both gates; the 17th is refused.
    let mut held = Vec::new();
    for i in 0..16u8 {
        held.push(
            through_haproxy(100 + i, "jsmith", "pass1")
                .await
                .expect("login"),
        );
    }
    let refused = through_haproxy(120, "jsmith", "pass1")
        .await
        .err()
        .expect("17th refused");
    assert!(refused.starts_with("a NO [LIMIT]"), "{refused}");
    let sessions = fleet_sessions().await;
    assert_eq!(sessions.len(), 16);
    let on = |node: &str| sessions.iter().filter(|s| s["node"] == node).count();
    assert!(on("gate-a") > 0 && on("gate-b") > 0, "spread: {sessions:?}");
    // Each gate saw the client's own address (HAProxy's header), not HAProxy's.
    for s in &sessions {
        let client = s["client"].as_str().expect("client");
        assert!(
            client.starts_with("127.0.0.1") && !client.starts_with("127.0.0.1:"),
            "{client}"
        );
    }

    // Disabled through gate A: every session closes, gate B's within a second.
    let started = Instant::now();
    let (ok, out, err) = mailbox_set(&config("gate-a"), "jsmith", false, &[]).await;
    assert!(ok, "{out}{err}");
    for c in &mut held {
        assert!(c.closed_within(Duration::from_secs(1)).await);
    }
    eprintln!(
        "16 sessions on both gates closed {:?} after mailbox set",
        started.elapsed()
    );
    let refused = through_haproxy(121, "jsmith", "pass1")
        .await
        .err()
        .expect("refused");
    assert!(refused.starts_with("a NO [CONTACTADMIN]"), "{refused}");
    let (ok, _, err) = mailbox_set(&config("gate-b"), "jsmith", true, &[]).await;
    assert!(ok, "{err}");

    // A PROXY header straight from a client is refused.
    let mut direct = Client::plain_from([127, 0, 0, 5], ([127, 0, 0, 1], GATE_B).into()).await;
    direct.greeting().await;
    direct
        .send(b"PROXY TCP4 10.1.1.1 127.0.0.1 1000 143\r\n")
        .await;
    let bye = direct.line().await;
    assert!(bye.starts_with("* BYE PROXY protocol header"), "{bye}");
    assert!(direct.closed_within(Duration::from_secs(2)).await);

    // The first mail server dies: logins fail over to the copy.
    let status = Command::new("doveadm")
        .args(["-c", &format!("{DIR}/mbx1/dovecot.conf"), "stop"])
        .status()
        .expect("doveadm");
    assert!(status.success());
    let started = Instant::now();
    let mut c = through_haproxy(122, "jsmith", "pass1")
        .await
        .expect("failed over");
    assert!(started.elapsed() < Duration::from_secs(5));
    let r = c.cmd("s", "SELECT INBOX").await;
    assert!(last(&r).starts_with("s OK"), "{r:?}");
    drop(c);
    // The gate that served it shows the dead address down.
    let mut shown = String::new();
    for gate in ["gate-a", "gate-b"] {
        let (_, out, _) = cli(&config(gate), &["backends"]).await;
        shown.push_str(&out);
    }
    assert!(
        shown
            .lines()
            .any(|l| l.contains("3444") && l.contains("down")),
        "{shown}"
    );

    // Redis stops: logins go on.
    let _ = Command::new("kill").arg(pid("redis")).status();
    for i in 0..4u8 {
        let c = through_haproxy(130 + i, "jsmith", "pass1").await;
        assert!(c.is_ok(), "without Redis: {:?}", c.err());
    }

    // Gate A dies: clients reconnect through HAProxy to gate B.
    let _ = Command::new("kill")
        .args(["-KILL", &pid("gate-a")])
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut ok_in_a_row = 0;
    while ok_in_a_row < 4 {
        match through_haproxy(140, "jsmith", "pass1").await {
            Ok(_) => ok_in_a_row += 1,
            Err(e) => {
                ok_in_a_row = 0;
                assert!(Instant::now() < deadline, "no gate took over: {e}");
            }
        }
    }
}
