//! The early refusal of a package while it is still arriving (iocomd's stream path): the head
//! of a .deb holds `debian-binary` and the control member, so its structure, its control
//! fields and the policy's name, architecture and version rules are judged after the first
//! kilobytes, with the same code as the full verification ([`super::ar::scan_head`],
//! [`super::control`], `check_policy`). What needs the whole file (hash, origin signature,
//! content) stays the helper's, which verifies every package in full all the same.
//!
//! The policy comes from the helper ([`install_api::PolicySummary`] in its `Status()`), the
//! installed version from the packages it manages; without them only the structure and the
//! control fields are judged.

use std::path::PathBuf;

use install_api::{ErrorCode, PolicySummary};

use super::{ContentPolicy, Policy, VerifyError, ar};

/// What the head says so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadVerdict {
    /// The control member has not arrived completely yet.
    NeedMore,
    /// Nothing in the head is refused: name, version and architecture of the package.
    Passed {
        /// `Package`.
        package: String,
        /// `Version`.
        version: String,
        /// `Architecture`.
        architecture: String,
    },
    /// Refused: the helper's code and the reason (no path: it is the stream's).
    Refused {
        /// The stable code.
        code: ErrorCode,
        /// Why.
        reason: String,
        /// Package and version, when the control fields were read.
        package: Option<(String, String)>,
    },
}

fn refused(e: &VerifyError, package: Option<(String, String)>) -> HeadVerdict {
    HeadVerdict::Refused {
        code: e.code(),
        reason: e.reason(),
        package,
    }
}

/// Judges the first bytes of a .deb. `installed` gives the installed version of a package
/// name (as the helper knows it).
pub fn judge_head(
    head: &[u8],
    policy: Option<&PolicySummary>,
    installed: &dyn Fn(&str) -> Option<String>,
) -> HeadVerdict {
    let stream = PathBuf::from("the stream");
    let control = match ar::scan_head(head, &ar::Limits::default()) {
        Ok(None) => return HeadVerdict::NeedMore,
        Ok(Some(c)) => c,
        Err(e) => return refused(&super::bad_archive(&stream, e.to_string()), None),
    };
    let info =
        match super::control::extract_control(&control.name, control.compression, control.data)
            .and_then(|text| super::control::parse_paragraph(&text))
            .and_then(super::control::validate)
        {
            Ok(i) => i,
            Err(e) => return refused(&super::control_error(&stream, e), None),
        };
    let named = Some((info.package.clone(), info.version.to_string()));
    if let Some(p) = policy {
        let policy = Policy {
            allowed_packages: p.allowed_packages.clone(),
            architectures: p.architectures.clone(),
            allow_downgrade: p.allow_downgrade,
            allow_reinstall: p.allow_reinstall,
            require_signature: false,
            trusted_keys: Vec::new(),
            content: ContentPolicy::default(),
            source: PathBuf::from("the helper's policy"),
        };
        let iv = installed(&info.package);
        if let Err(e) = super::check_policy(&info, &policy, &p.host_arch, iv.as_deref()) {
            return refused(&e, named);
        }
    }
    HeadVerdict::Passed {
        package: info.package,
        version: info.version.to_string(),
        architecture: info.architecture,
    }
}
