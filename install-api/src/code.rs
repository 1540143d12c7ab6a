//! Stable result codes: the helper's [`ErrorCode`]s (numbers below 200), iocomd's own
//! [`DaemonCode`]s (from 200), and [`ResultCode`], either of them as published in iocomd's
//! status signals. Each code is one row of a table below; its string, number, human text,
//! [`Class`], D-Bus error name and `tod_err` are derived from that row.
//!
//! `tod_err` of a helper code: the verdict arrives after the transfer, when a reference
//! controller (ispy's program window) shows `status()`, which names only 6, 104, 140, 142, 168,
//! 186, 188 and 204 ("code = N" otherwise); each helper code takes the one whose text tells the
//! user most (docs/architecture.md). Daemon codes are decided while the stream runs, when the
//! reference controller shows no `status()`; they keep our own 210–213 for iocomctl.
//!
//! These codes are a public contract: iocomd, iocomctl, scripts and fleet servers react to them.
//! Never renumber or rename a code; add new ones at the end of their range.
//!
//! | code | number | class | tod_err | meaning |
//! | --- | --- | --- | --- | --- |
//! | `ok` | 0 | ok | 6 | installed and healthy |
//! | `not-authorized` | 1 | install-failed | 186 | the caller is not allowed to use the helper |
//! | `bad-request` | 2 | install-failed | 168 | malformed method call (bad fd, bad metadata) |
//! | `busy` | 3 | busy | 188 | another transaction is running |
//! | `bad-archive` | 10 | refused | 140 | not a well-formed .deb (ar structure, members, compression) |
//! | `bad-control` | 11 | refused | 140 | control file missing or lacking/invalid Package, Version or Architecture |
//! | `content-hard-link` | 12 | refused | 168 | data.tar hard link to something that is not an earlier regular file of it |
//! | `content-special-file` | 13 | refused | 168 | data.tar device node, FIFO or entry type dpkg does not install |
//! | `content-setuid` | 14 | refused | 168 | data.tar setuid/setgid file the policy does not allow |
//! | `content-unsafe-path` | 15 | refused | 168 | data.tar name absolute, with `..`, not UTF-8, or twice |
//! | `content-symlink-escape` | 16 | refused | 168 | data.tar entry through a symlink, or a symlink leading out of the root |
//! | `content-path-denied` | 17 | refused | 168 | data.tar path outside the allowed prefixes or denied by the policy |
//! | `content-too-large` | 18 | refused | 168 | data.tar unpacks to more than the cap derived from Installed-Size |
//! | `signature-missing` | 20 | refused | 186 | no `_gpgorigin` member |
//! | `signature-invalid` | 21 | refused | 186 | `_gpgorigin` does not verify over the package contents |
//! | `untrusted-signer` | 22 | refused | 186 | valid signature by a key that is not trusted |
//! | `name-not-allowed` | 30 | refused | 186 | package name not allowed by policy |
//! | `wrong-architecture` | 31 | refused | 168 | architecture is neither the host's nor `all` |
//! | `not-newer` | 32 | refused | 168 | version not newer than installed (downgrade/reinstall not allowed) |
//! | `unmet-dependencies` | 40 | refused | 168 | `apt-get --simulate` reports unmet dependencies |
//! | `no-space` | 41 | refused | 142 | not enough free space for staging or installation |
//! | `dpkg-locked` | 42 | busy | 188 | the dpkg frontend lock could not be taken before the deadline |
//! | `no-rollback-source` | 43 | refused | 168 | the installed version is not cached and could not be repacked |
//! | `dpkg-failed` | 50 | install-failed | 168 | dpkg failed and the previous state was restored (or there was none) |
//! | `unhealthy-rolled-back` | 60 | install-failed | 168 | new version failed its health gate; previous version restored |
//! | `rollback-failed` | 61 | install-failed | 168 | the rollback itself failed: manual attention needed |
//! | `io-error` | 90 | install-failed | 168 | a local I/O error (path named in the message) |
//! | `internal` | 99 | install-failed | 168 | a bug: please report |
//! | `crc-mismatch` | 200 | transfer | 204 | the stream's CRC-16 did not match the data |
//! | `too-large` | 201 | transfer | 211 | the package exceeds the configured size limit |
//! | `no-space` | 202 | transfer | 142 | not enough free space in the spool (reserve kept) |
//! | `busy` | 203 | busy | 212 | another update is running; this one was refused |
//! | `interrupted` | 204 | transfer | 213 | the controller interrupted the stream, dropped the connection or stalled |
//! | `not-authorized` | 205 | auth | 186 | the peer is not authenticated for pushes |
//! | `helper-unavailable` | 206 | install-failed | 188 | the install helper could not be reached or failed to answer |
//! | `spool-error` | 207 | transfer | 142 | writing the spool file failed |
//! | `bad-select` | 208 | refused | 210 | a stream select other than 1 (program) |

use crate::tod_err;
use std::fmt;

/// What a result means to the one who sent the package (iocomctl's exit status follows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Installed and healthy.
    Ok,
    /// The sender is not authenticated or not authorized.
    Auth,
    /// Another update runs; try again later.
    Busy,
    /// The package did not arrive intact (CRC, size, space, interrupted).
    Transfer,
    /// The package was refused before anything changed (signature, policy, version, archive).
    Refused,
    /// The install failed, was rolled back, or the installer is unavailable.
    InstallFailed,
}

impl Class {
    /// The class of a result number this reader does not know (from a newer helper or
    /// daemon), by the ranges new codes are added in: 10–49 refusals before anything
    /// changed, everything else an install failure.
    pub const fn of_unknown(number: u16) -> Class {
        match number {
            10..=49 => Class::Refused,
            _ => Class::InstallFailed,
        }
    }

    /// Lower-case name, as in the table.
    pub const fn as_str(self) -> &'static str {
        match self {
            Class::Ok => "ok",
            Class::Auth => "auth",
            Class::Busy => "busy",
            Class::Transfer => "transfer",
            Class::Refused => "refused",
            Class::InstallFailed => "install-failed",
        }
    }
}

/// Defines a code enum and its table in one place.
macro_rules! code_table {
    (
        $(#[$meta:meta])* $ty:ident {
            $( $(#[$doc:meta])* $var:ident = $num:literal, $name:literal, $class:ident, $tod:ident, $text:literal; )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $ty { $( $(#[$doc])* $var, )* }

        impl $ty {
            /// Every code, in table order.
            pub const ALL: &'static [$ty] = &[ $( $ty::$var, )* ];

            /// The stable string form, e.g. `"signature-invalid"`.
            pub const fn as_str(self) -> &'static str {
                match self { $( $ty::$var => $name, )* }
            }

            /// The stable number.
            pub const fn number(self) -> u16 {
                match self { $( $ty::$var => $num, )* }
            }

            /// What the code means, in a few words.
            pub const fn text(self) -> &'static str {
                match self { $( $ty::$var => $text, )* }
            }

            /// What the result means to the sender.
            pub const fn class(self) -> Class {
                match self { $( $ty::$var => Class::$class, )* }
            }

            /// The `tod_err` an IOCOM controller (e.g. iocafe's ispy) is shown for this result.
            pub const fn tod_err(self) -> u8 {
                match self { $( $ty::$var => tod_err::$tod, )* }
            }

            /// The CamelCase form used in D-Bus error names, e.g. `SignatureInvalid`.
            pub const fn camel(self) -> &'static str {
                match self { $( $ty::$var => stringify!($var), )* }
            }

            /// Parses the string form.
            pub fn from_str_code(s: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|c| c.as_str() == s)
            }

            /// Parses the number.
            pub fn from_number(n: u16) -> Option<Self> {
                Self::ALL.iter().copied().find(|c| c.number() == n)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

code_table! {
    /// A stable result code of the install helper (numbers below 200).
    ErrorCode {
        /// Installed and healthy.
        Ok = 0, "ok", Ok, COMPLETED, "installed and healthy";
        /// The caller is not allowed to use the helper.
        NotAuthorized = 1, "not-authorized", InstallFailed, NO_ACCESS_RIGHT, "the caller is not allowed to use the install helper";
        /// Malformed method call.
        BadRequest = 2, "bad-request", InstallFailed, PROGRAM_INSTALLATION_FAILED, "malformed request to the install helper";
        /// Another transaction is running.
        Busy = 3, "busy", Busy, FAILED_TO_START_PROCESS, "another installation is running";
        /// Not a well-formed .deb.
        BadArchive = 10, "bad-archive", Refused, READING_FILE_FAILED, "not a well-formed Debian package";
        /// Control file missing or invalid.
        BadControl = 11, "bad-control", Refused, READING_FILE_FAILED, "the package's control file is missing or invalid";
        /// data.tar hard link whose target is not an earlier regular file of the archive.
        ContentHardLink = 12, "content-hard-link", Refused, PROGRAM_INSTALLATION_FAILED, "the package holds a hard link to a file outside it";
        /// data.tar device node, FIFO or unsupported entry type.
        ContentSpecialFile = 13, "content-special-file", Refused, PROGRAM_INSTALLATION_FAILED, "the package holds a device node or FIFO";
        /// data.tar setuid/setgid file not allowed by the policy.
        ContentSetuid = 14, "content-setuid", Refused, PROGRAM_INSTALLATION_FAILED, "the package holds a setuid/setgid file the policy does not allow";
        /// data.tar name that is absolute, has `..`, is not UTF-8 or appears twice.
        ContentUnsafePath = 15, "content-unsafe-path", Refused, PROGRAM_INSTALLATION_FAILED, "the package holds an unsafe file name";
        /// data.tar entry written through a symlink, or a symlink leading out of the root.
        ContentSymlinkEscape = 16, "content-symlink-escape", Refused, PROGRAM_INSTALLATION_FAILED, "the package would write through or plant an escaping symlink";
        /// data.tar path outside the allowed prefixes or denied by the policy.
        ContentPathDenied = 17, "content-path-denied", Refused, PROGRAM_INSTALLATION_FAILED, "the package installs a file where the policy does not allow it";
        /// data.tar unpacks to more than the cap.
        ContentTooLarge = 18, "content-too-large", Refused, PROGRAM_INSTALLATION_FAILED, "the package unpacks to far more than its Installed-Size";
        /// No `_gpgorigin` member.
        SignatureMissing = 20, "signature-missing", Refused, NO_ACCESS_RIGHT, "the package is not signed";
        /// `_gpgorigin` does not verify.
        SignatureInvalid = 21, "signature-invalid", Refused, NO_ACCESS_RIGHT, "the package signature does not verify";
        /// Signed by a key that is not trusted.
        UntrustedSigner = 22, "untrusted-signer", Refused, NO_ACCESS_RIGHT, "the package is signed by a key that is not trusted";
        /// Package name not allowed by policy.
        NameNotAllowed = 30, "name-not-allowed", Refused, NO_ACCESS_RIGHT, "the install policy does not allow this package name";
        /// Architecture neither the host's nor `all`.
        WrongArchitecture = 31, "wrong-architecture", Refused, PROGRAM_INSTALLATION_FAILED, "the package is for another architecture";
        /// Version not newer than installed.
        NotNewer = 32, "not-newer", Refused, PROGRAM_INSTALLATION_FAILED, "the version is not newer than the installed one";
        /// Unmet dependencies.
        UnmetDependencies = 40, "unmet-dependencies", Refused, PROGRAM_INSTALLATION_FAILED, "the package's dependencies are not met";
        /// Not enough free space.
        NoSpace = 41, "no-space", Refused, WRITING_FILE_FAILED, "not enough free space on the device";
        /// dpkg frontend lock not available in time.
        DpkgLocked = 42, "dpkg-locked", Busy, FAILED_TO_START_PROCESS, "another package manager holds the dpkg lock";
        /// No package file of the installed version to roll back to (not cached, repack failed).
        NoRollbackSource = 43, "no-rollback-source", Refused, PROGRAM_INSTALLATION_FAILED, "the installed version cannot be kept for a rollback";
        /// dpkg failed.
        DpkgFailed = 50, "dpkg-failed", InstallFailed, PROGRAM_INSTALLATION_FAILED, "dpkg failed; the previous state was restored";
        /// Health gate failed; rolled back.
        UnhealthyRolledBack = 60, "unhealthy-rolled-back", InstallFailed, PROGRAM_INSTALLATION_FAILED, "the new version was not healthy; the previous version was restored";
        /// Rollback failed.
        RollbackFailed = 61, "rollback-failed", InstallFailed, PROGRAM_INSTALLATION_FAILED, "the rollback failed: manual attention needed";
        /// Local I/O error.
        IoError = 90, "io-error", InstallFailed, PROGRAM_INSTALLATION_FAILED, "a local I/O error on the device";
        /// A bug.
        Internal = 99, "internal", InstallFailed, PROGRAM_INSTALLATION_FAILED, "an internal error of the install helper";
    }
}

code_table! {
    /// A result code of iocomd itself (numbers from 200): the package never reached the helper.
    DaemonCode {
        /// The stream's CRC-16 did not match the data.
        CrcMismatch = 200, "crc-mismatch", Transfer, CHECKSUM_ERROR, "the package arrived corrupted (CRC mismatch)";
        /// The package exceeds the configured size limit.
        TooLarge = 201, "too-large", Transfer, TOO_LARGE, "the package exceeds the device's size limit";
        /// Not enough free space in the spool (reserve kept).
        NoSpace = 202, "no-space", Transfer, WRITING_FILE_FAILED, "not enough free space to receive the package";
        /// Another update is running; this one was refused.
        Busy = 203, "busy", Busy, BUSY, "another update is running";
        /// The sender interrupted the transfer, dropped the connection or stalled.
        Interrupted = 204, "interrupted", Transfer, INTERRUPTED, "the transfer was interrupted";
        /// The peer is not authenticated for pushes.
        NotAuthorized = 205, "not-authorized", Auth, NO_ACCESS_RIGHT, "this connection may not push packages";
        /// The install helper could not be reached or failed to answer.
        HelperUnavailable = 206, "helper-unavailable", InstallFailed, FAILED_TO_START_PROCESS, "the install helper is not available";
        /// Writing the spool file failed.
        SpoolError = 207, "spool-error", Transfer, WRITING_FILE_FAILED, "writing the package to disk failed";
        /// A stream select other than 1 (program).
        BadSelect = 208, "bad-select", Refused, REJECTED, "only stream select 1 (program) is supported";
    }
}

impl ErrorCode {
    /// The D-Bus error name, e.g. `org.iocom.InstallHelper1.Error.DpkgLocked`.
    pub fn dbus_name(self) -> String {
        format!("{}.{}", crate::ERROR_PREFIX, self.camel())
    }

    /// The code of a helper D-Bus error name (`None` for other errors).
    pub fn from_dbus_name(name: &str) -> Option<Self> {
        let camel = name.strip_prefix(crate::ERROR_PREFIX)?.strip_prefix('.')?;
        Self::ALL.iter().copied().find(|c| c.camel() == camel)
    }
}

/// A published result: the helper's or iocomd's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResultCode {
    /// From the install helper.
    Helper(ErrorCode),
    /// From iocomd.
    Daemon(DaemonCode),
}

impl ResultCode {
    /// Success.
    pub const OK: ResultCode = ResultCode::Helper(ErrorCode::Ok);

    /// The number published in `upd_result`.
    pub const fn number(self) -> u16 {
        match self {
            ResultCode::Helper(c) => c.number(),
            ResultCode::Daemon(c) => c.number(),
        }
    }

    /// The string published in `upd_code`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ResultCode::Helper(c) => c.as_str(),
            ResultCode::Daemon(c) => c.as_str(),
        }
    }

    /// What the code means, in a few words.
    pub const fn text(self) -> &'static str {
        match self {
            ResultCode::Helper(c) => c.text(),
            ResultCode::Daemon(c) => c.text(),
        }
    }

    /// What the result means to the sender.
    pub const fn class(self) -> Class {
        match self {
            ResultCode::Helper(c) => c.class(),
            ResultCode::Daemon(c) => c.class(),
        }
    }

    /// The `tod_err` shown to IOCOM controllers.
    pub const fn tod_err(self) -> u8 {
        match self {
            ResultCode::Helper(c) => c.tod_err(),
            ResultCode::Daemon(c) => c.tod_err(),
        }
    }

    /// The code with this number.
    pub fn from_number(n: u16) -> Option<Self> {
        ErrorCode::from_number(n)
            .map(ResultCode::Helper)
            .or_else(|| DaemonCode::from_number(n).map(ResultCode::Daemon))
    }

    /// The code for a number and string as a controller reads them: the number decides when
    /// known, else the string (helper codes first: `busy` and `no-space` exist in both).
    pub fn from_parts(number: Option<u16>, code: &str) -> Option<Self> {
        number.and_then(Self::from_number).or_else(|| {
            ErrorCode::from_str_code(code)
                .map(ResultCode::Helper)
                .or_else(|| DaemonCode::from_str_code(code).map(ResultCode::Daemon))
        })
    }
}

impl From<ErrorCode> for ResultCode {
    fn from(c: ErrorCode) -> Self {
        ResultCode::Helper(c)
    }
}

impl From<DaemonCode> for ResultCode {
    fn from(c: DaemonCode) -> Self {
        ResultCode::Daemon(c)
    }
}

impl fmt::Display for ResultCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn kebab_to_camel(s: &str) -> String {
        s.split('-')
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_uppercase().chain(c).collect::<String>())
                    .unwrap_or_default()
            })
            .collect()
    }

    #[test]
    fn strings_and_numbers_are_unique_and_round_trip() {
        let mut numbers = HashSet::new();
        let mut names = HashSet::new();
        for c in ErrorCode::ALL {
            assert!(names.insert(c.as_str()), "duplicate name {c}");
            assert!(
                numbers.insert(c.number()),
                "duplicate number {}",
                c.number()
            );
            assert!(c.number() < 200);
            assert_eq!(ErrorCode::from_str_code(c.as_str()), Some(*c));
            assert_eq!(ErrorCode::from_number(c.number()), Some(*c));
            // The D-Bus names are what 0.1 helpers sent: CamelCase of the kebab name.
            assert_eq!(c.camel(), kebab_to_camel(c.as_str()));
            assert_eq!(ErrorCode::from_dbus_name(&c.dbus_name()), Some(*c));
        }
        let mut daemon_names = HashSet::new();
        for c in DaemonCode::ALL {
            assert!(daemon_names.insert(c.as_str()));
            assert!(
                numbers.insert(c.number()),
                "duplicate number {}",
                c.number()
            );
            assert!(c.number() >= 200);
            assert_eq!(
                ResultCode::from_number(c.number()),
                Some(ResultCode::Daemon(*c))
            );
        }
        assert_eq!(ErrorCode::from_str_code("nope"), None);
        assert_eq!(ErrorCode::from_number(7), None);
        assert_eq!(
            ErrorCode::from_dbus_name("org.freedesktop.DBus.Error.Failed"),
            None
        );
        assert_eq!(
            ErrorCode::from_dbus_name("org.iocom.InstallHelper1.ErrorBusy"),
            None
        );
    }

    #[test]
    fn the_module_table_lists_every_code_with_its_derived_columns() {
        let src = include_str!("code.rs");
        let rows = ErrorCode::ALL
            .iter()
            .map(|c| ResultCode::Helper(*c))
            .chain(DaemonCode::ALL.iter().map(|c| ResultCode::Daemon(*c)));
        for c in rows {
            let row = format!(
                "| `{}` | {} | {} | {} |",
                c.as_str(),
                c.number(),
                c.class().as_str(),
                c.tod_err()
            );
            assert!(src.contains(&row), "doc table lacks row {row}");
        }
    }

    #[test]
    fn every_helper_verdict_has_a_tod_err_whose_text_ispy_shows() {
        // `Stream_status()` of iocompython names these; any other reads "code = N".
        let shown = [6, 104, 140, 142, 168, 186, 188, 204];
        for c in ErrorCode::ALL {
            assert!(shown.contains(&c.tod_err()), "{c}: {}", c.tod_err());
        }
        assert_eq!(
            ErrorCode::NotNewer.tod_err(),
            tod_err::PROGRAM_INSTALLATION_FAILED
        );
        assert_eq!(
            ErrorCode::BadControl.tod_err(),
            tod_err::READING_FILE_FAILED
        );
        assert_eq!(
            ErrorCode::DpkgLocked.tod_err(),
            tod_err::FAILED_TO_START_PROCESS
        );
    }

    #[test]
    fn only_ok_is_ok_and_failures_never_read_as_success_or_pending() {
        for c in ErrorCode::ALL
            .iter()
            .map(|c| ResultCode::Helper(*c))
            .chain(DaemonCode::ALL.iter().map(|c| ResultCode::Daemon(*c)))
        {
            let ok = c == ResultCode::OK;
            assert_eq!(c.class() == Class::Ok, ok, "{c}");
            assert_eq!(c.tod_err() == tod_err::COMPLETED, ok, "{c}");
            assert_ne!(c.tod_err(), tod_err::PENDING);
            assert_ne!(c.tod_err(), tod_err::SUCCESS);
        }
    }

    #[test]
    fn unknown_numbers_fall_into_their_range() {
        assert_eq!(Class::of_unknown(33), Class::Refused);
        assert_eq!(Class::of_unknown(12), Class::Refused);
        assert_eq!(Class::of_unknown(70), Class::InstallFailed);
        assert_eq!(Class::of_unknown(250), Class::InstallFailed);
    }

    #[test]
    fn parts_prefer_the_number_and_fall_back_to_the_string() {
        assert_eq!(
            ResultCode::from_parts(Some(202), "no-space"),
            Some(ResultCode::Daemon(DaemonCode::NoSpace))
        );
        assert_eq!(
            ResultCode::from_parts(None, "no-space"),
            Some(ResultCode::Helper(ErrorCode::NoSpace))
        );
        assert_eq!(
            ResultCode::from_parts(Some(999), "crc-mismatch"),
            Some(ResultCode::Daemon(DaemonCode::CrcMismatch))
        );
        assert_eq!(ResultCode::from_parts(Some(999), "what"), None);
    }
}
