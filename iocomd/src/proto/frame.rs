//! IOCOM frame and ACK codec (transport spec §3, §4.1).
//!
//! After the socket handshake (or the serial connect sequence) each direction of a connection is
//! a sequence of *elements*: ACKs (`FF` + 24-bit little-endian receive counter on sockets, 16-bit on
//! serial) and frames. A socket frame is
//! `nr flags size_lo size_hi [extra_flags] mblk_id(1|2|4) addr(1|2|4) payload`; a serial frame is
//! `nr crc_lo crc_hi flags size [extra_flags] mblk_id addr payload` (the CRC lives in
//! [`super::serial`]).
//!
//! [`Frame::encode`] always writes the shortest field encoding, exactly as the C sender does, so
//! re-encoding a frame decoded from a C peer gives the identical bytes. [`FrameDecoder`] takes
//! arbitrary byte chunks and yields [`Element`]s, checking frame numbers and the receive frame size.

use thiserror::Error;

/// Largest frame (header + payload) a PC build of the C library receives on a socket.
pub const SOCKET_FRAME_SIZE: u32 = 1392;
/// Frame size of microcontroller builds of the C library.
pub const MICROCONTROLLER_FRAME_SIZE: u32 = 464;
/// Frame size on serial links.
pub const SERIAL_FRAME_SIZE: u32 = 96;
/// Smallest frame size a peer may announce.
pub const MIN_FRAME_SIZE: u32 = 96;
/// Largest frame size a peer may announce.
pub const MAX_FRAME_SIZE: u32 = 16384;
/// Highest frame number; after it numbering continues at 1.
pub const MAX_FRAME_NR: u8 = 200;
/// First byte of an ACK element.
pub const ACK_MARK: u8 = 0xFF;
/// ACK length on sockets.
pub const SOCKET_ACK_LEN: usize = 4;
/// ACK length on serial links.
pub const SERIAL_ACK_LEN: usize = 3;

/// The frame number that follows `nr`: 0, 1, ..., 200, then 1 again.
pub const fn next_frame_nr(nr: u8) -> u8 {
    if nr >= MAX_FRAME_NR { 1 } else { nr + 1 }
}

/// Which header layout a byte stream uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Framing {
    /// TCP or TLS: no CRC, 2-byte data size, 4-byte ACKs with a 24-bit counter.
    Socket,
    /// Serial line: CRC-16/MODBUS in bytes 1–2, 1-byte data size, 3-byte ACKs (16-bit counter).
    Serial,
}

impl Framing {
    /// Length of an ACK element.
    pub const fn ack_len(self) -> usize {
        match self {
            Framing::Socket => SOCKET_ACK_LEN,
            Framing::Serial => SERIAL_ACK_LEN,
        }
    }

    /// Mask applied to byte counters (24 bits on sockets, 16 on serial).
    pub const fn counter_mask(self) -> u32 {
        match self {
            Framing::Socket => 0x00FF_FFFF,
            Framing::Serial => 0xFFFF,
        }
    }

    /// Offset of the main flags byte.
    const fn flags_offset(self) -> usize {
        match self {
            Framing::Socket => 1,
            Framing::Serial => 3,
        }
    }

    /// Bytes before the optional extra flags byte: nr, [crc], flags, data size.
    const fn fixed_len(self) -> usize {
        match self {
            Framing::Socket => 4,
            Framing::Serial => 5,
        }
    }

    /// Largest payload the data size field can express.
    pub const fn max_data_size(self) -> usize {
        match self {
            Framing::Socket => u16::MAX as usize,
            Framing::Serial => u8::MAX as usize,
        }
    }

    /// Received bytes left unacknowledged before an ACK is due (spec §4.2 item 2).
    pub const fn unacknowledged_limit(self) -> u32 {
        match self {
            Framing::Socket => SOCKET_UNACKNOWLEDGED_LIMIT,
            Framing::Serial => SERIAL_UNACKNOWLEDGED_LIMIT,
        }
    }

    /// Sending window for frames, with `frame_size` the negotiated send frame size (§4.3):
    /// 44 frames on sockets, a fixed 200 bytes on serial (the C receiver's 256-byte buffer).
    pub const fn max_in_air(self, frame_size: u32) -> u32 {
        match self {
            Framing::Socket => 44 * frame_size,
            Framing::Serial => SERIAL_MAX_IN_AIR,
        }
    }

    /// Window for ACKs caused by the unacknowledged limit (§4.3): larger than the frame window,
    /// so that an end whose own window is full can still acknowledge.
    pub const fn max_ack_in_air(self, frame_size: u32) -> u32 {
        match self {
            Framing::Socket => 44 * frame_size + SOCKET_UNACKNOWLEDGED_LIMIT + 5 * 4,
            Framing::Serial => SERIAL_MAX_ACK_IN_AIR,
        }
    }
}

/// Socket ACK threshold in bytes (`IOC_SOCKET_UNACKNOGLEDGED_LIMIT`).
pub const SOCKET_UNACKNOWLEDGED_LIMIT: u32 = 500;
/// Sending window between two streaming peers (both announced [`MAX_FRAME_SIZE`] on a socket,
/// see [`is_streaming`]): 4 MiB, a bandwidth-delay product of 80 MB/s at 50 ms. It stays far
/// below the 24-bit counter range (16 MiB) in which `in_air` is computed.
pub const STREAMING_MAX_IN_AIR: u32 = 4 << 20;

/// True when a connection's peers recognise each other as streaming peers (iocomd and
/// iocomctl): a socket connection whose negotiated send frame size is [`MAX_FRAME_SIZE`], i.e.
/// both ends announced the protocol's largest receive frame. Stock C builds announce 1392 (PC),
/// 464 (microcontroller) or 96 (serial), so they never are; a C build compiled with 16 KiB
/// frames would be, which is harmless: a C receiver does not police the sender's window, and
/// the other uses of the mark (ring size, early `tod_tail`) follow the spec's rules.
pub const fn is_streaming(framing: Framing, send_frame_size: u32) -> bool {
    matches!(framing, Framing::Socket) && send_frame_size == MAX_FRAME_SIZE
}
/// Serial ACK threshold in bytes (`IOC_SERIAL_UNACKNOGLEDGED_LIMIT`).
pub const SERIAL_UNACKNOWLEDGED_LIMIT: u32 = 40;
/// Serial frame window: 256 − 1 − 40 − 5 × 3 (`IOC_SERIAL_MAX_IN_AIR`).
pub const SERIAL_MAX_IN_AIR: u32 =
    256 - 1 - SERIAL_UNACKNOWLEDGED_LIMIT - 5 * SERIAL_ACK_LEN as u32;
/// Serial ACK window (`IOC_SERIAL_MAX_ACK_IN_AIR`).
pub const SERIAL_MAX_ACK_IN_AIR: u32 = 255;

/// Header flag bits (the raw byte) and their meaning.
pub mod flags {
    /// Payload is delta encoded (data frames).
    pub const DELTA_ENCODED: u8 = 0x01;
    /// Payload is compressed (data frames).
    pub const COMPRESSED: u8 = 0x02;
    /// Address field has two bytes.
    pub const ADDR_TWO_BYTES: u8 = 0x04;
    /// Memory block id field has two bytes.
    pub const MBLK_TWO_BYTES: u8 = 0x08;
    /// Last frame of a synchronisation (data frames).
    pub const SYNC_COMPLETE: u8 = 0x10;
    /// The payload is a system frame.
    pub const SYSTEM_FRAME: u8 = 0x20;
    /// An extra flags byte follows the data size.
    pub const EXTRA_FLAGS: u8 = 0x80;
    /// Extra flags: address field has four bytes.
    pub const EXTRA_ADDR_FOUR_BYTES: u8 = 0x01;
    /// Extra flags: memory block id field has four bytes.
    pub const EXTRA_MBLK_FOUR_BYTES: u8 = 0x02;
    /// Extra flags: always set by the sender, so the byte is never zero.
    pub const EXTRA_NO_ZERO: u8 = 0x80;
    /// The bits that carry meaning beyond the field sizes.
    pub const SEMANTIC_MASK: u8 = DELTA_ENCODED | COMPRESSED | SYNC_COMPLETE | SYSTEM_FRAME;
}

/// The meaningful flag bits of a frame: delta, compressed, sync complete and system.
///
/// Field-size bits are not stored: they follow from the values and are recomputed on encoding.
/// The unused bit `0x40` is ignored on receipt, as the C receiver does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FrameFlags(u8);

impl FrameFlags {
    /// No flags: an uncompressed, non-delta data frame that is not the end of a sync.
    pub const NONE: FrameFlags = FrameFlags(0);
    /// Flags of a system frame.
    pub const SYSTEM: FrameFlags = FrameFlags(flags::SYSTEM_FRAME);

    /// Keeps only the semantic bits of `raw` (see [`flags::SEMANTIC_MASK`]).
    pub const fn from_bits(raw: u8) -> Self {
        FrameFlags(raw & flags::SEMANTIC_MASK)
    }
    /// Flags of a data frame with the given properties.
    pub const fn data(delta: bool, compressed: bool, sync_complete: bool) -> Self {
        let mut b = 0;
        if delta {
            b |= flags::DELTA_ENCODED;
        }
        if compressed {
            b |= flags::COMPRESSED;
        }
        if sync_complete {
            b |= flags::SYNC_COMPLETE;
        }
        FrameFlags(b)
    }
    /// The semantic bits as a byte.
    pub const fn bits(self) -> u8 {
        self.0
    }
    /// Payload is delta encoded.
    pub const fn delta(self) -> bool {
        self.0 & flags::DELTA_ENCODED != 0
    }
    /// Payload is compressed.
    pub const fn compressed(self) -> bool {
        self.0 & flags::COMPRESSED != 0
    }
    /// Last frame of a synchronisation.
    pub const fn sync_complete(self) -> bool {
        self.0 & flags::SYNC_COMPLETE != 0
    }
    /// A system frame (memory block info, authentication, remove request).
    pub const fn system(self) -> bool {
        self.0 & flags::SYSTEM_FRAME != 0
    }
}

/// One IOCOM frame: header fields and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Frame number, 0..=200.
    pub nr: u8,
    /// Semantic flags.
    pub flags: FrameFlags,
    /// Memory block id field (for system frames: frame size, sender's id or id count).
    pub mblk_id: u32,
    /// Address field: start offset in the block (0 in system frames).
    pub addr: u32,
    /// Payload bytes.
    pub payload: Vec<u8>,
}

/// Why a frame cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// The payload does not fit the data size field.
    #[error("payload of {len} bytes does not fit the {framing:?} data size field (max {max})")]
    PayloadTooLong {
        /// Payload length.
        len: usize,
        /// Largest allowed.
        max: usize,
        /// Stream kind.
        framing: Framing,
    },
    /// The frame number is above 200.
    #[error("frame number {0} is above 200")]
    BadFrameNr(u8),
}

/// Number of bytes the shortest encoding of `v` needs (1, 2 or 4).
const fn uint_width(v: u32) -> usize {
    if v <= 0xFF {
        1
    } else if v <= 0xFFFF {
        2
    } else {
        4
    }
}

fn push_uint(out: &mut Vec<u8>, v: u32, width: usize) {
    let bytes = v.to_le_bytes();
    out.extend(bytes.iter().take(width));
}

impl Frame {
    /// Header length of this frame in the given framing.
    pub fn header_len(&self, framing: Framing) -> usize {
        header_len_for(framing, self.mblk_id, self.addr)
    }

    /// Total encoded length (header + payload).
    pub fn encoded_len(&self, framing: Framing) -> usize {
        self.header_len(framing) + self.payload.len()
    }

    /// The raw flags byte this frame is written with.
    pub fn raw_flags(&self) -> (u8, Option<u8>) {
        raw_flags_for(self.flags, self.mblk_id, self.addr)
    }

    /// Appends the encoded frame to `out` (for serial framing including the CRC).
    pub fn encode(&self, framing: Framing, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if self.nr > MAX_FRAME_NR {
            return Err(EncodeError::BadFrameNr(self.nr));
        }
        let len = self.payload.len();
        if len > framing.max_data_size() {
            return Err(EncodeError::PayloadTooLong {
                len,
                max: framing.max_data_size(),
                framing,
            });
        }
        let start = out.len();
        let (raw, extra) = self.raw_flags();
        out.push(self.nr);
        match framing {
            Framing::Socket => {
                out.push(raw);
                // len <= u16::MAX was checked above.
                out.extend_from_slice(&(len as u16).to_le_bytes());
            }
            Framing::Serial => {
                out.extend_from_slice(&[0, 0, raw, len as u8]);
            }
        }
        if let Some(e) = extra {
            out.push(e);
        }
        push_uint(out, self.mblk_id, uint_width(self.mblk_id));
        push_uint(out, self.addr, uint_width(self.addr));
        out.extend_from_slice(&self.payload);
        if framing == Framing::Serial
            && let Some(b) = out.get_mut(start..)
        {
            super::serial::seal_crc(b);
        }
        Ok(())
    }

    /// The encoded bytes in a new vector.
    pub fn to_bytes(&self, framing: Framing) -> Result<Vec<u8>, EncodeError> {
        let mut v = Vec::with_capacity(self.encoded_len(framing));
        self.encode(framing, &mut v)?;
        Ok(v)
    }
}

/// Header length for a frame with these id and address values.
pub fn header_len_for(framing: Framing, mblk_id: u32, addr: u32) -> usize {
    let extra = usize::from(mblk_id > 0xFFFF || addr > 0xFFFF);
    framing.fixed_len() + extra + uint_width(mblk_id) + uint_width(addr)
}

fn raw_flags_for(f: FrameFlags, mblk_id: u32, addr: u32) -> (u8, Option<u8>) {
    let mut raw = f.bits();
    let mut extra = 0u8;
    match uint_width(mblk_id) {
        1 => {}
        2 => raw |= flags::MBLK_TWO_BYTES,
        _ => extra |= flags::EXTRA_MBLK_FOUR_BYTES,
    }
    match uint_width(addr) {
        1 => {}
        2 => raw |= flags::ADDR_TWO_BYTES,
        _ => extra |= flags::EXTRA_ADDR_FOUR_BYTES,
    }
    if extra != 0 {
        (raw | flags::EXTRA_FLAGS, Some(extra | flags::EXTRA_NO_ZERO))
    } else {
        (raw, None)
    }
}

/// Appends an ACK carrying receive counter `count` (masked to 24 / 16 bits).
pub fn encode_ack(framing: Framing, count: u32, out: &mut Vec<u8>) {
    out.push(ACK_MARK);
    let b = count.to_le_bytes();
    out.extend(b.iter().take(framing.ack_len() - 1));
}

/// One element of the byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Element {
    /// An ACK / keep-alive with the peer's receive counter.
    Ack(u32),
    /// A frame.
    Frame(Frame),
}

/// Why the byte stream cannot be decoded. Every variant is fatal for the connection.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// A frame started with the wrong frame number.
    #[error("frame number {got}, expected {expected}")]
    FrameNr {
        /// The number the receiver expected.
        expected: u8,
        /// The number received.
        got: u8,
    },
    /// Header plus payload exceed the receive frame size.
    #[error("frame of {len} bytes exceeds the receive frame size {max}")]
    TooLarge {
        /// Whole frame length announced by the header.
        len: usize,
        /// Receive frame size.
        max: usize,
    },
    /// The extra flags byte lacks the always-set bit 0x80.
    #[error("extra flags byte {0:#04x} lacks bit 0x80")]
    BadExtraFlags(u8),
    /// Serial CRC mismatch.
    #[error("serial frame CRC {got:#06x}, computed {computed:#06x}")]
    Crc {
        /// CRC carried by the frame.
        got: u16,
        /// CRC computed over the frame.
        computed: u16,
    },
}

/// Incremental decoder for one direction of a connection, after the handshake.
///
/// Push any chunks with [`FrameDecoder::push`], then call [`FrameDecoder::next_element`] until
/// it returns `Ok(None)`. After an error the decoder stays failed and returns the same error.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    framing: Framing,
    max_frame_size: usize,
    expected_nr: u8,
    buf: Vec<u8>,
    pos: usize,
    failed: Option<FrameError>,
}

impl FrameDecoder {
    /// A decoder accepting frames up to `max_frame_size` bytes, expecting frame number 0 first.
    pub fn new(framing: Framing, max_frame_size: u32) -> Self {
        Self {
            framing,
            max_frame_size: max_frame_size as usize,
            expected_nr: 0,
            buf: Vec::new(),
            pos: 0,
            failed: None,
        }
    }

    /// The framing this decoder parses.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// Number of the next frame the decoder will accept.
    pub fn expected_nr(&self) -> u8 {
        self.expected_nr
    }

    /// Bytes pushed but not yet returned as elements (a partial element).
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 4096 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// [`FrameDecoder::push`] and [`FrameDecoder::next_element`] in one, without copying:
    /// while no partial element is buffered, elements are decoded straight out of `input`
    /// (which is advanced past them); the first incomplete one is buffered with everything
    /// after it. Call until it returns `Ok(None)`; the elements and errors are the same as
    /// pushing `input` and calling [`FrameDecoder::next_element`].
    pub fn next_from(&mut self, input: &mut &[u8]) -> Result<Option<(Element, usize)>, FrameError> {
        if self.failed.is_some() || self.buffered() > 0 {
            let rest = std::mem::take(input);
            if !rest.is_empty() {
                self.push(rest);
            }
            return self.next_element();
        }
        match decode_element(self.framing, input, self.expected_nr, self.max_frame_size) {
            Ok(Some((el, len))) => {
                *input = input.get(len..).unwrap_or_default();
                if let Element::Frame(f) = &el {
                    self.expected_nr = next_frame_nr(f.nr);
                }
                Ok(Some((el, len)))
            }
            Ok(None) => {
                let rest = std::mem::take(input);
                if !rest.is_empty() {
                    self.push(rest);
                }
                Ok(None)
            }
            Err(e) => {
                self.failed = Some(e.clone());
                Err(e)
            }
        }
    }

    /// The next complete element with its length on the wire, `None` if more bytes are needed.
    pub fn next_element(&mut self) -> Result<Option<(Element, usize)>, FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        match decode_element(self.framing, rest, self.expected_nr, self.max_frame_size) {
            Ok(Some((el, len))) => {
                self.pos += len;
                if let Element::Frame(f) = &el {
                    self.expected_nr = next_frame_nr(f.nr);
                }
                Ok(Some((el, len)))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                self.failed = Some(e.clone());
                Err(e)
            }
        }
    }
}

fn read_uint(b: &[u8], at: usize, width: usize) -> Option<u32> {
    let s = b.get(at..at + width)?;
    let mut v = [0u8; 4];
    v.get_mut(..width)?.copy_from_slice(s);
    Some(u32::from_le_bytes(v))
}

/// Decodes one element from the start of `b`.
///
/// Returns `Ok(None)` when `b` holds only part of an element. `expected_nr` is checked as soon as
/// the first byte is known, and the frame length as soon as the header is complete, so bad input
/// fails without waiting for more bytes.
pub fn decode_element(
    framing: Framing,
    b: &[u8],
    expected_nr: u8,
    max_frame_size: usize,
) -> Result<Option<(Element, usize)>, FrameError> {
    let Some(&first) = b.first() else {
        return Ok(None);
    };
    if first == ACK_MARK {
        let n = framing.ack_len();
        let Some(v) = read_uint(b, 1, n - 1) else {
            return Ok(None);
        };
        return Ok(Some((Element::Ack(v), n)));
    }
    if first != expected_nr {
        return Err(FrameError::FrameNr {
            expected: expected_nr,
            got: first,
        });
    }
    let fixed = framing.fixed_len();
    let Some(&raw) = b.get(framing.flags_offset()) else {
        return Ok(None);
    };
    let data_size = match framing {
        Framing::Socket => match (b.get(2), b.get(3)) {
            (Some(&lo), Some(&hi)) => usize::from(u16::from_le_bytes([lo, hi])),
            _ => return Ok(None),
        },
        Framing::Serial => match b.get(4) {
            Some(&s) => usize::from(s),
            None => return Ok(None),
        },
    };
    let mut extra = 0u8;
    let mut hdr = fixed;
    if raw & flags::EXTRA_FLAGS != 0 {
        let Some(&e) = b.get(fixed) else {
            return Ok(None);
        };
        if e & flags::EXTRA_NO_ZERO == 0 {
            return Err(FrameError::BadExtraFlags(e));
        }
        extra = e;
        hdr += 1;
    }
    let id_w = field_width(
        raw,
        extra,
        flags::MBLK_TWO_BYTES,
        flags::EXTRA_MBLK_FOUR_BYTES,
    );
    let addr_w = field_width(
        raw,
        extra,
        flags::ADDR_TWO_BYTES,
        flags::EXTRA_ADDR_FOUR_BYTES,
    );
    let total = hdr + id_w + addr_w + data_size;
    if total > max_frame_size {
        return Err(FrameError::TooLarge {
            len: total,
            max: max_frame_size,
        });
    }
    let Some(frame_bytes) = b.get(..total) else {
        return Ok(None);
    };
    if framing == Framing::Serial {
        super::serial::check_crc(frame_bytes)?;
    }
    let (Some(mblk_id), Some(addr)) = (
        read_uint(frame_bytes, hdr, id_w),
        read_uint(frame_bytes, hdr + id_w, addr_w),
    ) else {
        return Ok(None);
    };
    let payload = frame_bytes
        .get(hdr + id_w + addr_w..)
        .unwrap_or_default()
        .to_vec();
    let frame = Frame {
        nr: first,
        flags: FrameFlags::from_bits(raw),
        mblk_id,
        addr,
        payload,
    };
    Ok(Some((Element::Frame(frame), total)))
}

fn field_width(raw: u8, extra: u8, two: u8, four: u8) -> usize {
    if extra & four != 0 {
        4
    } else if raw & two != 0 {
        2
    } else {
        1
    }
}

#[cfg(test)]
mod tests;
