//! The `info` block (spec data-and-streams.md §4): packed binary JSON describing a device's
//! blocks and signals. We build ours from a [`Json`] signal configuration, and decode a
//! peer's to find its signal addresses (a controller reads the `tod_buf` ring size from it).

use crate::proto::pjson::{self, Json, PjsonError};
use crate::proto::signals::{
    BlockLayout, LayoutError, Signal, layout_from_json, layout_from_peer_json,
};
use thiserror::Error;

/// Reference ring size of `tod_buf`/`frd_buf` (iocom `device_conf_signals.json`).
pub const REFERENCE_RING: usize = 257;
/// Our default `tod_buf` size: 1 MiB + 1 (design.md §5a asks for ≥ 256 KiB; the reference
/// controller moved 1 MiB in ~65 ms at this size, and the ring costs RAM only on our side
/// and in the controller's copy of `conf_imp`).
pub const DEFAULT_TOD_RING: usize = 1024 * 1024 + 1;
/// The `tod_buf` size iocomd declares to a socket controller that is not a streaming peer
/// (stock C controllers such as ispy; [`crate::proto::frame::is_streaming`]): 4 KiB + 1.
/// ispy's memory window draws one label per 16 bytes of every block, so this keeps it at
/// about 350 labels (16 474 with a 256 KiB ring), while the reference controller, which fills
/// the ring once per device loop, still moves a few hundred KB/s.
pub const COMPAT_TOD_RING: usize = 4096 + 1;

/// Errors decoding a peer's `info` block.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InfoError {
    /// The packed JSON is damaged.
    #[error("info block: {0}")]
    Packed(#[from] PjsonError),
    /// The JSON does not describe blocks the way the layout rules need.
    #[error("info block: {0}")]
    Layout(#[from] LayoutError),
}

/// What a device's `info` block says: its blocks and their signal layouts.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceInfo {
    /// The configuration as decoded.
    pub json: Json,
    /// Every block with its signals at their addresses.
    pub blocks: Vec<BlockLayout>,
}

impl DeviceInfo {
    /// Decodes a peer's `info` block content.
    pub fn decode(bytes: &[u8]) -> Result<Self, InfoError> {
        let root = Json::Object(pjson::decode(bytes)?);
        let blocks = layout_from_peer_json(&root.to_value())?;
        Ok(Self { json: root, blocks })
    }

    /// Describes our own configuration (no encoding involved).
    pub fn from_json(json: Json) -> Result<Self, InfoError> {
        let blocks = layout_from_json(&json.to_value())?;
        Ok(Self { json, blocks })
    }

    /// The block named `name`.
    pub fn block(&self, name: &str) -> Option<&BlockLayout> {
        self.blocks.iter().find(|b| b.name == name)
    }

    /// Signal `signal` of block `block`.
    pub fn signal(&self, block: &str, signal: &str) -> Option<&Signal> {
        self.block(block)?.signal(signal)
    }

    /// The packed binary JSON for the `info` block (keys `title` dropped, like the build).
    pub fn encode(&self) -> Vec<u8> {
        match &self.json {
            Json::Object(m) => pjson::encode(m, &["title"]),
            other => pjson::encode(&[("mblk".to_owned(), other.clone())], &["title"]),
        }
    }
}

fn sig(name: &str, ty: Option<&str>, array: Option<usize>) -> Json {
    let mut m = vec![("name".to_owned(), Json::Str(name.to_owned()))];
    if let Some(t) = ty {
        m.push(("type".to_owned(), Json::Str(t.to_owned())));
    }
    if let Some(n) = array {
        m.push(("array".to_owned(), Json::Int(n as i64)));
    }
    Json::Object(m)
}

fn block(name: &str, flags: &str, group: &str, signals: Vec<Json>) -> Json {
    Json::Object(vec![
        ("name".to_owned(), Json::Str(name.to_owned())),
        ("flags".to_owned(), Json::Str(flags.to_owned())),
        (
            "groups".to_owned(),
            Json::Array(vec![Json::Object(vec![
                ("name".to_owned(), Json::Str(group.to_owned())),
                ("signals".to_owned(), Json::Array(signals)),
            ])]),
        ),
    ])
}

/// The `conf_exp` block entry of `device_conf_signals.json` with an `frd_buf` of `frd_ring`.
pub fn conf_exp_block(frd_ring: usize) -> Json {
    block(
        "conf_exp",
        "up,conf",
        "conf_transfer",
        vec![
            sig("tod_state", Some("char"), None),
            sig("tod_err", Some("uchar"), None),
            sig("tod_tail", Some("int"), None),
            sig("frd_state", Some("char"), None),
            sig("frd_err", Some("uchar"), None),
            sig("frd_cs", Some("ushort"), None),
            sig("frd_head", Some("int"), None),
            sig("frd_buf", Some("uchar"), Some(frd_ring)),
        ],
    )
}

/// The `conf_imp` block entry of `device_conf_signals.json` with a `tod_buf` of `tod_ring`.
pub fn conf_imp_block(tod_ring: usize) -> Json {
    block(
        "conf_imp",
        "down,conf",
        "conf_transfer",
        vec![
            sig("tod_cmd", Some("char"), None),
            sig("tod_select", Some("char"), None),
            sig("tod_cs", Some("ushort"), None),
            sig("tod_head", Some("int"), None),
            sig("tod_buf", Some("uchar"), Some(tod_ring)),
            sig("frd_cmd", Some("char"), None),
            sig("frd_select", Some("uchar"), None),
            sig("frd_tail", Some("int"), None),
        ],
    )
}

/// A device configuration: `name`, and `mblk` = `blocks` followed by conf_exp and conf_imp.
pub fn device_config(name: &str, blocks: Vec<Json>, tod_ring: usize, frd_ring: usize) -> Json {
    let mut mblk = blocks;
    mblk.push(conf_exp_block(frd_ring));
    mblk.push(conf_imp_block(tod_ring));
    Json::Object(vec![
        ("name".to_owned(), Json::Str(name.to_owned())),
        ("mblk".to_owned(), Json::Array(mblk)),
    ])
}

/// An `exp`/`imp` style block entry from `(name, type, array)` triples.
pub fn signal_block(name: &str, flags: &str, group: &str, signals: &[(&str, &str, usize)]) -> Json {
    block(
        name,
        flags,
        group,
        signals
            .iter()
            .map(|(n, t, a)| sig(n, Some(t), (*a > 1).then_some(*a)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_info_round_trips_and_keeps_the_reference_layout() {
        let cfg = device_config("iocomd", vec![], REFERENCE_RING, REFERENCE_RING);
        let ours = DeviceInfo::from_json(cfg).unwrap();
        let decoded = DeviceInfo::decode(&ours.encode()).unwrap();
        assert_eq!(decoded.blocks, ours.blocks);
        assert_eq!(decoded.block("conf_imp").unwrap().size, 279);
        assert_eq!(decoded.signal("conf_imp", "frd_cmd").unwrap().addr, 270);
    }

    #[test]
    fn a_big_ring_is_what_the_peer_reads() {
        let cfg = device_config("iocomd", vec![], DEFAULT_TOD_RING, REFERENCE_RING);
        let bytes = DeviceInfo::from_json(cfg).unwrap().encode();
        let peer = DeviceInfo::decode(&bytes).unwrap();
        let buf = peer.signal("conf_imp", "tod_buf").unwrap();
        assert_eq!((buf.addr, buf.n), (12, DEFAULT_TOD_RING));
        assert_eq!(
            peer.block("conf_imp").unwrap().size,
            12 + 1 + DEFAULT_TOD_RING + 9
        );
    }

    #[test]
    fn damaged_info_is_rejected() {
        let cfg = device_config("x", vec![], 257, 257);
        let mut bytes = DeviceInfo::from_json(cfg).unwrap().encode();
        bytes[5] ^= 0x40;
        assert!(matches!(
            DeviceInfo::decode(&bytes),
            Err(InfoError::Packed(_))
        ));
    }
}
