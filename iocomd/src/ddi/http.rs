//! A small HTTP/1.1 client for DDI: one connection per request over TCP or rustls (ring
//! provider; configured by [`crate::net::tls::client_config`] like every TLS client), hyper's
//! connection API, timeouts on connect, on the response head and on every body read. Bodies are
//! streamed ([`Response::next_chunk`]);
//! JSON bodies are bounded ([`MAX_JSON`]). The `Authorization` header is sent only to the
//! configured server (and, if allowed, to download hosts); it never appears in logs.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Largest JSON response accepted.
pub const MAX_JSON: usize = 1 << 20;
/// Connect (TCP and TLS handshake) timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed for the response head, and between two body chunks.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// A transport-level failure (no HTTP status was received, or the body broke off).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL is not absolute http(s).
    #[error("bad URL '{0}'")]
    Url(String),
    /// TCP connect or name resolution failed.
    #[error("connect to {target}: {source}")]
    Connect {
        /// `host:port`.
        target: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TLS handshake failed (certificate, name, protocol).
    #[error("TLS with {target}: {source}")]
    Tls {
        /// `host:port`.
        target: String,
        /// The I/O error carrying the rustls error.
        source: std::io::Error,
    },
    /// `https://` without a TLS configuration (an `http://` server cannot link to https).
    #[error("{0}: https is not configured (set hawkbit.server to an https:// URL)")]
    NoTls(String),
    /// Nothing arrived in time.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What was waited for.
        what: &'static str,
        /// How long.
        after: Duration,
    },
    /// HTTP protocol error, or the connection dropped.
    #[error("HTTP: {0}")]
    Hyper(#[from] hyper::Error),
    /// A JSON body larger than [`MAX_JSON`].
    #[error("response body larger than {MAX_JSON} bytes")]
    TooLarge,
}

/// The client: TLS settings and the server's `Authorization` value.
#[derive(Clone)]
pub struct HttpClient {
    tls: Option<TlsConnector>,
    /// (server authority, header value)
    auth: Option<(String, HeaderValue)>,
    auth_other_hosts: bool,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("tls", &self.tls.is_some())
            .field("auth", &self.auth.as_ref().map(|(host, _)| host))
            .finish()
    }
}

/// A response whose head has arrived; the body is read with [`Response::next_chunk`] or
/// [`Response::bytes`].
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: StatusCode,
    /// Header fields.
    pub headers: HeaderMap,
    body: Incoming,
}

impl Response {
    /// The next piece of the body, `None` at its end; times out after [`READ_TIMEOUT`].
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, HttpError> {
        loop {
            let frame = tokio::time::timeout(READ_TIMEOUT, self.body.frame())
                .await
                .map_err(|_| HttpError::Timeout {
                    what: "response body",
                    after: READ_TIMEOUT,
                })?;
            match frame {
                None => return Ok(None),
                Some(f) => match f?.into_data() {
                    Ok(data) => return Ok(Some(data)),
                    Err(_trailers) => continue,
                },
            }
        }
    }

    /// The whole body, at most `limit` bytes.
    pub async fn bytes(mut self, limit: usize) -> Result<Vec<u8>, HttpError> {
        let mut out = Vec::new();
        while let Some(c) = self.next_chunk().await? {
            if out.len() + c.len() > limit {
                return Err(HttpError::TooLarge);
            }
            out.extend_from_slice(&c);
        }
        Ok(out)
    }

    /// A header as text, if present and visible ASCII.
    pub fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn authority_of(uri: &Uri) -> Option<String> {
    let host = uri.host()?;
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    Some(format!("{host}:{port}"))
}

impl HttpClient {
    /// A client for `server` (its base URL): `tls` for https, `authorization` the header value
    /// sent to that server.
    pub fn new(
        server: &Uri,
        tls: Option<Arc<ClientConfig>>,
        authorization: Option<HeaderValue>,
        auth_other_hosts: bool,
    ) -> Self {
        let auth = authorization.and_then(|mut v| {
            v.set_sensitive(true);
            authority_of(server).map(|a| (a, v))
        });
        Self {
            tls: tls.map(TlsConnector::from),
            auth,
            auth_other_hosts,
        }
    }

    /// Sends one request; `body` is sent as JSON when given.
    pub async fn send(
        &self,
        method: Method,
        url: &Uri,
        extra: &[(header::HeaderName, HeaderValue)],
        body: Option<Vec<u8>>,
    ) -> Result<Response, HttpError> {
        let bad = || HttpError::Url(url.to_string());
        let target = authority_of(url).ok_or_else(bad)?;
        let host = url
            .host()
            .ok_or_else(bad)?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let https = match url.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad()),
        };
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&target))
            .await
            .map_err(|_| HttpError::Timeout {
                what: "connect",
                after: CONNECT_TIMEOUT,
            })?
            .map_err(|source| HttpError::Connect {
                target: target.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let mut req = Request::builder()
            .method(method)
            .uri(url.path_and_query().map_or("/", |p| p.as_str()))
            .header(
                header::HOST,
                url.authority().map_or(host.as_str(), |a| a.as_str()),
            )
            .header(
                header::USER_AGENT,
                concat!("iocomd/", env!("CARGO_PKG_VERSION")),
            )
            .header(header::ACCEPT, "application/json")
            .header(header::CONNECTION, "close");
        if let Some((server, value)) = &self.auth
            && (*server == target || self.auth_other_hosts)
        {
            req = req.header(header::AUTHORIZATION, value.clone());
        }
        for (k, v) in extra {
            req = req.header(k, v.clone());
        }
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|_| bad())?;
        let head = async {
            if https {
                let tls = self
                    .tls
                    .as_ref()
                    .ok_or_else(|| HttpError::NoTls(url.to_string()))?;
                let name = ServerName::try_from(host.clone()).map_err(|_| bad())?;
                let stream = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|source| HttpError::Tls {
                        target: target.clone(),
                        source,
                    })?;
                exchange(TokioIo::new(stream), req).await
            } else {
                exchange(TokioIo::new(tcp), req).await
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT + READ_TIMEOUT, head)
            .await
            .map_err(|_| HttpError::Timeout {
                what: "response",
                after: CONNECT_TIMEOUT + READ_TIMEOUT,
            })?
    }
}

async fn exchange<T>(io: TokioIo<T>, req: Request<Full<Bytes>>) -> Result<Response, HttpError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        // Ends with the body (or its error, which the reader also sees).
        let _ = conn.await;
    });
    let resp = sender.send_request(req).await?;
    let (parts, body) = resp.into_parts();
    Ok(Response {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}
