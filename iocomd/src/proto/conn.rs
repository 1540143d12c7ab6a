//! The IOCOM connection state machine for TCP, TLS and serial streams (sans-I/O, quinn-proto
//! style).
//!
//! A [`Connection`] owns everything one byte stream needs: the socket handshake, the
//! authentication exchange, frame numbering, ACK counters and the sending window, keep-alive and
//! silence timers. The owner (a net task, or a test) feeds it received bytes with
//! [`Connection::handle_input`], collects bytes to write with [`Connection::poll_transmit`], reads
//! [`ConnEvent`]s with [`Connection::poll_event`], and calls [`Connection::handle_timeout`] at
//! [`Connection::poll_timeout`]. Time is always passed in; nothing here reads a clock.
//!
//! ```text
//!   Handshake(AwaitTlsMark | AwaitHello) ──▶ AwaitAuth ──▶ Running
//!            │                                   │            │
//!            └───────────────┴───────────────────┴────────────┴──▶ Closed(reason)
//! ```
//!
//! * A plain TCP client starts in `AwaitAuth` with its hello queued; a TLS client first waits for
//!   the server's `5B`. A server waits for the client's hello (and sends `5B` first on TLS).
//! * In `AwaitAuth` only ACKs and the peer's authentication frame are accepted; anything else
//!   closes the connection (C peers never send anything else earlier; spec §7.2 item 5).
//! * A [`Role::Controller`] sends its authentication frame as soon as the handshake is done; a
//!   [`Role::Device`] (the `CONNECT_UP` end) waits for the peer's first (spec §2.4).
//! * Peer authentication is configuration, decided by the caller: [`PeerAuth::AcceptAll`] (for
//!   plain TCP where the owner allows it, or for clients that trust the TLS layer) or
//!   [`PeerAuth::Accounts`], which checks name + number, network and password hash of the peer's
//!   frame and closes with [`CloseReason::Rejected`] on mismatch. The clear password is hashed
//!   on receipt and dropped.
//! * The handshake deadline ([`ConnConfig::handshake_timeout`], default 10 s from creation) covers
//!   both the socket handshake and the authentication exchange; the C server has none.
//! * Data frames are accepted only for ids this connection announced in its own memory block info
//!   frames ([`Connection::queue_system_frame`]); others close the connection
//!   ([`CloseReason::UnknownMblk`]).
//! * Serial links ([`ConnConfig::serial`], [`Framing::Serial`]): the owner runs the connect
//!   sequence first ([`super::serial::SerialConnect`]) and creates the `Connection` when it
//!   completes; there is no socket handshake, so it starts in `AwaitAuth`. Frames carry a CRC,
//!   ACKs are 3 bytes, the window is 200 bytes (ACK window 255, ACK every 40 bytes), keep-alive
//!   150 ms, silence 250 ms, and no unique id goes in the authentication frame (the C library
//!   sends one only on a socket connecting up).

use super::auth::{AuthFrame, auth_flags, is_auto_network, wire_device_nr};
use super::frame::{
    Element, Frame, FrameDecoder, FrameFlags, Framing, MAX_FRAME_SIZE, MIN_FRAME_SIZE, encode_ack,
    header_len_for, next_frame_nr,
};
pub use super::frame::{SOCKET_UNACKNOWLEDGED_LIMIT, STREAMING_MAX_IN_AIR, is_streaming};
use super::handshake::{
    ClientHello, HandshakeError, INITIAL_ACKNOWLEDGED, NO_TRUST_CERTIFICATE, TLS_MARK,
};
use super::password::hash_password;
use super::sysframe::{MAX_MBLK_ID, MIN_MBLK_ID, SystemFrame};
use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

#[cfg(test)]
mod serial_tests;
#[cfg(test)]
mod tests;
mod types;

pub use types::{
    CloseReason, ConnConfig, ConnEvent, HandshakeStep, LocalIdentity, PeerAuth, PeerIdentity,
    QueueError, Role, Side, State,
};

/// Default keep-alive interval (send an ACK after this long without sending).
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(10);
/// Default silence timeout (close after this long without receiving).
pub const DEFAULT_SILENCE_TIMEOUT: Duration = Duration::from_secs(20);
/// Default frame timeout: a frame of at most 16 KiB that takes longer than this to arrive is
/// a peer holding the connection open byte by byte, not a slow link.
pub const DEFAULT_FRAME_TIMEOUT: Duration = Duration::from_secs(15);
/// Serial keep-alive interval (`IOC_SERIAL_KEEPALIVE_MS`).
pub const SERIAL_KEEPALIVE: Duration = Duration::from_millis(150);
/// Serial silence timeout (`IOC_SERIAL_SILENCE_MS`).
pub const SERIAL_SILENCE_TIMEOUT: Duration = Duration::from_millis(250);
/// Default deadline for handshake and authentication.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes one [`Connection::poll_transmit`] call appends (it may exceed it by one frame).
pub const TRANSMIT_BUDGET: usize = 64 * 1024;

/// One IOCOM connection over a TCP or TLS byte stream.
#[derive(Debug)]
pub struct Connection {
    cfg: ConnConfig,
    state: State,
    framing: Framing,
    created: Instant,
    last_recv: Instant,
    last_send: Instant,
    /// Since when a received frame (or the handshake) is incomplete.
    partial_since: Option<Instant>,
    hs_in: Vec<u8>,
    hs_out: Vec<u8>,
    decoder: FrameDecoder,
    bytes_received: u32,
    bytes_acknowledged: u32,
    bytes_sent: u32,
    processed_bytes: u32,
    send_frame_size: u32,
    next_nr: u8,
    own_auth_pending: bool,
    own_auth_sent: bool,
    network_name: String,
    removes: VecDeque<Frame>,
    infos: VecDeque<Frame>,
    data: VecDeque<Frame>,
    announced: HashSet<u32>,
    events: VecDeque<ConnEvent>,
    peer: Option<PeerIdentity>,
}

impl Connection {
    /// A new connection whose stream was just opened (connected or accepted) at `now`.
    pub fn new(cfg: ConnConfig, now: Instant) -> Self {
        let frame_size = cfg.frame_size.clamp(MIN_FRAME_SIZE, MAX_FRAME_SIZE);
        let framing = cfg.framing;
        let mut c = Self {
            state: State::Handshake(HandshakeStep::AwaitHello),
            framing,
            created: now,
            last_recv: now,
            last_send: now,
            partial_since: None,
            hs_in: Vec::new(),
            hs_out: Vec::new(),
            decoder: FrameDecoder::new(framing, frame_size),
            bytes_received: 0,
            bytes_acknowledged: INITIAL_ACKNOWLEDGED,
            bytes_sent: 0,
            processed_bytes: 0,
            send_frame_size: frame_size,
            next_nr: 0,
            own_auth_pending: false,
            own_auth_sent: false,
            network_name: cfg.identity.network_name.clone(),
            removes: VecDeque::new(),
            infos: VecDeque::new(),
            data: VecDeque::new(),
            announced: HashSet::new(),
            events: VecDeque::new(),
            peer: None,
            cfg: ConnConfig { frame_size, ..cfg },
        };
        match (framing, c.cfg.side, c.cfg.secure) {
            // The serial connect sequence already ran: no socket handshake.
            (Framing::Serial, _, _) => c.enter_await_auth(),
            (Framing::Socket, Side::Client, false) => c.send_hello(),
            (Framing::Socket, Side::Client, true) => {
                c.state = State::Handshake(HandshakeStep::AwaitTlsMark)
            }
            (Framing::Socket, Side::Server, secure) => {
                if secure {
                    c.hs_out.push(TLS_MARK);
                }
            }
        }
        // Refuse an identity a C peer would reject, before anything is sent.
        if let Err(e) = c.own_auth_frame().to_frame() {
            c.close(CloseReason::SysFrame(e));
        }
        c
    }

    /// Current state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The close reason, once closed.
    pub fn close_reason(&self) -> Option<&CloseReason> {
        match &self.state {
            State::Closed(r) => Some(r),
            _ => None,
        }
    }

    /// True once closed.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed(_))
    }

    /// The authenticated peer, once known.
    pub fn peer(&self) -> Option<&PeerIdentity> {
        self.peer.as_ref()
    }

    /// Configuration in use.
    pub fn config(&self) -> &ConnConfig {
        &self.cfg
    }

    /// Largest frame (header + payload) we send: min(our frame size, the peer's).
    pub fn send_frame_size(&self) -> u32 {
        self.send_frame_size
    }

    /// Largest payload a data frame to `mblk_id` at `addr` can carry.
    pub fn max_data_payload(&self, mblk_id: u32, addr: u32) -> usize {
        (self.send_frame_size as usize).saturating_sub(header_len_for(self.framing, mblk_id, addr))
    }

    /// Bytes sent but not yet acknowledged by the peer.
    pub fn in_air(&self) -> u32 {
        self.bytes_sent.wrapping_sub(self.processed_bytes) & self.framing.counter_mask()
    }

    /// The sending window: 44 × send frame size on sockets, 200 bytes on serial, and
    /// [`STREAMING_MAX_IN_AIR`] between streaming peers ([`Connection::streaming`]).
    pub fn max_in_air(&self) -> u32 {
        if self.streaming() {
            STREAMING_MAX_IN_AIR
        } else {
            self.framing.max_in_air(self.send_frame_size)
        }
    }

    /// The window for ACKs caused by the unacknowledged limit: the frame window plus room for
    /// the ACKs (spec §4.3), widened like [`Connection::max_in_air`] between streaming peers.
    fn max_ack_in_air(&self) -> u32 {
        let base = self.framing.max_ack_in_air(self.send_frame_size);
        base - self.framing.max_in_air(self.send_frame_size) + self.max_in_air()
    }

    /// True once both ends announced the protocol's largest frame size on a socket: our own
    /// peers (see [`is_streaming`]). Derived from the negotiated send frame size, which is the
    /// reference's 1392 or smaller with every stock C peer.
    pub fn streaming(&self) -> bool {
        self.peer.is_some() && is_streaming(self.framing, self.send_frame_size)
    }

    /// The framing of this connection's byte stream.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// Number of frames queued and not yet transmitted.
    pub fn queued_frames(&self) -> usize {
        self.removes.len() + self.infos.len() + self.data.len()
    }

    /// Total bytes received in frames and ACKs (the counter our ACKs carry).
    pub fn bytes_received(&self) -> u32 {
        self.bytes_received
    }

    // ----- transitions -------------------------------------------------------------------------

    /// Client: queue the hello (uncounted) and enter `AwaitAuth`.
    fn send_hello(&mut self) {
        let hello = ClientHello::client(&self.cfg.identity.network_name);
        if let Err(e) = hello.encode(&mut self.hs_out) {
            self.close(CloseReason::Handshake(e));
            return;
        }
        self.enter_await_auth();
    }

    /// Handshake done: the initial ACK goes out next; a controller queues its auth frame.
    fn enter_await_auth(&mut self) {
        self.state = State::AwaitAuth;
        if self.cfg.role == Role::Controller {
            self.own_auth_pending = true;
        }
    }

    /// The peer's authentication frame was accepted.
    fn enter_running(&mut self, peer: PeerIdentity) {
        if (MIN_FRAME_SIZE..=MAX_FRAME_SIZE).contains(&peer.frame_size)
            && peer.frame_size < self.send_frame_size
        {
            self.send_frame_size = peer.frame_size;
        }
        if is_auto_network(&self.network_name) && !is_auto_network(&peer.network_name) {
            self.network_name = peer.network_name.clone();
        }
        if !self.own_auth_sent {
            self.own_auth_pending = true;
        }
        self.state = State::Running;
        self.events.push_back(ConnEvent::Authenticated {
            peer: peer.clone(),
            send_frame_size: self.send_frame_size,
            framing: self.framing,
            network_name: self.network_name.clone(),
        });
        self.peer = Some(peer);
    }

    /// Closes the connection (no-op if already closed). Queued frames are dropped.
    pub fn close(&mut self, reason: CloseReason) {
        if !self.is_closed() {
            self.state = State::Closed(reason);
            self.removes.clear();
            self.infos.clear();
            self.data.clear();
            self.hs_out.clear();
        }
    }

    fn fail<T>(&mut self, reason: CloseReason) -> Result<T, CloseReason> {
        self.close(reason.clone());
        Err(reason)
    }

    // ----- input -------------------------------------------------------------------------------

    /// Processes received bytes (any segmentation). On a protocol error the connection closes and
    /// the reason is returned; later calls return it again.
    pub fn handle_input(&mut self, data: &[u8], now: Instant) -> Result<(), CloseReason> {
        if let State::Closed(r) = &self.state {
            return Err(r.clone());
        }
        if data.is_empty() {
            return Ok(());
        }
        self.last_recv = now;
        let r = self.input(data);
        // A started element must complete within the frame timeout, however slowly it trickles.
        let partial = self.decoder.buffered() + self.hs_in.len() > 0;
        self.partial_since = match (partial, self.partial_since) {
            (false, _) => None,
            (true, None) => Some(now),
            (true, since) => since,
        };
        r
    }

    fn input(&mut self, data: &[u8]) -> Result<(), CloseReason> {
        let mut rest = data;
        if let State::Handshake(step) = self.state {
            match step {
                HandshakeStep::AwaitTlsMark => {
                    let Some((&b, tail)) = rest.split_first() else {
                        return Ok(());
                    };
                    if b != TLS_MARK {
                        return self.fail(HandshakeError::BadTlsMark(b).into());
                    }
                    rest = tail;
                    self.send_hello();
                    if let State::Closed(r) = &self.state {
                        return Err(r.clone());
                    }
                }
                HandshakeStep::AwaitHello => {
                    self.hs_in.extend_from_slice(rest);
                    match ClientHello::decode(&self.hs_in) {
                        Ok(None) => return Ok(()),
                        Err(e) => return self.fail(e.into()),
                        Ok(Some((hello, used))) => {
                            if hello.request_certificate {
                                self.hs_out.extend_from_slice(&NO_TRUST_CERTIFICATE);
                            }
                            let tail = self.hs_in.split_off(used.min(self.hs_in.len()));
                            self.hs_in = Vec::new();
                            self.enter_await_auth();
                            return self.feed_elements(&tail);
                        }
                    }
                }
            }
        }
        self.feed_elements(rest)
    }

    /// The peer closed its sending side: [`CloseReason::Truncated`] if it stopped inside an
    /// element or the handshake, else [`CloseReason::PeerClosed`].
    pub fn handle_eof(&mut self) {
        let buffered = self.decoder.buffered() + self.hs_in.len();
        if buffered > 0 {
            self.close(CloseReason::Truncated { buffered });
        } else {
            self.close(CloseReason::PeerClosed);
        }
    }

    fn feed_elements(&mut self, data: &[u8]) -> Result<(), CloseReason> {
        let mut input = data;
        loop {
            match self.decoder.next_from(&mut input) {
                Ok(None) => return Ok(()),
                Err(e) => return self.fail(e.into()),
                Ok(Some((el, len))) => {
                    self.bytes_received = self.bytes_received.wrapping_add(len as u32);
                    match el {
                        Element::Ack(v) => self.processed_bytes = v,
                        Element::Frame(f) => {
                            if let Err(r) = self.on_frame(f) {
                                return self.fail(r);
                            }
                        }
                    }
                }
            }
        }
    }

    fn on_frame(&mut self, f: Frame) -> Result<(), CloseReason> {
        let running = self.state == State::Running;
        if !f.flags.system() {
            if !running {
                return Err(self.unexpected("data frame"));
            }
            if !self.announced.contains(&f.mblk_id) {
                return Err(CloseReason::UnknownMblk(f.mblk_id));
            }
            self.events.push_back(ConnEvent::Data {
                mblk_id: f.mblk_id,
                addr: f.addr,
                flags: f.flags,
                payload: f.payload,
            });
            return Ok(());
        }
        match SystemFrame::from_frame(&f)? {
            SystemFrame::Auth(a) if self.state == State::AwaitAuth => self.on_peer_auth(a),
            SystemFrame::Auth(_) => Err(self.unexpected("authentication frame")),
            _ if !running => Err(self.unexpected("system frame")),
            SystemFrame::MblkInfo(i) => {
                self.events.push_back(ConnEvent::MblkInfo(i));
                Ok(())
            }
            SystemFrame::RemoveMblk(r) => {
                self.events.push_back(ConnEvent::RemoveMblk(r.ids));
                Ok(())
            }
            SystemFrame::Unknown(_) => Ok(()),
        }
    }

    fn unexpected(&self, what: &'static str) -> CloseReason {
        CloseReason::UnexpectedFrame {
            state: self.state.name(),
            what,
        }
    }

    fn on_peer_auth(&mut self, a: AuthFrame) -> Result<(), CloseReason> {
        let password_hash = if a.password.is_empty() {
            String::new()
        } else {
            hash_password(&a.password)
        };
        let peer = PeerIdentity {
            user_name: a.user_name.clone(),
            device_nr: a.device_nr,
            unique_id: a.unique_id,
            network_name: a.network_name.clone(),
            password_hash,
            flags: a.flags,
            frame_size: a.frame_size,
            assigned_nr: None,
        };
        if let PeerAuth::Accounts(accts) = &self.cfg.peer_auth {
            accts.authorize(
                &peer.account_name(),
                &peer.network_name,
                &peer.password_hash,
            )?;
        }
        self.enter_running(peer);
        Ok(())
    }

    /// The next event for the owner.
    pub fn poll_event(&mut self) -> Option<ConnEvent> {
        self.events.pop_front()
    }

    // ----- output ------------------------------------------------------------------------------

    /// Queues a data frame for our peer's block `mblk_id` (the peer's id) at `addr`.
    pub fn queue_data_frame(
        &mut self,
        mblk_id: u32,
        addr: u32,
        flags: FrameFlags,
        payload: Vec<u8>,
    ) -> Result<(), QueueError> {
        if flags.system() {
            return Err(QueueError::NotAllowed);
        }
        let f = Frame {
            nr: 0,
            flags,
            mblk_id,
            addr,
            payload,
        };
        self.check_queueable(&f)?;
        self.data.push_back(f);
        Ok(())
    }

    /// Queues a memory block info or remove request. Info frames announce *our* id: data frames
    /// to that id are accepted from then on.
    pub fn queue_system_frame(&mut self, frame: SystemFrame) -> Result<(), QueueError> {
        match frame {
            SystemFrame::MblkInfo(info) => {
                if !(MIN_MBLK_ID..=MAX_MBLK_ID).contains(&info.mblk_id) {
                    return Err(QueueError::BadMblkId(info.mblk_id));
                }
                let f = info.to_frame(0)?;
                self.check_queueable(&f)?;
                self.announced.insert(info.mblk_id);
                self.infos.push_back(f);
            }
            SystemFrame::RemoveMblk(r) => {
                let f = r.to_frame(0)?;
                self.check_queueable(&f)?;
                self.removes.push_back(f);
            }
            SystemFrame::Auth(_) | SystemFrame::Unknown(_) => return Err(QueueError::NotAllowed),
        }
        Ok(())
    }

    /// Stops accepting data frames for our block `mblk_id` (after the owner deleted it).
    pub fn withdraw_mblk(&mut self, mblk_id: u32) {
        self.announced.remove(&mblk_id);
    }

    fn check_queueable(&self, f: &Frame) -> Result<(), QueueError> {
        if self.state != State::Running {
            return Err(QueueError::NotRunning);
        }
        let len = f.encoded_len(self.framing);
        let max = self.send_frame_size as usize;
        if len > max {
            return Err(QueueError::TooLarge { len, max });
        }
        Ok(())
    }

    fn serial(&self) -> bool {
        self.framing == Framing::Serial
    }

    fn push_ack(&mut self, out: &mut Vec<u8>) {
        encode_ack(self.framing, self.bytes_received, out);
        self.bytes_acknowledged = self.bytes_received;
        self.bytes_sent = self.bytes_sent.wrapping_add(self.framing.ack_len() as u32);
    }

    fn own_auth_frame(&self) -> AuthFrame {
        let id = &self.cfg.identity;
        let nr = wire_device_nr(id.device_nr);
        let mut flags = 0u8;
        let connect_up = self.cfg.role == Role::Device;
        if connect_up {
            flags |= auth_flags::CONNECT_UP;
        }
        if self.cfg.bidirectional {
            flags |= auth_flags::BIDIRECTIONAL_COM;
        }
        let password = if self.cfg.secure && self.cfg.side == Side::Client && !self.serial() {
            id.password.clone()
        } else {
            String::new()
        };
        AuthFrame {
            frame_size: self.cfg.frame_size,
            flags,
            user_name: id.device_name.clone(),
            device_nr: nr,
            // The C library sends its unique id only on a socket connecting up.
            unique_id: if nr == 0 && connect_up && !self.serial() {
                id.unique_id
            } else {
                None
            },
            network_name: self.network_name.clone(),
            password,
        }
    }

    /// Queue holding the next frame allowed to go out (after our own authentication frame).
    fn next_queue(&mut self) -> Option<&mut VecDeque<Frame>> {
        if self.state != State::Running || !self.own_auth_sent {
            return None;
        }
        [&mut self.removes, &mut self.infos, &mut self.data]
            .into_iter()
            .find(|q| !q.is_empty())
    }

    /// Removes and returns the next frame to send if it fits `room` bytes of the window.
    fn take_frame(&mut self, room: u32) -> Option<Frame> {
        let framing = self.framing;
        if self.own_auth_pending {
            let f = match self.own_auth_frame().to_frame() {
                Ok(f) => f,
                Err(e) => {
                    self.close(CloseReason::SysFrame(e));
                    return None;
                }
            };
            if f.encoded_len(framing) as u32 > room {
                return None;
            }
            self.own_auth_pending = false;
            self.own_auth_sent = true;
            return Some(f);
        }
        let q = self.next_queue()?;
        if q.front()?.encoded_len(framing) as u32 > room {
            return None;
        }
        q.pop_front()
    }

    /// Appends bytes to write to `out`: handshake bytes, ACKs and frames in the C priority order
    /// (ACK, own authentication, remove requests, memory block info, data), within the sending
    /// window. Returns true if anything was appended.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>) -> bool {
        if self.is_closed() {
            return false;
        }
        let start = out.len();
        out.append(&mut self.hs_out);
        if matches!(self.state, State::AwaitAuth | State::Running) {
            let mask = self.framing.counter_mask();
            let max_in_air = self.max_in_air();
            let max_ack_in_air = self.max_ack_in_air();
            let limit = self.framing.unacknowledged_limit();
            loop {
                let unacked = self.bytes_received.wrapping_sub(self.bytes_acknowledged) & mask;
                if unacked >= limit
                    && self.in_air() + self.framing.ack_len() as u32 <= max_ack_in_air
                {
                    self.push_ack(out);
                }
                if out.len() - start >= TRANSMIT_BUDGET {
                    break;
                }
                let room = max_in_air.saturating_sub(self.in_air());
                let Some(mut f) = self.take_frame(room) else {
                    break;
                };
                let len = f.encoded_len(self.framing) as u32;
                f.nr = self.next_nr;
                if let Err(e) = f.encode(self.framing, out) {
                    // Checked when queued; an error here is a bug, reported as a local close.
                    self.close(CloseReason::Local(format!(
                        "cannot encode queued frame: {e}"
                    )));
                    break;
                }
                self.next_nr = next_frame_nr(self.next_nr);
                self.bytes_sent = self.bytes_sent.wrapping_add(len);
            }
            if out.len() == start
                && now.saturating_duration_since(self.last_send) >= self.cfg.keepalive
            {
                self.push_ack(out);
            }
        }
        let wrote = out.len() > start;
        if wrote {
            self.last_send = now;
        }
        wrote
    }

    // ----- timers ------------------------------------------------------------------------------

    /// When [`Connection::handle_timeout`] (and then [`Connection::poll_transmit`]) should run
    /// next; `None` once closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = match self.state {
            State::Closed(_) => return None,
            State::Handshake(_) => self.created + self.cfg.handshake_timeout,
            State::AwaitAuth => {
                (self.created + self.cfg.handshake_timeout).min(self.last_send + self.cfg.keepalive)
            }
            State::Running => self.last_send + self.cfg.keepalive,
        };
        t = t.min(self.last_recv + self.cfg.silence_timeout);
        if let Some(since) = self.partial_since {
            t = t.min(since + self.cfg.frame_timeout);
        }
        Some(t)
    }

    /// Applies the handshake deadline and the silence timeout. Keep-alive ACKs are produced by
    /// the next [`Connection::poll_transmit`].
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Closed(_) => {}
            State::Handshake(_) | State::AwaitAuth
                if now.saturating_duration_since(self.created) >= self.cfg.handshake_timeout =>
            {
                self.close(CloseReason::HandshakeTimeout(self.cfg.handshake_timeout));
            }
            _ if now.saturating_duration_since(self.last_recv) >= self.cfg.silence_timeout => {
                self.close(CloseReason::Silence(self.cfg.silence_timeout));
            }
            _ if self
                .partial_since
                .is_some_and(|t| now.saturating_duration_since(t) >= self.cfg.frame_timeout) =>
            {
                self.close(CloseReason::FrameTimeout(self.cfg.frame_timeout));
            }
            _ => {}
        }
    }
}
