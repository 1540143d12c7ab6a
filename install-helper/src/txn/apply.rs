//! Applying a verified, journaled package: `dpkg --install`, the units' restart and health
//! gate, commit, and the rollback (reinstall of the previous version, or purge of a first
//! install) with its own gate.

use super::*;
use crate::units;

/// dpkg --install of the journaled package, then units and health; rolls back on failure.
pub(super) fn install_and_gate(
    env: &mut Env<'_, '_>,
    dpkg: &Dpkg,
    journal: &mut Journal,
    result: &mut TxResult,
) {
    let name = journal.package.clone();
    let to = journal.to_version.clone();
    // The units as they run before dpkg: a unit the package's own postinst restarts (as
    // debhelper does) is then gated without a second restart.
    let before = sample_units(env, &journal.units);
    (env.progress)(Phase::Install, 0, &format!("installing {name} {to}"));
    let ok = match dpkg_install(
        env,
        dpkg,
        &journal.new_deb.clone(),
        &name,
        &to,
        result,
        ("dpkg-install", Phase::Install),
    ) {
        Ok(()) => true,
        Err(reason) => {
            rollback(env, dpkg, journal, result, ErrorCode::DpkgFailed, &reason);
            false
        }
    };
    if !ok {
        return;
    }
    // Recovery treats a fully installed new version alike in `installing` and `gating`: the
    // phase is written for the units' gate (and probation) only, not when there is none.
    if !journal.units.is_empty()
        && let Err(e) = journal.advance(JournalPhase::Gating, &env.settings.paths.journal())
    {
        tracing::error!(error = %e, "cannot update the journal");
    }
    finish_gate(env, dpkg, journal, result, "installed and healthy", &before);
}

/// A sample of each unit (`None`: the unit is unknown to systemd). Empty without systemd or
/// when any sample fails: "could not tell" must not read as "was not running", so then every
/// unit is restarted.
fn sample_units(env: &mut Env<'_, '_>, units: &[String]) -> Vec<Option<UnitSample>> {
    let Some(sd) = env.systemd.as_deref_mut() else {
        return Vec::new();
    };
    units
        .iter()
        .map(|u| sd.sample(u))
        .collect::<Result<_, _>>()
        .unwrap_or_default()
}

/// Restart units + gate for an installed new version; then, with units on probation, the
/// provisional success ([`Env::healthy`]) and the probation; commit or roll back. `before`
/// holds the units' samples from before dpkg ran (empty: restart every unit).
pub(crate) fn finish_gate(
    env: &mut Env<'_, '_>,
    dpkg: &Dpkg,
    journal: &mut Journal,
    result: &mut TxResult,
    ok_message: &str,
    before: &[Option<UnitSample>],
) {
    let on_probation = match gate(env, &journal.units, result, "", before, false) {
        Ok(judges) => judges,
        Err(reason) => {
            return rollback(
                env,
                dpkg,
                journal,
                result,
                ErrorCode::UnhealthyRolledBack,
                &reason,
            );
        }
    };
    let skipped = env.systemd.is_none() && !journal.units.is_empty();
    let name = format!("{} {}", journal.package, journal.to_version);
    if let Some(until) = on_probation
        .iter()
        .filter_map(|j| j.probation_until())
        .max()
    {
        let left = until.saturating_duration_since(std::time::Instant::now());
        let until_secs = receipt::now_secs() + left.as_secs() + u64::from(left.subsec_nanos() > 0);
        let secs = env.settings.probation.as_secs();
        result.installed = Some(journal.to_version.clone());
        result.settled = false;
        result.probation_until = Some(until_secs);
        result.set_code(
            ErrorCode::Ok,
            format!("{name} {ok_message}; on probation for {secs} s (until {until_secs})"),
        );
        (env.progress)(
            Phase::Health,
            100,
            &format!(
                "healthy; probation of {} until {until_secs}",
                journal.units.join(", ")
            ),
        );
        if let Some(tell) = env.healthy.as_deref_mut() {
            tell(result);
        }
        result.settled = true;
        let poll = env.timing().poll;
        let watched = match env.systemd.as_deref_mut() {
            Some(sd) => units::watch_probation(sd, on_probation, poll),
            None => Err("internal: units on probation without systemd".to_string()),
        };
        match watched {
            Ok(()) => {
                result.step(
                    "probation",
                    StepOutcome::Done,
                    format!("{} stayed healthy for {secs} s", journal.units.join(", ")),
                );
                commit(
                    env,
                    journal,
                    result,
                    &format!("{ok_message}, confirmed after {secs} s on probation"),
                );
            }
            Err(reason) => {
                result.step("probation", StepOutcome::Failed, reason.clone());
                rollback(
                    env,
                    dpkg,
                    journal,
                    result,
                    ErrorCode::UnhealthyRolledBack,
                    &reason,
                );
            }
        }
        return;
    }
    let suffix = if skipped {
        " (unit restarts skipped: no systemd)"
    } else {
        ""
    };
    commit(env, journal, result, &format!("{ok_message}{suffix}"));
}

/// The new version stays: the journal goes to [`JournalPhase::Committed`] (its file is made
/// durable and older cached versions pruned after the result, [`super::cache_sync`]), `ok`.
fn commit(env: &mut Env<'_, '_>, journal: &mut Journal, result: &mut TxResult, what: &str) {
    let paths = &env.settings.paths;
    if let Err(e) = journal.advance(JournalPhase::Committed, &paths.journal()) {
        // Without the journal saying so, nothing would sync it later: sync now.
        tracing::error!(error = %e, "cannot update the journal; settling the cache now");
        if let Err(e) = std::fs::File::open(&journal.new_deb).and_then(|f| f.sync_all()) {
            tracing::warn!(error = %e, file = %journal.new_deb.display(),
                "cannot fsync the cached package");
        }
        super::cache_sync::prune(&paths.cache_dir(), &journal.package, &journal.new_deb);
    }
    result.installed = Some(journal.to_version.clone());
    result.settled = true;
    result.set_code(
        ErrorCode::Ok,
        format!("{} {} {what}", journal.package, journal.to_version),
    );
}

fn dpkg_install(
    env: &mut Env<'_, '_>,
    dpkg: &Dpkg,
    deb: &Path,
    name: &str,
    version: &str,
    result: &mut TxResult,
    (step, phase): (&str, Phase),
) -> Result<(), String> {
    let progress = &mut env.progress;
    let out = dpkg.install(deb, &mut |line| {
        if let Some(s) = crate::dpkg::status_line(line) {
            progress(phase, crate::dpkg::status_percent(s), s);
        }
    });
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            result.step(step, StepOutcome::Failed, e.to_string());
            return Err(e.to_string());
        }
    };
    let state = dpkg.query(name).map_err(|e| e.to_string())?;
    if out.success() && state.installed_version() == Some(version) {
        result.step(
            step,
            StepOutcome::Done,
            format!("{name} {version} installed"),
        );
        Ok(())
    } else {
        result.add_output(step, &out.transcript());
        let reason = format!(
            "dpkg --install {name} {version} failed (exit {:?}, state {} {})",
            out.code(),
            state.status,
            state.version.as_deref().unwrap_or("-")
        );
        result.step(step, StepOutcome::Failed, reason.clone());
        Err(reason)
    }
}

/// daemon-reload, restart and gate `units`; skipped (and reported so) without systemd.
fn gate(
    env: &mut Env<'_, '_>,
    units: &[String],
    result: &mut TxResult,
    suffix: &str,
    before: &[Option<UnitSample>],
    rolling_back: bool,
) -> Result<Vec<crate::health::HealthJudge>, String> {
    let restart = format!("restart-units{suffix}");
    let health = format!("health-gate{suffix}");
    if units.is_empty() {
        result.step(&restart, StepOutcome::Skipped, "the package ships no units");
        return Ok(Vec::new());
    }
    let mut timing = env.timing();
    if rolling_back {
        // The restored version was settled before: gated again, no probation.
        timing.probation = std::time::Duration::ZERO;
    }
    let progress = &mut env.progress;
    let Some(sd) = env.systemd.as_deref_mut() else {
        let list = units.join(", ");
        result.step(
            &restart,
            StepOutcome::Skipped,
            format!("no systemd (isolated root): {list}"),
        );
        result.step(&health, StepOutcome::Skipped, "no systemd (isolated root)");
        return Ok(Vec::new());
    };
    // After a rollback the restart and gate are part of the rollback phase (progress only
    // moves forward).
    let (restart_phase, health_phase, health_pct) = if rolling_back {
        (Phase::Rollback, Phase::Rollback, 80)
    } else {
        (Phase::Restart, Phase::Health, 0)
    };
    let restarting = format!("restarting {}", units.join(", "));
    progress(
        restart_phase,
        if rolling_back { 60 } else { 0 },
        &restarting,
    );
    match units::restart_and_gate(sd, units, before, timing, &mut |m| {
        progress(health_phase, health_pct, m)
    }) {
        Ok(judges) => {
            result.step(&restart, StepOutcome::Done, units.join(", "));
            result.step(&health, StepOutcome::Done, "all units healthy");
            Ok(judges)
        }
        Err(reason) => {
            result.step(&health, StepOutcome::Failed, reason.clone());
            Err(reason)
        }
    }
}

/// Restores the previous state after `reason`; sets the result code.
pub(crate) fn rollback(
    env: &mut Env<'_, '_>,
    dpkg: &Dpkg,
    journal: &mut Journal,
    result: &mut TxResult,
    code_if_restored: ErrorCode,
    reason: &str,
) {
    journal.rollback_reason = Some(reason.to_string());
    if let Err(e) = journal.advance(JournalPhase::RollingBack, &env.settings.paths.journal()) {
        tracing::error!(error = %e, "cannot update the journal");
    }
    let name = journal.package.clone();
    (env.progress)(
        Phase::Rollback,
        0,
        &format!("rolling back {name}: {reason}"),
    );
    let restored = match (&journal.from_version, &journal.previous_deb) {
        (Some(from), Some(prev)) => dpkg_install(
            env,
            dpkg,
            &prev.clone(),
            &name,
            from,
            result,
            ("rollback", Phase::Rollback),
        )
        .and_then(|()| gate(env, &journal.units, result, "-after-rollback", &[], true))
        .map(|_| format!("{name} {from} restored")),
        (Some(from), None) => {
            result.step(
                "rollback",
                StepOutcome::Failed,
                "no cached package of the previous version",
            );
            Err(format!(
                "no cached package of {name} {from} to roll back to"
            ))
        }
        (None, _) => purge(dpkg, &name, result),
    };
    let cache = Cache::new(&env.settings.paths.cache_dir());
    if journal.previous_deb.as_deref() != Some(journal.new_deb.as_path()) {
        let _ = crate::fsutil::remove_durably(&journal.new_deb);
    }
    if let Some(prev) = &journal.previous_deb {
        let _ = cache.prune(&name, prev);
    }
    result.installed = dpkg
        .query(&name)
        .ok()
        .and_then(|s| s.installed_version().map(str::to_string));
    match restored {
        Ok(what) => result.set_code(code_if_restored, format!("{reason}; rolled back: {what}")),
        Err(why) => result.set_code(
            ErrorCode::RollbackFailed,
            format!("{reason}; rollback failed: {why}"),
        ),
    }
}

fn purge(dpkg: &Dpkg, name: &str, result: &mut TxResult) -> Result<String, String> {
    let out = dpkg.purge(name).map_err(|e| e.to_string())?;
    let state = dpkg.query(name).map_err(|e| e.to_string())?;
    if out.success() && state.version.is_none() {
        result.step(
            "rollback",
            StepOutcome::Done,
            format!("{name} purged (no previous version)"),
        );
        Ok(format!("{name} purged (there was no previous version)"))
    } else {
        result.add_output("purge", &out.transcript());
        result.step(
            "rollback",
            StepOutcome::Failed,
            format!("purge of {name} failed"),
        );
        Err(format!(
            "dpkg --purge {name} failed (state {})",
            state.status
        ))
    }
}
