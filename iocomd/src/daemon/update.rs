//! The update state machine: at most one push at a time, from the first byte to the
//! helper's final result.
//!
//! ```text
//! Idle ──start──► Receiving{conn, writer, bytes} ──received──► Spooling{conn}
//!   ▲                 │ fail (drop, interrupt, timeout, too large, no space, CRC)
//!   │                 ▼
//!   ◄─────────────── Idle (result published)
//! Spooling ──spooled──► Installing{conn, txid: None} ──install_started──► Installing{txid}
//! Installing ──finished──► Idle (result published)
//! ```
//! A second push while not `Idle` is refused ([`Rejection::Busy`]) and changes nothing.

use crate::spool::SpoolWriter;
use crate::status::UpdState;
use std::time::Instant;

/// Connection id of a push (`None` when the pusher is gone or the daemon restarted).
pub type Conn = Option<u64>;

/// The update state.
#[derive(Debug, Default)]
pub enum Update {
    /// Nothing running.
    #[default]
    Idle,
    /// Receiving a package from `conn` into `writer`.
    Receiving {
        /// The pushing connection.
        conn: u64,
        /// The spool file being written (dropping it deletes the partial file).
        writer: Box<SpoolWriter>,
        /// When the push started.
        started: Instant,
        /// Number of this push (for logs).
        push: u64,
    },
    /// The stream completed; the spool is being finished (CRC, fsync, rename).
    Spooling {
        /// The pushing connection.
        conn: Conn,
        /// Number of this push.
        push: u64,
    },
    /// The helper has the package (or is being handed it: `txid` is `None` until `Install`
    /// returned).
    Installing {
        /// The pushing connection.
        conn: Conn,
        /// The helper's transaction id.
        txid: Option<String>,
        /// The phase the helper reported last.
        phase: UpdState,
        /// Number of this push.
        push: u64,
    },
}

/// Why a transition was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Another push is running.
    Busy,
    /// The event does not belong to the current state (e.g. a stale connection or txid).
    NotApplicable,
}

impl Update {
    /// The phase published in `upd_state`.
    pub fn phase(&self) -> UpdState {
        match self {
            Update::Idle => UpdState::Idle,
            Update::Receiving { .. } => UpdState::Receiving,
            Update::Spooling { .. } => UpdState::Verifying,
            Update::Installing { phase, .. } => *phase,
        }
    }

    /// The connection the running push came from.
    pub fn conn(&self) -> Conn {
        match self {
            Update::Idle => None,
            Update::Receiving { conn, .. } => Some(*conn),
            Update::Spooling { conn, .. } | Update::Installing { conn, .. } => *conn,
        }
    }

    /// Number of the running push.
    pub fn push(&self) -> Option<u64> {
        match self {
            Update::Idle => None,
            Update::Receiving { push, .. }
            | Update::Spooling { push, .. }
            | Update::Installing { push, .. } => Some(*push),
        }
    }

    /// Idle → Receiving.
    pub fn start(
        &mut self,
        conn: u64,
        writer: Box<SpoolWriter>,
        push: u64,
        now: Instant,
    ) -> Result<(), (Rejection, Box<SpoolWriter>)> {
        if !matches!(self, Update::Idle) {
            return Err((Rejection::Busy, writer));
        }
        *self = Update::Receiving {
            conn,
            writer,
            started: now,
            push,
        };
        Ok(())
    }

    /// Receiving → Spooling: hands out the writer to finish.
    pub fn received(&mut self, from: u64) -> Result<Box<SpoolWriter>, Rejection> {
        match std::mem::take(self) {
            Update::Receiving {
                conn, writer, push, ..
            } if conn == from => {
                *self = Update::Spooling {
                    conn: Some(conn),
                    push,
                };
                Ok(writer)
            }
            other => {
                *self = other;
                Err(Rejection::NotApplicable)
            }
        }
    }

    /// Receiving{from} → Idle: the transfer failed; the partial file is deleted.
    pub fn fail_receiving(&mut self, from: u64) -> Result<u64, Rejection> {
        match std::mem::take(self) {
            Update::Receiving {
                conn, writer, push, ..
            } if conn == from => {
                writer.abort();
                Ok(push)
            }
            other => {
                *self = other;
                Err(Rejection::NotApplicable)
            }
        }
    }

    /// Spooling → Installing (the package is on disk and is being handed to the helper).
    pub fn spooled(&mut self) -> Result<(), Rejection> {
        match std::mem::take(self) {
            Update::Spooling { conn, push } => {
                *self = Update::Installing {
                    conn,
                    txid: None,
                    phase: UpdState::Verifying,
                    push,
                };
                Ok(())
            }
            other => {
                *self = other;
                Err(Rejection::NotApplicable)
            }
        }
    }

    /// Installing: the helper accepted the package as transaction `id`.
    pub fn install_started(&mut self, id: &str) -> Result<(), Rejection> {
        match self {
            Update::Installing { txid: t @ None, .. } => {
                *t = Some(id.to_owned());
                Ok(())
            }
            _ => Err(Rejection::NotApplicable),
        }
    }

    /// Installing{txid}: the helper reports its phase.
    pub fn progress(&mut self, id: &str, new: UpdState) -> Result<(), Rejection> {
        match self {
            Update::Installing {
                txid: Some(t),
                phase,
                ..
            } if t == id => {
                *phase = new;
                Ok(())
            }
            _ => Err(Rejection::NotApplicable),
        }
    }

    /// The pushing connection closed; the push continues without it (after receiving).
    pub fn detach(&mut self, gone: u64) {
        if let Update::Spooling { conn, .. } | Update::Installing { conn, .. } = self
            && *conn == Some(gone)
        {
            *conn = None;
        }
    }

    /// Spooling or Installing → Idle with a final result (`txid` must match once known).
    /// Returns the pushing connection.
    pub fn finish(&mut self, id: Option<&str>) -> Result<Conn, Rejection> {
        let ok = match (&*self, id) {
            (Update::Spooling { .. }, None) => true,
            (Update::Installing { txid: None, .. }, None) => true,
            (Update::Installing { txid: Some(t), .. }, Some(i)) => t == i,
            (Update::Installing { txid: None, .. }, Some(_)) => false,
            _ => false,
        };
        if !ok {
            return Err(Rejection::NotApplicable);
        }
        let conn = self.conn();
        *self = Update::Idle;
        Ok(conn)
    }

    /// Spooling or Installing → Idle whatever the transaction (the helper went away).
    pub fn finish_any(&mut self) -> Result<Conn, Rejection> {
        if !matches!(self, Update::Spooling { .. } | Update::Installing { .. }) {
            return Err(Rejection::NotApplicable);
        }
        let conn = self.conn();
        *self = Update::Idle;
        Ok(conn)
    }

    /// Resumes a transaction the helper is still running (after a restart of iocomd).
    pub fn resume(&mut self, txid: String, push: u64) -> Result<(), Rejection> {
        if !matches!(self, Update::Idle) {
            return Err(Rejection::Busy);
        }
        *self = Update::Installing {
            conn: None,
            txid: Some(txid),
            phase: UpdState::Installing,
            push,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::Spool;

    fn writer(dir: &std::path::Path) -> Box<SpoolWriter> {
        Box::new(Spool::begin(dir, "t", 1 << 20, 0).unwrap())
    }

    fn files(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    #[test]
    fn a_push_goes_through_every_phase() {
        let d = tempfile::tempdir().unwrap();
        let mut u = Update::default();
        assert_eq!(u.phase(), UpdState::Idle);
        u.start(1, writer(d.path()), 1, Instant::now()).unwrap();
        assert_eq!(u.phase(), UpdState::Receiving);
        assert_eq!(u.received(2).unwrap_err(), Rejection::NotApplicable);
        let w = u.received(1).unwrap();
        w.abort();
        assert_eq!(u.phase(), UpdState::Verifying);
        u.spooled().unwrap();
        assert_eq!(u.finish(Some("x")), Err(Rejection::NotApplicable));
        u.install_started("tx1").unwrap();
        assert_eq!(u.install_started("tx2"), Err(Rejection::NotApplicable));
        u.progress("tx1", UpdState::HealthCheck).unwrap();
        assert_eq!(u.phase(), UpdState::HealthCheck);
        assert_eq!(
            u.progress("tx9", UpdState::Installing),
            Err(Rejection::NotApplicable)
        );
        assert_eq!(u.finish(Some("tx9")), Err(Rejection::NotApplicable));
        u.detach(1);
        assert_eq!(u.finish(Some("tx1")), Ok(None));
        assert_eq!(u.phase(), UpdState::Idle);
    }

    #[test]
    fn a_second_push_is_refused_and_changes_nothing() {
        let d = tempfile::tempdir().unwrap();
        let mut u = Update::default();
        u.start(1, writer(d.path()), 1, Instant::now()).unwrap();
        let (why, w2) = u.start(2, writer(d.path()), 2, Instant::now()).unwrap_err();
        assert_eq!(why, Rejection::Busy);
        w2.abort();
        assert_eq!(u.conn(), Some(1));
        assert_eq!(files(d.path()), 1);
        assert_eq!(u.resume("t".into(), 3), Err(Rejection::Busy));
    }

    #[test]
    fn a_failed_transfer_deletes_the_partial_file() {
        let d = tempfile::tempdir().unwrap();
        let mut u = Update::default();
        u.start(1, writer(d.path()), 1, Instant::now()).unwrap();
        assert_eq!(u.fail_receiving(2), Err(Rejection::NotApplicable));
        assert_eq!(files(d.path()), 1);
        assert_eq!(u.fail_receiving(1), Ok(1));
        assert_eq!(files(d.path()), 0);
        assert_eq!(u.phase(), UpdState::Idle);
        assert_eq!(u.finish(None), Err(Rejection::NotApplicable));
        assert_eq!(u.spooled(), Err(Rejection::NotApplicable));
    }

    #[test]
    fn a_spool_failure_ends_the_push_without_a_transaction() {
        let d = tempfile::tempdir().unwrap();
        let mut u = Update::default();
        u.start(4, writer(d.path()), 1, Instant::now()).unwrap();
        u.received(4).unwrap().abort();
        assert_eq!(u.finish(None), Ok(Some(4)));
        u.resume("tx".into(), 2).unwrap();
        assert_eq!(u.phase(), UpdState::Installing);
        assert_eq!(u.finish(Some("tx")), Ok(None));
    }
}
