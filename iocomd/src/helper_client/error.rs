//! The errors of talking to the install helper, and what a caller reads from them (the
//! helper's D-Bus error name and stable code, a broken link).

use install_api::ErrorCode;
use std::path::PathBuf;
use std::time::Duration;

/// Talking to the helper failed.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    /// The helper process could not be started.
    #[error("cannot start the install helper {}: {source}", program.display())]
    Spawn {
        /// The executable.
        program: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// No D-Bus connection could be made.
    #[error("cannot connect to the install helper over {target}: {source}")]
    Connect {
        /// What we tried ("the system bus", an address, "a spawned helper").
        target: String,
        /// The error.
        source: zbus::Error,
    },
    /// The spawned helper did not complete the D-Bus handshake in time.
    #[error("the install helper {} did not answer within {timeout:?}", program.display())]
    SpawnTimeout {
        /// The executable.
        program: PathBuf,
        /// The limit.
        timeout: Duration,
    },
    /// A method call failed (including D-Bus errors returned by the helper).
    #[error("install helper {method} failed: {source}")]
    Call {
        /// D-Bus method name.
        method: &'static str,
        /// The error.
        source: zbus::Error,
    },
    /// The helper's answer is not the JSON the contract describes.
    #[error("install helper {method} answered something that does not parse: {message}")]
    Decode {
        /// D-Bus method name.
        method: &'static str,
        /// The parser's message.
        message: String,
    },
    /// The package file to hand over cannot be opened.
    #[error("cannot open the package {} for the install helper: {source}", path.display())]
    Package {
        /// The spooled file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl HelperError {
    /// The D-Bus error name when the helper answered with an error (e.g.
    /// `org.iocom.InstallHelper1.Error.Busy`).
    pub fn remote_error_name(&self) -> Option<String> {
        match self {
            HelperError::Call {
                source: zbus::Error::MethodError(name, _, _),
                ..
            } => Some(name.to_string()),
            HelperError::Call {
                source: zbus::Error::FDO(e),
                ..
            } => Some(zbus::DBusError::name(e.as_ref()).to_string()),
            _ => None,
        }
    }

    /// The call failed on the link itself (the helper did not answer with an error of its
    /// own): a peer-to-peer helper that died shows this as a broken pipe.
    pub fn is_link_failure(&self) -> bool {
        matches!(self, HelperError::Call { .. }) && self.remote_error_name().is_none()
    }

    /// The helper's stable code when it refused the call (from the D-Bus error name).
    pub fn code(&self) -> Option<ErrorCode> {
        ErrorCode::from_dbus_name(&self.remote_error_name()?)
    }
}
