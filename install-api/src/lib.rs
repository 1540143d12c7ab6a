//! The install contract between iocomd (and any other package source) and the privileged
//! install helper, in one place: the D-Bus names, the one client proxy, the stable result
//! codes with everything derived from them (name, number, human text, class, D-Bus error name,
//! the `tod_err` shown to IOCOM controllers), the typed install phases with their progress
//! ranges, and the result/status types exchanged as JSON.
//!
//! A new code, phase or field is one edit here; iocomd and the helper both match on these
//! enums exhaustively, so neither can miss it.
//!
//! Provisional and settled results: a transaction whose package ships units reports
//! `Healthy` as soon as they passed the ready gate (a `Type=notify` unit up, READY and stable
//! for the gate), with [`TxResult::settled`] `false` and the end of the probation; the units
//! are then watched until then, and `Finished` carries the settled result: `ok` (confirmed),
//! or `unhealthy-rolled-back` / `rollback-failed` when a unit crashed or missed its watchdog
//! during the probation. `Finished` is always settled, and it is the only end a 0.1 reader
//! knows. An IOCOM controller is told success at `Healthy`; a fleet server only at a settled
//! `Finished`.
//!
//! Wire format (unchanged since 0.1, so an iocomd and a helper of different versions keep
//! talking during a self-update): `Install(h package, a{sv} meta) -> s txid`,
//! `Status() -> s json` ([`HelperStatus`]), `Result(s txid) -> s json` ([`TxResult`]);
//! signals `Progress(s txid, s phase, u percent, s message)` and
//! `Finished(s txid, s code, s message, s result_json)`; since 0.2 also
//! `Healthy(s txid, t probation_until, s result_json)`, ignored by 0.1 readers. Errors are
//! `org.iocom.InstallHelper1.Error.<CamelCase>` with the message `"<code>: <text>"`.

pub mod code;
pub mod phase;
pub mod proxy;
pub mod tod_err;
pub mod types;

pub use code::{Class, DaemonCode, ErrorCode, ResultCode};
pub use phase::Phase;
pub use proxy::{HelperSignal, InstallHelper1Proxy, decode_signal};
pub use types::{
    CurrentTx, HelperStatus, PackageState, PolicySummary, Step, StepOutcome, TxResult,
};

/// Well-known bus name of the helper.
pub const BUS_NAME: &str = "org.iocom.InstallHelper1";
/// Object path of the helper.
pub const OBJECT_PATH: &str = "/org/iocom/InstallHelper1";
/// Interface name.
pub const INTERFACE: &str = "org.iocom.InstallHelper1";
/// Prefix of the helper's D-Bus error names (`<prefix>.<CamelCase code>`).
pub const ERROR_PREFIX: &str = "org.iocom.InstallHelper1.Error";
/// polkit action the helper checks on the system bus.
pub const POLKIT_ACTION: &str = "org.iocom.InstallHelper1.install";

/// Keys of the advisory `meta` dictionary of `Install` (the helper trusts none of them).
pub mod meta {
    /// SHA-256 of the package, lower-case hex (`s`).
    pub const SHA256: &str = "sha256";
    /// Size in bytes (`t`).
    pub const SIZE: &str = "size";
    /// Where the package came from, e.g. `iocom 10.0.0.9:50412 user ctl` (`s`).
    pub const ORIGIN: &str = "origin";
    /// The package fd is a pipe fed while the package is received; this fd (`h`, the read
    /// end of a second pipe) says how the transfer ended: `complete <bytes>\n` once the
    /// sender checked every byte, closed without it when the transfer failed (the call then
    /// fails with `bad-request` and leaves no result). Since 0.3
    /// ([`crate::FEATURE_STREAM_END`]); an older helper would ignore it, so a sender only
    /// streams to a helper that lists the feature.
    pub const STREAM_END: &str = "stream-end";
}

/// The feature a helper lists in `Status().features` when it takes streamed packages
/// ([`meta::STREAM_END`]).
pub const FEATURE_STREAM_END: &str = "stream-end";
