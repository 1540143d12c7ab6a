//! Accepting IOCOM connections (plain TCP or TLS) and running one task per connection.

use super::driver::run_stream;
use super::{NetEvent, next_conn_id};
use crate::proto::conn::{ConnConfig, PeerAuth, Side};
use sha2::Digest;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How long [`listen`] waits for its connection tasks after shutdown before aborting them.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts connections on `listener` until `shutdown` is cancelled, running each with a copy of
/// `cfg` (side forced to [`Side::Server`], `secure` set when `tls` is given). With `tls`, the TLS
/// handshake must finish within `cfg.handshake_timeout`; a failed TLS handshake is logged and
/// produces no event. Returns after all connection tasks ended (bounded by [`DRAIN_TIMEOUT`]).
pub async fn listen(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    cfg: ConnConfig,
    events: mpsc::Sender<NetEvent>,
    shutdown: CancellationToken,
) {
    let local = listener.local_addr().ok();
    tracing::info!(?local, tls = tls.is_some(), "listening");
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok((tcp, peer)) => {
                    let id = next_conn_id();
                    let span = tracing::info_span!("iocom", conn = id, %peer);
                    let fut = serve(id, tcp, peer, tls.clone(), cfg.clone(), events.clone(), shutdown.clone());
                    tasks.spawn(fut.instrument(span));
                }
                Err(e) => {
                    // Typically EMFILE: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = tasks.len(),
            "aborting connection tasks after drain timeout"
        );
        tasks.abort_all();
    }
    tracing::info!(?local, "listener stopped");
}

async fn serve(
    id: super::ConnId,
    tcp: TcpStream,
    peer: std::net::SocketAddr,
    tls: Option<TlsAcceptor>,
    mut cfg: ConnConfig,
    events: mpsc::Sender<NetEvent>,
    shutdown: CancellationToken,
) {
    tracing::debug!("accepted");
    let _ = tcp.set_nodelay(true);
    cfg.side = Side::Server;
    cfg.secure = tls.is_some();
    match tls {
        None => {
            run_stream(id, peer.into(), tcp, cfg, &events, &shutdown).await;
        }
        Some(acceptor) => {
            let hs = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = tokio::time::timeout(cfg.handshake_timeout, acceptor.accept(tcp)) => r,
            };
            match hs {
                Ok(Ok(stream)) => {
                    bind_certificate(&mut cfg, stream.get_ref().1.peer_certificates());
                    run_stream(id, peer.into(), stream, cfg, &events, &shutdown).await;
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "TLS handshake failed"),
                Err(_) => tracing::warn!("TLS handshake timed out"),
            }
        }
    }
}

/// Resolves the certificate-bound accounts against the client certificate the peer presented
/// (its leaf, already verified against the listener's `ca` by rustls).
fn bind_certificate(cfg: &mut ConnConfig, chain: Option<&[rustls_pki_types::CertificateDer<'_>]>) {
    let PeerAuth::Accounts(accounts) = &cfg.peer_auth else {
        return;
    };
    let presented: Option<[u8; 32]> = chain
        .and_then(|c| c.first())
        .map(|leaf| sha2::Sha256::digest(leaf.as_ref()).into());
    if let Some(fp) = &presented {
        let hex: String = fp.iter().map(|b| format!("{b:02x}")).collect();
        tracing::debug!(certificate_sha256 = %hex, "client certificate");
    }
    cfg.peer_auth = PeerAuth::Accounts(accounts.for_certificate(presented.as_ref()));
}
