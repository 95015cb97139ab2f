//! The control socket: a Unix socket (`[admin] control_socket`) created owner-only (0600), on
//! which the operator's `imapgate` commands reach the running daemon.
//!
//! Protocol: one request line per connection, `VERB [ARGUMENT]` (UTF-8, at most 4 KiB), answered
//! by one line, `OK <json>` or `ERR <message>`. Verbs: `PING`, `RELOAD`, `MAILBOXES` (the
//! directory in force), `SESSIONS`, `KICK <identity>`, `PENALTY <address>` (the failed-login
//! penalty the gate applies to an address). A malformed request gets `ERR` and changes
//! nothing. Besides the file mode, the peer's uid must be root's or the socket owner's.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use crate::directory::{Filter, Listing, MailboxView, Page};
use crate::phase::Phase;
use crate::registry::SessionView;

/// What a successful reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReloadReport {
    pub mailboxes: usize,
    /// Open sessions of mailboxes now disabled, asked to close.
    pub sessions_closed: usize,
}

/// The failed-login penalty of one client address, as `imapgate test-login` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PenaltyView {
    pub address: String,
    /// Failed logins counted (forgotten after 15 minutes without one).
    pub failures: u32,
    /// What the next login from there waits.
    pub delay_ms: u64,
    /// In `trusted_networks`: never penalized.
    pub trusted: bool,
}

/// What a change of a mailbox's IMAP4 access did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeReport {
    /// The mailbox as it is now.
    pub mailbox: MailboxView,
    /// False when it already was so (nothing written).
    pub changed: bool,
    /// Open sessions closed because the mailbox is now disabled.
    pub sessions_closed: usize,
}

/// The admin center's settings in force (they follow reloads).
#[derive(Clone)]
pub struct AdminWeb {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub users_file: PathBuf,
    pub idle_timeout: Duration,
    /// `[security] strict_modes`: the users file is checked like a private key at every read.
    pub strict_modes: bool,
}

/// What the control socket and the admin center ask of the running gate (the composition root
/// implements it).
#[async_trait]
pub trait Controlled: Send + Sync {
    /// Reloads, with systemd told; the error is the reason, in one line.
    async fn reload(&self) -> Result<ReloadReport, String>;
    /// The mailboxes in force.
    async fn mailboxes(&self) -> Result<Vec<MailboxView>, String>;
    fn sessions(&self) -> Vec<SessionView>;
    /// Each backend address and its state.
    fn backends(&self) -> Vec<crate::backend::health::AddressView>;
    /// Every gate's sessions (`[fleet]`).
    async fn fleet_sessions(&self) -> Result<Vec<crate::fleet::bus::FleetSession>, String>;
    /// Closes the sessions of the mailbox `identity` names on every gate (`[fleet]`): how many
    /// each gate closed.
    async fn fleet_kick(&self, identity: &str) -> Result<BTreeMap<String, usize>, String>;
    /// Closes the sessions of the mailbox `identity` names; how many.
    async fn kick(&self, identity: &str) -> Result<usize, String>;
    /// Closes the sessions of the mailbox with this key ([`crate::directory::mailbox_key`]);
    /// how many.
    fn close_mailbox_sessions(&self, mailbox_key: &str) -> usize;
    fn penalty(&self, ip: IpAddr) -> PenaltyView;
    /// `page` of the mailboxes `filter` selects, from the directory in force.
    async fn list(&self, filter: &Filter, page: Page) -> Result<Listing, String>;
    /// Turns IMAP4 on or off through the directory in force: written, in force at once, the
    /// open sessions of a mailbox now disabled closed.
    async fn set_imap_enabled(&self, identity: &str, enabled: bool)
        -> Result<ChangeReport, String>;
    /// The admin center, when configured.
    fn admin_web(&self) -> Option<AdminWeb>;
    /// The audit log, when configured.
    fn audit_log(&self) -> Option<PathBuf>;
}

const MAX_REQUEST: u64 = 4096;
const IO_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot reach the gate's control socket {path}: {source} (is imapgate running?)")]
    Unreachable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("control socket {path}: {message}")]
    Protocol { path: PathBuf, message: String },
    /// The daemon answered `ERR`.
    #[error("{0}")]
    Refused(String),
}

/// Binds the control socket. A socket file left by a gate that is gone (connection refused) is
/// replaced; anything else at the path (a live gate, a regular file) is an error, never deleted.
pub async fn bind(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        let in_use = || {
            std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is in use", path.display()),
            )
        };
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        match UnixStream::connect(path).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path)?
            }
            Ok(_) => return Err(in_use()),
            Err(e) => return Err(e),
        }
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    gate: Arc<dyn Controlled>,
    mut phase: watch::Receiver<Phase>,
) {
    let owner = std::fs::metadata(&path).map(|m| m.uid()).ok();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = phase.wait_for(|p| *p != Phase::Running) => break,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let uid = stream.peer_cred().map(|c| c.uid()).ok();
        let allowed = uid.is_some_and(|u| u == 0 || Some(u) == owner);
        let who = uid.map_or("unix:?".to_string(), super::audit::unix_user);
        tokio::spawn(answer(stream, allowed, who, gate.clone()));
    }
    let _ = std::fs::remove_file(&path);
}

/// Reading the request and writing the answer have deadlines; handling it has none (a reload of
/// a large directory takes what it takes, and the client waits for it).
async fn answer(
    stream: UnixStream,
    allowed: bool,
    who: String,
    gate: Arc<dyn Controlled>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = Vec::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST + 1));
    tokio::time::timeout(IO_TIMEOUT, reader.read_until(b'\n', &mut line))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let reply = if !allowed {
        "ERR permission denied".to_string()
    } else if line.len() as u64 > MAX_REQUEST || !line.ends_with(b"\n") {
        "ERR request too long or not terminated by a newline".to_string()
    } else {
        match std::str::from_utf8(&line) {
            Ok(text) => handle_request(text.trim_end_matches(['\r', '\n']), &who, &*gate).await,
            Err(_) => "ERR request is not UTF-8".to_string(),
        }
    };
    let _ = tokio::time::timeout(IO_TIMEOUT, async {
        write.write_all(reply.as_bytes()).await?;
        write.write_all(b"\n").await?;
        write.shutdown().await?;
        // Read what a refused request left unread (bounded), so closing does not reset the
        // connection before the client has read the answer.
        let mut rest = reader.into_inner().into_inner().take(64 * 1024);
        tokio::io::copy(&mut rest, &mut tokio::io::sink()).await
    })
    .await;
    Ok(())
}

fn ok<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_string(value) {
        Ok(json) => format!("OK {json}"),
        Err(e) => format!("ERR {e}"),
    }
}

async fn handle_request(line: &str, who: &str, gate: &dyn Controlled) -> String {
    let (verb, arg) = line.split_once(' ').unwrap_or((line, ""));
    let audit = |what: &str, mailbox: &str, outcome: &str| {
        let entry = super::audit::Entry::now(who, what, mailbox, "", "", outcome);
        super::audit::record(gate.audit_log().as_deref(), entry);
    };
    match (verb, arg.is_empty()) {
        ("PING", true) => ok(&serde_json::json!({ "version": env!("CARGO_PKG_VERSION") })),
        ("RELOAD", true) => match gate.reload().await {
            Ok(report) => {
                let outcome = format!(
                    "in force: {} mailboxes; {} session(s) of disabled mailboxes closed",
                    report.mailboxes, report.sessions_closed
                );
                audit("reload", "", &outcome);
                ok(&report)
            }
            Err(e) => {
                audit("reload", "", &format!("refused: {}", one_line(&e)));
                format!("ERR {}", one_line(&e))
            }
        },
        ("MAILBOXES", true) => match gate.mailboxes().await {
            Ok(m) => ok(&m),
            Err(e) => format!("ERR {}", one_line(&e)),
        },
        ("SESSIONS", true) => ok(&gate.sessions()),
        ("BACKENDS", true) => ok(&gate.backends()),
        ("FLEET-SESSIONS", true) => match gate.fleet_sessions().await {
            Ok(s) => ok(&s),
            Err(e) => format!("ERR {}", one_line(&e)),
        },
        ("FLEET-KICK", false) => match gate.fleet_kick(arg).await {
            Ok(closed) => {
                let total: usize = closed.values().sum();
                audit(
                    "close-sessions",
                    arg,
                    &format!("{total} session(s) closed on {} gate(s)", closed.len()),
                );
                ok(&closed)
            }
            Err(e) => format!("ERR {}", one_line(&e)),
        },
        ("PENALTY", false) => match arg.parse::<IpAddr>() {
            Ok(ip) => ok(&gate.penalty(ip)),
            Err(_) => format!("ERR {arg:?} is not an IP address"),
        },
        ("KICK", false) => match gate.kick(arg).await {
            Ok(closed) => {
                audit("close-sessions", arg, &format!("{closed} session(s) closed"));
                ok(&serde_json::json!({ "closed": closed }))
            }
            Err(e) => format!("ERR {}", one_line(&e)),
        },
        ("PING" | "RELOAD" | "MAILBOXES" | "SESSIONS" | "BACKENDS", false) => {
            format!("ERR {verb} takes no argument")
        }
        ("KICK" | "FLEET-KICK", true) => "ERR KICK needs an identity".to_string(),
        ("PENALTY", true) => "ERR PENALTY needs an address".to_string(),
        _ => "ERR unknown request; expected PING, RELOAD, MAILBOXES, SESSIONS, BACKENDS, FLEET-SESSIONS, KICK, FLEET-KICK <identity> or PENALTY <address>"
            .to_string(),
    }
}

fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

/// Sends one request and returns the JSON after `OK`.
pub async fn request<T: DeserializeOwned>(path: &Path, line: &str) -> Result<T, ControlError> {
    let unreachable = |source| ControlError::Unreachable {
        path: path.to_path_buf(),
        source,
    };
    let protocol = |message: String| ControlError::Protocol {
        path: path.to_path_buf(),
        message,
    };
    let mut stream = UnixStream::connect(path).await.map_err(unreachable)?;
    let exchange = async {
        stream.write_all(format!("{line}\n").as_bytes()).await?;
        let mut reply = String::new();
        BufReader::new(&mut stream)
            .take(64 * 1024 * 1024)
            .read_line(&mut reply)
            .await?;
        std::io::Result::Ok(reply)
    };
    // A reload reads files and certificates: give it time.
    let reply = tokio::time::timeout(Duration::from_secs(60), exchange)
        .await
        .map_err(|_| protocol("no answer within 60 s".into()))?
        .map_err(|e| protocol(e.to_string()))?;
    let reply = reply.trim_end();
    if let Some(json) = reply.strip_prefix("OK ") {
        serde_json::from_str(json).map_err(|e| protocol(format!("unreadable answer: {e}")))
    } else if let Some(message) = reply.strip_prefix("ERR ") {
        Err(ControlError::Refused(message.to_string()))
    } else {
        Err(protocol(format!("unexpected answer {reply:?}")))
    }
}
