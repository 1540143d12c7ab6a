//! The dpkg frontend lock (`<admindir>/lock-frontend`), taken like dpkg and apt take it so
//! that the helper, apt and a hand-run dpkg never work on the database at once.

use std::fs::OpenOptions;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

/// Held dpkg frontend lock (`<admindir>/lock-frontend`), released on drop.
///
/// Taken as an open-file-description (OFD) write lock, which conflicts with the classic fcntl
/// locks dpkg and apt take (and with other OFD locks, even in the same process).
#[derive(Debug)]
pub struct FrontendLock {
    _file: std::fs::File,
    path: PathBuf,
}

/// Why the frontend lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Someone else holds it past the deadline.
    #[error("{path} is held by {holder} (waited {waited:?})")]
    Busy {
        /// Lock file.
        path: PathBuf,
        /// Description of the holder (pid when the kernel tells).
        holder: String,
        /// How long we waited.
        waited: Duration,
    },
    /// The lock file could not be opened or locked.
    #[error("{path}: {source}")]
    Io {
        /// Lock file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

fn whole_file_lock(kind: i16) -> nix::libc::flock {
    nix::libc::flock {
        l_type: kind,
        l_whence: nix::libc::SEEK_SET as i16,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    }
}

impl FrontendLock {
    /// Takes the lock at `path`, retrying until `timeout` has passed.
    pub fn acquire(path: &Path, timeout: Duration) -> Result<FrontendLock, LockError> {
        let io_err = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io_err)?;
        let start = Instant::now();
        loop {
            let fl = whole_file_lock(nix::libc::F_WRLCK as i16);
            match nix::fcntl::fcntl(file.as_fd(), nix::fcntl::FcntlArg::F_OFD_SETLK(&fl)) {
                Ok(_) => {
                    return Ok(FrontendLock {
                        _file: file,
                        path: path.to_path_buf(),
                    });
                }
                Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EACCES) => {}
                Err(e) => return Err(io_err(std::io::Error::from(e))),
            }
            let waited = start.elapsed();
            if waited >= timeout {
                return Err(LockError::Busy {
                    path: path.to_path_buf(),
                    holder: holder(&file),
                    waited,
                });
            }
            thread::sleep(Duration::from_millis(100).min(timeout - waited));
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn holder(file: &std::fs::File) -> String {
    let mut fl = whole_file_lock(nix::libc::F_WRLCK as i16);
    match nix::fcntl::fcntl(file.as_fd(), nix::fcntl::FcntlArg::F_OFD_GETLK(&mut fl)) {
        Ok(_) if fl.l_pid > 0 => {
            let comm = std::fs::read_to_string(format!("/proc/{}/comm", fl.l_pid))
                .map(|s| s.trim().to_string())
                .unwrap_or_default();
            format!("pid {} ({comm})", fl.l_pid)
        }
        _ => "another process".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frontend_lock_conflicts_and_times_out_then_frees_on_drop() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("lock-frontend");
        let held = FrontendLock::acquire(&p, Duration::from_secs(1)).unwrap();
        let e = FrontendLock::acquire(&p, Duration::from_millis(300)).unwrap_err();
        assert!(matches!(e, LockError::Busy { .. }), "{e}");
        drop(held);
        FrontendLock::acquire(&p, Duration::from_secs(1)).unwrap();
    }
}
