//! Signals: typed values with a state byte at fixed addresses of a memory block
//! (spec data-and-streams.md §3), and the address layout from signal JSON (§3.3), identical
//! to the reference code generator `signals_to_c.py` and the controller's `ioc_dyn_root.c`.

use crate::proto::mblk::{Mblk, MblkError};
use thiserror::Error;

mod layout;
pub use layout::{BlockLayout, LayoutError, layout_from_json, layout_from_peer_json};

/// State bit: boolean value / "value is non-zero".
pub const STATE_BOOLEAN_VALUE: u8 = 0x01;
/// State bit: the value is valid (the peer is connected).
pub const STATE_CONNECTED: u8 = 0x02;
/// State bit: orange (warning).
pub const STATE_ORANGE: u8 = 0x04;
/// State bit: yellow; orange|yellow = red.
pub const STATE_YELLOW: u8 = 0x08;

/// Signal types (eosal `osalTypeId`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalType {
    Boolean,
    Char,
    UChar,
    Short,
    UShort,
    Int,
    UInt,
    Int64,
    Long,
    Float,
    Double,
    Dec01,
    Dec001,
    Str,
    Object,
    Undef,
    Pointer,
}

impl SignalType {
    /// Parses a JSON type name.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "boolean" => Self::Boolean,
            "char" => Self::Char,
            "uchar" => Self::UChar,
            "short" => Self::Short,
            "ushort" => Self::UShort,
            "int" => Self::Int,
            "uint" => Self::UInt,
            "int64" => Self::Int64,
            "long" => Self::Long,
            "float" => Self::Float,
            "double" => Self::Double,
            "dec01" => Self::Dec01,
            "dec001" => Self::Dec001,
            "str" => Self::Str,
            "object" => Self::Object,
            "undef" => Self::Undef,
            "pointer" => Self::Pointer,
            _ => return None,
        })
    }

    /// The JSON type name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Boolean => "boolean",
            Self::Char => "char",
            Self::UChar => "uchar",
            Self::Short => "short",
            Self::UShort => "ushort",
            Self::Int => "int",
            Self::UInt => "uint",
            Self::Int64 => "int64",
            Self::Long => "long",
            Self::Float => "float",
            Self::Double => "double",
            Self::Dec01 => "dec01",
            Self::Dec001 => "dec001",
            Self::Str => "str",
            Self::Object => "object",
            Self::Undef => "undef",
            Self::Pointer => "pointer",
        }
    }

    /// Bytes per value element after the state byte (0 for booleans and `pointer`, as the
    /// code generator counts it).
    pub fn value_size(self) -> usize {
        match self {
            Self::Char | Self::UChar | Self::Str => 1,
            Self::Short | Self::UShort | Self::Dec01 | Self::Dec001 => 2,
            Self::Int | Self::UInt | Self::Float => 4,
            Self::Int64 | Self::Long | Self::Double => 8,
            Self::Boolean | Self::Object | Self::Undef | Self::Pointer => 0,
        }
    }

    fn is_signed(self) -> bool {
        matches!(
            self,
            Self::Char
                | Self::Short
                | Self::Int
                | Self::Int64
                | Self::Long
                | Self::Dec01
                | Self::Dec001
        )
    }
}

/// A signal's place in a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    /// Signal name.
    pub name: String,
    /// Address of the state byte.
    pub addr: usize,
    /// Number of elements (`array`, at least 1).
    pub n: usize,
    /// Element type.
    pub ty: SignalType,
}

/// Errors using a signal on a block.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SignalError {
    /// The signal does not fit the block.
    #[error("signal {signal} at {addr} ({len} bytes) does not fit block {block} of {size} bytes")]
    OutOfBlock {
        signal: String,
        block: String,
        addr: usize,
        len: usize,
        size: usize,
    },
    /// The operation does not suit the signal's type or element count.
    #[error("signal {signal}: {what}")]
    Unsupported { signal: String, what: &'static str },
    /// Writing to the block failed.
    #[error(transparent)]
    Block(#[from] MblkError),
}

impl Signal {
    /// A signal of `ty` with `n` elements at `addr`.
    pub fn new(name: &str, addr: usize, n: usize, ty: SignalType) -> Self {
        Self {
            name: name.to_owned(),
            addr,
            n: n.max(1),
            ty,
        }
    }

    /// Bytes the signal occupies, state byte included (C `ioc_nro_signal_bytes`).
    pub fn nbytes(&self) -> usize {
        match self.ty {
            SignalType::Str => self.n.saturating_add(1),
            SignalType::Boolean if self.n > 1 => 1 + self.n.div_ceil(8),
            SignalType::Boolean => 1,
            ty => self.n.saturating_mul(ty.value_size()).saturating_add(1),
        }
    }

    fn bytes<'a>(&self, block: &'a Mblk) -> Result<&'a [u8], SignalError> {
        block
            .data()
            .get(self.addr..self.addr.saturating_add(self.nbytes()))
            .ok_or_else(|| self.out_of(block))
    }

    /// True when the whole signal lies inside `block`.
    pub fn fits(&self, block: &Mblk) -> bool {
        self.addr
            .checked_add(self.nbytes())
            .is_some_and(|end| end <= block.size())
    }

    fn out_of(&self, block: &Mblk) -> SignalError {
        SignalError::OutOfBlock {
            signal: self.name.clone(),
            block: block.name().to_owned(),
            addr: self.addr,
            len: self.nbytes(),
            size: block.size(),
        }
    }

    fn unsupported(&self, what: &'static str) -> SignalError {
        SignalError::Unsupported {
            signal: self.name.clone(),
            what,
        }
    }

    /// The state byte, with `CONNECTED` cleared when nothing delivers this block to us
    /// (C `ioc_get_ext` with the target-buffer check).
    pub fn state(&self, block: &Mblk) -> Result<u8, SignalError> {
        let state = *self
            .bytes(block)?
            .first()
            .ok_or_else(|| self.out_of(block))?;
        Ok(if block.has_target() {
            state
        } else {
            state & !STATE_CONNECTED
        })
    }

    /// The state byte as stored, without the target-buffer check (C `ioc_get`).
    pub fn raw_state(&self, block: &Mblk) -> Result<u8, SignalError> {
        self.bytes(block)?
            .first()
            .copied()
            .ok_or_else(|| self.out_of(block))
    }

    /// Reads an integer scalar (element 0) and the checked state byte.
    pub fn get_int(&self, block: &Mblk) -> Result<(i64, u8), SignalError> {
        let state = self.state(block)?;
        let b = self.bytes(block)?;
        let size = self.ty.value_size();
        let value = match self.ty {
            SignalType::Boolean => i64::from(state & STATE_BOOLEAN_VALUE),
            SignalType::Float | SignalType::Double | SignalType::Str => {
                return Err(self.unsupported("not an integer type"));
            }
            _ if size == 0 => return Err(self.unsupported("type has no value")),
            _ => {
                let raw = b.get(1..1 + size).ok_or_else(|| self.out_of(block))?;
                let mut le = [0u8; 8];
                le.get_mut(..size)
                    .ok_or_else(|| self.unsupported("size"))?
                    .copy_from_slice(raw);
                let u = u64::from_le_bytes(le);
                if self.ty.is_signed() {
                    let shift = 64 - 8 * size as u32;
                    ((u << shift) as i64) >> shift
                } else {
                    u as i64
                }
            }
        };
        Ok((value, state))
    }

    /// Writes an integer scalar like `ioc_set`: state = `CONNECTED` with bit 0 = (value ≠ 0).
    /// The value is truncated to the type's width, as C does.
    pub fn set_int(&self, block: &mut Mblk, value: i64) -> Result<(), SignalError> {
        self.set_int_state(block, value, STATE_CONNECTED)
    }

    /// [`Signal::set_int`] with explicit state bits (bit 0 is still forced).
    pub fn set_int_state(&self, block: &mut Mblk, value: i64, bits: u8) -> Result<(), SignalError> {
        self.bytes(block)?;
        let state = (bits & !STATE_BOOLEAN_VALUE) | u8::from(value != 0);
        let size = match self.ty {
            SignalType::Boolean => 0,
            SignalType::Float => return self.set_double_state(block, value as f64, bits),
            SignalType::Double => return self.set_double_state(block, value as f64, bits),
            SignalType::Str => return Err(self.unsupported("string signal")),
            ty if ty.value_size() == 0 => return Err(self.unsupported("type has no value")),
            ty => ty.value_size(),
        };
        let mut buf = Vec::with_capacity(size + 1);
        buf.push(state);
        buf.extend(value.to_le_bytes().into_iter().take(size));
        block.write(self.addr, &buf)?;
        Ok(())
    }

    /// Writes a float/double scalar (state bit 0 = raw bit pattern ≠ 0, like C).
    pub fn set_double_state(
        &self,
        block: &mut Mblk,
        value: f64,
        bits: u8,
    ) -> Result<(), SignalError> {
        self.bytes(block)?;
        let state = (bits & !STATE_BOOLEAN_VALUE) | u8::from(value.to_bits() != 0);
        let mut buf = vec![state];
        match self.ty {
            SignalType::Float => buf.extend_from_slice(&(value as f32).to_le_bytes()),
            SignalType::Double => buf.extend_from_slice(&value.to_le_bytes()),
            _ => return self.set_int_state(block, value as i64, bits),
        }
        block.write(self.addr, &buf)?;
        Ok(())
    }

    /// Reads a float/double scalar and the checked state byte.
    pub fn get_double(&self, block: &Mblk) -> Result<(f64, u8), SignalError> {
        let b = self.bytes(block)?;
        let state = self.state(block)?;
        let v = match self.ty {
            SignalType::Float => {
                let r: [u8; 4] = b
                    .get(1..5)
                    .and_then(|s| s.try_into().ok())
                    .ok_or_else(|| self.out_of(block))?;
                f64::from(f32::from_le_bytes(r))
            }
            SignalType::Double => {
                let r: [u8; 8] = b
                    .get(1..9)
                    .and_then(|s| s.try_into().ok())
                    .ok_or_else(|| self.out_of(block))?;
                f64::from_le_bytes(r)
            }
            _ => self.get_int(block)?.0 as f64,
        };
        Ok((v, state))
    }

    /// Writes bytes into a `uchar`/`char` array at element `offset` like `ioc_move_array`:
    /// the state byte becomes `CONNECTED` (rewritten, invalidated only if it changed).
    pub fn write_bytes(
        &self,
        block: &mut Mblk,
        offset: usize,
        data: &[u8],
    ) -> Result<(), SignalError> {
        if !matches!(self.ty, SignalType::UChar | SignalType::Char) {
            return Err(self.unsupported("not a byte array"));
        }
        if offset.checked_add(data.len()).is_none_or(|e| e > self.n) {
            return Err(self.unsupported("write past the end of the array"));
        }
        let at = self
            .addr
            .checked_add(1 + offset)
            .ok_or_else(|| self.out_of(block))?;
        if self.raw_state(block)? != STATE_CONNECTED {
            block.write(self.addr, &[STATE_CONNECTED])?;
        }
        block.write(at, data)?;
        Ok(())
    }

    /// The bytes of a byte array, elements `offset..offset+len`.
    pub fn read_bytes<'a>(
        &self,
        block: &'a Mblk,
        offset: usize,
        len: usize,
    ) -> Result<&'a [u8], SignalError> {
        if offset.checked_add(len).is_none_or(|e| e > self.n) {
            return Err(self.unsupported("read past the end of the array"));
        }
        let start = self
            .addr
            .checked_add(1 + offset)
            .ok_or_else(|| self.out_of(block))?;
        block
            .data()
            .get(start..start.saturating_add(len))
            .ok_or_else(|| self.out_of(block))
    }

    /// Writes integer array elements from `offset` like `ioc_move_array`: state byte
    /// `CONNECTED`, element `k` at `addr + 1 + k·size` (little endian, truncated to the type).
    pub fn set_array_int(
        &self,
        block: &mut Mblk,
        offset: usize,
        values: &[i64],
    ) -> Result<(), SignalError> {
        let size = match self.ty {
            SignalType::Boolean | SignalType::Str | SignalType::Float | SignalType::Double => {
                return Err(self.unsupported("not an integer array"));
            }
            ty if ty.value_size() == 0 => return Err(self.unsupported("type has no value")),
            ty => ty.value_size(),
        };
        if offset.checked_add(values.len()).is_none_or(|e| e > self.n) {
            return Err(self.unsupported("write past the end of the array"));
        }
        let at = offset
            .checked_mul(size)
            .and_then(|o| self.addr.checked_add(1 + o))
            .ok_or_else(|| self.out_of(block))?;
        let bytes: Vec<u8> = values
            .iter()
            .flat_map(|v| v.to_le_bytes().into_iter().take(size))
            .collect();
        if self.raw_state(block)? != STATE_CONNECTED {
            block.write(self.addr, &[STATE_CONNECTED])?;
        }
        block.write(at, &bytes)?;
        Ok(())
    }

    /// Reads `count` integer array elements from `offset` (sign-extended for signed types).
    pub fn get_array_int(
        &self,
        block: &Mblk,
        offset: usize,
        count: usize,
    ) -> Result<Vec<i64>, SignalError> {
        let size = self.ty.value_size();
        if size == 0
            || matches!(
                self.ty,
                SignalType::Float | SignalType::Double | SignalType::Str
            )
        {
            return Err(self.unsupported("not an integer array"));
        }
        if offset.checked_add(count).is_none_or(|e| e > self.n) {
            return Err(self.unsupported("read past the end of the array"));
        }
        let start = self.addr.saturating_add(1 + offset * size);
        let raw = block
            .data()
            .get(start..start.saturating_add(count * size))
            .ok_or_else(|| self.out_of(block))?;
        let shift = 64 - 8 * size as u32;
        Ok(raw
            .chunks(size)
            .map(|c| {
                let mut le = [0u8; 8];
                for (d, s) in le.iter_mut().zip(c) {
                    *d = *s;
                }
                let u = u64::from_le_bytes(le);
                if self.ty.is_signed() {
                    ((u << shift) as i64) >> shift
                } else {
                    u as i64
                }
            })
            .collect())
    }

    /// Writes a boolean array (n > 1): bit 0 of the state byte = element 0, then `ceil(n/8)`
    /// bytes, element `k` in bit `k mod 8` of byte `k/8`. All `n` elements at once.
    pub fn set_bools(&self, block: &mut Mblk, values: &[bool]) -> Result<(), SignalError> {
        if self.ty != SignalType::Boolean || self.n < 2 || values.len() != self.n {
            return Err(self.unsupported("needs all elements of a boolean array"));
        }
        let mut bytes = vec![0u8; 1 + self.n.div_ceil(8)];
        for (k, v) in values.iter().enumerate() {
            if let Some(b) = bytes.get_mut(1 + k / 8) {
                *b |= u8::from(*v) << (k % 8);
            }
        }
        if let (Some(state), Some(first)) = (bytes.first_mut(), values.first()) {
            *state = STATE_CONNECTED | u8::from(*first);
        }
        block.write(self.addr, &bytes)?;
        Ok(())
    }

    /// Reads a boolean array.
    pub fn get_bools(&self, block: &Mblk) -> Result<Vec<bool>, SignalError> {
        if self.ty != SignalType::Boolean || self.n < 2 {
            return Err(self.unsupported("not a boolean array"));
        }
        let b = self.bytes(block)?;
        Ok((0..self.n)
            .map(|k| b.get(1 + k / 8).is_some_and(|x| x & (1 << (k % 8)) != 0))
            .collect())
    }

    /// Writes a string like `ioc_move_str`: state `CONNECTED`, the bytes plus a NUL, cut to
    /// `n` bytes; later bytes are left as they are.
    pub fn set_str(&self, block: &mut Mblk, s: &str) -> Result<(), SignalError> {
        if self.ty != SignalType::Str {
            return Err(self.unsupported("not a string"));
        }
        self.bytes(block)?;
        let mut buf = vec![STATE_CONNECTED];
        buf.extend(s.bytes().chain(std::iter::once(0)).take(self.n));
        block.write(self.addr, &buf)?;
        Ok(())
    }

    /// Reads a string (up to the first NUL or `n` bytes; invalid UTF-8 is replaced).
    pub fn get_str(&self, block: &Mblk) -> Result<(String, u8), SignalError> {
        if self.ty != SignalType::Str {
            return Err(self.unsupported("not a string"));
        }
        let b = self.bytes(block)?.get(1..).unwrap_or(&[]);
        let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
        let s = String::from_utf8_lossy(b.get(..end).unwrap_or(&[])).into_owned();
        Ok((s, self.state(block)?))
    }
}

#[cfg(test)]
mod tests;
