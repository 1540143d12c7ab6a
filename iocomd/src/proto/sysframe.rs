//! System frames (transport spec §5): memory block info (type 1), remove memory block request
//! (type 3), and the dispatch of received system frames including authentication (type 2, in
//! [`super::auth`]). Also the shared field encodings of §3.10 and our own block id allocator.
//!
//! Every decoder checks each field against the frame's payload length and the C receiver's string
//! limits; a violation is a [`SysFrameError`], which closes the connection.

use super::auth::AuthFrame;
use super::frame::{Frame, FrameFlags};
use thiserror::Error;

/// System frame type byte: memory block info.
pub const SYSFRAME_MBLK_INFO: u8 = 1;
/// System frame type byte: authentication.
pub const SYSFRAME_AUTH: u8 = 2;
/// System frame type byte: remove memory block request.
pub const SYSFRAME_REMOVE_MBLK: u8 = 3;

/// Longest device or memory block name a PC C peer accepts (buffer `IOC_NAME_SZ` = 16).
pub const MAX_NAME_LEN: usize = 15;
/// Longest network name (buffer 24).
pub const MAX_NETWORK_NAME_LEN: usize = 23;
/// Most ids in one remove request that a C receiver accepts.
pub const MAX_REMOVE_IDS: usize = 16;
/// First id we give our own memory blocks.
pub const MIN_MBLK_ID: u32 = 8;
/// Last id we give our own memory blocks (C peers store peer ids in a signed 16-bit field).
pub const MAX_MBLK_ID: u32 = 32767;

/// Memory block flag bits (the 16-bit block flag word of spec §5.2).
pub mod mblk_flags {
    /// Data flows down (controller → device).
    pub const DOWN: u16 = 0x0001;
    /// Data flows up (device → controller).
    pub const UP: u16 = 0x0002;
    /// Supports bidirectional transfer.
    pub const BIDIRECTIONAL: u16 = 0x0008;
    /// Created dynamically.
    pub const DYNAMIC: u16 = 0x0010;
    /// May grow.
    pub const ALLOW_RESIZE: u16 = 0x0020;
    /// Constant contents, sent raw.
    pub const STATIC: u16 = 0x0040;
    /// Only over cloud connections.
    pub const CLOUD_ONLY: u16 = 0x0080;
    /// Never over cloud connections.
    pub const NO_CLOUD: u16 = 0x0100;
    /// Never announced downwards.
    pub const FLOOR: u16 = 0x0200;
}

/// Info flag bits of a memory block info frame.
mod info_flags {
    pub const D_2BYTES: u8 = 0x02;
    pub const D_4BYTES: u8 = 0x04;
    pub const N_2BYTES: u8 = 0x08;
    pub const N_4BYTES: u8 = 0x10;
    pub const F_2BYTES: u8 = 0x20;
    pub const HAS_DEVICE_NAME: u8 = 0x40;
    pub const HAS_MBLK_NAME: u8 = 0x80;
}

/// Why a system frame is rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SysFrameError {
    /// The frame is not a system frame or has no type byte.
    #[error("not a system frame")]
    NotSystem,
    /// The payload ends before field `field`.
    #[error("system frame truncated in field {field}")]
    Truncated {
        /// The field being read.
        field: &'static str,
    },
    /// Bytes are left after the last field.
    #[error("{0} unexpected bytes after the last field")]
    TrailingBytes(usize),
    /// A string is longer than the receiver's buffer allows.
    #[error("field {field} has {len} bytes, at most {max} allowed")]
    StringTooLong {
        /// Field name.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A string is not UTF-8.
    #[error("field {field} is not UTF-8")]
    NotUtf8 {
        /// Field name.
        field: &'static str,
    },
    /// A remove request with no ids or too many, or a count that does not match the payload.
    #[error("remove request with {count} ids (header says {header})")]
    BadRemoveCount {
        /// Ids found in the payload.
        count: usize,
        /// Count in the header.
        header: u32,
    },
    /// An id in a remove request is negative or does not fit 32 bits.
    #[error("remove request id {0} out of range")]
    BadRemoveId(i64),
    /// A malformed packed integer.
    #[error("malformed packed integer")]
    BadIntser,
    /// The wrong system frame type for this decoder.
    #[error("system frame type {got}, expected {expected}")]
    WrongType {
        /// Type byte found.
        got: u8,
        /// Type byte wanted.
        expected: u8,
    },
    /// A value is out of the range the wire or the peer allows (encoding side).
    #[error("field {field} out of range")]
    OutOfRange {
        /// Field name.
        field: &'static str,
    },
}

/// Bounds-checked reader over a system frame payload.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Self {
        Self { b, pos: 0 }
    }
    pub(crate) fn bytes(
        &mut self,
        n: usize,
        field: &'static str,
    ) -> Result<&'a [u8], SysFrameError> {
        let s = self
            .b
            .get(self.pos..self.pos.saturating_add(n))
            .ok_or(SysFrameError::Truncated { field })?;
        self.pos += n;
        Ok(s)
    }
    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, SysFrameError> {
        self.bytes(1, field)
            .map(|s| s.first().copied().unwrap_or(0))
    }
    /// Little-endian unsigned of `width` (1, 2 or 4) bytes.
    pub(crate) fn uint(&mut self, width: usize, field: &'static str) -> Result<u32, SysFrameError> {
        let s = self.bytes(width, field)?;
        let mut v = [0u8; 4];
        if let Some(d) = v.get_mut(..s.len()) {
            d.copy_from_slice(s);
        }
        Ok(u32::from_le_bytes(v))
    }
    /// Length-prefixed string of at most `max` bytes.
    pub(crate) fn string(
        &mut self,
        max: usize,
        field: &'static str,
    ) -> Result<String, SysFrameError> {
        let n = usize::from(self.u8(field)?);
        if n > max {
            return Err(SysFrameError::StringTooLong { field, len: n, max });
        }
        let s = self.bytes(n, field)?;
        String::from_utf8(s.to_vec()).map_err(|_| SysFrameError::NotUtf8 { field })
    }
    pub(crate) fn finish(self) -> Result<(), SysFrameError> {
        match self.b.len().saturating_sub(self.pos) {
            0 => Ok(()),
            n => Err(SysFrameError::TrailingBytes(n)),
        }
    }
}

/// Width (1, 2 or 4) of the shortest encoding of `v`.
pub(crate) const fn uint_width(v: u32) -> usize {
    if v <= 0xFF {
        1
    } else if v <= 0xFFFF {
        2
    } else {
        4
    }
}

pub(crate) fn push_uint(out: &mut Vec<u8>, v: u32) {
    out.extend(v.to_le_bytes().iter().take(uint_width(v)));
}

pub(crate) fn push_string(
    out: &mut Vec<u8>,
    s: &str,
    max: usize,
    field: &'static str,
) -> Result<(), SysFrameError> {
    let len = s.len();
    if len > max {
        return Err(SysFrameError::StringTooLong { field, len, max });
    }
    // len <= max <= 255.
    out.push(len as u8);
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// Appends `v` in eosal's packed integer format (osal_intser, spec §3.10).
pub fn write_intser(out: &mut Vec<u8>, v: i64) {
    let mag = v.unsigned_abs();
    let mut first = (mag & 7) as u8;
    if v < 0 {
        first |= 0x08;
    }
    let rest = mag >> 3;
    let n = (64 - rest.leading_zeros()).div_ceil(8) as u8;
    out.push(first | (n << 4));
    out.extend(rest.to_le_bytes().iter().take(usize::from(n)));
}

/// Decodes one packed integer (osal_intser) from the start of `b`: the value and the number of
/// bytes it used.
pub fn decode_intser(b: &[u8]) -> Result<(i64, usize), SysFrameError> {
    let mut r = Reader::new(b);
    let v = read_intser(&mut r)?;
    Ok((v, r.pos))
}

/// Reads one packed integer (osal_intser) from `r`.
pub(crate) fn read_intser(r: &mut Reader<'_>) -> Result<i64, SysFrameError> {
    let first = r.u8("intser")?;
    let n = usize::from(first >> 4);
    if n > 8 {
        return Err(SysFrameError::BadIntser);
    }
    let bytes = r.bytes(n, "intser")?;
    let mut v = [0u8; 8];
    if let Some(d) = v.get_mut(..n) {
        d.copy_from_slice(bytes);
    }
    let rest = u64::from_le_bytes(v);
    if rest >> 60 != 0 {
        return Err(SysFrameError::BadIntser);
    }
    let mag = (rest << 3) | u64::from(first & 7);
    let mag = i64::try_from(mag).map_err(|_| SysFrameError::BadIntser)?;
    Ok(if first & 0x08 != 0 { -mag } else { mag })
}

/// The binding data of one memory block, as carried by a memory block info frame (spec §5.2).
///
/// `mblk_id` is the *sender's* id of the block; data frames to that block are addressed with it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MblkInfo {
    /// Sender's id of the block (header id field).
    pub mblk_id: u32,
    /// Device name, e.g. `"gina"`; empty means "not sent" (then the network name is not sent either).
    pub device_name: String,
    /// Device number (9000 = automatic, 8999 = "to the automatically numbered device").
    pub device_nr: u32,
    /// Network name, e.g. `"iocafenet"`; only sent with a device name.
    pub network_name: String,
    /// Block name, e.g. `"exp"`; empty means "not sent".
    pub mblk_name: String,
    /// Block size in bytes.
    pub size: u32,
    /// Block flags ([`mblk_flags`]).
    pub flags: u16,
}

impl MblkInfo {
    /// The system frame payload (type byte first).
    pub fn encode_payload(&self) -> Result<Vec<u8>, SysFrameError> {
        let mut iflags = 0u8;
        match uint_width(self.device_nr) {
            1 => {}
            2 => iflags |= info_flags::D_2BYTES,
            _ => iflags |= info_flags::D_4BYTES,
        }
        match uint_width(self.size) {
            1 => {}
            2 => iflags |= info_flags::N_2BYTES,
            _ => iflags |= info_flags::N_4BYTES,
        }
        if self.flags > 0xFF {
            iflags |= info_flags::F_2BYTES;
        }
        // The device and network names travel together behind one flag; a network name with an
        // empty device name is carried as an empty string (what the decoder accepts, too).
        let has_dev = !self.device_name.is_empty() || !self.network_name.is_empty();
        if has_dev {
            iflags |= info_flags::HAS_DEVICE_NAME;
        }
        if !self.mblk_name.is_empty() {
            iflags |= info_flags::HAS_MBLK_NAME;
        }
        let mut out = vec![SYSFRAME_MBLK_INFO, iflags];
        push_uint(&mut out, self.device_nr);
        push_uint(&mut out, self.size);
        out.push((self.flags & 0xFF) as u8);
        if self.flags > 0xFF {
            out.push((self.flags >> 8) as u8);
        }
        if has_dev {
            push_string(&mut out, &self.device_name, MAX_NAME_LEN, "device name")?;
            push_string(
                &mut out,
                &self.network_name,
                MAX_NETWORK_NAME_LEN,
                "network name",
            )?;
        }
        if !self.mblk_name.is_empty() {
            push_string(&mut out, &self.mblk_name, MAX_NAME_LEN, "block name")?;
        }
        Ok(out)
    }

    /// The complete frame with number `nr`.
    pub fn to_frame(&self, nr: u8) -> Result<Frame, SysFrameError> {
        Ok(Frame {
            nr,
            flags: FrameFlags::SYSTEM,
            mblk_id: self.mblk_id,
            addr: 0,
            payload: self.encode_payload()?,
        })
    }

    /// Decodes a memory block info frame.
    pub fn from_frame(frame: &Frame) -> Result<Self, SysFrameError> {
        let mut r = system_payload(frame, SYSFRAME_MBLK_INFO)?;
        let iflags = r.u8("info flags")?;
        let dw = width(iflags, info_flags::D_2BYTES, info_flags::D_4BYTES);
        let device_nr = r.uint(dw, "device number")?;
        let nw = width(iflags, info_flags::N_2BYTES, info_flags::N_4BYTES);
        let size = r.uint(nw, "size")?;
        let fw = if iflags & info_flags::F_2BYTES != 0 {
            2
        } else {
            1
        };
        let flags = r.uint(fw, "block flags")? as u16;
        let (device_name, network_name) = if iflags & info_flags::HAS_DEVICE_NAME != 0 {
            (
                r.string(MAX_NAME_LEN, "device name")?,
                r.string(MAX_NETWORK_NAME_LEN, "network name")?,
            )
        } else {
            (String::new(), String::new())
        };
        let mblk_name = if iflags & info_flags::HAS_MBLK_NAME != 0 {
            r.string(MAX_NAME_LEN, "block name")?
        } else {
            String::new()
        };
        r.finish()?;
        Ok(Self {
            mblk_id: frame.mblk_id,
            device_name,
            device_nr,
            network_name,
            mblk_name,
            size,
            flags,
        })
    }
}

fn width(f: u8, two: u8, four: u8) -> usize {
    if f & four != 0 {
        4
    } else if f & two != 0 {
        2
    } else {
        1
    }
}

/// Checks that `frame` is a system frame of type `ty` and returns a reader after the type byte.
pub(crate) fn system_payload(frame: &Frame, ty: u8) -> Result<Reader<'_>, SysFrameError> {
    if !frame.flags.system() {
        return Err(SysFrameError::NotSystem);
    }
    let mut r = Reader::new(&frame.payload);
    let got = r.u8("type").map_err(|_| SysFrameError::NotSystem)?;
    if got != ty {
        return Err(SysFrameError::WrongType { got, expected: ty });
    }
    Ok(r)
}

/// A remove memory block request (spec §5.4): the *receiver's* ids of blocks to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoveMblk {
    /// 1..=16 ids.
    pub ids: Vec<u32>,
}

impl RemoveMblk {
    /// The complete frame with number `nr`.
    pub fn to_frame(&self, nr: u8) -> Result<Frame, SysFrameError> {
        let n = self.ids.len();
        if n == 0 || n > MAX_REMOVE_IDS {
            return Err(SysFrameError::BadRemoveCount {
                count: n,
                header: n as u32,
            });
        }
        let mut payload = vec![SYSFRAME_REMOVE_MBLK];
        for &id in &self.ids {
            write_intser(&mut payload, i64::from(id));
        }
        Ok(Frame {
            nr,
            flags: FrameFlags::SYSTEM,
            mblk_id: n as u32,
            addr: 0,
            payload,
        })
    }

    /// Decodes a remove request; the header count must be 1..=16 and match the payload.
    pub fn from_frame(frame: &Frame) -> Result<Self, SysFrameError> {
        let mut r = system_payload(frame, SYSFRAME_REMOVE_MBLK)?;
        let header = frame.mblk_id;
        if header == 0 || header as usize > MAX_REMOVE_IDS {
            return Err(SysFrameError::BadRemoveCount { count: 0, header });
        }
        let mut ids = Vec::new();
        for _ in 0..header {
            let v = read_intser(&mut r)?;
            let id = u32::try_from(v).map_err(|_| SysFrameError::BadRemoveId(v))?;
            ids.push(id);
        }
        r.finish()?;
        Ok(Self { ids })
    }
}

/// A decoded system frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemFrame {
    /// Memory block info (type 1).
    MblkInfo(MblkInfo),
    /// Authentication (type 2).
    Auth(AuthFrame),
    /// Remove memory block request (type 3).
    RemoveMblk(RemoveMblk),
    /// A type this implementation does not know; ignored like the C receiver does.
    Unknown(u8),
}

impl SystemFrame {
    /// Decodes any system frame.
    pub fn from_frame(frame: &Frame) -> Result<Self, SysFrameError> {
        if !frame.flags.system() {
            return Err(SysFrameError::NotSystem);
        }
        match frame.payload.first().copied() {
            Some(SYSFRAME_MBLK_INFO) => MblkInfo::from_frame(frame).map(Self::MblkInfo),
            Some(SYSFRAME_AUTH) => AuthFrame::from_frame(frame).map(Self::Auth),
            Some(SYSFRAME_REMOVE_MBLK) => RemoveMblk::from_frame(frame).map(Self::RemoveMblk),
            Some(t) => Ok(Self::Unknown(t)),
            None => Err(SysFrameError::NotSystem),
        }
    }
}

/// Hands out our own memory block ids in 8..=32767, reusing released ids.
#[derive(Debug, Clone)]
pub struct MblkIdAllocator {
    next: u32,
    free: Vec<u32>,
}

impl Default for MblkIdAllocator {
    fn default() -> Self {
        Self {
            next: MIN_MBLK_ID,
            free: Vec::new(),
        }
    }
}

impl MblkIdAllocator {
    /// A fresh allocator starting at 8.
    pub fn new() -> Self {
        Self::default()
    }
    /// The next id (lowest released id first), or `None` when all 32760 ids are in use.
    pub fn allocate(&mut self) -> Option<u32> {
        if let Some(id) = self.free.pop() {
            return Some(id);
        }
        if self.next > MAX_MBLK_ID {
            return None;
        }
        let id = self.next;
        self.next += 1;
        Some(id)
    }
    /// Returns an id for reuse. Ids not handed out by this allocator are ignored.
    pub fn release(&mut self, id: u32) {
        if (MIN_MBLK_ID..self.next).contains(&id) && !self.free.contains(&id) {
            self.free.push(id);
            // Keep the lowest id at the end so it is reused first.
            self.free.sort_unstable_by(|a, b| b.cmp(a));
        }
    }
}

#[cfg(test)]
mod tests;
