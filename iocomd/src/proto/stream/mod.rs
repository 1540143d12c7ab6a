//! The IOCOM stream protocol over `conf_exp`/`conf_imp` (spec data-and-streams.md §5).
//!
//! *tod* = to device (controller writes, device reads), *frd* = from device. Each side is an
//! enum state machine polled with the two blocks and `now`; signal writes made in one poll
//! go out in the same snapshot when the caller synchronises the blocks afterwards. Data
//! flows through caller-provided [`ChunkSink`]s and [`ChunkSource`]s so that no side keeps a
//! whole file in memory.
//!
//! - [`device::DeviceReader`]: receives a tod transfer (program upload).
//! - [`device::DeviceWriter`]: sends a frd transfer.
//! - [`controller::ControllerWriter`] / [`controller::ControllerReader`]: the controller ends.

pub mod controller;
pub mod device;

use crate::proto::mblk::Mblk;
use crate::proto::signals::{BlockLayout, STATE_CONNECTED, Signal, SignalError, SignalType};
use std::time::Duration;
use thiserror::Error;

/// `IOC_STREAMER_TIMEOUT`: every handshake wait and the no-data timeout.
pub const STREAM_TIMEOUT: Duration = Duration::from_secs(5);

/// Stream command/state values (`iocStreamerState`).
pub mod cmd {
    /// No transfer.
    pub const IDLE: i64 = 0;
    /// Transfer running.
    pub const RUNNING: i64 = 1;
    /// Writer has written everything (and the CRC).
    pub const COMPLETED: i64 = 2;
    /// Transfer interrupted.
    pub const INTERRUPT: i64 = 3;
}

/// Status codes published in `tod_err`/`frd_err` (eosal `osalStatus`; the workspace's one
/// table of them is `install_api::tod_err`).
pub use install_api::tod_err as status;

/// Why a transfer failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StreamError {
    /// The other side stopped (`cmd`/`state` left RUNNING) or went away.
    #[error("transfer interrupted by the peer")]
    Interrupted,
    /// Our own caller aborted.
    #[error("transfer aborted locally")]
    Aborted,
    /// Nothing happened for longer than the stream timeout.
    #[error("transfer timed out")]
    Timeout,
    /// The CRC over the data does not match the writer's `cs`.
    #[error("checksum mismatch: received data has CRC {actual:#06x}, writer says {expected:#06x}")]
    Checksum { expected: u16, actual: u16 },
    /// The peer published a ring position outside the ring, or the buffer is not connected.
    #[error("ring protocol violation: {0}")]
    Ring(&'static str),
    /// The peer's stream signals are not connected (no peer, or not started).
    #[error("peer not connected")]
    NotConnected,
    /// Our sink or source refused, with the status code published to the peer.
    #[error("local data error: {0}")]
    Local(LocalError),
    /// A signal could not be read or written (layout does not fit the block).
    #[error(transparent)]
    Signal(#[from] SignalError),
}

/// Why our own side (a [`ChunkSink`] or [`ChunkSource`]) refused or aborted a transfer: the
/// status published in `*_err`, and the caller's own error that caused it, handed back in the
/// transfer's failure event (the daemon downcasts it to its typed reason).
#[derive(Debug, Clone)]
pub struct LocalError {
    /// The status published in `tod_err`/`frd_err`.
    pub code: u8,
    /// What went wrong, as the sink or source said.
    pub cause: Option<std::sync::Arc<dyn std::error::Error + Send + Sync>>,
}

impl LocalError {
    /// A refusal with `code` caused by `cause`.
    pub fn new(code: u8, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self {
            code,
            cause: Some(std::sync::Arc::new(cause)),
        }
    }

    /// The cause, if it is a `T`.
    pub fn cause<T: std::error::Error + 'static>(&self) -> Option<&T> {
        self.cause.as_deref()?.downcast_ref()
    }
}

impl From<u8> for LocalError {
    fn from(code: u8) -> Self {
        Self { code, cause: None }
    }
}

impl PartialEq for LocalError {
    fn eq(&self, other: &Self) -> bool {
        self.code == other.code
            && self.cause.as_ref().map(ToString::to_string)
                == other.cause.as_ref().map(ToString::to_string)
    }
}

impl Eq for LocalError {}

impl std::fmt::Display for LocalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.cause {
            Some(c) => write!(f, "{c} (status {})", self.code),
            None => write!(f, "status {}", self.code),
        }
    }
}

/// Where received stream data goes (the daemon streams it to disk).
pub trait ChunkSink {
    /// A transfer for `select` starts. `Err` refuses it; its code goes to `*_err`.
    fn open(&mut self, select: i64) -> Result<(), LocalError>;
    /// The next bytes of the stream, in order. `Err` aborts the transfer.
    fn write(&mut self, chunk: &[u8]) -> Result<(), LocalError>;
    /// How many bytes [`ChunkSink::write`] takes now; the rest stays in the sender's ring
    /// (its tail is not advanced) until a later poll. Unbounded by default.
    fn room(&mut self) -> usize {
        usize::MAX
    }
    /// The transfer ended (successfully when `ok`, CRC checked); discard data if not `ok`.
    fn close(&mut self, ok: bool);
}

/// What a [`ChunkSource`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceRead {
    /// This many bytes were put at the start of the buffer.
    Bytes(usize),
    /// No data right now; ask again later.
    Pending,
    /// End of the data (and every later read returns `End` too).
    End,
}

/// Where stream data to send comes from.
pub trait ChunkSource {
    /// A transfer for `select` starts (device side). `Err(code)` refuses it.
    fn open(&mut self, select: i64) -> Result<(), u8>;
    /// Fills `buf` with the next bytes. `Err(code)` aborts the transfer. An empty `buf`
    /// only asks whether the end is reached: answer `End` then, else `Bytes(0)` or `Pending`.
    fn read(&mut self, buf: &mut [u8]) -> Result<SourceRead, u8>;
}

/// Which block a stream signal lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Exp,
    Imp,
}

/// The eight signals of one stream direction, with their blocks (spec §4.3 table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSignals {
    /// Controller's command (conf_imp).
    pub cmd: Signal,
    /// What to transfer (conf_imp).
    pub select: Signal,
    /// Device's status/result code (conf_exp).
    pub err: Signal,
    /// Writer's CRC (tod: conf_imp, frd: conf_exp).
    pub cs: Signal,
    /// The ring (tod: conf_imp, frd: conf_exp).
    pub buf: Signal,
    /// Writer's position (tod: conf_imp, frd: conf_exp).
    pub head: Signal,
    /// Reader's position (tod: conf_exp, frd: conf_imp).
    pub tail: Signal,
    /// Device's state (conf_exp).
    pub state: Signal,
    tod: bool,
}

/// The stream direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Controller → device (`tod_*`).
    ToDevice,
    /// Device → controller (`frd_*`).
    FromDevice,
}

impl StreamSignals {
    /// Finds the signals of `dir` in the layouts of `conf_exp` and `conf_imp`.
    pub fn resolve(dir: Direction, exp: &BlockLayout, imp: &BlockLayout) -> Option<Self> {
        let tod = dir == Direction::ToDevice;
        let prefix = if tod { "tod_" } else { "frd_" };
        let side = |name: &str| -> Side {
            match (name, tod) {
                ("cmd" | "select", _) => Side::Imp,
                ("err" | "state", _) => Side::Exp,
                ("cs" | "buf" | "head", true) | ("tail", false) => Side::Imp,
                _ => Side::Exp,
            }
        };
        let find = |name: &str| -> Option<Signal> {
            let layout = match side(name) {
                Side::Exp => exp,
                Side::Imp => imp,
            };
            layout.signal(&format!("{prefix}{name}")).cloned()
        };
        let buf = find("buf")?;
        if !matches!(buf.ty, SignalType::UChar | SignalType::Char) || buf.n < 2 {
            return None;
        }
        Some(Self {
            cmd: find("cmd")?,
            select: find("select")?,
            err: find("err")?,
            cs: find("cs")?,
            buf,
            head: find("head")?,
            tail: find("tail")?,
            state: find("state")?,
            tod,
        })
    }

    /// Checks that every signal lies inside its block (a peer's info may claim otherwise).
    pub fn check_fits(&self, exp: &Mblk, imp: &Mblk) -> Result<(), StreamError> {
        let (buf_blk, head_blk, tail_blk, cs_blk) = if self.tod {
            (imp, imp, exp, imp)
        } else {
            (exp, exp, imp, exp)
        };
        let ok = self.cmd.fits(imp)
            && self.select.fits(imp)
            && self.err.fits(exp)
            && self.state.fits(exp)
            && self.buf.fits(buf_blk)
            && self.head.fits(head_blk)
            && self.tail.fits(tail_blk)
            && self.cs.fits(cs_blk);
        if ok {
            Ok(())
        } else {
            Err(StreamError::Ring("stream signals do not fit the blocks"))
        }
    }

    /// Ring size `N` (capacity `N − 1`).
    pub fn ring(&self) -> usize {
        self.buf.n
    }
}

/// Reads an integer signal with the connected check: `None` if not CONNECTED.
fn get_connected(sig: &Signal, block: &Mblk) -> Result<Option<i64>, SignalError> {
    let (v, state) = sig.get_int(block)?;
    Ok((state & STATE_CONNECTED != 0).then_some(v))
}

/// A ring position published by the other side, checked to be in `0..n`.
fn ring_pos(sig: &Signal, block: &Mblk, n: usize) -> Result<usize, StreamError> {
    let v = get_connected(sig, block)?.ok_or(StreamError::Ring("position not connected"))?;
    usize::try_from(v)
        .ok()
        .filter(|p| *p < n)
        .ok_or(StreamError::Ring("position outside the ring"))
}

/// Bytes waiting in a ring of `n` with `head` and `tail`.
pub fn buffered(head: usize, tail: usize, n: usize) -> usize {
    (head + n - tail) % n
}

/// The (at most two) index ranges holding the data between `tail` and `head`.
fn read_segments(head: usize, tail: usize, n: usize) -> [(usize, usize); 2] {
    if tail > head {
        [(tail, n), (0, head)]
    } else {
        [(tail, head), (0, 0)]
    }
}

/// The (at most two) index ranges free for writing at `head` given `tail`.
fn write_segments(head: usize, tail: usize, n: usize) -> [(usize, usize); 2] {
    if head >= tail {
        let end = if tail == 0 { n - 1 } else { n };
        [(head, end), (0, tail.saturating_sub(1))]
    } else {
        [(head, tail - 1), (0, 0)]
    }
}

#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_arithmetic() {
        assert_eq!(buffered(5, 5, 257), 0);
        assert_eq!(buffered(4, 5, 257), 256);
        assert_eq!(read_segments(3, 250, 257), [(250, 257), (0, 3)]);
        assert_eq!(read_segments(250, 3, 257), [(3, 250), (0, 0)]);
        // Empty ring at 0: capacity N-1 in one piece.
        assert_eq!(write_segments(0, 0, 257), [(0, 256), (0, 0)]);
        // Head past tail: to the end, then up to tail-1.
        assert_eq!(write_segments(256, 256, 257), [(256, 257), (0, 255)]);
        assert_eq!(write_segments(10, 20, 257), [(10, 19), (0, 0)]);
        let free: usize = write_segments(100, 30, 257)
            .iter()
            .map(|(a, b)| b - a)
            .sum();
        assert_eq!(free, 256 - buffered(100, 30, 257));
    }
}

#[cfg(test)]
mod machine_tests;
