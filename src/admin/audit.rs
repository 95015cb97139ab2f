//! The administrator audit log (`[admin] audit_log`), as Exchange's: every change, from the
//! browser, the command line or the control socket, appends one line (JSON) saying when, who
//! (`admin:NAME` for the admin center, `unix:USER` otherwise), what, to which mailbox, the old and
//! new value, and the outcome. `imapgate audit [--identity ID]` and the admin center show it.
//!
//! A line is one `write` on a file opened for appending, so the daemon and a command writing at
//! once do not mix their lines. A log that cannot be written is reported, never fatal: the change
//! itself already happened.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The longest field written (in characters); longer ones are cut.
const MAX_FIELD: usize = 256;

/// One change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// RFC 3339, UTC.
    pub time: String,
    pub who: String,
    pub what: String,
    pub mailbox: String,
    pub old: String,
    pub new: String,
    pub outcome: String,
}

impl Entry {
    /// A change made now.
    pub fn now(who: &str, what: &str, mailbox: &str, old: &str, new: &str, outcome: &str) -> Entry {
        // One line each, and bounded: a field is what a form or a command line sent.
        let clean = |s: &str| -> String {
            let one_line = s.replace(['\r', '\n'], " ");
            match one_line.char_indices().nth(MAX_FIELD) {
                Some((cut, _)) => format!("{}...", &one_line[..cut]),
                None => one_line,
            }
        };
        Entry {
            time: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            who: clean(who),
            what: clean(what),
            mailbox: clean(mailbox),
            old: clean(old),
            new: clean(new),
            outcome: clean(outcome),
        }
    }
}

/// Appends `entry`; a new log is created 0640 with its directory's group.
pub fn append(path: &Path, entry: &Entry) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let new = !path.exists();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)?;
    if new {
        if let Some(dir) = path.parent().and_then(|d| std::fs::metadata(d).ok()) {
            // The daemon's user and root both write here: the directory's owner and group.
            let _ = std::os::unix::fs::fchown(&file, Some(dir.uid()), Some(dir.gid()));
        }
    }
    file.write_all(&line)
}

/// Appends to the configured log, if any; a failure is logged, not returned.
pub fn record(log: Option<&Path>, entry: Entry) {
    tracing::info!(
        who = %entry.who,
        what = %entry.what,
        mailbox = %entry.mailbox,
        old = %entry.old,
        new = %entry.new,
        outcome = %entry.outcome,
        "audit"
    );
    if let Some(path) = log {
        if let Err(e) = append(path, &entry) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the audit log");
        }
    }
}

/// [`record`] off the runtime's threads (the write is a blocking file write).
pub async fn write(log: Option<std::path::PathBuf>, entry: Entry) {
    let _ = tokio::task::spawn_blocking(move || record(log.as_deref(), entry)).await;
}

/// Every entry of the log, oldest first (unreadable lines skipped); none when there is no log.
pub fn read(path: &Path) -> std::io::Result<Vec<Entry>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The latest `n` entries, newest first, from the last MiB of the log at most (the admin
/// center's view); none when there is no log.
pub fn read_latest(path: &Path, n: usize) -> std::io::Result<Vec<Entry>> {
    use std::io::{Read, Seek, SeekFrom};
    const TAIL: u64 = 1024 * 1024;
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let start = len.saturating_sub(TAIL);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.take(TAIL).read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    // A tail that starts mid-line loses that line (it does not parse).
    Ok(text
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str(l).ok())
        .take(n)
        .collect())
}

/// `unix:NAME` for a user id (from /etc/passwd), `unix:UID` when it has no name there.
pub fn unix_user(uid: u32) -> String {
    let name = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                let mut fields = l.split(':');
                let name = fields.next()?;
                let _password = fields.next()?;
                let id: u32 = fields.next()?.parse().ok()?;
                (id == uid).then(|| name.to_string())
            })
        });
    format!("unix:{}", name.unwrap_or_else(|| uid.to_string()))
}

/// Who runs this process, for changes made from the command line.
pub fn current_user() -> String {
    unix_user(rustix::process::getuid().as_raw())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_one_line_each_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let a = Entry::now(
            "admin:alice",
            "set-imap-enabled",
            "John\nSmith",
            "Enabled",
            "Disabled",
            "in force",
        );
        append(&path, &a).unwrap();
        append(
            &path,
            &Entry::now("unix:root", "kick", "Jane Doe", "", "", "1 session closed"),
        )
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        let back = read(&path).unwrap();
        assert_eq!(back[0].mailbox, "John Smith");
        assert_eq!(back[1].who, "unix:root");
        assert_eq!(unix_user(0), "unix:root");
    }
}
