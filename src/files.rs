//! Files edited while a daemon reads them: a lock beside them that no symbolic link can
//! redirect, and atomic rewrites (temporary file, fsync, rename, fsync of the directory) that
//! keep the file's mode and owner exactly, whatever the umask.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// `<file>.lock`, beside the file.
pub fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    path.with_file_name(name)
}

/// The lock file, never through a symbolic link (whoever can write the directory must not make
/// root create or truncate a file elsewhere), owner-only.
pub fn open_lock(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                std::io::Error::other("is a symbolic link; refusing to follow it for a lock")
            } else {
                e
            }
        })
}

/// What a file that does not exist yet is created with: its mode, and the group of its directory
/// (so the daemon's group can read what root writes).
#[derive(Debug, Clone, Copy)]
pub struct NewFile {
    pub mode: u32,
}

/// Temporary file beside the real file (a symlinked `path` stays a symlink), created with the
/// file's mode, owner and group (an edit made as root must not lock the daemon's user out), fsync,
/// rename over it, fsync the directory.
pub fn write_atomically(path: &Path, bytes: &[u8], new: Option<NewFile>) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    let (real, mode, uid, gid) = match (std::fs::canonicalize(path), new) {
        (Ok(real), _) => {
            let meta = std::fs::metadata(&real)?;
            (real, meta.mode() & 0o7777, meta.uid(), meta.gid())
        }
        (Err(e), Some(new)) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir = path.parent().unwrap_or(Path::new("."));
            let dir = std::fs::canonicalize(if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            })?;
            let dir_meta = std::fs::metadata(&dir)?;
            let euid = rustix::process::geteuid().as_raw();
            let real = dir.join(path.file_name().unwrap_or_default());
            (real, new.mode, euid, dir_meta.gid())
        }
        (Err(e), _) => return Err(e),
    };
    let dir = real.parent().unwrap_or(Path::new("/")).to_path_buf();
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(real.file_name().unwrap_or_default());
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        // Owner first (a chown may clear set-id bits), then the old mode exactly: the umask
        // must not change it.
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &real)?;
        File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
