//! Signals: typed values with a state byte at fixed addresses of a memory block
//! (spec data-and-streams.md §3), and the address layout from signal JSON (§3.3), identical
//! to the reference code generator `signals_to_c.py` and the controller's `ioc_dyn_root.c`.

use crate::proto::mblk::{MIN_MBLK_SIZE, Mblk, MblkError};
use serde_json::Value;
use thiserror::Error;

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

/// The layout of one block from signal JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockLayout {
    /// Block name (`exp`, `conf_imp`, ...).
    pub name: String,
    /// Signals in JSON order with their addresses.
    pub signals: Vec<Signal>,
    /// Block size: at least 24, else the largest address reached.
    pub size: usize,
}

impl BlockLayout {
    /// Finds a signal by name.
    pub fn signal(&self, name: &str) -> Option<&Signal> {
        self.signals.iter().find(|s| s.name == name)
    }
}

/// Errors in signal JSON.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LayoutError {
    /// A required key is missing or has the wrong JSON type.
    #[error("signal JSON: {0}")]
    Malformed(String),
    /// An unknown type name.
    #[error("signal JSON: signal {signal} has unknown type {ty:?}")]
    UnknownType { signal: String, ty: String },
}

fn as_usize(v: &Value, what: &str) -> Result<usize, LayoutError> {
    if let Some(n) = v.as_u64() {
        return usize::try_from(n).map_err(|_| LayoutError::Malformed(format!("{what} too large")));
    }
    v.as_str()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| LayoutError::Malformed(format!("{what} is not a non-negative integer")))
}

/// Lays out every block of a signal JSON document (`{"mblk":[...]}`) like the reference
/// code generator: addresses run from 0, the type sticks until changed (default `ushort`),
/// an explicit `addr` moves the position.
pub fn layout_from_json(doc: &Value) -> Result<Vec<BlockLayout>, LayoutError> {
    let mblks = doc
        .get("mblk")
        .and_then(Value::as_array)
        .ok_or_else(|| LayoutError::Malformed("no \"mblk\" array".into()))?;
    let mut out = Vec::new();
    for mb in mblks {
        let name = mb
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| LayoutError::Malformed("block without a name".into()))?;
        let mut addr = 0usize;
        let mut max = 0usize;
        let mut ty = SignalType::UShort;
        let mut signals = Vec::new();
        let groups = mb
            .get("groups")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for g in groups {
            let sigs = g
                .get("signals")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            for s in sigs {
                let sname = s.get("name").and_then(Value::as_str).ok_or_else(|| {
                    LayoutError::Malformed(format!("signal without a name in {name}"))
                })?;
                if let Some(t) = s.get("type") {
                    let t = t.as_str().unwrap_or_default();
                    ty = SignalType::from_name(t).ok_or_else(|| LayoutError::UnknownType {
                        signal: sname.to_owned(),
                        ty: t.to_owned(),
                    })?;
                }
                if let Some(a) = s.get("addr") {
                    addr = as_usize(a, "addr")?;
                }
                let n = match s.get("array") {
                    Some(a) => as_usize(a, "array")?,
                    None => 1,
                };
                let sig = Signal::new(sname, addr, n, ty);
                addr = addr
                    .checked_add(sig.nbytes())
                    .ok_or_else(|| LayoutError::Malformed("address overflow".into()))?;
                max = max.max(addr);
                signals.push(sig);
            }
        }
        out.push(BlockLayout {
            name: name.to_owned(),
            signals,
            size: max.max(MIN_MBLK_SIZE),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::mblk::MBLK_DOWN;
    use serde_json::json;

    /// iocom `config/signals/device_conf_signals.json`, with the ring size as a parameter.
    pub(crate) fn conf_json(ring: usize) -> Value {
        json!({"mblk": [
            {"name": "conf_exp", "groups": [{"name": "conf_transfer", "signals": [
                {"name": "tod_state", "type": "char"},
                {"name": "tod_err", "type": "uchar"},
                {"name": "tod_tail", "type": "int"},
                {"name": "frd_state", "type": "char"},
                {"name": "frd_err", "type": "uchar"},
                {"name": "frd_cs", "type": "ushort"},
                {"name": "frd_head", "type": "int"},
                {"name": "frd_buf", "type": "uchar", "array": 257}
            ]}]},
            {"name": "conf_imp", "groups": [{"name": "conf_transfer", "signals": [
                {"name": "tod_cmd", "type": "char"},
                {"name": "tod_select", "type": "char"},
                {"name": "tod_cs", "type": "ushort"},
                {"name": "tod_head", "type": "int"},
                {"name": "tod_buf", "type": "uchar", "array": ring},
                {"name": "frd_cmd", "type": "char"},
                {"name": "frd_select", "type": "uchar"},
                {"name": "frd_tail", "type": "int"}
            ]}]}
        ]})
    }

    fn addrs(l: &BlockLayout) -> Vec<(&str, usize)> {
        l.signals
            .iter()
            .map(|s| (s.name.as_str(), s.addr))
            .collect()
    }

    #[test]
    fn reference_conf_layout_257() {
        let l = layout_from_json(&conf_json(257)).unwrap();
        assert_eq!(
            addrs(&l[1]),
            [
                ("tod_cmd", 0),
                ("tod_select", 2),
                ("tod_cs", 4),
                ("tod_head", 7),
                ("tod_buf", 12),
                ("frd_cmd", 270),
                ("frd_select", 272),
                ("frd_tail", 274)
            ]
        );
        assert_eq!(l[1].size, 279);
        assert_eq!(
            addrs(&l[0]),
            [
                ("tod_state", 0),
                ("tod_err", 2),
                ("tod_tail", 4),
                ("frd_state", 9),
                ("frd_err", 11),
                ("frd_cs", 13),
                ("frd_head", 16),
                ("frd_buf", 21)
            ]
        );
        assert_eq!(l[0].size, 279);
    }

    #[test]
    fn conf_layout_shifts_with_a_bigger_ring() {
        let l = layout_from_json(&conf_json(1025)).unwrap();
        assert_eq!(
            addrs(&l[1])[4..],
            [
                ("tod_buf", 12),
                ("frd_cmd", 1038),
                ("frd_select", 1040),
                ("frd_tail", 1042)
            ]
        );
        assert_eq!(l[1].size, 1047);
        let big = 256 * 1024 + 1;
        let l = layout_from_json(&conf_json(big)).unwrap();
        let imp = &l[1];
        assert_eq!(imp.signal("frd_cmd").unwrap().addr, 12 + 1 + big);
        assert_eq!(imp.size, 12 + 1 + big + 2 + 2 + 5);
        assert_eq!(l[0].size, 279, "conf_exp does not depend on tod_buf");
    }

    #[test]
    fn type_sticks_default_is_ushort_and_addr_moves() {
        let doc = json!({"mblk":[{"name":"exp","groups":[{"signals":[
            {"name":"a"}, {"name":"b","type":"boolean","array":9}, {"name":"c"},
            {"name":"d","type":"str","array":6}, {"name":"e","addr":40,"type":"double"}
        ]}]}]});
        let l = &layout_from_json(&doc).unwrap()[0];
        assert_eq!(
            addrs(l),
            [("a", 0), ("b", 3), ("c", 6), ("d", 7), ("e", 40)]
        );
        assert_eq!(l.size, 49);
        let bad =
            json!({"mblk":[{"name":"x","groups":[{"signals":[{"name":"a","type":"nope"}]}]}]});
        assert!(matches!(
            layout_from_json(&bad),
            Err(LayoutError::UnknownType { .. })
        ));
    }

    #[test]
    fn scalar_state_byte_rules() {
        let mut b = Mblk::new("imp", 8, MBLK_DOWN, 24);
        b.add_target(1, 9);
        let a = Signal::new("a", 0, 1, SignalType::UShort);
        a.set_int(&mut b, 0).unwrap();
        assert_eq!(&b.data()[..3], [2, 0, 0]);
        a.set_int(&mut b, 1000).unwrap();
        assert_eq!(&b.data()[..3], [3, 0xE8, 3]);
        assert_eq!(a.get_int(&b).unwrap(), (1000, 3));
        let c = Signal::new("c", 3, 1, SignalType::Char);
        c.set_int(&mut b, -3).unwrap();
        assert_eq!(c.get_int(&b).unwrap(), (-3, 3));
        let f = Signal::new("f", 5, 1, SignalType::Float);
        f.set_double_state(&mut b, 1.5, STATE_CONNECTED).unwrap();
        assert_eq!(&b.data()[5..10], [3, 0, 0, 0xC0, 0x3F]);
        assert_eq!(f.get_double(&b).unwrap(), (1.5, 3));
        let s = Signal::new("s", 10, 4, SignalType::Str);
        s.set_str(&mut b, "hello").unwrap();
        assert_eq!(&b.data()[10..15], b"\x02hell");
        s.set_str(&mut b, "o").unwrap();
        assert_eq!(&b.data()[10..15], b"\x02o\0ll");
        assert_eq!(s.get_str(&b).unwrap(), ("o".to_owned(), 2));
        let arr = Signal::new("arr", 16, 4, SignalType::UChar);
        arr.write_bytes(&mut b, 1, &[7, 8]).unwrap();
        assert_eq!(&b.data()[16..21], [2, 0, 7, 8, 0]);
        assert!(arr.write_bytes(&mut b, 3, &[1, 2]).is_err());
        assert_eq!(arr.read_bytes(&b, 1, 2).unwrap(), [7, 8]);
        let mut b = Mblk::new("imp", 8, MBLK_DOWN, 24);
        let ints = Signal::new("ints", 0, 3, SignalType::Short);
        ints.set_array_int(&mut b, 1, &[-2, 300]).unwrap();
        assert_eq!(&b.data()[..7], [2, 0, 0, 0xFE, 0xFF, 0x2C, 0x01]);
        assert_eq!(ints.get_array_int(&b, 0, 3).unwrap(), [0, -2, 300]);
        assert!(ints.set_array_int(&mut b, 2, &[1, 2]).is_err());
        let bools = Signal::new("bools", 0, 10, SignalType::Boolean);
        let v: Vec<bool> = (0..10).map(|k| k % 3 == 0).collect();
        bools.set_bools(&mut b, &v).unwrap();
        assert_eq!(&b.data()[..3], [3, 0b0100_1001, 0b10]);
        assert_eq!(bools.get_bools(&b).unwrap(), v);
        let past = Signal::new("past", 22, 1, SignalType::Int);
        assert!(matches!(
            past.set_int(&mut b, 1),
            Err(SignalError::OutOfBlock { .. })
        ));
    }

    #[test]
    fn connected_is_cleared_without_a_target_buffer() {
        let mut b = Mblk::new("conf_imp", 8, MBLK_DOWN, 24);
        let a = Signal::new("tod_cmd", 0, 1, SignalType::Char);
        a.set_int(&mut b, 1).unwrap();
        assert_eq!(a.get_int(&b).unwrap(), (1, 1));
        assert_eq!(a.raw_state(&b).unwrap(), 3);
        b.add_target(4, 10);
        assert_eq!(a.get_int(&b).unwrap(), (1, 3));
    }
}
