//! The data directory's fixed names, its single-server lock and the admin key file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::ServerError;

pub const DATABASE: &str = "kinema.db";
pub const ARTIFACTS: &str = "artifacts";
pub const SCRATCH: &str = "scratch";
pub const ADMIN_KEY_FILE: &str = "admin-api-key";
const LOCK: &str = "kinema.lock";

/// An exclusive lock on the data directory, held while the server runs: one embedded
/// server per database, so startup may treat every RUNNING job as orphaned.
pub struct DataDirLock {
    _file: File,
}

pub fn lock(dir: &Path) -> Result<DataDirLock, ServerError> {
    let path = dir.join(LOCK);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| ServerError::DataDir {
            path: path.clone(),
            source: e,
        })?;
    // SAFETY: flock on a file descriptor we own; no memory is touched.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(ServerError::DataDirInUse(dir.to_path_buf()));
    }
    Ok(DataDirLock { _file: file })
}

/// Writes the admin key where only this user can read it (mode 0600).
pub fn write_admin_key(dir: &Path, secret: &str) -> Result<PathBuf, ServerError> {
    let path = dir.join(ADMIN_KEY_FILE);
    let io = |e| ServerError::DataDir {
        path: path.clone(),
        source: e,
    };
    let _ = std::fs::remove_file(&path);
    let mut file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(io)?;
    file.write_all(format!("{secret}\n").as_bytes())
        .map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(path)
}
