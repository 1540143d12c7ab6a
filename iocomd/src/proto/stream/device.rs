//! Device ends of the stream protocol: [`DeviceReader`] receives `tod_*` transfers (program
//! uploads), [`DeviceWriter`] answers `frd_*` reads (spec §5.4, 5.6, 5.7, checklist 5.9).
//!
//! Differences from the C device, all toward safety: a transfer opens only on a fresh edge
//! of `cmd` to RUNNING (no re-open race, §5.10), an error code is never erased by a re-open,
//! a CRC mismatch, timeout or sink failure always leaves a code in `*_err`, and a completed
//! upload publishes `tod_err` = PENDING together with `tod_state` = IDLE until the caller
//! reports the final code with [`DeviceReader::report`].
//!
//! With an end hold ([`DeviceReader::set_end_hold`]) a completed upload keeps `tod_state` =
//! RUNNING (with `tod_err` = PENDING) until the final code is reported, the controller lets go
//! of the stream (`tod_cmd` neither RUNNING nor COMPLETED) or the hold time passes; the final
//! code then goes out in the same update as `tod_state` = IDLE. A C controller polled only
//! through `status()` refreshes its copy of `tod_err` only while its `run()` waits for
//! `tod_state` to leave RUNNING (at most `IOC_STREAMER_TIMEOUT`, 5 s after the last chunk), so
//! it sees the final 6/168 of an install that is done by then instead of a time-out.

use super::{
    ChunkSink, ChunkSource, STREAM_TIMEOUT, SourceRead, StreamError, StreamSignals, cmd,
    get_connected, read_segments, ring_pos, status, write_segments,
};
use crate::proto::crc::Crc16;
use crate::proto::mblk::Mblk;
use crate::proto::signals::STATE_CONNECTED;
use std::time::Instant;

/// The end hold iocomd uses (the reference controller's 20 s wait for a final status).
pub const DEFAULT_END_HOLD: std::time::Duration = std::time::Duration::from_secs(20);

/// What a device-side stream machine reports from one poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceEvent {
    /// The controller started a transfer for `select`.
    Started { select: i64 },
    /// The transfer ended and the CRC matched. For the reader, `*_err` now says PENDING
    /// until [`DeviceReader::report`] sets the final code.
    Completed { select: i64, bytes: u64, crc: u16 },
    /// The transfer failed; the sink/source was told to discard.
    Failed {
        select: i64,
        bytes: u64,
        error: StreamError,
    },
    /// The controller let go of a failed transfer; the stream is idle again.
    Released,
}

/// States of the to-device reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReaderState {
    /// No transfer. `armed`: `tod_cmd` was seen not RUNNING since the last transfer, so a
    /// RUNNING command opens a new one.
    Idle { armed: bool },
    /// Receiving: `tail` is our read position.
    Transfer {
        select: i64,
        crc: Crc16,
        bytes: u64,
        tail: usize,
        last_data: Instant,
    },
    /// `tod_state` = INTERRUPT published; waiting for the controller to let go.
    Failing { since: Instant },
    /// Upload completed (CRC matched, sink closed); `tod_state` stays RUNNING with `tod_err` =
    /// PENDING until the final code (end hold).
    Holding { since: Instant },
}

/// Device side of the to-device stream.
#[derive(Debug, Clone)]
pub struct DeviceReader {
    sig: StreamSignals,
    state: ReaderState,
    end_hold: Option<std::time::Duration>,
}

impl DeviceReader {
    /// A reader on the `tod_*` signals.
    pub fn new(sig: StreamSignals) -> Self {
        Self {
            sig,
            state: ReaderState::Idle { armed: true },
            end_hold: None,
        }
    }

    /// Keep `tod_state` = RUNNING after a completed upload for at most `hold` until the final
    /// code is reported (module documentation); `None` (the default) publishes IDLE at once.
    pub fn set_end_hold(&mut self, hold: Option<std::time::Duration>) {
        self.end_hold = hold;
    }

    /// Publishes the end of a held upload: `tod_state` IDLE, `tod_tail` 0.
    fn release(&mut self, exp: &mut Mblk) -> Result<(), StreamError> {
        self.sig.state.set_int(exp, cmd::IDLE)?;
        self.sig.tail.set_int(exp, 0)?;
        self.state = ReaderState::Idle { armed: false };
        Ok(())
    }

    /// The current state.
    pub fn state(&self) -> &ReaderState {
        &self.state
    }

    /// When the reader must be polled again even if no data arrives (a timeout), if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            ReaderState::Idle { .. } => None,
            ReaderState::Transfer { last_data, .. } => Some(*last_data + STREAM_TIMEOUT),
            ReaderState::Failing { since } => Some(*since + STREAM_TIMEOUT),
            ReaderState::Holding { since } => Some(*since + self.end_hold.unwrap_or_default()),
        }
    }

    /// Start-up values: `tod_state` = IDLE with CONNECTED, so controllers may start.
    pub fn init(&self, exp: &mut Mblk) -> Result<(), StreamError> {
        self.sig.state.set_int(exp, cmd::IDLE)?;
        Ok(())
    }

    /// Aborts a running transfer from our side (e.g. shutdown): publishes `code` in `tod_err`
    /// and INTERRUPT in `tod_state`, tells the sink to discard. Returns the failure event, or
    /// `None` if no transfer was running.
    pub fn abort(
        &mut self,
        exp: &mut Mblk,
        code: u8,
        now: Instant,
        sink: &mut dyn ChunkSink,
    ) -> Option<DeviceEvent> {
        let ReaderState::Transfer { select, bytes, .. } = &self.state else {
            return None;
        };
        let (select, bytes) = (*select, *bytes);
        let _ = self.sig.err.set_int(exp, i64::from(code));
        let _ = self.sig.state.set_int(exp, cmd::INTERRUPT);
        sink.close(false);
        self.state = ReaderState::Failing { since: now };
        Some(DeviceEvent::Failed {
            select,
            bytes,
            error: StreamError::Aborted,
        })
    }

    /// Publishes the final result code of the last transfer in `tod_err` (ending an end hold:
    /// `tod_state` = IDLE in the same update).
    pub fn report(&mut self, exp: &mut Mblk, code: u8) -> Result<(), StreamError> {
        self.sig.err.set_int(exp, i64::from(code))?;
        if matches!(self.state, ReaderState::Holding { .. }) {
            self.release(exp)?;
        }
        Ok(())
    }

    /// Runs the reader once, after received data was applied and before the blocks are
    /// synchronised for sending. `exp` = our conf_exp, `imp` = the controller's conf_imp.
    pub fn poll(
        &mut self,
        exp: &mut Mblk,
        imp: &Mblk,
        now: Instant,
        sink: &mut dyn ChunkSink,
    ) -> Option<DeviceEvent> {
        match self.step(exp, imp, now, sink) {
            Ok(ev) => ev,
            Err((select, bytes, error)) => {
                sink.close(false);
                let _ = self.sig.state.set_int(exp, cmd::INTERRUPT);
                self.state = ReaderState::Failing { since: now };
                Some(DeviceEvent::Failed {
                    select,
                    bytes,
                    error,
                })
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn step(
        &mut self,
        exp: &mut Mblk,
        imp: &Mblk,
        now: Instant,
        sink: &mut dyn ChunkSink,
    ) -> Result<Option<DeviceEvent>, (i64, u64, StreamError)> {
        self.sig.check_fits(exp, imp).map_err(|e| (0, 0, e))?;
        // Progressive receiving (`Mblk::set_progressive`): a signal cut by the end of the last
        // frame received is half new, half old; wait for the next frame.
        if let Some(from) = imp.incomplete_from() {
            let sig = &self.sig;
            let cut =
                |s: &crate::proto::signals::Signal| s.addr < from && from < s.addr + s.nbytes();
            if [&sig.cmd, &sig.select, &sig.cs, &sig.head]
                .into_iter()
                .any(cut)
            {
                return Ok(None);
            }
        }
        let command = get_connected(&self.sig.cmd, imp).map_err(|e| (0, 0, e.into()))?;
        let mut started = None;
        match &mut self.state {
            ReaderState::Idle { armed } => {
                if command != Some(cmd::RUNNING) {
                    *armed = true;
                    return Ok(None);
                }
                if !*armed {
                    return Ok(None);
                }
                *armed = false;
                let select = self
                    .sig
                    .select
                    .get_int(imp)
                    .map_err(|e| (0, 0, e.into()))?
                    .0;
                let sig = &self.sig;
                let publish = |exp: &mut Mblk, err: u8, state: i64| {
                    sig.err.set_int(exp, i64::from(err))?;
                    sig.tail.set_int(exp, 0)?;
                    sig.state.set_int(exp, state)
                };
                if let Err(code) = sink.open(select) {
                    publish(exp, code.code, cmd::IDLE).map_err(|e| (select, 0, e.into()))?;
                    return Ok(Some(DeviceEvent::Failed {
                        select,
                        bytes: 0,
                        error: StreamError::Local(code),
                    }));
                }
                publish(exp, status::SUCCESS, cmd::RUNNING).map_err(|e| (select, 0, e.into()))?;
                self.state = ReaderState::Transfer {
                    select,
                    crc: Crc16::new(),
                    bytes: 0,
                    tail: 0,
                    last_data: now,
                };
                started = Some(DeviceEvent::Started { select });
            }
            ReaderState::Failing { since } => {
                let holding = matches!(command, Some(cmd::RUNNING | cmd::COMPLETED));
                if holding && now.saturating_duration_since(*since) < STREAM_TIMEOUT {
                    return Ok(None);
                }
                let sig = &self.sig;
                sig.state
                    .set_int(exp, cmd::IDLE)
                    .and_then(|()| sig.tail.set_int(exp, 0))
                    .map_err(|e| (0, 0, e.into()))?;
                self.state = ReaderState::Idle {
                    armed: command != Some(cmd::RUNNING),
                };
                return Ok(Some(DeviceEvent::Released));
            }
            ReaderState::Holding { since } => {
                let let_go = !matches!(command, Some(cmd::RUNNING | cmd::COMPLETED));
                let over =
                    now.saturating_duration_since(*since) >= self.end_hold.unwrap_or_default();
                if let_go || over {
                    self.release(exp).map_err(|e| (0, 0, e))?;
                    if let_go && let ReaderState::Idle { armed } = &mut self.state {
                        *armed = command != Some(cmd::RUNNING);
                    }
                }
                return Ok(None);
            }
            ReaderState::Transfer { .. } => {}
        }
        let ev = self.transfer(exp, imp, now, sink, command)?;
        // A transfer that starts and ends in one poll reports its end; the start is implied.
        Ok(ev.or(started))
    }

    fn transfer(
        &mut self,
        exp: &mut Mblk,
        imp: &Mblk,
        now: Instant,
        sink: &mut dyn ChunkSink,
        command: Option<i64>,
    ) -> Result<Option<DeviceEvent>, (i64, u64, StreamError)> {
        let ReaderState::Transfer {
            select,
            crc,
            bytes,
            tail,
            last_data,
        } = &mut self.state
        else {
            return Ok(None);
        };
        let (select, n) = (*select, self.sig.ring());
        let fail = |bytes: u64, e: StreamError| (select, bytes, e);
        if !matches!(command, Some(cmd::RUNNING | cmd::COMPLETED)) {
            return Err(fail(*bytes, StreamError::Interrupted));
        }
        let head = match ring_pos(&self.sig.head, imp, n) {
            Ok(h) => h,
            Err(e) => {
                let _ = self.sig.err.set_int(exp, i64::from(status::FAILED));
                return Err(fail(*bytes, e));
            }
        };
        let buf_state = self
            .sig
            .buf
            .state(imp)
            .map_err(|e| fail(*bytes, e.into()))?;
        if head != *tail {
            if buf_state & STATE_CONNECTED == 0 {
                let _ = self.sig.err.set_int(exp, i64::from(status::FAILED));
                return Err(fail(*bytes, StreamError::Ring("tod_buf not connected")));
            }
            // Take what the sink has room for; the rest waits in the ring. In progressive
            // mode only ring positions below the snapshot still arriving are final: the rest
            // (in ring order) waits for its frames.
            let mut room = sink.room();
            let final_below = imp.incomplete_from().map_or(usize::MAX, |from| {
                from.saturating_sub(self.sig.buf.addr + 1)
            });
            let mut new_tail = *tail;
            for (a, b) in read_segments(head, *tail, n) {
                if b <= a {
                    continue;
                }
                let take = b.min(final_below).saturating_sub(a).min(room);
                if take == 0 {
                    break;
                }
                let chunk = self
                    .sig
                    .buf
                    .read_bytes(imp, a, take)
                    .map_err(|e| fail(*bytes, e.into()))?;
                crc.update(chunk);
                if let Err(code) = sink.write(chunk) {
                    let _ = self.sig.err.set_int(exp, i64::from(code.code));
                    return Err(fail(*bytes, StreamError::Local(code)));
                }
                *bytes += take as u64;
                room -= take;
                new_tail = (a + take) % n;
                if a + take < b {
                    break;
                }
            }
            if new_tail != *tail {
                *tail = new_tail;
                *last_data = now;
                self.sig
                    .tail
                    .set_int(exp, new_tail as i64)
                    .map_err(|e| fail(*bytes, e.into()))?;
            }
        }
        // Complete only once everything the writer put in the ring was taken.
        if command == Some(cmd::COMPLETED) && *tail == head {
            let (bytes, actual) = (*bytes, crc.value());
            let expected = self
                .sig
                .cs
                .get_int(imp)
                .map_err(|e| fail(bytes, e.into()))?
                .0 as u16;
            let ok = expected == actual;
            let code = if ok {
                status::PENDING
            } else {
                status::CHECKSUM_ERROR
            };
            let sig = &self.sig;
            let hold = ok && self.end_hold.is_some();
            sig.err
                .set_int(exp, i64::from(code))
                .map_err(|e| fail(bytes, e.into()))?;
            sink.close(ok);
            if hold {
                self.state = ReaderState::Holding { since: now };
            } else {
                self.release(exp).map_err(|e| fail(bytes, e))?;
            }
            return Ok(Some(if ok {
                DeviceEvent::Completed {
                    select,
                    bytes,
                    crc: actual,
                }
            } else {
                DeviceEvent::Failed {
                    select,
                    bytes,
                    error: StreamError::Checksum { expected, actual },
                }
            }));
        }
        if now.saturating_duration_since(*last_data) >= STREAM_TIMEOUT {
            let _ = self.sig.err.set_int(exp, i64::from(status::TIMEOUT));
            return Err(fail(*bytes, StreamError::Timeout));
        }
        Ok(None)
    }
}

/// States of the from-device writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriterState {
    /// No transfer; see [`ReaderState::Idle`] for `armed`.
    Idle { armed: bool },
    /// Sending: `head` is our write position.
    Transfer {
        select: i64,
        crc: Crc16,
        bytes: u64,
        head: usize,
        last_progress: Instant,
    },
    /// `frd_state` = COMPLETED published; waiting for the controller to take the rest.
    Done {
        select: i64,
        bytes: u64,
        crc: u16,
        since: Instant,
    },
    /// `frd_state` = INTERRUPT published; waiting for the controller to let go.
    Failing { since: Instant },
}

/// Device side of the from-device stream.
#[derive(Debug, Clone)]
pub struct DeviceWriter {
    sig: StreamSignals,
    state: WriterState,
}

impl DeviceWriter {
    /// A writer on the `frd_*` signals.
    pub fn new(sig: StreamSignals) -> Self {
        Self {
            sig,
            state: WriterState::Idle { armed: true },
        }
    }

    /// The current state.
    pub fn state(&self) -> &WriterState {
        &self.state
    }

    /// When the writer must be polled again even if nothing arrives, if ever. While sending,
    /// poll whenever the source may have more data, too.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            WriterState::Idle { .. } => None,
            WriterState::Transfer { last_progress, .. } => Some(*last_progress + STREAM_TIMEOUT),
            WriterState::Done { since, .. } | WriterState::Failing { since } => {
                Some(*since + STREAM_TIMEOUT)
            }
        }
    }

    /// Start-up values: `frd_state` = IDLE with CONNECTED.
    pub fn init(&self, exp: &mut Mblk) -> Result<(), StreamError> {
        self.sig.state.set_int(exp, cmd::IDLE)?;
        Ok(())
    }

    /// Runs the writer once. `exp` = our conf_exp, `imp` = the controller's conf_imp.
    pub fn poll(
        &mut self,
        exp: &mut Mblk,
        imp: &Mblk,
        now: Instant,
        source: &mut dyn ChunkSource,
    ) -> Option<DeviceEvent> {
        match self.step(exp, imp, now, source) {
            Ok(ev) => ev,
            Err((select, bytes, error)) => {
                let _ = self.sig.state.set_int(exp, cmd::INTERRUPT);
                self.state = WriterState::Failing { since: now };
                Some(DeviceEvent::Failed {
                    select,
                    bytes,
                    error,
                })
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn step(
        &mut self,
        exp: &mut Mblk,
        imp: &Mblk,
        now: Instant,
        source: &mut dyn ChunkSource,
    ) -> Result<Option<DeviceEvent>, (i64, u64, StreamError)> {
        self.sig.check_fits(exp, imp).map_err(|e| (0, 0, e))?;
        let command = get_connected(&self.sig.cmd, imp).map_err(|e| (0, 0, e.into()))?;
        let holding = matches!(command, Some(cmd::RUNNING | cmd::COMPLETED));
        let sig = self.sig.clone();
        let mut started = None;
        match &mut self.state {
            WriterState::Idle { armed } => {
                if command != Some(cmd::RUNNING) {
                    *armed = true;
                    return Ok(None);
                }
                if !*armed {
                    return Ok(None);
                }
                *armed = false;
                let select = sig.select.get_int(imp).map_err(|e| (0, 0, e.into()))?.0;
                let reset = |exp: &mut Mblk| {
                    sig.err.set_int(exp, 0)?;
                    sig.head.set_int(exp, 0)?;
                    sig.cs.set_int(exp, 0)
                };
                reset(exp).map_err(|e| (select, 0, e.into()))?;
                if let Err(code) = source.open(select) {
                    let _ = sig.err.set_int(exp, i64::from(code));
                    return Err((select, 0, StreamError::Local(code.into())));
                }
                sig.state
                    .set_int(exp, cmd::RUNNING)
                    .map_err(|e| (select, 0, e.into()))?;
                self.state = WriterState::Transfer {
                    select,
                    crc: Crc16::new(),
                    bytes: 0,
                    head: 0,
                    last_progress: now,
                };
                started = Some(DeviceEvent::Started { select });
            }
            WriterState::Done {
                select,
                bytes,
                crc,
                since,
            } => {
                if command == Some(cmd::RUNNING)
                    && now.saturating_duration_since(*since) < STREAM_TIMEOUT
                {
                    return Ok(None);
                }
                let (select, bytes, crc) = (*select, *bytes, *crc);
                sig.state
                    .set_int(exp, cmd::IDLE)
                    .and_then(|()| sig.head.set_int(exp, 0))
                    .and_then(|()| sig.err.set_int(exp, i64::from(status::COMPLETED)))
                    .map_err(|e| (select, bytes, e.into()))?;
                self.state = WriterState::Idle {
                    armed: command != Some(cmd::RUNNING),
                };
                return Ok(Some(DeviceEvent::Completed { select, bytes, crc }));
            }
            WriterState::Failing { since } => {
                if command == Some(cmd::RUNNING)
                    && now.saturating_duration_since(*since) < STREAM_TIMEOUT
                {
                    return Ok(None);
                }
                sig.state
                    .set_int(exp, cmd::IDLE)
                    .and_then(|()| sig.head.set_int(exp, 0))
                    .map_err(|e| (0, 0, e.into()))?;
                self.state = WriterState::Idle {
                    armed: command != Some(cmd::RUNNING),
                };
                return Ok(Some(DeviceEvent::Released));
            }
            WriterState::Transfer { .. } => {}
        }
        let WriterState::Transfer {
            select,
            crc,
            bytes,
            head,
            last_progress,
        } = &mut self.state
        else {
            return Ok(started);
        };
        let select = *select;
        if !holding {
            return Err((select, *bytes, StreamError::Interrupted));
        }
        let n = sig.ring();
        let tail = match ring_pos(&sig.tail, imp, n) {
            Ok(t) => t,
            Err(e) => {
                let _ = sig.err.set_int(exp, i64::from(status::FAILED));
                return Err((select, *bytes, e));
            }
        };
        let mut wrote = 0usize;
        let mut ended = false;
        let mut stopped = false;
        let mut tmp = Vec::new();
        'segments: for (a, b) in write_segments(*head, tail, n) {
            let mut at = a;
            while at < b {
                tmp.resize(b - at, 0);
                match source.read(&mut tmp) {
                    Ok(SourceRead::Bytes(k)) if k > 0 => {
                        let k = k.min(b - at);
                        let chunk = tmp.get(..k).unwrap_or(&[]);
                        sig.buf
                            .write_bytes(exp, at, chunk)
                            .map_err(|e| (select, *bytes, e.into()))?;
                        crc.update(chunk);
                        at += k;
                        wrote += k;
                        *bytes += k as u64;
                    }
                    Ok(SourceRead::Bytes(_) | SourceRead::Pending) => {
                        stopped = true;
                        break 'segments;
                    }
                    Ok(SourceRead::End) => {
                        ended = true;
                        break 'segments;
                    }
                    Err(code) => {
                        let _ = sig.err.set_int(exp, i64::from(code));
                        return Err((select, *bytes, StreamError::Local(code.into())));
                    }
                }
            }
        }
        if !stopped && !ended {
            // The ring is full: an empty read only asks whether the source is at its end.
            ended = source.read(&mut []) == Ok(SourceRead::End);
        }
        if wrote > 0 {
            *head = (*head + wrote) % n;
            *last_progress = now;
            sig.head
                .set_int(exp, *head as i64)
                .map_err(|e| (select, *bytes, e.into()))?;
        }
        if ended {
            let (bytes, crc) = (*bytes, crc.value());
            sig.cs
                .set_int(exp, i64::from(crc))
                .and_then(|()| sig.state.set_int(exp, cmd::COMPLETED))
                .map_err(|e| (select, bytes, e.into()))?;
            self.state = WriterState::Done {
                select,
                bytes,
                crc,
                since: now,
            };
            return Ok(started);
        }
        if now.saturating_duration_since(*last_progress) >= STREAM_TIMEOUT {
            let _ = sig.err.set_int(exp, i64::from(status::TIMEOUT));
            return Err((select, *bytes, StreamError::Timeout));
        }
        Ok(started)
    }
}
