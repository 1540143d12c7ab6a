//! Caller authorization (the second line of defence after the bus policy file) and the D-Bus
//! error type carrying the stable codes.
//!
//! Errors are `org.iocom.InstallHelper1.Error.<CamelCase>` (e.g. `...Error.NotAuthorized`,
//! `...Error.Busy`) with the message `"<code>: <human text>"` (e.g. `"busy: transaction ... is
//! running"`), so clients can match on either the error name or the code prefix.

use std::collections::HashMap;

use zbus::message::{Header, Message};
use zbus::names::ErrorName;

use install_api::ErrorCode;

pub use install_api::{ERROR_PREFIX, POLKIT_ACTION};

/// An error reply with a stable code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceError {
    /// Stable code.
    pub code: ErrorCode,
    name: String,
    description: String,
}

impl ServiceError {
    /// An error with `code` and a human message.
    pub fn new(code: ErrorCode, message: impl std::fmt::Display) -> Self {
        ServiceError {
            code,
            name: code.dbus_name(),
            description: format!("{}: {message}", code.as_str()),
        }
    }

    /// Parses the code back from an error reply's name (for clients and tests).
    pub fn code_from_name(name: &str) -> Option<ErrorCode> {
        ErrorCode::from_dbus_name(name)
    }
}

impl std::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.name, self.description)
    }
}

impl std::error::Error for ServiceError {}

impl zbus::DBusError for ServiceError {
    fn create_reply(&self, call: &Header<'_>) -> zbus::Result<Message> {
        Message::error(call, self.name.as_str()).build(&(self.description.as_str(),))
    }

    fn name(&self) -> ErrorName<'_> {
        ErrorName::try_from(self.name.as_str()).unwrap_or_else(|_| {
            ErrorName::from_static_str_unchecked("org.iocom.InstallHelper1.Error.Internal")
        })
    }

    fn description(&self) -> Option<&str> {
        Some(&self.description)
    }
}

/// Who may call the helper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// Allowed caller uids (root and the `iocomd` user by default).
    pub allowed_uids: Vec<u32>,
    /// Also require polkit's `org.iocom.InstallHelper1.install` (system bus only).
    pub polkit: bool,
}

impl AuthConfig {
    /// Checks a caller uid against the allow list.
    pub fn check_uid(&self, uid: u32) -> Result<(), ServiceError> {
        if self.allowed_uids.contains(&uid) {
            Ok(())
        } else {
            Err(ServiceError::new(
                ErrorCode::NotAuthorized,
                format!("caller uid {uid} is not allowed to use the install helper"),
            ))
        }
    }
}

/// The uid of the user named `name`, if it exists.
pub fn uid_of(name: &str) -> Option<u32> {
    nix::unistd::User::from_name(name)
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw())
}

/// Asks polkit whether the sender of `hdr` may install.
pub async fn polkit_allows(conn: &zbus::Connection, hdr: &Header<'_>) -> Result<(), ServiceError> {
    use zbus_polkit::policykit1::{AuthorityProxy, CheckAuthorizationFlags, Subject};
    let internal = |e: &dyn std::fmt::Display| {
        ServiceError::new(ErrorCode::NotAuthorized, format!("polkit: {e}"))
    };
    let subject = Subject::new_for_message_header(hdr).map_err(|e| internal(&e))?;
    let authority = AuthorityProxy::new(conn).await.map_err(|e| internal(&e))?;
    let r = authority
        .check_authorization(
            &subject,
            POLKIT_ACTION,
            &HashMap::new(),
            CheckAuthorizationFlags::empty(),
            "",
        )
        .await
        .map_err(|e| internal(&e))?;
    if r.is_authorized {
        Ok(())
    } else {
        Err(ServiceError::new(
            ErrorCode::NotAuthorized,
            format!("polkit denies {POLKIT_ACTION}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_are_camel_case_and_round_trip() {
        assert_eq!(
            ErrorCode::DpkgLocked.dbus_name(),
            "org.iocom.InstallHelper1.Error.DpkgLocked"
        );
        assert_eq!(
            ErrorCode::UnhealthyRolledBack.dbus_name(),
            "org.iocom.InstallHelper1.Error.UnhealthyRolledBack"
        );
        for &c in ErrorCode::ALL {
            let n = c.dbus_name();
            assert!(ErrorName::try_from(n.as_str()).is_ok(), "{n}");
            assert_eq!(ServiceError::code_from_name(&n), Some(c));
        }
        let e = ServiceError::new(ErrorCode::Busy, "tx 1 running");
        assert_eq!(zbus::DBusError::description(&e), Some("busy: tx 1 running"));
    }

    #[test]
    fn uid_allow_list() {
        let a = AuthConfig {
            allowed_uids: vec![0, 999],
            polkit: false,
        };
        assert!(a.check_uid(0).is_ok());
        assert!(a.check_uid(999).is_ok());
        assert_eq!(
            a.check_uid(1000).unwrap_err().code,
            ErrorCode::NotAuthorized
        );
        assert_eq!(uid_of("root"), Some(0));
        assert_eq!(uid_of("no-such-user-iocom"), None);
    }
}
