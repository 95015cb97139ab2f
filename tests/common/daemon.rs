//! The `imapgate` binary as a child process: the daemon with its log read line by line, and the
//! operator's commands.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};

pub const BIN: &str = env!("CARGO_BIN_EXE_imapgate");

/// The daemon as a child process, with its log read line by line.
pub struct Daemon {
    pub child: Child,
    log: tokio::io::Lines<BufReader<ChildStderr>>,
}

impl Daemon {
    pub async fn start(config: &Path) -> (Daemon, u16) {
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start daemon");
        let stderr = child.stderr.take().expect("stderr");
        let mut d = Daemon {
            child,
            log: BufReader::new(stderr).lines(),
        };
        let line = d.wait_for("listening (plain, STARTTLS)").await;
        let port = line
            .rsplit_once("address=127.0.0.1:")
            .and_then(|(_, p)| p.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .expect("port in the log");
        (d, port)
    }

    pub async fn wait_for(&mut self, needle: &str) -> String {
        let found = tokio::time::timeout(Duration::from_secs(10), async {
            while let Ok(Some(line)) = self.log.next_line().await {
                if line.contains(needle) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        found
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("log line with {needle:?} not seen"))
    }

    /// Waits up to `wait` for the daemon to exit (`expect`s `what` otherwise): it must exit 0.
    pub async fn exits_zero_within(&mut self, wait: Duration, what: &str) {
        let status = tokio::time::timeout(wait, self.child.wait())
            .await
            .expect(what)
            .expect("status");
        assert!(status.success(), "{status:?}");
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("pid").to_string();
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill")
            .success();
        assert!(ok);
    }
}

/// Runs `imapgate ARGS --config CONFIG`; returns (exit success, stdout, stderr).
pub async fn cli(config: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .await
        .expect("run imapgate");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `imapgate mailbox set --identity IDENTITY --imap-enabled ENABLED FLAGS... --config CONFIG`.
pub async fn mailbox_set(
    config: &Path,
    identity: &str,
    enabled: bool,
    flags: &[&str],
) -> (bool, String, String) {
    let enabled = enabled.to_string();
    let mut args = vec![
        "mailbox",
        "set",
        "--identity",
        identity,
        "--imap-enabled",
        &enabled,
    ];
    args.extend_from_slice(flags);
    cli(config, &args).await
}
