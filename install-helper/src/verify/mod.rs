//! Verification of a staged .deb before anything on the system changes.
//!
//! [`verify_package`] reads the package once ([`pass`]): while the bytes are read (and, in the
//! helper, written to its own copy), three consumers see them at the same time, and their
//! verdicts are then taken in this order, the first failure deciding:
//! 1. the ar structure and member order ([`ar`]) and the SHA-256 of the whole file; the
//!    compressed control member and `_` members are kept (bounded);
//! 2. the `_gpgorigin` signature ([`signature`]) over `debian-binary ‖ control.tar.* ‖
//!    data.tar.*` as debsigs makes it, hashed as the members stream by (the signature is read
//!    ahead, [`pass::prefetch_signature`]);
//! 3. the control file ([`control`]): Package, Version, Architecture required and valid;
//! 4. the policy ([`policy`]): name globs, architecture (host's or `all`);
//! 5. the content check ([`content`]): the data tarball is decompressed as it streams by
//!    (stopped as soon as the unpacked-size cap is passed); every entry is checked against
//!    the archive rules, the policy's `[content]` rules for this package ([`content_rules`])
//!    and, when a target root is given, where it would really land there ([`target`]). The
//!    same pass finds the `.service` units it ships; a corrupt data tarball is a `bad-archive`;
//! 6. the version order against the installed version ([`check_order`], identical to
//!    `dpkg --compare-versions`): a pure function of the verified fields, so the helper asks
//!    dpkg for the installed version only once it knows the name, and asks again under the
//!    frontend lock without reading the package again.
//!
//! Memory stays bounded: the control member (≤ 16 MiB compressed, ≤ 64 MiB uncompressed), `_`
//! members (≤ 1 MiB each) and a few queued chunks per consumer.
//!
//! An installed version that is not a valid Debian version cannot be ordered: the package is
//! refused as `not-newer` unless the policy allows both reinstall and downgrade.
//!
//! What the single pass gives up and its fallbacks: see [`pass`].

pub mod ar;
pub mod check;
pub mod content;
pub mod content_rules;
pub mod control;
pub mod head;
pub mod pass;
pub mod policy;
pub mod signature;
pub mod target;
pub mod version;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use install_api::ErrorCode;

pub use content::ContentKind;
pub use content_rules::ContentPolicy;
pub use policy::{Policy, PolicyError};
pub use signature::{KeyError, TrustedKey};
pub use target::TargetRoot;
pub use version::{Version, VersionError, compare_versions};

/// The member holding the origin signature.
pub const ORIGIN_SIGNATURE_MEMBER: &str = "_gpgorigin";

/// The helper's own unit. It is never in [`VerifiedPackage::units`]: restarting it would stop
/// the transaction that asked for the restart (the iocomd package ships it). A helper updated
/// that way runs its new binary from its next D-Bus activation (it exits when idle).
pub const HELPER_UNIT: &str = "iocom-install-helper.service";

/// A package that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedPackage {
    /// `Package`
    pub name: String,
    /// `Version`, as written.
    pub version: String,
    /// `Architecture`
    pub architecture: String,
    /// SHA-256 of the whole file, lowercase hex.
    pub sha256: String,
    /// Primary key fingerprint (uppercase hex) of the trusted signer; empty when the package
    /// is unsigned and the policy does not require a signature.
    pub signer: String,
    /// `Installed-Size` (KiB), if present.
    pub installed_size_kib: Option<u64>,
    /// Units to restart: those named in `X-Iocom-Units` (in order), then the `.service` units
    /// shipped in `lib/systemd/system/` or `usr/lib/systemd/system/` (sorted), no duplicates.
    pub units: Vec<String>,
    /// All control fields.
    pub control: BTreeMap<String, String>,
}

/// Why a package was refused. Every variant names the file or the package.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Reading the staged file failed.
    #[error("{path}: {source}")]
    Io {
        /// The staged file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Not a well-formed .deb.
    #[error("{path}: not a well-formed .deb: {reason}")]
    BadArchive {
        /// The staged file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Control file missing or invalid.
    #[error("{path}: bad control file: {reason}")]
    BadControl {
        /// The staged file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No `_gpgorigin` member and the policy requires one.
    #[error("{path}: no {ORIGIN_SIGNATURE_MEMBER} signature, and the policy requires one")]
    SignatureMissing {
        /// The staged file.
        path: PathBuf,
    },
    /// `_gpgorigin` is malformed or does not verify over the package contents.
    #[error("{path}: invalid origin signature: {reason}")]
    SignatureInvalid {
        /// The staged file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Signed by a key that is not trusted (or was not valid at signature time).
    #[error("{path}: untrusted signer: {reason}")]
    UntrustedSigner {
        /// The staged file.
        path: PathBuf,
        /// Who signed and why that is not accepted.
        reason: String,
    },
    /// The package name matches no allowed glob.
    #[error("package {package}: name not allowed by policy (allowed: {allowed})")]
    NameNotAllowed {
        /// The package name.
        package: String,
        /// The allowed globs, comma-separated.
        allowed: String,
    },
    /// The architecture is neither the host's nor `all`, or not allowed by policy.
    #[error("package {package}: architecture {architecture} not accepted on this {host} host")]
    WrongArchitecture {
        /// The package name.
        package: String,
        /// Its architecture.
        architecture: String,
        /// The host architecture.
        host: String,
    },
    /// The version is not newer than the installed one and policy does not allow it.
    #[error("package {package}: version {version} is {relation} installed {installed}")]
    NotNewer {
        /// The package name.
        package: String,
        /// Its version.
        version: String,
        /// The installed version.
        installed: String,
        /// "equal to" or "older than".
        relation: &'static str,
    },
    /// The data tarball holds an entry the content check refuses.
    #[error("package {package}: {entry}: {reason}")]
    Content {
        /// The package name.
        package: String,
        /// Which rule (gives the code).
        kind: ContentKind,
        /// The entry, as named in the archive.
        entry: String,
        /// What is wrong.
        reason: String,
    },
}

impl VerifyError {
    /// The message without the file's path, reason first: what a device reports about a
    /// package it refused (the helper's staging path means nothing to the sender, and the
    /// status signals have no room to spare). `Display` keeps the path for local use.
    pub fn reason(&self) -> String {
        match self {
            VerifyError::Io { source, .. } => format!("reading the package: {source}"),
            VerifyError::BadArchive { reason, .. } => format!("not a well-formed .deb: {reason}"),
            VerifyError::BadControl { reason, .. } => format!("bad control file: {reason}"),
            VerifyError::SignatureMissing { .. } => {
                format!("no {ORIGIN_SIGNATURE_MEMBER} signature, and the policy requires one")
            }
            VerifyError::SignatureInvalid { reason, .. } => {
                format!("invalid origin signature: {reason}")
            }
            VerifyError::UntrustedSigner { reason, .. } => format!("untrusted signer: {reason}"),
            // These name the package, not the file.
            other => other.to_string(),
        }
    }

    /// The stable error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            VerifyError::Io { .. } => ErrorCode::IoError,
            VerifyError::BadArchive { .. } => ErrorCode::BadArchive,
            VerifyError::BadControl { .. } => ErrorCode::BadControl,
            VerifyError::SignatureMissing { .. } => ErrorCode::SignatureMissing,
            VerifyError::SignatureInvalid { .. } => ErrorCode::SignatureInvalid,
            VerifyError::UntrustedSigner { .. } => ErrorCode::UntrustedSigner,
            VerifyError::NameNotAllowed { .. } => ErrorCode::NameNotAllowed,
            VerifyError::WrongArchitecture { .. } => ErrorCode::WrongArchitecture,
            VerifyError::NotNewer { .. } => ErrorCode::NotNewer,
            VerifyError::Content { kind, .. } => kind.code(),
        }
    }
}

/// Reads the given (offset, size) ranges of a file one after the other.
struct Ranges {
    file: BufReader<File>,
    ranges: std::vec::IntoIter<(u64, u64)>,
    left: u64,
}

impl Ranges {
    fn open(path: &Path, ranges: Vec<(u64, u64)>) -> io::Result<Ranges> {
        Ok(Ranges {
            file: BufReader::with_capacity(256 << 10, File::open(path)?),
            ranges: ranges.into_iter(),
            left: 0,
        })
    }
}

impl Read for Ranges {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.left == 0 {
            match self.ranges.next() {
                None => return Ok(0),
                Some((offset, size)) => {
                    self.file.seek(SeekFrom::Start(offset))?;
                    self.left = size;
                }
            }
        }
        let want = usize::try_from(self.left)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self.file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while being verified",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// The validated control fields of the package at `path` (structure and control only: no
/// signature, policy or version checks). The helper uses it on files it made itself.
pub fn read_control(path: &Path) -> Result<control::ControlInfo, VerifyError> {
    control_info(path, &scan_archive(path)?)
}

/// Step 1: the archive's structure, kept members and hash.
fn scan_archive(path: &Path) -> Result<ar::DebArchive, VerifyError> {
    let file = File::open(path).map_err(|source| VerifyError::Io {
        path: path.to_owned(),
        source,
    })?;
    match ar::scan(
        BufReader::with_capacity(256 << 10, file),
        &ar::Limits::default(),
    ) {
        Ok(a) => Ok(a),
        Err(ar::ArError::Io(source)) => Err(VerifyError::Io {
            path: path.to_owned(),
            source,
        }),
        Err(e) => Err(bad_archive(path, e.to_string())),
    }
}

/// Step 3: the control member, decompressed, parsed and validated.
fn control_info(
    path: &Path,
    archive: &ar::DebArchive,
) -> Result<control::ControlInfo, VerifyError> {
    let cm = archive.control_member();
    let ar::MemberKind::Control(ccomp) = cm.kind else {
        return Err(bad_archive(path, "internal: control member kind".into()));
    };
    control_from(path, &cm.name, ccomp, archive.control())
}

/// The control member `name` (compressed with `c`, contents `bytes`), parsed and validated.
fn control_from(
    path: &Path,
    name: &str,
    c: ar::Compression,
    bytes: &[u8],
) -> Result<control::ControlInfo, VerifyError> {
    let content_err = |e| control_error(path, e);
    let text = control::extract_control(name, c, bytes).map_err(content_err)?;
    control::parse_paragraph(&text)
        .and_then(control::validate)
        .map_err(content_err)
}

fn control_error(path: &Path, e: control::ContentError) -> VerifyError {
    match e {
        control::ContentError::Archive { .. } => bad_archive(path, e.to_string()),
        control::ContentError::Control(reason) => VerifyError::BadControl {
            path: path.to_owned(),
            reason,
        },
    }
}

fn bad_archive(path: &Path, reason: String) -> VerifyError {
    VerifyError::BadArchive {
        path: path.to_owned(),
        reason,
    }
}

/// Step 4: the policy's name globs, architecture and version order (also iocomd's early
/// refusal of a streamed package, [`head`]).
fn check_policy(
    info: &control::ControlInfo,
    policy: &Policy,
    host_arch: &str,
    installed_version: Option<&str>,
) -> Result<(), VerifyError> {
    if !policy.name_allowed(&info.package) {
        return Err(VerifyError::NameNotAllowed {
            package: info.package.clone(),
            allowed: policy.allowed_packages.join(", "),
        });
    }
    if !policy.architecture_allowed(&info.architecture, host_arch) {
        return Err(VerifyError::WrongArchitecture {
            package: info.package.clone(),
            architecture: info.architecture.clone(),
            host: host_arch.to_owned(),
        });
    }
    match installed_version {
        Some(installed) => order(&info.package, &info.version, installed, policy),
        None => Ok(()),
    }
}

/// The version order of `package` `version` against the installed version, by the policy's
/// `allow_reinstall` / `allow_downgrade`.
fn order(
    package: &str,
    version: &Version,
    installed: &str,
    policy: &Policy,
) -> Result<(), VerifyError> {
    // An unparsable installed version cannot be ordered: treat it as a refusal unless
    // both downgrade and reinstall are allowed.
    let ord = Version::parse(installed).map(|v| version.cmp(&v));
    let relation = match ord {
        Ok(std::cmp::Ordering::Greater) => None,
        Ok(std::cmp::Ordering::Equal) if policy.allow_reinstall => None,
        Ok(std::cmp::Ordering::Less) if policy.allow_downgrade => None,
        Err(_) if policy.allow_reinstall && policy.allow_downgrade => None,
        Ok(std::cmp::Ordering::Equal) => Some("equal to"),
        Ok(std::cmp::Ordering::Less) => Some("older than"),
        Err(_) => Some("not comparable with"),
    };
    match relation {
        None => Ok(()),
        Some(relation) => Err(VerifyError::NotNewer {
            package: package.to_owned(),
            version: version.to_string(),
            installed: installed.to_owned(),
            relation,
        }),
    }
}

/// Verifies the staged package at `path` against `policy` on a host of architecture
/// `host_arch`, given the currently installed version of the same package (if any).
/// See the module documentation for the order of checks. Without a target root, the content
/// check judges the archive alone.
pub fn verify_package(
    path: &Path,
    policy: &Policy,
    host_arch: &str,
    installed_version: Option<&str>,
) -> Result<VerifiedPackage, VerifyError> {
    verify_package_for(path, policy, host_arch, installed_version, None)
}

/// [`verify_package`] for installation into `target`: the content check also resolves where
/// each entry would land on that root ([`target`]). The helper always passes its target.
/// `path` must not change while it is read (the helper's own root-only copy, or a test file).
pub fn verify_package_for(
    path: &Path,
    policy: &Policy,
    host_arch: &str,
    installed_version: Option<&str>,
    target: Option<&TargetRoot>,
) -> Result<VerifiedPackage, VerifyError> {
    verify_steps(path, policy, host_arch, installed_version, target, true)
}

/// Every step, in one pass over `path` ([`pass`]); without `check_signature` a present
/// `_gpgorigin` is not verified (`iocomctl check` without a keyring, [`check::check`]). The
/// helper always checks it.
fn verify_steps(
    path: &Path,
    policy: &Policy,
    host_arch: &str,
    installed_version: Option<&str>,
    target: Option<&TargetRoot>,
    check_signature: bool,
) -> Result<VerifiedPackage, VerifyError> {
    let file = File::open(path).map_err(|source| VerifyError::Io {
        path: path.to_owned(),
        source,
    })?;
    let prefetch = if check_signature {
        pass::prefetch_signature(&file)
    } else {
        pass::Prefetch::Skip
    };
    let stream = BufReader::with_capacity(256 << 10, file);
    let pkg = pass::verify_stream(stream, prefetch, path, policy, host_arch, target)?;
    check_order(&pkg, policy, installed_version)?;
    Ok(pkg)
}

/// Step 6: the version of a verified package against the installed one (`None`: not
/// installed), by the policy's `allow_reinstall` / `allow_downgrade`.
pub fn check_order(
    pkg: &VerifiedPackage,
    policy: &Policy,
    installed: Option<&str>,
) -> Result<(), VerifyError> {
    let Some(installed) = installed else {
        return Ok(());
    };
    let version = Version::parse(&pkg.version).map_err(|e| VerifyError::BadControl {
        path: PathBuf::from(&pkg.name),
        reason: format!("Version {}: {e}", pkg.version),
    })?;
    order(&pkg.name, &version, installed, policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_types_can_move_to_worker_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Policy>();
        send_sync::<VerifiedPackage>();
        send_sync::<VerifyError>();
    }

    #[test]
    fn every_error_maps_to_its_code() {
        let p = PathBuf::from("/x.deb");
        let cases = [
            (
                VerifyError::BadArchive {
                    path: p.clone(),
                    reason: "r".into(),
                },
                ErrorCode::BadArchive,
            ),
            (
                VerifyError::BadControl {
                    path: p.clone(),
                    reason: "r".into(),
                },
                ErrorCode::BadControl,
            ),
            (
                VerifyError::SignatureMissing { path: p.clone() },
                ErrorCode::SignatureMissing,
            ),
            (
                VerifyError::SignatureInvalid {
                    path: p.clone(),
                    reason: "r".into(),
                },
                ErrorCode::SignatureInvalid,
            ),
            (
                VerifyError::UntrustedSigner {
                    path: p.clone(),
                    reason: "r".into(),
                },
                ErrorCode::UntrustedSigner,
            ),
            (
                VerifyError::Io {
                    path: p.clone(),
                    source: io::Error::other("e"),
                },
                ErrorCode::IoError,
            ),
        ];
        for (e, c) in cases {
            assert_eq!(e.code(), c);
            assert!(e.to_string().contains("/x.deb"), "{e}");
            assert!(!e.reason().contains("/x.deb"), "{}", e.reason());
            if !matches!(e, VerifyError::Io { .. }) {
                assert!(e.to_string().ends_with(&e.reason()), "{e}");
            }
        }
    }
}
