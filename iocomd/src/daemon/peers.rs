//! The connection side of the daemon: the one owner of every connection's device endpoint
//! (its own conf/exp/info blocks and stream state machines), the authentication failure
//! count, and the transmission of block changes (with a retry when a connection's queue was
//! full). Streams reach the update side through [`super::updates::Updates`]'s calls; the
//! status it derives is written into every endpoint here.

use super::updates::{Finished, Updates};
use crate::net::{ConnHandle, NetEvent};
use crate::proto::conn::{CloseReason, ConnEvent};
use crate::proto::endpoint::{DeviceConfig, DeviceEndpoint};
use crate::proto::frame::{FrameFlags, Framing, is_streaming};
use crate::proto::info::COMPAT_TOD_RING;
use crate::proto::password::AuthRejection;
use crate::proto::sysframe::SystemFrame;
use crate::status::UpdateStatus;
use std::collections::HashMap;
use std::time::Instant;

mod cadence;
mod streams;

/// Authenticated connections served at once (each has its own blocks, about twice `tod_buf`
/// in memory). A connection counts against this only once it authenticated; when it is full,
/// the oldest authenticated connection that is not pushing makes room (plain TCP ones before
/// TLS ones), so neither idle readers nor a flood of them can keep a controller out.
pub const MAX_PEERS: usize = 32;
/// Connections still in the handshake, served at once; a new one closes the oldest. Their
/// handshake must finish within the listener's (short) handshake deadline.
pub const MAX_PENDING: usize = 64;
/// Of the connections still in the handshake, at most this many from one source address (a
/// new one closes that address's oldest), so that one host cannot fill the pool.
pub const MAX_PENDING_PER_ADDR: usize = 8;

/// One connection.
struct Peer {
    addr: crate::net::PeerAddr,
    /// When it was accepted, and when it authenticated.
    accepted: Instant,
    authenticated: Option<Instant>,
    secure: bool,
    user: Option<String>,
    /// The connection's command queue; the core loop queues without waiting (frames that do
    /// not fit stay in the endpoint and go out at the retry, [`Peers::backlog`]).
    handle: ConnHandle,
    ep: Option<DeviceEndpoint>,
    frame_size: usize,
    dirty: bool,
    span: tracing::Span,
}

/// The connection side.
pub(crate) struct Peers {
    device_cfg: DeviceConfig,
    allow_plain_tcp_push: bool,
    /// Pushes over serial lines (no TLS, no password there).
    allow_serial_push: bool,
    peers: HashMap<u64, Peer>,
    /// Connections refused for wrong credentials since start (`auth_fail`).
    auth_fail: u32,
    /// Connections closed since start.
    closed: u64,
    /// The status last written into the endpoints, and when ([`cadence`]).
    published: Option<cadence::Published>,
    /// The head of the package being received (the early refusal, [`streams`]).
    head: streams::Head,
}

impl Peers {
    pub(crate) fn new(
        device_cfg: DeviceConfig,
        allow_plain_tcp_push: bool,
        allow_serial_push: bool,
    ) -> Self {
        Self {
            device_cfg,
            allow_plain_tcp_push,
            allow_serial_push,
            peers: HashMap::new(),
            auth_fail: 0,
            closed: 0,
            published: None,
            head: streams::Head::default(),
        }
    }

    /// Connections refused for wrong credentials since start.
    pub(crate) fn auth_fail(&self) -> u32 {
        self.auth_fail
    }

    /// Connections closed since start.
    pub(crate) fn closed(&self) -> u64 {
        self.closed
    }

    /// Whether some connection has changes still to send.
    pub(crate) fn backlog(&self) -> bool {
        self.peers.values().any(|p| p.dirty && p.ep.is_some())
    }

    /// Marks every connection for a stream poll (the periodic tick: stream timeouts).
    pub(crate) fn mark_all(&mut self) {
        for p in self.peers.values_mut() {
            p.dirty = true;
        }
    }

    /// A network event.
    pub(crate) fn on_net(&mut self, secure: bool, event: NetEvent, updates: &mut Updates) {
        match event {
            NetEvent::Connected { id, peer, handle } => {
                let span = tracing::info_span!("conn", conn = id, %peer, tls = secure);
                span.in_scope(|| tracing::debug!("connected"));
                self.admit_pending(&peer);
                self.peers.insert(
                    id,
                    Peer {
                        addr: peer,
                        accepted: Instant::now(),
                        authenticated: None,
                        secure,
                        user: None,
                        handle,
                        ep: None,
                        frame_size: 0,
                        dirty: false,
                        span,
                    },
                );
            }
            NetEvent::Conn { id, event } => self.on_conn_event(id, event, updates.machine().conn()),
            NetEvent::QueueFailed { id, error } => {
                tracing::warn!(conn = id, %error, "frame not queued");
            }
            NetEvent::Closed { id, reason } => {
                self.on_closed(id, &reason);
                if let Some(f) = updates.detach(id, &reason.to_string()) {
                    self.report(&f);
                }
            }
        }
    }

    /// Makes room in the handshake pool for a new connection from `addr`: closes the oldest
    /// pending connection of that address, or of all, when full.
    fn admit_pending(&mut self, addr: &crate::net::PeerAddr) {
        let pending = |p: &&Peer| p.authenticated.is_none();
        let oldest = |it: &mut dyn Iterator<Item = (&u64, &Peer)>| {
            it.min_by_key(|(_, p)| p.accepted).map(|(id, _)| *id)
        };
        let same = self
            .peers
            .iter()
            .filter(|(_, p)| pending(p) && p.addr.same_source(addr));
        let victim = if same.clone().count() >= MAX_PENDING_PER_ADDR {
            oldest(&mut same.into_iter())
        } else if self.peers.values().filter(pending).count() >= MAX_PENDING {
            oldest(&mut self.peers.iter().filter(|(_, p)| pending(p)))
        } else {
            None
        };
        if let Some(id) = victim {
            self.evict(id, "too many connections still in the handshake");
        }
    }

    /// Makes room among authenticated connections for `newcomer`; `false` when there is none
    /// (only the pusher is left).
    fn admit_authenticated(&mut self, newcomer: u64, busy_conn: Option<u64>) -> bool {
        let authed = self
            .peers
            .iter()
            .filter(|(id, p)| **id != newcomer && p.authenticated.is_some())
            .count();
        if authed < MAX_PEERS {
            return true;
        }
        let idle = self
            .peers
            .iter()
            .filter(|(id, _)| **id != newcomer && Some(**id) != busy_conn)
            .filter_map(|(id, p)| p.authenticated.map(|t| ((p.secure, t), *id)))
            .min()
            .map(|(_, id)| id);
        match idle {
            Some(id) => {
                self.evict(id, "idle, making room for another controller");
                true
            }
            None => false,
        }
    }

    /// Closes connection `id` at once and forgets it.
    fn evict(&mut self, id: u64, why: &str) {
        if let Some(p) = self.peers.remove(&id) {
            p.span
                .in_scope(|| tracing::warn!(reason = why, "closing a connection to admit another"));
            close(&p.handle, why);
        }
    }

    fn on_conn_event(&mut self, id: u64, event: ConnEvent, busy_conn: Option<u64>) {
        if matches!(event, ConnEvent::Authenticated { .. })
            && !self.admit_authenticated(id, busy_conn)
            && let Some(p) = self.peers.remove(&id)
        {
            p.span.in_scope(|| {
                tracing::warn!(limit = MAX_PEERS, "too many connections; closing this one")
            });
            close(&p.handle, "too many connections");
            return;
        }
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        if let ConnEvent::Authenticated {
            peer,
            send_frame_size,
            framing,
            ..
        } = &event
        {
            p.authenticated = Some(Instant::now());
            p.user = Some(peer.account_name());
            p.frame_size = *send_frame_size as usize;
            let streaming = is_streaming(*framing, *send_frame_size);
            match DeviceEndpoint::new(endpoint_config(&self.device_cfg, *framing, streaming)) {
                Ok(mut ep) => {
                    // Poll-only reference controllers see the final tod_err (device.rs).
                    ep.set_end_hold(Some(crate::proto::stream::device::DEFAULT_END_HOLD));
                    ep.set_progressive_uploads(streaming);
                    p.ep = Some(ep);
                }
                Err(e) => {
                    tracing::error!(conn = id, error = %e, "cannot create the device blocks");
                    close(&p.handle, &e.to_string());
                    return;
                }
            }
            p.span.in_scope(|| {
                tracing::info!(
                    user = ?p.user,
                    send_frame_size = *send_frame_size,
                    peer_frame_size = peer.frame_size,
                    streaming,
                    "controller connected"
                )
            });
            self.published = None;
        }
        let Some(ep) = p.ep.as_mut() else {
            return;
        };
        match ep.handle(id, event) {
            Ok(out) => {
                for info in out.infos {
                    if let Err(e) = p.handle.try_queue_system(SystemFrame::MblkInfo(info)) {
                        p.span
                            .in_scope(|| tracing::warn!(error = %e, "block info not queued"));
                    }
                }
                p.dirty = true;
            }
            Err(e) => {
                p.span
                    .in_scope(|| tracing::warn!(error = %e, "bad data from the peer; closing"));
                close(&p.handle, &e.to_string());
            }
        }
    }

    fn on_closed(&mut self, id: u64, reason: &CloseReason) {
        self.closed += 1;
        let peer = self.peers.remove(&id);
        if let CloseReason::Rejected(r) = reason {
            self.auth_fail = self.auth_fail.saturating_add(1);
            let user = match r {
                AuthRejection::EmptyName => String::new(),
                AuthRejection::UnknownUser { user, .. }
                | AuthRejection::WrongPassword { user }
                | AuthRejection::CertificateRequired { user } => user.clone(),
            };
            tracing::warn!(
                conn = id,
                peer = ?peer.as_ref().map(|p| &p.addr),
                %user,
                reason = %r,
                failures = self.auth_fail,
                "authentication refused"
            );
        }
    }

    /// Marks connection `conn` for a stream poll.
    pub(crate) fn mark(&mut self, conn: u64) {
        if let Some(p) = self.peers.get_mut(&conn) {
            p.dirty = true;
        }
    }

    /// Ends the running upload on `f.conn` from our side with `f.tod_err` (its data can no
    /// longer be stored), then reports it.
    pub(crate) fn abort_upload(&mut self, f: &Finished, now: Instant) {
        struct Discard;
        impl crate::proto::stream::ChunkSink for Discard {
            fn open(&mut self, _: i64) -> Result<(), crate::proto::stream::LocalError> {
                Err(install_api::tod_err::FAILED.into())
            }
            fn write(&mut self, _: &[u8]) -> Result<(), crate::proto::stream::LocalError> {
                Err(install_api::tod_err::FAILED.into())
            }
            fn close(&mut self, _: bool) {}
        }
        if let Some(ep) = f
            .conn
            .and_then(|c| self.peers.get_mut(&c))
            .and_then(|p| p.ep.as_mut())
        {
            let _ = ep.abort_upload(f.tod_err, now, &mut Discard);
        }
        self.report(f);
    }

    /// Reports an ended update's final `tod_err` to the connection it came from.
    pub(crate) fn report(&mut self, f: &Finished) {
        if let Some(p) = f.conn.and_then(|c| self.peers.get_mut(&c))
            && let Some(ep) = p.ep.as_mut()
        {
            let _ = ep.report(f.tod_err);
            p.dirty = true;
        }
    }

    /// Polls every dirty connection's streams, writes `status` (derived by the update side
    /// after the polls) into every endpoint when it changed (a byte count alone at the pace
    /// of [`cadence`]), and transmits. Returns the status as published.
    pub(crate) fn flush(
        &mut self,
        updates: &mut Updates,
        fleet: &str,
        now: Instant,
    ) -> UpdateStatus {
        let ids: Vec<u64> = self
            .peers
            .iter()
            .filter(|(_, p)| p.dirty && p.ep.is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.poll_peer(id, updates, now);
        }
        // Stream signals (tod_err, tod_state) go out before the status that explains them, so
        // a controller that sees a new `upd_seq` already has the final `tod_err`.
        self.transmit_dirty();
        let mut status = updates.status(self.auth_fail);
        status.fleet = fleet.to_owned();
        if let Some(last) = &self.published
            && !cadence::due(Some(last), &status, now)
        {
            return last.status.clone();
        }
        for p in self.peers.values_mut() {
            if let Some(ep) = p.ep.as_mut() {
                write_status(ep, &status);
                p.dirty = true;
            }
        }
        self.published = Some(cadence::Published {
            status: status.clone(),
            at: now,
        });
        self.transmit_dirty();
        status
    }

    /// Transmits the changes of every dirty connection (as much as its queue takes).
    fn transmit_dirty(&mut self) {
        for (id, p) in self.peers.iter_mut() {
            if !p.dirty {
                continue;
            }
            let Some(ep) = p.ep.as_mut() else { continue };
            let room = p.handle.capacity();
            if room == 0 {
                continue;
            }
            for f in ep.transmit(*id, p.frame_size, room) {
                // Room was checked: only a connection that is gone refuses (its Closed event
                // follows).
                let flags = FrameFlags::from_bits(f.flags);
                let _ = p.handle.try_queue_data(f.mblk_id, f.addr, flags, f.payload);
            }
            // Frames left over (the queue was full) keep the connection dirty: the loop comes
            // back after a short retry instead of waiting for the next event.
            p.dirty = ep.node().has_pending(*id);
        }
    }
}

/// The blocks of one connection: the configured `tod_buf` for our streaming controller and on
/// serial lines (no ispy there), a small ring ([`COMPAT_TOD_RING`]) for every other socket
/// peer, whose memory window (ispy's) would otherwise draw thousands of labels.
fn endpoint_config(cfg: &DeviceConfig, framing: Framing, streaming: bool) -> DeviceConfig {
    let mut cfg = cfg.clone();
    if framing == Framing::Socket && !streaming {
        cfg.tod_ring = cfg.tod_ring.min(COMPAT_TOD_RING);
    }
    cfg
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

/// Asks a connection to close, without waiting.
fn close(handle: &ConnHandle, why: &str) {
    if let Err(e) = handle.try_close(why) {
        tracing::debug!(conn = handle.id(), error = %e, "close not queued");
    }
}
