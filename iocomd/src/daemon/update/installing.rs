//! The transitions of an install the helper has (or is being handed): its transaction id from
//! `Install`'s answer, the helper's progress — also before that answer —, its end, and a
//! transaction resumed after our restart.
//!
//! The helper copies and verifies the package in one pass inside `Install`, and reports that
//! pass (`verify` phase) while `Install` has not returned, i.e. under a transaction id this
//! daemon does not know yet. Such a progress is accepted in `Installing{txid: None}`
//! ([`Update::progress`]: phase, percent and message only move forward) and its id kept as the
//! one `shown`; the update's `txid` is still set only by [`Update::install_started`] from the
//! answer, and once it is known a progress of any other transaction is refused.
//!
//! Another client's transaction: the helper runs one transaction at a time (the probation is
//! part of it). A progress of a transaction that is not ours while ours waits for its answer
//! means that transaction was running when our `Install` came: it is answered `busy`, which
//! ends the update. What was shown for that short time was the running transaction's
//! progress, as the published message says (the helper's own text). Should that transaction
//! end and ours start before the answer came, [`Update::install_started`] sees that the shown
//! progress was another's and goes back to "handed over" (0 %) — the one case where the
//! published progress moves back, because what it showed was not this update's. A second
//! transaction's progress before the answer is refused: one transaction is shown at a time.

use super::{After, Origin, Rejection, Update};
use crate::status::UpdState;

impl Update {
    /// Installing{txid: None} → Installing{txid}: the helper accepted the package as
    /// transaction `id`. A progress shown meanwhile of another transaction is dropped.
    pub fn install_started(&mut self, id: &str) -> Result<(), Rejection> {
        match self {
            Update::Installing {
                txid: t @ None,
                shown,
                phase,
                percent,
                message,
                ..
            } => {
                if shown.take().is_some_and(|s| s != id) {
                    *phase = UpdState::Verifying;
                    *percent = 0;
                    *message = "the installer took the package".into();
                }
                *t = Some(id.to_owned());
                Ok(())
            }
            _ => Err(Rejection::NotApplicable),
        }
    }

    /// Installing: the helper reports the phase and overall progress of transaction `id`.
    /// With the txid known, only that transaction's progress is taken; before `Install`
    /// answered, [`Update::progress_unanswered`].
    pub fn progress(
        &mut self,
        id: &str,
        new: UpdState,
        new_percent: u8,
        new_message: String,
    ) -> Result<(), Rejection> {
        match self {
            Update::Installing {
                txid: Some(t),
                phase,
                percent,
                message,
                ..
            } if t == id => {
                *phase = new;
                *percent = (*percent).max(new_percent.min(100));
                *message = new_message;
                Ok(())
            }
            Update::Installing { txid: None, .. } => {
                self.progress_unanswered(id, new, new_percent, new_message)
            }
            _ => Err(Rejection::NotApplicable),
        }
    }

    /// Installing{txid: None} → Installing{txid: None, shown: Some(id)}: a progress before
    /// `Install` answered (the helper's copy-and-verify pass). Phase, percent and message only
    /// move forward: a report behind the one shown changes nothing. Refused for a second
    /// transaction while one is shown (see the module doc).
    fn progress_unanswered(
        &mut self,
        id: &str,
        new: UpdState,
        new_percent: u8,
        new_message: String,
    ) -> Result<(), Rejection> {
        let Update::Installing {
            txid: None,
            shown,
            phase,
            percent,
            message,
            ..
        } = self
        else {
            return Err(Rejection::NotApplicable);
        };
        if shown.as_deref().is_some_and(|s| s != id) {
            return Err(Rejection::NotApplicable);
        }
        *shown = Some(id.to_owned());
        let new_percent = new_percent.min(100);
        if (new as u8) < (*phase as u8) || new_percent < *percent {
            return Ok(());
        }
        *phase = new;
        *percent = new_percent;
        *message = new_message;
        Ok(())
    }

    /// Spooling or Installing → Idle (or back to its reservation) with a final result (`txid`
    /// must match once known). Returns the origin.
    pub fn finish(&mut self, id: Option<&str>) -> Result<Origin, Rejection> {
        let ok = match (&*self, id) {
            (Update::Spooling { .. }, None) => true,
            (Update::Installing { txid: None, .. }, None) => true,
            (Update::Installing { txid: Some(t), .. }, Some(i)) => t == i,
            _ => false,
        };
        if !ok {
            return Err(Rejection::NotApplicable);
        }
        self.finish_any()
    }

    /// Spooling or Installing → Idle (or back to its reservation) whatever the transaction
    /// (the helper went away).
    pub fn finish_any(&mut self) -> Result<Origin, Rejection> {
        match std::mem::take(self) {
            Update::Spooling { origin, .. } => Ok(origin),
            Update::Installing {
                origin, then, push, ..
            } => {
                if then == After::Reserved {
                    *self = Update::Reserved {
                        origin: origin.clone(),
                        push,
                    };
                }
                Ok(origin)
            }
            other => {
                *self = other;
                Err(Rejection::NotApplicable)
            }
        }
    }

    /// Idle → Installing{txid}: a transaction the helper is still running (after a restart of
    /// iocomd).
    pub fn resume(&mut self, txid: String, phase: UpdState, push: u64) -> Result<(), Rejection> {
        if !matches!(self, Update::Idle) {
            return Err(Rejection::Busy);
        }
        *self = Update::Installing {
            origin: Origin::Resumed,
            txid: Some(txid),
            phase,
            percent: 0,
            message: "the install helper is still installing".into(),
            shown: None,
            bytes: 0,
            push,
            then: After::Idle,
        };
        Ok(())
    }
}
