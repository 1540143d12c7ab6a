//! Repairing an interrupted dpkg before a transaction goes on: `dpkg --configure -a` under
//! the frontend lock, then `dpkg --audit` again; a dpkg it cannot repair refuses the update
//! with nothing installed (field notes: an interrupted dpkg blocks every later install).

use super::{Env, Refusal};
use crate::dpkg::Dpkg;
use crate::receipt::{StepOutcome, TxResult};
use install_api::{ErrorCode, Phase};

/// Repairs an interrupted dpkg (`updates/` not empty or `dpkg --audit`, whose report is
/// `audit`, reporting); true when it did.
pub(super) fn repair(
    env: &mut Env<'_, '_>,
    dpkg: &Dpkg,
    audit: Option<String>,
    result: &mut TxResult,
) -> Result<bool, Refusal> {
    if !dpkg.interrupted() && audit.is_none() {
        return Ok(false);
    }
    (env.progress)(
        Phase::Repair,
        0,
        "dpkg was interrupted: running dpkg --configure -a",
    );
    tracing::warn!(?audit, "dpkg was interrupted; running dpkg --configure -a");
    let out = dpkg
        .configure_pending()
        .map_err(|e| Refusal::new(ErrorCode::DpkgFailed, e.to_string()))?;
    result.add_output("repair", &out.transcript());
    let still = dpkg
        .audit()
        .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))?;
    if out.success() && still.is_none() {
        result.step(
            "repair",
            StepOutcome::Done,
            "dpkg --configure -a repaired an interrupted dpkg",
        );
        Ok(true)
    } else {
        result.step(
            "repair",
            StepOutcome::Failed,
            "dpkg --configure -a did not repair dpkg",
        );
        Err(Refusal::new(
            ErrorCode::DpkgFailed,
            "dpkg was interrupted and dpkg --configure -a could not repair it; nothing installed",
        ))
    }
}
