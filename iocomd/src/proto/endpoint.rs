//! Per-role cores that tie blocks, binding and streams together:
//! [`DeviceEndpoint`] (our device: exp/imp/…, conf_exp, conf_imp, info; tod reader and frd
//! writer) and [`ControllerEndpoint`] (a controller: blocks created from the device's info
//! frames, the device's `info` decoded, one upload or download at a time).
//!
//! Both are sans-I/O: feed them [`ConnEvent`]s, queue the `MblkInfo`s they return with
//! `Connection::queue_system_frame`, poll the streams after received data, then queue
//! [`Node::transmit`] frames with `Connection::queue_data_frame`.
//!
//! The device core loop, per wake-up (a `NetEvent`, or `poll_timeout()` reached):
//! 1. `NetEvent::Conn { id, event }` → [`DeviceEndpoint::handle`]; queue `out.infos` in order
//!    (`SystemFrame::MblkInfo`); an `Err` means: close that connection.
//!    `NetEvent::Closed` → [`DeviceEndpoint::disconnect`].
//! 2. [`DeviceEndpoint::poll_streams`] with the spool sink (select 1: open a spool file, other
//!    selects: refuse with a status code) and the frd source; act on the [`StreamEvent`]s
//!    (a completed upload goes to the install helper; [`DeviceEndpoint::report`] publishes
//!    the final `tod_err` later; status signals go in `exp` through
//!    [`DeviceEndpoint::block_mut`]).
//! 3. [`DeviceEndpoint::transmit_all`] → `ConnHandle::queue_data` for each frame, at once
//!    (publish every change promptly, design.md §5a).
//!
//! Wake up again at [`DeviceEndpoint::poll_timeout`] even if nothing arrives.

use crate::proto::auth::AutoDeviceNumbers;
use crate::proto::conn::{ConnEvent, Role};
use crate::proto::info::{DeviceInfo, InfoError, conf_exp_block, conf_imp_block};
use crate::proto::mblk::{ConnId, DataFrame, Mblk};
use crate::proto::node::{
    ConnSetup, DeviceId, DevicePath, FIRST_MBLK_ID, MBLK_ID_LIMIT, Node, NodeError, NodeOutput,
    device_flags,
};
use crate::proto::pjson::Json;
use crate::proto::signals::BlockLayout;
use crate::proto::stream::controller::{ControllerReader, ControllerWriter, Progress};
use crate::proto::stream::device::{DeviceEvent, DeviceReader, DeviceWriter};
use crate::proto::stream::{ChunkSink, ChunkSource, Direction, StreamError, StreamSignals};
use std::time::Instant;
use thiserror::Error;

/// Errors building or driving an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EndpointError {
    /// The signal configuration is unusable.
    #[error("configuration: {0}")]
    Info(#[from] InfoError),
    /// A block could not be created.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// A required block or signal is missing.
    #[error("missing {0}")]
    Missing(String),
    /// The device's stream signals are not available yet (no info, or not bound).
    #[error("device {0} is not ready for streams")]
    NotReady(String),
    /// A transfer is already running.
    #[error("a transfer is already running")]
    Busy,
    /// A stream signal write failed.
    #[error(transparent)]
    Stream(#[from] StreamError),
}

/// One of our device's blocks besides the conf blocks and `info`.
#[derive(Debug, Clone)]
pub struct BlockDef {
    /// Block name (≤ 15 bytes).
    pub name: String,
    /// [`device_flags::EXP`] or [`device_flags::IMP`].
    pub flags: u16,
    /// The block's entry for the `info` JSON (`{"name":…, "groups":[…]}`), if it has signals.
    pub json: Option<Json>,
    /// Smallest size; the signal layout may make it bigger.
    pub min_size: usize,
}

/// Configuration of our device.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// Device name, number (9000 = automatic) and network (`"*"` adopts the controller's).
    pub device: DeviceId,
    /// Blocks before conf_exp/conf_imp, in id order.
    pub blocks: Vec<BlockDef>,
    /// `tod_buf` ring size (elements).
    pub tod_ring: usize,
    /// `frd_buf` ring size.
    pub frd_ring: usize,
}

/// A stream event on our device, with its direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEvent {
    /// tod (upload to us) or frd (download from us).
    pub dir: Direction,
    /// What happened.
    pub event: DeviceEvent,
}

/// Our device's data core.
#[derive(Debug, Clone)]
pub struct DeviceEndpoint {
    node: Node,
    info: DeviceInfo,
    conf_exp: usize,
    conf_imp: usize,
    reader: DeviceReader,
    writer: DeviceWriter,
}

impl DeviceEndpoint {
    /// Builds the blocks (ids from 8 in order: `blocks`, conf_exp, conf_imp, info), the info
    /// content, and initialises the stream states (IDLE with CONNECTED).
    pub fn new(cfg: DeviceConfig) -> Result<Self, EndpointError> {
        let mut mblk: Vec<Json> = cfg
            .blocks
            .iter()
            .map(|b| {
                b.json.clone().unwrap_or_else(|| {
                    Json::Object(vec![("name".to_owned(), Json::Str(b.name.clone()))])
                })
            })
            .collect();
        mblk.push(conf_exp_block(cfg.frd_ring));
        mblk.push(conf_imp_block(cfg.tod_ring));
        let json = Json::Object(vec![
            ("name".to_owned(), Json::Str(cfg.device.name.clone())),
            ("mblk".to_owned(), Json::Array(mblk)),
        ]);
        let info = DeviceInfo::from_json(json)?;
        let mut node = Node::new(Role::Device);
        for b in &cfg.blocks {
            let size = info.block(&b.name).map_or(0, |l| l.size).max(b.min_size);
            node.add_block(cfg.device.clone(), &b.name, b.flags, size)?;
        }
        let layout = |name: &str| {
            info.block(name)
                .ok_or_else(|| EndpointError::Missing(format!("block {name}")))
        };
        let (exp_l, imp_l) = (layout("conf_exp")?, layout("conf_imp")?);
        let conf_exp = node.add_block(
            cfg.device.clone(),
            "conf_exp",
            device_flags::EXP,
            exp_l.size,
        )?;
        let conf_imp = node.add_block(
            cfg.device.clone(),
            "conf_imp",
            device_flags::IMP,
            imp_l.size,
        )?;
        let tod = StreamSignals::resolve(Direction::ToDevice, exp_l, imp_l)
            .ok_or_else(|| EndpointError::Missing("tod_* signals".into()))?;
        let frd = StreamSignals::resolve(Direction::FromDevice, exp_l, imp_l)
            .ok_or_else(|| EndpointError::Missing("frd_* signals".into()))?;
        node.add_static_block(
            cfg.device.clone(),
            "info",
            device_flags::INFO,
            info.encode(),
        )?;
        let reader = DeviceReader::new(tod);
        let writer = DeviceWriter::new(frd);
        if let Some(exp) = node.block_mut(conf_exp) {
            reader.init(exp)?;
            writer.init(exp)?;
        }
        Ok(Self {
            node,
            info,
            conf_exp,
            conf_imp,
            reader,
            writer,
        })
    }

    /// The blocks.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The blocks, mutable (to write `exp` signals).
    pub fn node_mut(&mut self) -> &mut Node {
        &mut self.node
    }

    /// Our configuration and its signal layout.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// Handles one connection event. For `Authenticated` the returned infos announce all our
    /// blocks; queue them in order.
    pub fn handle(&mut self, conn: ConnId, ev: ConnEvent) -> Result<NodeOutput, NodeError> {
        if let ConnEvent::Authenticated {
            network_name,
            send_frame_size,
            framing,
            ..
        } = &ev
        {
            let infos = self
                .node
                .connect_with(conn, network_name, *send_frame_size, *framing);
            return Ok(NodeOutput {
                infos,
                ..NodeOutput::default()
            });
        }
        self.node.handle(conn, ev)
    }

    /// A connection closed.
    pub fn disconnect(&mut self, conn: ConnId) {
        self.node.disconnect(conn);
    }

    /// Runs both stream machines once (after received data, before transmitting).
    pub fn poll_streams(
        &mut self,
        now: Instant,
        sink: &mut dyn ChunkSink,
        source: &mut dyn ChunkSource,
    ) -> Vec<StreamEvent> {
        let mut out = Vec::new();
        let Some((exp, imp)) = self.node.pair_mut(self.conf_exp, self.conf_imp) else {
            return out;
        };
        if let Some(event) = self.reader.poll(exp, imp, now, sink) {
            out.push(StreamEvent {
                dir: Direction::ToDevice,
                event,
            });
        }
        if let Some(event) = self.writer.poll(exp, imp, now, source) {
            out.push(StreamEvent {
                dir: Direction::FromDevice,
                event,
            });
        }
        out
    }

    /// When [`DeviceEndpoint::poll_streams`] must run again even without received data.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.reader.poll_timeout(), self.writer.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// True while a from-device transfer is sending (poll whenever the source has data).
    pub fn frd_active(&self) -> bool {
        !matches!(
            self.writer.state(),
            crate::proto::stream::device::WriterState::Idle { .. }
        )
    }

    /// Block `name` and its signal layout, for reading and writing our own signals.
    pub fn block_mut(&mut self, name: &str) -> Option<(&mut Mblk, &BlockLayout)> {
        let ix = self.node.find(name, None)?;
        let layout = self.info.block(name)?;
        Some((self.node.block_mut(ix)?, layout))
    }

    /// Aborts a running upload with `code` in `tod_err` (see [`DeviceReader::abort`]).
    pub fn abort_upload(
        &mut self,
        code: u8,
        now: Instant,
        sink: &mut dyn ChunkSink,
    ) -> Option<StreamEvent> {
        let exp = self.node.block_mut(self.conf_exp)?;
        self.reader
            .abort(exp, code, now, sink)
            .map(|event| StreamEvent {
                dir: Direction::ToDevice,
                event,
            })
    }

    /// Publishes the final result code of the last upload in `tod_err`.
    pub fn report(&mut self, code: u8) -> Result<(), StreamError> {
        match self.node.block_mut(self.conf_exp) {
            Some(exp) => self.reader.report(exp, code),
            None => Ok(()),
        }
    }

    /// Data frames for `conn` (see [`Node::transmit`]).
    pub fn transmit(&mut self, conn: ConnId, frame_size: usize, max: usize) -> Vec<DataFrame> {
        self.node.transmit(conn, frame_size, max)
    }

    /// Data frames for every connection (see [`Node::transmit_all`]).
    pub fn transmit_all(&mut self, max: usize) -> Vec<(ConnId, DataFrame)> {
        self.node.transmit_all(max)
    }

    /// Between streaming peers ([`crate::proto::frame::is_streaming`]): receive the
    /// controller's `conf_imp` progressively ([`Mblk::set_progressive`]), so the reader takes
    /// ring data, and publishes `tod_tail`, frame by frame while a large snapshot is still
    /// arriving; the controller refills the ring while we drain it. Off by default (a ring is
    /// then read once its whole snapshot arrived, as with the C device).
    pub fn set_progressive_uploads(&mut self, on: bool) {
        if let Some(imp) = self.node.block_mut(self.conf_imp) {
            imp.set_progressive(on);
        }
    }

    /// See [`DeviceReader::set_end_hold`].
    pub fn set_end_hold(&mut self, hold: Option<std::time::Duration>) {
        self.reader.set_end_hold(hold);
    }

    /// The tod reader (for its state).
    pub fn reader(&self) -> &DeviceReader {
        &self.reader
    }
}

/// The transfer a controller is running.
#[derive(Debug, Clone)]
enum Transfer {
    Upload(ControllerWriter),
    Download(ControllerReader),
}

/// A controller's data core, talking to one device: the peer itself, or one of the devices a
/// server (such as iocafe's `frank`) advertises. Only the blocks of that device are bound;
/// the others are recorded in [`ControllerEndpoint::advertised`].
#[derive(Debug, Clone)]
pub struct ControllerEndpoint {
    node: Node,
    path: DevicePath,
    device_name: String,
    device: Option<DeviceId>,
    peer_info: Option<Result<DeviceInfo, InfoError>>,
    transfer: Option<Transfer>,
    numbers: AutoDeviceNumbers,
    advertised: Vec<DeviceId>,
    bind_all: bool,
}

impl ControllerEndpoint {
    /// A controller for the device named `device_name` (any number and network; its blocks
    /// are bound dynamically).
    pub fn new(device_name: &str) -> Self {
        Self::for_path(DevicePath {
            name: device_name.to_owned(),
            nr: None,
            network: None,
        })
    }

    /// A controller for the device at `path` (e.g. parsed from `gina3.cafenet`).
    pub fn for_path(path: DevicePath) -> Self {
        Self::for_path_with_ids(path, FIRST_MBLK_ID..MBLK_ID_LIMIT)
    }

    /// [`ControllerEndpoint::for_path`] with our block ids taken from `ids` (cores sharing one
    /// connection need disjoint ranges).
    pub fn for_path_with_ids(path: DevicePath, ids: std::ops::Range<u32>) -> Self {
        Self {
            node: Node::with_ids(Role::Controller, ids),
            device_name: path.name.clone(),
            path,
            device: None,
            peer_info: None,
            transfer: None,
            numbers: AutoDeviceNumbers::new(),
            advertised: Vec::new(),
            bind_all: false,
        }
    }

    /// A controller that binds the blocks of every device the peer advertises (to list them;
    /// transfers need [`ControllerEndpoint::for_path`]).
    pub fn all() -> Self {
        let mut ep = Self::new("");
        ep.bind_all = true;
        ep
    }

    /// The decoded `info` block of an advertised device (bound with
    /// [`ControllerEndpoint::all`]); `None` until its content arrived.
    pub fn info_of(&self, dev: &DeviceId) -> Option<DeviceInfo> {
        let b = self.block_of(dev, "info")?;
        DeviceInfo::decode(b.data()).ok()
    }

    /// Block `name` of an advertised device.
    pub fn block_of(&self, dev: &DeviceId, name: &str) -> Option<&Mblk> {
        self.node.block(self.node.find(name, Some(dev))?)
    }

    /// Every device whose blocks the peer announced (the peer itself, and behind a server the
    /// devices connected to it), in order of first appearance, under the numbers this
    /// controller sees (automatic numbers mapped, spec §2.9).
    pub fn advertised(&self) -> &[DeviceId] {
        &self.advertised
    }

    /// The advertised devices that match our path (more than one: the path is ambiguous).
    pub fn candidates(&self) -> Vec<&DeviceId> {
        self.advertised
            .iter()
            .filter(|d| self.path.matches(d))
            .collect()
    }

    /// The device our blocks are bound to, once its first block was announced.
    pub fn device(&self) -> Option<&DeviceId> {
        self.device.as_ref()
    }

    /// The blocks.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The device's decoded `info`, once received.
    pub fn peer_info(&self) -> Option<&Result<DeviceInfo, InfoError>> {
        self.peer_info.as_ref()
    }

    /// Handles one connection event; queue the returned infos (replies) in order.
    ///
    /// At `Authenticated` a peer that sent device number 0 gets its automatic number: the one
    /// in [`PeerIdentity::assigned_nr`](crate::proto::conn::PeerIdentity) when the owner
    /// assigned it, else one from this core's own allocator (9001, … by unique id).
    pub fn handle(&mut self, conn: ConnId, ev: ConnEvent) -> Result<NodeOutput, NodeError> {
        if let ConnEvent::Authenticated {
            peer,
            network_name,
            send_frame_size,
            framing,
            ..
        } = &ev
        {
            let auto_nr = match peer.assigned_nr {
                Some(n) => Some(n),
                None if peer.device_nr == 0 => self.numbers.assign(peer.unique_id.as_ref()),
                None => None,
            };
            self.node.connect_as(
                conn,
                ConnSetup {
                    role: Role::Controller,
                    network: network_name.clone(),
                    frame_size: *send_frame_size,
                    auto_nr,
                    framing: *framing,
                },
            );
            return Ok(NodeOutput::default());
        }
        if let ConnEvent::MblkInfo(info) = &ev {
            let (key, _) = self.node.info_key(conn, info);
            let wanted = self.path.matches(&key) && self.device.as_ref().is_none_or(|d| *d == key);
            if !self.advertised.contains(&key) {
                self.advertised.push(key.clone());
            }
            if !wanted && !self.bind_all {
                return Ok(NodeOutput::default());
            }
            if wanted && self.device.is_none() && !self.bind_all {
                self.device = Some(key);
            }
        }
        let out = self.node.handle(conn, ev)?;
        let info_ix = self.node.find("info", self.device.as_ref());
        for (ix, _) in &out.changed {
            if Some(*ix) == info_ix
                && let Some(b) = self.node.block(*ix)
            {
                self.peer_info = Some(DeviceInfo::decode(b.data()));
            }
        }
        Ok(out)
    }

    /// A connection closed.
    pub fn disconnect(&mut self, conn: ConnId) {
        self.node.disconnect(conn);
    }

    fn conf(&self) -> Result<(usize, usize, &DeviceInfo), EndpointError> {
        let not_ready = || EndpointError::NotReady(self.device_name.clone());
        let dev = self.device.as_ref().ok_or_else(not_ready)?;
        let info = match &self.peer_info {
            Some(Ok(i)) => i,
            Some(Err(e)) => return Err(e.clone().into()),
            None => return Err(not_ready()),
        };
        let exp = self
            .node
            .find("conf_exp", Some(dev))
            .ok_or_else(not_ready)?;
        let imp = self
            .node
            .find("conf_imp", Some(dev))
            .ok_or_else(not_ready)?;
        Ok((exp, imp, info))
    }

    fn signals(&self, dir: Direction) -> Result<StreamSignals, EndpointError> {
        let (_, _, info) = self.conf()?;
        let (e, i) = (info.block("conf_exp"), info.block("conf_imp"));
        e.zip(i)
            .and_then(|(e, i)| StreamSignals::resolve(dir, e, i))
            .ok_or_else(|| EndpointError::Missing("stream signals in the device's info".into()))
    }

    /// True when the device's info and conf blocks are known and its stream states are
    /// CONNECTED (its conf_exp key frame arrived), so a transfer can start.
    pub fn ready(&self) -> bool {
        let Ok((exp_ix, imp_ix, _)) = self.conf() else {
            return false;
        };
        let (Some(exp), Some(imp)) = (self.node.block(exp_ix), self.node.block(imp_ix)) else {
            return false;
        };
        let connected = |dir| {
            self.signals(dir).ok().is_some_and(|s| {
                s.state
                    .state(exp)
                    .is_ok_and(|b| b & crate::proto::signals::STATE_CONNECTED != 0)
            })
        };
        imp.remote_id_known() && connected(Direction::ToDevice) && connected(Direction::FromDevice)
    }

    /// Starts an upload to `select`.
    pub fn start_upload(&mut self, select: i64) -> Result<(), EndpointError> {
        if self.transfer.is_some() {
            return Err(EndpointError::Busy);
        }
        let sig = self.signals(Direction::ToDevice)?;
        self.transfer = Some(Transfer::Upload(ControllerWriter::new(sig, select)));
        Ok(())
    }

    /// Starts a download of `select`.
    pub fn start_download(&mut self, select: i64) -> Result<(), EndpointError> {
        if self.transfer.is_some() {
            return Err(EndpointError::Busy);
        }
        let sig = self.signals(Direction::FromDevice)?;
        self.transfer = Some(Transfer::Download(ControllerReader::new(sig, select)));
        Ok(())
    }

    /// Asks the running transfer to interrupt.
    pub fn abort(&mut self) {
        match &mut self.transfer {
            Some(Transfer::Upload(w)) => w.abort(),
            Some(Transfer::Download(r)) => r.abort(),
            None => {}
        }
    }

    /// Runs the transfer once; the data comes from `source` (upload) or goes to `sink`
    /// (download). Once it returns something other than `Running` the transfer is over.
    pub fn poll_transfer(
        &mut self,
        now: Instant,
        source: &mut dyn ChunkSource,
        sink: &mut dyn ChunkSink,
    ) -> Result<Progress, EndpointError> {
        let (exp_ix, imp_ix, _) = self.conf()?;
        let Some((exp, imp)) = self.node.pair_mut(exp_ix, imp_ix) else {
            return Err(EndpointError::NotReady(self.device_name.clone()));
        };
        let progress = match &mut self.transfer {
            Some(Transfer::Upload(w)) => w.poll(exp, imp, now, source),
            Some(Transfer::Download(r)) => r.poll(exp, imp, now, sink),
            None => return Err(EndpointError::Missing("transfer".into())),
        };
        if progress != Progress::Running {
            self.transfer = None;
        }
        Ok(progress)
    }

    /// When [`ControllerEndpoint::poll_transfer`] must run again even without received data.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.transfer {
            Some(Transfer::Upload(w)) => w.poll_timeout(),
            Some(Transfer::Download(r)) => r.poll_timeout(),
            None => None,
        }
    }

    /// The device's block `name` and its signal layout from the device's info.
    pub fn device_block(&self, name: &str) -> Option<(&Mblk, &BlockLayout)> {
        let dev = self.device.as_ref()?;
        let layout = match &self.peer_info {
            Some(Ok(info)) => info.block(name)?,
            _ => return None,
        };
        Some((self.node.block(self.node.find(name, Some(dev))?)?, layout))
    }

    /// The device's `tod_err` (its verdict on the last upload), if connected.
    pub fn device_status(&self) -> Option<u8> {
        let sig = self.signals(Direction::ToDevice).ok()?;
        self.exp_value(&sig.err)
    }

    /// The device's `tod_state` (0 idle, 1 running), if connected.
    pub fn device_tod_state(&self) -> Option<u8> {
        let sig = self.signals(Direction::ToDevice).ok()?;
        self.exp_value(&sig.state)
    }

    fn exp_value(&self, sig: &crate::proto::signals::Signal) -> Option<u8> {
        let (exp_ix, _, _) = self.conf().ok()?;
        let exp = self.node.block(exp_ix)?;
        let (v, state) = sig.get_int(exp).ok()?;
        (state & crate::proto::signals::STATE_CONNECTED != 0).then_some(v as u8)
    }

    /// Data frames for `conn` (see [`Node::transmit`]).
    pub fn transmit(&mut self, conn: ConnId, frame_size: usize, max: usize) -> Vec<DataFrame> {
        self.node.transmit(conn, frame_size, max)
    }
}
