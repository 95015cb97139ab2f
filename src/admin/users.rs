//! The admin center's administrators (`[admin_web] users_file`, `admins.toml`), with roles like
//! Exchange's role groups: **Recipient Management** changes mailboxes, **View-Only**
//! (View-Only Organization Management) sees everything and changes nothing. Passwords are stored
//! as Argon2id hashes (PHC strings); the file is edited like the mailboxes file (locked, atomic,
//! comments kept) by `imapgate admin-user add|remove|list`.

use std::path::{Path, PathBuf};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::Deserialize;
use toml_edit::{DocumentMut, Item};

use crate::files::{self, NewFile};

/// What an administrator may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    // Sees and changes mailboxes' IMAP4 access, closes sessions.
    RecipientManagement,
    // Sees everything, changes nothing (enforced by the server). Plain comments: as doc
    // comments, clap would turn `--help` into its long form.
    ViewOnly,
}

impl Role {
    /// As the file and the command line write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::RecipientManagement => "recipient-management",
            Role::ViewOnly => "view-only",
        }
    }

    /// As the admin center shows it (Exchange's role group names).
    pub fn title(self) -> &'static str {
        match self {
            Role::RecipientManagement => "Recipient Management",
            Role::ViewOnly => "View-Only Organization Management",
        }
    }

    pub fn can_change(self) -> bool {
        self == Role::RecipientManagement
    }
}

/// One administrator.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub name: String,
    pub role: Role,
    /// Argon2id, as a PHC string.
    pub password_hash: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AdminsFile {
    #[serde(default)]
    admin: Vec<Admin>,
}

#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{0:?} is not a valid administrator name (letters, digits, . _ - @; at most 64)")]
    BadName(String),
    #[error("an administrator named {0:?} exists already")]
    Exists(String),
    #[error("no administrator is named {0:?}")]
    Unknown(String),
    #[error("a password must have at least 8 characters")]
    WeakPassword,
}

fn file_error(path: &Path, message: impl ToString) -> UsersError {
    UsersError::File {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// The administrators in the file; none when it does not exist.
pub fn load(path: &Path) -> Result<Vec<Admin>, UsersError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(file_error(path, e)),
    };
    let file: AdminsFile = toml::from_str(&text)
        .map_err(|e| file_error(path, crate::config::describe_toml_error(&text, &e)))?;
    Ok(file.admin)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
}

/// An Argon2id hash of `password` (Argon2's defaults: 19 MiB, 2 passes) with a random salt.
pub fn hash(password: &[u8]) -> Result<String, UsersError> {
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).map_err(|e| file_error(Path::new("salt"), e))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| file_error(Path::new("salt"), e))?;
    Argon2::default()
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| file_error(Path::new("hash"), e))
}

/// A hash nobody knows the password of (made once from 48 random bytes, then thrown away),
/// with the parameters `hash` uses: an unknown name costs the same time as a known one, from
/// the first sign-in on.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$DWZbHLdtM5vXMSXRVd/i5Q$BFLVgYjM2bIo9Wqbwncq5NYB94LGdKErWztEb7krOE8";

/// The administrator `name`, when `password` is theirs. Takes the same time whether or not the
/// name exists.
pub fn verify(admins: &[Admin], name: &str, password: &[u8]) -> Option<Admin> {
    let found = admins.iter().find(|a| a.name == name);
    let stored = found.map_or(DUMMY_HASH, |a| a.password_hash.as_str());
    let ok = PasswordHash::new(stored)
        .map(|h| Argon2::default().verify_password(password, &h).is_ok())
        .unwrap_or(false);
    found.filter(|_| ok).cloned()
}

/// Adds an administrator.
pub fn add(path: &Path, name: &str, role: Role, password: &[u8]) -> Result<(), UsersError> {
    if !valid_name(name) {
        return Err(UsersError::BadName(name.into()));
    }
    if password.chars_count() < 8 {
        return Err(UsersError::WeakPassword);
    }
    let password_hash = hash(password)?;
    edit(path, |doc, admins| {
        if admins.iter().any(|a| a.name == name) {
            return Err(UsersError::Exists(name.into()));
        }
        let mut table = toml_edit::Table::new();
        table.insert("name", toml_edit::value(name));
        table.insert("role", toml_edit::value(role.as_str()));
        table.insert("password_hash", toml_edit::value(password_hash.as_str()));
        match doc.get_mut("admin") {
            Some(Item::ArrayOfTables(aot)) => aot.push(table),
            _ => {
                let mut aot = toml_edit::ArrayOfTables::new();
                aot.push(table);
                doc.insert("admin", Item::ArrayOfTables(aot));
            }
        }
        Ok(())
    })
}

/// Removes an administrator.
pub fn remove(path: &Path, name: &str) -> Result<(), UsersError> {
    edit(path, |doc, admins| {
        let index = admins
            .iter()
            .position(|a| a.name == name)
            .ok_or_else(|| UsersError::Unknown(name.into()))?;
        if let Some(Item::ArrayOfTables(aot)) = doc.get_mut("admin") {
            aot.remove(index);
        }
        Ok(())
    })
}

/// Edits the file under its lock; a new file is private to its owner and the directory's group.
fn edit(
    path: &Path,
    change: impl FnOnce(&mut DocumentMut, &[Admin]) -> Result<(), UsersError>,
) -> Result<(), UsersError> {
    let lock_path = files::lock_path(path);
    let lock = files::open_lock(&lock_path).map_err(|e| file_error(&lock_path, e))?;
    lock.lock().map_err(|e| file_error(&lock_path, e))?;
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            "# imapgate administrators: `imapgate admin-user add|remove|list` (Argon2id hashes).\n"
                .to_string()
        }
        Err(e) => return Err(file_error(path, e)),
    };
    let admins: AdminsFile = toml::from_str(&text).map_err(|e| file_error(path, e.message()))?;
    let mut doc: DocumentMut = text.parse().map_err(|e| file_error(path, e))?;
    change(&mut doc, &admins.admin)?;
    let new_text = doc.to_string();
    toml::from_str::<AdminsFile>(&new_text).map_err(|e| file_error(path, e.message()))?;
    files::write_atomically(path, new_text.as_bytes(), Some(NewFile { mode: 0o640 }))
        .map_err(|e| file_error(path, e))?;
    drop(lock);
    Ok(())
}

trait CharsCount {
    fn chars_count(&self) -> usize;
}

impl CharsCount for [u8] {
    fn chars_count(&self) -> usize {
        String::from_utf8_lossy(self).chars().count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn administrators_are_added_verified_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admins.toml");
        add(&path, "alice", Role::RecipientManagement, b"correct horse").unwrap();
        add(&path, "victor", Role::ViewOnly, b"battery staple").unwrap();
        assert!(matches!(
            add(&path, "alice", Role::ViewOnly, b"whatever123"),
            Err(UsersError::Exists(_))
        ));
        assert!(matches!(
            add(&path, "bob", Role::ViewOnly, b"short"),
            Err(UsersError::WeakPassword)
        ));
        assert!(matches!(
            add(&path, "bad name", Role::ViewOnly, b"long enough"),
            Err(UsersError::BadName(_))
        ));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("$argon2id$") && !text.contains("correct horse"),
            "{text}"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        let admins = load(&path).unwrap();
        assert_eq!(admins.len(), 2);
        let alice = verify(&admins, "alice", b"correct horse").unwrap();
        assert_eq!(alice.role, Role::RecipientManagement);
        assert!(verify(&admins, "alice", b"wrong").is_none());
        assert!(verify(&admins, "nobody", b"correct horse").is_none());
        // The dummy hash parses and has the parameters of a real one.
        let dummy = PasswordHash::new(DUMMY_HASH).unwrap();
        let real = PasswordHash::new(&admins[0].password_hash).unwrap();
        assert_eq!(
            (dummy.algorithm, dummy.params),
            (real.algorithm, real.params)
        );
        remove(&path, "alice").unwrap();
        assert!(matches!(
            remove(&path, "alice"),
            Err(UsersError::Unknown(_))
        ));
        assert_eq!(load(&path).unwrap().len(), 1);
    }
}
