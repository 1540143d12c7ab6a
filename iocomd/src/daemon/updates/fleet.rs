//! The update side's calls for a fleet action (hawkBit DDI, see [`crate::daemon::fleet`]):
//! reserve the slot before downloading, install one downloaded file after another under the
//! reservation (each resolves with its *settled* result), release the slot; and the managed
//! packages' versions the fleet client reports to its server.

use super::{Outcome, Updates};
use crate::daemon::update::{Origin, Rejection, Update};
use crate::ddi::{Busy, PackageVersion};
use crate::spool::SpooledPackage;
use install_api::{DaemonCode, PackageState};
use tokio::sync::{oneshot, watch};

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
        self.settle = self.machine.push().map(|p| (p, reply));
        match self.submit(pkg, origin) {
            // Ended already (no helper): `settled` answered.
            Ok(_) => {}
            Err(why) => {
                if let Some((_, reply)) = self.settle.take() {
                    let _ = reply.send(Outcome::daemon(
                        DaemonCode::Busy,
                        format!("the install was refused ({why:?})"),
                    ));
                }
            }
        }
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
            && let Some((_, reply)) = self.settle.take()
        {
            let _ = reply.send(o.clone());
        }
    }

    /// The helper's list of managed packages (its `Status()`).
    pub(super) fn set_versions(&mut self, packages: &[PackageState]) {
        let mut v: Vec<PackageVersion> = packages
            .iter()
            .filter_map(|p| Some(PackageVersion::new(&p.name, p.version.as_deref()?)))
            .collect();
        v.sort();
        self.versions.send_replace(v);
    }

    /// A result says `name` is now at `installed`.
    pub(super) fn patch_version(&mut self, name: &str, installed: Option<&str>) {
        let Some(installed) = installed.filter(|v| !v.is_empty()) else {
            return;
        };
        self.versions.send_if_modified(|v| {
            match v.iter_mut().find(|p| p.name == name) {
                Some(p) if p.version == installed => return false,
                Some(p) => p.version = installed.to_owned(),
                None => {
                    v.push(PackageVersion::new(name, installed));
                    v.sort();
                }
            }
            true
        });
    }
}
