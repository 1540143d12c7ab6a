//! Start-up recovery: an unfinished journal means the helper died mid-transaction (killed,
//! power cut). Under the frontend lock, dpkg is repaired (`dpkg --configure -a`), then:
//! - phase `installing`/`gating` and the new version is fully installed → the transaction is
//!   finished (units restarted and gated where systemd is available) → `ok`;
//! - otherwise (new version not fully installed, or a rollback was running) → rolled back to
//!   the previous version from the cache (or the new package purged) → `dpkg-failed`
//!   (`rollback-failed` if that fails);
//! - phase `committed` (result reported, the cached package file not yet durable)
//!   → the file is kept only if it still has the verified SHA-256 ([`txn::cache_sync`]), and the
//!   `ok` result is recorded if the crash came before its receipt.
//!
//! A new version found fully installed keeps its cached file (the next rollback source) only
//! if the file has the SHA-256 in the journal: a power cut may have lost its unwritten data.
//! The result is recorded under the original transaction id. Without a journal, an interrupted
//! dpkg is still repaired and logged.

use crate::dpkg::{Dpkg, FrontendLock};
use crate::journal::{Journal, JournalPhase};
use crate::receipt::{self, StepOutcome, TxResult};
use crate::txn::{self, Env, cache_sync};
use install_api::ErrorCode;

/// What recovery found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// Nothing to do.
    Clean,
    /// No journal, but dpkg was interrupted and has been repaired (or not: `ok` false).
    Repaired {
        /// Whether `dpkg --configure -a` succeeded.
        ok: bool,
        /// Its output.
        output: String,
    },
    /// An unfinished transaction was finished or rolled back.
    Transaction(Box<TxResult>),
    /// A committed transaction's cached package file was checked and made durable, or
    /// removed.
    Committed {
        /// The transaction.
        txid: String,
        /// The file had the verified SHA-256 and stays the next rollback source (else it was
        /// removed).
        kept: bool,
        /// Its result had not been recorded before the crash and was recorded now.
        recorded: bool,
    },
}

/// Why recovery could not run.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// The journal could not be read.
    #[error("journal: {0}")]
    Journal(std::io::Error),
    /// The frontend lock was not available.
    #[error("dpkg frontend lock: {0}")]
    Lock(#[from] crate::dpkg::LockError),
    /// dpkg could not be run.
    #[error("{0}")]
    Run(#[from] crate::dpkg::RunError),
}

/// Runs recovery. Call once at start, before serving requests.
pub fn recover(env: &mut Env<'_, '_>) -> Result<Recovery, RecoverError> {
    let settings = env.settings;
    let journal = Journal::read(&settings.paths.journal()).map_err(RecoverError::Journal)?;
    let plain = Dpkg::for_settings(settings);
    if journal.is_none() && !plain.interrupted() {
        return Ok(Recovery::Clean);
    }
    let lock = FrontendLock::acquire(&settings.paths.lock_frontend(), settings.lock_timeout)?;
    let dpkg = plain.with_frontend_lock(&lock);
    let mut repaired = None;
    if dpkg.interrupted() || dpkg.audit()?.is_some() {
        tracing::warn!("dpkg was interrupted; running dpkg --configure -a");
        let out = dpkg.configure_pending()?;
        tracing::info!(ok = out.success(), output = %out.transcript(), "dpkg --configure -a");
        repaired = Some(out);
    }
    let Some(mut journal) = journal else {
        return Ok(match repaired {
            Some(out) => Recovery::Repaired {
                ok: out.success(),
                output: out.transcript(),
            },
            None => Recovery::Clean,
        });
    };
    tracing::warn!(txid = %journal.txid, package = %journal.package, phase = ?journal.phase,
        "resuming an unfinished transaction");
    if journal.phase == JournalPhase::Committed {
        let r = sync_after_crash(env, &journal);
        drop(lock);
        return Ok(r);
    }
    let mut result = TxResult::new(&journal.txid, ErrorCode::Internal, "");
    result.package = Some(journal.package.clone());
    result.from = journal.from_version.clone();
    result.to = Some(journal.to_version.clone());
    result.sha256 = Some(journal.sha256.clone());
    result.signer = Some(journal.signer.clone());
    if let Some(out) = &repaired {
        result.add_output("repair", &out.transcript());
        let outcome = if out.success() {
            StepOutcome::Done
        } else {
            StepOutcome::Failed
        };
        result.step(
            "repair",
            outcome,
            "dpkg --configure -a after an interruption",
        );
    }
    let state = dpkg.query(&journal.package)?;
    let new_ok = state.installed_version() == Some(journal.to_version.as_str());
    match journal.phase {
        JournalPhase::Installing | JournalPhase::Gating if new_ok => {
            if !cache_sync::keep_if_intact(&journal.new_deb, &journal.sha256) {
                tracing::warn!(file = %journal.new_deb.display(),
                    "the cached new package is incomplete: removed (the next update repacks)");
            }
            result.step(
                "resume",
                StepOutcome::Done,
                format!(
                    "{} {} is fully installed",
                    journal.package, journal.to_version
                ),
            );
            if let Err(e) = journal.advance(JournalPhase::Gating, &settings.paths.journal()) {
                tracing::error!(error = %e, "cannot update the journal");
            }
            txn::finish_gate(
                env,
                &dpkg,
                &mut journal,
                &mut result,
                "installed and healthy (finished after an interruption)",
                &[],
            );
        }
        phase => {
            let reason = match phase {
                JournalPhase::RollingBack => format!(
                    "interrupted while rolling back ({})",
                    journal.rollback_reason.clone().unwrap_or_default()
                ),
                _ => format!(
                    "interrupted while installing; {} is {} {}",
                    journal.package,
                    state.status,
                    state.version.as_deref().unwrap_or("")
                ),
            };
            txn::rollback(
                env,
                &dpkg,
                &mut journal,
                &mut result,
                ErrorCode::DpkgFailed,
                &reason,
            );
        }
    }
    drop(lock);
    Ok(Recovery::Transaction(Box::new(txn::finish(env, result))))
}

/// A crash after the commit: the cached file is kept only if intact, the result recorded if
/// its receipt is missing, the journal removed.
fn sync_after_crash(env: &mut Env<'_, '_>, journal: &Journal) -> Recovery {
    let paths = &env.settings.paths;
    let kept = cache_sync::keep_if_intact(&journal.new_deb, &journal.sha256);
    if !kept {
        tracing::warn!(file = %journal.new_deb.display(),
            "the cached package was not durable when the helper stopped: removed");
    }
    cache_sync::prune(&paths.cache_dir(), &journal.package, &journal.new_deb);
    let recorded = matches!(
        receipt::find_receipt(&paths.receipts(), &journal.txid),
        Ok(None)
    );
    if recorded {
        let mut result = TxResult::new(
            &journal.txid,
            install_api::ErrorCode::Ok,
            format!(
                "{} {} installed (result recorded after an interruption)",
                journal.package, journal.to_version
            ),
        );
        result.package = Some(journal.package.clone());
        result.from = journal.from_version.clone();
        result.to = Some(journal.to_version.clone());
        result.installed = Some(journal.to_version.clone());
        result.sha256 = Some(journal.sha256.clone());
        result.signer = Some(journal.signer.clone());
        result.time = receipt::now_secs();
        if let Err(e) = receipt::record(&paths.receipts(), &paths.status(), &result) {
            tracing::error!(error = %e, "cannot record the receipt");
        }
    }
    if let Err(e) = Journal::clear(&paths.journal()) {
        tracing::error!(error = %e, "cannot remove the journal");
    }
    Recovery::Committed {
        txid: journal.txid.clone(),
        kept,
        recorded,
    }
}
