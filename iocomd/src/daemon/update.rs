//! The update state machine: at most one update at a time, from the first byte (or the
//! reservation of a fleet download) to the helper's final result, whatever its [`Origin`].
//!
//! ```text
//! Idle ──start──► Receiving{origin, writer, bytes} ──received──► Spooling{origin}
//!   ▲                 │ fail_receiving (drop, interrupt, timeout, too large, no space, CRC)
//!   │                 ▼
//!   ◄─────────────── Idle (result published)
//! Spooling ──spooled──► Installing{origin, txid: None} ──install_started──► Installing{txid}
//! Idle ──submit (a package spooled elsewhere, e.g. a fleet download)──► Installing{txid: None}
//! Installing{txid: None} ──progress (the helper's copy-and-verify pass, before `Install`
//!   answered)──► Installing{txid: None, shown: Some(its txid)} (see [`installing`])
//! Installing{txid} ──progress (of txid)──► Installing (phase, percent only move forward)
//! Installing / Spooling ──finish──► Idle (result published)
//! Idle ──resume (the helper still runs a transaction after our restart)──► Installing{txid}
//! Idle ──reserve (a fleet action downloads)──► Reserved{fleet}
//! Reserved{fleet} ──submit (one of its files)──► Installing{then: Reserved} ──finish──► Reserved
//! Reserved ──release (the action ended)──► Idle;  Installing{then: Reserved} ──release──►
//!   Installing{then: Idle} (it goes Idle when it finishes)
//! ```
//! A second update while not `Idle` is refused ([`Rejection::Busy`]) and changes nothing; an
//! event that does not belong to the current state is refused with
//! [`Rejection::NotApplicable`] and changes nothing either.

use super::updates::pipe::SpoolPipe;
use crate::status::UpdState;
use std::time::Instant;

mod installing;
mod origin;
pub use origin::{After, Origin};

/// The update state.
#[derive(Debug, Default)]
pub enum Update {
    /// Nothing running.
    #[default]
    Idle,
    /// The slot is held for a fleet action (downloading, waiting for its window, or between
    /// two of its files).
    Reserved {
        /// The action.
        origin: Origin,
        /// Number of this update.
        push: u64,
    },
    /// Receiving a package into `writer`.
    Receiving {
        /// Where it comes from.
        origin: Origin,
        /// The spool file being written by its thread (dropping it deletes the partial file).
        writer: Box<SpoolPipe>,
        /// When the transfer started.
        started: Instant,
        /// Bytes received and time at the start of the current rate window.
        window: (u64, Instant),
        /// Number of this update (for logs).
        push: u64,
    },
    /// The transfer completed; the spool is being finished (CRC, fsync, rename).
    Spooling {
        /// Where it comes from.
        origin: Origin,
        /// Bytes received.
        bytes: u64,
        /// Number of this update.
        push: u64,
    },
    /// The helper has the package (or is being handed it: `txid` is `None` until `Install`
    /// returned).
    Installing {
        /// Where it comes from.
        origin: Origin,
        /// The helper's transaction id.
        txid: Option<String>,
        /// The phase the helper reported last.
        phase: UpdState,
        /// Overall progress the helper reported last (only moves forward).
        percent: u8,
        /// The helper's message of the phase.
        message: String,
        /// The transaction whose progress is shown while `txid` is `None` (the helper's pass
        /// reports before `Install` answers; not taken as ours: see [`installing`]).
        shown: Option<String>,
        /// Size of the package.
        bytes: u64,
        /// Number of this update.
        push: u64,
        /// Where it goes when it finishes.
        then: After,
    },
}

/// Why a transition was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Another update is running.
    Busy,
    /// The event does not belong to the current state (e.g. a stale connection or txid).
    NotApplicable,
}

impl Update {
    /// The phase published in `upd_state`.
    pub fn phase(&self) -> UpdState {
        match self {
            Update::Idle => UpdState::Idle,
            Update::Receiving { .. } | Update::Reserved { .. } => UpdState::Receiving,
            Update::Spooling { .. } => UpdState::Verifying,
            Update::Installing { phase, .. } => *phase,
        }
    }

    /// The state's name, for logs of refused transitions.
    pub fn name(&self) -> &'static str {
        match self {
            Update::Idle => "idle",
            Update::Reserved { .. } => "reserved",
            Update::Receiving { .. } => "receiving",
            Update::Spooling { .. } => "spooling",
            Update::Installing { txid: None, .. } => "handing over",
            Update::Installing { .. } => "installing",
        }
    }

    /// Where the running update comes from.
    pub fn origin(&self) -> Option<&Origin> {
        match self {
            Update::Idle => None,
            Update::Reserved { origin, .. }
            | Update::Receiving { origin, .. }
            | Update::Spooling { origin, .. }
            | Update::Installing { origin, .. } => Some(origin),
        }
    }

    /// The IOCOM connection the running update came from, while it is open.
    pub fn conn(&self) -> Option<u64> {
        self.origin().and_then(Origin::conn)
    }

    /// Number of the running update.
    pub fn push(&self) -> Option<u64> {
        match self {
            Update::Idle => None,
            Update::Reserved { push, .. }
            | Update::Receiving { push, .. }
            | Update::Spooling { push, .. }
            | Update::Installing { push, .. } => Some(*push),
        }
    }

    /// Bytes received (so far) of the running update.
    pub fn bytes(&self) -> Option<u64> {
        match self {
            Update::Idle | Update::Reserved { .. } => None,
            Update::Receiving { writer, .. } => Some(writer.size()),
            Update::Spooling { bytes, .. } | Update::Installing { bytes, .. } => Some(*bytes),
        }
    }

    /// The transaction id, once the helper took the package.
    pub fn txid(&self) -> Option<&str> {
        match self {
            Update::Installing { txid, .. } => txid.as_deref(),
            _ => None,
        }
    }

    /// Idle → Receiving.
    pub fn start(
        &mut self,
        origin: Origin,
        writer: Box<SpoolPipe>,
        push: u64,
        now: Instant,
    ) -> Result<(), (Rejection, Box<SpoolPipe>)> {
        if !matches!(self, Update::Idle) {
            return Err((Rejection::Busy, writer));
        }
        *self = Update::Receiving {
            origin,
            writer,
            started: now,
            window: (0, now),
            push,
        };
        Ok(())
    }

    /// Receiving: checks the transfer against `limits` at `now`; `Some(reason)` when it broke
    /// one (the caller fails the transfer). Starts a new rate window when one has passed.
    pub fn check_limits(
        &mut self,
        limits: &crate::config::TransferLimits,
        now: Instant,
    ) -> Option<String> {
        let Update::Receiving {
            writer,
            started,
            window,
            ..
        } = self
        else {
            return None;
        };
        let bytes = writer.size();
        let elapsed = now.saturating_duration_since(*started);
        if elapsed >= limits.max_time {
            return Some(format!(
                "the transfer took longer than {} s ({bytes} bytes received)",
                limits.max_time.as_secs()
            ));
        }
        let (since_bytes, since) = *window;
        let span = now.saturating_duration_since(since);
        if span < limits.rate_window {
            return None;
        }
        let rate = (bytes - since_bytes) as f64 / span.as_secs_f64();
        // The first window is a grace period (connection set-up, a slow first ring).
        let first = since == *started;
        *window = (bytes, now);
        if !first && limits.min_rate > 0 && rate < limits.min_rate as f64 {
            return Some(format!(
                "the transfer is too slow: {rate:.0} B/s over the last {} s, at least {} B/s \
                 needed ({bytes} bytes received)",
                span.as_secs(),
                limits.min_rate
            ));
        }
        None
    }

    /// The writer of a transfer from connection `from`.
    pub fn writer(&mut self, from: u64) -> Result<&mut SpoolPipe, Rejection> {
        match self {
            Update::Receiving { origin, writer, .. } if origin.conn() == Some(from) => Ok(writer),
            _ => Err(Rejection::NotApplicable),
        }
    }

    /// Receiving{from} → Spooling: hands out the writer to finish.
    pub fn received(&mut self, from: u64) -> Result<Box<SpoolPipe>, Rejection> {
        match std::mem::take(self) {
            Update::Receiving {
                origin,
                writer,
                push,
                ..
            } if origin.conn() == Some(from) => {
                *self = Update::Spooling {
                    origin,
                    bytes: writer.size(),
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

    /// Receiving{from} → Idle: the transfer failed; the partial file is deleted. Returns the
    /// bytes received.
    pub fn fail_receiving(&mut self, from: u64) -> Result<u64, Rejection> {
        match std::mem::take(self) {
            Update::Receiving { origin, writer, .. } if origin.conn() == Some(from) => {
                let bytes = writer.size();
                writer.abort();
                Ok(bytes)
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
            Update::Spooling {
                origin,
                bytes,
                push,
            } => {
                *self = Update::Installing {
                    origin,
                    txid: None,
                    phase: UpdState::Verifying,
                    percent: 0,
                    message: format!("received {bytes} bytes, handing over to the installer"),
                    shown: None,
                    bytes,
                    push,
                    then: After::Idle,
                };
                Ok(())
            }
            other => {
                *self = other;
                Err(Rejection::NotApplicable)
            }
        }
    }

    /// Idle → Installing: a package spooled by another source is being handed to the helper;
    /// or Reserved{origin} → Installing{then: Reserved}: one file of the fleet action holding
    /// the slot (the same `origin`).
    pub fn submit(&mut self, origin: Origin, bytes: u64, push: u64) -> Result<(), Rejection> {
        let (push, then) = match &*self {
            Update::Idle => (push, After::Idle),
            Update::Reserved { origin: o, push: p } if *o == origin => (*p, After::Reserved),
            _ => return Err(Rejection::Busy),
        };
        *self = Update::Installing {
            origin,
            txid: None,
            phase: UpdState::Verifying,
            percent: 0,
            message: format!("handing {bytes} bytes over to the installer"),
            shown: None,
            bytes,
            push,
            then,
        };
        Ok(())
    }

    /// Idle → Reserved: a fleet action takes the slot before it downloads.
    pub fn reserve(&mut self, origin: Origin, push: u64) -> Result<(), Rejection> {
        if !matches!(self, Update::Idle) {
            return Err(Rejection::Busy);
        }
        *self = Update::Reserved { origin, push };
        Ok(())
    }

    /// The fleet action `origin` gives the slot back: Reserved → Idle, or an install of it
    /// goes Idle (instead of back to the reservation) when it finishes.
    pub fn release(&mut self, origin: &Origin) -> Result<(), Rejection> {
        match self {
            Update::Reserved { origin: o, .. } if o == origin => {
                *self = Update::Idle;
                Ok(())
            }
            Update::Installing {
                origin: o, then, ..
            } if o == origin && *then == After::Reserved => {
                *then = After::Idle;
                Ok(())
            }
            _ => Err(Rejection::NotApplicable),
        }
    }

    /// The pushing connection closed; the update continues without it (after receiving).
    pub fn detach(&mut self, gone: u64) -> Result<(), Rejection> {
        match self {
            Update::Spooling { origin, .. } | Update::Installing { origin, .. }
                if origin.conn() == Some(gone) =>
            {
                if let Origin::Iocom { conn, .. } = origin {
                    *conn = None;
                }
                Ok(())
            }
            _ => Err(Rejection::NotApplicable),
        }
    }
}

#[cfg(test)]
#[path = "update_tests.rs"]
mod tests;
