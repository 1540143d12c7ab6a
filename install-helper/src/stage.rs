//! Taking the package: one pass over the caller's fd that writes the helper's own copy into
//! the root-only staging directory and verifies the very bytes it writes
//! ([`crate::txn::Verifier::verify_stream`]: structure, SHA-256, signature, control, policy,
//! content), with bounded memory, after a free-space check. Nothing reads the copy again to
//! verify it; dpkg installs that copy, so what is installed is what was verified. Everything
//! after this works on the helper's own copy, never on a path iocomd controls.
//!
//! Durability: the copy's writeback is started when the pass ends (`sync_file_range`), and it
//! is fsynced only when it becomes the rollback source of the next update, at commit
//! ([`crate::txn`]): before that nothing needs it after a crash (recovery rolls back to the
//! previous version's cached file or purges).

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::fsutil;
use crate::txn::{Candidate, Refusal, Verifier};
use install_api::ErrorCode;

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

/// The helper's copy of a package and the verdict of the pass that wrote it.
#[derive(Debug)]
pub struct Taken {
    /// `staging_dir/<txid>.deb` (0600); complete when `verdict` is `Ok`.
    pub path: PathBuf,
    /// Every check but the version order ([`Verifier::check_order`]).
    pub verdict: Result<Candidate, Refusal>,
}

/// Copies `src` into `staging_dir/<txid>.deb` (0600, dir 0700) and verifies it in the same
/// pass with `verifier`. Regular files are read from offset 0 with `pread` (the caller's file
/// offset does not matter); other fds are read sequentially up to `max_size`. A refusal by the
/// verifier is a [`Taken`] with an `Err` verdict (reported as the transaction's result);
/// failing to read, the size limit and the space are a [`StageError`].
pub fn take(
    src: File,
    staging_dir: &Path,
    txid: &str,
    (max_size, reserve): (u64, u64),
    verifier: &dyn Verifier,
) -> Result<Taken, StageError> {
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
    let mut tee = Tee {
        src: &src,
        regular,
        offset: 0,
        out: &mut out,
        max: max_size,
        dest: &dest,
        error: None,
    };
    let mut stream = BufReader::with_capacity(256 << 10, &mut tee);
    let verdict = verifier.verify_stream(&mut stream, regular.then_some(&src), &dest);
    // A verdict must cover the whole copy: nothing may follow what the verifier read.
    let verdict = verdict.and_then(|c| match stream.read(&mut [0u8; 1]) {
        Ok(0) => Ok(c),
        _ => Err(Refusal::new(
            ErrorCode::Internal,
            "the verifier did not read the whole package",
        )),
    });
    drop(stream);
    if let Some(e) = tee.error.take() {
        let _ = std::fs::remove_file(&dest);
        return Err(e);
    }
    if verdict.is_ok() {
        start_writeback(&out);
    }
    Ok(Taken {
        path: dest,
        verdict,
    })
}

/// Starts writing the copy back to disk without waiting (the fsync at commit then finds
/// little left to do). Advisory: an error only means the fsync does all the work.
#[allow(unsafe_code)]
fn start_writeback(f: &File) {
    // SAFETY: sync_file_range on an fd we own, no memory passed.
    let _ = unsafe {
        nix::libc::sync_file_range(f.as_raw_fd(), 0, 0, nix::libc::SYNC_FILE_RANGE_WRITE)
    };
}

/// A reader over the caller's fd that writes every byte it returns to the copy first, so the
/// verifier sees exactly the bytes of the copy. Its own failures are kept in `error`.
struct Tee<'a> {
    src: &'a File,
    regular: bool,
    offset: u64,
    out: &'a mut File,
    max: u64,
    dest: &'a Path,
    error: Option<StageError>,
}

impl Tee<'_> {
    fn fail(&mut self, e: StageError) -> std::io::Error {
        let io = std::io::Error::other(e.to_string());
        self.error.get_or_insert(e);
        io
    }
}

impl Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = loop {
            let n = if self.regular {
                self.src.read_at(buf, self.offset)
            } else {
                let mut r = self.src;
                r.read(buf)
            };
            match n {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.fail(StageError::BadFd(e))),
            }
        };
        self.offset += n as u64;
        if self.offset > self.max {
            let limit = self.max;
            return Err(self.fail(StageError::TooLarge { limit }));
        }
        let chunk = buf.get(..n).unwrap_or_default();
        if let Err(source) = self.out.write_all(chunk) {
            let e = if source.raw_os_error() == Some(nix::libc::ENOSPC) {
                StageError::NoSpace {
                    dir: self.dest.to_path_buf(),
                    needed: self.offset,
                    available: 0,
                }
            } else {
                StageError::Io {
                    path: self.dest.to_path_buf(),
                    source,
                }
            };
            return Err(self.fail(e));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Seek;
    use std::os::unix::fs::PermissionsExt;

    /// Reads `limit` bytes (all by default) and accepts.
    struct ReadAll(Option<u64>);

    impl Verifier for ReadAll {
        fn verify_stream(
            &self,
            stream: &mut dyn Read,
            _: Option<&File>,
            _: &Path,
        ) -> Result<Candidate, Refusal> {
            let mut sink = std::io::sink();
            let n = match self.0 {
                Some(l) => std::io::copy(&mut stream.take(l), &mut sink),
                None => std::io::copy(stream, &mut sink),
            };
            n.map_err(|e| Refusal::new(ErrorCode::IoError, e.to_string()))?;
            Ok(Candidate {
                name: "p".into(),
                version: "1".into(),
                architecture: "all".into(),
                sha256: String::new(),
                signer: String::new(),
                installed_size_kib: None,
                units: Vec::new(),
                control: Default::default(),
            })
        }

        fn check_order(&self, _: &Candidate, _: Option<&str>) -> Result<(), Refusal> {
            Ok(())
        }
    }

    fn stage(
        src: File,
        dir: &Path,
        txid: &str,
        max: u64,
        reserve: u64,
    ) -> Result<PathBuf, StageError> {
        let t = take(src, dir, txid, (max, reserve), &ReadAll(None))?;
        t.verdict.unwrap();
        Ok(t.path)
    }

    #[test]
    fn a_verdict_must_cover_the_whole_copy() {
        let d = tempfile::tempdir().unwrap();
        let src_path = d.path().join("in.deb");
        std::fs::write(&src_path, vec![3u8; 10_000]).unwrap();
        let f = File::open(&src_path).unwrap();
        let t = take(f, d.path(), "s", (1 << 20, 0), &ReadAll(Some(9_000))).unwrap();
        assert_eq!(t.verdict.unwrap_err().code, ErrorCode::Internal);
    }

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
