//! Memory blocks and their synchronisation (spec data-and-streams.md §1–2, one-directional).
//!
//! A [`Mblk`] is a named byte array with per-connection sync state:
//! - a [`SourceBuffer`] for each connection this end *sends* the block on: the synchronised
//!   copy `S`, the invalidated range, and the snapshot being transmitted (delta + range);
//! - a [`TargetBuffer`] for the connection this end *receives* it from: the partly received
//!   snapshot `N`, committed into the block atomically on `SYNC_COMPLETE`.
//!
//! Writes go through [`Mblk::write`], which records the changed range in every source buffer
//! (shrunk by comparison with `S` like `ioc_sbuf_invalidate`). [`Mblk::next_frame`] turns the
//! pending snapshot into data frames (delta + zero-run compression, split to the frame size).
//!
//! A snapshot covers one range from the first to the last changed byte, as the C library's
//! does. Towards a streaming peer ([`Mblk::set_split_snapshots`]) it may instead cover a few
//! ranges with the unchanged bytes between them left out: a stream writer changes `tod_head`
//! at the start of `conf_imp` and ring bytes anywhere in it, and one range would make every
//! snapshot cost (delta, copy, compression, and the receiver's compare) up to the ring
//! position instead of the bytes written.

use crate::proto::compress::{self, COMPRESSED, DELTA_ENCODED, SYNC_COMPLETE};
use crate::proto::frame::{Framing, header_len_for};
use std::ops::Range;
use thiserror::Error;

/// Block flag: data flows controller → device.
pub const MBLK_DOWN: u16 = 0x0001;
/// Block flag: data flows device → controller.
pub const MBLK_UP: u16 = 0x0002;
/// Block flag: the block can do bidirectional transfer (we never advertise it).
pub const MBLK_BIDIRECTIONAL: u16 = 0x0008;
/// Block flag: created dynamically from received info.
pub const MBLK_DYNAMIC: u16 = 0x0010;
/// Block flag: may grow to the peer's size.
pub const MBLK_ALLOW_RESIZE: u16 = 0x0020;
/// Block flag: constant content, sent raw once per connection (the `info` block).
pub const MBLK_STATIC: u16 = 0x0040;
/// Smallest block the C library allocates.
pub const MIN_MBLK_SIZE: usize = 24;

/// Identifies a connection to the data layer (chosen by the caller, unique while open).
pub type ConnId = u64;

/// A data frame produced by, or given to, the data layer (transport fields decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFrame {
    /// The receiver's id of the block.
    pub mblk_id: u32,
    /// Start address of the payload in the block.
    pub addr: u32,
    /// `DELTA_ENCODED`, `COMPRESSED`, `SYNC_COMPLETE` bits.
    pub flags: u8,
    /// The payload.
    pub payload: Vec<u8>,
}

/// Errors applying a received data frame; the connection should be dropped.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MblkError {
    /// The start address lies beyond the block.
    #[error("block {block}: frame address {addr} is beyond the block size {size}")]
    AddressBeyondBlock {
        block: String,
        addr: usize,
        size: usize,
    },
    /// The payload could not be decoded or does not fit.
    #[error("block {block}: bad payload at address {addr}: {source}")]
    Payload {
        block: String,
        addr: usize,
        #[source]
        source: compress::DecodeError,
    },
    /// A write outside the block.
    #[error("block {block}: write of {len} bytes at {addr} exceeds the block size {size}")]
    WriteOutOfRange {
        block: String,
        addr: usize,
        len: usize,
        size: usize,
    },
}

/// Header bytes of a socket frame carrying `mblk_id` and `addr` (transport.md §3.2/3.5).
pub fn socket_header_len(mblk_id: u32, addr: u32) -> usize {
    header_len_for(Framing::Socket, mblk_id, addr)
}

/// A snapshot being transmitted.
#[derive(Debug, Clone)]
struct Snapshot {
    /// Delta bytes (or plain bytes for a key frame) of the range `start_addr..`.
    bytes: Vec<u8>,
    /// Block address of `bytes[0]`.
    base: usize,
    /// Offset in `bytes` of the first byte not yet sent.
    next: usize,
    keyframe: bool,
    /// Further ranges of a split snapshot (base address, delta bytes), in ascending order;
    /// the last frame of the last one completes the snapshot.
    later: std::collections::VecDeque<(usize, Vec<u8>)>,
}

/// Most ranges a split snapshot covers (more are merged, closest first).
const MAX_SPLIT_RANGES: usize = 4;
/// Unchanged bytes between two changed ranges below which they are sent as one: a new frame
/// costs a header and a receiver event, while a delta of unchanged bytes compresses to about
/// 2 bytes per 255.
const SPLIT_GAP: usize = 4096;

/// The changed ranges of a source buffer (inclusive, ascending, disjoint): one range, or up to
/// [`MAX_SPLIT_RANGES`] for a split source.
#[derive(Debug, Clone, Default)]
struct Changed(Vec<(usize, usize)>);

impl Changed {
    /// Adds `first..=last`: merged into one range, or (`split`) into the ranges it overlaps
    /// or comes within [`SPLIT_GAP`] of.
    fn add(&mut self, first: usize, last: usize, split: bool) {
        let v = &mut self.0;
        if !split {
            let merged = match v.first() {
                Some(&(f, _)) => (f.min(first), v.last().map_or(last, |&(_, l)| l.max(last))),
                None => (first, last),
            };
            v.clear();
            v.push(merged);
            return;
        }
        v.push((first, last));
        v.sort_unstable();
        // Coalesce what overlaps or lies within the gap (ascending starts: one pass).
        let mut out: Vec<(usize, usize)> = Vec::with_capacity(v.len());
        for &(a, b) in v.iter() {
            match out.last_mut() {
                Some(prev) if a <= prev.1.saturating_add(SPLIT_GAP) => prev.1 = prev.1.max(b),
                _ => out.push((a, b)),
            }
        }
        while out.len() > MAX_SPLIT_RANGES {
            // Merge the two neighbours with the smallest gap.
            let gap = |i: usize| match (out.get(i), out.get(i + 1)) {
                (Some(c), Some(n)) => n.0.saturating_sub(c.1),
                _ => usize::MAX,
            };
            let Some(i) = (0..out.len() - 1).min_by_key(|&i| gap(i)) else {
                break;
            };
            let (Some(&(a, _)), Some(&(_, b))) = (out.get(i), out.get(i + 1)) else {
                break;
            };
            out.splice(i..i + 2, [(a, b.max(a))]);
        }
        *v = out;
    }

    fn take(&mut self) -> Vec<(usize, usize)> {
        std::mem::take(&mut self.0)
    }
}

/// Sending side of a block on one connection (C `iocSourceBuffer`).
#[derive(Debug, Clone)]
pub struct SourceBuffer {
    conn: ConnId,
    remote_id: u32,
    synced: Vec<u8>,
    changed: Changed,
    /// Snapshots may leave out unchanged bytes between changed ranges (a streaming peer).
    split: bool,
    make_keyframe: bool,
    snapshot: Option<Snapshot>,
}

/// Receiving side of a block on one connection (C `iocTargetBuffer`).
#[derive(Debug, Clone)]
pub struct TargetBuffer {
    conn: ConnId,
    remote_id: u32,
    newdata: Vec<u8>,
    pending: Option<(usize, usize)>,
    /// Progressive mode: end of the last frame of the snapshot still arriving.
    incomplete_from: Option<usize>,
}

/// A memory block with its sync buffers.
#[derive(Debug, Clone)]
pub struct Mblk {
    name: String,
    id: u32,
    flags: u16,
    data: Vec<u8>,
    sources: Vec<SourceBuffer>,
    targets: Vec<TargetBuffer>,
    /// Commit each received frame at once instead of at `SYNC_COMPLETE` (see
    /// [`Mblk::set_progressive`]).
    progressive: bool,
}

/// Delta bytes of `first..=last` for a source whose copy is `synced` (which then takes the
/// new bytes); `None` when nothing in the range differs.
fn delta_range(
    data: &[u8],
    synced: &mut [u8],
    first: usize,
    last: usize,
) -> Option<(usize, Vec<u8>)> {
    let (first, last) = shrink(data, synced, first, last)?;
    let (new, old) = (data.get(first..=last)?, synced.get_mut(first..=last)?);
    let bytes = compress::delta(new, old);
    old.copy_from_slice(new);
    Some((first, bytes))
}

fn merge(range: Option<(usize, usize)>, first: usize, last: usize) -> (usize, usize) {
    match range {
        Some((f, l)) => (f.min(first), l.max(last)),
        None => (first, last),
    }
}

/// Shrinks `first..=last` to the bytes where `a` and `b` differ; `None` if none do.
fn shrink(a: &[u8], b: &[u8], first: usize, last: usize) -> Option<(usize, usize)> {
    let a = a.get(first..=last)?;
    let b = b.get(first..=last)?;
    let lo = a.iter().zip(b).position(|(x, y)| x != y)?;
    let hi = a.iter().zip(b).rposition(|(x, y)| x != y)?;
    Some((first + lo, first + hi))
}

impl Mblk {
    /// A block of `size` zero bytes (at least [`MIN_MBLK_SIZE`]).
    pub fn new(name: &str, id: u32, flags: u16, size: usize) -> Self {
        Self {
            name: name.to_owned(),
            id,
            flags,
            data: vec![0; size.max(MIN_MBLK_SIZE)],
            sources: Vec::new(),
            targets: Vec::new(),
            progressive: false,
        }
    }

    /// A static block with fixed content (e.g. `info`); flags get [`MBLK_STATIC`].
    pub fn new_static(name: &str, id: u32, flags: u16, content: Vec<u8>) -> Self {
        Self {
            name: name.to_owned(),
            id,
            flags: flags | MBLK_STATIC,
            data: content,
            sources: Vec::new(),
            targets: Vec::new(),
            progressive: false,
        }
    }

    /// Block name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Our id of the block.
    pub fn id(&self) -> u32 {
        self.id
    }
    /// Block flags.
    pub fn flags(&self) -> u16 {
        self.flags
    }
    /// Block size in bytes.
    pub fn size(&self) -> usize {
        self.data.len()
    }
    /// The block content.
    pub fn data(&self) -> &[u8] {
        &self.data
    }
    /// True when some connection delivers this block to us (the "connected" check of §3.2).
    pub fn has_target(&self) -> bool {
        !self.targets.is_empty()
    }
    /// True when this block is sent on `conn`.
    pub fn has_source(&self, conn: ConnId) -> bool {
        self.sources.iter().any(|s| s.conn == conn)
    }
    /// True when this block is received on `conn`.
    pub fn is_target_on(&self, conn: ConnId) -> bool {
        self.targets.iter().any(|t| t.conn == conn)
    }

    /// Grows the block (never shrinks); new bytes are zero.
    pub fn grow(&mut self, size: usize) {
        if size > self.data.len() {
            self.data.resize(size, 0);
            for s in &mut self.sources {
                s.synced.resize(size, 0);
            }
            for t in &mut self.targets {
                t.newdata.resize(size, 0);
            }
        }
    }

    /// Writes `bytes` at `addr` and records the change for every connection.
    pub fn write(&mut self, addr: usize, bytes: &[u8]) -> Result<(), MblkError> {
        let size = self.data.len();
        let end = addr
            .checked_add(bytes.len())
            .filter(|e| *e <= size)
            .ok_or_else(|| MblkError::WriteOutOfRange {
                block: self.name.clone(),
                addr,
                len: bytes.len(),
                size,
            })?;
        let Some(dst) = self.data.get_mut(addr..end) else {
            return Ok(());
        };
        dst.copy_from_slice(bytes);
        if !bytes.is_empty() {
            self.invalidate(addr, end - 1);
        }
        Ok(())
    }

    /// Marks `first..=last` as changed in every source buffer (C `ioc_sbuf_invalidate`).
    pub fn invalidate(&mut self, first: usize, last: usize) {
        for s in &mut self.sources {
            let range = if last - first < 256 {
                shrink(&self.data, &s.synced, first, last)
            } else {
                Some((first, last))
            };
            if let Some((f, l)) = range {
                s.changed.add(f, l, s.split);
            }
        }
    }

    /// Starts sending the block on `conn` to the peer's block `remote_id`; the first snapshot
    /// is a key frame. A second call for the same connection only updates the id.
    pub fn add_source(&mut self, conn: ConnId, remote_id: u32) {
        if let Some(s) = self.sources.iter_mut().find(|s| s.conn == conn) {
            s.remote_id = remote_id;
            return;
        }
        self.sources.push(SourceBuffer {
            conn,
            remote_id,
            synced: self.data.clone(),
            changed: Changed::default(),
            split: false,
            make_keyframe: true,
            snapshot: None,
        });
    }

    /// Lets snapshots on `conn` leave out the unchanged bytes between changed ranges (module
    /// documentation). Only towards a peer of ours ([`crate::proto::frame::is_streaming`]):
    /// our receiver applies such frames like any others (each carries its address, the
    /// snapshot commits at `SYNC_COMPLETE`), while a C peer is sent what the C library sends.
    pub fn set_split_snapshots(&mut self, conn: ConnId, on: bool) {
        if let Some(s) = self.sources.iter_mut().find(|s| s.conn == conn) {
            s.split = on;
        }
    }

    /// Starts receiving the block on `conn`; any other one-directional target buffer is
    /// dropped (only one sender per block).
    pub fn add_target(&mut self, conn: ConnId, remote_id: u32) {
        if let Some(t) = self.targets.iter_mut().find(|t| t.conn == conn) {
            t.remote_id = remote_id;
            return;
        }
        self.targets.clear();
        self.targets.push(TargetBuffer {
            conn,
            remote_id,
            newdata: self.data.clone(),
            pending: None,
            incomplete_from: None,
        });
    }

    /// Drops the sync buffers of a closed connection.
    pub fn remove_connection(&mut self, conn: ConnId) {
        self.sources.retain(|s| s.conn != conn);
        self.targets.retain(|t| t.conn != conn);
    }

    /// Takes a snapshot for every source buffer that has no snapshot in flight
    /// (C `ioc_sbuf_synchronize`, called by `ioc_send`).
    pub fn synchronize(&mut self) {
        let is_static = self.flags & MBLK_STATIC != 0;
        for s in &mut self.sources {
            if s.snapshot.is_some() {
                continue;
            }
            if s.make_keyframe {
                s.make_keyframe = false;
                s.changed = Changed::default();
                s.synced.copy_from_slice(&self.data);
                if self.data.is_empty() {
                    continue;
                }
                s.snapshot = Some(Snapshot {
                    bytes: self.data.clone(),
                    base: 0,
                    next: 0,
                    keyframe: true,
                    later: Default::default(),
                });
                continue;
            }
            if is_static {
                continue;
            }
            let mut ranges =
                s.changed.take().into_iter().filter_map(|(first, last)| {
                    delta_range(&self.data, &mut s.synced, first, last)
                });
            let Some((base, bytes)) = ranges.next() else {
                continue;
            };
            s.snapshot = Some(Snapshot {
                bytes,
                base,
                next: 0,
                keyframe: false,
                later: ranges.collect(),
            });
        }
    }

    /// True when some snapshot for `conn` still has frames to send.
    pub fn has_pending(&self, conn: ConnId) -> bool {
        self.sources
            .iter()
            .any(|s| s.conn == conn && s.snapshot.is_some() && s.remote_id != 0)
    }

    /// The next data frame of the pending snapshot for `conn`, at most `frame_size` bytes
    /// including the socket header; the last frame of a snapshot has `SYNC_COMPLETE`.
    pub fn next_frame(&mut self, conn: ConnId, frame_size: usize) -> Option<DataFrame> {
        self.next_frame_framed(conn, frame_size, Framing::Socket)
    }

    /// [`Mblk::next_frame`] with the header of `framing` (serial headers are one byte
    /// longer).
    pub fn next_frame_framed(
        &mut self,
        conn: ConnId,
        frame_size: usize,
        framing: Framing,
    ) -> Option<DataFrame> {
        let is_static = self.flags & MBLK_STATIC != 0;
        let s = self
            .sources
            .iter_mut()
            .find(|s| s.conn == conn && s.remote_id != 0)?;
        let snap = s.snapshot.as_mut()?;
        let addr = u32::try_from(snap.base + snap.next).ok()?;
        let max = frame_size
            .saturating_sub(header_len_for(framing, s.remote_id, addr))
            .max(1);
        let rest = snap.bytes.get(snap.next..)?;
        let mut flags = 0u8;
        let payload;
        if is_static {
            let n = rest.len().min(max);
            payload = rest.get(..n)?.to_vec();
            snap.next += n;
        } else {
            if !snap.keyframe {
                flags |= DELTA_ENCODED;
            }
            match compress::compress(rest, max) {
                Some(c) => {
                    flags |= COMPRESSED;
                    snap.next += c.consumed;
                    payload = c.payload;
                }
                None => {
                    let n = rest.len().min(max);
                    payload = rest.get(..n)?.to_vec();
                    snap.next += n;
                }
            }
        }
        if snap.next >= snap.bytes.len() {
            match snap.later.pop_front() {
                Some((base, bytes)) => {
                    snap.base = base;
                    snap.bytes = bytes;
                    snap.next = 0;
                }
                None => {
                    flags |= SYNC_COMPLETE;
                    s.snapshot = None;
                }
            }
        }
        Some(DataFrame {
            mblk_id: s.remote_id,
            addr,
            flags,
            payload,
        })
    }

    /// Progressive receiving (between streaming peers only): every received frame is
    /// committed into the block at once, and [`Mblk::incomplete_from`] tells from which
    /// address on the snapshot still arriving may change it. This relies on the sender's
    /// frames of one snapshot ascending in address (ours and the C library's
    /// `ioc_make_data_frame` both walk the snapshot forward), so every byte below the end of
    /// the last frame is final. Off by default: a block is then changed only by complete
    /// snapshots (spec §2.6).
    pub fn set_progressive(&mut self, on: bool) {
        self.progressive = on;
    }

    /// In progressive mode, while a snapshot is arriving: the first address its remaining
    /// frames may still change (bytes below it are final). `None` when no snapshot is
    /// incomplete, and always outside progressive mode.
    pub fn incomplete_from(&self) -> Option<usize> {
        self.targets.iter().filter_map(|t| t.incomplete_from).min()
    }

    /// Applies a received data frame from `conn`. Returns the committed range of the block
    /// when the frame completed a snapshot that changed something (in progressive mode: when
    /// the frame changed something), `None` otherwise.
    pub fn apply_frame(
        &mut self,
        conn: ConnId,
        addr: usize,
        flags: u8,
        payload: &[u8],
    ) -> Result<Option<Range<usize>>, MblkError> {
        let size = self.data.len();
        if addr > size {
            return Err(MblkError::AddressBeyondBlock {
                block: self.name.clone(),
                addr,
                size,
            });
        }
        if self.flags & MBLK_STATIC != 0 {
            return Ok(None);
        }
        let Some(t) = self.targets.iter_mut().find(|t| t.conn == conn) else {
            return Ok(None);
        };
        let dst = t.newdata.get_mut(addr..).unwrap_or(&mut []);
        let covered =
            compress::decode_into(payload, flags, dst).map_err(|source| MblkError::Payload {
                block: self.name.clone(),
                addr,
                source,
            })?;
        if covered == 0 {
            return Ok(None);
        }
        t.pending = Some(merge(t.pending, addr, addr + covered - 1));
        let complete = flags & SYNC_COMPLETE != 0;
        let (first, last) = if self.progressive {
            t.incomplete_from = (!complete).then_some(addr + covered);
            if complete {
                t.pending = None;
            }
            (addr, addr + covered - 1)
        } else {
            if !complete {
                return Ok(None);
            }
            let Some(range) = t.pending.take() else {
                return Ok(None);
            };
            range
        };
        let Some((first, last)) = shrink(&t.newdata, &self.data, first, last) else {
            return Ok(None);
        };
        if let (Some(dst), Some(src)) =
            (self.data.get_mut(first..=last), t.newdata.get(first..=last))
        {
            dst.copy_from_slice(src);
        }
        // A block we also send (relay) forwards what it received.
        self.invalidate(first, last);
        Ok(Some(first..last + 1))
    }

    /// True when this block is sent on some connection whose peer id is known.
    pub fn remote_id_known(&self) -> bool {
        self.sources.iter().any(|s| s.remote_id != 0)
    }

    /// The peer's id for this block on `conn`, if bound.
    pub fn remote_id(&self, conn: ConnId) -> Option<u32> {
        self.sources
            .iter()
            .find(|s| s.conn == conn)
            .map(|s| s.remote_id)
            .or_else(|| {
                self.targets
                    .iter()
                    .find(|t| t.conn == conn)
                    .map(|t| t.remote_id)
            })
    }
}

#[cfg(test)]
mod tests;
