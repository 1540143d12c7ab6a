//! One controller session per device: the owner of a [`ControllerEndpoint`] fed by the events
//! of its connection. A session goes through named phases, each a wait with its own deadline:
//!
//! ```text
//! Auth ─▶ Ready ─▶ Transfer ─▶ Result ─▶ done (PushOutcome)
//!   │       │         │          │
//!   └───────┴─────────┴──────────┴──▶ CtlError (dropped, refused, timeout, device verdict)
//! ```
//!
//! This module has the session core and `status`; the push phases are in [`super::push`].

use super::link::{self, Links};
use super::report::StatusSignals;
use super::{
    ConnectOptions, CtlError, DevicePath, DeviceReport, Progress, StatusOptions, Target, Transport,
};
use crate::net::{ConnHandle, ConnId, NetEvent};
use crate::proto::conn::{CloseReason, ConnEvent};
use crate::proto::endpoint::ControllerEndpoint;
use crate::proto::frame::FrameFlags;
use crate::proto::signals::STATE_CONNECTED;
use crate::proto::sysframe::SystemFrame;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Timer tick for stream timeouts and pending frames.
const TICK: Duration = Duration::from_millis(20);
/// Data frames queued per flush (below the driver's command queue of 256).
const FRAMES_PER_FLUSH: usize = 128;
/// Events handled before the next step.
const EVENTS_PER_STEP: usize = 256;

/// The session's state besides the phase.
pub(super) struct Core<'p> {
    pub(super) device: DevicePath,
    pub(super) name: String,
    /// Connect mode: the peer's identity is checked here (the listener checks it otherwise).
    pub(super) check_identity: bool,
    pub(super) rx: mpsc::Receiver<NetEvent>,
    pub(super) ep: ControllerEndpoint,
    pub(super) conn: Option<(ConnId, ConnHandle)>,
    pub(super) authenticated: bool,
    pub(super) frame_size: usize,
    pub(super) infos: Vec<SystemFrame>,
    pub(super) status: Option<StatusSignals>,
    pub(super) progress: &'p mut (dyn FnMut(Progress) + Send),
}

/// What one step of a phase decided.
pub(super) enum Step<T> {
    Wait,
    Done(T),
}

impl<'p> Core<'p> {
    pub(super) fn new(
        device: &DevicePath,
        check_identity: bool,
        rx: mpsc::Receiver<NetEvent>,
        progress: &'p mut (dyn FnMut(Progress) + Send),
    ) -> Self {
        Self {
            device: device.clone(),
            name: device.to_string(),
            check_identity,
            rx,
            ep: ControllerEndpoint::for_path(device.to_proto()),
            conn: None,
            authenticated: false,
            frame_size: 0,
            infos: Vec::new(),
            status: None,
            progress,
        }
    }

    /// Starts over on a new connection (same device, same progress callback).
    pub(super) fn reset(&mut self, rx: mpsc::Receiver<NetEvent>) {
        self.rx = rx;
        self.ep = ControllerEndpoint::for_path(self.device.to_proto());
        self.conn = None;
        self.authenticated = false;
        self.frame_size = 0;
        self.infos.clear();
        self.status = None;
    }

    pub(super) fn conn_id(&self) -> ConnId {
        self.conn.as_ref().map_or(0, |c| c.0)
    }

    /// Handles one connection event.
    pub(super) fn on_event(&mut self, ev: NetEvent) -> Result<(), CtlError> {
        match ev {
            NetEvent::Connected { id, peer, handle } => {
                if self.conn.is_none() {
                    self.conn = Some((id, handle));
                    (self.progress)(Progress::Connected { peer });
                }
            }
            NetEvent::Conn { id, event } if id == self.conn_id() => {
                if let ConnEvent::Authenticated {
                    peer,
                    send_frame_size,
                    ..
                } = &event
                {
                    let d = &self.device;
                    let net_ok = peer.network_name == d.network
                        || crate::proto::auth::is_auto_network(&peer.network_name);
                    if self.check_identity
                        && (peer.user_name != d.name || peer.device_nr != d.nr || !net_ok)
                    {
                        return Err(CtlError::WrongDevice {
                            device: self.name.clone(),
                            found: format!("{}.{}", peer.account_name(), peer.network_name),
                        });
                    }
                    self.authenticated = true;
                    self.frame_size = if *send_frame_size == 0 {
                        crate::proto::frame::SOCKET_FRAME_SIZE as usize
                    } else {
                        *send_frame_size as usize
                    };
                    (self.progress)(Progress::Authenticated {
                        device: self.name.clone(),
                    });
                }
                let out = self.ep.handle(id, event).map_err(|e| CtlError::Dropped {
                    device: self.name.clone(),
                    reason: format!("protocol error: {e}"),
                })?;
                self.infos
                    .extend(out.infos.into_iter().map(SystemFrame::MblkInfo));
            }
            NetEvent::Conn { .. } => {}
            NetEvent::QueueFailed { error, .. } => {
                return Err(CtlError::Internal(format!("frame not queued: {error}")));
            }
            NetEvent::Closed { id, reason } if id == self.conn_id() => {
                self.ep.disconnect(id);
                return Err(self.closed_error(&reason));
            }
            NetEvent::Closed { .. } => {}
        }
        Ok(())
    }

    pub(super) fn closed_error(&self, reason: &CloseReason) -> CtlError {
        let pre_auth_drop = matches!(
            reason,
            CloseReason::PeerClosed | CloseReason::Truncated { .. } | CloseReason::Io(_)
        );
        if !self.authenticated && pre_auth_drop {
            CtlError::AuthRefused {
                device: self.name.clone(),
                reason: format!("the device closed the connection: {reason}"),
            }
        } else {
            CtlError::Dropped {
                device: self.name.clone(),
                reason: reason.to_string(),
            }
        }
    }

    /// Queues our info replies and the data frames of changed blocks.
    pub(super) async fn flush(&mut self) -> Result<(), CtlError> {
        let Some((id, handle)) = self.conn.clone() else {
            return Ok(());
        };
        let gone = |_| CtlError::Dropped {
            device: self.name.clone(),
            reason: "connection task ended".into(),
        };
        for f in std::mem::take(&mut self.infos) {
            handle.queue_system(f).await.map_err(gone)?;
        }
        if !self.authenticated {
            return Ok(());
        }
        for f in self.ep.transmit(id, self.frame_size, FRAMES_PER_FLUSH) {
            handle
                .queue_data(f.mblk_id, f.addr, FrameFlags::from_bits(f.flags), f.payload)
                .await
                .map_err(gone)?;
        }
        Ok(())
    }

    /// Runs `step` after every batch of events until it is done, or fails at `deadline`.
    pub(super) async fn run_until<T>(
        &mut self,
        deadline: Instant,
        what: &'static str,
        waited: Duration,
        mut step: impl FnMut(&mut Self, Instant) -> Result<Step<T>, CtlError>,
    ) -> Result<T, CtlError> {
        loop {
            if let Step::Done(t) = step(self, Instant::now())? {
                self.flush().await?;
                return Ok(t);
            }
            self.flush().await?;
            let now = Instant::now();
            if now >= deadline {
                return Err(CtlError::Timeout {
                    device: self.name.clone(),
                    what,
                    waited,
                });
            }
            let busy = self
                .conn
                .as_ref()
                .is_some_and(|(id, _)| self.ep.node().has_pending(*id));
            let first = if busy {
                // Frames are waiting: take what has arrived and go on at once. (A zero
                // timeout would not do: tokio's timer fires on whole milliseconds.)
                match self.rx.try_recv() {
                    Ok(ev) => Some(ev),
                    Err(mpsc::error::TryRecvError::Empty) => {
                        tokio::task::yield_now().await;
                        None
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => return Err(self.ended()),
                }
            } else {
                match tokio::time::timeout(TICK.min(deadline - now), self.rx.recv()).await {
                    Ok(Some(ev)) => Some(ev),
                    Ok(None) => return Err(self.ended()),
                    Err(_) => None,
                }
            };
            if let Some(ev) = first {
                self.on_event(ev)?;
                for _ in 0..EVENTS_PER_STEP {
                    match self.rx.try_recv() {
                        Ok(ev) => self.on_event(ev)?,
                        Err(_) => break,
                    }
                }
            }
        }
    }

    fn ended(&self) -> CtlError {
        CtlError::Dropped {
            device: self.name.clone(),
            reason: "connection task ended".into(),
        }
    }

    /// The device's conf_exp has arrived (tod_state connected) and our conf_imp is bound.
    pub(super) fn streams_ready(&self) -> bool {
        let Some(Ok(info)) = self.ep.peer_info() else {
            return false;
        };
        let node = self.ep.node();
        let exp = node.find("conf_exp", None).and_then(|i| node.block(i));
        let imp = node.find("conf_imp", None).and_then(|i| node.block(i));
        let (Some(exp), Some(imp), Some(sig)) = (exp, imp, info.signal("conf_exp", "tod_state"))
        else {
            return false;
        };
        let connected = sig.state(exp).is_ok_and(|s| s & STATE_CONNECTED != 0);
        connected && imp.has_source(self.conn_id()) && self.ep.ready()
    }

    pub(super) fn exp_block(&self) -> Option<&crate::proto::mblk::Mblk> {
        let node = self.ep.node();
        node.find(super::names::BLOCK, None)
            .and_then(|i| node.block(i))
    }

    pub(super) fn report(&self) -> DeviceReport {
        let tod_err = self.ep.device_status();
        match &self.status {
            Some(s) => s.read(self.exp_block(), tod_err),
            None => DeviceReport {
                tod_err,
                ..DeviceReport::default()
            },
        }
    }

    /// Waits for authentication, the device's info, stream signals and (when published) its
    /// status signals. `need_status`: fail if the device has no status signals.
    pub(super) async fn ready(
        &mut self,
        deadline: Instant,
        waited: Duration,
        need_status: bool,
    ) -> Result<DeviceReport, CtlError> {
        self.run_until(deadline, "waiting for the device", waited, |c, _| {
            if !c.authenticated {
                return Ok(Step::Wait);
            }
            let info = match c.ep.peer_info() {
                None => return Ok(Step::Wait),
                Some(Err(e)) => {
                    return Err(CtlError::NotReady {
                        device: c.name.clone(),
                        reason: format!("its info block is unusable: {e}"),
                    });
                }
                Some(Ok(info)) => info,
            };
            if c.status.is_none() {
                let s = StatusSignals::locate(info);
                if !s.present() && need_status {
                    return Err(CtlError::NotReady {
                        device: c.name.clone(),
                        reason: "it publishes no iocomd status signals (upd_seq, upd_code)".into(),
                    });
                }
                c.status = Some(s);
            }
            let status_known = match (&c.status, c.exp_block()) {
                (Some(s), Some(exp)) => !s.present() || s.known(exp),
                (Some(s), None) => !s.present(),
                (None, _) => false,
            };
            if status_known && c.streams_ready() {
                Ok(Step::Done(c.report()))
            } else {
                Ok(Step::Wait)
            }
        })
        .await
    }

    pub(super) fn ring(&self) -> usize {
        match self.ep.peer_info() {
            Some(Ok(info)) => info.signal("conf_imp", "tod_buf").map_or(0, |s| s.n),
            _ => 0,
        }
    }
}

/// Connects one target.
pub(super) async fn open_one(
    target: &Target,
    opts: &ConnectOptions,
) -> Result<(Links, mpsc::Receiver<NetEvent>), CtlError> {
    let (links, mut rxs) =
        link::open(&[(target.device.clone(), target.transport.clone())], opts).await;
    match rxs.pop() {
        Some(Ok(rx)) => Ok((links, rx)),
        Some(Err(e)) => {
            links.close().await;
            Err(e)
        }
        None => {
            links.close().await;
            Err(CtlError::Internal("no connection".into()))
        }
    }
}

pub(super) fn first_deadline(target: &Target, opts: &ConnectOptions) -> (Instant, Duration) {
    let t = &opts.timeouts;
    let waited = match target.transport {
        Transport::Connect(_) | Transport::Serial(_) => t.connect + t.ready,
        Transport::Listen(_) => t.listen + t.ready,
    };
    (Instant::now() + waited, waited)
}

pub(crate) async fn status(opts: &StatusOptions) -> Result<DeviceReport, CtlError> {
    let (links, rx) = open_one(&opts.target, &opts.connect).await?;
    let check = opts.target.transport.is_direct();
    let mut ignore = |_p: Progress| {};
    let mut core = Core::new(&opts.target.device, check, rx, &mut ignore);
    let (deadline, waited) = first_deadline(&opts.target, &opts.connect);
    let r = core.ready(deadline, waited, true).await;
    drop(core);
    links.close().await;
    r
}
