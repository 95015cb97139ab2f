//! Strict modes, as sshd's `StrictModes`: the files that decide who may use IMAP4 and which
//! certificate the gate presents must not be writable by anyone but their owner (root or the
//! gate's own user), nor sit in directories others can write; a private key must not be
//! readable by others than its owner and group. Otherwise an unprivileged user could enable a
//! disabled mailbox, or swap a key, and the gate would go along.
//!
//! Checked at start, on every reload and by `check-config`; `[security] strict_modes = false`
//! turns it off. A directory with the sticky bit (`/tmp`) is accepted: others may add entries
//! there but not replace ours.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
#[error("{path}: {problem} (fix the mode or owner, or set [security] strict_modes = false)")]
pub struct PermissionError {
    pub path: PathBuf,
    pub problem: String,
}

/// What a file is to the gate, which decides what others may do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Configuration, mailboxes, certificates, CAs: nobody else may write it.
    Decides,
    /// A private key: nobody else may write it, and only its group may read it.
    Secret,
}

/// Checks every file the configuration names, and the directories above each.
pub fn check(config: &Config) -> Result<(), PermissionError> {
    if !config.security.strict_modes {
        return Ok(());
    }
    let euid = rustix::process::geteuid().as_raw();
    let mut files: Vec<(&Path, Kind)> = vec![
        (&config.path, Kind::Decides),
        (&config.directory.mailboxes, Kind::Decides),
    ];
    let imap4 = &config.imap4;
    if let Some(c) = &imap4.certificate {
        files.push((c, Kind::Decides));
    }
    if let Some(k) = &imap4.private_key {
        files.push((k, Kind::Secret));
    }
    for sni in &imap4.sni_certificates {
        files.push((&sni.certificate, Kind::Decides));
        files.push((&sni.private_key, Kind::Secret));
    }
    if let Some(ldap) = &config.directory.ldap {
        // The bind account may read every mailbox and change its flag: a secret like a key.
        files.push((&ldap.bind_password_file, Kind::Secret));
        if let Some(ca) = &ldap.ca {
            files.push((ca, Kind::Decides));
        }
    }
    if let Some(oauth) = &config.oauth {
        // The gate's client secret at the introspection endpoint.
        if let Some(secret) = &oauth.client_secret_file {
            files.push((secret, Kind::Secret));
        }
        if let Some(ca) = &oauth.ca {
            files.push((ca, Kind::Decides));
        }
    }
    if let Some(web) = &config.admin_web {
        // The administrators' password hashes are secrets like a key.
        files.push((&web.users_file, Kind::Secret));
        if let Some(c) = &web.certificate {
            files.push((c, Kind::Decides));
        }
        if let Some(k) = &web.private_key {
            files.push((k, Kind::Secret));
        }
    }
    for backend in config.backends.values() {
        if let Some(ca) = &backend.ca {
            files.push((ca, Kind::Decides));
        }
    }
    for (path, kind) in files {
        check_file(path, kind, euid)?;
    }
    Ok(())
}

/// Checks one file holding secrets (the administrators' hashes), read again at every use.
pub fn check_secret_file(path: &Path) -> Result<(), PermissionError> {
    check_file(path, Kind::Secret, rustix::process::geteuid().as_raw())
}

fn check_file(path: &Path, kind: Kind, euid: u32) -> Result<(), PermissionError> {
    let fail = |path: &Path, problem: String| PermissionError {
        path: path.to_path_buf(),
        problem,
    };
    // A file that is missing is reported by whoever reads it, with a better message.
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    let mode = meta.mode() & 0o7777;
    owned(path, meta.uid(), euid)?;
    if mode & 0o022 != 0 {
        return Err(fail(
            path,
            format!("mode {mode:04o} lets others than its owner write it"),
        ));
    }
    if kind == Kind::Secret && mode & 0o007 != 0 {
        return Err(fail(
            path,
            format!("mode {mode:04o} lets everyone read this private key; it must be private to its owner and group"),
        ));
    }
    // The directories above it, both as named and as they really are (symbolic links followed).
    let mut dirs: Vec<PathBuf> = Vec::new();
    let named = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| named.clone());
    for p in [named, real] {
        for dir in p.ancestors().skip(1) {
            if !dirs.iter().any(|d| d == dir) {
                dirs.push(dir.to_path_buf());
            }
        }
    }
    for dir in dirs {
        let Ok(meta) = std::fs::metadata(&dir) else {
            continue;
        };
        let mode = meta.mode() & 0o7777;
        owned(&dir, meta.uid(), euid)?;
        let sticky = mode & 0o1000 != 0;
        if mode & 0o022 != 0 && !sticky {
            return Err(fail(
                &dir,
                format!(
                    "directory above {} has mode {mode:04o}: others than its owner can replace what is in it",
                    path.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Owned by root or by the gate's own user.
fn owned(path: &Path, uid: u32, euid: u32) -> Result<(), PermissionError> {
    if uid == 0 || uid == euid {
        return Ok(());
    }
    Err(PermissionError {
        path: path.to_path_buf(),
        problem: format!("owned by uid {uid}, neither root nor the gate's user (uid {euid})"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn writable_by_others_and_readable_keys_are_refused() {
        let euid = rustix::process::geteuid().as_raw();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("imapgate.toml");
        std::fs::write(&file, "").unwrap();
        chmod(&file, 0o640);
        check_file(&file, Kind::Decides, euid).unwrap();
        chmod(&file, 0o664);
        let e = check_file(&file, Kind::Decides, euid).unwrap_err();
        assert!(e.to_string().contains("mode 0664"), "{e}");
        chmod(&file, 0o644);
        check_file(&file, Kind::Decides, euid).unwrap();
        let e = check_file(&file, Kind::Secret, euid).unwrap_err();
        assert!(e.to_string().contains("private key"), "{e}");
        chmod(&file, 0o640);
        check_file(&file, Kind::Secret, euid).unwrap();
        chmod(dir.path(), 0o777);
        let e = check_file(&file, Kind::Decides, euid).unwrap_err();
        assert!(e.to_string().contains("directory above"), "{e}");
        chmod(dir.path(), 0o1777);
        check_file(&file, Kind::Decides, euid).unwrap();
        chmod(dir.path(), 0o700);
    }
}
