//! Address layout from signal JSON (spec data-and-streams.md §3.3), identical to the
//! reference code generator `signals_to_c.py` and the controller's `ioc_dyn_root.c`.

use super::{Signal, SignalType};
use crate::proto::mblk::MIN_MBLK_SIZE;
use serde_json::Value;
use thiserror::Error;

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
    layout(doc, true)
}

/// [`layout_from_json`] for a peer's configuration: an unknown type name takes no value
/// bytes (the signal is 1 byte), as the C controller treats it, instead of an error.
pub fn layout_from_peer_json(doc: &Value) -> Result<Vec<BlockLayout>, LayoutError> {
    layout(doc, false)
}

fn layout(doc: &Value, strict: bool) -> Result<Vec<BlockLayout>, LayoutError> {
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
                    ty = match SignalType::from_name(t) {
                        Some(ty) => ty,
                        None if !strict => SignalType::Undef,
                        None => {
                            return Err(LayoutError::UnknownType {
                                signal: sname.to_owned(),
                                ty: t.to_owned(),
                            });
                        }
                    };
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
