//! The core loop: owns the connections' device endpoints, the update state machine and the
//! published status; consumes network, helper and internal events from one channel.

use super::helper::{HelperStatus, TxSummary, phase_state};
use super::sink::{NoSource, Note, PushSink};
use super::update::Update;
use super::{CoreEvent, DaemonError};
use results::{finish_spool, outcome_of};

mod peers;
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
}
