//! A connection's program stream (select 1): the sink that opens a push on the update side
//! (or refuses it, saying why) and writes the received chunks, and the stream events that end
//! the transfer.
//!
//! The first bytes of a push are also kept ([`Head`], at most [`HEAD_MAX`]) until the update
//! side has judged its control member by the helper's rules ([`Updates::judge_head`]): a
//! package the helper's policy refuses (name, architecture, not newer) is stopped after its
//! first kilobytes instead of after the whole transfer. A head that does not parse is left to
//! the end: the CRC tells a transfer error from a bad file first.

use super::{Peers, Updates};
use crate::daemon::update::Origin;
use crate::daemon::updates::Outcome;
use crate::proto::stream::device::DeviceEvent;
use crate::proto::stream::{
    ChunkSink, ChunkSource, Direction, LocalError, SourceRead, StreamError,
};
use install_api::{DaemonCode, ResultCode, tod_err};
use std::time::Instant;

/// Why the sink refused or aborted a push: the result to publish. Travels to the stream's
/// failure event as the [`LocalError`]'s cause.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.message)]
pub(super) struct Refusal(pub(super) Outcome);

impl Refusal {
    fn error(outcome: Outcome) -> LocalError {
        LocalError::new(outcome.code.tod_err(), Refusal(outcome))
    }
}

/// The most bytes kept for the early judgement; a control member that does not end within
/// them is left to the helper.
pub(super) const HEAD_MAX: usize = 1 << 20;

/// The head of the push being received (one at a time: the update slot is single).
#[derive(Debug, Default)]
pub(super) struct Head {
    conn: Option<u64>,
    bytes: Vec<u8>,
    judged: bool,
}

impl Head {
    fn begin(&mut self, conn: u64) {
        *self = Head {
            conn: Some(conn),
            ..Head::default()
        };
    }

    /// Adds `chunk` while undecided; the refusal once the head is refused.
    fn feed(&mut self, conn: u64, chunk: &[u8], updates: &Updates) -> Result<(), LocalError> {
        if self.judged || self.conn != Some(conn) {
            return Ok(());
        }
        let take = chunk.len().min(HEAD_MAX - self.bytes.len());
        self.bytes
            .extend_from_slice(chunk.get(..take).unwrap_or_default());
        let decided = updates.judge_head(&self.bytes).map_err(Refusal::error)?;
        if decided || self.bytes.len() >= HEAD_MAX {
            self.judged = true;
            self.bytes = Vec::new();
        }
        Ok(())
    }
}

struct PushSink<'a> {
    conn: u64,
    origin: Origin,
    may_push: bool,
    updates: &'a mut Updates,
    head: &'a mut Head,
    span: &'a tracing::Span,
    now: Instant,
}

impl ChunkSink for PushSink<'_> {
    fn open(&mut self, select: i64) -> Result<(), LocalError> {
        if select != 1 {
            return Err(Refusal::error(Outcome::daemon(
                DaemonCode::BadSelect,
                format!("stream select {select} is not supported (1 = program)"),
            )));
        }
        if !self.may_push {
            return Err(Refusal::error(Outcome::daemon(
                DaemonCode::NotAuthorized,
                "pushes need an authenticated TLS connection",
            )));
        }
        self.updates
            .begin_receive(self.origin.clone(), self.span, self.now)
            .map_err(Refusal::error)?;
        self.head.begin(self.conn);
        Ok(())
    }

    fn write(&mut self, chunk: &[u8]) -> Result<(), LocalError> {
        self.head.feed(self.conn, chunk, self.updates)?;
        self.updates
            .write(self.conn, chunk)
            .map_err(|e| Refusal::error(Outcome::daemon(e.code(), e.to_string())))
    }

    fn room(&mut self) -> usize {
        self.updates.room(self.conn)
    }

    fn close(&mut self, _ok: bool) {
        // The reader's event (Completed/Failed) decides what happens to the spool file.
    }
}

/// The device serves no stream data to controllers.
struct NoSource;

impl ChunkSource for NoSource {
    fn open(&mut self, _select: i64) -> Result<(), u8> {
        Err(tod_err::REJECTED)
    }
    fn read(&mut self, _buf: &mut [u8]) -> Result<SourceRead, u8> {
        Ok(SourceRead::End)
    }
}

impl Peers {
    pub(super) fn poll_peer(&mut self, id: u64, updates: &mut Updates, now: Instant) {
        let (allow_plain, allow_serial) = (self.allow_plain_tcp_push, self.allow_serial_push);
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        // A serial line has no TLS: pushes over it only when the configuration says so.
        let may_push = if p.addr.is_serial() {
            allow_serial
        } else {
            p.secure || allow_plain
        };
        let origin = Origin::Iocom {
            conn: Some(id),
            peer: p.addr.clone(),
            user: p.user.clone(),
        };
        let span = p.span.clone();
        let Some(ep) = p.ep.as_mut() else { return };
        let mut sink = PushSink {
            conn: id,
            origin,
            may_push,
            updates,
            head: &mut self.head,
            span: &span,
            now,
        };
        let events = ep.poll_streams(now, &mut sink, &mut NoSource);
        for ev in events {
            if ev.dir == Direction::ToDevice {
                self.on_stream_event(id, &span, ev.event, updates);
            }
        }
    }

    fn on_stream_event(
        &mut self,
        id: u64,
        span: &tracing::Span,
        ev: DeviceEvent,
        updates: &mut Updates,
    ) {
        let ours = updates.machine().conn() == Some(id)
            && matches!(
                updates.machine(),
                crate::daemon::update::Update::Receiving { .. }
            );
        match ev {
            DeviceEvent::Started { select } => {
                if ours {
                    span.in_scope(|| tracing::debug!(select, "stream started"));
                }
            }
            DeviceEvent::Completed { crc, .. } => updates.received(id, crc),
            DeviceEvent::Failed { bytes, error, .. } => {
                let refusal = match &error {
                    StreamError::Local(e) => e.cause::<Refusal>().map(|r| r.0.clone()),
                    _ => None,
                };
                if !ours {
                    let Some(o) = refusal else { return };
                    span.in_scope(
                        || tracing::warn!(code = %o.code, msg = %o.message, "push refused"),
                    );
                    // A refusal of the device's own making is a result. `busy` would hide the
                    // running push's status (unless nothing runs: the helper is not ready),
                    // and `not-authorized` would let any unauthenticated peer overwrite the
                    // last result: those show only in the refused connection's tod_err.
                    let idle = matches!(updates.machine(), crate::daemon::update::Update::Idle);
                    if matches!(
                        o.code,
                        ResultCode::Daemon(
                            DaemonCode::NoSpace | DaemonCode::SpoolError | DaemonCode::BadSelect
                        )
                    ) || (idle && o.code == ResultCode::Daemon(DaemonCode::Busy))
                    {
                        let f = updates.refusal(o, id);
                        self.report(&f);
                    }
                    return;
                }
                let outcome = match (&error, refusal) {
                    (StreamError::Checksum { .. }, _) => {
                        Outcome::daemon(DaemonCode::CrcMismatch, error.to_string())
                    }
                    (StreamError::Timeout, _) => Outcome::daemon(
                        DaemonCode::Interrupted,
                        format!("the transfer stalled after {bytes} bytes"),
                    ),
                    (StreamError::Local(_), Some(o)) => o,
                    _ => Outcome::daemon(
                        DaemonCode::Interrupted,
                        format!("the transfer was interrupted after {bytes} bytes: {error}"),
                    ),
                };
                if let Some(mut f) = updates.receive_failed(id, outcome) {
                    if matches!(error, StreamError::Timeout) {
                        f.tod_err = tod_err::TIMEOUT;
                    }
                    self.report(&f);
                }
            }
            DeviceEvent::Released => {}
        }
    }
}
