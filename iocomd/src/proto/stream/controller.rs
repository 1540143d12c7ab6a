//! Controller ends of the stream protocol: [`ControllerWriter`] uploads to the device
//! (`tod_*`), [`ControllerReader`] reads from it (`frd_*`) (spec §5.5, 5.7, checklist 5.9).
//!
//! Like the C controller, a finished upload reports [`Progress::Completed`] once the device
//! leaves RUNNING; the device's verdict is in `tod_err` ([`ControllerWriter::device_status`]).
//! Unlike it, the writer also fails when the ring stays full for [`RING_FULL_TIMEOUT`].

use super::{
    ChunkSink, ChunkSource, STREAM_TIMEOUT, SourceRead, StreamError, StreamSignals, cmd,
    get_connected, read_segments, ring_pos, write_segments,
};
use crate::proto::crc::Crc16;
use crate::proto::mblk::Mblk;
use crate::proto::signals::STATE_CONNECTED;
use std::time::{Duration, Instant};

/// How long the upload waits while the device does not drain the ring.
pub const RING_FULL_TIMEOUT: Duration = Duration::from_secs(20);

/// What a controller stream machine reports from one poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Still running; poll again after the next received data (or a timer tick).
    Running,
    /// Done. `device_err` is the device's `*_err` at that moment.
    Completed {
        bytes: u64,
        crc: u16,
        device_err: Option<u8>,
    },
    /// Failed; the handshake back to idle is finished.
    Failed(StreamError),
}

/// States of the controller's upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriterState {
    /// Not started: the next poll writes cmd = RUNNING.
    Start,
    /// Waiting for `tod_state` = RUNNING.
    WaitRunning { since: Instant },
    /// Writing the ring.
    Transfer {
        crc: Crc16,
        bytes: u64,
        head: usize,
        last_progress: Instant,
        ring_full: bool,
    },
    /// cmd = COMPLETED sent; waiting for the device to leave RUNNING.
    Done {
        bytes: u64,
        crc: u16,
        since: Instant,
    },
    /// cmd = INTERRUPT sent; waiting for the device to leave RUNNING.
    Failing { error: StreamError, since: Instant },
    /// Finished (cmd back to IDLE).
    Finished(Progress),
}

/// Controller side of the to-device stream.
#[derive(Debug, Clone)]
pub struct ControllerWriter {
    sig: StreamSignals,
    select: i64,
    state: WriterState,
    abort: bool,
    /// Read buffer for the source, kept between polls (sized to the ring once).
    scratch: Scratch,
}

/// A reusable buffer whose `Debug` shows only its size.
#[derive(Clone, Default)]
struct Scratch(Vec<u8>);

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Scratch({} bytes)", self.0.len())
    }
}

impl ControllerWriter {
    /// An upload to `select` (must fit a signed char: 0..=127).
    pub fn new(sig: StreamSignals, select: i64) -> Self {
        Self {
            sig,
            select,
            state: WriterState::Start,
            abort: false,
            scratch: Scratch::default(),
        }
    }

    /// The current state.
    pub fn state(&self) -> &WriterState {
        &self.state
    }

    /// When the upload must be polled again even if nothing arrives, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            WriterState::Start => None,
            WriterState::WaitRunning { since }
            | WriterState::Done { since, .. }
            | WriterState::Failing { since, .. } => Some(*since + STREAM_TIMEOUT),
            WriterState::Transfer {
                last_progress,
                ring_full,
                ..
            } => Some(
                *last_progress
                    + if *ring_full {
                        RING_FULL_TIMEOUT
                    } else {
                        STREAM_TIMEOUT
                    },
            ),
            WriterState::Finished(_) => None,
        }
    }

    /// Asks the machine to interrupt the transfer at the next poll.
    pub fn abort(&mut self) {
        self.abort = true;
    }

    /// The device's `tod_err`, if connected.
    pub fn device_status(&self, exp: &Mblk) -> Option<u8> {
        get_connected(&self.sig.err, exp)
            .ok()
            .flatten()
            .map(|v| v as u8)
    }

    /// Runs the upload once. `exp` = the device's conf_exp (received), `imp` = our conf_imp.
    pub fn poll(
        &mut self,
        exp: &Mblk,
        imp: &mut Mblk,
        now: Instant,
        source: &mut dyn ChunkSource,
    ) -> Progress {
        if let WriterState::Finished(p) = &self.state {
            return p.clone();
        }
        if let Err(e) = self.sig.check_fits(exp, imp) {
            self.state = WriterState::Finished(Progress::Failed(e.clone()));
            return Progress::Failed(e);
        }
        let dev_state = match get_connected(&self.sig.state, exp) {
            Ok(Some(s)) => s,
            Ok(None) => return self.finish(imp, Progress::Failed(StreamError::NotConnected)),
            Err(e) => return self.finish(imp, Progress::Failed(e.into())),
        };
        match self.step(exp, imp, now, source, dev_state) {
            Ok(p) => p,
            Err(error) => {
                let _ = self.sig.cmd.set_int(imp, cmd::INTERRUPT);
                self.state = WriterState::Failing { error, since: now };
                Progress::Running
            }
        }
    }

    fn finish(&mut self, imp: &mut Mblk, p: Progress) -> Progress {
        let _ = self.sig.cmd.set_int(imp, cmd::IDLE);
        self.state = WriterState::Finished(p.clone());
        p
    }

    fn step(
        &mut self,
        exp: &Mblk,
        imp: &mut Mblk,
        now: Instant,
        source: &mut dyn ChunkSource,
        dev_state: i64,
    ) -> Result<Progress, StreamError> {
        let sig = self.sig.clone();
        match &mut self.state {
            WriterState::Start => {
                sig.cmd.set_int(imp, cmd::IDLE)?;
                sig.head.set_int(imp, 0)?;
                sig.cs.set_int(imp, 0)?;
                sig.select.set_int(imp, self.select)?;
                sig.cmd.set_int(imp, cmd::RUNNING)?;
                self.state = WriterState::WaitRunning { since: now };
                return Ok(Progress::Running);
            }
            WriterState::WaitRunning { since } => {
                if self.abort {
                    return Err(StreamError::Aborted);
                }
                if dev_state != cmd::RUNNING {
                    if now.saturating_duration_since(*since) >= STREAM_TIMEOUT {
                        return Err(StreamError::Timeout);
                    }
                    return Ok(Progress::Running);
                }
                self.state = WriterState::Transfer {
                    crc: Crc16::new(),
                    bytes: 0,
                    head: 0,
                    last_progress: now,
                    ring_full: false,
                };
            }
            WriterState::Done { bytes, crc, since } => {
                // A device holding the end of the stream (tod_state still RUNNING for
                // poll-only reference controllers) says it has everything with tod_err =
                // PENDING: the transfer is complete for us, the result comes later.
                let holding = get_connected(&sig.err, exp).ok().flatten()
                    == Some(i64::from(super::status::PENDING));
                if dev_state == cmd::RUNNING
                    && !holding
                    && now.saturating_duration_since(*since) < STREAM_TIMEOUT
                {
                    return Ok(Progress::Running);
                }
                let p = Progress::Completed {
                    bytes: *bytes,
                    crc: *crc,
                    device_err: self.device_status(exp),
                };
                return Ok(self.finish(imp, p));
            }
            WriterState::Failing { error, since } => {
                if dev_state == cmd::RUNNING
                    && now.saturating_duration_since(*since) < STREAM_TIMEOUT
                {
                    return Ok(Progress::Running);
                }
                let p = Progress::Failed(error.clone());
                return Ok(self.finish(imp, p));
            }
            WriterState::Transfer { .. } | WriterState::Finished(_) => {}
        }
        let WriterState::Transfer {
            crc,
            bytes,
            head,
            last_progress,
            ring_full,
        } = &mut self.state
        else {
            return Ok(Progress::Running);
        };
        if dev_state != cmd::RUNNING {
            return Err(StreamError::Interrupted);
        }
        if self.abort {
            return Err(StreamError::Aborted);
        }
        let n = sig.ring();
        let tail = ring_pos(&sig.tail, exp, n)?;
        let mut wrote = 0usize;
        let mut ended = false;
        let mut room = 0usize;
        let mut stopped = false;
        let tmp = &mut self.scratch.0;
        if tmp.len() < n {
            tmp.resize(n, 0);
        }
        'segments: for (a, b) in write_segments(*head, tail, n) {
            room += b.saturating_sub(a);
            let mut at = a;
            while at < b {
                let want = tmp.get_mut(..b - at).unwrap_or(&mut []);
                match source
                    .read(want)
                    .map_err(|c| StreamError::Local(c.into()))?
                {
                    SourceRead::Bytes(k) if k > 0 => {
                        let k = k.min(b - at);
                        let chunk = tmp.get(..k).unwrap_or(&[]);
                        sig.buf.write_bytes(imp, at, chunk)?;
                        crc.update(chunk);
                        at += k;
                        wrote += k;
                        *bytes += k as u64;
                    }
                    SourceRead::Bytes(_) | SourceRead::Pending => {
                        stopped = true;
                        break 'segments;
                    }
                    SourceRead::End => {
                        ended = true;
                        break 'segments;
                    }
                }
            }
        }
        if !stopped && !ended {
            // The ring is full: an empty read only asks whether the source is at its end.
            ended = source
                .read(&mut [])
                .map_err(|c| StreamError::Local(c.into()))?
                == SourceRead::End;
        }
        *ring_full = room == 0 && !ended;
        if wrote > 0 {
            *head = (*head + wrote) % n;
            *last_progress = now;
            sig.head.set_int(imp, *head as i64)?;
        }
        // Like the C controller, the end (cs, cmd = COMPLETED) goes out in a later snapshot
        // than the last data: only a poll that wrote nothing and found the source at its end.
        if ended && wrote == 0 {
            let (bytes, crc) = (*bytes, crc.value());
            sig.cs.set_int(imp, i64::from(crc))?;
            sig.cmd.set_int(imp, cmd::COMPLETED)?;
            self.state = WriterState::Done {
                bytes,
                crc,
                since: now,
            };
            return Ok(Progress::Running);
        }
        let limit = if *ring_full {
            RING_FULL_TIMEOUT
        } else {
            STREAM_TIMEOUT
        };
        if now.saturating_duration_since(*last_progress) >= limit {
            return Err(StreamError::Timeout);
        }
        Ok(Progress::Running)
    }
}

/// States of the controller's download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReaderState {
    /// Not started: the next poll writes cmd = RUNNING.
    Start,
    /// Waiting for `frd_state` RUNNING or COMPLETED.
    WaitRunning { since: Instant },
    /// Reading the ring.
    Transfer {
        crc: Crc16,
        bytes: u64,
        tail: usize,
        last_data: Instant,
    },
    /// cmd = IDLE sent after the device's COMPLETED (with `frd_cs` = `expected`); waiting
    /// for it to go idle.
    Done {
        bytes: u64,
        crc: u16,
        expected: u16,
        since: Instant,
    },
    /// cmd = IDLE sent after a failure; waiting for the device to leave RUNNING.
    Failing { error: StreamError, since: Instant },
    /// Finished.
    Finished(Progress),
}

/// Controller side of the from-device stream.
#[derive(Debug, Clone)]
pub struct ControllerReader {
    sig: StreamSignals,
    select: i64,
    state: ReaderState,
    abort: bool,
}

impl ControllerReader {
    /// A download of `select`.
    pub fn new(sig: StreamSignals, select: i64) -> Self {
        Self {
            sig,
            select,
            state: ReaderState::Start,
            abort: false,
        }
    }

    /// The current state.
    pub fn state(&self) -> &ReaderState {
        &self.state
    }

    /// When the download must be polled again even if nothing arrives, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            ReaderState::Start | ReaderState::Finished(_) => None,
            ReaderState::WaitRunning { since }
            | ReaderState::Done { since, .. }
            | ReaderState::Failing { since, .. } => Some(*since + STREAM_TIMEOUT),
            ReaderState::Transfer { last_data, .. } => Some(*last_data + STREAM_TIMEOUT),
        }
    }

    /// Asks the machine to interrupt the transfer at the next poll.
    pub fn abort(&mut self) {
        self.abort = true;
    }

    /// Runs the download once. `exp` = the device's conf_exp (received), `imp` = our
    /// conf_imp. Data goes to `sink`; it is closed with the outcome.
    pub fn poll(
        &mut self,
        exp: &Mblk,
        imp: &mut Mblk,
        now: Instant,
        sink: &mut dyn ChunkSink,
    ) -> Progress {
        if let ReaderState::Finished(p) = &self.state {
            return p.clone();
        }
        if let Err(e) = self.sig.check_fits(exp, imp) {
            sink.close(false);
            self.state = ReaderState::Finished(Progress::Failed(e.clone()));
            return Progress::Failed(e);
        }
        let dev_state = match get_connected(&self.sig.state, exp) {
            Ok(Some(s)) => s,
            Ok(None) => {
                sink.close(false);
                return self.finish(imp, Progress::Failed(StreamError::NotConnected));
            }
            Err(e) => {
                sink.close(false);
                return self.finish(imp, Progress::Failed(e.into()));
            }
        };
        match self.step(exp, imp, now, sink, dev_state) {
            Ok(p) => p,
            Err(error) => {
                sink.close(false);
                let _ = self.sig.cmd.set_int(imp, cmd::IDLE);
                self.state = ReaderState::Failing { error, since: now };
                Progress::Running
            }
        }
    }

    fn finish(&mut self, imp: &mut Mblk, p: Progress) -> Progress {
        let _ = self.sig.cmd.set_int(imp, cmd::IDLE);
        let _ = self.sig.tail.set_int(imp, 0);
        self.state = ReaderState::Finished(p.clone());
        p
    }

    fn step(
        &mut self,
        exp: &Mblk,
        imp: &mut Mblk,
        now: Instant,
        sink: &mut dyn ChunkSink,
        dev_state: i64,
    ) -> Result<Progress, StreamError> {
        let sig = self.sig.clone();
        match &mut self.state {
            ReaderState::Start => {
                sink.open(self.select).map_err(StreamError::Local)?;
                sig.cmd.set_int(imp, cmd::IDLE)?;
                sig.tail.set_int(imp, 0)?;
                sig.select.set_int(imp, self.select)?;
                sig.cmd.set_int(imp, cmd::RUNNING)?;
                self.state = ReaderState::WaitRunning { since: now };
                return Ok(Progress::Running);
            }
            ReaderState::WaitRunning { since } => {
                if self.abort {
                    return Err(StreamError::Aborted);
                }
                if !matches!(dev_state, cmd::RUNNING | cmd::COMPLETED) {
                    if now.saturating_duration_since(*since) >= STREAM_TIMEOUT {
                        return Err(StreamError::Timeout);
                    }
                    return Ok(Progress::Running);
                }
                self.state = ReaderState::Transfer {
                    crc: Crc16::new(),
                    bytes: 0,
                    tail: 0,
                    last_data: now,
                };
            }
            ReaderState::Done {
                bytes,
                crc,
                expected,
                since,
            } => {
                if matches!(dev_state, cmd::RUNNING | cmd::COMPLETED)
                    && now.saturating_duration_since(*since) < STREAM_TIMEOUT
                {
                    return Ok(Progress::Running);
                }
                let (bytes, crc, expected) = (*bytes, *crc, *expected);
                if expected != crc {
                    sink.close(false);
                    return Ok(self.finish(
                        imp,
                        Progress::Failed(StreamError::Checksum {
                            expected,
                            actual: crc,
                        }),
                    ));
                }
                sink.close(true);
                let device_err = get_connected(&sig.err, exp).ok().flatten().map(|v| v as u8);
                return Ok(self.finish(
                    imp,
                    Progress::Completed {
                        bytes,
                        crc,
                        device_err,
                    },
                ));
            }
            ReaderState::Failing { error, since } => {
                if dev_state == cmd::RUNNING
                    && now.saturating_duration_since(*since) < STREAM_TIMEOUT
                {
                    return Ok(Progress::Running);
                }
                let p = Progress::Failed(error.clone());
                return Ok(self.finish(imp, p));
            }
            ReaderState::Transfer { .. } | ReaderState::Finished(_) => {}
        }
        let ReaderState::Transfer {
            crc,
            bytes,
            tail,
            last_data,
        } = &mut self.state
        else {
            return Ok(Progress::Running);
        };
        if !matches!(dev_state, cmd::RUNNING | cmd::COMPLETED) {
            return Err(StreamError::Interrupted);
        }
        if self.abort {
            return Err(StreamError::Aborted);
        }
        let n = sig.ring();
        let head = ring_pos(&sig.head, exp, n)?;
        if head != *tail {
            if sig.buf.state(exp)? & STATE_CONNECTED == 0 {
                return Err(StreamError::Ring("frd_buf not connected"));
            }
            for (a, b) in read_segments(head, *tail, n) {
                if b <= a {
                    continue;
                }
                let chunk = sig.buf.read_bytes(exp, a, b - a)?;
                crc.update(chunk);
                sink.write(chunk).map_err(StreamError::Local)?;
                *bytes += (b - a) as u64;
            }
            *tail = head;
            *last_data = now;
            sig.tail.set_int(imp, head as i64)?;
        }
        if dev_state == cmd::COMPLETED {
            let (bytes, crc) = (*bytes, crc.value());
            let expected = sig.cs.get_int(exp)?.0 as u16;
            sig.cmd.set_int(imp, cmd::IDLE)?;
            self.state = ReaderState::Done {
                bytes,
                crc,
                expected,
                since: now,
            };
            return Ok(Progress::Running);
        }
        if now.saturating_duration_since(*last_data) >= STREAM_TIMEOUT {
            return Err(StreamError::Timeout);
        }
        Ok(Progress::Running)
    }
}
