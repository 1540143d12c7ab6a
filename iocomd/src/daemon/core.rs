//! The core loop: one task that owns the connection side ([`Peers`]) and the update side
//! ([`Updates`]), consumes helper and internal events from one channel and the connection
//! tasks' events from the network channels ([`NetInputs`]), and after every batch polls the
//! streams, publishes the derived status and transmits.

use super::peers::Peers;
use super::updates::{Finished, Updates};
use super::{CoreEvent, DaemonError};
use crate::config::Settings;
use crate::ddi::DdiStatus;
use crate::helper_client::HelperClient;
use crate::net::NetEvent;
use crate::proto::endpoint::{DeviceConfig, DeviceEndpoint};
use crate::proto::info::REFERENCE_RING;
use crate::proto::node::DeviceId;
use crate::status::{UpdState, UpdateStatus, status_block_def};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Events handled before the streams are polled and frames transmitted.
const BATCH: usize = 256;
/// When frames are left over for a connection whose queue was full, transmit again after this.
const BACKLOG_RETRY: Duration = Duration::from_millis(2);

/// The network channels the core loop reads: the connection tasks of plain (TCP, serial)
/// and of TLS sources report on their own channel, which marks their events `secure`.
pub(super) struct NetInputs {
    plain: Option<mpsc::Receiver<NetEvent>>,
    secure: Option<mpsc::Receiver<NetEvent>>,
}

async fn recv_open(rx: &mut Option<mpsc::Receiver<NetEvent>>) -> Option<NetEvent> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl NetInputs {
    pub(super) fn new(plain: mpsc::Receiver<NetEvent>, secure: mpsc::Receiver<NetEvent>) -> Self {
        Self {
            plain: Some(plain),
            secure: Some(secure),
        }
    }

    /// The next event of either channel with its `secure` mark; `None` once both closed (no
    /// source is left).
    async fn recv(&mut self) -> Option<(bool, NetEvent)> {
        loop {
            if self.plain.is_none() && self.secure.is_none() {
                return None;
            }
            let (plain, secure) = (&mut self.plain, &mut self.secure);
            let (mark, ev) = tokio::select! {
                ev = recv_open(plain) => (false, ev),
                ev = recv_open(secure) => (true, ev),
            };
            match ev {
                Some(ev) => return Some((mark, ev)),
                None if mark => self.secure = None,
                None => self.plain = None,
            }
        }
    }

    /// An event already waiting on either channel.
    fn try_recv(&mut self) -> Option<(bool, NetEvent)> {
        let plain = self.plain.as_mut().and_then(|rx| rx.try_recv().ok());
        plain
            .map(|ev| (false, ev))
            .or_else(|| Some((true, self.secure.as_mut()?.try_recv().ok()?)))
    }
}

/// The core loop's state.
pub(super) struct Core {
    device_path: String,
    helper_connection: crate::config::HelperConnection,
    tx: mpsc::Sender<CoreEvent>,
    /// Stops the helper reconnection task with the loop.
    stop: CancellationToken,
    /// A reconnection task for the helper runs.
    reconnecting: bool,
    peers: Peers,
    updates: Updates,
    notifier: super::notify::StatusNotifier,
    trimmer: super::trim::Trimmer,
    /// The fleet client's status (`[hawkbit]` on), published with ours.
    fleet: Option<watch::Receiver<DdiStatus>>,
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
            device_path: settings.device_path(),
            helper_connection: settings.helper.clone(),
            tx: tx.clone(),
            stop: CancellationToken::new(),
            reconnecting: false,
            peers: Peers::new(
                device_cfg,
                settings.allow_plain_tcp_push,
                settings.allow_serial_push,
            ),
            updates: Updates::new(settings, helper, tx),
            notifier: super::notify::StatusNotifier::start(),
            trimmer: super::trim::Trimmer::new(),
            fleet: None,
        })
    }

    /// The managed packages' versions, for the fleet client.
    pub(super) fn versions(&self) -> watch::Receiver<Vec<crate::ddi::PackageVersion>> {
        self.updates.versions()
    }

    /// Publishes the fleet client's status with ours from now on.
    pub(super) fn set_fleet_status(&mut self, status: watch::Receiver<DdiStatus>) {
        self.fleet = Some(status);
    }

    pub(super) async fn run(
        &mut self,
        mut rx: mpsc::Receiver<CoreEvent>,
        mut net: NetInputs,
        shutdown: CancellationToken,
    ) -> Result<(), DaemonError> {
        let watchdog = crate::systemd::Watchdog::from_env();
        let mut wd_tick = tokio::time::interval(
            watchdog.map_or(Duration::from_secs(3600), |w| w.ping_interval()),
        );
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.stop = shutdown.child_token();
        let _ = crate::systemd::ready_with_status(&self.narrate(&self.status()));
        tracing::info!(device = %self.device_path, "ready");
        let mut fleet = self.fleet.clone();
        loop {
            let backlog = self.peers.backlog();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                ev = rx.recv() => {
                    let Some(ev) = ev else { break };
                    self.handle(ev);
                    self.batch(&mut rx, &mut net);
                }
                Some((secure, ev)) = net.recv() => {
                    // What happened before this event came in goes first (a helper that
                    // became ready, a spool with room again), as with one channel.
                    while let Ok(internal) = rx.try_recv() {
                        self.handle(internal);
                    }
                    self.handle_net(secure, ev);
                    self.batch(&mut rx, &mut net);
                }
                _ = tick.tick() => {
                    self.peers.mark_all();
                    if self.trimmer.due(self.peers.closed(), Instant::now()) {
                        super::trim::trim();
                    }
                    if let Some(f) = self.updates.check_limits(Instant::now()) {
                        self.peers.abort_upload(&f, Instant::now());
                    }
                }
                _ = tokio::time::sleep(BACKLOG_RETRY), if backlog => {}
                r = async { fleet.as_mut()?.changed().await.ok() }, if fleet.is_some() => {
                    // The client stopped: its last status stays published.
                    if r.is_none() { fleet = None; }
                }
                _ = wd_tick.tick(), if watchdog.is_some() => {
                    if let Some(w) = &watchdog { let _ = w.ping(); }
                }
            }
            self.flush();
        }
        self.drain(rx, net).await;
        Ok(())
    }

    /// Handles the events already waiting (at most [`BATCH`] in all with the first) before
    /// the streams are polled; an internal event waiting goes before the next network one.
    fn batch(&mut self, rx: &mut mpsc::Receiver<CoreEvent>, net: &mut NetInputs) {
        for _ in 1..BATCH {
            if let Ok(ev) = rx.try_recv() {
                self.handle(ev);
            } else if let Some((secure, ev)) = net.try_recv() {
                self.handle_net(secure, ev);
            } else {
                break;
            }
        }
    }

    fn handle_net(&mut self, secure: bool, event: NetEvent) {
        self.peers.on_net(secure, event, &mut self.updates);
    }

    fn status(&self) -> UpdateStatus {
        let mut st = self.updates.status(self.peers.auth_fail());
        st.fleet = self.fleet_line();
        st
    }

    /// The fleet link in one line (empty when `[hawkbit]` is off).
    fn fleet_line(&self) -> String {
        self.fleet
            .as_ref()
            .map_or_else(String::new, |f| f.borrow().summary())
    }

    fn flush(&mut self) {
        let fleet = self.fleet_line();
        // The status just published, not derived a second time.
        let status = self.peers.flush(&mut self.updates, &fleet, Instant::now());
        self.notifier.status(self.narrate(&status));
    }

    fn report(&mut self, f: Option<Finished>) {
        if let Some(f) = f {
            self.peers.report(&f);
        }
    }

    async fn drain(&mut self, mut rx: mpsc::Receiver<CoreEvent>, mut net: NetInputs) {
        let _ = crate::systemd::stopping();
        let f = self.updates.interrupt("iocomd is shutting down");
        self.report(f);
        if matches!(self.updates.machine(), super::update::Update::Idle) {
            return;
        }
        // A helper on the bus is a service of its own: it finishes the transaction, persists
        // the result, and this daemon publishes it after its restart. Waiting for it would
        // deadlock a self-update, whose postinst restarts us while the helper waits for dpkg.
        // A helper we spawned (demo) dies with us, so its install is awaited.
        if self.updates.left_to_helper() {
            tracing::info!(
                "leaving the running install to the helper; its result is published after the restart"
            );
            return;
        }
        tracing::info!("waiting for the running install before exiting");
        let until = tokio::time::Instant::now() + super::DRAIN_TIMEOUT;
        while !matches!(self.updates.machine(), super::update::Update::Idle) {
            if self.updates.left_to_helper() {
                tracing::info!("the package is handed over; the helper finishes the install");
                break;
            }
            // Connections still report while the install finishes: their events are read
            // (so their tasks do not block) and dropped.
            let ev = tokio::select! {
                ev = tokio::time::timeout_at(until, rx.recv()) => ev,
                Some(_) = net.recv() => continue,
            };
            match ev {
                Ok(Some(ev)) => self.handle(ev),
                Ok(None) | Err(_) => {
                    tracing::warn!("leaving the running install to the helper");
                    break;
                }
            }
        }
    }

    fn handle(&mut self, ev: CoreEvent) {
        match ev {
            CoreEvent::Helper(sig) => {
                let f = self.updates.on_helper(sig);
                self.report(f);
            }
            CoreEvent::HelperGone(h) => {
                // A link already replaced (it failed under a call first) is old news.
                if self.updates.is_current(&h) {
                    let f = self.updates.on_helper_gone();
                    self.report(f);
                    self.reconnect_helper();
                }
            }
            CoreEvent::HelperBack(h) => {
                self.reconnecting = false;
                self.updates.set_helper(h);
            }
            CoreEvent::HelperStatus(r) => self.updates.on_helper_status(*r),
            CoreEvent::HelperOwner { helper, owner } => {
                if self.updates.on_owner_changed(&helper, owner.as_deref()) {
                    tokio::spawn(super::helper_link::read_policy(helper, self.tx.clone()));
                }
            }
            CoreEvent::HelperPolicy(r) => self.updates.on_helper_instance(*r),
            CoreEvent::SpoolFailed { push, error } => {
                if let Some(f) = self.updates.on_spool_failed(push, error) {
                    self.peers.abort_upload(&f, Instant::now());
                }
            }
            CoreEvent::SpoolReady { push } => {
                if let Some(conn) = self.updates.waiting_conn(push) {
                    self.peers.mark(conn);
                }
            }
            CoreEvent::Streamed { push, result } => {
                let f = self.updates.on_streamed(push, result);
                self.report(f);
            }
            CoreEvent::Spooled { push, result } => {
                let f = self.updates.on_spooled(push, result);
                self.report(f);
            }
            CoreEvent::InstallCall { push, result } => {
                let receiving = matches!(
                    self.updates.machine(),
                    super::update::Update::Receiving { .. }
                );
                match self.updates.on_install_call(push, result) {
                    // A streamed push the helper refused before its end: its stream stops.
                    Some(f) if receiving => self.peers.abort_upload(&f, Instant::now()),
                    f => self.report(f),
                }
                if self.updates.take_link_lost() {
                    self.reconnect_helper();
                }
            }
            CoreEvent::Fleet(req) => self.on_fleet(req),
        }
    }

    fn on_fleet(&mut self, req: super::fleet::FleetRequest) {
        use super::fleet::FleetRequest;
        match req {
            FleetRequest::Reserve { action, reply } => {
                let _ = reply.send(self.updates.reserve(&action));
            }
            FleetRequest::Install { action, pkg, reply } => {
                self.updates.install_fleet(&action, pkg, reply);
            }
            FleetRequest::Release { action } => self.updates.release(&action),
            FleetRequest::Recover { action, reply } => self.updates.recover_fleet(action, reply),
        }
    }

    /// Starts connecting to the helper again (once; not while shutting down).
    fn reconnect_helper(&mut self) {
        if self.reconnecting || self.updates.has_helper() || self.stop.is_cancelled() {
            return;
        }
        self.reconnecting = true;
        tokio::spawn(super::helper_link::reconnect(
            self.helper_connection.clone(),
            self.tx.clone(),
            self.stop.clone(),
        ));
    }

    /// The `STATUS=` line for the service manager.
    fn narrate(&self, s: &UpdateStatus) -> String {
        let line = match s.state {
            UpdState::Idle if s.seq == 0 => format!("idle on {}", self.device_path),
            UpdState::Idle => format!("idle; last push: {} {} {}: {}", s.code, s.pkg, s.ver, s.msg),
            UpdState::Receiving => "receiving a package".into(),
            st => format!("{} {} {}: {}", st.name(), s.pkg, s.ver, s.msg),
        };
        if s.fleet.is_empty() {
            line
        } else {
            format!("{line}; {}", s.fleet)
        }
    }
}
