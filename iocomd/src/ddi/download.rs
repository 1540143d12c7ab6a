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

use super::api::{ApiError, parse};
use super::http::HttpClient;
use super::installer::SpooledFile;
use super::persist::PartState;
use hyper::header::{self, HeaderValue};
use hyper::{Method, StatusCode};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

/// Resumptions in a row without progress before giving up for this poll.
pub const MAX_DROPS: u32 = 5;
/// Redirects followed.
pub const MAX_REDIRECTS: u32 = 3;
/// Suffix of partial DDI downloads in the spool (not `.partial`: the IOCOM spool deletes those
/// at start, and these are meant to survive a restart).
pub const PART_SUFFIX: &str = ".ddi-part";
const BUFFER: usize = 64 << 10;

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

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DownloadError + '_ {
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

fn file_len(path: &Path) -> u64 {
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
            transfer(http, part, limits, hooks).await?;
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

fn truncate(path: &Path) -> Result<(), DownloadError> {
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

/// One or more requests until the body has been written to the end (or a verdict).
async fn transfer(
    http: &HttpClient,
    part: &mut PartState,
    limits: Limits,
    hooks: &mut Hooks<'_>,
) -> Result<(), DownloadError> {
    let stop = hooks.stop;
    let name = part.filename.clone();
    let api = |source| DownloadError::Api {
        filename: name.clone(),
        source,
    };
    let mut drops = 0u32;
    let mut url = part.href.clone();
    let mut redirects = 0;
    loop {
        let have = file_len(&part.path);
        let uri = parse("download", &url).map_err(api)?;
        let mut extra = Vec::new();
        if have > 0 {
            extra.push((
                header::RANGE,
                HeaderValue::from_str(&format!("bytes={have}-")).expect("ascii"),
            ));
            if let Some(v) = part
                .validator
                .as_deref()
                .and_then(|v| HeaderValue::from_str(v).ok())
            {
                extra.push((header::IF_RANGE, v));
            }
        }
        let sent = tokio::select! {
            () = stop.cancelled() => return Err(DownloadError::Stopped),
            r = http.send(Method::GET, &uri, &extra, None) => r,
        };
        let mut resp = match sent {
            Ok(r) => r,
            Err(source) => {
                drops += 1;
                let e = ApiError::Transport {
                    what: "download",
                    source,
                };
                if drops >= MAX_DROPS {
                    return Err(api(e));
                }
                tracing::info!(artifact = %name, error = %e, drops, "download request failed; retrying");
                pause(stop, drops).await?;
                continue;
            }
        };
        let append = match resp.status {
            StatusCode::OK => false,
            StatusCode::PARTIAL_CONTENT => {
                let start = resp
                    .header(header::CONTENT_RANGE)
                    .and_then(|v| v.strip_prefix("bytes "))
                    .and_then(|v| v.split('-').next())
                    .and_then(|v| v.parse::<u64>().ok());
                if start != Some(have) {
                    tracing::warn!(artifact = %name, ?start, have, "206 with an unexpected Content-Range; starting over");
                    truncate(&part.path)?;
                    part.validator = None;
                    continue;
                }
                true
            }
            StatusCode::RANGE_NOT_SATISFIABLE if have > 0 => {
                // Nothing left to send: complete (the hash check decides).
                return Ok(());
            }
            s if s.is_redirection() && redirects < MAX_REDIRECTS => {
                let loc = resp.header(header::LOCATION).map(str::to_owned);
                match loc {
                    Some(l) if l.starts_with("http://") || l.starts_with("https://") => {
                        redirects += 1;
                        url = l;
                        continue;
                    }
                    _ => {
                        return Err(api(ApiError::Unexpected {
                            what: "download",
                            status: s.as_u16(),
                        }));
                    }
                }
            }
            _ => return Err(api(ApiError::from_status("download", &resp))),
        };
        if !append {
            part.validator = resp
                .header(header::ETAG)
                .filter(|e| !e.starts_with("W/"))
                .or_else(|| resp.header(header::LAST_MODIFIED))
                .map(str::to_owned);
            (hooks.on_validator)(part);
        }
        let mut opts = tokio::fs::OpenOptions::new();
        opts.create(true).write(true);
        if append {
            opts.append(true);
        } else {
            opts.truncate(true);
        }
        let file = opts.open(&part.path).await.map_err(io(&part.path))?;
        let mut w = tokio::io::BufWriter::with_capacity(BUFFER, file);
        let mut len = if append { have } else { 0 };
        let ended = loop {
            let chunk = tokio::select! {
                () = stop.cancelled() => break Err(None),
                c = resp.next_chunk() => c,
            };
            match chunk {
                Ok(Some(c)) => {
                    len += c.len() as u64;
                    if len > limits.max_size || part.size.is_some_and(|s| len > s) {
                        drop(w);
                        truncate(&part.path)?;
                        return Err(DownloadError::Size {
                            filename: name,
                            message: format!(
                                "more than the announced {:?} bytes (limit {})",
                                part.size, limits.max_size
                            ),
                        });
                    }
                    w.write_all(&c).await.map_err(io(&part.path))?;
                    drops = 0;
                    (hooks.on_bytes)(len);
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(Some(e)),
            }
        };
        w.flush().await.map_err(io(&part.path))?;
        w.get_ref().sync_data().await.map_err(io(&part.path))?;
        match ended {
            Ok(()) => return Ok(()),
            Err(None) => return Err(DownloadError::Stopped),
            Err(Some(e)) => {
                drops += 1;
                let e = ApiError::Transport {
                    what: "download",
                    source: e,
                };
                if drops >= MAX_DROPS {
                    return Err(api(e));
                }
                tracing::info!(artifact = %name, bytes = len, error = %e, "download interrupted; resuming");
                pause(stop, drops).await?;
            }
        }
    }
}

async fn pause(stop: &CancellationToken, drops: u32) -> Result<(), DownloadError> {
    let wait = Duration::from_millis(200u64 << drops.min(6));
    tokio::select! {
        () = stop.cancelled() => Err(DownloadError::Stopped),
        () = tokio::time::sleep(wait) => Ok(()),
    }
}
