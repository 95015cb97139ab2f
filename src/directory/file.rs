//! The mailboxes file (`config/mailboxes.toml`) as a [`Directory`]: `[defaults]` and one
//! `[[mailbox]]` per mailbox, with Exchange's identity forms as keys. Errors carry the file and
//! line they come from. Changes go through [`super::edit`] (comments kept, atomic, locked), and
//! the directory then serves and announces the file as written.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use serde::Deserialize;
use tokio::sync::broadcast;

use super::{
    Change, Directory, DirectoryError, Filter, Index, Listing, MailboxRecord, MailboxView, Page,
    SetOutcome,
};
use crate::config::{describe_toml_error, LineIndex};

/// The mailboxes file, read and checked, served from memory.
pub struct FileDirectory {
    path: PathBuf,
    backends: Vec<String>,
    index: ArcSwap<Index>,
    changes: broadcast::Sender<Change>,
}

impl FileDirectory {
    /// Reads and checks the file at `path`; `backends` are the configured backend names.
    pub fn open(path: &Path, backends: &[&str]) -> Result<FileDirectory, DirectoryError> {
        let index = load(path, backends)?;
        Ok(FileDirectory {
            path: path.to_path_buf(),
            backends: backends.iter().map(|b| b.to_string()).collect(),
            index: ArcSwap::from_pointee(index),
            changes: broadcast::channel(64).0,
        })
    }

    /// The snapshot in force.
    pub fn index(&self) -> Arc<Index> {
        self.index.load_full()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[async_trait]
impl Directory for FileDirectory {
    async fn resolve(&self, name: &str) -> Result<Option<MailboxView>, DirectoryError> {
        let index = self.index.load();
        Ok(index.find(name).map(|m| index.view(m)))
    }

    async fn list(&self, filter: &Filter, page: Page) -> Result<Listing, DirectoryError> {
        let index = self.index.load();
        let selected: Vec<MailboxView> = index
            .mailboxes
            .iter()
            .map(|m| index.view(m))
            .filter(|v| filter.accepts(v))
            .collect();
        let total = selected.len();
        let mailboxes = selected
            .into_iter()
            .skip(page.offset)
            .take(page.limit)
            .collect();
        Ok(Listing { mailboxes, total })
    }

    async fn set_imap_enabled(
        &self,
        identity: &str,
        enabled: bool,
        create: bool,
    ) -> Result<SetOutcome, DirectoryError> {
        let (path, backends, identity) = (
            self.path.clone(),
            self.backends.clone(),
            identity.to_string(),
        );
        let (outcome, written) = tokio::task::spawn_blocking(move || {
            let names: Vec<&str> = backends.iter().map(String::as_str).collect();
            super::edit::set_imap_enabled(&path, &names, &identity, enabled, create)
        })
        .await
        .map_err(|e| DirectoryError::Write {
            path: self.path.clone(),
            source: std::io::Error::other(e.to_string()),
        })??;
        if let Some(index) = written {
            self.index.store(Arc::new(index));
            // Nobody listening is fine: a gate that reloads reads the file anyway.
            let _ = self.changes.send(Change {
                mailbox: Some(outcome.mailbox.clone()),
            });
        }
        Ok(outcome)
    }

    fn defaults(&self) -> (bool, Arc<str>) {
        let index = self.index.load();
        (index.default_imap_enabled, index.default_backend.clone())
    }

    fn watch(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Defaults {
    #[serde(default = "yes")]
    imap_enabled: bool,
    backend: Option<String>,
}

fn yes() -> bool {
    true
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            imap_enabled: true,
            backend: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MailboxesFile {
    #[serde(default)]
    defaults: Defaults,
    #[serde(default)]
    mailbox: Vec<toml::Spanned<MailboxRecord>>,
}

/// Reads and validates the mailboxes file. `backends` are the names configured in `[backends]`;
/// when there is exactly one, it is the default backend unless `[defaults] backend` says otherwise.
pub fn load(path: &Path, backends: &[&str]) -> Result<Index, DirectoryError> {
    let text = std::fs::read_to_string(path).map_err(|source| DirectoryError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text, backends)
}

pub fn parse(path: &Path, text: &str, backends: &[&str]) -> Result<Index, DirectoryError> {
    let file: MailboxesFile = toml::from_str(text).map_err(|e| DirectoryError::Parse {
        path: path.to_path_buf(),
        message: describe_toml_error(text, &e),
    })?;
    let invalid = |line: usize, message: String| DirectoryError::Invalid {
        path: path.to_path_buf(),
        line,
        message,
    };
    let default_backend = match (&file.defaults.backend, backends) {
        (Some(b), _) => b.clone(),
        (None, [only]) => only.to_string(),
        (None, _) => {
            return Err(invalid(
                1,
                "[defaults] backend is required when several backends are configured".into(),
            ))
        }
    };
    if !backends.contains(&default_backend.as_str()) {
        return Err(invalid(
            1,
            format!("[defaults] backend {default_backend:?} is not configured in [backends]"),
        ));
    }
    let lines = LineIndex::new(text);
    let mut mailboxes = Vec::with_capacity(file.mailbox.len());
    for spanned in file.mailbox {
        let (line, _) = lines.line_col(spanned.span().start);
        let mut m = spanned.into_inner();
        m.line = line;
        if m.login_names().next().is_none() {
            return Err(invalid(
                line,
                "a mailbox needs at least one of alias, email, upn, domain_account".into(),
            ));
        }
        for (field, value) in m
            .login_names()
            .chain(m.login.as_deref().map(|l| ("login", l)))
        {
            if value.is_empty() || value.chars().any(|c| c.is_control()) {
                return Err(invalid(
                    line,
                    format!("{field} must be non-empty without control characters"),
                ));
            }
        }
        if let Some(b) = &m.backend {
            if !backends.contains(&b.as_str()) {
                return Err(invalid(
                    line,
                    format!("backend {b:?} is not configured in [backends]"),
                ));
            }
        }
        mailboxes.push(m);
    }
    Index::build(
        mailboxes,
        file.defaults.imap_enabled,
        Arc::from(default_backend),
    )
    .map_err(|(line, message)| invalid(line, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[defaults]
imap_enabled = true

[[mailbox]]
name = "John Smith"
alias = "jsmith"
email = "John.Smith@example.com"
upn = "jsmith@corp.example.com"
domain_account = "CORP\\jsmith"
login = "user1"
imap_enabled = false

[[mailbox]]
email = "ann@example.com"
"#;

    #[test]
    fn every_identity_form_resolves_case_insensitively() {
        let d = parse(Path::new("m.toml"), FILE, &["main"]).unwrap();
        for name in [
            "jsmith",
            "JSMITH",
            "john.smith@EXAMPLE.com",
            "JSmith@corp.example.com",
            "corp\\JSMITH",
            "CORP/jsmith",
        ] {
            let p = d.policy(name).expect("found");
            assert_eq!(p.mailbox.as_deref(), Some("John Smith"), "{name}");
            assert!(!p.imap_enabled, "{name}");
            assert_eq!(&*p.backend_login, "user1");
            assert_eq!(&*p.mailbox_key, "main/user1");
        }
        assert_eq!(d.policy("nobody@example.com"), None);
        let p = d.default_policy("Nobody@example.com");
        assert_eq!(p.mailbox, None);
        assert!(p.imap_enabled);
        assert_eq!(&*p.backend, "main");
        assert_eq!(&*p.backend_login, "Nobody@example.com");
        // Without a `login`, the mailbox's email is its backend login, whatever was typed.
        let ann = d.policy("ANN@example.com").expect("found");
        assert!(ann.imap_enabled);
        assert_eq!(&*ann.backend_login, "ann@example.com");
    }

    #[test]
    fn the_backend_login_name_finds_the_mailbox_too() {
        let d = parse(Path::new("m.toml"), FILE, &["main"]).unwrap();
        // John Smith (disabled) sends "user1" to the backend: typing "user1" must not bypass him.
        let p = d.policy("user1").expect("found");
        assert_eq!(p.mailbox.as_deref(), Some("John Smith"));
        assert!(!p.imap_enabled);
        // A backend login may not be another mailbox's name.
        let text = "[[mailbox]]\nalias = \"a\"\nlogin = \"shared\"\n\n[[mailbox]]\nalias = \"shared\"\nimap_enabled = false\n";
        let e = parse(Path::new("m.toml"), text, &["main"]).unwrap_err();
        assert!(e.to_string().contains("already used"), "{e}");
    }

    #[test]
    fn duplicates_and_unknown_backends_name_the_line() {
        let dup = "[[mailbox]]\nemail = \"a@x\"\n\n[[mailbox]]\nupn = \"A@x\"\n";
        let e = parse(Path::new("m.toml"), dup, &["main"]).unwrap_err();
        assert!(e.to_string().contains("line 4"), "{e}");
        assert!(e.to_string().contains("line 1"), "{e}");
        let bad = "[[mailbox]]\nalias = \"a\"\nbackend = \"nope\"\n";
        let e = parse(Path::new("m.toml"), bad, &["main"]).unwrap_err();
        assert!(
            e.to_string().contains("m.toml: line 1") && e.to_string().contains("nope"),
            "{e}"
        );
        let syntax = "[[mailbox]]\nalias = \n";
        let e = parse(Path::new("m.toml"), syntax, &["main"]).unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
    }
}
