//! The HTTP side of one artifact download ([`transfer`]): `Range`/`If-Range` requests, 200 /
//! 206 / 416 / redirects, the body streamed to the partial file through a 64 KiB buffer, and
//! resumption after a dropped connection (at most [`MAX_DROPS`] in a row without progress).

use super::api::{ApiError, parse};
use super::download::{
    BUFFER, DownloadError, Hooks, Limits, MAX_DROPS, MAX_REDIRECTS, file_len, io, truncate,
};
use super::http::HttpClient;
use super::persist::PartState;
use hyper::header::{self, HeaderValue};
use hyper::{Method, StatusCode};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

/// One or more requests until the body has been written to the end (or a verdict).
pub(super) async fn transfer(
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
