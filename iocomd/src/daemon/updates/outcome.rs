//! What an update ends with: its [`Outcome`] (code, message, package) and the [`Finished`]
//! report for the connection it came from.

use install_api::{DaemonCode, ResultCode, TxResult};

/// A final result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The code.
    pub code: ResultCode,
    /// Human message.
    pub message: String,
    /// Package and version it was about, when known.
    pub pkg: Option<(String, String)>,
    /// Version installed afterwards.
    pub installed: Option<String>,
    /// Bytes received of this update.
    pub bytes: u64,
}

impl Outcome {
    /// A result of iocomd's own making.
    pub fn daemon(code: DaemonCode, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            pkg: None,
            installed: None,
            bytes: 0,
        }
    }

    /// The helper's result of a transaction.
    pub fn of_tx(r: &TxResult) -> Self {
        Self {
            code: r.code.into(),
            message: r.message.clone(),
            pkg: r
                .package
                .clone()
                .map(|p| (p, r.to.clone().unwrap_or_default())),
            installed: r.installed.clone(),
            bytes: 0,
        }
    }
}

/// An update ended: what to tell the connection it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// The pushing connection, if it is still open.
    pub conn: Option<u64>,
    /// Its final `tod_err`.
    pub tod_err: u8,
}
