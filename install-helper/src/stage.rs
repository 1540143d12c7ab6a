//! Taking the package: copy the caller's fd into the root-only staging directory with bounded
//! memory, after a free-space check, fsynced. Everything after this works on the helper's own
//! copy, never on a path iocomd controls.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::fsutil;
use install_api::ErrorCode;

const CHUNK: usize = 64 * 1024;

/// Why staging failed.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The fd is not readable as a file.
    #[error("the package fd cannot be read: {0}")]
    BadFd(std::io::Error),
    /// The package is larger than the configured maximum.
    #[error("the package is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// Not enough free space for the copy plus the reserve.
    #[error("{dir}: {needed} bytes needed (package + reserve), {available} available")]
    NoSpace {
        /// The staging dir.
        dir: PathBuf,
        /// Bytes needed.
        needed: u64,
        /// Bytes available.
        available: u64,
    },
    /// A local I/O error.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

impl StageError {
    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        match self {
            StageError::BadFd(_) | StageError::TooLarge { .. } => ErrorCode::BadRequest,
            StageError::NoSpace { .. } => ErrorCode::NoSpace,
            StageError::Io { .. } => ErrorCode::IoError,
        }
    }
}

/// Bytes available to unprivileged users on the filesystem holding `path`
/// (`f_bavail * f_frsize`, the conservative figure).
pub fn available_bytes(path: &Path) -> std::io::Result<u64> {
    let st = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    Ok((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}

/// Checks that `needed + reserve` bytes are free on the filesystem of `dir`.
pub fn check_space(dir: &Path, needed: u64, reserve: u64) -> Result<(), StageError> {
    let available = available_bytes(dir).map_err(|source| StageError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let needed = needed.saturating_add(reserve);
    if available < needed {
        return Err(StageError::NoSpace {
            dir: dir.to_path_buf(),
            needed,
            available,
        });
    }
    Ok(())
}

/// Copies `src` into `staging_dir/<txid>.deb` (0600, dir 0700), fsynced. Regular files are read
/// from offset 0 with `pread` (the caller's file offset does not matter); other fds are read
/// sequentially up to `max_size`.
pub fn stage(
    src: File,
    staging_dir: &Path,
    txid: &str,
    max_size: u64,
    reserve: u64,
) -> Result<PathBuf, StageError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StageError::Io { path, source }
    };
    fsutil::ensure_private_dir(staging_dir).map_err(io(staging_dir))?;
    let meta = src.metadata().map_err(StageError::BadFd)?;
    let regular = meta.is_file();
    if regular && meta.len() > max_size {
        return Err(StageError::TooLarge { limit: max_size });
    }
    check_space(
        staging_dir,
        if regular { meta.len() } else { max_size },
        reserve,
    )?;
    let dest = staging_dir.join(format!("{txid}.deb"));
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&dest)
        .map_err(io(&dest))?;
    let result = copy(&src, regular, &mut out, max_size, &dest).and_then(|()| {
        out.sync_all().map_err(io(&dest))?;
        fsutil::sync_dir(staging_dir).map_err(io(staging_dir))
    });
    if let Err(e) = result {
        let _ = std::fs::remove_file(&dest);
        return Err(e);
    }
    Ok(dest)
}

fn copy(
    src: &File,
    regular: bool,
    out: &mut File,
    max: u64,
    dest: &Path,
) -> Result<(), StageError> {
    let mut buf = vec![0u8; CHUNK];
    let mut offset: u64 = 0;
    let mut reader = src;
    loop {
        let n = if regular {
            src.read_at(&mut buf, offset)
        } else {
            reader.read(&mut buf)
        };
        let n = match n {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(StageError::BadFd(e)),
        };
        offset += n as u64;
        if offset > max {
            return Err(StageError::TooLarge { limit: max });
        }
        let chunk = buf.get(..n).unwrap_or_default();
        out.write_all(chunk).map_err(|source| {
            if source.raw_os_error() == Some(nix::libc::ENOSPC) {
                StageError::NoSpace {
                    dir: dest.to_path_buf(),
                    needed: offset,
                    available: 0,
                }
            } else {
                StageError::Io {
                    path: dest.to_path_buf(),
                    source,
                }
            }
        })?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Seek;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn copies_from_offset_zero_privately() {
        let d = tempfile::tempdir().unwrap();
        let src_path = d.path().join("in.deb");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&src_path, &data).unwrap();
        let mut f = File::open(&src_path).unwrap();
        f.seek(std::io::SeekFrom::Start(1234)).unwrap();
        let staging = d.path().join("staging");
        let p = stage(f, &staging, "t1", 1 << 20, 0).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), data);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&p), 0o600);
        assert_eq!(mode(&staging), 0o700);
    }

    #[test]
    fn refuses_too_large_and_no_space_leaving_nothing() {
        let d = tempfile::tempdir().unwrap();
        let src_path = d.path().join("in.deb");
        std::fs::write(&src_path, vec![1u8; 5000]).unwrap();
        let staging = d.path().join("staging");
        let e = stage(File::open(&src_path).unwrap(), &staging, "a", 4999, 0).unwrap_err();
        assert_eq!(e.code(), ErrorCode::BadRequest, "{e}");
        let e = stage(
            File::open(&src_path).unwrap(),
            &staging,
            "b",
            1 << 20,
            u64::MAX / 2,
        )
        .unwrap_err();
        assert_eq!(e.code(), ErrorCode::NoSpace, "{e}");
        assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
    }

    #[test]
    fn pipes_are_read_sequentially_and_bounded() {
        let d = tempfile::tempdir().unwrap();
        let (r, w) = std::io::pipe().unwrap();
        let writer = std::thread::spawn(move || {
            let mut w = w;
            let _ = w.write_all(&[7u8; 100_000]);
        });
        let p = stage(
            File::from(std::os::fd::OwnedFd::from(r)),
            d.path(),
            "p",
            1 << 20,
            0,
        )
        .unwrap();
        writer.join().unwrap();
        assert_eq!(std::fs::read(&p).unwrap().len(), 100_000);
    }
}
