//! Safe edits of the mailboxes file (the file source's writes): comments, order and formatting of everything else are kept
//! (toml_edit); the result is validated like a reload would before it is written; the write is
//! atomic (temporary file in the same directory, fsync, rename, fsync of the directory); and a
//! lock on `<file>.lock` serializes concurrent editors, so no edit is lost.

use std::path::Path;

use toml_edit::{DocumentMut, Item, TableLike, Value};

use super::{file, find_identity, DirectoryError, Index, MailboxView, SetOutcome};

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DirectoryError + '_ {
    move |source| DirectoryError::Write {
        path: path.to_path_buf(),
        source,
    }
}

fn toml_err(path: &Path, message: impl Into<String>) -> DirectoryError {
    DirectoryError::Parse {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Sets `imap_enabled` on the one mailbox `identity` names (creating it with `create`), under the
/// file lock. `backends` are the configured backend names, for validation. Returns what was
/// done and, when the file was rewritten, the directory it now holds.
pub fn set_imap_enabled(
    path: &Path,
    backends: &[&str],
    identity: &str,
    enabled: bool,
    create: bool,
) -> Result<(SetOutcome, Option<Index>), DirectoryError> {
    let lock_path = lock_path(path);
    let lock = crate::files::open_lock(&lock_path).map_err(io_err(&lock_path))?;
    lock.lock().map_err(io_err(&lock_path))?;
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let views = file::parse(path, &text, backends)?.views();
    let matches = find_identity(&views, identity);
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| toml_err(path, e.to_string()))?;
    let created = match matches.as_slice() {
        [] if create => {
            append_mailbox(&mut doc, identity, enabled)?;
            true
        }
        [] => {
            return Err(DirectoryError::NotFound {
                identity: identity.into(),
            })
        }
        [one] => {
            if views[*one].imap_enabled == enabled {
                let mailbox = views[*one].clone();
                let outcome = SetOutcome {
                    mailbox,
                    created: false,
                    changed: false,
                };
                return Ok((outcome, None));
            }
            let table = mailbox_table(&mut doc, *one).ok_or_else(|| {
                toml_err(path, "the [[mailbox]] entries are not an array of tables")
            })?;
            set_bool(table, "imap_enabled", enabled);
            false
        }
        many => {
            return Err(DirectoryError::Ambiguous {
                identity: identity.into(),
                matches: many.iter().map(|&i| describe(&views[i])).collect(),
            })
        }
    };
    let new_text = doc.to_string();
    // Never write what a reload would refuse.
    let written = file::parse(path, &new_text, backends)?;
    let new_views = written.views();
    let found = find_identity(&new_views, identity);
    let mailbox = found
        .first()
        .map(|&i| new_views[i].clone())
        .ok_or_else(|| DirectoryError::NotFound {
            identity: identity.into(),
        })?;
    write_atomically(path, new_text.as_bytes())?;
    drop(lock);
    let outcome = SetOutcome {
        mailbox,
        created,
        changed: true,
    };
    Ok((outcome, Some(written)))
}

pub use crate::files::lock_path;

fn describe(v: &MailboxView) -> String {
    let mut parts = vec![format!("  {}", v.label())];
    for (k, val) in [
        ("alias", &v.alias),
        ("email", &v.email),
        ("upn", &v.upn),
        ("guid", &v.guid),
    ] {
        if let Some(val) = val {
            parts.push(format!("{k}={val}"));
        }
    }
    parts.join("  ")
}

/// The `index`th `[[mailbox]]` entry, whether written as tables or as an inline array.
fn mailbox_table(doc: &mut DocumentMut, index: usize) -> Option<&mut dyn TableLike> {
    match doc.get_mut("mailbox")? {
        Item::ArrayOfTables(aot) => aot.get_mut(index).map(|t| t as &mut dyn TableLike),
        Item::Value(Value::Array(array)) => array
            .get_mut(index)?
            .as_inline_table_mut()
            .map(|t| t as &mut dyn TableLike),
        _ => None,
    }
}

/// Sets a boolean, keeping the comment and spacing around an existing value.
fn set_bool(table: &mut dyn TableLike, key: &str, value: bool) {
    match table.get_mut(key).and_then(Item::as_value_mut) {
        Some(existing) => {
            let decor = existing.decor().clone();
            *existing = Value::from(value);
            *existing.decor_mut() = decor;
        }
        None => {
            table.insert(key, toml_edit::value(value));
        }
    }
}

fn append_mailbox(
    doc: &mut DocumentMut,
    identity: &str,
    enabled: bool,
) -> Result<(), DirectoryError> {
    let key = if identity.contains('@') {
        "email"
    } else if identity
        .chars()
        .all(|c| c.is_alphanumeric() || "._-".contains(c))
        && !identity.is_empty()
    {
        "alias"
    } else {
        return Err(DirectoryError::CannotCreate(identity.into()));
    };
    let mut table = toml_edit::Table::new();
    table.insert(key, toml_edit::value(identity));
    table.insert("imap_enabled", toml_edit::value(enabled));
    match doc.get_mut("mailbox") {
        Some(Item::ArrayOfTables(aot)) => aot.push(table),
        Some(Item::Value(Value::Array(array))) => array.push(table.into_inline_table()),
        Some(_) => {
            return Err(DirectoryError::CannotCreate(
                "the file's `mailbox` key is not a list of mailboxes".into(),
            ))
        }
        None => {
            let mut aot = toml_edit::ArrayOfTables::new();
            aot.push(table);
            doc.insert("mailbox", Item::ArrayOfTables(aot));
        }
    }
    Ok(())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), DirectoryError> {
    crate::files::write_atomically(path, bytes, None).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"# Directory of Contoso
[defaults]
imap_enabled = true   # Exchange's default

# The boss
[[mailbox]]
name = "John Smith"
email = "john@example.com"
imap_enabled = true   # keep this comment

[[mailbox]]
name = "John Smith"
email = "john.smith2@example.com"
alias = "js2"
"#;

    #[test]
    fn edits_keep_comments_and_refuse_ambiguity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mailboxes.toml");
        std::fs::write(&path, FILE).unwrap();
        let e = set_imap_enabled(&path, &["main"], "john smith", false, false).unwrap_err();
        assert!(
            matches!(e, DirectoryError::Ambiguous { ref matches, .. } if matches.len() == 2),
            "{e}"
        );
        let out = set_imap_enabled(&path, &["main"], "JOHN@example.com", false, false)
            .unwrap()
            .0;
        assert!(out.changed && !out.mailbox.imap_enabled);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("imap_enabled = false   # keep this comment"),
            "{text}"
        );
        assert!(text.starts_with("# Directory of Contoso\n") && text.contains("# The boss"));
        let out = set_imap_enabled(&path, &["main"], "js2", false, false)
            .unwrap()
            .0;
        assert!(out.changed);
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .contains("alias = \"js2\"\nimap_enabled = false"));
        assert!(matches!(
            set_imap_enabled(&path, &["main"], "new@example.com", false, false),
            Err(DirectoryError::NotFound { .. })
        ));
        let out = set_imap_enabled(&path, &["main"], "new@example.com", false, true)
            .unwrap()
            .0;
        assert!(out.created && out.mailbox.email.as_deref() == Some("new@example.com"));
        assert!(matches!(
            set_imap_enabled(&path, &["main"], "two words", false, true),
            Err(DirectoryError::CannotCreate(_))
        ));
    }

    #[test]
    fn edits_keep_mode_owner_and_symlinks() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.toml");
        std::fs::write(&real, FILE).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).unwrap();
        // As root (CI), hand the file to another owner the way a packaged install would.
        let owner = if nix_is_root() {
            4242
        } else {
            std::fs::metadata(&real).unwrap().uid()
        };
        let _ = std::os::unix::fs::chown(&real, Some(owner), Some(owner));
        let link = dir.path().join("mailboxes.toml");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        set_imap_enabled(&link, &["main"], "js2", false, false).unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        let meta = std::fs::metadata(&real).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o640);
        assert_eq!((meta.uid(), meta.gid()), (owner, owner));
        assert!(std::fs::read_to_string(&real)
            .unwrap()
            .contains("alias = \"js2\"\nimap_enabled = false"));
    }

    #[test]
    fn a_symlinked_lock_is_refused_and_the_mode_survives_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mailboxes.toml");
        std::fs::write(&path, FILE).unwrap();
        // Someone who can write the directory points the lock elsewhere.
        let elsewhere = dir.path().join("elsewhere");
        std::os::unix::fs::symlink(&elsewhere, lock_path(&path)).unwrap();
        let e = set_imap_enabled(&path, &["main"], "js2", false, false).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(!elsewhere.exists(), "the lock's target was created");
        std::fs::remove_file(lock_path(&path)).unwrap();
        // A group-writable file keeps its mode under a umask that would take it away.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o664)).unwrap();
        let old = rustix::process::umask(rustix::fs::Mode::from_bits_truncate(0o022));
        let result = set_imap_enabled(&path, &["main"], "js2", false, false);
        rustix::process::umask(old);
        result.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o664);
        let lock_mode = std::fs::metadata(lock_path(&path))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(lock_mode & 0o777, 0o600);
    }

    fn nix_is_root() -> bool {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false)
    }
}
