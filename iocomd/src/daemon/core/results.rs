//! The core loop's results side: helper signals, the spool's and the `Install` call's
//! outcomes, and publishing a final result (status signals, `upd_seq` + 1, `tod_err`).

use super::{Core, Outcome};
use crate::daemon::CoreEvent;
use crate::daemon::helper::{TxSummary, code_of_dbus_error, phase_state};
use crate::daemon::update::{Rejection, Update};
use crate::helper_client::{HelperEvent, InstallMeta};
use crate::spool::{SpoolError, SpoolWriter};
use crate::status::{DaemonCode, UpdState, tod_err_for};

impl Core {
    pub(super) fn on_helper(&mut self, ev: HelperEvent) {
        match ev {
            HelperEvent::Progress {
                transaction_id,
                phase,
                percent,
                message,
            } => {
                let Some(state) = phase_state(&phase) else {
                    return;
                };
                if self.update.progress(&transaction_id, state).is_ok() {
                    self.push_span.in_scope(|| {
                        tracing::info!(txid = %transaction_id, %phase, percent, %message, "helper progress")
                    });
                    self.status.state = state;
                    self.status.progress = u8::try_from(percent.min(100)).unwrap_or(100);
                    self.status.msg = message;
                    self.notifier.status(self.narrate());
                }
            }
            HelperEvent::Finished {
                transaction_id,
                code,
                message,
                result_json,
            } => {
                let mut summary: TxSummary = serde_json::from_str(&result_json).unwrap_or_default();
                if summary.code.is_empty() {
                    summary.code = code;
                    summary.message = message;
                    summary.code_number = crate::daemon::helper::HELPER_CODES
                        .iter()
                        .find(|(c, _)| *c == summary.code)
                        .map_or(99, |(_, n)| *n);
                }
                summary.txid = transaction_id.clone();
                match self.update.finish(Some(&transaction_id)) {
                    Ok(conn) => self.publish_result(outcome_of(&summary), conn),
                    Err(Rejection::NotApplicable | Rejection::Busy) => {
                        if matches!(self.update, Update::Installing { txid: None, .. }) {
                            self.orphans.push((transaction_id, summary));
                            if self.orphans.len() > 8 {
                                self.orphans.remove(0);
                            }
                        } else {
                            tracing::debug!(txid = %transaction_id, "result of another transaction");
                        }
                    }
                }
            }
        }
    }

    pub(super) fn on_spooled(
        &mut self,
        push: u64,
        result: Result<crate::spool::SpooledPackage, SpoolError>,
    ) {
        if self.update.push() != Some(push) {
            if let Ok(pkg) = result {
                let _ = pkg.remove();
            }
            return;
        }
        let pkg = match result {
            Ok(p) => p,
            Err(e) => {
                let code = match &e {
                    SpoolError::CrcMismatch { .. } => DaemonCode::CrcMismatch,
                    SpoolError::TooLarge { .. } => DaemonCode::TooLarge,
                    SpoolError::NoSpace { .. } => DaemonCode::NoSpace,
                    _ => DaemonCode::SpoolError,
                };
                if let Ok(conn) = self.update.finish(None) {
                    self.publish_result(Outcome::daemon(code, e.to_string()), conn);
                }
                return;
            }
        };
        let Some(helper) = self.helper.clone() else {
            let _ = pkg.remove();
            if let Ok(conn) = self.update.finish(None) {
                self.publish_result(
                    Outcome::daemon(
                        DaemonCode::HelperUnavailable,
                        "the install helper is not available",
                    ),
                    conn,
                );
            }
            return;
        };
        let _ = self.update.spooled();
        self.status.state = UpdState::Verifying;
        self.status.progress = 0;
        self.status.msg = format!("received {} bytes, handing over to the installer", pkg.size);
        self.push_span.in_scope(|| {
            tracing::info!(path = %pkg.path.display(), size = pkg.size, sha256 = %pkg.sha256_hex(), "package received")
        });
        let origin = self
            .update
            .conn()
            .and_then(|c| self.peers.get(&c))
            .map(|p| format!("iocom {} user {}", p.addr, p.user.as_deref().unwrap_or("?")))
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
                Err(e) => Err(crate::helper_client::HelperError::Spawn {
                    program: pkg.path.clone(),
                    source: std::io::Error::other(e.to_string()),
                }),
            };
            // The helper has its own copy (or refused it): ours goes away either way.
            let _ = pkg.remove();
            let _ = tx.send(CoreEvent::InstallCall { push, result }).await;
        });
    }

    pub(super) fn on_install_call(
        &mut self,
        push: u64,
        result: Result<String, crate::helper_client::HelperError>,
    ) {
        if self.update.push() != Some(push) {
            return;
        }
        match result {
            Ok(txid) => {
                self.push_span
                    .in_scope(|| tracing::info!(%txid, "install transaction started"));
                let _ = self.update.install_started(&txid);
                if let Some(i) = self.orphans.iter().position(|(t, _)| *t == txid) {
                    let (_, summary) = self.orphans.remove(i);
                    if let Ok(conn) = self.update.finish(Some(&txid)) {
                        self.publish_result(outcome_of(&summary), conn);
                    }
                }
            }
            Err(e) => {
                let outcome = match code_of_dbus_error(&e) {
                    Some((code, number)) => Outcome {
                        number,
                        code,
                        message: e.to_string(),
                        pkg: None,
                        ver: None,
                        installed: None,
                    },
                    None => Outcome::daemon(DaemonCode::HelperUnavailable, e.to_string()),
                };
                if let Ok(conn) = self.update.finish(None) {
                    self.publish_result(outcome, conn);
                }
            }
        }
    }

    pub(super) fn apply_outcome(&mut self, o: Outcome) {
        self.status.seq = self.status.seq.wrapping_add(1);
        self.status.state = UpdState::Idle;
        self.status.progress = if o.number == 0 { 100 } else { 0 };
        self.status.result = o.number;
        self.status.code = o.code;
        self.status.msg = o.message;
        if let Some(p) = o.pkg {
            self.status.pkg = p;
            self.status.ver = o.ver.unwrap_or_default();
            self.status.inst_ver = o.installed.unwrap_or_default();
        }
    }

    /// Publishes a final result: status signals (upd_seq + 1) and the pusher's `tod_err`.
    pub(super) fn publish_result(&mut self, o: Outcome, conn: Option<u64>) {
        let t = tod_err_for(o.number);
        self.push_span.in_scope(|| {
            if o.number == 0 {
                tracing::info!(code = %o.code, message = %o.message, "push finished");
            } else {
                tracing::warn!(code = %o.code, number = o.number, message = %o.message, "push failed");
            }
        });
        self.push_span = tracing::Span::none();
        self.apply_outcome(o);
        if let Some(p) = conn.and_then(|c| self.peers.get_mut(&c))
            && let Some(ep) = p.ep.as_mut()
        {
            let _ = ep.report(t);
            p.dirty = true;
        }
        self.notifier.status(self.narrate());
    }

    pub(super) fn narrate(&self) -> String {
        let s = &self.status;
        match s.state {
            UpdState::Idle if s.seq == 0 => format!("idle on {}", self.settings.device_path()),
            UpdState::Idle => format!("idle; last push: {} {} {}: {}", s.code, s.pkg, s.ver, s.msg),
            UpdState::Receiving => format!("receiving a package ({} bytes)", s.bytes),
            st => format!("{} {} {}: {}", st.name(), s.pkg, s.ver, s.msg),
        }
    }
}

pub(super) async fn finish_spool(
    writer: Box<SpoolWriter>,
    crc: u16,
) -> Result<crate::spool::SpooledPackage, SpoolError> {
    let path = writer.partial_path().to_path_buf();
    match tokio::task::spawn_blocking(move || writer.finish(crc)).await {
        Ok(r) => r,
        Err(e) => Err(SpoolError::Io {
            path,
            source: std::io::Error::other(e.to_string()),
        }),
    }
}

pub(super) fn outcome_of(s: &TxSummary) -> Outcome {
    Outcome {
        number: s.code_number,
        code: s.code.clone(),
        message: s.message.clone(),
        pkg: s.package.clone(),
        ver: s.to.clone(),
        installed: s.installed.clone(),
    }
}
