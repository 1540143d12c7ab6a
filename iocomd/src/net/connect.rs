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
    /// `host:port` (e.g. `127.0.0.1:6368`).
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

/// One connection attempt; true if the peer authenticated.
async fn attempt(
    id: super::ConnId,
    target: &ConnectTarget,
    cfg: ConnConfig,
    events: &mpsc::Sender<NetEvent>,
    shutdown: &CancellationToken,
) -> bool {
    let limit = cfg.handshake_timeout;
    let tcp = tokio::select! {
        _ = shutdown.cancelled() => return false,
        r = tokio::time::timeout(limit, TcpStream::connect(&target.addr)) => r,
    };
    let tcp = match tcp {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!(error = %e, "connect failed");
            return false;
        }
        Err(_) => {
            tracing::info!("connect timed out");
            return false;
        }
    };
    let _ = tcp.set_nodelay(true);
    let peer = match tcp.peer_addr() {
        Ok(p) => p,
        Err(e) => {
            tracing::info!(error = %e, "no peer address");
            return false;
        }
    };
    match &target.tls {
        None => run_stream(id, peer, tcp, cfg, events, shutdown).await.1,
        Some((connector, name)) => {
            let hs = tokio::select! {
                _ = shutdown.cancelled() => return false,
                r = tokio::time::timeout(limit, connector.connect(name.clone(), tcp)) => r,
            };
            match hs {
                Ok(Ok(s)) => run_stream(id, peer, s, cfg, events, shutdown).await.1,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "TLS handshake failed");
                    false
                }
                Err(_) => {
                    tracing::warn!("TLS handshake timed out");
                    false
                }
            }
        }
    }
}
