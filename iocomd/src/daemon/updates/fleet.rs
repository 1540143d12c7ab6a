//! The update side's calls for a fleet action (hawkBit DDI, see [`crate::daemon::fleet`]):
//! reserve the slot before downloading, install one downloaded file after another under the
//! reservation (each resolves with its *settled* result), release the slot; after a restart
//! of iocomd during such an install (e.g. iocomd updating itself), its result; and the managed
//! packages' versions the fleet client reports to its server.
//!
//! The install a fleet action handed over is recorded in `STATE/fleet-handover` (action and
//! the helper's transaction id) until its result was delivered, so that the result can be
//! matched to the action after a restart: the helper persists its results and finishes a
//! transaction without us.

use super::{Outcome, Updates};
use crate::daemon::update::{Origin, Rejection, Update};
use crate::ddi::{Busy, PackageVersion};
use crate::spool::SpooledPackage;
use install_api::DaemonCode;
use tokio::sync::{oneshot, watch};

/// The record of a handed-over fleet install, in the daemon's state directory.
const HANDOVER: &str = "fleet-handover";

fn fleet(action: &str) -> Origin {
    Origin::Fleet {
        action: action.to_owned(),
    }
}

impl Updates {
    /// Idle → Reserved for fleet action `action`; [`Busy`] (naming the holder) otherwise, and
    /// while the helper's status is not known yet (it may be recovering an install).
    pub(crate) fn reserve(&mut self, action: &str) -> Result<(), Busy> {
        if let Some(o) = self.machine.origin() {
            self.refused("reserve", Rejection::Busy);
            return Err(Busy {
                holder: o.describe(),
            });
        }
        if self.helper.is_some() && !self.helper_ready {
            return Err(Busy {
                holder: super::WAITING_FOR_HELPER.into(),
            });
        }
        self.pushes += 1;
        self.machine
            .reserve(fleet(action), self.pushes)
            .map_err(|why| {
                self.refused("reserve", why);
                Busy {
                    holder: self.machine.name().into(),
                }
            })?;
        self.span = tracing::info_span!("fleet", action_id = %action, n = self.pushes);
        self.span
            .in_scope(|| tracing::info!("update slot reserved for a fleet action"));
        Ok(())
    }

    /// Fleet action `action` gives the slot back (its reservation was dropped).
    pub(crate) fn release(&mut self, action: &str) {
        match self.machine.release(&fleet(action)) {
            Ok(()) => {
                if matches!(self.machine, Update::Idle) {
                    self.span
                        .in_scope(|| tracing::info!("update slot released by the fleet action"));
                    self.span = tracing::Span::none();
                }
            }
            Err(why) => self.refused("release", why),
        }
    }

    /// Hands `pkg`, one file of fleet action `action` (which holds the slot), to the helper;
    /// `reply` gets its settled result. A refusal (the slot is not held by `action`) is
    /// answered at once and deletes the file.
    pub(crate) fn install_fleet(
        &mut self,
        action: &str,
        pkg: SpooledPackage,
        reply: oneshot::Sender<Outcome>,
    ) {
        let origin = fleet(action);
        if !matches!(&self.machine, Update::Reserved { origin: o, .. } if *o == origin) {
            self.refused("install-fleet", Rejection::NotApplicable);
            let _ = pkg.remove();
            let _ = reply.send(Outcome::daemon(
                DaemonCode::Busy,
                format!("the update slot is not held by fleet action {action}"),
            ));
            return;
        }
        self.settle = self
            .machine
            .push()
            .map(|p| (p, ResultWaiter::Install(reply)));
        match self.submit(pkg, origin) {
            // Ended already (no helper): `settled` answered.
            Ok(_) => {}
            Err(why) => {
                if let Some((_, w)) = self.settle.take() {
                    w.send(Outcome::daemon(
                        DaemonCode::Busy,
                        format!("the install was refused ({why:?})"),
                    ));
                }
            }
        }
    }

    /// Records that fleet action `action`'s install is the helper's transaction `txid`.
    pub(super) fn record_handover(&self, action: &str, txid: &str) {
        let path = self.settings.state_dir.join(HANDOVER);
        let tmp = path.with_extension("tmp");
        let r = std::fs::create_dir_all(&self.settings.state_dir)
            .and_then(|()| std::fs::write(&tmp, format!("{action}\n{txid}\n")))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = r {
            tracing::warn!(path = %path.display(), error = %e, "cannot record the fleet install (its result is lost if iocomd restarts during it)");
        }
    }

    fn handover(&self) -> Option<(String, String)> {
        let text = std::fs::read_to_string(self.settings.state_dir.join(HANDOVER)).ok()?;
        let mut lines = text.lines();
        Some((lines.next()?.to_owned(), lines.next()?.to_owned()))
    }

    fn forget_handover(&self) {
        let _ = std::fs::remove_file(self.settings.state_dir.join(HANDOVER));
    }

    /// After our restart, the fleet client asks for the result of the install `action` had
    /// handed over: the helper's persisted result of that transaction, or (when the helper
    /// still runs it) its result when it ends; `None` when it cannot be known. Waits for the
    /// helper's status first.
    pub(crate) fn recover_fleet(
        &mut self,
        action: String,
        reply: oneshot::Sender<Option<Outcome>>,
    ) {
        if self.helper.is_some() && !self.helper_ready {
            self.recovering = Some((action, reply));
            return;
        }
        let Some((_, txid)) = self.handover().filter(|(a, _)| *a == action) else {
            let _ = reply.send(None);
            return;
        };
        if self.probation.as_deref() == Some(txid.as_str()) {
            // Healthy before our restart, its probation still running: answered when it ends.
            self.probation_waiter = Some(ResultWaiter::Recover(reply));
            return;
        }
        if self.machine.txid() == Some(txid.as_str()) {
            // Still running (resumed): answered when it settles.
            self.settle = self
                .machine
                .push()
                .map(|p| (p, ResultWaiter::Recover(reply)));
            return;
        }
        let last = self
            .last
            .clone()
            .filter(|_| self.last_txid.as_deref() == Some(txid.as_str()));
        self.forget_handover();
        let _ = reply.send(last);
    }

    /// Update `push` ended with a provisional success: whoever waits for its result waits on
    /// for the end of the probation.
    pub(super) fn await_probation(&mut self, push: Option<u64>) {
        if push.is_some() && self.settle.as_ref().map(|(p, _)| *p) == push {
            self.probation_waiter = self.settle.take().map(|(_, w)| w);
        }
    }

    /// The probation ended with the settled result `o`.
    pub(super) fn probation_settled(&mut self, o: &Outcome) {
        if let Some(w) = self.probation_waiter.take() {
            self.deliver(w, o);
        }
    }

    /// A fleet install's settled result reaches its waiter; its handover record is done.
    fn deliver(&self, w: ResultWaiter, o: &Outcome) {
        self.forget_handover();
        w.send(o.clone());
    }

    /// The versions the fleet client reads (a receiver of the owner's channel).
    pub(crate) fn versions(&self) -> watch::Receiver<Vec<PackageVersion>> {
        self.versions.subscribe()
    }

    /// Update `push` has its settled result `o`: whoever waits for it is told (after the
    /// result was published and the versions patched, so they see the new state).
    pub(super) fn settled(&mut self, push: Option<u64>, o: &Outcome) {
        if push.is_some()
            && self.settle.as_ref().map(|(p, _)| *p) == push
            && let Some((_, w)) = self.settle.take()
        {
            self.deliver(w, o);
        }
    }

    /// Sends the managed packages' installed versions (derived from the package list the
    /// status publishes) to the fleet client when they changed.
    pub(super) fn sync_versions(&self) {
        let now: Vec<PackageVersion> = self
            .packages
            .entries()
            .iter()
            .filter_map(|e| Some(PackageVersion::new(&e.name, e.version.as_deref()?)))
            .collect();
        self.versions.send_if_modified(|v| {
            let changed = *v != now;
            if changed {
                *v = now.clone();
            }
            changed
        });
    }
}

/// Who waits for an update's settled result.
#[derive(Debug)]
pub(crate) enum ResultWaiter {
    /// The install of one fleet file.
    Install(oneshot::Sender<Outcome>),
    /// The fleet client recovering an install after our restart.
    Recover(oneshot::Sender<Option<Outcome>>),
}

impl ResultWaiter {
    fn send(self, o: Outcome) {
        let _ = match self {
            ResultWaiter::Install(r) => r.send(o).is_ok(),
            ResultWaiter::Recover(r) => r.send(Some(o)).is_ok(),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use install_api::{
        CurrentTx, ErrorCode, HelperSignal, HelperStatus, PackageState, ResultCode, TxResult,
    };

    fn updates(dir: &std::path::Path) -> Updates {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        std::mem::forget(rx);
        Updates::new(crate::config::Settings::demo(dir), None, tx)
    }

    fn ask(u: &mut Updates, action: &str) -> oneshot::Receiver<Option<Outcome>> {
        let (reply, answer) = oneshot::channel();
        u.recover_fleet(action.into(), reply);
        answer
    }

    #[test]
    fn after_a_restart_the_handed_over_install_is_matched_to_its_action() {
        let d = tempfile::tempdir().unwrap();
        let mut u = updates(d.path());
        // The helper's persisted result of t1, read when the link came up.
        let status = HelperStatus {
            last: Some(TxResult::new("t1", ErrorCode::Ok, "installed")),
            ..HelperStatus::default()
        };
        u.on_helper_status(Ok(status));
        assert_eq!(
            ask(&mut u, "5").try_recv().unwrap(),
            None,
            "nothing recorded"
        );
        u.record_handover("5", "t1");
        assert_eq!(ask(&mut u, "4").try_recv().unwrap(), None, "another action");
        let got = ask(&mut u, "5").try_recv().unwrap().unwrap();
        assert_eq!(
            (got.code, got.message.as_str()),
            (ResultCode::OK, "installed")
        );
        assert!(!d.path().join(HANDOVER).exists(), "delivered, forgotten");
        assert_eq!(ask(&mut u, "5").try_recv().unwrap(), None);
        // Recorded for a transaction whose result the helper no longer has: unknown.
        u.record_handover("6", "t0");
        assert_eq!(ask(&mut u, "6").try_recv().unwrap(), None);
    }

    #[test]
    fn an_install_still_running_after_a_restart_is_answered_when_it_settles() {
        let d = tempfile::tempdir().unwrap();
        let mut u = updates(d.path());
        let status = HelperStatus {
            current: Some(CurrentTx {
                txid: "t2".into(),
                phase: None,
                percent: 50,
                message: String::new(),
                probation_until: None,
            }),
            ..HelperStatus::default()
        };
        u.on_helper_status(Ok(status));
        u.record_handover("7", "t2");
        let mut answer = ask(&mut u, "7");
        assert!(answer.try_recv().is_err(), "waits for the result");
        let mut r = TxResult::new("t2", ErrorCode::UnhealthyRolledBack, "rolled back");
        r.package = Some("app".into());
        u.on_helper(HelperSignal::Finished(Box::new(r)));
        let got = answer.try_recv().unwrap().unwrap();
        assert_eq!(got.code, ResultCode::Helper(ErrorCode::UnhealthyRolledBack));
        assert!(!d.path().join(HANDOVER).exists());
    }

    #[test]
    fn a_fleet_install_on_probation_is_answered_with_its_settled_result() {
        let d = tempfile::tempdir().unwrap();
        let mut u = updates(d.path());
        u.reserve("9").unwrap();
        // As `install_fleet` hands a file over, up to the helper's txid.
        let (reply, mut answer) = oneshot::channel();
        u.settle = u.machine.push().map(|p| (p, ResultWaiter::Install(reply)));
        u.machine.submit(fleet("9"), 10, 0).unwrap();
        u.machine.install_started("t5").unwrap();
        u.record_handover("9", "t5");
        let mut healthy = TxResult::new("t5", ErrorCode::Ok, "healthy; on probation");
        healthy.settled = false;
        healthy.probation_until = Some(1);
        u.on_helper(HelperSignal::Healthy(Box::new(healthy)));
        assert!(
            answer.try_recv().is_err(),
            "the provisional success is not the result"
        );
        assert_eq!(
            u.machine.name(),
            "reserved",
            "the action still holds the slot"
        );
        assert_eq!(u.status(0).code, "ok", "the controller's view: healthy");
        let crashed = TxResult::new("t5", ErrorCode::UnhealthyRolledBack, "crashed");
        u.on_helper(HelperSignal::Finished(Box::new(crashed)));
        let got = answer.try_recv().unwrap();
        assert_eq!(got.code, ResultCode::Helper(ErrorCode::UnhealthyRolledBack));
        assert!(!d.path().join(HANDOVER).exists());
        assert_eq!(u.status(0).code, "unhealthy-rolled-back");
    }

    #[test]
    fn versions_come_from_the_helper_and_follow_the_results() {
        let d = tempfile::tempdir().unwrap();
        let mut u = updates(d.path());
        let v = u.versions();
        let pkg = |name: &str, version: Option<&str>| PackageState {
            name: name.into(),
            status: None,
            version: version.map(Into::into),
            last_result: None,
            last_time: None,
        };
        let status = HelperStatus {
            packages: vec![pkg("b", Some("1")), pkg("a", None)],
            ..HelperStatus::default()
        };
        u.on_helper_status(Ok(status));
        assert_eq!(*v.borrow(), [PackageVersion::new("b", "1")]);
        let mut r = TxResult::new("t3", ErrorCode::Ok, "installed");
        r.package = Some("a".into());
        r.to = Some("2".into());
        r.installed = Some("2".into());
        u.publish(Outcome::of_tx(&r), None);
        assert_eq!(
            *v.borrow(),
            [PackageVersion::new("a", "2"), PackageVersion::new("b", "1")]
        );
    }
}
