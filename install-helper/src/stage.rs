//! Taking the package: one pass over the caller's fd that writes the helper's own copy into
//! the root-only staging directory and verifies the very bytes it writes
//! ([`crate::txn::Verifier::verify_stream`]: structure, SHA-256, signature, control, policy,
//! content), with bounded memory, after a free-space check. Nothing reads the copy again to
//! verify it; dpkg installs that copy, so what is installed is what was verified. Everything
//! after this works on the helper's own copy, never on a path iocomd controls.
//!
//! While it runs, the pass reports the share of the bytes copied and verified ([`meter`]).
//!
//! Durability: the copy is not written back or fsynced here. Nothing needs it after a crash
//! until it is the rollback source of the next update (recovery rolls back to the previous
//! version's cached file or purges); it is made durable after the transaction's result
//! ([`crate::txn::cache_sync`]). Not starting its writeback early keeps dpkg's own fsyncs on
//! the same filesystem from waiting for the copy's data (ext4 `data=ordered` commits write
//! the data of every file with newly allocated blocks first).

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use crate::fsutil;
use crate::txn::{Candidate, Refusal, Verifier};
use install_api::ErrorCode;

pub mod meter;
pub mod stream;
use meter::{Meter, Report, Total};
pub use stream::{StreamEnd, Unconfirmed};

/// Who hears the progress of the pass, and how often.
pub struct Watch<'a> {
    /// The caller's advisory size (meta `size`): the total for a pipe. A regular file's own
    /// size is used instead.
    pub advisory_size: Option<u64>,
    /// Least time between two reports ([`crate::paths::Settings::progress_interval`]).
    pub min_interval: Duration,
    /// Told the progress ([`Meter`]).
    pub report: &'a mut dyn FnMut(Report),
}

impl std::fmt::Debug for Watch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("advisory_size", &self.advisory_size)
            .finish()
    }
}

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
    /// A streamed package whose sender did not confirm its end ([`stream`]).
    #[error(transparent)]
    Unconfirmed(#[from] Unconfirmed),
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
            StageError::BadFd(_) | StageError::TooLarge { .. } | StageError::Unconfirmed(_) => {
                ErrorCode::BadRequest
            }
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
/// failing to read, the size limit and the space are a [`StageError`]. `watch` hears the
/// progress of the pass; its 100 % only once the verifier's verdict is in.
pub fn take(
    src: File,
    staging_dir: &Path,
    txid: &str,
    limits: (u64, u64),
    verifier: &dyn Verifier,
    watch: Watch<'_>,
) -> Result<Taken, StageError> {
    take_from(src, None, staging_dir, txid, limits, verifier, watch)
}

/// [`take`] for a package streamed while it is received ([`stream`]): `src` is the pipe the
/// sender feeds and `end` says how the transfer ended. Nothing is taken unless `end` confirms
/// every byte ([`StageError::Unconfirmed`]); the rest of the stream is read even when the
/// verifier refused early. The size is not known ahead: the space check keeps the reserve
/// free as the copy grows (checked every [`SPACE_CHECK_EVERY`] bytes), not the size limit.
pub fn take_stream(
    src: File,
    end: StreamEnd,
    staging_dir: &Path,
    txid: &str,
    limits: (u64, u64),
    verifier: &dyn Verifier,
    watch: Watch<'_>,
) -> Result<Taken, StageError> {
    take_from(src, Some(end), staging_dir, txid, limits, verifier, watch)
}

/// Bytes a streamed copy grows between two checks of the free space.
pub const SPACE_CHECK_EVERY: u64 = 8 << 20;

fn take_from(
    src: File,
    end: Option<StreamEnd>,
    staging_dir: &Path,
    txid: &str,
    (max_size, reserve): (u64, u64),
    verifier: &dyn Verifier,
    watch: Watch<'_>,
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
    let streamed = end.is_some();
    let needed = match (regular, streamed) {
        (true, _) => meta.len(),
        (false, true) => watch.advisory_size.unwrap_or(0).min(max_size),
        (false, false) => max_size,
    };
    check_space(staging_dir, needed, reserve)?;
    let dest = staging_dir.join(format!("{txid}.deb"));
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&dest)
        .map_err(io(&dest))?;
    let total = match (regular, watch.advisory_size) {
        (true, _) => Total::Exact(meta.len()),
        (false, Some(n)) => Total::Advisory(n),
        (false, None) => Total::Unknown,
    };
    let mut meter = Meter::new(total, watch.min_interval, watch.report);
    meter.advance(0, Instant::now());
    let out = &mut out;
    let (verdict, copied, error) = std::thread::scope(|s| {
        // The copy is written on its own thread (the page-cache write costs as much as the
        // hashing): the same bytes, in order, as the verifier gets.
        let (tx, rx) = mpsc::sync_channel::<Arc<[u8]>>(WRITE_QUEUE);
        let writer = s.spawn(move || -> std::io::Result<()> {
            for chunk in rx {
                out.write_all(&chunk)?;
            }
            Ok(())
        });
        let mut tee = Tee {
            src: &src,
            regular,
            offset: 0,
            writer: Some((tx, writer)),
            max: max_size,
            dest: &dest,
            error: None,
            meter: &mut meter,
            space: streamed.then_some((reserve, SPACE_CHECK_EVERY)),
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
        if streamed && verdict.is_err() {
            // A refusal counts only for a transfer the sender completes: read on to its end.
            let _ = std::io::copy(&mut stream, &mut std::io::sink());
        }
        drop(stream);
        // Normally done at the end of the stream; here when the verifier stopped early.
        let _ = tee.finish_copy();
        (verdict, tee.offset, tee.error.take())
    });
    let error = error.or_else(|| {
        end.and_then(|e| e.confirm(copied).err())
            .map(StageError::from)
    });
    if let Some(e) = error {
        let _ = std::fs::remove_file(&dest);
        return Err(e);
    }
    meter.done(copied, Instant::now());
    Ok(Taken {
        path: dest,
        verdict,
    })
}

/// Chunks queued for the writer of the copy (each at most what one read returned).
const WRITE_QUEUE: usize = 8;

type Writer<'s> = (
    mpsc::SyncSender<Arc<[u8]>>,
    std::thread::ScopedJoinHandle<'s, std::io::Result<()>>,
);

/// A reader over the caller's fd that hands every byte it returns to the copy's writer too,
/// so the verifier sees exactly the bytes of the copy; it reports the end of the stream only
/// once the writer has written all of them (so a verifier that reads the copy after the end
/// finds it complete). Its own failures, and the writer's, are kept in `error`.
struct Tee<'a, 'm, 's> {
    src: &'a File,
    regular: bool,
    offset: u64,
    writer: Option<Writer<'s>>,
    max: u64,
    dest: &'a Path,
    error: Option<StageError>,
    meter: &'a mut Meter<'m>,
    /// A streamed copy: the reserve to keep free and the offset of the next space check.
    space: Option<(u64, u64)>,
}

impl Tee<'_, '_, '_> {
    fn fail(&mut self, e: StageError) -> std::io::Error {
        let io = std::io::Error::other(e.to_string());
        self.error.get_or_insert(e);
        io
    }

    /// Waits until the writer has written everything sent (or failed); idempotent.
    fn finish_copy(&mut self) -> std::io::Result<()> {
        let Some((tx, handle)) = self.writer.take() else {
            return match &self.error {
                Some(e) => Err(std::io::Error::other(e.to_string())),
                None => Ok(()),
            };
        };
        drop(tx);
        let written = handle
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the copy's writer panicked")));
        match written {
            Ok(()) => Ok(()),
            Err(source) => {
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
                Err(self.fail(e))
            }
        }
    }
}

impl Read for Tee<'_, '_, '_> {
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
        if let Some((reserve, next)) = self.space
            && self.offset >= next
        {
            self.space = Some((reserve, self.offset + SPACE_CHECK_EVERY));
            let dir = self.dest.parent().unwrap_or(self.dest);
            if let Err(e) = check_space(dir, 0, reserve) {
                return Err(self.fail(e));
            }
        }
        if n == 0 {
            // The end: only once the copy holds every byte returned.
            self.finish_copy()?;
            return Ok(0);
        }
        let chunk: Arc<[u8]> = Arc::from(buf.get(..n).unwrap_or_default());
        let sent = match &self.writer {
            Some((tx, _)) => tx.send(chunk).is_ok(),
            None => false,
        };
        if !sent {
            // The writer stopped: its error.
            self.finish_copy()?;
            return Err(self.fail(StageError::Io {
                path: self.dest.to_path_buf(),
                source: std::io::Error::other("the copy's writer stopped"),
            }));
        }
        self.meter.advance(self.offset, Instant::now());
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
