//! The IOCOM stream side of [`Updates`]: a push opens a spool file (Idle → Receiving), its
//! bytes go to the spool's thread, and it ends as received (the spool finishes the file),
//! failed (drop, CRC, no space, timeout) or detached when its connection closes.

use super::{Finished, Outcome, Updates, WAITING_FOR_HELPER};
use crate::daemon::update::{Origin, Rejection, Update};
use crate::spool::{Spool, SpoolError};
use install_api::DaemonCode;
use std::time::Instant;

use super::pipe::SpoolPipe;

impl Updates {
    /// A stream opens (connection side): Idle → Receiving, with a new spool file.
    pub(crate) fn begin_receive(
        &mut self,
        origin: Origin,
        parent: &tracing::Span,
        now: Instant,
    ) -> Result<(), Outcome> {
        if !matches!(self.machine, Update::Idle) {
            self.refused("start", Rejection::Busy);
            let why = match self.machine.origin() {
                Some(o @ Origin::Fleet { .. }) => {
                    format!("the device is busy with {}", o.describe())
                }
                _ => "another package is being received or installed".into(),
            };
            return Err(Outcome::daemon(DaemonCode::Busy, why));
        }
        if self.helper.is_some() && !self.helper_ready {
            return Err(Outcome::daemon(DaemonCode::Busy, WAITING_FOR_HELPER));
        }
        self.read_policy_if_gone();
        let push = self.pushes + 1;
        let writer = match self.stream_helper() {
            // Straight to the helper ([`super::stream`]).
            Some(h) => self.start_stream(h, push, origin.describe()),
            None => {
                let sp = &self.settings.spool;
                Spool::begin(&sp.dir, "push", sp.max_package_size, sp.min_free_space)
                    .and_then(|w| SpoolPipe::start(w, push, self.tx.clone()))
            }
        }
        .map_err(|e| Outcome::daemon(e.code(), e.to_string()))?;
        self.pushes = push;
        match self.machine.start(origin, Box::new(writer), push, now) {
            Ok(()) => {
                self.span = tracing::info_span!(parent: parent, "push", n = push);
                self.span.in_scope(|| tracing::info!("receiving a package"));
                Ok(())
            }
            Err((why, w)) => {
                w.abort();
                self.refused("start", why);
                Err(Outcome::daemon(
                    DaemonCode::Busy,
                    "another update is running",
                ))
            }
        }
    }

    /// How many bytes the transfer from `conn` takes now (its queue to the disk).
    pub(crate) fn room(&mut self, conn: u64) -> usize {
        self.machine.writer(conn).map_or(usize::MAX, |w| w.room())
    }

    /// The next bytes of the transfer from `conn`.
    pub(crate) fn write(&mut self, conn: u64, chunk: &[u8]) -> Result<(), SpoolError> {
        match self.machine.writer(conn) {
            Ok(w) => w.write(chunk),
            Err(why) => {
                self.refused("write", why);
                Err(SpoolError::Aborted {
                    path: self.settings.spool.dir.clone(),
                })
            }
        }
    }

    /// The transfer from `conn` completed with the sender's `crc`: the spool's thread
    /// finishes the file; [`CoreEvent::Spooled`] follows.
    pub(crate) fn received(&mut self, conn: u64, crc: u16) {
        match self.machine.received(conn) {
            Ok(w) => w.finish(crc),
            Err(why) => self.refused("received", why),
        }
    }

    /// The spool's thread failed writing update `push` (no space, an I/O error): the
    /// transfer fails with that error. Returns the connection's final `tod_err` to report and
    /// to abort its stream with.
    pub(crate) fn on_spool_failed(&mut self, push: u64, error: SpoolError) -> Option<Finished> {
        let conn = match &self.machine {
            Update::Receiving {
                origin, push: p, ..
            } if *p == push => origin.conn()?,
            _ => {
                self.refused("spool-failed", Rejection::NotApplicable);
                return None;
            }
        };
        self.receive_failed(conn, Outcome::daemon(error.code(), error.to_string()))
    }

    /// The connection whose transfer `push` waits for room in the spool's queue.
    pub(crate) fn waiting_conn(&self, push: u64) -> Option<u64> {
        match &self.machine {
            Update::Receiving {
                origin, push: p, ..
            } if *p == push => origin.conn(),
            _ => None,
        }
    }

    /// The transfer from `conn` failed: Receiving → Idle with `outcome`.
    pub(crate) fn receive_failed(&mut self, conn: u64, mut outcome: Outcome) -> Option<Finished> {
        match self.machine.fail_receiving(conn) {
            Ok(bytes) => {
                outcome.bytes = bytes;
                Some(self.publish(outcome, Some(conn)))
            }
            Err(why) => {
                self.refused("fail-receiving", why);
                None
            }
        }
    }

    /// Connection `conn` closed: a transfer from it fails, an install from it goes on.
    pub(crate) fn detach(&mut self, conn: u64, reason: &str) -> Option<Finished> {
        if self.machine.conn() != Some(conn) {
            return None;
        }
        if matches!(self.machine, Update::Receiving { .. }) {
            let o = Outcome::daemon(
                DaemonCode::Interrupted,
                format!("the controller's connection closed during the transfer ({reason})"),
            );
            return self
                .receive_failed(conn, o)
                .map(|f| Finished { conn: None, ..f });
        }
        if let Err(why) = self.machine.detach(conn) {
            self.refused("detach", why);
        }
        None
    }

    /// A refusal at stream start of the device's own making, published as a result.
    pub(crate) fn refusal(&mut self, outcome: Outcome, conn: u64) -> Finished {
        self.publish(outcome, Some(conn))
    }
}
