//! The update side of the daemon: the one owner of the update state machine ([`Update`]),
//! the helper link, and the last result. The published status ([`UpdateStatus`]) is derived
//! from them ([`Updates::status`]), never kept beside them.
//!
//! The connection side reaches it through a few calls: [`Updates::begin_receive`],
//! [`Updates::write`], [`Updates::received`], [`Updates::receive_failed`] and
//! [`Updates::detach`] for IOCOM streams, and [`Updates::submit`] for a package spooled by any
//! other source (a fleet download): the seam every origin uses. Each call that ends an update
//! returns a [`Finished`] so the caller can report it to the pushing connection.

use super::CoreEvent;
use super::update::{Origin, Rejection, Update};
use crate::config::Settings;
use crate::helper_client::{HelperClient, HelperError, InstallMeta};
use crate::spool::{SpoolError, SpooledPackage};
use crate::status::UpdateStatus;
use install_api::{DaemonCode, ResultCode, TxResult};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

mod fleet;
mod helper_events;
mod outcome;
mod receive;
mod stream;
pub use outcome::{Finished, Outcome};
pub(crate) mod pipe;
mod policy;
use policy::PolicyRead;

/// The message while the helper's status is not known yet.
const WAITING_FOR_HELPER: &str =
    "waiting for the install helper (it may be finishing an interrupted install)";

/// The update side.
pub(crate) struct Updates {
    settings: Settings,
    helper: Option<Arc<HelperClient>>,
    tx: mpsc::Sender<CoreEvent>,
    machine: Update,
    last: Option<Outcome>,
    /// Package, version and installed version of the last result that named a package (a
    /// refusal before the package was read names none and leaves this as it was).
    last_package: Option<(String, String, Option<String>)>,
    /// Results since start (`upd_seq`).
    seq: u32,
    /// Updates started since start (for logs).
    pushes: u64,
    span: tracing::Span,
    /// `Finished` signals that arrived before `Install` returned their txid.
    orphans: Vec<TxResult>,
    /// The helper's status has been read since it (re)connected: until then a push is told
    /// busy (the helper may be recovering an interrupted install).
    helper_ready: bool,
    /// The transaction of the last result that came from the helper.
    last_txid: Option<String>,
    /// The link to the helper failed under a call (the core connects again).
    link_lost: bool,
    /// Who waits for the settled result of which update (a fleet install, by `push`).
    settle: Option<(u64, fleet::ResultWaiter)>,
    /// A fleet client's question about an install before our restart, waiting for the
    /// helper's status.
    recovering: Option<(String, tokio::sync::oneshot::Sender<Option<Outcome>>)>,
    /// Managed packages and their installed versions (the helper's `Status()`, then patched
    /// by every result), for the fleet client.
    versions: tokio::sync::watch::Sender<Vec<crate::ddi::PackageVersion>>,
    /// The packages the helper manages (its `Status()`, then every `Finished` applied).
    packages: crate::status::PackageList,
    /// The helper's name, architecture and version rules (its `Status()`): the early refusal.
    policy: Option<install_api::PolicySummary>,
    /// Whether `policy` is the running helper instance's ([`policy`]).
    policy_read: PolicyRead,
    /// The transaction whose provisional success (`Healthy`) was published: its settled
    /// `Finished` is still to come ([`Updates::on_settled`]).
    probation: Option<String>,
    /// Who waits for the settled result of the transaction on probation (a fleet install).
    probation_waiter: Option<fleet::ResultWaiter>,
    /// The helper instance last read takes streamed pushes ([`stream`]).
    helper_streams: bool,
    /// The push whose streamed `Install` has not answered yet.
    stream_call: Option<u64>,
}

impl Updates {
    pub(crate) fn new(
        settings: Settings,
        helper: Option<Arc<HelperClient>>,
        tx: mpsc::Sender<CoreEvent>,
    ) -> Self {
        Self {
            settings,
            helper,
            tx,
            machine: Update::Idle,
            last: None,
            last_package: None,
            seq: 0,
            pushes: 0,
            span: tracing::Span::none(),
            orphans: Vec::new(),
            helper_ready: false,
            last_txid: None,
            link_lost: false,
            settle: None,
            recovering: None,
            versions: tokio::sync::watch::Sender::new(Vec::new()),
            packages: crate::status::PackageList::default(),
            policy: None,
            policy_read: PolicyRead::Current,
            probation: None,
            probation_waiter: None,
            helper_streams: false,
            stream_call: None,
        }
    }

    /// Judges the head of a package being received by the helper's rules as last read
    /// ([`install_helper::verify::head`]): `Ok(false)` while more is needed, `Ok(true)` when
    /// decided, the refusal to publish when the policy refuses the package. A head that does
    /// not parse (no package named) is decided without a refusal: the CRC at the end tells a
    /// transfer error from a bad file, and the helper refuses the bad file.
    pub(crate) fn judge_head(&self, head: &[u8]) -> Result<bool, Outcome> {
        use install_helper::verify::head::{HeadVerdict, judge_head};
        if self.policy_read == PolicyRead::Reading {
            // A new helper instance's policy is on its way: judge by it, not the last one.
            return Ok(false);
        }
        match judge_head(head, self.policy.as_ref(), &|n| self.packages.installed(n)) {
            HeadVerdict::NeedMore => Ok(false),
            HeadVerdict::Passed { .. } | HeadVerdict::Refused { package: None, .. } => Ok(true),
            HeadVerdict::Refused {
                code,
                reason,
                package,
            } => Err(Outcome {
                code: code.into(),
                message: format!("{reason} (refused from its first {} bytes)", head.len()),
                installed: package
                    .as_ref()
                    .and_then(|(n, _)| self.packages.installed(n)),
                pkg: package,
                bytes: head.len() as u64,
            }),
        }
    }

    /// The state machine (read only).
    pub(crate) fn machine(&self) -> &Update {
        &self.machine
    }

    /// The status to publish, derived from the state machine and the last result.
    pub(crate) fn status(&self, auth_fail: u32) -> UpdateStatus {
        let last = self.last.as_ref();
        let mut st = UpdateStatus {
            state: self.machine.phase(),
            seq: self.seq,
            auth_fail,
            packages: self.packages.clone(),
            ..UpdateStatus::default()
        };
        if let Some(l) = last {
            st.result = l.code.number();
            st.code = l.code.as_str().to_owned();
        }
        if let Some((p, v, installed)) = &self.last_package {
            st.pkg = p.clone();
            st.ver = v.clone();
            // A refusal names no installed version: the managed packages' list knows it.
            st.inst_ver = installed
                .clone()
                .or_else(|| self.packages.installed(p))
                .unwrap_or_default();
        }
        let bytes = |b: u64| u32::try_from(b).unwrap_or(u32::MAX);
        match &self.machine {
            Update::Idle => {
                if let Some(l) = last {
                    st.progress = if l.code == ResultCode::OK { 100 } else { 0 };
                    st.msg = l.message.clone();
                    st.bytes = bytes(l.bytes);
                } else if self.helper.is_none() {
                    st.msg = "install helper not available".into();
                } else if !self.helper_ready {
                    st.msg = WAITING_FOR_HELPER.into();
                }
            }
            Update::Receiving { writer, .. } => {
                st.bytes = bytes(writer.size());
                st.msg = "receiving".into();
            }
            Update::Reserved { origin, .. } => {
                st.msg = format!("{}: downloading or waiting to install", origin.describe());
            }
            Update::Spooling { bytes: b, .. } => {
                st.bytes = bytes(*b);
                st.msg = "checking the received file".into();
            }
            Update::Installing {
                percent,
                message,
                bytes: b,
                ..
            } => {
                st.bytes = bytes(*b);
                st.progress = *percent;
                st.msg = message.clone();
            }
        }
        st
    }

    /// Logs a refused transition (they change nothing, but say so).
    fn refused(&self, transition: &str, why: Rejection) {
        self.span.in_scope(|| {
            tracing::debug!(
                transition,
                state = self.machine.name(),
                ?why,
                "transition refused"
            )
        });
    }

    /// The seam for every source: hands a spooled package to the helper. Accepted when idle
    /// (a package spooled elsewhere) or when it is the running transfer's own file; refused
    /// with [`Rejection::Busy`] otherwise (the package file is deleted). The result follows as
    /// helper events; `Some` when the update already ended (no helper).
    pub(crate) fn submit(
        &mut self,
        pkg: SpooledPackage,
        origin: Origin,
    ) -> Result<Option<Finished>, Rejection> {
        let own = matches!(&self.machine, Update::Spooling { origin: o, .. } if *o == origin);
        let r = if own {
            self.machine.spooled()
        } else {
            self.pushes += 1;
            self.machine.submit(origin, pkg.size, self.pushes)
        };
        if let Err(why) = r {
            self.refused("submit", why);
            let _ = pkg.remove();
            return Err(why);
        }
        let push = self.machine.push().unwrap_or(0);
        let Some(helper) = self.helper.clone() else {
            let _ = pkg.remove();
            return Ok(self.finish(
                None,
                Outcome::daemon(
                    DaemonCode::HelperUnavailable,
                    "the install helper is not available",
                ),
            ));
        };
        self.span.in_scope(|| {
            tracing::info!(path = %pkg.path.display(), size = pkg.size, sha256 = %pkg.sha256_hex(), "package received")
        });
        let origin = self
            .machine
            .origin()
            .map(Origin::describe)
            .unwrap_or_default();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let meta = InstallMeta {
                sha256: pkg.sha256_hex(),
                size: pkg.size,
                origin,
            };
            let result = match pkg.open() {
                Ok(file) => helper.install(&file, &meta).await,
                Err(e) => Err(HelperError::Package {
                    path: pkg.path.clone(),
                    source: std::io::Error::other(e.to_string()),
                }),
            };
            // The helper has its own copy (or refused it): ours goes away either way.
            let _ = pkg.remove();
            let _ = tx.send(CoreEvent::InstallCall { push, result }).await;
        });
        Ok(None)
    }

    /// The spool file of update `push` is finished (or failed).
    pub(crate) fn on_spooled(
        &mut self,
        push: u64,
        result: Result<SpooledPackage, SpoolError>,
    ) -> Option<Finished> {
        if self.machine.push() != Some(push) {
            if let Ok(pkg) = result {
                let _ = pkg.remove();
            }
            self.refused("spooled", Rejection::NotApplicable);
            return None;
        }
        match result {
            Ok(pkg) => {
                let origin = self.machine.origin().cloned()?;
                self.submit(pkg, origin).ok().flatten()
            }
            Err(e) => self.finish(None, Outcome::daemon(e.code(), e.to_string())),
        }
    }

    /// Ends the running update (Spooling or Installing, `txid` matching once known).
    fn finish(&mut self, txid: Option<&str>, mut outcome: Outcome) -> Option<Finished> {
        let bytes = self.machine.bytes().unwrap_or(0);
        let push = self.machine.push();
        // A provisional success (probation running): the controller hears it now, a fleet
        // waiter only the settled result ([`Self::on_settled`]).
        let provisional = txid.is_some() && self.probation.as_deref() == txid;
        if txid.is_some() {
            self.last_txid = txid.map(str::to_owned);
        }
        match self.machine.finish(txid) {
            Ok(origin) => {
                outcome.bytes = bytes;
                let settled = outcome.clone();
                let f = self.publish(outcome, origin.conn());
                if provisional {
                    self.await_probation(push);
                } else {
                    self.settled(push, &settled);
                }
                Some(f)
            }
            Err(why) => {
                self.refused("finish", why);
                None
            }
        }
    }

    /// Records a final result (`upd_seq` + 1) and logs it.
    fn publish(&mut self, o: Outcome, conn: Option<u64>) -> Finished {
        self.span.in_scope(|| {
            if o.code == ResultCode::OK {
                tracing::info!(code = %o.code, message = %o.message, "update finished");
            } else {
                tracing::warn!(code = %o.code, number = o.code.number(), message = %o.message, "update failed");
            }
        });
        self.span = tracing::Span::none();
        let tod_err = o.code.tod_err();
        self.seq = self.seq.wrapping_add(1);
        if let Some((p, v)) = &o.pkg {
            self.last_package = Some((p.clone(), v.clone(), o.installed.clone()));
            let now = install_api::types::now_secs();
            self.packages.record(p, o.code, o.installed.clone(), now);
            self.sync_versions();
        }
        self.last = Some(o);
        Finished { conn, tod_err }
    }

    /// The periodic check of the running transfer's limits (`[stream]`): a transfer that is
    /// too slow or too long fails with `interrupted` and the reason; the returned result also
    /// aborts its stream.
    pub(crate) fn check_limits(&mut self, now: Instant) -> Option<Finished> {
        let why = self.machine.check_limits(&self.settings.transfer, now)?;
        let conn = self.machine.conn()?;
        self.receive_failed(conn, Outcome::daemon(DaemonCode::Interrupted, why))
    }

    /// Shutdown: a transfer in progress is dropped with `interrupted`.
    pub(crate) fn interrupt(&mut self, why: &str) -> Option<Finished> {
        let conn = match &self.machine {
            Update::Receiving { origin, .. } => origin.conn()?,
            _ => return None,
        };
        self.receive_failed(conn, Outcome::daemon(DaemonCode::Interrupted, why))
    }

    /// Whether the link to the helper failed under a call since the last time asked.
    pub(crate) fn take_link_lost(&mut self) -> bool {
        std::mem::take(&mut self.link_lost)
    }

    /// Whether shutdown may leave the running update to the helper (it outlives us and
    /// persists the result) instead of waiting for it.
    pub(crate) fn left_to_helper(&self) -> bool {
        let outlives_us = self.helper.as_ref().is_some_and(|h| !h.is_spawned());
        outlives_us && matches!(self.machine, Update::Installing { .. })
    }
}

impl std::fmt::Debug for Updates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Updates")
            .field("state", &self.machine.name())
            .field("seq", &self.seq)
            .finish()
    }
}
