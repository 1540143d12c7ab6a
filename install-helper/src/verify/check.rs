//! Checking a package before it is sent (`iocomctl check FILE`, like `rauc info`): the same
//! verification the helper runs ([`super::verify_package`]), with a policy made for the
//! question asked instead of the device's:
//!
//! - with keyrings: the origin signature must verify against one of their keys (unsigned is
//!   refused: `signature-missing`);
//! - without: a present signature is not checked (reported as such), unsigned is allowed;
//! - with a device's install policy file: exactly that policy (names, signature, content);
//! - the architecture is checked only when one is given (the package's own otherwise);
//! - no installed version: the version order is the device's to judge.
//!
//! The result is the verified package (control fields, hash, signer, units) or the refusal
//! with the helper's stable code.

use std::path::{Path, PathBuf};

use super::{
    ContentPolicy, KeyError, ORIGIN_SIGNATURE_MEMBER, Policy, PolicyError, TrustedKey,
    VerifiedPackage, VerifyError,
};

/// What to check against.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Keyring files (OpenPGP certificates, armored or binary) the signer must be in.
    pub keyrings: Vec<PathBuf>,
    /// A device's install policy file to apply whole (its own keys; `keyrings` add to them).
    pub policy: Option<PathBuf>,
    /// The device's architecture (default: accept the package's own).
    pub architecture: Option<String>,
}

/// The origin signature as checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureCheck {
    /// Verified: made by this trusted key (fingerprint).
    Verified(String),
    /// Present but not checked (no keyring given).
    NotChecked,
    /// No `_gpgorigin` member.
    Unsigned,
}

/// A package that passed.
#[derive(Debug, Clone)]
pub struct Checked {
    /// What verification found.
    pub package: VerifiedPackage,
    /// The signature.
    pub signature: SignatureCheck,
}

/// Why the check could not run, or the package did not pass.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// A keyring cannot be used.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The policy file cannot be used.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The package was refused (the code is the helper's).
    #[error(transparent)]
    Refused(#[from] VerifyError),
}

/// Checks the package at `path`.
pub fn check(path: &Path, opts: &CheckOptions) -> Result<Checked, CheckError> {
    let mut keys = Vec::new();
    for k in &opts.keyrings {
        keys.extend(TrustedKey::from_file(k)?);
    }
    let with_keys = !keys.is_empty();
    let mut policy = match &opts.policy {
        Some(p) => Policy::load(p)?,
        None => Policy {
            allowed_packages: vec!["*".into()],
            architectures: None,
            allow_downgrade: true,
            allow_reinstall: true,
            require_signature: with_keys,
            trusted_keys: Vec::new(),
            content: ContentPolicy::default(),
            source: PathBuf::from("iocomctl check"),
        },
    };
    policy.trusted_keys.extend(keys);
    let check_signature = with_keys || opts.policy.is_some();
    let archive = super::scan_archive(path)?;
    let signed = archive.extra(ORIGIN_SIGNATURE_MEMBER).is_some();
    let host = match &opts.architecture {
        Some(a) => a.clone(),
        None => super::control_info(path, &archive)?.architecture,
    };
    let package = super::verify_steps(path, &policy, &host, None, None, check_signature)?;
    let signature = match (signed, check_signature) {
        (false, _) => SignatureCheck::Unsigned,
        (true, false) => SignatureCheck::NotChecked,
        (true, true) => SignatureCheck::Verified(package.signer.clone()),
    };
    Ok(Checked { package, signature })
}
