//! Stable error codes of the install helper.
//!
//! These codes are a public contract: iocomd, iocomctl and scripts react to them. Never renumber
//! or rename a code; add new ones at the end of their range.
//!
//! | code | number | meaning |
//! | --- | --- | --- |
//! | `ok` | 0 | installed and healthy |
//! | `not-authorized` | 1 | the caller is not allowed to use the helper |
//! | `bad-request` | 2 | malformed method call (bad fd, bad metadata) |
//! | `busy` | 3 | another transaction is running |
//! | `bad-archive` | 10 | not a well-formed .deb (ar structure, members, compression) |
//! | `bad-control` | 11 | control file missing or lacking/invalid Package, Version or Architecture |
//! | `signature-missing` | 20 | no `_gpgorigin` member |
//! | `signature-invalid` | 21 | `_gpgorigin` does not verify over the package contents |
//! | `untrusted-signer` | 22 | valid signature by a key that is not trusted |
//! | `name-not-allowed` | 30 | package name not allowed by policy |
//! | `wrong-architecture` | 31 | architecture is neither the host's nor `all` |
//! | `not-newer` | 32 | version not newer than installed (downgrade/reinstall not allowed) |
//! | `unmet-dependencies` | 40 | `apt-get --simulate` reports unmet dependencies |
//! | `no-space` | 41 | not enough free space for staging or installation |
//! | `dpkg-locked` | 42 | the dpkg frontend lock could not be taken before the deadline |
//! | `no-rollback-source` | 43 | the installed version is not cached and could not be repacked |
//! | `dpkg-failed` | 50 | dpkg failed and the previous state was restored (or there was none) |
//! | `unhealthy-rolled-back` | 60 | new version failed its health gate; previous version restored |
//! | `rollback-failed` | 61 | the rollback itself failed: manual attention needed |
//! | `io-error` | 90 | a local I/O error (path named in the message) |
//! | `internal` | 99 | a bug: please report |

use std::fmt;

/// A stable error code. See the module documentation for the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorCode {
    /// Installed and healthy.
    Ok,
    /// The caller is not allowed to use the helper.
    NotAuthorized,
    /// Malformed method call.
    BadRequest,
    /// Another transaction is running.
    Busy,
    /// Not a well-formed .deb.
    BadArchive,
    /// Control file missing or invalid.
    BadControl,
    /// No `_gpgorigin` member.
    SignatureMissing,
    /// `_gpgorigin` does not verify.
    SignatureInvalid,
    /// Signed by a key that is not trusted.
    UntrustedSigner,
    /// Package name not allowed by policy.
    NameNotAllowed,
    /// Architecture neither the host's nor `all`.
    WrongArchitecture,
    /// Version not newer than installed.
    NotNewer,
    /// Unmet dependencies.
    UnmetDependencies,
    /// Not enough free space.
    NoSpace,
    /// dpkg frontend lock not available in time.
    DpkgLocked,
    /// No package file of the installed version to roll back to (not cached, repack failed).
    NoRollbackSource,
    /// dpkg failed.
    DpkgFailed,
    /// Health gate failed; rolled back.
    UnhealthyRolledBack,
    /// Rollback failed.
    RollbackFailed,
    /// Local I/O error.
    IoError,
    /// A bug.
    Internal,
}

impl ErrorCode {
    /// Every code, in table order.
    pub const ALL: [ErrorCode; 21] = [
        ErrorCode::Ok,
        ErrorCode::NotAuthorized,
        ErrorCode::BadRequest,
        ErrorCode::Busy,
        ErrorCode::BadArchive,
        ErrorCode::BadControl,
        ErrorCode::SignatureMissing,
        ErrorCode::SignatureInvalid,
        ErrorCode::UntrustedSigner,
        ErrorCode::NameNotAllowed,
        ErrorCode::WrongArchitecture,
        ErrorCode::NotNewer,
        ErrorCode::UnmetDependencies,
        ErrorCode::NoSpace,
        ErrorCode::DpkgLocked,
        ErrorCode::NoRollbackSource,
        ErrorCode::DpkgFailed,
        ErrorCode::UnhealthyRolledBack,
        ErrorCode::RollbackFailed,
        ErrorCode::IoError,
        ErrorCode::Internal,
    ];

    /// The stable string form, e.g. `"signature-invalid"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Ok => "ok",
            ErrorCode::NotAuthorized => "not-authorized",
            ErrorCode::BadRequest => "bad-request",
            ErrorCode::Busy => "busy",
            ErrorCode::BadArchive => "bad-archive",
            ErrorCode::BadControl => "bad-control",
            ErrorCode::SignatureMissing => "signature-missing",
            ErrorCode::SignatureInvalid => "signature-invalid",
            ErrorCode::UntrustedSigner => "untrusted-signer",
            ErrorCode::NameNotAllowed => "name-not-allowed",
            ErrorCode::WrongArchitecture => "wrong-architecture",
            ErrorCode::NotNewer => "not-newer",
            ErrorCode::UnmetDependencies => "unmet-dependencies",
            ErrorCode::NoSpace => "no-space",
            ErrorCode::DpkgLocked => "dpkg-locked",
            ErrorCode::NoRollbackSource => "no-rollback-source",
            ErrorCode::DpkgFailed => "dpkg-failed",
            ErrorCode::UnhealthyRolledBack => "unhealthy-rolled-back",
            ErrorCode::RollbackFailed => "rollback-failed",
            ErrorCode::IoError => "io-error",
            ErrorCode::Internal => "internal",
        }
    }

    /// The stable number.
    pub const fn number(self) -> u16 {
        match self {
            ErrorCode::Ok => 0,
            ErrorCode::NotAuthorized => 1,
            ErrorCode::BadRequest => 2,
            ErrorCode::Busy => 3,
            ErrorCode::BadArchive => 10,
            ErrorCode::BadControl => 11,
            ErrorCode::SignatureMissing => 20,
            ErrorCode::SignatureInvalid => 21,
            ErrorCode::UntrustedSigner => 22,
            ErrorCode::NameNotAllowed => 30,
            ErrorCode::WrongArchitecture => 31,
            ErrorCode::NotNewer => 32,
            ErrorCode::UnmetDependencies => 40,
            ErrorCode::NoSpace => 41,
            ErrorCode::DpkgLocked => 42,
            ErrorCode::NoRollbackSource => 43,
            ErrorCode::DpkgFailed => 50,
            ErrorCode::UnhealthyRolledBack => 60,
            ErrorCode::RollbackFailed => 61,
            ErrorCode::IoError => 90,
            ErrorCode::Internal => 99,
        }
    }

    /// Parses the string form.
    pub fn from_str_code(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Parses the number.
    pub fn from_number(n: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.number() == n)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn strings_and_numbers_are_unique_and_round_trip() {
        let mut names = HashSet::new();
        let mut numbers = HashSet::new();
        for c in ErrorCode::ALL {
            assert!(names.insert(c.as_str()), "duplicate name {c}");
            assert!(
                numbers.insert(c.number()),
                "duplicate number {}",
                c.number()
            );
            assert_eq!(ErrorCode::from_str_code(c.as_str()), Some(c));
            assert_eq!(ErrorCode::from_number(c.number()), Some(c));
        }
        assert_eq!(ErrorCode::from_str_code("nope"), None);
        assert_eq!(ErrorCode::from_number(7), None);
    }

    #[test]
    fn module_doc_table_lists_every_code() {
        let src = include_str!("error.rs");
        for c in ErrorCode::ALL {
            let row = format!("| `{}` | {} |", c.as_str(), c.number());
            assert!(src.contains(&row), "doc table lacks row {row}");
        }
    }
}
