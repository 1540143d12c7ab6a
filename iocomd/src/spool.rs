//! Streaming a received package to disk with bounded memory.
//!
//! [`Spool::begin`] creates `NAME.partial` in the spool directory; [`SpoolWriter::write`] appends
//! chunks as they arrive, enforcing the size limit and the free-space reserve (statvfs) and
//! updating CRC-16/MODBUS and SHA-256; [`SpoolWriter::finish`] checks the CRC the controller sent,
//! fsyncs the file and the directory and renames the file to its final name. Whatever goes
//! wrong, and whenever an unfinished writer is dropped or aborted, the partial file is deleted.
//! [`Spool::remove_stale`] deletes partial files a previous run left behind.

use crate::proto::crc::Crc16;
use sha2::{Digest, Sha256};
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Suffix of files still being received.
pub const PARTIAL_SUFFIX: &str = ".partial";

/// Bytes buffered in memory before they are written to the file.
const BUFFER: usize = 64 << 10;

/// Free space is measured again at least this often (bytes written), in case something
/// else fills the filesystem meanwhile.
const RECHECK: u64 = 1 << 20;

/// Why spooling failed. Every variant names the file or directory concerned.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The package exceeds the configured maximum size.
    #[error("{}: package larger than the limit of {limit} bytes", path.display())]
    TooLarge {
        /// The partial file (already deleted).
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// The filesystem would fall below the free-space reserve.
    #[error(
        "{}: not enough free space: {available} bytes available, {needed} needed (including the reserve)",
        path.display()
    )]
    NoSpace {
        /// The spool directory.
        path: PathBuf,
        /// Bytes available to unprivileged users.
        available: u64,
        /// Bytes needed: data still to be written plus the reserve.
        needed: u64,
    },
    /// The data's CRC differs from the one the sender announced.
    #[error("{}: checksum mismatch: expected {expected:#06x}, received data has {actual:#06x}", path.display())]
    CrcMismatch {
        /// The partial file (already deleted).
        path: PathBuf,
        /// CRC announced by the sender.
        expected: u16,
        /// CRC of the received bytes.
        actual: u16,
    },
    /// The writer failed earlier or was aborted; its file is gone.
    #[error("{}: the transfer was already aborted", path.display())]
    Aborted {
        /// The partial file (already deleted).
        path: PathBuf,
    },
    /// An I/O error.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Entry points of the spool.
#[derive(Debug)]
pub struct Spool;

impl Spool {
    /// Starts receiving a package into `dir` (created 0700 if missing). `name_hint` (e.g. the
    /// name the sender gave) becomes part of the final file name after sanitising. The package
    /// may be at most `max_size` bytes, and `reserve` bytes must stay free on the filesystem.
    pub fn begin(
        dir: &Path,
        name_hint: &str,
        max_size: u64,
        reserve: u64,
    ) -> Result<SpoolWriter, SpoolError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir))?;
        // Refuse at once, before the sender starts, if the reserve is already eaten into.
        let available = available_bytes(dir)?;
        if available < reserve {
            return Err(SpoolError::NoSpace {
                path: dir.to_path_buf(),
                available,
                needed: reserve,
            });
        }
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let stem = sanitize(name_hint);
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let name = format!("{}-{n}-{stem}", std::process::id());
            let final_path = dir.join(&name);
            let partial = dir.join(format!("{name}{PARTIAL_SUFFIX}"));
            if final_path.exists() {
                continue;
            }
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&partial)
            {
                Ok(file) => {
                    return Ok(SpoolWriter {
                        file: Some(BufWriter::with_capacity(BUFFER, file)),
                        dir: dir.to_path_buf(),
                        partial,
                        final_path,
                        size: 0,
                        max_size,
                        reserve,
                        budget: 0,
                        since_check: 0,
                        crc: Crc16::new(),
                        sha: Sha256::new(),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err(&partial)(e)),
            }
        }
    }

    /// Deletes `*.partial` files left in `dir` by an earlier run; returns what it deleted.
    /// A missing directory is not an error. Call it once at start, before any transfer.
    pub fn remove_stale(dir: &Path) -> Result<Vec<PathBuf>, SpoolError> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(dir)(e)),
        };
        let mut removed = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err(dir))?;
            let path = entry.path();
            let is_partial = entry
                .file_name()
                .to_string_lossy()
                .ends_with(PARTIAL_SUFFIX);
            if is_partial && entry.file_type().map_err(io_err(&path))?.is_file() {
                std::fs::remove_file(&path).map_err(io_err(&path))?;
                removed.push(path);
            }
        }
        removed.sort();
        Ok(removed)
    }
}

/// Keeps `[A-Za-z0-9._+-]`, replaces other characters with `_`, no leading dot, at most 64
/// characters; `package` if nothing is left.
fn sanitize(hint: &str) -> String {
    let s: String = hint
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._+-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    let s = s.trim_start_matches('.');
    let s = s.strip_suffix(PARTIAL_SUFFIX).unwrap_or(s);
    if s.is_empty() {
        "package".into()
    } else {
        s.into()
    }
}

/// A package being received. Dropping it before [`SpoolWriter::finish`] deletes the file.
///
/// Writes are blocking file I/O through a 64 KiB buffer; [`SpoolWriter::finish`] fsyncs and
/// may take long on a slow disk, so async callers should run it in `spawn_blocking` (the
/// writer is `Send`).
#[derive(Debug)]
pub struct SpoolWriter {
    /// `None` once finished or failed.
    file: Option<BufWriter<File>>,
    dir: PathBuf,
    partial: PathBuf,
    final_path: PathBuf,
    size: u64,
    max_size: u64,
    reserve: u64,
    /// Bytes that may still be written before free space must be measured again.
    budget: u64,
    since_check: u64,
    crc: Crc16,
    sha: Sha256,
}

impl SpoolError {
    /// The result code published for this failure (the one mapping of spool errors).
    pub fn code(&self) -> install_api::DaemonCode {
        use install_api::DaemonCode;
        match self {
            SpoolError::TooLarge { .. } => DaemonCode::TooLarge,
            SpoolError::NoSpace { .. } => DaemonCode::NoSpace,
            SpoolError::CrcMismatch { .. } => DaemonCode::CrcMismatch,
            SpoolError::Aborted { .. } | SpoolError::Io { .. } => DaemonCode::SpoolError,
        }
    }
}

/// A completely received and verified package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledPackage {
    /// Final path in the spool directory.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content.
    pub sha256: [u8; 32],
    /// CRC-16/MODBUS of the content.
    pub crc: u16,
}

impl SpooledPackage {
    /// Opens the package read-only (to hand its file descriptor to the helper).
    pub fn open(&self) -> Result<File, SpoolError> {
        File::open(&self.path).map_err(io_err(&self.path))
    }

    /// The SHA-256 as lower-case hex.
    pub fn sha256_hex(&self) -> String {
        self.sha256.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Deletes the package file (after the helper took its copy).
    pub fn remove(self) -> Result<(), SpoolError> {
        std::fs::remove_file(&self.path).map_err(io_err(&self.path))
    }
}

pub(crate) fn available_bytes(dir: &Path) -> Result<u64, SpoolError> {
    let st = nix::sys::statvfs::statvfs(dir).map_err(|e| io_err(dir)(io::Error::from(e)))?;
    Ok(st.blocks_available().saturating_mul(st.fragment_size()))
}

impl SpoolWriter {
    /// The size limit.
    pub fn max_size(&self) -> u64 {
        self.max_size
    }

    /// The partial file being written.
    pub fn partial_path(&self) -> &Path {
        &self.partial
    }

    /// Bytes received so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends `chunk`. On any error the partial file is deleted and the writer is unusable.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), SpoolError> {
        let result = self.try_write(chunk);
        if result.is_err() {
            self.discard();
        }
        result
    }

    fn try_write(&mut self, chunk: &[u8]) -> Result<(), SpoolError> {
        if self.file.is_none() {
            return Err(SpoolError::Aborted {
                path: self.partial.clone(),
            });
        }
        let n = chunk.len() as u64;
        match self.size.checked_add(n) {
            Some(total) if total <= self.max_size => {}
            _ => {
                return Err(SpoolError::TooLarge {
                    path: self.partial.clone(),
                    limit: self.max_size,
                });
            }
        }
        self.ensure_space(n)?;
        let file = self.file.as_mut().ok_or_else(|| SpoolError::Aborted {
            path: self.partial.clone(),
        })?;
        if let Err(e) = file.write_all(chunk) {
            return Err(self.write_error(e));
        }
        self.size += n;
        self.crc.update(chunk);
        self.sha.update(chunk);
        Ok(())
    }

    /// Checks that `n` more bytes fit while keeping the reserve free.
    fn ensure_space(&mut self, n: u64) -> Result<(), SpoolError> {
        if n <= self.budget && self.since_check < RECHECK {
            self.budget -= n;
            self.since_check += n;
            return Ok(());
        }
        let available = available_bytes(&self.dir)?;
        let buffered = self.file.as_ref().map_or(0, |f| f.buffer().len() as u64);
        let needed = buffered.saturating_add(n).saturating_add(self.reserve);
        if available < needed {
            return Err(SpoolError::NoSpace {
                path: self.dir.clone(),
                available,
                needed,
            });
        }
        self.budget = available - needed;
        self.since_check = 0;
        Ok(())
    }

    /// Maps a write error; "no space" becomes [`SpoolError::NoSpace`].
    fn write_error(&self, e: io::Error) -> SpoolError {
        if e.raw_os_error() == Some(nix::libc::ENOSPC) {
            SpoolError::NoSpace {
                path: self.dir.clone(),
                available: available_bytes(&self.dir).unwrap_or(0),
                needed: self.reserve,
            }
        } else {
            io_err(&self.partial)(e)
        }
    }

    /// Completes the transfer: checks the CRC against `expected_crc`, fsyncs, and renames the
    /// file to its final name. On error nothing is left behind.
    pub fn finish(mut self, expected_crc: u16) -> Result<SpooledPackage, SpoolError> {
        let result = self.try_finish(expected_crc);
        if result.is_err() {
            self.discard();
        }
        result
    }

    fn try_finish(&mut self, expected_crc: u16) -> Result<SpooledPackage, SpoolError> {
        let actual = self.crc.value();
        if actual != expected_crc {
            return Err(SpoolError::CrcMismatch {
                path: self.partial.clone(),
                expected: expected_crc,
                actual,
            });
        }
        let Some(buffered) = self.file.take() else {
            return Err(SpoolError::Aborted {
                path: self.partial.clone(),
            });
        };
        let file = match buffered.into_inner() {
            Ok(f) => f,
            Err(e) => {
                let err = self.write_error(e.into_error());
                remove_quietly(&self.partial);
                return Err(err);
            }
        };
        if let Err(e) = file.sync_all() {
            remove_quietly(&self.partial);
            return Err(io_err(&self.partial)(e));
        }
        drop(file);
        nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            &self.partial,
            nix::fcntl::AT_FDCWD,
            &self.final_path,
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        )
        .map_err(|e| {
            remove_quietly(&self.partial);
            io_err(&self.final_path)(io::Error::from(e))
        })?;
        if let Err(e) = File::open(&self.dir).and_then(|d| d.sync_all()) {
            remove_quietly(&self.final_path);
            return Err(io_err(&self.dir)(e));
        }
        let sha256: [u8; 32] = self.sha.clone().finalize().into();
        Ok(SpooledPackage {
            path: self.final_path.clone(),
            size: self.size,
            sha256,
            crc: actual,
        })
    }

    /// Gives up the transfer and deletes the partial file.
    pub fn abort(mut self) {
        self.discard();
    }

    fn discard(&mut self) {
        if let Some(f) = self.file.take() {
            // Drop the buffer without flushing it to a file that is going away.
            let (file, _unwritten) = f.into_parts();
            drop(file);
            remove_quietly(&self.partial);
        }
    }
}

/// Deletes `path`; a failure is logged, not returned (the caller is already failing).
fn remove_quietly(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot delete spool file");
    }
}

impl Drop for SpoolWriter {
    fn drop(&mut self) {
        self.discard();
    }
}
