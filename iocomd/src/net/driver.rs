//! The task body that drives one [`Connection`] over any async byte stream.

use super::{Command, ConnHandle, ConnId, NetEvent};
use crate::proto::conn::{CloseReason, Connection};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Commands buffered per connection before the owner's sends wait.
const COMMAND_QUEUE: usize = 256;
/// Read buffer size.
const READ_BUF: usize = 16 * 1024;

pub(crate) fn handle_pair(id: ConnId) -> (ConnHandle, mpsc::Receiver<Command>) {
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    (ConnHandle { id, tx }, rx)
}

fn apply(conn: &mut Connection, id: ConnId, cmd: Command) -> Option<NetEvent> {
    let r = match cmd {
        Command::Data {
            mblk_id,
            addr,
            flags,
            payload,
        } => conn.queue_data_frame(mblk_id, addr, flags, payload),
        Command::System(f) => conn.queue_system_frame(f),
        Command::Withdraw(mblk_id) => {
            conn.withdraw_mblk(mblk_id);
            Ok(())
        }
        Command::Close(why) => {
            conn.close(CloseReason::Local(why));
            Ok(())
        }
    };
    r.err().map(|error| {
        tracing::warn!(%error, "frame not queued");
        NetEvent::QueueFailed { id, error }
    })
}

/// Runs `conn` over `stream` until it closes; returns the reason and whether it had
/// authenticated. Must be called inside the connection's span.
pub(crate) async fn drive<S>(
    id: ConnId,
    stream: S,
    mut conn: Connection,
    events: &mpsc::Sender<NetEvent>,
    mut cmds: mpsc::Receiver<Command>,
    shutdown: &CancellationToken,
) -> (CloseReason, bool)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut buf = vec![0u8; READ_BUF];
    let mut out = Vec::new();
    let mut cmds_open = true;
    let mut authenticated = false;
    let reason = loop {
        let now = Instant::now().into_std();
        out.clear();
        if conn.poll_transmit(now, &mut out) {
            let w = async {
                wr.write_all(&out).await?;
                wr.flush().await
            };
            // A peer that stops reading must not pin the task: bound the write.
            let limit = conn.config().silence_timeout;
            tokio::select! {
                _ = shutdown.cancelled() => conn.close(CloseReason::Local("shutdown".into())),
                r = tokio::time::timeout(limit, w) => match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => conn.close(CloseReason::Io(format!("write: {e}"))),
                    Err(_) => conn.close(CloseReason::Io(format!("write stalled for {limit:?}"))),
                },
            }
        }
        while let Some(event) = conn.poll_event() {
            if matches!(event, crate::proto::conn::ConnEvent::Authenticated { .. }) {
                authenticated = true;
                tracing::info!(peer = ?conn.peer().map(|p| p.account_name()), "authenticated");
            }
            if events.send(NetEvent::Conn { id, event }).await.is_err() {
                conn.close(CloseReason::Local("event receiver dropped".into()));
            }
        }
        if let Some(r) = conn.close_reason() {
            break r.clone();
        }
        let deadline = conn.poll_timeout().map(Instant::from_std);
        // Biased: received bytes are handled before timers, so a slow owner (events back-pressure)
        // cannot make received data look like silence.
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => conn.close(CloseReason::Local("shutdown".into())),
            cmd = cmds.recv(), if cmds_open => match cmd {
                Some(cmd) => {
                    if let Some(ev) = apply(&mut conn, id, cmd) {
                        let _ = events.send(ev).await;
                    }
                }
                None => cmds_open = false,
            },
            r = rd.read(&mut buf) => {
                let now = Instant::now().into_std();
                match r {
                    Ok(0) => conn.handle_eof(),
                    Ok(n) => {
                        // Errors close `conn`; the reason is picked up above.
                        let _ = conn.handle_input(buf.get(..n).unwrap_or_default(), now);
                    }
                    Err(e) => conn.close(CloseReason::Io(format!("read: {e}"))),
                }
            }
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => conn.handle_timeout(Instant::now().into_std()),
        }
    };
    match &reason {
        CloseReason::PeerClosed | CloseReason::Local(_) => tracing::info!(%reason, "closed"),
        _ => tracing::warn!(%reason, "closed"),
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), wr.shutdown()).await;
    (reason, authenticated)
}

/// Announces the stream, runs the IOCOM connection on it and reports its end.
pub(crate) async fn run_stream<S>(
    id: ConnId,
    peer: std::net::SocketAddr,
    stream: S,
    cfg: crate::proto::conn::ConnConfig,
    events: &mpsc::Sender<NetEvent>,
    shutdown: &CancellationToken,
) -> (CloseReason, bool)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (handle, cmds) = handle_pair(id);
    let conn = Connection::new(cfg, Instant::now().into_std());
    if events
        .send(NetEvent::Connected { id, peer, handle })
        .await
        .is_err()
    {
        return (CloseReason::Local("event receiver dropped".into()), false);
    }
    let (reason, authenticated) = drive(id, stream, conn, events, cmds, shutdown).await;
    let _ = events
        .send(NetEvent::Closed {
            id,
            reason: reason.clone(),
        })
        .await;
    (reason, authenticated)
}
