//! The DDI resources of one controller as typed requests: URLs, ETag/`If-None-Match` caching of
//! JSON resources, and the HTTP status codes turned into [`ApiError`] variants a caller reacts
//! to (see [`super::backoff`] for the waits).

use super::http::{HttpClient, HttpError, MAX_JSON, Response};
use hyper::header::{self, HeaderValue};
use hyper::{Method, StatusCode, Uri};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A failed DDI request; every variant names the request (`what`, e.g. `poll`).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No HTTP answer (connect, TLS, timeout, dropped connection).
    #[error("{what}: {source}")]
    Transport {
        /// The request.
        what: &'static str,
        /// Why.
        source: HttpError,
    },
    /// 401/403: the token (or client certificate) is wrong or not allowed.
    #[error(
        "{what}: HTTP {status}: authentication refused (check hawkbit.auth/token_file, or the target's security token on the server)"
    )]
    Auth {
        /// The request.
        what: &'static str,
        /// 401 or 403.
        status: u16,
    },
    /// 404: unknown tenant, controller, action or artifact.
    #[error(
        "{what}: HTTP 404: not found (check hawkbit.server and hawkbit.tenant, or the action is gone)"
    )]
    NotFound {
        /// The request.
        what: &'static str,
    },
    /// 405 (e.g. a cancel that cannot be cancelled, or an unsupported resource).
    #[error("{what}: HTTP 405: not allowed by the server")]
    NotAllowed {
        /// The request.
        what: &'static str,
    },
    /// 409: conflict, retry shortly.
    #[error("{what}: HTTP 409: conflict")]
    Conflict {
        /// The request.
        what: &'static str,
    },
    /// 410: the action is no longer active.
    #[error("{what}: HTTP 410: the action is gone")]
    Gone {
        /// The request.
        what: &'static str,
    },
    /// 429: rate-limited; wait `retry_after`.
    #[error("{what}: HTTP 429: rate-limited, retry in {retry_after:?}")]
    RateLimited {
        /// The request.
        what: &'static str,
        /// From `Retry-After`, else 1 s.
        retry_after: Duration,
    },
    /// 5xx.
    #[error("{what}: HTTP {status}: server error")]
    Server {
        /// The request.
        what: &'static str,
        /// The status.
        status: u16,
    },
    /// Any other status.
    #[error("{what}: unexpected HTTP {status}")]
    Unexpected {
        /// The request.
        what: &'static str,
        /// The status.
        status: u16,
    },
    /// The body is not the JSON expected.
    #[error("{what}: bad response body: {message}")]
    Body {
        /// The request.
        what: &'static str,
        /// The parse error.
        message: String,
    },
}

impl ApiError {
    /// The error for a non-success `status`.
    pub fn from_status(what: &'static str, resp: &Response) -> Self {
        let status = resp.status.as_u16();
        match resp.status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Self::Auth { what, status },
            StatusCode::NOT_FOUND => Self::NotFound { what },
            StatusCode::METHOD_NOT_ALLOWED => Self::NotAllowed { what },
            StatusCode::CONFLICT => Self::Conflict { what },
            StatusCode::GONE => Self::Gone { what },
            StatusCode::TOO_MANY_REQUESTS => Self::RateLimited {
                what,
                retry_after: resp
                    .header(header::RETRY_AFTER)
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map_or(Duration::from_secs(1), |s| Duration::from_secs(s.min(3600))),
            },
            s if s.is_server_error() => Self::Server { what, status },
            _ => Self::Unexpected { what, status },
        }
    }

    fn transport(what: &'static str) -> impl FnOnce(HttpError) -> Self {
        move |source| Self::Transport { what, source }
    }
}

/// A JSON resource read with [`Api::get_json`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched<T> {
    /// 200 (or 304 answered from the cache).
    Value(T),
    /// 204, 404 on an optional resource, or a `null` body (gooseBit: nothing pending).
    Nothing,
}

/// url → (ETag, body) of the last 200 answer of a JSON resource.
type EtagCache = HashMap<String, (HeaderValue, Vec<u8>)>;

/// The controller's DDI API.
#[derive(Debug, Clone)]
pub struct Api {
    http: HttpClient,
    base: String,
    /// url → (ETag, body) of the last 200 answer.
    etags: Arc<Mutex<EtagCache>>,
}

impl Api {
    /// The API of controller `id` of `tenant` on `server` (base URL without trailing `/`).
    pub fn new(http: HttpClient, server: &str, tenant: &str, id: &str) -> Self {
        Self {
            http,
            base: format!("{server}/{tenant}/controller/v1/{id}"),
            etags: Arc::default(),
        }
    }

    /// The HTTP client (for downloads).
    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    /// `…/controller/v1/{id}`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `…/{id}/{rest}`.
    pub fn url(&self, rest: &str) -> String {
        format!("{}/{rest}", self.base)
    }

    /// GET a JSON resource, with `If-None-Match` when an ETag of it is cached. 404 and a `null`
    /// body are [`Fetched::Nothing`] only when `optional`.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        what: &'static str,
        url: &str,
        optional: bool,
    ) -> Result<Fetched<T>, ApiError> {
        let uri = parse(what, url)?;
        let cached = self
            .etags
            .lock()
            .map(|m| m.get(url).cloned())
            .unwrap_or_default();
        let extra: Vec<_> = cached
            .iter()
            .map(|(tag, _)| (header::IF_NONE_MATCH, tag.clone()))
            .collect();
        let resp = self
            .http
            .send(Method::GET, &uri, &extra, None)
            .await
            .map_err(ApiError::transport(what))?;
        let body = match resp.status {
            StatusCode::NOT_MODIFIED => match cached {
                Some((_, body)) => {
                    tracing::debug!(what, "304 not modified");
                    body
                }
                None => return Err(ApiError::Unexpected { what, status: 304 }),
            },
            StatusCode::NO_CONTENT => return Ok(Fetched::Nothing),
            StatusCode::NOT_FOUND if optional => return Ok(Fetched::Nothing),
            s if s.is_success() => {
                let etag = resp.headers.get(header::ETAG).cloned();
                let body = resp
                    .bytes(MAX_JSON)
                    .await
                    .map_err(ApiError::transport(what))?;
                if let (Some(tag), Ok(mut m)) = (etag, self.etags.lock()) {
                    m.insert(url.to_owned(), (tag, body.clone()));
                }
                body
            }
            _ => return Err(ApiError::from_status(what, &resp)),
        };
        let value: Option<T> = serde_json::from_slice(&body).map_err(|e| ApiError::Body {
            what,
            message: e.to_string(),
        })?;
        match value {
            Some(v) => Ok(Fetched::Value(v)),
            None if optional => Ok(Fetched::Nothing),
            None => Err(ApiError::Body {
                what,
                message: "null".into(),
            }),
        }
    }

    /// PUT or POST a JSON body; any 2xx is success.
    pub async fn send_json<B: Serialize>(
        &self,
        what: &'static str,
        method: Method,
        url: &str,
        body: &B,
    ) -> Result<(), ApiError> {
        let uri = parse(what, url)?;
        let bytes = serde_json::to_vec(body).map_err(|e| ApiError::Body {
            what,
            message: e.to_string(),
        })?;
        let resp = self
            .http
            .send(method, &uri, &[], Some(bytes))
            .await
            .map_err(ApiError::transport(what))?;
        if resp.status.is_success() {
            // Drain the (small) body so the connection closes cleanly.
            let _ = resp.bytes(MAX_JSON).await;
            Ok(())
        } else {
            Err(ApiError::from_status(what, &resp))
        }
    }
}

/// Parses an absolute URL.
pub fn parse(what: &'static str, url: &str) -> Result<Uri, ApiError> {
    url.parse::<Uri>()
        .ok()
        .filter(|u| u.scheme().is_some() && u.authority().is_some())
        .ok_or(ApiError::Transport {
            what,
            source: HttpError::Url(url.to_owned()),
        })
}
