//! IOCOM over a serial line: the port ([`SerialPort`]), the connect sequence on it
//! ([`establish`]) and the daemon's serial endpoint ([`serve`]), which keeps one port open,
//! runs connection after connection on it, and reopens it with backoff when it goes away.
//!
//! Each completed connect sequence is a new connection: [`NetEvent::Connected`] (peer
//! [`PeerAddr::Serial`]), its events, [`NetEvent::Closed`], exactly like a TCP connection, so
//! the owner cannot tell the transports apart. A protocol error (CRC, frame number, silence
//! for 250 ms) ends the connection; the port stays open, unread input is discarded and the
//! connect sequence runs again, as in the C library. An I/O error or end of file on the port
//! (adapter unplugged) closes it and [`serve`] reopens it after a [`Backoff`] delay.

mod port;

pub use port::{DEFAULT_BAUD, ParamsError, Parity, SerialParams, SerialPort};

use super::driver::{drive, handle_pair};
use super::{Backoff, NetEvent, PeerAddr, next_conn_id};
use crate::proto::conn::{CloseReason, ConnConfig, Connection, Side};
use crate::proto::serial::SerialConnect;
use std::io;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The end of a completed connect sequence: the first bytes of the connection that arrived
/// with the last control character.
#[derive(Debug, Default)]
pub struct Established {
    /// Received bytes that belong to the connection.
    pub leftover: Vec<u8>,
}

/// Why [`establish`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum EstablishError {
    /// Reading or writing the port failed, or it hung up.
    #[error("serial port: {0}")]
    Io(#[from] io::Error),
    /// No connect sequence completed within the limit.
    #[error("no serial connect sequence completed within {0:?}")]
    Timeout(Duration),
    /// `shutdown` was cancelled.
    #[error("shut down")]
    Shutdown,
}

/// Runs the connect sequence as `side` on `port` (input discarded first) until it completes,
/// `limit` passes (`None`: wait forever, as the C server does) or `shutdown`.
pub async fn establish(
    port: &mut SerialPort,
    side: Side,
    limit: Option<Duration>,
    shutdown: &CancellationToken,
) -> Result<Established, EstablishError> {
    port.discard_input()?;
    let start = Instant::now();
    let mut seq = SerialConnect::new(side, start.into_std());
    let mut buf = [0u8; 64];
    let mut out = Vec::new();
    loop {
        out.clear();
        seq.poll_transmit(&mut out);
        if !out.is_empty() {
            port.write_all(&out).await?;
        }
        let deadline = seq.poll_timeout().map(Instant::from_std);
        let give_up = limit.map(|l| start + l);
        tokio::select! {
            _ = shutdown.cancelled() => return Err(EstablishError::Shutdown),
            r = port.read(&mut buf) => {
                let n = r?;
                if n == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "port hung up").into());
                }
                let data = buf.get(..n).unwrap_or_default();
                if let Some(used) = seq.handle_input(data, Instant::now().into_std()) {
                    // The server's FA goes out at once, not with the connection's first
                    // output: the client gives up waiting for it after a while
                    // ([`crate::proto::serial::CONFIRM_WAIT`]).
                    out.clear();
                    seq.poll_transmit(&mut out);
                    if !out.is_empty() {
                        port.write_all(&out).await?;
                    }
                    let leftover = data.get(used..).unwrap_or_default().to_vec();
                    return Ok(Established { leftover });
                }
            }
            _ = sleep_until(deadline) => {
                if seq.handle_timeout(Instant::now().into_std()) {
                    port.discard_input()?;
                }
            }
            _ = sleep_until(give_up) => {
                return Err(EstablishError::Timeout(limit.unwrap_or_default()));
            }
        }
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Runs one IOCOM connection on `port` after [`establish`]: announces it, drives it until it
/// closes and reports the close. Returns the reason and whether the peer authenticated.
pub async fn run_connection(
    port: &mut SerialPort,
    established: Established,
    cfg: ConnConfig,
    events: &mpsc::Sender<NetEvent>,
    shutdown: &CancellationToken,
) -> (CloseReason, bool) {
    let id = next_conn_id();
    let span = tracing::info_span!("iocom", conn = id, peer = %port.path().display());
    run_connection_as(id, port, established, cfg, events, shutdown)
        .instrument(span)
        .await
}

/// [`run_connection`] with a connection id and span of the caller's.
pub(crate) async fn run_connection_as(
    id: super::ConnId,
    port: &mut SerialPort,
    established: Established,
    cfg: ConnConfig,
    events: &mpsc::Sender<NetEvent>,
    shutdown: &CancellationToken,
) -> (CloseReason, bool) {
    tracing::info!("serial connect sequence complete");
    let now = Instant::now().into_std();
    let mut conn = Connection::new(cfg, now);
    let (handle, cmds) = handle_pair(id);
    let peer = PeerAddr::Serial(port.path().to_path_buf());
    if events
        .send(NetEvent::Connected { id, peer, handle })
        .await
        .is_err()
    {
        return (CloseReason::Local("event receiver dropped".into()), false);
    }
    let mut first = Vec::new();
    let _ = conn.handle_input(&established.leftover, now);
    conn.poll_transmit(now, &mut first);
    let (reason, authenticated) = match port.write_all(&first).await {
        Ok(()) => drive(id, &mut *port, conn, events, cmds, shutdown).await,
        Err(e) => (CloseReason::Io(format!("write: {e}")), false),
    };
    let _ = events
        .send(NetEvent::Closed {
            id,
            reason: reason.clone(),
        })
        .await;
    (reason, authenticated)
}

/// True when the reason means the port itself failed (reopen it), not the protocol.
fn port_failed(reason: &CloseReason) -> bool {
    matches!(
        reason,
        CloseReason::Io(_) | CloseReason::PeerClosed | CloseReason::Truncated { .. }
    )
}

/// The daemon's serial endpoint: opens `params`, runs connect sequence and connection as
/// `cfg.side` again and again, and reopens the port with `backoff` delays when opening it
/// fails or it goes away, until `shutdown`. `cfg` must be a [`ConnConfig::serial`].
pub async fn serve(
    params: SerialParams,
    cfg: ConnConfig,
    backoff: Backoff,
    events: mpsc::Sender<NetEvent>,
    shutdown: CancellationToken,
) {
    let span = tracing::info_span!("serial", port = %params);
    serve_port(params, cfg, backoff, events, shutdown)
        .instrument(span)
        .await
}

async fn serve_port(
    params: SerialParams,
    cfg: ConnConfig,
    backoff: Backoff,
    events: mpsc::Sender<NetEvent>,
    shutdown: CancellationToken,
) {
    let mut delay = backoff.initial;
    let mut reported = false;
    while !shutdown.is_cancelled() && !events.is_closed() {
        match SerialPort::open(&params) {
            Ok(mut port) => {
                tracing::info!(side = ?cfg.side, "serial port open");
                reported = false;
                delay = backoff.initial;
                let why = run_port(&mut port, &cfg, &events, &shutdown).await;
                match why {
                    Some(e) => tracing::warn!(error = %e, "serial port lost; reopening"),
                    None => return,
                }
            }
            Err(e) => {
                // Logged once per outage, not at every retry.
                if !reported {
                    tracing::warn!(error = %e, "cannot open the serial port; retrying with backoff");
                    reported = true;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = backoff.next(delay);
    }
}

/// Connections on one open port until it fails (`Some(why)`) or shutdown (`None`).
async fn run_port(
    port: &mut SerialPort,
    cfg: &ConnConfig,
    events: &mpsc::Sender<NetEvent>,
    shutdown: &CancellationToken,
) -> Option<String> {
    loop {
        let est = match establish(port, cfg.side, None, shutdown).await {
            Ok(e) => e,
            Err(EstablishError::Shutdown) => return None,
            Err(e) => return Some(e.to_string()),
        };
        let (reason, _) = run_connection(port, est, cfg.clone(), events, shutdown).await;
        if shutdown.is_cancelled() || events.is_closed() {
            return None;
        }
        if port_failed(&reason) {
            return Some(reason.to_string());
        }
    }
}
