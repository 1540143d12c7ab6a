//! Downloading one artifact into the spool directory with bounded memory (64 KiB buffer),
//! resuming a partial file with `Range: bytes=N-` and `If-Range` (the validator of the response
//! it came from), following redirects (auth only to the server unless configured), and
//! checking size and SHA-256 before the file gets its final name.
//!
//! Answers: 200 (start over: a new file or a changed validator), 206 (append, after checking
//! `Content-Range` starts where the file ends), 416 (the file is already complete: checked by
//! its hash). A connection dropped mid-body is resumed up to [`MAX_DROPS`] times in a row (a
//! chunk that arrives resets the count); after that the partial file stays for the next poll
//! (or the next start) to resume.

use super::api::ApiError;
use super::http::HttpClient;
use super::installer::SpooledFile;
use super::persist::PartState;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use tokio_util::sync::CancellationToken;

/// Resumptions in a row without progress before giving up for this poll.
pub const MAX_DROPS: u32 = 5;
/// Redirects followed.
pub const MAX_REDIRECTS: u32 = 3;
/// Suffix of partial DDI downloads in the spool (not `.partial`: the IOCOM spool deletes those
/// at start, and these are meant to survive a restart).
pub const PART_SUFFIX: &str = ".ddi-part";
pub(super) const BUFFER: usize = 64 << 10;

/// Why an artifact could not be downloaded.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// A request failed (the message names it); `transient` ones are retried at the next poll.
    #[error("{filename}: {source}")]
    Api {
        /// Artifact.
        filename: String,
        /// Why.
        source: ApiError,
    },
    /// The file is not what the server announced.
    #[error("{filename}: SHA-256 mismatch (expected {expected}, got {actual})")]
    WrongHash {
        /// Artifact.
        filename: String,
        /// The server's.
        expected: String,
        /// Ours.
        actual: String,
    },
    /// Size differs from the announced one, or exceeds the limit.
    #[error("{filename}: {message}")]
    Size {
        /// Artifact.
        filename: String,
        /// What.
        message: String,
    },
    /// A local file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Stopped by a cancel or shutdown; the partial file stays.
    #[error("download stopped")]
    Stopped,
}

impl DownloadError {
    /// Worth trying again later (the link, the server), as opposed to a verdict on the file.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Api { source, .. } => matches!(
                source,
                ApiError::Transport { .. }
                    | ApiError::Server { .. }
                    | ApiError::RateLimited { .. }
                    | ApiError::Conflict { .. }
            ),
            Self::Stopped => true,
            _ => false,
        }
    }
}

/// Limits for one download.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest artifact.
    pub max_size: u64,
    /// Free space that must remain in the spool filesystem.
    pub min_free: u64,
}

/// Hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DownloadError + '_ {
    move |source| DownloadError::Io {
        path: path.to_owned(),
        source,
    }
}

/// SHA-256 of a file, read in 64 KiB pieces on the blocking pool.
async fn file_sha256(path: &Path) -> Result<[u8; 32], DownloadError> {
    let p = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut f = std::fs::File::open(&p)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; BUFFER];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                return Ok(h.finalize().into());
            }
            h.update(&buf[..n]);
        }
    })
    .await
    .map_err(|e| DownloadError::Io {
        path: path.to_owned(),
        source: std::io::Error::other(e),
    })?
    .map_err(io(path))
}

pub(super) fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// The final name of a partial file.
pub fn final_path(part: &Path) -> PathBuf {
    let s = part.to_string_lossy();
    PathBuf::from(s.strip_suffix(PART_SUFFIX).unwrap_or(&s).to_owned())
}

/// What a download reports to, and is stopped by.
pub struct Hooks<'a> {
    /// Stops the download (the partial file stays).
    pub stop: &'a CancellationToken,
    /// Told the file's length as it grows.
    pub on_bytes: &'a mut (dyn FnMut(u64) + Send),
    /// Told when a new response's validator should be persisted.
    pub on_validator: &'a mut (dyn FnMut(&PartState) + Send),
}

impl std::fmt::Debug for Hooks<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("stopped", &self.stop.is_cancelled())
            .finish_non_exhaustive()
    }
}

/// Downloads (or resumes, or just verifies) `part`.
pub async fn fetch(
    http: &HttpClient,
    part: &mut PartState,
    limits: Limits,
    hooks: &mut Hooks<'_>,
) -> Result<SpooledFile, DownloadError> {
    let name = part.filename.clone();
    let expected = part.sha256.clone();
    if let Some(size) = part.size
        && size > limits.max_size
    {
        return Err(DownloadError::Size {
            filename: name,
            message: format!("{size} bytes exceed the limit of {} bytes", limits.max_size),
        });
    }
    // Downloaded and renamed before a restart (the install was waiting): verify it again.
    let done = final_path(&part.path);
    if !part.path.exists() && done.exists() {
        std::fs::rename(&done, &part.path).map_err(io(&part.path))?;
    }
    let mut resumed_any = false;
    let mut restarted = false;
    loop {
        let have = file_len(&part.path);
        if have > 0 {
            resumed_any = true;
        }
        let complete = match part.size {
            Some(size) if have > size => {
                truncate(&part.path)?;
                false
            }
            Some(size) => have == size && have > 0,
            None => false,
        };
        if !complete {
            check_space(
                &part.path,
                part.size.unwrap_or(0).saturating_sub(have),
                limits,
            )?;
            super::transfer::transfer(http, part, limits, hooks).await?;
        }
        let got = file_len(&part.path);
        if let Some(size) = part.size
            && got != size
        {
            truncate(&part.path)?;
            return Err(DownloadError::Size {
                filename: name,
                message: format!("got {got} bytes, the server announced {size}"),
            });
        }
        let sha = file_sha256(&part.path).await?;
        if hex(&sha) == expected {
            let dest = final_path(&part.path);
            std::fs::rename(&part.path, &dest).map_err(io(&dest))?;
            return Ok(SpooledFile {
                path: dest,
                filename: part.filename.clone(),
                size: got,
                sha256: sha,
                module: part.module.clone(),
            });
        }
        truncate(&part.path)?;
        part.validator = None;
        (hooks.on_validator)(part);
        if resumed_any && !restarted {
            // A resumed file may have mixed two versions of the artifact: once more from zero.
            tracing::warn!(artifact = %name, "SHA-256 mismatch after a resumed download; downloading again from the start");
            restarted = true;
            resumed_any = false;
            continue;
        }
        return Err(DownloadError::WrongHash {
            filename: name,
            expected,
            actual: hex(&sha),
        });
    }
}

pub(super) fn truncate(path: &Path) -> Result<(), DownloadError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path)(e)),
        _ => Ok(()),
    }
}

fn check_space(path: &Path, need: u64, limits: Limits) -> Result<(), DownloadError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let free = crate::spool::available_bytes(dir).map_err(|e| DownloadError::Io {
        path: dir.to_owned(),
        source: std::io::Error::other(e),
    })?;
    if free.saturating_sub(limits.min_free) < need {
        return Err(DownloadError::Size {
            filename: path.display().to_string(),
            message: format!(
                "{need} bytes do not fit in the spool ({free} bytes free, {} to keep free)",
                limits.min_free
            ),
        });
    }
    Ok(())
}
