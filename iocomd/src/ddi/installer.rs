//! The seam between the DDI client and the daemon's update side: the [`Installer`] trait and
//! the values that cross it. The DDI client never talks to the install helper itself; the
//! daemon implements this trait on the same update slot that IOCOM pushes use, so one update
//! runs at a time whatever its origin.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

/// A boxed future, as [`Installer::install`] returns.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What the daemon's update side offers the DDI client.
///
/// Contract:
/// - [`reserve`](Self::reserve) takes the single update slot (the one an IOCOM push takes) for
///   a DDI action, or fails with [`Busy`] while anything else holds it. The slot is held until
///   the returned [`Reservation`] is dropped; the DDI client drops it when the action is
///   cancelled, fails before hand-over, or waits (for a maintenance window or `update=skip`).
/// - [`install`](Self::install) hands the downloaded, SHA-256-checked files (in the server's
///   chunk/artifact order; several files are one transaction) to the install helper exactly as a
///   push would, and resolves with the helper's final result: after the health gate passed
///   (success) or after the rollback (failure). It must resolve even when the helper cannot be
///   reached (a failure outcome naming why). From the call on, the DDI client rejects cancels.
///   The files belong to the installer from then on (it removes them as it does pushed ones).
/// - [`installed_versions`](Self::installed_versions) lists the managed packages and their
///   installed versions now (dpkg's view), sorted by name; the DDI client reports changes it
///   did not cause (IOCOM pushes, rollbacks) to the server. It is called once per poll, so
///   it should answer from a cache (e.g. refreshed after every transaction), not run dpkg.
pub trait Installer: Send + Sync + 'static {
    /// Takes the update slot for DDI action `action` (its id, for logs and status). A future,
    /// so that the slot's single owner (the daemon's core loop) can answer over a channel.
    fn reserve(&self, action: &str) -> BoxFuture<Result<Reservation, Busy>>;
    /// Installs `files` under the reservation `r`; see the trait documentation.
    fn install(&self, r: Reservation, files: Vec<SpooledFile>) -> BoxFuture<InstallOutcome>;
    /// Managed packages → installed versions, sorted by package name.
    fn installed_versions(&self) -> Vec<PackageVersion>;
    /// After a restart of iocomd during an install it handed over for `action` (e.g. iocomd
    /// updating itself): the helper's final result of that transaction, if it can still be
    /// had. The default knows nothing; the action is then reported as failed with
    /// [`UNKNOWN_RESULT`].
    fn recover(&self, action: &str) -> BoxFuture<Option<InstallOutcome>> {
        let _ = action;
        Box::pin(async { None })
    }
}

/// Feedback code of an action whose install result was lost (iocomd restarted during it and
/// [`Installer::recover`] knew nothing).
pub const UNKNOWN_RESULT: i32 = -2;

/// The update slot is taken (by an IOCOM push or another install); `holder` says by whom, for
/// logs and feedback ("push from 192.0.2.7", "install of gbtest 1.0").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the update slot is busy: {holder}")]
pub struct Busy {
    /// Who holds the slot.
    pub holder: String,
}

/// Proof of holding the update slot. The implementer wraps whatever guard frees its slot on
/// drop ([`Reservation::new`]) and gets it back in [`Installer::install`]
/// ([`Reservation::into_guard`]).
pub struct Reservation {
    action: String,
    guard: Box<dyn Any + Send + Sync>,
}

impl Reservation {
    /// A reservation for `action` holding `guard` (dropping the reservation drops the guard).
    pub fn new(action: impl Into<String>, guard: impl Any + Send + Sync) -> Self {
        Self {
            action: action.into(),
            guard: Box::new(guard),
        }
    }

    /// The DDI action id it was taken for.
    pub fn action(&self) -> &str {
        &self.action
    }

    /// The guard, if it is a `T`; otherwise the reservation back.
    pub fn into_guard<T: Any + Send + Sync>(self) -> Result<Box<T>, Self> {
        let Self { action, guard } = self;
        guard
            .downcast::<T>()
            .map_err(|guard| Self { action, guard })
    }
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("action", &self.action)
            .finish_non_exhaustive()
    }
}

/// A downloaded artifact in the spool directory, its SHA-256 checked against the server's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledFile {
    /// The file (in the spool directory; not a `.partial` name).
    pub path: PathBuf,
    /// The artifact's file name on the server, e.g. `app_1.2_all.deb`.
    pub filename: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content.
    pub sha256: [u8; 32],
    /// The chunk (software module) name and version it belongs to.
    pub module: PackageVersion,
}

/// A package (or software module) name and version.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct PackageVersion {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
}

impl PackageVersion {
    /// `name` `version`.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
        }
    }
}

/// The install helper's final result for one [`Installer::install`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallOutcome {
    /// Installed, and the health gate passed.
    pub success: bool,
    /// The helper's stable error code name (`"ok"` on success), e.g. `"health-gate-failed"`.
    pub code: String,
    /// The helper's stable error code number (0 on success); sent as the DDI feedback `code`.
    pub number: i32,
    /// The helper's message (one line, no secrets).
    pub message: String,
    /// The previous versions were restored.
    pub rolled_back: bool,
    /// Managed packages and versions installed after the transaction (or the rollback).
    pub installed: Vec<PackageVersion>,
}

impl InstallOutcome {
    /// A failure outcome that did not get as far as the helper (e.g. the helper is not
    /// reachable): nothing changed.
    pub fn not_started(code: &str, number: i32, message: impl Into<String>) -> Self {
        Self {
            success: false,
            code: code.into(),
            number,
            message: message.into(),
            rolled_back: false,
            installed: Vec::new(),
        }
    }
}
