//! Where an update comes from ([`Origin`]: an IOCOM stream, a fleet action, a transaction
//! resumed after a restart) and where an install goes when it finishes ([`After`]).

/// Where an update comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// An IOCOM stream (select 1) on connection `conn`; `None` once the connection closed.
    Iocom {
        /// The connection.
        conn: Option<u64>,
        /// The controller's address (or serial port).
        peer: crate::net::PeerAddr,
        /// Its account (`None`: plain TCP).
        user: Option<String>,
    },
    /// A fleet server's deployment action (hawkBit DDI).
    Fleet {
        /// The action id.
        action: String,
    },
    /// A transaction the helper was still running when iocomd started.
    Resumed,
}

impl Origin {
    /// The IOCOM connection, while it is open.
    pub fn conn(&self) -> Option<u64> {
        match self {
            Origin::Iocom { conn, .. } => *conn,
            _ => None,
        }
    }

    /// For the helper's advisory `origin` and logs.
    pub fn describe(&self) -> String {
        match self {
            Origin::Iocom { peer, user, .. } => {
                format!("iocom {peer} user {}", user.as_deref().unwrap_or("?"))
            }
            Origin::Fleet { action } => format!("fleet action {action}"),
            Origin::Resumed => "resumed after a restart".into(),
        }
    }
}

/// Where an install goes when it finishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Back to idle.
    Idle,
    /// Back to the reservation it was submitted under (a fleet action with more files).
    Reserved,
}
