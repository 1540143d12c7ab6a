//! Connecting to a listening IOCOM peer, with reconnect and exponential backoff.

use super::driver::run_stream;
use super::{NetEvent, next_conn_id};
use crate::proto::conn::{ConnConfig, Side};
use rustls_pki_types::ServerName;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Where to connect.
#[derive(Clone)]
pub struct ConnectTarget {
    /// `host:port` (e.g. `127.0.0.1:6368`); `*` (or `*:PORT`): the address of the newest
    /// lighthouse announcement of our network and transport ([`super::lighthouse`]).
    pub addr: String,
    /// TLS connector and the name the server certificate must carry; `None` for plain TCP.
    pub tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl std::fmt::Debug for ConnectTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectTarget")
            .field("addr", &self.addr)
            .field("tls", &self.tls.as_ref().map(|(_, n)| n))
            .finish()
    }
}

/// Reconnect delays: `initial`, doubled after each attempt that did not authenticate, at most
/// `max`; back to `initial` after a connection that authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First delay (the C library waits 2 s).
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(2),
            max: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The delay after `delay` when the attempt failed.
    pub fn next(&self, delay: Duration) -> Duration {
        delay.saturating_mul(2).min(self.max)
    }
}

/// Connects to `target` and runs the connection with `cfg` (side forced to [`Side::Client`],
/// `secure` set for TLS); reconnects after every close with [`Backoff`] delays until `shutdown`
/// is cancelled. Each attempt is a new connection id with its own events.
pub async fn connect(
    target: ConnectTarget,
    mut cfg: ConnConfig,
    backoff: Backoff,
    events: mpsc::Sender<NetEvent>,
    shutdown: CancellationToken,
) {
    cfg.side = Side::Client;
    cfg.secure = target.tls.is_some();
    let mut delay = backoff.initial;
    while !shutdown.is_cancelled() && !events.is_closed() {
        let id = next_conn_id();
        let Some(target) = resolve(&target, &cfg, &shutdown).await else {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = backoff.next(delay);
            continue;
        };
        let span = tracing::info_span!("iocom", conn = id, peer = %target.addr);
        let authenticated = attempt(id, &target, cfg.clone(), &events, &shutdown)
            .instrument(span)
            .await;
        let wait = if authenticated {
            backoff.initial
        } else {
            delay
        };
        delay = backoff.next(wait);
        tracing::debug!(?wait, "reconnecting after delay");
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// How long one lighthouse discovery waits (announcements come every few seconds).
const DISCOVERY_WAIT: Duration = Duration::from_secs(10);

/// The target itself, or for `*` the address a lighthouse announcement names (`None`: none
/// heard yet). Only the address comes from it; TLS name and CA stay the configured ones.
async fn resolve(
    target: &ConnectTarget,
    cfg: &ConnConfig,
    shutdown: &CancellationToken,
) -> Option<ConnectTarget> {
    if !target.addr.starts_with('*') {
        return Some(target.clone());
    }
    let network = cfg.identity.network_name.as_str();
    let tls = target.tls.is_some();
    match super::lighthouse::discover(Some(network), tls, DISCOVERY_WAIT, shutdown).await {
        Ok(Some(addr)) => Some(ConnectTarget {
            addr: addr.to_string(),
            tls: target.tls.clone(),
        }),
        Ok(None) => {
            tracing::info!(network, tls, "lighthouse: no announcement heard");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "lighthouse: cannot listen for announcements");
            None
        }
    }
}

/// Why [`connect_once`] could not open a connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP connect failed.
    #[error("connect to {addr}: {source}")]
    Connect {
        /// Target address.
        addr: String,
        /// The error.
        source: std::io::Error,
    },
    /// TCP connect or TLS handshake took longer than the handshake timeout.
    #[error("connect to {addr}: no connection within {after:?}")]
    Timeout {
        /// Target address.
        addr: String,
        /// The limit.
        after: Duration,
    },
    /// The TLS handshake failed (e.g. the server certificate is not trusted).
    #[error("TLS handshake with {addr}: {source}")]
    Tls {
        /// Target address.
        addr: String,
        /// The error.
        source: std::io::Error,
    },
    /// `shutdown` was cancelled first.
    #[error("shut down before connecting")]
    Shutdown,
}

/// One connection to `target` without retries (for tools such as a CLI): opens TCP (and TLS),
/// then runs the IOCOM connection with `cfg` as a client until it closes, reporting
/// [`NetEvent`]s like [`connect`]. Returns the close reason and whether the peer had
/// authenticated, or why no connection could be opened (no events are sent then).
pub async fn connect_once(
    target: &ConnectTarget,
    mut cfg: ConnConfig,
    events: &mpsc::Sender<NetEvent>,
    shutdown: &CancellationToken,
) -> Result<(crate::proto::conn::CloseReason, bool), ConnectError> {
    cfg.side = Side::Client;
    cfg.secure = target.tls.is_some();
    let id = next_conn_id();
    let span = tracing::info_span!("iocom", conn = id, peer = %target.addr);
    open_and_run(id, target, cfg, events, shutdown)
        .instrument(span)
        .await
}

/// One connection attempt; true if the peer authenticated.
async fn attempt(
    id: super::ConnId,
    target: &ConnectTarget,
    cfg: ConnConfig,
    events: &mpsc::Sender<NetEvent>,
    shutdown: &CancellationToken,
) -> bool {
    match open_and_run(id, target, cfg, events, shutdown).await {
        Ok((_, authenticated)) => authenticated,
        Err(e @ ConnectError::Tls { .. }) => {
            tracing::warn!(error = %e, "connection attempt failed");
            false
        }
        Err(e) => {
            tracing::info!(error = %e, "connection attempt failed");
            false
        }
    }
}

async fn open_and_run(
    id: super::ConnId,
    target: &ConnectTarget,
    cfg: ConnConfig,
    events: &mpsc::Sender<NetEvent>,
    shutdown: &CancellationToken,
) -> Result<(crate::proto::conn::CloseReason, bool), ConnectError> {
    let limit = cfg.handshake_timeout;
    let addr = || target.addr.clone();
    let tcp = tokio::select! {
        _ = shutdown.cancelled() => return Err(ConnectError::Shutdown),
        r = tokio::time::timeout(limit, TcpStream::connect(&target.addr)) => r,
    };
    let tcp = match tcp {
        Ok(Ok(s)) => s,
        Ok(Err(source)) => {
            return Err(ConnectError::Connect {
                addr: addr(),
                source,
            });
        }
        Err(_) => {
            return Err(ConnectError::Timeout {
                addr: addr(),
                after: limit,
            });
        }
    };
    let _ = tcp.set_nodelay(true);
    let peer = tcp.peer_addr().map_err(|source| ConnectError::Connect {
        addr: addr(),
        source,
    })?;
    match &target.tls {
        None => Ok(run_stream(id, peer.into(), tcp, cfg, events, shutdown).await),
        Some((connector, name)) => {
            let hs = tokio::select! {
                _ = shutdown.cancelled() => return Err(ConnectError::Shutdown),
                r = tokio::time::timeout(limit, connector.connect(name.clone(), tcp)) => r,
            };
            match hs {
                Ok(Ok(s)) => Ok(run_stream(id, peer.into(), s, cfg, events, shutdown).await),
                Ok(Err(source)) => Err(ConnectError::Tls {
                    addr: addr(),
                    source,
                }),
                Err(_) => Err(ConnectError::Timeout {
                    addr: addr(),
                    after: limit,
                }),
            }
        }
    }
}
