//! The install transaction: verify the staged copy, pre-flight, journal, dpkg, restart units,
//! health gate, commit or roll back, receipt. Synchronous; runs on a worker thread.
//!
//! Order: (verified while copied, [`stage::take`]) → version order → frontend lock (deadline → `dpkg-locked`) → repair an interrupted dpkg
//! (`dpkg --configure -a`) → version order again if the installed version changed (no re-read)
//! → `apt-get --simulate` (exit 100 → `unmet-dependencies`) → free
//! space vs `Installed-Size` (→ `no-space`) → rollback source: the installed version's cached
//! file, else `dpkg-repack` of it (→ `no-rollback-source`) → package into the cache → journal
//! → `dpkg --install` → daemon-reload, restart units, health gate (skipped without systemd) →
//! provisional success (`healthy`) and probation → commit → receipt → (after the result) the
//! new package file in the cache made durable ([`cache_sync`]).
//! Every refusal before the journal leaves the dpkg root unchanged.
//!
//! Rollback: with a previous version, its cached file is reinstalled the same way and gated
//! again; the result is `dpkg-failed` (dpkg failed) or `unhealthy-rolled-back` (gate failed).
//! Without a previous version the failed new package is **purged**: it was never configured
//! successfully, so there is no administrator configuration worth keeping, and purge leaves no
//! trace (`dpkg -s` reports it not installed). A previous version that is installed but absent
//! from the cache (e.g. installed by apt, not by the helper) is repacked before the upgrade
//! ([`crate::repack`]). Any failure of the rollback itself is `rollback-failed`.

use std::path::{Path, PathBuf};

use crate::cache::Cache;
use crate::dpkg::{Dpkg, FrontendLock, LockError};
use crate::health::UnitSample;
use crate::journal::{Journal, JournalPhase};
use crate::paths::Settings;
use crate::receipt::{self, StepOutcome, TxResult};
use crate::stage;
use crate::units::{GateTiming, Systemd};
use install_api::{ErrorCode, Phase};

mod apply;
pub mod cache_sync;
mod repair;
use apply::install_and_gate;
pub(crate) use apply::{finish_gate, rollback};
pub use cache_sync::CacheSync;
use repair::repair;

/// The facts about a verified package the transaction needs: what verification found.
pub use crate::verify::VerifiedPackage as Candidate;

/// A refusal with its stable code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Stable code.
    pub code: ErrorCode,
    /// Human message naming the package/path.
    pub message: String,
}

impl Refusal {
    /// A refusal.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

/// Verifies a package in the one pass that copies it ([`stage::take`]), and its version order.
pub trait Verifier: Send + Sync {
    /// Every check but the version order, on the bytes read once from `stream` (the bytes of
    /// the helper's copy `copy`, which holds all of them once the stream ended). `source` is
    /// the caller's file when it is a regular file: small positioned reads ahead are allowed
    /// on it (the signature), never trusted without the same bytes arriving through `stream`.
    /// The stream must be read to its end for an `Ok`.
    fn verify_stream(
        &self,
        stream: &mut dyn std::io::Read,
        source: Option<&std::fs::File>,
        copy: &Path,
    ) -> Result<Candidate, Refusal>;

    /// The rules a package's control fields are judged by, for `Status()` (iocomd refuses a
    /// streamed package by them early); `None` when this verifier has no such policy.
    fn policy_summary(&self) -> Option<install_api::PolicySummary> {
        None
    }
    /// The version order of a verified package against the installed version (no I/O).
    fn check_order(&self, cand: &Candidate, installed: Option<&str>) -> Result<(), Refusal>;
}

/// Progress callback: phase, percent within the phase (0–100), message. The service turns it
/// into overall progress ([`install_api::Phase::overall`]).
pub type ProgressFn<'a> = &'a mut dyn FnMut(Phase, u32, &str);

/// What a transaction runs with besides the package.
pub struct Env<'a, 's> {
    /// Paths and tunables.
    pub settings: &'a Settings,
    /// systemd, or `None` (unit steps skipped).
    pub systemd: Option<&'s mut dyn Systemd>,
    /// Progress reports.
    pub progress: ProgressFn<'a>,
    /// Told the provisional success (installed, units through the gate, probation running:
    /// [`TxResult::settled`] false) before the probation is watched; `None`: nobody listens.
    pub healthy: Option<HealthyFn<'a>>,
}

/// Callback for the provisional success of a transaction.
pub type HealthyFn<'a> = &'a mut dyn FnMut(&TxResult);

impl std::fmt::Debug for Env<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("settings", &self.settings)
            .field("systemd", &self.systemd.is_some())
            .finish()
    }
}

impl Env<'_, '_> {
    fn dpkg(&self) -> Dpkg {
        Dpkg::for_settings(self.settings)
    }

    fn timing(&self) -> GateTiming {
        GateTiming {
            start_timeout: self.settings.start_timeout,
            window: self.settings.health_window,
            ready_gate: self.settings.ready_gate,
            probation: self.settings.probation,
            poll: std::time::Duration::from_millis(100),
        }
    }
}

/// Runs a whole transaction on the taken (copied and verified) package and records its result
/// (receipt + status); a committed one's cached package file is durable before this returns.
pub fn run(
    env: &mut Env<'_, '_>,
    verifier: &dyn Verifier,
    txid: &str,
    taken: stage::Taken,
) -> TxResult {
    let (result, sync) = run_deferred(env, verifier, txid, taken);
    if let Some(s) = sync {
        s.complete();
    }
    result
}

/// [`run`], returning as soon as the result is recorded: a committed transaction comes with
/// its [`CacheSync`], which the caller completes after reporting the result and before the next
/// transaction starts.
pub fn run_deferred(
    env: &mut Env<'_, '_>,
    verifier: &dyn Verifier,
    txid: &str,
    taken: stage::Taken,
) -> (TxResult, Option<CacheSync>) {
    let mut result = TxResult::new(txid, ErrorCode::Internal, "");
    if let Err(r) = attempt(env, verifier, &taken.path, taken.verdict, &mut result) {
        result.set_code(r.code, r.message);
    }
    let _ = std::fs::remove_file(&taken.path);
    finish_deferred(env, result)
}

/// Records `result` durably, completes the cache sync of a committed transaction, clears the
/// journal, reports it.
pub fn finish(env: &mut Env<'_, '_>, result: TxResult) -> TxResult {
    let (result, sync) = finish_deferred(env, result);
    if let Some(s) = sync {
        s.complete();
    }
    result
}

/// Records `result` durably and reports it; clears the journal, or, when the transaction
/// committed ([`JournalPhase::Committed`]), leaves it to the returned [`CacheSync`].
fn finish_deferred(env: &mut Env<'_, '_>, mut result: TxResult) -> (TxResult, Option<CacheSync>) {
    result.time = receipt::now_secs();
    let paths = &env.settings.paths;
    if let Err(e) = receipt::record(&paths.receipts(), &paths.status(), &result) {
        tracing::error!(error = %e, "cannot record the receipt");
    }
    let sync = match Journal::read(&paths.journal()) {
        Ok(Some(j)) if j.phase == JournalPhase::Committed && j.txid == result.txid => {
            Some(CacheSync::new(&paths.journal(), &paths.cache_dir(), &j))
        }
        _ => {
            if let Err(e) = Journal::clear(&paths.journal()) {
                tracing::error!(error = %e, "cannot remove the journal");
            }
            None
        }
    };
    tracing::info!(txid = %result.txid, code = %result.code, message = %result.message, "transaction finished");
    (env.progress)(Phase::Finished, 100, &result.message);
    (result, sync)
}

fn io_refusal(what: &str, e: impl std::fmt::Display) -> Refusal {
    Refusal::new(ErrorCode::IoError, format!("{what}: {e}"))
}

fn attempt(
    env: &mut Env<'_, '_>,
    verifier: &dyn Verifier,
    staged: &Path,
    verdict: Result<Candidate, Refusal>,
    result: &mut TxResult,
) -> Result<(), Refusal> {
    let settings = env.settings;
    let paths = &settings.paths;
    let dpkg = env.dpkg();

    // Verified while it was copied (that pass reported its own progress); what is left is
    // the version order.
    (env.progress)(Phase::Verify, 100, "checking the version order");
    let cand = verdict?;
    let seen = dpkg
        .query(&cand.name)
        .map(|s| s.installed_version().map(str::to_string))
        .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))?;
    verifier.check_order(&cand, seen.as_deref())?;
    result.package = Some(cand.name.clone());
    result.to = Some(cand.version.clone());
    result.sha256 = Some(cand.sha256.clone());
    result.signer = Some(cand.signer.clone());
    result.step(
        "verify",
        StepOutcome::Done,
        format!("signed by {}", cand.signer),
    );

    (env.progress)(Phase::Lock, 0, "taking the dpkg frontend lock");
    let lock = FrontendLock::acquire(&paths.lock_frontend(), settings.lock_timeout).map_err(
        |e| match e {
            LockError::Busy { .. } => Refusal::new(ErrorCode::DpkgLocked, e.to_string()),
            LockError::Io { .. } => io_refusal("frontend lock", e),
        },
    )?;
    let dpkg = dpkg.with_frontend_lock(&lock);

    // Under the lock, dpkg's audit, the installed state and apt's dependency check are
    // independent reads of the dpkg database: run at once (one process start each, not three
    // in a row). After a repair the state and the check are taken again.
    let internal = |e: crate::dpkg::RunError| Refusal::new(ErrorCode::Internal, e.to_string());
    let joined =
        |what: &str| Refusal::new(ErrorCode::Internal, format!("internal: {what} panicked"));
    let (audit, before, sim) = std::thread::scope(|s| {
        let query = s.spawn(|| dpkg.query(&cand.name));
        let sim = s.spawn(|| dpkg.simulate(staged));
        (dpkg.audit(), query.join(), sim.join())
    });
    let (before, sim) = if repair(env, &dpkg, audit.map_err(internal)?, result)? {
        (dpkg.query(&cand.name), dpkg.simulate(staged))
    } else {
        (
            before.map_err(|_| joined("dpkg-query"))?,
            sim.map_err(|_| joined("apt-get --simulate"))?,
        )
    };
    // The installed version under the lock; re-verify if it changed since verification.
    let before = before.map_err(internal)?;
    let from = before.installed_version().map(str::to_string);
    if before.version.is_some() && from.is_none() {
        return Err(Refusal::new(
            ErrorCode::DpkgFailed,
            format!(
                "{} is in state {} and cannot be upgraded",
                cand.name, before.status
            ),
        ));
    }
    if from != seen {
        verifier.check_order(&cand, from.as_deref())?;
    }
    result.from = from.clone();

    (env.progress)(Phase::Preflight, 0, "checking dependencies");
    let sim = sim.map_err(internal)?;
    if !sim.success() {
        result.add_output("apt-get --simulate", &sim.transcript());
        let code = if sim.code() == Some(100) {
            ErrorCode::UnmetDependencies
        } else {
            ErrorCode::Internal
        };
        let detail = sim
            .stdout
            .lines()
            .chain(sim.stderr.lines())
            .filter(|l| l.contains("Depends") || l.contains("Conflicts") || l.starts_with("E:"))
            .collect::<Vec<_>>()
            .join("; ");
        return Err(Refusal::new(
            code,
            format!(
                "{} {}: apt-get --simulate refused: {detail}",
                cand.name, cand.version
            ),
        ));
    }
    result.step(
        "simulate",
        StepOutcome::Done,
        "apt-get --simulate: dependencies satisfied",
    );

    let pkg_size = std::fs::metadata(staged).map(|m| m.len()).unwrap_or(0);
    let unpacked = cand.installed_size_kib.unwrap_or(0).saturating_mul(1024);
    stage::check_space(
        &paths.root,
        unpacked.saturating_add(pkg_size),
        settings.space_reserve,
    )
    .map_err(|e| Refusal::new(e.code(), format!("{} {}: {e}", cand.name, cand.version)))?;
    result.step(
        "space",
        StepOutcome::Done,
        format!("{unpacked} bytes to unpack"),
    );

    // Keep the package (for the next rollback) and find the previous one; a previous version
    // the helper did not install is repacked from the installed files, or the update refused.
    let cache = Cache::new(&paths.cache_dir());
    let mut previous_deb = from.as_deref().and_then(|v| cache.find(&cand.name, v));
    if let (Some(v), None) = (from.as_deref(), &previous_deb) {
        (env.progress)(
            Phase::RollbackSource,
            0,
            "keeping the installed version for a rollback",
        );
        let staging = paths.staging_dir();
        let deb = crate::repack::repack_into_cache(&dpkg, &cache, &staging, &cand.name, v)
            .map_err(|why| {
                Refusal::new(
                    ErrorCode::NoRollbackSource,
                    format!(
                        "{} {v} is installed but not in the package cache, and it cannot be \
                         kept for a rollback: {why}",
                        cand.name
                    ),
                )
            })?;
        tracing::info!(
            package = %cand.name,
            version = %v,
            "installed version not in the cache: repacked with dpkg-repack for a rollback"
        );
        result.step(
            "rollback-source",
            StepOutcome::Done,
            format!(
                "{} {v} repacked from the installed files (dpkg-repack)",
                cand.name
            ),
        );
        previous_deb = Some(deb);
    }
    let new_deb = cache
        .insert(staged, &cand.name, &cand.version, &cand.architecture)
        .map_err(|e| io_refusal("package cache", e))?;
    let mut journal = Journal {
        txid: result.txid.clone(),
        package: cand.name.clone(),
        from_version: from.clone(),
        to_version: cand.version.clone(),
        architecture: cand.architecture.clone(),
        new_deb,
        previous_deb,
        units: cand.units.clone(),
        sha256: cand.sha256.clone(),
        signer: cand.signer.clone(),
        phase: JournalPhase::Installing,
        rollback_reason: None,
        started: receipt::now_secs(),
    };
    journal
        .write(&paths.journal())
        .map_err(|e| io_refusal("journal", e))?;

    install_and_gate(env, &dpkg, &mut journal, result);
    drop(lock);
    Ok(())
}

/// A new transaction id (time-based, unique per helper run).
pub fn new_txid() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{}-{:06}-{}",
        now.as_secs(),
        now.subsec_micros(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// The staged path for a transaction (used by the service before `run`).
pub fn staged_path(settings: &Settings, txid: &str) -> PathBuf {
    settings.paths.staging_dir().join(format!("{txid}.deb"))
}
