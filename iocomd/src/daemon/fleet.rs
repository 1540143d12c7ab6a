//! The daemon's side of the fleet seam: [`FleetInstaller`] implements [`crate::ddi::Installer`]
//! over the core loop's channel, so a hawkBit action takes the same single update slot as an
//! IOCOM push ([`super::updates::Updates::reserve`]) and hands its files to the helper through
//! the same `submit`. The DDI client never touches the update state; it asks the loop that
//! owns it ([`FleetRequest`]) and waits for the answer.

use super::CoreEvent;
use super::updates::Outcome;
use crate::ddi::{
    BoxFuture, Busy, InstallOutcome, Installer, PackageVersion, Reservation, SpooledFile,
};
use crate::spool::SpooledPackage;
use install_api::{ErrorCode, ResultCode};
use tokio::sync::{mpsc, oneshot, watch};

/// A request of the fleet client to the core loop.
#[derive(Debug)]
pub(crate) enum FleetRequest {
    /// Take the update slot for `action`.
    Reserve {
        action: String,
        reply: oneshot::Sender<Result<(), Busy>>,
    },
    /// Install one file of `action` (which holds the slot); `reply` gets the settled result.
    Install {
        action: String,
        pkg: SpooledPackage,
        reply: oneshot::Sender<Outcome>,
    },
    /// `action` gives the slot back.
    Release { action: String },
    /// After our restart: the settled result of the install `action` had handed over, if it
    /// can still be had (`None`: unknown).
    Recover {
        action: String,
        reply: oneshot::Sender<Option<Outcome>>,
    },
}

/// Holds the slot while alive: dropping it (the DDI client dropping its [`Reservation`], or
/// the install of all files ending) sends [`FleetRequest::Release`].
#[derive(Debug)]
struct Hold {
    action: String,
    tx: mpsc::Sender<CoreEvent>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let ev = CoreEvent::Fleet(FleetRequest::Release {
            action: std::mem::take(&mut self.action),
        });
        if let Err(mpsc::error::TrySendError::Full(ev)) = self.tx.try_send(ev)
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let tx = self.tx.clone();
            rt.spawn(async move {
                let _ = tx.send(ev).await;
            });
        }
    }
}

/// [`Installer`] over the core loop.
#[derive(Debug, Clone)]
pub(crate) struct FleetInstaller {
    tx: mpsc::Sender<CoreEvent>,
    versions: watch::Receiver<Vec<PackageVersion>>,
}

impl FleetInstaller {
    pub(crate) fn new(
        tx: mpsc::Sender<CoreEvent>,
        versions: watch::Receiver<Vec<PackageVersion>>,
    ) -> Self {
        Self { tx, versions }
    }
}

/// The loop is gone (iocomd is shutting down).
fn stopped() -> InstallOutcome {
    InstallOutcome::not_started(
        "interrupted",
        i32::from(install_api::DaemonCode::Interrupted.number()),
        "iocomd is shutting down",
    )
}

/// The DDI form of a result; `file` names the file when the action has several.
fn to_ddi(
    o: &Outcome,
    file: Option<(usize, usize, &str)>,
    installed: Vec<PackageVersion>,
) -> InstallOutcome {
    let message = match file {
        Some((i, n, name)) if n > 1 => format!("file {} of {n} ({name}): {}", i + 1, o.message),
        _ => o.message.clone(),
    };
    InstallOutcome {
        success: o.code == ResultCode::OK,
        code: o.code.as_str().to_owned(),
        number: i32::from(o.code.number()),
        message,
        rolled_back: matches!(
            o.code,
            ResultCode::Helper(ErrorCode::UnhealthyRolledBack | ErrorCode::DpkgFailed)
        ),
        installed,
    }
}

impl Installer for FleetInstaller {
    fn reserve(&self, action: &str) -> BoxFuture<Result<Reservation, Busy>> {
        let tx = self.tx.clone();
        let action = action.to_owned();
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            let req = FleetRequest::Reserve {
                action: action.clone(),
                reply,
            };
            let gone = || Busy {
                holder: "iocomd is shutting down".into(),
            };
            tx.send(CoreEvent::Fleet(req)).await.map_err(|_| gone())?;
            answer.await.map_err(|_| gone())??;
            let hold = Hold {
                action: action.clone(),
                tx,
            };
            Ok(Reservation::new(action, hold))
        })
    }

    fn install(&self, r: Reservation, files: Vec<SpooledFile>) -> BoxFuture<InstallOutcome> {
        let tx = self.tx.clone();
        let versions = self.versions.clone();
        Box::pin(async move {
            let action = r.action().to_owned();
            let Ok(hold) = r.into_guard::<Hold>() else {
                return InstallOutcome::not_started(
                    "internal",
                    i32::from(ErrorCode::Internal.number()),
                    "a reservation not made by this installer",
                );
            };
            let n = files.len();
            let mut result = None;
            let mut rest = files.into_iter().enumerate();
            for (i, f) in rest.by_ref() {
                let pkg = SpooledPackage {
                    path: f.path.clone(),
                    size: f.size,
                    sha256: f.sha256,
                    crc: 0,
                };
                let (reply, answer) = oneshot::channel();
                let req = FleetRequest::Install {
                    action: action.clone(),
                    pkg,
                    reply,
                };
                if tx.send(CoreEvent::Fleet(req)).await.is_err() {
                    let _ = std::fs::remove_file(&f.path);
                    result = Some(stopped());
                    break;
                }
                let Ok(o) = answer.await else {
                    result = Some(stopped());
                    break;
                };
                let done = to_ddi(&o, Some((i, n, &f.filename)), versions.borrow().clone());
                let failed = !done.success;
                result = Some(done);
                if failed {
                    break;
                }
            }
            // Files after a failed one are not installed.
            for (_, f) in rest {
                let _ = std::fs::remove_file(&f.path);
            }
            drop(hold);
            result.unwrap_or_else(|| {
                InstallOutcome::not_started(
                    "internal",
                    i32::from(ErrorCode::Internal.number()),
                    "the action has no files",
                )
            })
        })
    }

    fn installed_versions(&self) -> Vec<PackageVersion> {
        self.versions.borrow().clone()
    }

    fn recover(&self, action: &str) -> BoxFuture<Option<InstallOutcome>> {
        let tx = self.tx.clone();
        let versions = self.versions.clone();
        let action = action.to_owned();
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            let req = FleetRequest::Recover { action, reply };
            tx.send(CoreEvent::Fleet(req)).await.ok()?;
            let o = answer.await.ok()??;
            Some(to_ddi(&o, None, versions.borrow().clone()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use install_api::DaemonCode;

    fn outcome(code: ResultCode) -> Outcome {
        Outcome {
            code,
            message: "m".into(),
            pkg: None,
            installed: None,
            bytes: 0,
        }
    }

    #[test]
    fn results_map_to_ddi_outcomes_with_stable_codes() {
        let v = vec![PackageVersion::new("a", "1")];
        let ok = to_ddi(&outcome(ResultCode::OK), None, v.clone());
        assert!(ok.success && !ok.rolled_back);
        assert_eq!((ok.code.as_str(), ok.number, ok.installed), ("ok", 0, v));
        let rb = to_ddi(
            &outcome(ResultCode::Helper(ErrorCode::UnhealthyRolledBack)),
            Some((1, 3, "b.deb")),
            Vec::new(),
        );
        assert!(!rb.success && rb.rolled_back);
        assert_eq!((rb.code.as_str(), rb.number), ("unhealthy-rolled-back", 60));
        assert_eq!(rb.message, "file 2 of 3 (b.deb): m");
        let busy = to_ddi(
            &outcome(DaemonCode::Busy.into()),
            Some((0, 1, "x")),
            Vec::new(),
        );
        assert!(!busy.success && !busy.rolled_back);
        assert_eq!((busy.number, busy.message.as_str()), (203, "m"));
    }
}
