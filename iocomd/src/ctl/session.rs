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

/// How long the peer's block announcements must have been quiet, with none of the requested
/// device's, before the device is taken to be not there.
const SETTLE: Duration = Duration::from_millis(1500);

/// The session's state besides the phase.
pub(super) struct Core<'p> {
    pub(super) device: DevicePath,
    pub(super) name: String,
    /// The full path of the device found (`gina` → `gina9001.cafenet`).
    pub(super) resolved: Option<String>,
    /// Who the peer said it is (the device itself, or a server such as frank).
    pub(super) peer: Option<String>,
    pub(super) rx: mpsc::Receiver<NetEvent>,
    pub(super) ep: ControllerEndpoint,
    ids: std::ops::Range<u32>,
    pub(super) conn: Option<(ConnId, ConnHandle)>,
    pub(super) authenticated: bool,
    /// When we authenticated, then when the peer last announced a block.
    last_news: Option<Instant>,
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
        rx: mpsc::Receiver<NetEvent>,
        ids: std::ops::Range<u32>,
        progress: &'p mut (dyn FnMut(Progress) + Send),
    ) -> Self {
        Self {
            device: device.clone(),
            name: device.to_string(),
            resolved: None,
            peer: None,
            rx,
            ep: ControllerEndpoint::for_path_with_ids(device.to_proto(), ids.clone()),
            ids,
            conn: None,
            authenticated: false,
            last_news: None,
            frame_size: 0,
            infos: Vec::new(),
            status: None,
            progress,
        }
    }

    /// A session that lists every device the peer advertises (`iocomctl devices`); `what`
    /// names the address in errors.
    pub(super) fn listing(
        what: &str,
        rx: mpsc::Receiver<NetEvent>,
        progress: &'p mut (dyn FnMut(Progress) + Send),
    ) -> Self {
        let device = DevicePath {
            name: what.to_owned(),
            nr: None,
            network: None,
        };
        let mut core = Self::new(&device, rx, ALL_IDS, progress);
        core.ep = ControllerEndpoint::all();
        core
    }

    /// True when the peer's block announcements have been quiet for [`SETTLE`].
    pub(super) fn settled(&self, now: Instant) -> bool {
        self.last_news
            .is_some_and(|t| now.duration_since(t) >= SETTLE)
    }

    /// Starts over on a new connection (same device, same progress callback).
    pub(super) fn reset(&mut self, rx: mpsc::Receiver<NetEvent>) {
        self.rx = rx;
        self.ep = ControllerEndpoint::for_path_with_ids(self.device.to_proto(), self.ids.clone());
        self.conn = None;
        self.authenticated = false;
        self.last_news = None;
        self.frame_size = 0;
        self.infos.clear();
        self.status = None;
    }

    /// The device's name in results: the full path once found.
    pub(super) fn shown_name(&self) -> String {
        self.resolved.clone().unwrap_or_else(|| self.name.clone())
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
                let mut authenticated = None;
                if let ConnEvent::Authenticated {
                    peer,
                    send_frame_size,
                    network_name,
                    ..
                } = &event
                {
                    authenticated = Some((peer.clone(), network_name.clone()));
                    self.authenticated = true;
                    self.last_news = Some(Instant::now());
                    self.frame_size = if *send_frame_size == 0 {
                        crate::proto::frame::SOCKET_FRAME_SIZE as usize
                    } else {
                        *send_frame_size as usize
                    };
                    (self.progress)(Progress::Authenticated {
                        device: self.name.clone(),
                        frame_size: u32::try_from(self.frame_size).unwrap_or(u32::MAX),
                        peer_frame_size: peer.frame_size,
                    });
                }
                if matches!(event, ConnEvent::MblkInfo(_)) {
                    self.last_news = Some(Instant::now());
                }
                let out = self.ep.handle(id, event).map_err(|e| CtlError::Dropped {
                    device: self.name.clone(),
                    reason: format!("protocol error: {e}"),
                })?;
                if let Some((peer, network)) = authenticated {
                    let nr = peer
                        .assigned_nr
                        .or_else(|| self.ep.node().auto_nr(id))
                        .unwrap_or(peer.device_nr);
                    let net = if crate::proto::auth::is_auto_network(&peer.network_name) {
                        network
                    } else {
                        peer.network_name.clone()
                    };
                    self.peer = Some(if nr == 0 {
                        format!("{}.{net}", peer.user_name)
                    } else {
                        format!("{}{nr}.{net}", peer.user_name)
                    });
                }
                if self.resolved.is_none()
                    && let Some(d) = self.ep.device()
                {
                    let found = self.device.resolved(d);
                    self.resolved = Some(found.clone());
                    let via = self.peer.clone().filter(|p| *p != found);
                    (self.progress)(Progress::Located { device: found, via });
                }
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
        let exp = self.ep.device_block("conf_exp").map(|b| b.0);
        let imp = self.ep.device_block("conf_imp").map(|b| b.0);
        let (Some(exp), Some(imp), Some(sig)) = (exp, imp, info.signal("conf_exp", "tod_state"))
        else {
            return false;
        };
        let connected = sig.state(exp).is_ok_and(|s| s & STATE_CONNECTED != 0);
        connected && imp.has_source(self.conn_id()) && self.ep.ready()
    }

    pub(super) fn exp_block(&self) -> Option<&crate::proto::mblk::Mblk> {
        self.ep.device_block(super::names::BLOCK).map(|b| b.0)
    }

    pub(super) fn report(&self) -> DeviceReport {
        let tod_err = self.ep.device_status();
        let mut r = match &self.status {
            Some(s) => s.read(self.exp_block(), tod_err),
            None => DeviceReport {
                tod_err,
                ..DeviceReport::default()
            },
        };
        r.iocomd = self.status.as_ref().is_some_and(StatusSignals::present);
        r.tod_state = self.ep.device_tod_state();
        r
    }

    /// The requested device among those the peer advertises: an error when the path is
    /// ambiguous, or when the announcements have settled without it.
    fn located(&self, now: Instant) -> Result<bool, CtlError> {
        let cands = self.ep.candidates();
        if cands.len() > 1 {
            return Err(CtlError::Ambiguous {
                device: self.name.clone(),
                matches: cands
                    .iter()
                    .map(|d| self.device.resolved(d))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        if self.ep.device().is_some() {
            return Ok(true);
        }
        if self.settled(now) {
            let others: Vec<String> = self
                .ep
                .advertised()
                .iter()
                .map(|d| self.device.resolved(d))
                .filter(|p| Some(p) != self.peer.as_ref())
                .collect();
            return Err(CtlError::WrongDevice {
                device: self.name.clone(),
                found: self.peer.clone().unwrap_or_else(|| "?".into()),
                advertised: if others.is_empty() {
                    String::new()
                } else {
                    format!(" (devices behind it: {})", others.join(", "))
                },
            });
        }
        Ok(false)
    }

    /// Waits for authentication, the device's info, stream signals and (when published) its
    /// status signals. `need_status`: fail if the device has no status signals.
    pub(super) async fn ready(
        &mut self,
        deadline: Instant,
        waited: Duration,
        need_status: bool,
    ) -> Result<DeviceReport, CtlError> {
        self.run_until(deadline, "waiting for the device", waited, |c, now| {
            if !c.authenticated || !c.located(now)? {
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

    /// The first wait of a session: the connection (connect timeout) or the device connecting
    /// up (listen timeout), then [`Core::ready`] within the ready timeout from there.
    pub(super) async fn first_ready(
        &mut self,
        target: &Target,
        opts: &ConnectOptions,
        need_status: bool,
    ) -> Result<DeviceReport, CtlError> {
        let t = &opts.timeouts;
        let (first, what) = match target.transport {
            Transport::Connect(_) | Transport::Serial(_) => {
                (t.connect, "connecting and authenticating")
            }
            Transport::Listen(_) => (t.listen, "waiting for the device to connect up"),
        };
        self.run_until(Instant::now() + first, what, first, |c, _| {
            Ok(if c.authenticated {
                Step::Done(())
            } else {
                Step::Wait
            })
        })
        .await?;
        self.ready(Instant::now() + t.ready, t.ready, need_status)
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
        Some(Ok((rx, _))) => Ok((links, rx)),
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

/// Reads the device's status; a plain IOCOM device (no iocomd status signals) is reported
/// with its `tod_state`/`tod_err` and [`DeviceReport::iocomd`] false.
/// Connect sequences a status query over a serial line may take. A device whose confirm reply
/// came later than it waits starts its sequence over; our end, connected by then, takes that
/// `FD` for a frame-number error and drops the connection, as the C library does (transport
/// spec §4.5). The device is connecting again at that moment, so the query connects again.
const SERIAL_STATUS_TRIES: u32 = 3;

/// Pause before a status query connects again.
const STATUS_RETRY_DELAY: std::time::Duration = std::time::Duration::from_millis(300);

pub(crate) async fn status(opts: &StatusOptions) -> Result<DeviceReport, CtlError> {
    let serial = matches!(opts.target.transport, super::Transport::Serial(_));
    let mut left = if serial { SERIAL_STATUS_TRIES } else { 1 };
    loop {
        left -= 1;
        match status_once(opts).await {
            Err(CtlError::Dropped { reason, .. }) if left > 0 => {
                tracing::debug!(%reason, "the serial connection dropped; connecting again");
                tokio::time::sleep(STATUS_RETRY_DELAY).await;
            }
            r => return r,
        }
    }
}

async fn status_once(opts: &StatusOptions) -> Result<DeviceReport, CtlError> {
    let (links, rx) = open_one(&opts.target, &opts.connect).await?;
    let mut ignore = |_p: Progress| {};
    let mut core = Core::new(&opts.target.device, rx, ALL_IDS, &mut ignore);
    let r = core.first_ready(&opts.target, &opts.connect, false).await;
    let r = r.map(|mut r| {
        r.device = core.resolved.clone();
        r
    });
    drop(core);
    links.close().await;
    r
}

/// The block ids of a session that has its connection to itself.
pub(super) const ALL_IDS: std::ops::Range<u32> =
    crate::proto::node::FIRST_MBLK_ID..crate::proto::node::MBLK_ID_LIMIT;
