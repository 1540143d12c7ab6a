//! One controller session per device: the owner of a [`ControllerEndpoint`] fed by the events
//! of its connection. A session goes through named phases, each a wait with its own deadline:
//!
//! ```text
//! Auth ─▶ Ready ─▶ Transfer ─▶ Result ─▶ done (PushOutcome)
//!   │       │         │          │
//!   └───────┴─────────┴──────────┴──▶ CtlError (dropped, refused, timeout, device verdict)
//! ```
//!
//! The upload reads the file in chunks as the device's `tod_buf` ring has room
//! ([`FileSource`]); the protocol work (ring, CRC-16, handshakes) is the stream machine's.

use super::link::{self, Links};
use super::report::{StatusSignals, classify, classify_tod_err, tod_err_is_final};
use super::{
    ConnectOptions, CtlError, DevicePath, DeviceReport, ManyResult, Progress, PushOptions,
    PushOutcome, StatusOptions, Target, Transport, UpdState,
};
use crate::net::{ConnHandle, ConnId, NetEvent};
use crate::proto::conn::{CloseReason, ConnEvent};
use crate::proto::endpoint::ControllerEndpoint;
use crate::proto::frame::FrameFlags;
use crate::proto::signals::STATE_CONNECTED;
use crate::proto::stream::controller::Progress as StreamProgress;
use crate::proto::stream::{ChunkSink, ChunkSource, SourceRead, status};
use crate::proto::sysframe::SystemFrame;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Timer tick for stream timeouts and pending frames.
const TICK: Duration = Duration::from_millis(20);
/// Data frames queued per flush (below the driver's command queue of 256).
const FRAMES_PER_FLUSH: usize = 128;
/// Events handled before the next step.
const EVENTS_PER_STEP: usize = 256;
/// After a failed transfer, how long to wait for the device to publish why.
const FAILURE_GRACE: Duration = Duration::from_secs(5);
/// Pause between reconnect attempts while waiting for a restarted device.
const RECONNECT_DELAY: Duration = Duration::from_millis(500);
/// Least time between two transfer progress events.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// Reads the package file in chunks for the stream writer.
pub(crate) struct FileSource {
    file: std::fs::File,
    bytes: u64,
    error: Option<std::io::Error>,
}

impl ChunkSource for FileSource {
    fn open(&mut self, _select: i64) -> Result<(), u8> {
        Ok(())
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<SourceRead, u8> {
        match self.file.read(buf) {
            Ok(0) => Ok(SourceRead::End),
            Ok(n) => {
                self.bytes += n as u64;
                Ok(SourceRead::Bytes(n))
            }
            Err(e) => {
                self.error = Some(e);
                Err(status::READING_FILE_FAILED)
            }
        }
    }
}

/// We never download.
struct NoSink;

impl ChunkSink for NoSink {
    fn open(&mut self, _select: i64) -> Result<(), u8> {
        Err(status::NO_ACCESS_RIGHT)
    }
    fn write(&mut self, _chunk: &[u8]) -> Result<(), u8> {
        Err(status::NO_ACCESS_RIGHT)
    }
    fn close(&mut self, _ok: bool) {}
}

/// The session's state besides the phase.
struct Core<'p> {
    device: DevicePath,
    name: String,
    /// Connect mode: the peer's identity is checked here (the listener checks it otherwise).
    check_identity: bool,
    rx: mpsc::Receiver<NetEvent>,
    ep: ControllerEndpoint,
    conn: Option<(ConnId, ConnHandle)>,
    authenticated: bool,
    frame_size: usize,
    infos: Vec<SystemFrame>,
    status: Option<StatusSignals>,
    progress: &'p mut (dyn FnMut(Progress) + Send),
}

/// What one step of a phase decided.
enum Step<T> {
    Wait,
    Done(T),
}

impl<'p> Core<'p> {
    fn new(
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
            ep: ControllerEndpoint::new(&device.name),
            conn: None,
            authenticated: false,
            frame_size: 0,
            infos: Vec::new(),
            status: None,
            progress,
        }
    }

    /// Starts over on a new connection (same device, same progress callback).
    fn reset(&mut self, rx: mpsc::Receiver<NetEvent>) {
        self.rx = rx;
        self.ep = ControllerEndpoint::new(&self.device.name);
        self.conn = None;
        self.authenticated = false;
        self.frame_size = 0;
        self.infos.clear();
        self.status = None;
    }

    fn conn_id(&self) -> ConnId {
        self.conn.as_ref().map_or(0, |c| c.0)
    }

    /// Handles one connection event.
    fn on_event(&mut self, ev: NetEvent) -> Result<(), CtlError> {
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

    fn closed_error(&self, reason: &CloseReason) -> CtlError {
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
    async fn flush(&mut self) -> Result<(), CtlError> {
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
    async fn run_until<T>(
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
            let wait = if busy {
                Duration::ZERO
            } else {
                TICK.min(deadline - now)
            };
            match tokio::time::timeout(wait, self.rx.recv()).await {
                Ok(Some(ev)) => {
                    self.on_event(ev)?;
                    for _ in 0..EVENTS_PER_STEP {
                        match self.rx.try_recv() {
                            Ok(ev) => self.on_event(ev)?,
                            Err(_) => break,
                        }
                    }
                }
                Ok(None) => {
                    return Err(CtlError::Dropped {
                        device: self.name.clone(),
                        reason: "connection task ended".into(),
                    });
                }
                Err(_) => {
                    if busy {
                        tokio::task::yield_now().await;
                    }
                }
            }
        }
    }

    /// The device's conf_exp has arrived (tod_state connected) and our conf_imp is bound.
    fn streams_ready(&self) -> bool {
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

    fn exp_block(&self) -> Option<&crate::proto::mblk::Mblk> {
        let node = self.ep.node();
        node.find(super::names::BLOCK, None)
            .and_then(|i| node.block(i))
    }

    fn report(&self) -> DeviceReport {
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
    async fn ready(
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

    fn ring(&self) -> usize {
        match self.ep.peer_info() {
            Some(Ok(info)) => info.signal("conf_imp", "tod_buf").map_or(0, |s| s.n),
            _ => 0,
        }
    }
}

fn file_error(path: &Path) -> impl Fn(std::io::Error) -> CtlError + '_ {
    move |source| CtlError::File {
        path: path.to_owned(),
        source,
    }
}

/// Opens the package file: a readable regular file.
fn open_file(path: &Path) -> Result<(std::fs::File, u64), CtlError> {
    let file = std::fs::File::open(path).map_err(file_error(path))?;
    let meta = file.metadata().map_err(file_error(path))?;
    if !meta.is_file() {
        return Err(CtlError::File {
            path: path.to_owned(),
            source: std::io::Error::other("not a regular file"),
        });
    }
    Ok((file, meta.len()))
}

/// Connects one target.
async fn open_one(
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

fn first_deadline(target: &Target, opts: &ConnectOptions) -> (Instant, Duration) {
    let t = &opts.timeouts;
    let waited = match target.transport {
        Transport::Connect(_) => t.connect + t.ready,
        Transport::Listen(_) => t.listen + t.ready,
    };
    (Instant::now() + waited, waited)
}

pub(crate) async fn push(
    opts: &PushOptions,
    mut progress: impl FnMut(Progress) + Send,
) -> Result<PushOutcome, CtlError> {
    let (file, total) = open_file(&opts.file)?;
    let (links, rx) = open_one(&opts.target, &opts.connect).await?;
    let r = push_on(opts, rx, file, total, &mut progress).await;
    links.close().await;
    r
}

async fn push_on(
    opts: &PushOptions,
    rx: mpsc::Receiver<NetEvent>,
    file: std::fs::File,
    total: u64,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<PushOutcome, CtlError> {
    let t0 = Instant::now();
    let check = matches!(opts.target.transport, Transport::Connect(_));
    let mut core = Core::new(&opts.target.device, check, rx, progress);
    let (deadline, waited) = first_deadline(&opts.target, &opts.connect);
    let before = core
        .ready(deadline, waited, !opts.accept_tod_err_only)
        .await?;
    if let Some(state) = before.state.filter(|s| *s != UpdState::Idle) {
        return Err(CtlError::Device {
            device: core.name.clone(),
            class: super::FailureClass::Busy,
            report: Box::new(DeviceReport {
                message: Some(format!("the device is {} another update", state.label())),
                ..before
            }),
        });
    }
    core.ep
        .start_upload(opts.select)
        .map_err(|e| CtlError::NotReady {
            device: core.name.clone(),
            reason: e.to_string(),
        })?;
    let ring = core.ring();
    (core.progress)(Progress::Started {
        total,
        ring,
        installed_version: before.installed_version.clone(),
    });
    // Transfer.
    let t_transfer = Instant::now();
    let mut source = FileSource {
        file,
        bytes: 0,
        error: None,
    };
    let mut last_emit = Instant::now();
    let mut last_bytes = 0;
    let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
    let result = core
        .run_until(far, "transferring", Duration::ZERO, |c, now| {
            let p =
                c.ep.poll_transfer(now, &mut source, &mut NoSink)
                    .map_err(|e| CtlError::NotReady {
                        device: c.name.clone(),
                        reason: e.to_string(),
                    })?;
            if source.bytes != last_bytes && now.duration_since(last_emit) >= PROGRESS_EVERY {
                last_bytes = source.bytes;
                last_emit = now;
                (c.progress)(Progress::Transfer {
                    bytes: source.bytes,
                    total,
                });
            }
            Ok(match p {
                StreamProgress::Running => Step::Wait,
                done => Step::Done(done),
            })
        })
        .await?;
    if let Some(e) = source.error.take() {
        return Err(file_error(&opts.file)(e));
    }
    let transfer_secs = t_transfer.elapsed().as_secs_f64();
    let (bytes, crc) = match result {
        StreamProgress::Completed { bytes, crc, .. } => {
            (core.progress)(Progress::Transfer { bytes, total });
            (core.progress)(Progress::Transferred { bytes, crc });
            (bytes, crc)
        }
        StreamProgress::Failed(e) => {
            return Err(failed_transfer(&mut core, &before, &e.to_string()).await);
        }
        StreamProgress::Running => return Err(CtlError::Internal("transfer still running".into())),
    };
    // Result.
    let waited = opts.connect.timeouts.result;
    let deadline = Instant::now() + waited;
    let mut last_state = None;
    let mut watch = |c: &mut Core<'_>, reconnected: bool| {
        let r = c.report();
        let shown = (r.state, r.progress);
        if r.state.is_some() && Some(shown) != last_state {
            last_state = Some(shown);
            (c.progress)(Progress::Device {
                state: r.state.unwrap_or(UpdState::Idle),
                percent: r.progress,
            });
        }
        verdict(c, &before, r, reconnected)
    };
    let first = core
        .run_until(
            deadline,
            "waiting for the device's result",
            waited,
            |c, _| watch(c, false),
        )
        .await;
    let report = match (first, &opts.target.transport) {
        // The device went away while installing (e.g. iocomd updated itself and restarted):
        // reconnect and read the result it publishes after the restart.
        (Err(CtlError::Dropped { reason, .. }), Transport::Connect(_)) => {
            (core.progress)(Progress::Reconnecting { reason });
            let mut links = None;
            let r = loop {
                if Instant::now() >= deadline {
                    break Err(CtlError::Timeout {
                        device: core.name.clone(),
                        what: "waiting for the device's result",
                        waited,
                    });
                }
                let rx = match open_one(&opts.target, &opts.connect).await {
                    Ok((l, rx)) => {
                        links = Some(l);
                        rx
                    }
                    Err(CtlError::Connect { .. }) => {
                        tokio::time::sleep(RECONNECT_DELAY).await;
                        continue;
                    }
                    Err(e) => break Err(e),
                };
                core.reset(rx);
                let step = async {
                    core.ready(deadline, waited, true).await?;
                    core.run_until(
                        deadline,
                        "waiting for the device's result",
                        waited,
                        |c, _| watch(c, true),
                    )
                    .await
                };
                match step.await {
                    Err(CtlError::Dropped { .. }) => {
                        if let Some(l) = links.take() {
                            l.close().await;
                        }
                        tokio::time::sleep(RECONNECT_DELAY).await;
                    }
                    r => break r,
                }
            };
            if let Some(l) = links {
                l.close().await;
            }
            r?
        }
        (r, _) => r?,
    };
    Ok(PushOutcome {
        device: core.name.clone(),
        bytes,
        crc,
        transfer_secs,
        total_secs: t0.elapsed().as_secs_f64(),
        report,
    })
}

/// The final verdict once the device published one for this push.
///
/// After a reconnect the stream (and its `tod_err`) belongs to the old connection: the result
/// is `upd_seq` changed, the device idle and a non-empty `upd_code`.
fn verdict(
    c: &Core<'_>,
    before: &DeviceReport,
    r: DeviceReport,
    reconnected: bool,
) -> Result<Step<DeviceReport>, CtlError> {
    let with_status = c.status.as_ref().is_some_and(StatusSignals::present);
    if with_status {
        if r.seq.is_none() || r.seq == before.seq {
            return Ok(Step::Wait);
        }
        let code = r.code.clone().unwrap_or_default();
        if reconnected && (code.is_empty() || r.state != Some(UpdState::Idle)) {
            return Ok(Step::Wait);
        }
        return match classify(&code, r.result) {
            None if reconnected || r.tod_err == Some(status::COMPLETED) => Ok(Step::Done(r)),
            // "ok" but the stream verdict is not there yet: wait for it.
            None if !r.tod_err.is_some_and(tod_err_is_final) => Ok(Step::Wait),
            None => Err(CtlError::Device {
                device: c.name.clone(),
                class: classify_tod_err(r.tod_err.unwrap_or(0))
                    .unwrap_or(super::FailureClass::InstallFailed),
                report: Box::new(r),
            }),
            Some(class) => Err(CtlError::Device {
                device: c.name.clone(),
                class,
                report: Box::new(r),
            }),
        };
    }
    match r.tod_err {
        Some(t) if tod_err_is_final(t) => match classify_tod_err(t) {
            None => Ok(Step::Done(r)),
            Some(class) => Err(CtlError::Device {
                device: c.name.clone(),
                class,
                report: Box::new(r),
            }),
        },
        _ => Ok(Step::Wait),
    }
}

/// After a failed transfer: the device's reason if it publishes one soon, else a transfer error.
async fn failed_transfer(core: &mut Core<'_>, before: &DeviceReport, reason: &str) -> CtlError {
    let new_result = |c: &Core<'_>, r: &DeviceReport| {
        c.status.as_ref().is_some_and(StatusSignals::present)
            && r.seq.is_some()
            && r.seq != before.seq
    };
    // A refusal without a result: a final failure code in tod_err that was not there before.
    let new_refusal = |r: &DeviceReport| {
        r.tod_err
            .is_some_and(|t| tod_err_is_final(t) && t != status::COMPLETED)
            && r.tod_err != before.tod_err
    };
    let r = core
        .run_until(Instant::now() + FAILURE_GRACE, "", FAILURE_GRACE, |c, _| {
            let r = c.report();
            Ok(if new_result(c, &r) || new_refusal(&r) {
                Step::Done(r)
            } else {
                Step::Wait
            })
        })
        .await;
    match r {
        Ok(r) => {
            let class = if new_result(core, &r) {
                classify(r.code.as_deref().unwrap_or_default(), r.result)
            } else {
                r.tod_err.and_then(classify_tod_err)
            };
            CtlError::Device {
                device: core.name.clone(),
                class: class.unwrap_or(super::FailureClass::Transfer),
                report: Box::new(r),
            }
        }
        Err(CtlError::Timeout { .. }) => CtlError::Transfer {
            device: core.name.clone(),
            reason: reason.to_owned(),
        },
        Err(e) => e,
    }
}

pub(crate) async fn status(opts: &StatusOptions) -> Result<DeviceReport, CtlError> {
    let (links, rx) = open_one(&opts.target, &opts.connect).await?;
    let check = matches!(opts.target.transport, Transport::Connect(_));
    let mut ignore = |_p: Progress| {};
    let mut core = Core::new(&opts.target.device, check, rx, &mut ignore);
    let (deadline, waited) = first_deadline(&opts.target, &opts.connect);
    let r = core.ready(deadline, waited, true).await;
    drop(core);
    links.close().await;
    r
}

pub(crate) async fn push_many(
    targets: &[Target],
    connect: &ConnectOptions,
    file: &Path,
    mut progress: impl FnMut(usize, Progress) + Send,
) -> Vec<ManyResult> {
    let pairs: Vec<(DevicePath, Transport)> = targets
        .iter()
        .map(|t| (t.device.clone(), t.transport.clone()))
        .collect();
    let mut results: Vec<Option<Result<PushOutcome, CtlError>>> =
        targets.iter().map(|_| None).collect();
    let mut files = Vec::new();
    for _ in targets {
        match open_file(file) {
            Ok(f) => files.push(f),
            Err(e) => {
                let (kind, msg) = match &e {
                    CtlError::File { source, .. } => (source.kind(), source.to_string()),
                    other => (std::io::ErrorKind::Other, other.to_string()),
                };
                return targets
                    .iter()
                    .map(|t| ManyResult {
                        device: t.device.clone(),
                        result: Err(CtlError::File {
                            path: file.to_owned(),
                            source: std::io::Error::new(kind, msg.clone()),
                        }),
                    })
                    .collect();
            }
        }
    }
    let (links, rxs) = link::open(&pairs, connect).await;
    let (ptx, mut prx) = mpsc::unbounded_channel::<(usize, Progress)>();
    let mut set = tokio::task::JoinSet::new();
    for (i, ((rx, target), (f, total))) in rxs.into_iter().zip(targets).zip(files).enumerate() {
        let rx = match rx {
            Ok(rx) => rx,
            Err(e) => {
                if let Some(slot) = results.get_mut(i) {
                    *slot = Some(Err(e));
                }
                continue;
            }
        };
        let opts = PushOptions::new(target.clone(), connect.clone(), file.to_owned());
        let ptx = ptx.clone();
        set.spawn(async move {
            let mut cb = move |p| {
                let _ = ptx.send((i, p));
            };
            (i, push_on(&opts, rx, f, total, &mut cb).await)
        });
    }
    drop(ptx);
    loop {
        tokio::select! {
            Some((i, p)) = prx.recv() => progress(i, p),
            r = set.join_next() => match r {
                Some(Ok((i, r))) => {
                    if let Some(slot) = results.get_mut(i) {
                        *slot = Some(r);
                    }
                }
                Some(Err(e)) => tracing::error!(error = %e, "push task failed"),
                None => break,
            },
        }
    }
    while let Ok((i, p)) = prx.try_recv() {
        progress(i, p);
    }
    links.close().await;
    targets
        .iter()
        .zip(results)
        .map(|(t, r)| ManyResult {
            device: t.device.clone(),
            result: r.unwrap_or_else(|| Err(CtlError::Internal("push task failed".into()))),
        })
        .collect()
}
