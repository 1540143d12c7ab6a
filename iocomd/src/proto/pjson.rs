//! Packed binary JSON (eosal `osal_compress_json` format, spec data-and-streams.md §4.2).
//!
//! `intser(dict_size) | dictionary | intser(content_size) | content | CRC-16 (LE)`.
//! Strings live in the dictionary (NUL-terminated, referenced by byte offset + 40) unless
//! they are in the static dictionary (index 0..38). Content items are intser codes
//! `(tag << 4) | element`. The document's outer `{}` is not encoded.

use crate::proto::crc::crc16;
use thiserror::Error;

/// A JSON value as the packed format knows it (object member order is kept).
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    /// `{...}` with members in order.
    Object(Vec<(String, Json)>),
    /// `[...]`.
    Array(Vec<Json>),
    /// A non-empty string.
    Str(String),
    /// An integer.
    Int(i64),
    /// A number that is not an integer (single precision on the wire).
    Float(f32),
    /// `""` or `null`.
    Empty,
}

const STATIC_DICT: [&str; 39] = [
    "-",
    "groups",
    "signals",
    "name",
    "array",
    "type",
    "addr",
    "bank",
    "unit",
    "min",
    "max",
    "digs",
    "mblk",
    "pflag",
    "boolean",
    "char",
    "uchar",
    "short",
    "ushort",
    "int",
    "uint",
    "long",
    "float",
    "double",
    "str",
    "exp",
    "imp",
    "*",
    "network",
    "publish",
    "connect",
    "flags",
    "transport",
    "parameters",
    "device_nr",
    "network_name",
    "password",
    "gateway",
    "subnet",
];
const DICT_BASE: i64 = 40;
const MAX_DEPTH: usize = 64;

const START_BLOCK: i64 = 0;
const END_BLOCK: i64 = 1;
const VALUE_EMPTY: i64 = 2;
const VALUE_STRING: i64 = 3;
const INTEGER_ZERO: i64 = 4;
const INTEGER_ONE: i64 = 5;
const VALUE_INTEGER: i64 = 6;
const VALUE_FLOAT: i64 = 7;
const START_ARRAY: i64 = 8;
const END_ARRAY: i64 = 9;
const VALUE_NULL: i64 = 10;
const VALUE_TRUE: i64 = 11;
const VALUE_FALSE: i64 = 12;

/// Why a packed JSON document was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PjsonError {
    /// The data ended inside an item.
    #[error("packed JSON: truncated at byte {0}")]
    Truncated(usize),
    /// The trailing CRC does not match.
    #[error("packed JSON: checksum {found:#06x}, expected {expected:#06x}")]
    Checksum { found: u16, expected: u16 },
    /// Something other than the expected structure.
    #[error("packed JSON: {0}")]
    Malformed(&'static str),
}

/// Appends `x` in eosal's packed integer format (`osal_intser_writer`).
pub fn write_intser(out: &mut Vec<u8>, x: i64) {
    let (neg, mut mag) = (x < 0, x.unsigned_abs());
    if mag < 8 {
        out.push(mag as u8 | if neg { 0x08 } else { 0 });
        return;
    }
    let first = out.len();
    out.push((mag & 7) as u8 | if neg { 0x08 } else { 0 });
    mag >>= 3;
    let mut n = 0u8;
    loop {
        out.push(mag as u8);
        n += 1;
        mag >>= 8;
        if mag == 0 {
            break;
        }
    }
    if let Some(b) = out.get_mut(first) {
        *b |= n << 4;
    }
}

/// Reads a packed integer at `*pos`; advances `*pos`.
pub fn read_intser(data: &[u8], pos: &mut usize) -> Result<i64, PjsonError> {
    let c = *data.get(*pos).ok_or(PjsonError::Truncated(*pos))?;
    let count = usize::from(c >> 4);
    if count == 0 {
        *pos += 1;
        let v = i64::from(c & 7);
        return Ok(match (c & 8 != 0, v) {
            (true, 0) => i64::MIN,
            (true, v) => -v,
            (false, v) => v,
        });
    }
    if count > 8 {
        return Err(PjsonError::Malformed("integer longer than 8 bytes"));
    }
    let bytes = data
        .get(*pos + 1..*pos + 1 + count)
        .ok_or(PjsonError::Truncated(*pos))?;
    let mut y = u64::from(c & 7);
    let mut shift = 3u32;
    for b in bytes {
        y |= u64::from(*b).checked_shl(shift).unwrap_or(0);
        shift += 8;
    }
    *pos += 1 + count;
    let v = y as i64;
    Ok(if c & 8 != 0 { v.wrapping_neg() } else { v })
}

/// Splits a float like `osal_float2ints`: odd mantissa with sign, unbiased exponent.
fn float_to_ints(x: f32) -> (i64, i64) {
    let bits = x.to_bits();
    if bits == 0 {
        return (0, 0);
    }
    let neg = bits & 0x8000_0000 != 0;
    let bits = bits & 0x7FFF_FFFF;
    let e = i64::from(bits >> 23) - 127;
    let mut m = (bits & 0x007F_FFFF) | 0x0080_0000;
    while m & 1 == 0 {
        m >>= 1;
    }
    let m = i64::from(m);
    (if neg { -m } else { m }, e)
}

/// Rebuilds a float like `osal_ints2float`.
fn ints_to_float(m: i64, e: i64) -> f32 {
    if m == 0 {
        return 0.0;
    }
    let neg = m < 0;
    let mut m = m.unsigned_abs();
    let mut e = e;
    if e < -126 {
        e = -126;
        m = 0x80_0000;
    }
    if e > 127 {
        e = 127;
        m = 0xFF_FFFF;
    }
    while m >= 0x100_0000 {
        m >>= 1;
    }
    while m < 0x80_0000 {
        m <<= 1;
    }
    let bits =
        (m & 0x7F_FFFF) as u32 | (((e + 127) as u32) << 23) | if neg { 0x8000_0000 } else { 0 };
    f32::from_bits(bits)
}

struct Encoder {
    dict: Vec<u8>,
    offsets: Vec<(String, usize)>,
    content: Vec<u8>,
}

impl Encoder {
    fn string_ref(&mut self, s: &str) -> i64 {
        if let Some(ix) = STATIC_DICT.iter().position(|d| *d == s) {
            return ix as i64;
        }
        if let Some((_, off)) = self.offsets.iter().find(|(k, _)| k == s) {
            return *off as i64 + DICT_BASE;
        }
        let off = self.dict.len();
        self.dict.extend_from_slice(s.as_bytes());
        self.dict.push(0);
        self.offsets.push((s.to_owned(), off));
        off as i64 + DICT_BASE
    }

    fn code(&mut self, tag: i64, element: i64) {
        write_intser(&mut self.content, (tag << 4) | element);
    }

    fn value(&mut self, tag: i64, v: &Json) {
        match v {
            Json::Object(members) => {
                self.code(tag, START_BLOCK);
                self.members(members);
                write_intser(&mut self.content, END_BLOCK);
            }
            Json::Array(items) => {
                self.code(tag, START_ARRAY);
                for item in items {
                    self.value(0, item);
                }
                write_intser(&mut self.content, END_ARRAY);
            }
            Json::Str(s) if s.is_empty() => self.code(tag, VALUE_EMPTY),
            Json::Str(s) => {
                self.code(tag, VALUE_STRING);
                let r = self.string_ref(s);
                write_intser(&mut self.content, r);
            }
            Json::Empty => self.code(tag, VALUE_EMPTY),
            Json::Int(0) => self.code(tag, INTEGER_ZERO),
            Json::Int(1) => self.code(tag, INTEGER_ONE),
            Json::Int(i) => {
                self.code(tag, VALUE_INTEGER);
                write_intser(&mut self.content, *i);
            }
            Json::Float(f) if *f == 0.0 => self.code(tag, INTEGER_ZERO),
            Json::Float(f) if *f == 1.0 => self.code(tag, INTEGER_ONE),
            Json::Float(f) => {
                self.code(tag, VALUE_FLOAT);
                let (m, e) = float_to_ints(*f);
                write_intser(&mut self.content, m);
                if m != 0 {
                    write_intser(&mut self.content, e);
                }
            }
        }
    }

    fn members(&mut self, members: &[(String, Json)]) {
        for (k, v) in members {
            let tag = self.string_ref(k);
            self.value(tag, v);
        }
    }
}

/// Encodes the members of a root object. `skip` lists keys left out (the build drops
/// `"title"`).
pub fn encode(root: &[(String, Json)], skip: &[&str]) -> Vec<u8> {
    let mut enc = Encoder {
        dict: Vec::new(),
        offsets: Vec::new(),
        content: Vec::new(),
    };
    let filtered = strip(root, skip);
    enc.members(&filtered);
    let mut out = Vec::with_capacity(enc.dict.len() + enc.content.len() + 8);
    write_intser(&mut out, enc.dict.len() as i64);
    out.extend_from_slice(&enc.dict);
    write_intser(&mut out, enc.content.len() as i64);
    out.extend_from_slice(&enc.content);
    let crc = crc16(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn strip(members: &[(String, Json)], skip: &[&str]) -> Vec<(String, Json)> {
    members
        .iter()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), strip_value(v, skip)))
        .collect()
}

fn strip_value(v: &Json, skip: &[&str]) -> Json {
    match v {
        Json::Object(m) => Json::Object(strip(m, skip)),
        Json::Array(a) => Json::Array(a.iter().map(|x| strip_value(x, skip)).collect()),
        other => other.clone(),
    }
}

struct Decoder<'a> {
    dict: &'a [u8],
    content: &'a [u8],
    pos: usize,
}

impl Decoder<'_> {
    fn string(&self, r: i64) -> Result<String, PjsonError> {
        if (0..39).contains(&r) {
            return Ok(STATIC_DICT
                .get(r as usize)
                .copied()
                .unwrap_or_default()
                .to_owned());
        }
        let off = r
            .checked_sub(DICT_BASE)
            .and_then(|o| usize::try_from(o).ok())
            .ok_or(PjsonError::Malformed("bad string reference"))?;
        let tail = self.dict.get(off..).ok_or(PjsonError::Malformed(
            "string reference past the dictionary",
        ))?;
        let end = tail
            .iter()
            .position(|b| *b == 0)
            .ok_or(PjsonError::Malformed("unterminated dictionary string"))?;
        Ok(String::from_utf8_lossy(tail.get(..end).unwrap_or(&[])).into_owned())
    }

    fn next(&mut self) -> Result<i64, PjsonError> {
        read_intser(self.content, &mut self.pos)
    }

    /// Reads the value whose code has already been read.
    fn value(&mut self, element: i64, depth: usize) -> Result<Json, PjsonError> {
        if depth > MAX_DEPTH {
            return Err(PjsonError::Malformed("nesting too deep"));
        }
        Ok(match element {
            START_BLOCK => Json::Object(self.members(depth + 1, false)?),
            START_ARRAY => {
                let mut items = Vec::new();
                loop {
                    let code = self.next()?;
                    if code == END_ARRAY {
                        break;
                    }
                    items.push(self.value(code & 0xF, depth + 1)?);
                }
                Json::Array(items)
            }
            VALUE_EMPTY | VALUE_NULL => Json::Empty,
            VALUE_STRING => {
                let r = self.next()?;
                Json::Str(self.string(r)?)
            }
            INTEGER_ZERO | VALUE_FALSE => Json::Int(0),
            INTEGER_ONE | VALUE_TRUE => Json::Int(1),
            VALUE_INTEGER => Json::Int(self.next()?),
            VALUE_FLOAT => {
                let m = self.next()?;
                let e = if m != 0 { self.next()? } else { 0 };
                Json::Float(ints_to_float(m, e))
            }
            _ => return Err(PjsonError::Malformed("unknown element code")),
        })
    }

    fn members(&mut self, depth: usize, root: bool) -> Result<Vec<(String, Json)>, PjsonError> {
        let mut out = Vec::new();
        loop {
            if root && self.pos >= self.content.len() {
                return Ok(out);
            }
            let code = self.next()?;
            if code == END_BLOCK {
                if root {
                    return Err(PjsonError::Malformed("end of block at the root"));
                }
                return Ok(out);
            }
            let key = self.string(code >> 4)?;
            let v = self.value(code & 0xF, depth)?;
            out.push((key, v));
        }
    }
}

/// Decodes a packed JSON document into the root object's members; checks the CRC.
pub fn decode(data: &[u8]) -> Result<Vec<(String, Json)>, PjsonError> {
    let body_len = data.len().checked_sub(2).ok_or(PjsonError::Truncated(0))?;
    let (body, crc) = data
        .split_at_checked(body_len)
        .ok_or(PjsonError::Truncated(0))?;
    let found = u16::from_le_bytes([
        crc.first().copied().unwrap_or(0),
        crc.get(1).copied().unwrap_or(0),
    ]);
    let expected = crc16(body);
    if found != expected {
        return Err(PjsonError::Checksum { found, expected });
    }
    let mut pos = 0usize;
    let dict_len = usize::try_from(read_intser(body, &mut pos)?)
        .map_err(|_| PjsonError::Malformed("negative dictionary size"))?;
    let dict = body
        .get(pos..pos.saturating_add(dict_len))
        .ok_or(PjsonError::Truncated(pos))?;
    pos += dict_len;
    let content_len = usize::try_from(read_intser(body, &mut pos)?)
        .map_err(|_| PjsonError::Malformed("negative content size"))?;
    let content = body
        .get(pos..pos.saturating_add(content_len))
        .ok_or(PjsonError::Truncated(pos))?;
    if pos + content_len != body.len() {
        return Err(PjsonError::Malformed("trailing bytes after the content"));
    }
    let mut d = Decoder {
        dict,
        content,
        pos: 0,
    };
    d.members(0, true)
}

impl Json {
    /// Converts from `serde_json` (booleans become 0/1, `null` becomes empty, like the tool).
    pub fn from_value(v: &serde_json::Value) -> Self {
        use serde_json::Value;
        match v {
            Value::Null => Self::Empty,
            Value::Bool(b) => Self::Int(i64::from(*b)),
            Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => Self::Int(i),
                (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => Self::Int(f as i64),
                (None, Some(f)) => Self::Float(f as f32),
                (None, None) => Self::Empty,
            },
            Value::String(s) if s.is_empty() => Self::Empty,
            Value::String(s) => Self::Str(s.clone()),
            Value::Array(a) => Self::Array(a.iter().map(Self::from_value).collect()),
            Value::Object(o) => Self::Object(
                o.iter()
                    .map(|(k, v)| (k.clone(), Self::from_value(v)))
                    .collect(),
            ),
        }
    }

    /// Member `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Self::Object(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is one (a string of digits also counts, as C reads it).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Self::Int(i) => Some(*i),
            Self::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// The items, if this is an array.
    pub fn as_array(&self) -> Option<&[Json]> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }

    /// Converts to `serde_json` (floats as f64, empty as `""`).
    pub fn to_value(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Self::Object(m) => {
                Value::Object(m.iter().map(|(k, v)| (k.clone(), v.to_value())).collect())
            }
            Self::Array(a) => Value::Array(a.iter().map(Self::to_value).collect()),
            Self::Str(s) => Value::String(s.clone()),
            Self::Int(i) => Value::from(*i),
            Self::Float(f) => Value::from(f64::from(*f)),
            Self::Empty => Value::String(String::new()),
        }
    }
}

#[cfg(test)]
mod tests;
