//! The update side's helper link: its signals, the `Install` call's answer, the helper going
//! away, and the helper's status read at start (a result persisted across our restart, or a
//! transaction it still runs).
//!
//! Provisional and settled results: the helper's `Healthy` (units through the ready gate,
//! probation running) ends the update for the controller — `ok`, `tod_err` 6 — with the
//! probation's end in the message; its later `Finished` is the settled result, published again
//! (`upd_seq` + 1): `ok` confirmed, or `unhealthy-rolled-back` when a unit crashed or missed its
//! watchdog during the probation. Every settled result goes through [`Updates::settled`].

use super::{Finished, Outcome, PolicyRead, Updates};
use crate::daemon::update::Update;
use crate::helper_client::{HelperClient, HelperError};
use crate::status::UpdState;
use install_api::{DaemonCode, HelperSignal, ResultCode, TxResult};
use std::sync::Arc;

/// `Finished` signals kept while waiting for `Install` to return their txid.
const MAX_ORPHANS: usize = 8;

impl Updates {
    /// A signal of the helper.
    pub(crate) fn on_helper(&mut self, sig: HelperSignal) -> Option<Finished> {
        match sig {
            HelperSignal::Progress {
                txid,
                phase,
                percent,
                message,
            } => {
                if self.probation.as_deref() == Some(txid.as_str()) {
                    return None;
                }
                // A phase this daemon does not know (a newer helper) keeps the current state.
                let state = phase.map_or(self.machine.phase(), UpdState::of_phase);
                let pct = u8::try_from(percent.min(100)).unwrap_or(100);
                let before = self.machine.phase();
                match self.machine.progress(&txid, state, pct, message.clone()) {
                    // A new phase is news; the percentages within one (the verifying pass
                    // reports about ten a second) are details.
                    Ok(()) if self.machine.phase() != before => self.span.in_scope(|| {
                        tracing::info!(%txid, phase = phase.map_or("?", |p| p.as_str()), percent, %message, "helper progress")
                    }),
                    Ok(()) => self.span.in_scope(|| {
                        tracing::debug!(%txid, percent, %message, "helper progress")
                    }),
                    Err(why) => self.refused("progress", why),
                }
                None
            }
            HelperSignal::Healthy(result) => {
                let txid = result.txid.clone();
                if self.machine.txid() == Some(txid.as_str()) {
                    self.probation = Some(txid.clone());
                    return self.finish(Some(&txid), Outcome::of_tx(&result));
                }
                if matches!(
                    self.machine,
                    crate::daemon::update::Update::Installing { txid: None, .. }
                ) {
                    self.orphans.push(*result);
                }
                None
            }
            HelperSignal::Finished(result) => {
                let txid = result.txid.clone();
                if self.probation.as_deref() == Some(txid.as_str()) {
                    return self.on_settled(&result);
                }
                if self.machine.txid() == Some(txid.as_str()) {
                    self.log_settled(&result);
                    return self.finish(Some(&txid), Outcome::of_tx(&result));
                }
                if matches!(
                    self.machine,
                    crate::daemon::update::Update::Installing { txid: None, .. }
                ) {
                    // `Install` has not returned yet: keep the result for its txid.
                    self.orphans.push(*result);
                    if self.orphans.len() > MAX_ORPHANS {
                        self.orphans.remove(0);
                    }
                } else {
                    tracing::debug!(%txid, "result of another transaction");
                }
                None
            }
        }
    }

    /// The `Install` call of update `push` returned.
    pub(crate) fn on_install_call(
        &mut self,
        push: u64,
        result: Result<String, HelperError>,
    ) -> Option<Finished> {
        if self.stream_call == Some(push) {
            self.stream_call = None;
        }
        if self.machine.push() != Some(push) {
            self.refused("install-call", super::Rejection::NotApplicable);
            return None;
        }
        match result {
            Ok(txid) => {
                self.span
                    .in_scope(|| tracing::info!(%txid, "install transaction started"));
                if let Some(crate::daemon::update::Origin::Fleet { action }) = self.machine.origin()
                {
                    let action = action.clone();
                    self.record_handover(&action, &txid);
                }
                if let Err(why) = self.machine.install_started(&txid) {
                    self.refused("install-started", why);
                    return None;
                }
                let i = self.orphans.iter().position(|r| r.txid == txid)?;
                let r = self.orphans.remove(i);
                if r.is_provisional() {
                    self.probation = Some(txid.clone());
                    let f = self.finish(Some(&txid), Outcome::of_tx(&r));
                    // Its settled result may have come too.
                    if let Some(j) = self.orphans.iter().position(|s| s.txid == txid) {
                        let settled = self.orphans.remove(j);
                        return self.on_settled(&settled).or(f);
                    }
                    return f;
                }
                self.log_settled(&r);
                self.finish(Some(&txid), Outcome::of_tx(&r))
            }
            Err(e) => {
                if e.is_link_failure() {
                    tracing::error!(error = %e, "the link to the install helper failed");
                    if let Some(h) = self.helper.take() {
                        h.kill_leftovers();
                    }
                    self.link_lost = true;
                }
                // The helper refused the package before taking it (busy, not authorized, no
                // space for its copy, ...): its code, from the D-Bus error name.
                let code = e.code().map_or(
                    ResultCode::Daemon(DaemonCode::HelperUnavailable),
                    ResultCode::Helper,
                );
                let outcome = Outcome {
                    code,
                    message: e.to_string(),
                    pkg: None,
                    installed: None,
                    bytes: 0,
                };
                // A streamed push the helper refused before its end: the transfer fails.
                if let (Update::Receiving { .. }, Some(conn)) = (&self.machine, self.machine.conn())
                {
                    return self.receive_failed(conn, outcome);
                }
                self.finish(None, outcome)
            }
        }
    }

    /// The helper's connection closed: an update it had ends with `helper-unavailable`.
    pub(crate) fn on_helper_gone(&mut self) -> Option<Finished> {
        tracing::error!("the install helper went away");
        if let Some(h) = self.helper.take() {
            h.kill_leftovers();
        }
        let bytes = self.machine.bytes().unwrap_or(0);
        let push = self.machine.push();
        match self.machine.finish_any() {
            Ok(origin) => {
                let mut o = Outcome::daemon(
                    DaemonCode::HelperUnavailable,
                    "the install helper went away during the install",
                );
                o.bytes = bytes;
                let f = self.publish(o.clone(), origin.conn());
                self.settled(push, &o);
                Some(f)
            }
            Err(why) => {
                self.refused("helper-gone", why);
                None
            }
        }
    }

    /// The settled `Finished` of a transaction whose provisional success was published: the
    /// result again, as a new result (`upd_seq` + 1) of no connection (the controller was
    /// told at the gate).
    fn on_settled(&mut self, r: &TxResult) -> Option<Finished> {
        self.probation = None;
        self.last_txid = Some(r.txid.clone());
        self.log_settled(r);
        let o = Outcome::of_tx(r);
        let f = self.publish(o.clone(), None);
        self.probation_settled(&o);
        Some(f)
    }

    /// Every settled result of the helper is logged here once (with a probation: after it;
    /// without: at the `Finished` that ends the update); a fleet install is answered with it
    /// (`settled` / `probation_settled`).
    fn log_settled(&self, r: &TxResult) {
        tracing::info!(txid = %r.txid, code = %r.code, probation_until = ?r.probation_until, "install settled");
    }

    /// Whether a helper link exists.
    pub(crate) fn has_helper(&self) -> bool {
        self.helper.is_some()
    }

    /// Whether `h` is the current helper link.
    pub(crate) fn is_current(&self, h: &Arc<HelperClient>) -> bool {
        self.helper.as_ref().is_some_and(|c| Arc::ptr_eq(c, h))
    }

    /// The link to the helper is back; pushes wait for its status.
    pub(crate) fn set_helper(&mut self, h: Arc<HelperClient>) {
        self.helper = Some(h);
        self.helper_ready = false;
        self.helper_streams = false;
        self.stream_call = None;
    }

    /// The helper's status, read after it (re)connected: publishes its last result (e.g. after
    /// a self-update restart) and resumes waiting for a transaction it is still running.
    pub(crate) fn on_helper_status(&mut self, r: Result<install_api::HelperStatus, HelperError>) {
        self.helper_ready = true;
        let st = match r {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "helper Status() failed");
                return;
            }
        };
        self.packages = crate::status::PackageList::from_helper(&st.packages);
        self.policy = st.policy.clone();
        self.helper_streams = st.has(install_api::FEATURE_STREAM_END);
        self.policy_read = PolicyRead::Current;
        self.sync_versions();
        // A result this daemon already published (the helper was respawned) is not new.
        if st.last.as_ref().map(|l| &l.txid) != self.last_txid.as_ref()
            && let Some(last) = st.last
        {
            tracing::info!(txid = %last.txid, code = %last.code, "last result from the helper");
            self.last_txid = Some(last.txid.clone());
            self.publish(Outcome::of_tx(&last), None);
        }
        self.resume_current(st.current);
        if let Some((action, reply)) = self.recovering.take() {
            self.recover_fleet(action, reply);
        }
    }

    fn resume_current(&mut self, current: Option<install_api::CurrentTx>) {
        if let Some(cur) = current.as_ref().filter(|c| c.probation_until.is_some()) {
            // Healthy before we (re)started, e.g. a self-update: the provisional success now,
            // the settled result at its `Finished`.
            self.probation = Some(cur.txid.clone());
            self.last_txid = Some(cur.txid.clone());
            let o = Outcome {
                code: ResultCode::OK,
                message: cur.message.clone(),
                pkg: None,
                installed: None,
                bytes: 0,
            };
            self.publish(o, None);
            return;
        }
        if let Some(cur) = current {
            self.pushes += 1;
            let phase = cur.phase.map_or(UpdState::Installing, UpdState::of_phase);
            match self.machine.resume(cur.txid.clone(), phase, self.pushes) {
                Ok(()) => {
                    tracing::info!(txid = %cur.txid, phase = ?cur.phase, "helper is still installing")
                }
                Err(why) => self.refused("resume", why),
            }
        }
    }
}

#[cfg(test)]
#[path = "helper_events_tests.rs"]
mod tests;
