//! The production [`Verifier`]: `verify::verify_package` with the install policy.
//!
//! The installed version needed for the not-newer check is looked up by the package name that
//! verification itself extracted: verify once without it, and if the package is installed,
//! verify again with its version (a few milliseconds; no unverified field is ever used).

use std::path::Path;

use crate::txn::{Candidate, Refusal, Verifier};
use crate::verify::{Policy, PolicyError, VerifyError, verify_package};

/// Verifies with a loaded policy for one host architecture.
#[derive(Debug)]
pub struct PolicyVerifier {
    policy: Policy,
    host_arch: String,
}

impl PolicyVerifier {
    /// Loads the policy at `path`.
    pub fn load(path: &Path, host_arch: &str) -> Result<Self, PolicyError> {
        Ok(PolicyVerifier {
            policy: Policy::load(path)?,
            host_arch: host_arch.to_string(),
        })
    }

    /// Wraps an already loaded policy.
    pub fn new(policy: Policy, host_arch: &str) -> Self {
        PolicyVerifier {
            policy,
            host_arch: host_arch.to_string(),
        }
    }
}

fn refusal(e: VerifyError) -> Refusal {
    Refusal::new(e.code(), e.to_string())
}

impl Verifier for PolicyVerifier {
    fn verify(
        &self,
        path: &Path,
        installed: &dyn Fn(&str) -> Result<Option<String>, Refusal>,
    ) -> Result<Candidate, Refusal> {
        let first = verify_package(path, &self.policy, &self.host_arch, None).map_err(refusal)?;
        match installed(&first.name)? {
            None => Ok(first),
            Some(iv) => {
                verify_package(path, &self.policy, &self.host_arch, Some(&iv)).map_err(refusal)
            }
        }
    }
}
