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
const READ_BUF: usize = 64 * 1024;
/// Read buffer size once the connection is streaming (our own peers, 16 KiB frames): more
/// frames per read, so fewer reads and wake-ups per frame. Only a streaming connection (an
/// authenticated peer of ours) gets it, so idle and handshaking connections stay small.
const STREAMING_READ_BUF: usize = 256 * 1024;
/// Bytes collected for one write on a streaming connection (several transmit budgets).
const STREAMING_WRITE: usize = 256 * 1024;
/// Queued frames up to which commands already waiting are taken in one go, so that one write
/// carries many frames (one write per frame costs a syscall and a TCP segment each). Above
/// it the command channel fills and the owner's sends wait: memory stays bounded.
const DRAIN_BELOW: usize = 64;

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
        // What was received goes to the owner first; the ACK for it follows in this turn's
        // write (the owner's reaction, e.g. the next ring data, should not wait for a syscall).
        while let Some(event) = conn.poll_event() {
            if matches!(event, crate::proto::conn::ConnEvent::Authenticated { .. }) {
                authenticated = true;
                tracing::info!(peer = ?conn.peer().map(|p| p.account_name()), "authenticated");
            }
            if events.send(NetEvent::Conn { id, event }).await.is_err() {
                conn.close(CloseReason::Local("event receiver dropped".into()));
            }
        }
        let now = Instant::now().into_std();
        out.clear();
        let streaming = conn.streaming();
        if streaming && buf.len() < STREAMING_READ_BUF {
            buf.resize(STREAMING_READ_BUF, 0);
        }
        let mut wrote = conn.poll_transmit(now, &mut out);
        // Between our own peers one write carries several budgets (fewer syscalls); a C peer's
        // window (44 frames) ends a transmit long before that anyway.
        while streaming && wrote && out.len() < STREAMING_WRITE {
            wrote = conn.poll_transmit(now, &mut out);
        }
        if !out.is_empty() {
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
                    let mut next = Some(cmd);
                    while let Some(cmd) = next.take() {
                        if let Some(ev) = apply(&mut conn, id, cmd) {
                            let _ = events.send(ev).await;
                        }
                        if conn.queued_frames() < DRAIN_BELOW {
                            next = cmds.try_recv().ok();
                        }
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
    peer: super::PeerAddr,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::conn::{ConnConfig, ConnEvent, LocalIdentity, Role, Side};
    use crate::proto::frame::FrameFlags;
    use crate::proto::sysframe::{MblkInfo, SystemFrame, mblk_flags};
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll};
    use tokio::io::{DuplexStream, ReadBuf};

    /// A stream that counts the writes made on it.
    struct Counting(DuplexStream, Arc<AtomicUsize>);

    impl AsyncRead for Counting {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.0).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Counting {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let r = Pin::new(&mut self.0).poll_write(cx, buf);
            if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
                self.1.fetch_add(1, Ordering::SeqCst);
            }
            r
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.0).poll_flush(cx)
        }
        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.0).poll_shutdown(cx)
        }
    }

    fn start<S>(
        id: ConnId,
        stream: S,
        cfg: ConnConfig,
        stop: &CancellationToken,
    ) -> (ConnHandle, mpsc::Receiver<NetEvent>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (handle, cmds) = handle_pair(id);
        let (tx, rx) = mpsc::channel(1024);
        let stop = stop.clone();
        let conn = Connection::new(cfg, Instant::now().into_std());
        tokio::spawn(async move { drive(id, stream, conn, &tx, cmds, &stop).await });
        (handle, rx)
    }

    async fn next_event(rx: &mut mpsc::Receiver<NetEvent>) -> ConnEvent {
        match tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv()).await {
            Ok(Some(NetEvent::Conn { event, .. })) => event,
            other => panic!("expected a connection event, got {other:?}"),
        }
    }

    #[test]
    fn queueing_without_waiting_says_full_and_gone() {
        let (handle, rx) = handle_pair(7);
        assert_eq!(handle.capacity(), COMMAND_QUEUE);
        for i in 0..COMMAND_QUEUE {
            handle
                .try_queue_data(10, i as u32, FrameFlags::NONE, vec![1])
                .unwrap();
        }
        assert_eq!(handle.capacity(), 0);
        assert_eq!(
            handle.try_queue_data(10, 0, FrameFlags::NONE, vec![1]),
            Err(super::super::TryQueueError::Full(7))
        );
        drop(rx);
        assert_eq!(handle.capacity(), 0);
        assert_eq!(
            handle.try_close("bye"),
            Err(super::super::TryQueueError::Gone(super::super::ConnGone(7)))
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn frames_waiting_together_leave_in_few_writes() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let writes = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let dev_cfg = ConnConfig::new(
            Role::Device,
            Side::Client,
            LocalIdentity::new("gina", 3, "cafenet"),
        );
        let ctl_cfg = ConnConfig::new(
            Role::Controller,
            Side::Server,
            LocalIdentity::new("frank", 9000, "cafenet"),
        );
        let (dev, mut dev_rx) = start(1, Counting(a, writes.clone()), dev_cfg, &stop);
        let (ctl, mut ctl_rx) = start(2, b, ctl_cfg, &stop);
        assert!(matches!(
            next_event(&mut dev_rx).await,
            ConnEvent::Authenticated { .. }
        ));
        assert!(matches!(
            next_event(&mut ctl_rx).await,
            ConnEvent::Authenticated { .. }
        ));
        // The controller announces its block 10; the device may send data to it from then on.
        let info = MblkInfo {
            mblk_id: 10,
            device_name: "gina".into(),
            device_nr: 3,
            network_name: "cafenet".into(),
            mblk_name: "exp".into(),
            size: 4096,
            flags: mblk_flags::UP,
        };
        ctl.queue_system(SystemFrame::MblkInfo(info)).await.unwrap();
        assert!(matches!(
            next_event(&mut dev_rx).await,
            ConnEvent::MblkInfo(_)
        ));
        tokio::task::yield_now().await;
        let before = writes.load(Ordering::SeqCst);
        // 40 frames queued without yielding: the device's task finds them all waiting.
        for i in 0..40u32 {
            dev.queue_data(10, i * 100, FrameFlags::NONE, vec![i as u8; 100])
                .await
                .unwrap();
        }
        for i in 0..40u32 {
            match next_event(&mut ctl_rx).await {
                ConnEvent::Data { addr, payload, .. } => {
                    assert_eq!((addr, payload.len()), (i * 100, 100));
                }
                other => panic!("expected data, got {other:?}"),
            }
        }
        let used = writes.load(Ordering::SeqCst) - before;
        assert!(used <= 3, "40 frames took {used} writes");
        stop.cancel();
    }
}
