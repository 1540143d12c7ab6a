//! The tokio driver of IOCOM connections: TCP and TLS, listening and connecting up with
//! reconnect and exponential backoff, and serial lines ([`serial`]).
//!
//! Every connection runs in its own task that owns its [`Connection`] and a tracing span
//! `iocom{conn=<id> peer=<addr>}`. Tasks talk to one owner through channels:
//!
//! * the owner receives [`NetEvent`]s on one `mpsc::Receiver`: [`NetEvent::Connected`] with a
//!   [`ConnHandle`] to that connection, [`NetEvent::Conn`] for each [`ConnEvent`], and
//!   [`NetEvent::Closed`] with the [`CloseReason`] (always the last event of a connection);
//! * the owner sends frames with [`ConnHandle`] (a cloneable `mpsc::Sender` wrapper).
//!
//! A protocol error, an oversized or truncated frame, data for an unknown block, a failed TLS
//! handshake or a peer that never completes the IOCOM handshake closes only that connection, with
//! the reason logged (`warn`) and reported. Shutdown is a [`CancellationToken`]: listeners stop
//! accepting, connections close, and [`listen`] / [`connect`] return after their tasks ended.
//!
//! ```no_run
//! use iocomd::net::{self, NetEvent};
//! use iocomd::proto::conn::{ConnConfig, ConnEvent, LocalIdentity, Role, Side};
//! use tokio::sync::mpsc;
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn demo() -> std::io::Result<()> {
//! let identity = LocalIdentity {
//!     device_name: "gina".into(),
//!     device_nr: 3,
//!     network_name: "cafenet".into(),
//!     unique_id: None,
//!     password: String::new(),
//! };
//! let cfg = ConnConfig::new(Role::Device, Side::Server, identity);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:6368").await?;
//! let (tx, mut rx) = mpsc::channel(64);
//! let shutdown = CancellationToken::new();
//! tokio::spawn(net::listen(listener, None, cfg, tx, shutdown.clone()));
//! while let Some(ev) = rx.recv().await {
//!     match ev {
//!         NetEvent::Connected { id, handle, .. } => { /* keep `handle` for queueing frames */ }
//!         NetEvent::Conn { id, event: ConnEvent::Authenticated { .. } } => { /* announce blocks */ }
//!         NetEvent::Conn { id, event } => { /* MblkInfo, RemoveMblk, Data */ }
//!         NetEvent::QueueFailed { id, error } => {}
//!         NetEvent::Closed { id, reason } => { /* forget the connection's bindings */ }
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! [`Connection`]: crate::proto::conn::Connection
//! [`CancellationToken`]: tokio_util::sync::CancellationToken

mod connect;
mod driver;
pub mod lighthouse;
mod listen;
pub mod serial;
pub mod tls;

pub use connect::{Backoff, ConnectError, ConnectTarget, connect, connect_once};
pub(crate) use driver::run_stream;
pub use listen::{DRAIN_TIMEOUT, listen};

use crate::proto::conn::{CloseReason, ConnEvent, QueueError};
use crate::proto::frame::FrameFlags;
use crate::proto::sysframe::SystemFrame;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

/// Process-unique connection id.
pub type ConnId = u64;

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) fn next_conn_id() -> ConnId {
    NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed)
}

/// Where a connection's peer is: a TCP address or the serial port it is on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PeerAddr {
    /// TCP (or TLS) peer address.
    Tcp(SocketAddr),
    /// The serial port (device path) the peer is on.
    Serial(PathBuf),
}

impl PeerAddr {
    /// True for a serial line.
    pub fn is_serial(&self) -> bool {
        matches!(self, PeerAddr::Serial(_))
    }

    /// Same source: the same IP address (any port), or the same serial port.
    pub fn same_source(&self, other: &PeerAddr) -> bool {
        match (self, other) {
            (PeerAddr::Tcp(a), PeerAddr::Tcp(b)) => a.ip() == b.ip(),
            (PeerAddr::Serial(a), PeerAddr::Serial(b)) => a == b,
            _ => false,
        }
    }
}

impl From<SocketAddr> for PeerAddr {
    fn from(a: SocketAddr) -> Self {
        PeerAddr::Tcp(a)
    }
}

impl std::fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerAddr::Tcp(a) => write!(f, "{a}"),
            PeerAddr::Serial(p) => write!(f, "serial:{}", p.display()),
        }
    }
}

impl serde::Serialize for PeerAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What a connection task reports to its owner.
#[derive(Debug, Clone)]
pub enum NetEvent {
    /// A stream is open (TLS handshake done); the IOCOM handshake starts.
    Connected {
        /// Connection id.
        id: ConnId,
        /// The peer's address (or serial port).
        peer: PeerAddr,
        /// Handle for queueing frames to this connection.
        handle: ConnHandle,
    },
    /// A protocol event of connection `id`.
    Conn {
        /// Connection id.
        id: ConnId,
        /// The event.
        event: ConnEvent,
    },
    /// A command from the owner could not be queued (the connection stays open).
    QueueFailed {
        /// Connection id.
        id: ConnId,
        /// Why.
        error: QueueError,
    },
    /// The connection is closed; no more events for `id` follow.
    Closed {
        /// Connection id.
        id: ConnId,
        /// Why it closed.
        reason: CloseReason,
    },
}

/// A command for a connection task.
#[derive(Debug)]
pub(crate) enum Command {
    Data {
        mblk_id: u32,
        addr: u32,
        flags: FrameFlags,
        payload: Vec<u8>,
    },
    System(SystemFrame),
    Withdraw(u32),
    Close(String),
}

/// The connection task has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("connection {0} is closed")]
pub struct ConnGone(pub ConnId);

/// Why a command could not be queued without waiting ([`ConnHandle::try_queue_data`] and
/// friends, for an owner that must not await: the daemon's core loop).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TryQueueError {
    /// The connection's command queue is full; try again once it has room
    /// ([`ConnHandle::capacity`]).
    #[error("the command queue of connection {0} is full")]
    Full(ConnId),
    /// The connection task has ended.
    #[error(transparent)]
    Gone(#[from] ConnGone),
}

/// Sends frames to one connection. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ConnHandle {
    id: ConnId,
    tx: mpsc::Sender<Command>,
}

impl ConnHandle {
    /// The connection id.
    pub fn id(&self) -> ConnId {
        self.id
    }

    async fn send(&self, c: Command) -> Result<(), ConnGone> {
        self.tx.send(c).await.map_err(|_| ConnGone(self.id))
    }

    fn try_send(&self, c: Command) -> Result<(), TryQueueError> {
        self.tx.try_send(c).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => TryQueueError::Full(self.id),
            mpsc::error::TrySendError::Closed(_) => TryQueueError::Gone(ConnGone(self.id)),
        })
    }

    /// Commands that can be queued now without waiting (0 when the queue is full or the
    /// connection is gone).
    pub fn capacity(&self) -> usize {
        if self.tx.is_closed() {
            0
        } else {
            self.tx.capacity()
        }
    }

    /// [`ConnHandle::queue_data`] without waiting: fails at once when the queue is full.
    pub fn try_queue_data(
        &self,
        mblk_id: u32,
        addr: u32,
        flags: FrameFlags,
        payload: Vec<u8>,
    ) -> Result<(), TryQueueError> {
        self.try_send(Command::Data {
            mblk_id,
            addr,
            flags,
            payload,
        })
    }

    /// [`ConnHandle::queue_system`] without waiting.
    pub fn try_queue_system(&self, frame: SystemFrame) -> Result<(), TryQueueError> {
        self.try_send(Command::System(frame))
    }

    /// [`ConnHandle::close`] without waiting.
    pub fn try_close(&self, why: impl Into<String>) -> Result<(), TryQueueError> {
        self.try_send(Command::Close(why.into()))
    }

    /// Queues a data frame to the peer's block `mblk_id` (the peer's id). Size errors are
    /// reported as [`NetEvent::QueueFailed`].
    pub async fn queue_data(
        &self,
        mblk_id: u32,
        addr: u32,
        flags: FrameFlags,
        payload: Vec<u8>,
    ) -> Result<(), ConnGone> {
        self.send(Command::Data {
            mblk_id,
            addr,
            flags,
            payload,
        })
        .await
    }

    /// Queues a memory block info or remove request.
    pub async fn queue_system(&self, frame: SystemFrame) -> Result<(), ConnGone> {
        self.send(Command::System(frame)).await
    }

    /// Stops accepting data for our block `mblk_id`.
    pub async fn withdraw_mblk(&self, mblk_id: u32) -> Result<(), ConnGone> {
        self.send(Command::Withdraw(mblk_id)).await
    }

    /// Closes the connection; [`NetEvent::Closed`] follows with [`CloseReason::Local`].
    pub async fn close(&self, why: impl Into<String>) -> Result<(), ConnGone> {
        self.send(Command::Close(why.into())).await
    }
}
