//! The endpoint data model: our memory blocks, their binding to peers' blocks on each
//! connection (transport.md §5.6–5.7), routing of received data frames, and outgoing frames
//! for changed blocks. It consumes [`ConnEvent`]s and produces [`MblkInfo`] replies and
//! [`DataFrame`]s for the caller to queue on the [`crate::proto::conn::Connection`].
//!
//! - [`Role::Device`] (the `CONNECT_UP` end): announces all its blocks after authentication;
//!   a block is sent when both its and the peer's info say UP, received when both say DOWN.
//! - [`Role::Controller`]: announces nothing by itself; for every received info it binds (or
//!   creates, dynamically, with the peer's size) a block and replies with its own info.
//!
//! Ids are handed out from 8 and kept below 32768 (C peers store them as `os_short`).

use crate::proto::auth::{AUTO_DEVICE_NR, TO_AUTO_DEVICE_NR};
use crate::proto::conn::{ConnEvent, Role};
use crate::proto::frame::Framing;
use crate::proto::mblk::{
    ConnId, DataFrame, MBLK_ALLOW_RESIZE, MBLK_DOWN, MBLK_DYNAMIC, MBLK_STATIC, MBLK_UP, Mblk,
    MblkError,
};
use crate::proto::sysframe::MblkInfo;
use std::collections::HashMap;
use std::ops::Range;
use thiserror::Error;

/// First memory block id (`IOC_MIN_UNIQUE_ID`).
pub const FIRST_MBLK_ID: u32 = 8;
/// Ids must stay below this for C peers.
pub const MBLK_ID_LIMIT: u32 = 32768;
/// Largest block a peer may make us allocate (a dynamic block or a resize).
pub const MAX_PEER_BLOCK_SIZE: usize = 64 * 1024 * 1024;

/// Device name, number and network of a block (the binding key besides the block name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceId {
    /// Device name, e.g. `"gina"`.
    pub name: String,
    /// Device number; 9000 = automatic.
    pub nr: u32,
    /// Network name; `"*"` or empty is adopted from the peer.
    pub network: String,
}

impl DeviceId {
    /// `name`, `nr`, `network`.
    pub fn new(name: &str, nr: u32, network: &str) -> Self {
        Self {
            name: name.to_owned(),
            nr,
            network: network.to_owned(),
        }
    }
}

/// An IOCOM device path such as `gina3.cafenet`: name, optional number, optional network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePath {
    /// Device name without the number (`gina`).
    pub name: String,
    /// Device number (`3`), if given.
    pub nr: Option<u32>,
    /// Network name (`cafenet`), if given.
    pub network: Option<String>,
}

impl DevicePath {
    /// Parses `name[nr][.network]`; the number is the trailing decimal digits of the first part.
    pub fn parse(path: &str) -> Option<Self> {
        let (dev, network) = match path.split_once('.') {
            Some((d, n)) if !n.is_empty() => (d, Some(n.to_owned())),
            Some(_) => return None,
            None => (path, None),
        };
        let digits = dev.len() - dev.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let (name, nr) = dev.split_at_checked(dev.len() - digits)?;
        if name.is_empty() || name.len() > 15 {
            return None;
        }
        let nr = if nr.is_empty() {
            None
        } else {
            Some(nr.parse().ok()?)
        };
        Some(Self {
            name: name.to_owned(),
            nr,
            network,
        })
    }

    /// True when a block's device identity matches this path.
    pub fn matches(&self, d: &DeviceId) -> bool {
        d.name == self.name
            && self.nr.is_none_or(|n| n == d.nr)
            && self.network.as_deref().is_none_or(|n| n == d.network)
    }
}

/// Errors handling a connection's events; the connection should be closed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NodeError {
    /// A data frame could not be applied.
    #[error("connection {conn}: {source}")]
    Block {
        conn: ConnId,
        #[source]
        source: MblkError,
    },
    /// No more block ids below 32768.
    #[error("out of memory block ids")]
    OutOfIds,
    /// The peer announced a block larger than [`MAX_PEER_BLOCK_SIZE`].
    #[error("connection {conn}: peer block {name:?} of {size} bytes is too large")]
    TooLarge {
        conn: ConnId,
        name: String,
        size: u32,
    },
    /// A block name or identity does not fit the wire limits.
    #[error("memory block {0:?}: name too long for the wire")]
    BadName(String),
}

/// What handling one event produced.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NodeOutput {
    /// Info frames to queue on the connection (controller replies).
    pub infos: Vec<MblkInfo>,
    /// Blocks (by index) whose content changed, with the changed byte range.
    pub changed: Vec<(usize, Range<usize>)>,
    /// Blocks (by index) newly bound on the connection.
    pub bound: Vec<usize>,
}

#[derive(Debug, Clone)]
struct Entry {
    mblk: Mblk,
    device: DeviceId,
}

#[derive(Debug, Clone)]
struct ConnInfo {
    /// The peer's network after authentication.
    network: String,
    /// Largest frame we send on this connection.
    frame_size: usize,
    /// Its framing (header lengths).
    framing: Framing,
    /// Our role on this connection.
    role: Role,
    /// The number we assigned to the peer's automatically numbered blocks (info number 9000).
    auto_nr: Option<u32>,
}

/// How a connection is set up in [`Node::connect_as`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnSetup {
    /// Our role on this connection (a relay is the controller of the devices below it and
    /// the device of the controllers above it).
    pub role: Role,
    /// The network name after adoption (from `ConnEvent::Authenticated`).
    pub network: String,
    /// The largest frame we may send.
    pub frame_size: u32,
    /// Controller role: the device number we assigned to the peer. Its blocks announced with
    /// the automatic number 9000 are kept under this number, and our replies name them 8999
    /// (spec §2.9, as the C controller does).
    pub auto_nr: Option<u32>,
    /// The connection's framing (frames are cut to fit its headers).
    pub framing: Framing,
}

/// Our memory blocks and their per-connection bindings.
#[derive(Debug, Clone)]
pub struct Node {
    role: Role,
    entries: Vec<Entry>,
    next_id: u32,
    id_limit: u32,
    conns: HashMap<ConnId, ConnInfo>,
}

impl Node {
    /// An empty node.
    pub fn new(role: Role) -> Self {
        Self::with_ids(role, FIRST_MBLK_ID..MBLK_ID_LIMIT)
    }

    /// An empty node handing out block ids from `ids` only (several controller cores sharing
    /// one connection each get their own range, so the peer's frames name one core's block).
    /// The range is clamped to 8..32768.
    pub fn with_ids(role: Role, ids: Range<u32>) -> Self {
        Self {
            role,
            entries: Vec::new(),
            next_id: ids.start.max(FIRST_MBLK_ID),
            id_limit: ids.end.min(MBLK_ID_LIMIT),
            conns: HashMap::new(),
        }
    }

    /// Our default role (the role of connections set up with [`Node::connect`]).
    pub fn role(&self) -> Role {
        self.role
    }

    /// Our role on `conn` (the default role when it is not connected).
    pub fn conn_role(&self, conn: ConnId) -> Role {
        self.conns.get(&conn).map_or(self.role, |c| c.role)
    }

    /// The automatic number assigned to the peer of `conn` (controller role), if any.
    pub fn auto_nr(&self, conn: ConnId) -> Option<u32> {
        self.conns.get(&conn).and_then(|c| c.auto_nr)
    }

    /// The info frame announcing block `ix` (a relay announces a new device's blocks on its
    /// upward connections with it).
    pub fn info_of(&self, ix: usize) -> Option<MblkInfo> {
        self.entries.get(ix).map(Self::info_for)
    }

    /// True when block id `id` is one of ours.
    pub fn owns_id(&self, id: u32) -> bool {
        self.entries.iter().any(|e| e.mblk.id() == id)
    }

    fn take_id(&mut self) -> Result<u32, NodeError> {
        let id = self.next_id;
        if id >= self.id_limit {
            return Err(NodeError::OutOfIds);
        }
        self.next_id += 1;
        Ok(id)
    }

    /// Adds a block of `size` bytes; returns its index. Ids follow creation order from 8.
    pub fn add_block(
        &mut self,
        device: DeviceId,
        name: &str,
        flags: u16,
        size: usize,
    ) -> Result<usize, NodeError> {
        check_name(name, 15)?;
        let id = self.take_id()?;
        self.entries.push(Entry {
            mblk: Mblk::new(name, id, flags, size),
            device,
        });
        Ok(self.entries.len() - 1)
    }

    /// Adds a static block with fixed content (the `info` block).
    pub fn add_static_block(
        &mut self,
        device: DeviceId,
        name: &str,
        flags: u16,
        content: Vec<u8>,
    ) -> Result<usize, NodeError> {
        check_name(name, 15)?;
        let id = self.take_id()?;
        self.entries.push(Entry {
            mblk: Mblk::new_static(name, id, flags, content),
            device,
        });
        Ok(self.entries.len() - 1)
    }

    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no blocks.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Block by index.
    pub fn block(&self, ix: usize) -> Option<&Mblk> {
        self.entries.get(ix).map(|e| &e.mblk)
    }

    /// Block by index, mutable.
    pub fn block_mut(&mut self, ix: usize) -> Option<&mut Mblk> {
        self.entries.get_mut(ix).map(|e| &mut e.mblk)
    }

    /// The device identity of block `ix`.
    pub fn device_of(&self, ix: usize) -> Option<&DeviceId> {
        self.entries.get(ix).map(|e| &e.device)
    }

    /// Index of the block named `name` of `device` (any device when `None`).
    pub fn find(&self, name: &str, device: Option<&DeviceId>) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.mblk.name() == name && device.is_none_or(|d| *d == e.device))
    }

    /// Two different blocks at once (e.g. conf_exp and conf_imp for a stream).
    pub fn pair_mut(&mut self, a: usize, b: usize) -> Option<(&mut Mblk, &mut Mblk)> {
        if a == b {
            return None;
        }
        let (lo, hi, swap) = if a < b { (a, b, false) } else { (b, a, true) };
        let (left, right) = self.entries.split_at_mut_checked(hi)?;
        let x = &mut left.get_mut(lo)?.mblk;
        let y = &mut right.first_mut()?.mblk;
        Some(if swap { (y, x) } else { (x, y) })
    }

    fn info_for(e: &Entry) -> MblkInfo {
        MblkInfo {
            mblk_id: e.mblk.id(),
            device_name: e.device.name.clone(),
            device_nr: e.device.nr,
            network_name: e.device.network.clone(),
            mblk_name: e.mblk.name().to_owned(),
            size: u32::try_from(e.mblk.size()).unwrap_or(u32::MAX),
            flags: e.mblk.flags(),
        }
    }

    /// A connection authenticated; `network` is the network name after adoption and
    /// `frame_size` the largest frame we may send (both from `ConnEvent::Authenticated`). A
    /// device adopts the network for blocks whose network is automatic and returns info for
    /// all its blocks.
    pub fn connect(&mut self, conn: ConnId, network: &str, frame_size: u32) -> Vec<MblkInfo> {
        self.connect_with(conn, network, frame_size, Framing::Socket)
    }

    /// [`Node::connect`] for a connection with the given framing (frames are cut to fit its
    /// headers).
    pub fn connect_with(
        &mut self,
        conn: ConnId,
        network: &str,
        frame_size: u32,
        framing: Framing,
    ) -> Vec<MblkInfo> {
        self.connect_as(
            conn,
            ConnSetup {
                role: self.role,
                network: network.to_owned(),
                frame_size,
                auto_nr: None,
                framing,
            },
        )
    }

    /// [`Node::connect`] with the role and automatic number given per connection. In the
    /// device role the returned infos announce every block we hold (a relay announces the
    /// blocks of every device below it, under the numbers it assigned).
    pub fn connect_as(&mut self, conn: ConnId, setup: ConnSetup) -> Vec<MblkInfo> {
        let role = setup.role;
        let network = setup.network.clone();
        self.conns.insert(
            conn,
            ConnInfo {
                network: setup.network,
                frame_size: setup.frame_size as usize,
                framing: setup.framing,
                role,
                auto_nr: setup.auto_nr.filter(|_| role == Role::Controller),
            },
        );
        if role != Role::Device {
            return Vec::new();
        }
        for e in &mut self.entries {
            if e.device.network.is_empty() || e.device.network == "*" {
                e.device.network = network.clone();
            }
        }
        self.entries.iter().map(Self::info_for).collect()
    }

    /// The key a received block info is bound under on `conn`: the device number mapped as
    /// spec §2.9 says (device role: 8999 → 9000; controller role: 9000 → the number we
    /// assigned), and whether our reply must say 8999.
    pub fn info_key(&self, conn: ConnId, info: &MblkInfo) -> (DeviceId, bool) {
        let c = self.conns.get(&conn);
        let role = c.map_or(self.role, |c| c.role);
        let auto = c.and_then(|c| c.auto_nr);
        let (nr, to_auto) = match (role, auto) {
            (Role::Device, _) if info.device_nr == TO_AUTO_DEVICE_NR => (AUTO_DEVICE_NR, false),
            (Role::Controller, Some(n)) if info.device_nr == AUTO_DEVICE_NR => (n, true),
            _ => (info.device_nr, false),
        };
        (
            DeviceId::new(&info.device_name, nr, &info.network_name),
            to_auto,
        )
    }

    /// A connection closed: its sync buffers go away (block contents stay).
    pub fn disconnect(&mut self, conn: ConnId) {
        self.conns.remove(&conn);
        for e in &mut self.entries {
            e.mblk.remove_connection(conn);
        }
    }

    /// Handles one event of connection `conn`. `Authenticated` must go through
    /// [`Node::connect`]; it is ignored here.
    pub fn handle(&mut self, conn: ConnId, ev: ConnEvent) -> Result<NodeOutput, NodeError> {
        let mut out = NodeOutput::default();
        match ev {
            ConnEvent::Authenticated { .. } | ConnEvent::RemoveMblk(_) => {}
            ConnEvent::MblkInfo(info) => self.on_info(conn, &info, &mut out)?,
            ConnEvent::Data {
                mblk_id,
                addr,
                flags,
                payload,
            } => {
                let Some(ix) = self.entries.iter().position(|e| e.mblk.id() == mblk_id) else {
                    return Ok(out);
                };
                let Some(e) = self.entries.get_mut(ix) else {
                    return Ok(out);
                };
                let changed = e
                    .mblk
                    .apply_frame(conn, addr as usize, flags.bits(), &payload)
                    .map_err(|source| NodeError::Block { conn, source })?;
                if let Some(r) = changed {
                    out.changed.push((ix, r));
                }
            }
        }
        Ok(out)
    }

    fn on_info(
        &mut self,
        conn: ConnId,
        info: &MblkInfo,
        out: &mut NodeOutput,
    ) -> Result<(), NodeError> {
        let device = self.conn_role(conn) == Role::Device;
        let (key, to_auto) = self.info_key(conn, info);
        if info.size as usize > MAX_PEER_BLOCK_SIZE {
            return Err(NodeError::TooLarge {
                conn,
                name: info.mblk_name.clone(),
                size: info.size,
            });
        }
        let found = self.find(&info.mblk_name, Some(&key));
        let ix = match (found, device) {
            (Some(ix), _) => ix,
            (None, true) => return Ok(()),
            (None, false) => {
                // Dynamic block, as a C controller with IOC_DYNAMIC_MBLKS creates it.
                let flags = (info.flags & (MBLK_UP | MBLK_DOWN)) | MBLK_ALLOW_RESIZE | MBLK_DYNAMIC;
                if info.mblk_name.is_empty() {
                    return Ok(());
                }
                self.add_block(key, &info.mblk_name, flags, info.size as usize)?
            }
        };
        // Towards a peer of ours, snapshots leave out unchanged bytes (`Mblk::set_split_snapshots`).
        let split = self.conns.get(&conn).is_some_and(|c| {
            crate::proto::frame::is_streaming(c.framing, u32::try_from(c.frame_size).unwrap_or(0))
        });
        let Some(e) = self.entries.get_mut(ix) else {
            return Ok(());
        };
        if e.mblk.flags() & MBLK_ALLOW_RESIZE != 0 {
            e.mblk.grow(info.size as usize);
        }
        let (src_dir, dst_dir) = if device {
            (MBLK_UP, MBLK_DOWN)
        } else {
            (MBLK_DOWN, MBLK_UP)
        };
        let local = e.mblk.flags();
        let mut new = false;
        if local & info.flags & src_dir != 0 && !e.mblk.has_source(conn) {
            e.mblk.add_source(conn, info.mblk_id);
            e.mblk.set_split_snapshots(conn, split);
            new = true;
        }
        if local & info.flags & dst_dir != 0 && !e.mblk.is_target_on(conn) {
            e.mblk.add_target(conn, info.mblk_id);
            new = true;
        }
        if new {
            out.bound.push(ix);
            if !device {
                let mut reply = Self::info_for(e);
                // Our copy of a static block is an ordinary receivable block.
                reply.flags &= !MBLK_STATIC;
                reply.device_nr = if to_auto {
                    TO_AUTO_DEVICE_NR
                } else {
                    info.device_nr
                };
                out.infos.push(reply);
            }
        }
        Ok(())
    }

    /// Takes snapshots of changed blocks and returns up to `max` data frames for `conn`,
    /// each at most `frame_size` bytes on the wire. When a snapshot's last frame goes out and
    /// the block changed meanwhile, the next snapshot is taken in the same call: changes never
    /// wait for another call (whose trigger may be the peer's answer to exactly these changes).
    pub fn transmit(&mut self, conn: ConnId, frame_size: usize, max: usize) -> Vec<DataFrame> {
        let framing = self.conns.get(&conn).map_or(Framing::Socket, |i| i.framing);
        let mut frames = Vec::new();
        for e in &mut self.entries {
            if !e.mblk.has_source(conn) {
                continue;
            }
            while frames.len() < max {
                if !e.mblk.has_pending(conn) {
                    e.mblk.synchronize();
                }
                match e.mblk.next_frame_framed(conn, frame_size, framing) {
                    Some(f) => frames.push(f),
                    None => break,
                }
            }
        }
        frames
    }

    /// [`Node::transmit`] for every connection, with its own frame size: up to `max` frames
    /// per connection.
    pub fn transmit_all(&mut self, max: usize) -> Vec<(ConnId, DataFrame)> {
        let mut conns: Vec<(ConnId, usize)> =
            self.conns.iter().map(|(c, i)| (*c, i.frame_size)).collect();
        conns.sort_unstable();
        let mut out = Vec::new();
        for (conn, frame_size) in conns {
            out.extend(
                self.transmit(conn, frame_size, max)
                    .into_iter()
                    .map(|f| (conn, f)),
            );
        }
        out
    }

    /// True when some block has frames waiting for `conn` (after a snapshot was taken).
    pub fn has_pending(&self, conn: ConnId) -> bool {
        self.entries.iter().any(|e| e.mblk.has_pending(conn))
    }

    /// The network recorded for `conn`.
    pub fn conn_network(&self, conn: ConnId) -> Option<&str> {
        self.conns.get(&conn).map(|c| c.network.as_str())
    }
}

fn check_name(name: &str, max: usize) -> Result<(), NodeError> {
    if name.len() > max {
        return Err(NodeError::BadName(name.to_owned()));
    }
    Ok(())
}

/// Flags of our device's standard blocks.
pub mod device_flags {
    use super::{MBLK_DOWN, MBLK_STATIC, MBLK_UP};
    /// `exp`, `conf_exp`: device → controller.
    pub const EXP: u16 = MBLK_UP;
    /// `imp`, `conf_imp`: controller → device.
    pub const IMP: u16 = MBLK_DOWN;
    /// `info`.
    pub const INFO: u16 = MBLK_UP | MBLK_STATIC;
}

#[cfg(test)]
mod tests;
