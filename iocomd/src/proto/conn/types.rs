//! Public types of the connection state machine: configuration, identities, events, states and
//! close reasons.

use super::{
    DEFAULT_FRAME_TIMEOUT, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_KEEPALIVE, DEFAULT_SILENCE_TIMEOUT,
    SERIAL_KEEPALIVE, SERIAL_SILENCE_TIMEOUT,
};
use crate::proto::frame::{FrameError, FrameFlags, Framing, SERIAL_FRAME_SIZE, SOCKET_FRAME_SIZE};
use crate::proto::handshake::HandshakeError;
use crate::proto::password::{Accounts, AuthRejection};
use crate::proto::sysframe::{MblkInfo, SysFrameError};
use std::time::Duration;
use thiserror::Error;

/// Our place in the IO hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The lower node (`CONNECT_UP`): waits for the peer's authentication frame, then announces
    /// all its memory blocks.
    Device,
    /// The upper node: authenticates first and replies to memory block info.
    Controller,
}

/// Which end opened the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// We connected: we send the socket handshake.
    Client,
    /// We accepted: we read the socket handshake (and send `5B` first on TLS).
    Server,
}

/// Who we are on the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct LocalIdentity {
    /// Device or user name, e.g. `"gina"` or `"ctl"`.
    pub device_name: String,
    /// Device number; 9000 and above mean automatic (sent as 0).
    pub device_nr: u32,
    /// IO network name; `"*"` or empty adopts the peer's network.
    pub network_name: String,
    /// Persistent unique id, sent by a device with an automatic number.
    pub unique_id: Option<[u8; 12]>,
    /// Password sent in clear text inside TLS when we are the TLS client; never sent otherwise.
    pub password: String,
}

impl LocalIdentity {
    /// An identity without unique id and password.
    pub fn new(device_name: &str, device_nr: u32, network_name: &str) -> Self {
        Self {
            device_name: device_name.to_owned(),
            device_nr,
            network_name: network_name.to_owned(),
            unique_id: None,
            password: String::new(),
        }
    }
}

impl std::fmt::Debug for LocalIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalIdentity")
            .field("device_name", &self.device_name)
            .field("device_nr", &self.device_nr)
            .field("network_name", &self.network_name)
            .field("unique_id", &self.unique_id)
            .finish_non_exhaustive()
    }
}

/// How the peer's authentication frame is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerAuth {
    /// Accept every well-formed authentication frame.
    AcceptAll,
    /// Require an account matching the peer's name with number, network and password hash.
    Accounts(Accounts),
}

/// Configuration of one connection.
#[derive(Debug, Clone)]
pub struct ConnConfig {
    /// Device or controller.
    pub role: Role,
    /// Client or server of the stream (on serial: of the connect sequence).
    pub side: Side,
    /// Socket (TCP, TLS) or serial framing.
    pub framing: Framing,
    /// The stream is TLS (mark byte `5B`, password from the client).
    pub secure: bool,
    /// Our identity.
    pub identity: LocalIdentity,
    /// Our receive frame size, announced to the peer (96..=16384; default 1392).
    pub frame_size: u32,
    /// Deadline from creation for the handshake and both authentication frames.
    pub handshake_timeout: Duration,
    /// Send an ACK after this long without sending anything.
    pub keepalive: Duration,
    /// Close after this long without receiving anything.
    pub silence_timeout: Duration,
    /// Close when a started frame (or handshake element) is not complete after this long,
    /// however slowly its bytes keep arriving.
    pub frame_timeout: Duration,
    /// How the peer is authenticated.
    pub peer_auth: PeerAuth,
    /// Request bidirectional memory blocks (auth flag `0x80`).
    pub bidirectional: bool,
}

impl ConnConfig {
    /// A configuration with the protocol's default frame size and timers, accepting any peer.
    pub fn new(role: Role, side: Side, identity: LocalIdentity) -> Self {
        Self {
            role,
            side,
            framing: Framing::Socket,
            secure: false,
            identity,
            frame_size: SOCKET_FRAME_SIZE,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            keepalive: DEFAULT_KEEPALIVE,
            silence_timeout: DEFAULT_SILENCE_TIMEOUT,
            frame_timeout: DEFAULT_FRAME_TIMEOUT,
            peer_auth: PeerAuth::AcceptAll,
            bidirectional: false,
        }
    }
}

impl ConnConfig {
    /// A serial-line configuration with the C library's serial constants: 96-byte frames,
    /// keep-alive 150 ms, silence 250 ms, accepting any peer (a serial line has no TLS).
    pub fn serial(role: Role, side: Side, identity: LocalIdentity) -> Self {
        Self {
            framing: Framing::Serial,
            frame_size: SERIAL_FRAME_SIZE,
            keepalive: SERIAL_KEEPALIVE,
            silence_timeout: SERIAL_SILENCE_TIMEOUT,
            ..Self::new(role, side, identity)
        }
    }
}

/// The authenticated peer, from its authentication frame. Holds no clear password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// User or device name.
    pub user_name: String,
    /// Device number as sent (0 = automatic).
    pub device_nr: u32,
    /// Unique id, if sent.
    pub unique_id: Option<[u8; 12]>,
    /// The peer's network name.
    pub network_name: String,
    /// [`hash_password`] of the received password; empty if none was sent.
    pub password_hash: String,
    /// Auth flags ([`crate::proto::auth::auth_flags`], semantic bits).
    pub flags: u8,
    /// The receive frame size the peer announced.
    pub frame_size: u32,
    /// The automatic device number the receiving end assigned to this peer (spec §2.9). The
    /// connection leaves it `None`; an owner that assigns numbers fills it in.
    pub assigned_nr: Option<u32>,
}

impl PeerIdentity {
    /// Name with non-zero device number appended, as accounts see it (`"gina3"`).
    pub fn account_name(&self) -> String {
        if self.device_nr == 0 {
            self.user_name.clone()
        } else {
            format!("{}{}", self.user_name, self.device_nr)
        }
    }
}

/// Something the owner must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnEvent {
    /// The peer's authentication frame was accepted; data may flow.
    Authenticated {
        /// Who the peer is.
        peer: PeerIdentity,
        /// Largest frame we will send (min of ours and the peer's).
        send_frame_size: u32,
        /// The framing: data frame headers are one byte longer on serial (CRC, 1-byte size).
        framing: Framing,
        /// Our network name after adopting the peer's when ours was `"*"`.
        network_name: String,
    },
    /// The peer described one of its memory blocks.
    MblkInfo(MblkInfo),
    /// The peer asks us to delete our blocks with these ids.
    RemoveMblk(Vec<u32>),
    /// A data frame for our block `mblk_id`.
    Data {
        /// Our id of the target block.
        mblk_id: u32,
        /// Start offset in the block.
        addr: u32,
        /// Delta / compressed / sync-complete flags.
        flags: FrameFlags,
        /// Payload (format in the data part of the spec).
        payload: Vec<u8>,
    },
}

/// Why a connection closed. Every variant closes only this connection.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CloseReason {
    /// Bad socket handshake.
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    /// Undecodable byte stream.
    #[error("framing: {0}")]
    Frame(#[from] FrameError),
    /// Malformed system frame.
    #[error("system frame: {0}")]
    SysFrame(#[from] SysFrameError),
    /// The peer's credentials were refused.
    #[error("authentication refused: {0}")]
    Rejected(#[from] AuthRejection),
    /// A frame arrived that is not allowed in the current state.
    #[error("{what} received while {state}")]
    UnexpectedFrame {
        /// State name.
        state: &'static str,
        /// What arrived.
        what: &'static str,
    },
    /// A data frame for an id we never announced.
    #[error("data frame for unknown memory block id {0}")]
    UnknownMblk(u32),
    /// Handshake and authentication did not finish in time.
    #[error("handshake/authentication not finished within {0:?}")]
    HandshakeTimeout(Duration),
    /// Nothing received for the silence timeout.
    #[error("nothing received for {0:?}")]
    Silence(Duration),
    /// A frame was started but not completed within the frame timeout (a trickling peer).
    #[error("a frame started {0:?} ago is still incomplete")]
    FrameTimeout(Duration),
    /// The peer closed the stream.
    #[error("peer closed the connection")]
    PeerClosed,
    /// The peer closed the stream in the middle of an element (or of the handshake).
    #[error("peer closed the connection with {buffered} bytes of an unfinished element")]
    Truncated {
        /// Bytes of the partial element.
        buffered: usize,
    },
    /// Our side closed it (owner request or shutdown).
    #[error("closed locally: {0}")]
    Local(String),
    /// I/O or TLS error on the stream (set by the net driver).
    #[error("I/O: {0}")]
    Io(String),
}

/// Why a frame cannot be queued.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QueueError {
    /// The connection is not in `Running`.
    #[error("connection is not running")]
    NotRunning,
    /// Header + payload exceed the negotiated send frame size.
    #[error("frame of {len} bytes exceeds the send frame size {max}")]
    TooLarge {
        /// Frame length.
        len: usize,
        /// Send frame size.
        max: usize,
    },
    /// Data frames must not carry the system flag; auth frames are sent by the connection.
    #[error("frame kind not allowed here")]
    NotAllowed,
    /// The system frame cannot be encoded.
    #[error("system frame: {0}")]
    SysFrame(#[from] SysFrameError),
    /// Our own block ids must be in 8..=32767 (C peers keep peer ids in 16 signed bits).
    #[error("memory block id {0} is outside 8..=32767")]
    BadMblkId(u32),
}

/// Sub-state of the socket handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeStep {
    /// TLS client: waiting for the server's `5B`.
    AwaitTlsMark,
    /// Server: waiting for the client's hello.
    AwaitHello,
}

/// Connection state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Socket handshake in progress; nothing else is sent or received.
    Handshake(HandshakeStep),
    /// Handshake done; waiting for the peer's authentication frame.
    AwaitAuth,
    /// Both sides may exchange system and data frames.
    Running,
    /// Finished; nothing more is sent or accepted.
    Closed(CloseReason),
}

impl State {
    pub(super) fn name(&self) -> &'static str {
        match self {
            State::Handshake(_) => "in the socket handshake",
            State::AwaitAuth => "awaiting authentication",
            State::Running => "running",
            State::Closed(_) => "closed",
        }
    }
}
