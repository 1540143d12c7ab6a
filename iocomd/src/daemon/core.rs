//! The core loop: owns the connections' device endpoints, the update state machine and the
//! published status; consumes network, helper and internal events from one channel.

use super::helper::{HelperStatus, TxSummary, phase_state};
use super::sink::{NoSource, Note, PushSink};
use super::update::Update;
use super::{CoreEvent, DaemonError};
use results::{finish_spool, outcome_of};

mod results;
use crate::config::{HelperConnection, Settings};
use crate::helper_client::HelperClient;
use crate::net::{ConnHandle, NetEvent};
use crate::proto::conn::{CloseReason, ConnEvent};
use crate::proto::endpoint::{DeviceConfig, DeviceEndpoint};
use crate::proto::frame::FrameFlags;
use crate::proto::info::REFERENCE_RING;
use crate::proto::mblk::DataFrame;
use crate::proto::node::DeviceId;
use crate::proto::password::AuthRejection;
use crate::proto::stream::device::DeviceEvent;
use crate::proto::stream::{Direction, StreamError};
use crate::proto::sysframe::{MblkInfo, SystemFrame};
use crate::status::{DaemonCode, UpdState, UpdateStatus, status_block_def, tod_err};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Frames buffered towards one connection before the core loop stops transmitting to it.
const OUT_QUEUE: usize = 64;
/// Connections served at once (each has its own blocks, about twice `tod_buf` in memory);
/// more are closed at once.
pub const MAX_PEERS: usize = 32;
/// Events handled before the streams are polled and frames transmitted.
const BATCH: usize = 256;
/// When frames are left over for a connection whose queue was full, transmit again after this.
const BACKLOG_RETRY: Duration = Duration::from_millis(2);

/// Something to send on a connection (forwarded by a small task to its [`ConnHandle`]).
#[derive(Debug)]
enum Out {
    Info(MblkInfo),
    Data(DataFrame),
    Close(String),
}

/// One connection.
struct Peer {
    addr: SocketAddr,
    secure: bool,
    user: Option<String>,
    out: mpsc::Sender<Out>,
    ep: Option<DeviceEndpoint>,
    frame_size: usize,
    dirty: bool,
    span: tracing::Span,
}

/// A final result to publish.
struct Outcome {
    number: u16,
    code: String,
    message: String,
    pkg: Option<String>,
    ver: Option<String>,
    installed: Option<String>,
}

impl Outcome {
    fn daemon(code: DaemonCode, message: impl Into<String>) -> Self {
        Self {
            number: code.number(),
            code: code.as_str().to_owned(),
            message: message.into(),
            pkg: None,
            ver: None,
            installed: None,
        }
    }
}

/// The core loop's state.
pub(super) struct Core {
    settings: Settings,
    helper: Option<Arc<HelperClient>>,
    tx: mpsc::Sender<CoreEvent>,
    peers: HashMap<u64, Peer>,
    update: Update,
    status: UpdateStatus,
    published: Option<UpdateStatus>,
    pushes: u64,
    push_span: tracing::Span,
    orphans: Vec<(String, TxSummary)>,
    device_cfg: DeviceConfig,
    notifier: super::notify::StatusNotifier,
}

impl Core {
    pub(super) fn new(
        settings: Settings,
        helper: Option<Arc<HelperClient>>,
        tx: mpsc::Sender<CoreEvent>,
    ) -> Result<Self, DaemonError> {
        let id = super::identity(&settings);
        let device_cfg = DeviceConfig {
            device: DeviceId::new(&id.device_name, id.device_nr, &id.network_name),
            blocks: vec![status_block_def()],
            tod_ring: settings.stream_buffer_size as usize,
            frd_ring: REFERENCE_RING,
        };
        // Fail early on an unusable configuration rather than at the first connection.
        DeviceEndpoint::new(device_cfg.clone())?;
        Ok(Self {
            settings,
            helper,
            tx,
            peers: HashMap::new(),
            update: Update::Idle,
            status: UpdateStatus::default(),
            published: None,
            pushes: 0,
            push_span: tracing::Span::none(),
            orphans: Vec::new(),
            device_cfg,
            notifier: super::notify::StatusNotifier::start(),
        })
    }

    /// Publishes the helper's last result (e.g. after a self-update restart) and resumes
    /// waiting for a transaction it is still running.
    pub(super) async fn load_helper_status(&mut self) {
        let Some(h) = &self.helper else {
            self.status.msg = "install helper not available".into();
            return;
        };
        let text = match h.status().await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "helper Status() failed");
                return;
            }
        };
        let st: HelperStatus = match serde_json::from_str(&text) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "helper Status() answer does not parse");
                return;
            }
        };
        if let Some(last) = st.last {
            tracing::info!(txid = %last.txid, code = %last.code, "last result from the helper");
            self.apply_outcome(outcome_of(&last));
        }
        if let Some(cur) = st.current {
            self.pushes += 1;
            if self.update.resume(cur.txid.clone(), self.pushes).is_ok() {
                tracing::info!(txid = %cur.txid, phase = %cur.phase, "helper is still installing");
                self.status.state = phase_state(&cur.phase).unwrap_or(UpdState::Installing);
            }
        }
    }

    pub(super) async fn run(
        &mut self,
        mut rx: mpsc::Receiver<CoreEvent>,
        shutdown: CancellationToken,
    ) -> Result<(), DaemonError> {
        let watchdog = crate::systemd::Watchdog::from_env();
        let mut wd_tick = tokio::time::interval(
            watchdog.map_or(Duration::from_secs(3600), |w| w.ping_interval()),
        );
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let _ = crate::systemd::ready_with_status(&self.narrate());
        tracing::info!(device = %self.settings.device_path(), "ready");
        loop {
            let backlog = self.peers.values().any(|p| p.dirty && p.ep.is_some());
            tokio::select! {
                _ = shutdown.cancelled() => break,
                ev = rx.recv() => {
                    let Some(ev) = ev else { break };
                    self.handle(ev);
                    for _ in 1..BATCH {
                        match rx.try_recv() {
                            Ok(ev) => self.handle(ev),
                            Err(_) => break,
                        }
                    }
                }
                _ = tick.tick() => self.mark_all(),
                _ = tokio::time::sleep(BACKLOG_RETRY), if backlog => {}
                _ = wd_tick.tick(), if watchdog.is_some() => {
                    if let Some(w) = &watchdog { let _ = w.ping(); }
                }
            }
            self.flush();
        }
        self.drain(rx).await;
        Ok(())
    }

    async fn drain(&mut self, mut rx: mpsc::Receiver<CoreEvent>) {
        let _ = crate::systemd::stopping();
        if let Some(conn) = self.update.conn()
            && matches!(self.update, Update::Receiving { .. })
            && self.update.fail_receiving(conn).is_ok()
        {
            self.publish_result(
                Outcome::daemon(DaemonCode::Interrupted, "iocomd is shutting down"),
                Some(conn),
            );
        }
        if matches!(self.update, Update::Idle) {
            return;
        }
        // A helper on the bus is a service of its own: it finishes the transaction, persists
        // the result, and this daemon publishes it after its restart. Waiting for it would
        // deadlock a self-update, whose postinst restarts us while the helper waits for dpkg.
        // A helper we spawned (demo) dies with us, so its install is awaited.
        let helper_outlives_us = !matches!(self.settings.helper, HelperConnection::Spawn { .. });
        if helper_outlives_us && matches!(self.update, Update::Installing { .. }) {
            tracing::info!(
                "leaving the running install to the helper; its result is published after the restart"
            );
            return;
        }
        tracing::info!("waiting for the running install before exiting");
        let until = tokio::time::Instant::now() + super::DRAIN_TIMEOUT;
        while !matches!(self.update, Update::Idle) {
            if helper_outlives_us && matches!(self.update, Update::Installing { .. }) {
                tracing::info!("the package is handed over; the helper finishes the install");
                break;
            }
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(CoreEvent::Net { .. })) => {}
                Ok(Some(ev)) => self.handle(ev),
                Ok(None) | Err(_) => {
                    tracing::warn!("leaving the running install to the helper");
                    break;
                }
            }
        }
    }

    fn mark_all(&mut self) {
        for p in self.peers.values_mut() {
            p.dirty = true;
        }
    }

    fn handle(&mut self, ev: CoreEvent) {
        match ev {
            CoreEvent::Net { secure, event } => self.on_net(secure, event),
            CoreEvent::Helper(h) => self.on_helper(h),
            CoreEvent::HelperGone => {
                tracing::error!("the install helper went away");
                self.helper = None;
                if matches!(
                    self.update,
                    Update::Installing { .. } | Update::Spooling { .. }
                ) && let Ok(conn) = self.update.finish_any()
                {
                    self.publish_result(
                        Outcome::daemon(
                            DaemonCode::HelperUnavailable,
                            "the install helper went away during the install",
                        ),
                        conn,
                    );
                }
            }
            CoreEvent::Spooled { push, result } => self.on_spooled(push, result),
            CoreEvent::InstallCall { push, result } => self.on_install_call(push, result),
        }
    }

    fn on_net(&mut self, secure: bool, event: NetEvent) {
        match event {
            NetEvent::Connected { id, peer, handle } => {
                let (out, rx) = mpsc::channel(OUT_QUEUE);
                tokio::spawn(forward(handle, rx));
                let span = tracing::info_span!("conn", conn = id, %peer, tls = secure);
                span.in_scope(|| tracing::debug!("connected"));
                if self.peers.len() >= MAX_PEERS {
                    span.in_scope(|| {
                        tracing::warn!(limit = MAX_PEERS, "too many connections; refusing this one")
                    });
                    let _ = out.try_send(Out::Close("too many connections".into()));
                    return;
                }
                self.peers.insert(
                    id,
                    Peer {
                        addr: peer,
                        secure,
                        user: None,
                        out,
                        ep: None,
                        frame_size: 0,
                        dirty: false,
                        span,
                    },
                );
            }
            NetEvent::Conn { id, event } => self.on_conn_event(id, event),
            NetEvent::QueueFailed { id, error } => {
                tracing::warn!(conn = id, %error, "frame not queued");
            }
            NetEvent::Closed { id, reason } => self.on_closed(id, reason),
        }
    }

    fn on_conn_event(&mut self, id: u64, event: ConnEvent) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        if let ConnEvent::Authenticated {
            peer,
            send_frame_size,
            ..
        } = &event
        {
            p.user = Some(peer.account_name());
            p.frame_size = *send_frame_size as usize;
            match DeviceEndpoint::new(self.device_cfg.clone()) {
                Ok(ep) => p.ep = Some(ep),
                Err(e) => {
                    tracing::error!(conn = id, error = %e, "cannot create the device blocks");
                    let _ = p.out.try_send(Out::Close(e.to_string()));
                    return;
                }
            }
            p.span
                .in_scope(|| tracing::info!(user = ?p.user, "controller connected"));
            self.published = None;
        }
        let Some(ep) = p.ep.as_mut() else {
            return;
        };
        match ep.handle(id, event) {
            Ok(out) => {
                for info in out.infos {
                    let _ = p.out.try_send(Out::Info(info));
                }
                p.dirty = true;
            }
            Err(e) => {
                p.span
                    .in_scope(|| tracing::warn!(error = %e, "bad data from the peer; closing"));
                let _ = p.out.try_send(Out::Close(e.to_string()));
            }
        }
    }

    fn on_closed(&mut self, id: u64, reason: CloseReason) {
        let peer = self.peers.remove(&id);
        if let CloseReason::Rejected(r) = &reason {
            self.status.auth_fail = self.status.auth_fail.saturating_add(1);
            let user = match r {
                AuthRejection::EmptyName => String::new(),
                AuthRejection::UnknownUser { user, .. } | AuthRejection::WrongPassword { user } => {
                    user.clone()
                }
            };
            tracing::warn!(
                conn = id,
                peer = ?peer.as_ref().map(|p| p.addr),
                %user,
                reason = %r,
                failures = self.status.auth_fail,
                "authentication refused"
            );
        }
        if self.update.conn() == Some(id) {
            if matches!(self.update, Update::Receiving { .. }) {
                if self.update.fail_receiving(id).is_ok() {
                    self.publish_result(
                        Outcome::daemon(
                            DaemonCode::Interrupted,
                            format!(
                                "the controller's connection closed during the transfer ({reason})"
                            ),
                        ),
                        None,
                    );
                }
            } else {
                self.update.detach(id);
            }
        }
    }

    /// Polls every dirty connection's streams, publishes the status and transmits.
    fn flush(&mut self) {
        let now = Instant::now();
        let ids: Vec<u64> = self
            .peers
            .iter()
            .filter(|(_, p)| p.dirty && p.ep.is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.poll_peer(id, now);
        }
        if let Update::Receiving { writer, .. } = &self.update {
            self.status.bytes = u32::try_from(writer.size()).unwrap_or(u32::MAX);
        }
        // Stream signals (tod_err, tod_state) go out before the status that explains them, so
        // a controller that sees a new `upd_seq` already has the final `tod_err`.
        self.transmit_dirty();
        if self.published.as_ref() != Some(&self.status) {
            for p in self.peers.values_mut() {
                if let Some(ep) = p.ep.as_mut() {
                    write_status(ep, &self.status);
                    p.dirty = true;
                }
            }
            self.published = Some(self.status.clone());
            self.transmit_dirty();
        }
    }

    /// Transmits the changes of every dirty connection (as much as its queue takes).
    fn transmit_dirty(&mut self) {
        for (id, p) in self.peers.iter_mut() {
            if !p.dirty {
                continue;
            }
            let Some(ep) = p.ep.as_mut() else { continue };
            let room = p.out.capacity();
            if room == 0 {
                continue;
            }
            for f in ep.transmit(*id, p.frame_size, room) {
                let _ = p.out.try_send(Out::Data(f));
            }
            // Frames left over (the queue was full) keep the connection dirty: the loop comes
            // back after BACKLOG_RETRY instead of waiting for the next event.
            p.dirty = ep.node().has_pending(*id);
        }
    }

    fn poll_peer(&mut self, id: u64, now: Instant) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        let may_push = p.secure || self.settings.allow_plain_tcp_push;
        let Some(ep) = p.ep.as_mut() else { return };
        let mut sink = PushSink {
            conn: id,
            may_push,
            update: &mut self.update,
            settings: &self.settings,
            pushes: &mut self.pushes,
            note: None,
            now,
        };
        let events = ep.poll_streams(now, &mut sink, &mut NoSource);
        let note = sink.note.take();
        let span = p.span.clone();
        for ev in events {
            if ev.dir != Direction::ToDevice {
                continue;
            }
            self.on_stream_event(id, &span, ev.event, &note);
        }
    }

    fn on_stream_event(
        &mut self,
        id: u64,
        span: &tracing::Span,
        ev: DeviceEvent,
        note: &Option<Note>,
    ) {
        match ev {
            DeviceEvent::Started { select } => {
                if self.update.conn() == Some(id) {
                    self.push_span = tracing::info_span!(parent: span, "push", n = self.pushes);
                    self.push_span
                        .in_scope(|| tracing::info!(select, "receiving a package"));
                    self.status.state = UpdState::Receiving;
                    self.status.progress = 0;
                    self.status.bytes = 0;
                    self.status.msg = "receiving".into();
                    self.notifier.status(self.narrate());
                }
            }
            DeviceEvent::Completed { bytes, crc, .. } => {
                let Ok(writer) = self.update.received(id) else {
                    return;
                };
                self.status.state = UpdState::Verifying;
                self.status.bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
                self.status.msg = "checking the received file".into();
                let push = self.update.push().unwrap_or(0);
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    let result = finish_spool(writer, crc).await;
                    let _ = tx.send(CoreEvent::Spooled { push, result }).await;
                });
            }
            DeviceEvent::Failed { bytes, error, .. } => {
                let ours = matches!(&self.update, Update::Receiving { conn, .. } if *conn == id);
                if !ours {
                    if let Some(Note::Refused(code, msg)) = note {
                        span.in_scope(
                            || tracing::warn!(code = code.as_str(), %msg, "push refused"),
                        );
                        // A refusal of the device's own making is a result. `busy` would hide
                        // the running push's status, and `not-authorized` would let any
                        // unauthenticated peer overwrite the last result: those show only in
                        // the refused connection's tod_err.
                        if matches!(
                            code,
                            DaemonCode::NoSpace | DaemonCode::SpoolError | DaemonCode::BadSelect
                        ) {
                            self.publish_result(Outcome::daemon(*code, msg.clone()), Some(id));
                        }
                    }
                    return;
                }
                let outcome = match (&error, note) {
                    (StreamError::Checksum { .. }, _) => {
                        Outcome::daemon(DaemonCode::CrcMismatch, error.to_string())
                    }
                    (StreamError::Timeout, _) => Outcome::daemon(
                        DaemonCode::Interrupted,
                        format!("the transfer stalled after {bytes} bytes"),
                    ),
                    (
                        StreamError::Local(_),
                        Some(Note::WriteFailed(code, msg) | Note::Refused(code, msg)),
                    ) => Outcome::daemon(*code, msg.clone()),
                    _ => Outcome::daemon(
                        DaemonCode::Interrupted,
                        format!("the transfer was interrupted after {bytes} bytes: {error}"),
                    ),
                };
                let _ = self.update.fail_receiving(id);
                let timeout = matches!(error, StreamError::Timeout);
                self.publish_result(outcome, Some(id));
                if timeout && let Some(ep) = self.peers.get_mut(&id).and_then(|p| p.ep.as_mut()) {
                    let _ = ep.report(tod_err::TIMEOUT);
                }
            }
            DeviceEvent::Released => {}
        }
    }
}

fn write_status(ep: &mut DeviceEndpoint, status: &UpdateStatus) {
    let Some(layout) = ep.info().block(crate::status::STATUS_BLOCK).cloned() else {
        return;
    };
    let node = ep.node_mut();
    let Some(ix) = node.find(crate::status::STATUS_BLOCK, None) else {
        return;
    };
    if let Some(block) = node.block_mut(ix)
        && let Err(e) = status.write(&layout, block)
    {
        tracing::error!(error = %e, "cannot write the status block");
    }
}

async fn forward(handle: ConnHandle, mut rx: mpsc::Receiver<Out>) {
    while let Some(out) = rx.recv().await {
        let r = match out {
            Out::Info(i) => handle.queue_system(SystemFrame::MblkInfo(i)).await,
            Out::Data(f) => {
                handle
                    .queue_data(f.mblk_id, f.addr, FrameFlags::from_bits(f.flags), f.payload)
                    .await
            }
            Out::Close(why) => handle.close(why).await,
        };
        if r.is_err() {
            return;
        }
    }
}
