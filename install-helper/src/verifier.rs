//! The production [`Verifier`]: `verify::verify_package` with the install policy.
//!
//! The package is verified in the one pass that copies it; the not-newer check is separate
//! ([`crate::verify::check_order`]), on the name and version verification extracted, so the
//! package is never read again for it.
//! The content check resolves entries against the verifier's target root: the system root
//! unless [`PolicyVerifier::for_target`] names the isolated root the helper installs into.

use std::path::Path;

use crate::paths::Paths;
use crate::txn::{Candidate, Refusal, Verifier};
use crate::verify::pass::{self, Prefetch};
use crate::verify::{Policy, PolicyError, TargetRoot, VerifyError, check_order};

/// Verifies with a loaded policy for one host architecture.
#[derive(Debug)]
pub struct PolicyVerifier {
    policy: Policy,
    host_arch: String,
    target: TargetRoot,
}

impl PolicyVerifier {
    /// Loads the policy at `path`.
    pub fn load(path: &Path, host_arch: &str) -> Result<Self, PolicyError> {
        Ok(PolicyVerifier::new(Policy::load(path)?, host_arch))
    }

    /// Wraps an already loaded policy.
    pub fn new(policy: Policy, host_arch: &str) -> Self {
        let prod = Paths::production();
        PolicyVerifier {
            policy,
            host_arch: host_arch.to_string(),
            target: TargetRoot::new(&prod.root, &prod.admindir),
        }
    }

    /// The same verifier for installing into the dpkg root of `paths`.
    pub fn for_target(mut self, paths: &Paths) -> Self {
        self.target = TargetRoot::new(&paths.root, &paths.admindir);
        self
    }
}

/// The refusal of a package: its stable code, and the reason without the helper's staging
/// path (the sender sees this message in the device's status).
fn refusal(e: VerifyError) -> Refusal {
    Refusal::new(e.code(), e.reason())
}

impl Verifier for PolicyVerifier {
    fn verify_stream(
        &self,
        stream: &mut dyn std::io::Read,
        source: Option<&std::fs::File>,
        copy: &Path,
    ) -> Result<Candidate, Refusal> {
        let prefetch = source.map_or(Prefetch::Unknown, pass::prefetch_signature);
        pass::verify_stream(
            stream,
            prefetch,
            copy,
            &self.policy,
            &self.host_arch,
            Some(&self.target),
        )
        .map_err(refusal)
    }

    fn check_order(&self, cand: &Candidate, installed: Option<&str>) -> Result<(), Refusal> {
        check_order(cand, &self.policy, installed).map_err(refusal)
    }

    fn policy_summary(&self) -> Option<install_api::PolicySummary> {
        Some(install_api::PolicySummary {
            host_arch: self.host_arch.clone(),
            allowed_packages: self.policy.allowed_packages.clone(),
            architectures: self.policy.architectures.clone(),
            allow_downgrade: self.policy.allow_downgrade,
            allow_reinstall: self.policy.allow_reinstall,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_gives_the_reason_first_and_no_staging_path() {
        let staged = "/var/lib/iocom-install-helper/staging/1796162232-007170-3.deb";
        let r = refusal(VerifyError::UntrustedSigner {
            path: staged.into(),
            reason: "signed by key 0123ABCD, which is not trusted".into(),
        });
        assert_eq!(r.code, install_api::ErrorCode::UntrustedSigner);
        assert!(r.message.starts_with("untrusted signer: "), "{}", r.message);
        assert!(!r.message.contains("staging"), "{}", r.message);
    }
}
