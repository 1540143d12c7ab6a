//! `iocomctl` as a library: push a package to IOCOM devices and read their update status.
//!
//! - [`push`]: one device. Connects (or waits for the device to connect up), authenticates,
//!   waits for the device's `info`, `conf_exp`/`conf_imp` and status signals, uploads the file
//!   to select 1 with the controller stream writer (chunks read from the file as the device's
//!   `tod_buf` ring has room; CRC-16 at the end), then waits for the device's final result.
//! - [`push_many`]: several devices concurrently, one result each; targets behind the same
//!   server address share one connection.
//! - [`status`]: the device's installed version and last result (a plain IOCOM device: its
//!   `tod_state`/`tod_err`, with [`DeviceReport::iocomd`] false).
//! - [`devices`]: the devices reachable at an address (a device, or all a server advertises).
//! - [`account_config`]: the config entry of a controller account (password hash).
//!
//! A device is named as the C controller names it ([`DevicePath`]); it is the peer itself or
//! one of the devices an IOCOM server (e.g. iocafe's `frank`) advertises, found among the
//! advertised blocks by name, number and network.
//!
//! A push succeeds only when the device reports installed-and-healthy for *this* push: `upd_seq`
//! changed after the transfer and `upd_code` = `ok`, with `tod_err` = 6 on the connection that
//! carried the transfer (after a reconnect — iocomd restarted by a self-update — the old
//! stream's `tod_err` is gone: the device idle with the new `upd_seq` decides). Every failure
//! is a [`CtlError`] whose [`CtlError::exit_code`] is the documented exit status (the table of
//! `iocomctl --help` and the README):
//!
//! | exit | meaning |
//! | --- | --- |
//! | 0 | installed and healthy |
//! | 1 | internal error |
//! | 2 | usage: bad arguments, address, device path, file, TLS or credential files |
//! | 3 | connection failed, or dropped outside a transfer; wrong device, device not ready |
//! | 4 | authentication refused, or not authorized for pushes |
//! | 5 | device busy |
//! | 6 | transfer failed (CRC, interrupted or cut off, too large, no spool space) |
//! | 7 | package refused (signature, policy, version, archive, dependencies) |
//! | 8 | install failed or rolled back |
//! | 9 | timed out waiting for the result |

mod account;
mod addr;
mod devices;
mod link;
mod path;
mod push;
mod report;
mod session;

pub use account::account_config;
pub use addr::connect_address;
pub use devices::{DeviceEntry, DevicesOptions, devices};
pub use path::{DEFAULT_NETWORK, DevicePath, DevicePathError};
pub use report::{
    DeviceReport, FailureClass, UpdState, classify, classify_tod_err, names, tod_err_is_final,
};

use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use thiserror::Error;

/// How to reach the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// Connect to a device listening at `host:port`.
    Connect(String),
    /// Listen at this address and wait for the device to connect up.
    Listen(SocketAddr),
    /// Talk to the device over a serial line.
    Serial(SerialLine),
}

impl Transport {
    /// True when we reach one device directly (connect or serial): its identity is checked
    /// by the session, and a connection lost while it installs is opened again.
    pub(crate) fn is_direct(&self) -> bool {
        !matches!(self, Transport::Listen(_))
    }
}

/// A serial line to one device: the port and our end of the serial connect sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialLine {
    /// Port and line settings.
    pub params: crate::net::serial::SerialParams,
    /// Our end: by default the serial server, like the reference controller (iocompython's
    /// `EndPoint(..., flags='serial')`), for a device that is the serial client (iocomd's
    /// default, and the reference device).
    pub side: crate::proto::conn::Side,
}

impl SerialLine {
    /// Parses `PORT[,baud=N][,parity=none|even|odd][,stopbits=1|2][,side=server|client]`.
    pub fn parse(s: &str) -> Result<Self, CtlError> {
        use crate::proto::conn::Side;
        let mut side = Side::Server;
        let mut rest = Vec::new();
        for part in s.split(',') {
            match part.trim() {
                "side=server" => side = Side::Server,
                "side=client" => side = Side::Client,
                p if p.starts_with("side=") => {
                    return Err(CtlError::Usage(format!(
                        "--serial: {p:?}: use side=server or side=client"
                    )));
                }
                p => rest.push(p),
            }
        }
        let params = crate::net::serial::SerialParams::parse(&rest.join(","))
            .map_err(|e| CtlError::Usage(format!("--serial {s:?}: {e}")))?;
        Ok(Self { params, side })
    }
}

/// TLS settings. Connecting, `ca` is required (the device certificate is always verified) and
/// `cert`/`key` are an optional client identity; listening, `cert`/`key` are required.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM CA certificates that sign the device's certificate.
    pub ca: Option<PathBuf>,
    /// PEM certificate chain of our identity.
    pub cert: Option<PathBuf>,
    /// PEM private key of our identity.
    pub key: Option<PathBuf>,
    /// The name the device certificate must carry (default: the host of `--connect`).
    pub server_name: Option<String>,
}

/// User name and password sent in the IOCOM authentication frame (inside TLS only).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name (our name on the wire).
    pub user: String,
    /// Password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Timeouts of one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Connecting, TLS, IOCOM handshake and authentication (connect mode).
    pub connect: Duration,
    /// Waiting for the device to connect up (listen mode).
    pub listen: Duration,
    /// From authentication until the device's blocks and signals are there.
    pub ready: Duration,
    /// From the end of the transfer until the device's final result.
    pub result: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(15),
            listen: Duration::from_secs(300),
            ready: Duration::from_secs(30),
            result: Duration::from_secs(120),
        }
    }
}

/// Where and how to reach one device.
#[derive(Debug, Clone)]
pub struct Target {
    /// The device.
    pub device: DevicePath,
    /// Connect or listen.
    pub transport: Transport,
}

/// Connection settings shared by all targets.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// TLS, or plain TCP when `None`.
    pub tls: Option<TlsOptions>,
    /// Credentials, or none (user `iocomctl`, no password).
    pub credentials: Option<Credentials>,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Listening: announce the listener by lighthouse UDP multicast (iocafe's discovery), so
    /// devices configured to connect to `*` find it. A hint only: devices still authenticate
    /// and nothing is pushed to a device because it connected.
    pub announce: bool,
}

/// What to push.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// The device and how to reach it.
    pub target: Target,
    /// Connection settings.
    pub connect: ConnectOptions,
    /// The package file (read in chunks, never whole).
    pub file: PathBuf,
    /// Stream select (1 = program, the default).
    pub select: i64,
    /// Accept a device without iocomd's status signals when its `tod_err` says 6.
    pub accept_tod_err_only: bool,
}

impl PushOptions {
    /// Push `file` to `target` with defaults (select 1, status signals required).
    pub fn new(target: Target, connect: ConnectOptions, file: PathBuf) -> Self {
        Self {
            target,
            connect,
            file,
            select: 1,
            accept_tod_err_only: false,
        }
    }
}

/// What to read the status of.
#[derive(Debug, Clone)]
pub struct StatusOptions {
    /// The device and how to reach it.
    pub target: Target,
    /// Connection settings.
    pub connect: ConnectOptions,
}

/// Events of a push, in order, for progress output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Progress {
    /// The byte stream is open.
    Connected {
        /// The device's address (or serial port).
        peer: crate::net::PeerAddr,
    },
    /// The peer authenticated.
    Authenticated {
        /// The requested device's path.
        device: String,
        /// The largest frame we send: the smaller of ours (16 KiB) and the peer's announced.
        frame_size: u32,
        /// The largest frame the peer receives, as it announced it (iocomd 16 KiB, a stock C
        /// build 1392); it sends us frames of at most the smaller of this and ours.
        peer_frame_size: u32,
    },
    /// The requested device was found among the devices the peer advertises.
    Located {
        /// Its full path (`gina9001.cafenet`).
        device: String,
        /// The server it is reached through (`frank9002.cafenet`), when not the peer itself.
        via: Option<String>,
    },
    /// The device's blocks are there; the upload starts.
    Started {
        /// Bytes to send.
        total: u64,
        /// The device's `tod_buf` ring size.
        ring: usize,
        /// Version installed before (`inst_ver`), if published.
        installed_version: Option<String>,
    },
    /// Bytes read from the file into the device's ring so far (at most one ring ahead of what
    /// the device has taken).
    Transfer {
        /// Bytes so far.
        bytes: u64,
        /// Bytes in all.
        total: u64,
    },
    /// The device confirmed the end of the stream (CRC included).
    Transferred {
        /// Bytes sent.
        bytes: u64,
        /// CRC-16 of the data.
        crc: u16,
    },
    /// The connection dropped while the device installs; iocomctl reconnects (connect mode)
    /// and reads the result the device publishes after a restart.
    Reconnecting {
        /// Why the connection closed.
        reason: String,
    },
    /// The device's update state changed while it verifies and installs.
    Device {
        /// `upd_state`.
        state: UpdState,
        /// `upd_progress`.
        percent: Option<u8>,
    },
}

/// A successful push.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PushOutcome {
    /// The device.
    pub device: String,
    /// Bytes sent.
    pub bytes: u64,
    /// CRC-16 of the data.
    pub crc: u16,
    /// Seconds of the transfer.
    pub transfer_secs: f64,
    /// Seconds from connecting to the final result.
    pub total_secs: f64,
    /// The device's final report.
    pub report: DeviceReport,
}

/// Everything that can go wrong; [`CtlError::exit_code`] is the process exit status.
#[derive(Debug, Error)]
pub enum CtlError {
    /// Bad arguments or options.
    #[error("{0}")]
    Usage(String),
    /// A bad device path.
    #[error(transparent)]
    DevicePath(#[from] DevicePathError),
    /// The package file cannot be read.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// TLS material cannot be loaded.
    #[error("TLS: {0}")]
    TlsConfig(String),
    /// The TCP connection or TLS handshake failed.
    #[error("{device}: cannot connect to {addr}: {reason}")]
    Connect {
        /// The device.
        device: String,
        /// Where.
        addr: String,
        /// Why.
        reason: String,
    },
    /// Listening failed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The connection closed before the result.
    #[error("{device}: connection dropped: {reason}")]
    Dropped {
        /// The device.
        device: String,
        /// Why.
        reason: String,
    },
    /// The peer is not the device and advertises no device of that path.
    #[error("{device}: the peer is {found} and advertises no such device{advertised}")]
    WrongDevice {
        /// The device asked for.
        device: String,
        /// Who answered.
        found: String,
        /// The other devices it advertises (` (devices behind it: …)`, or empty).
        advertised: String,
    },
    /// The path matches more than one advertised device.
    #[error("{device} is ambiguous: it matches {matches}; give the number and network")]
    Ambiguous {
        /// The path given.
        device: String,
        /// The full paths it matches.
        matches: String,
    },
    /// The device did not present what a push needs.
    #[error("{device}: not ready: {reason}")]
    NotReady {
        /// The device.
        device: String,
        /// What is missing.
        reason: String,
    },
    /// The device closed the connection during authentication.
    #[error(
        "{device}: authentication refused ({reason}): check --user and the password; a device \
         under a connection flood closes the oldest connections still in the handshake too"
    )]
    AuthRefused {
        /// The device.
        device: String,
        /// The close reason seen.
        reason: String,
    },
    /// The device reported a failure.
    #[error("{device}: {} (code {}, {}): {}", class_text(*.class), .report.code.as_deref().unwrap_or("-"), number_text(.report), .report.message.as_deref().unwrap_or(""))]
    Device {
        /// The device.
        device: String,
        /// The class of the failure.
        class: FailureClass,
        /// What the device published.
        report: Box<DeviceReport>,
    },
    /// The transfer failed and the device gave no result code.
    #[error("{device}: transfer failed: {reason}")]
    Transfer {
        /// The device.
        device: String,
        /// Why.
        reason: String,
    },
    /// Something took longer than its timeout.
    #[error("{device}: timed out after {waited:?} {what}")]
    Timeout {
        /// The device.
        device: String,
        /// What we waited for.
        what: &'static str,
        /// How long.
        waited: Duration,
    },
    /// A bug or an unexpected local failure.
    #[error("internal error: {0}")]
    Internal(String),
}

fn class_text(c: FailureClass) -> &'static str {
    match c {
        FailureClass::Auth => "not authorized for pushes",
        FailureClass::Busy => "device busy",
        FailureClass::Transfer => "transfer failed",
        FailureClass::Refused => "package refused",
        FailureClass::InstallFailed => "install failed",
    }
}

fn number_text(r: &DeviceReport) -> String {
    match (r.result, r.tod_err) {
        (Some(n), Some(t)) => format!("result {n}, tod_err {t}"),
        (Some(n), None) => format!("result {n}"),
        (None, Some(t)) => format!("tod_err {t}"),
        (None, None) => "no number".into(),
    }
}

impl CtlError {
    /// The process exit status of this error (table in the module documentation).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Internal(_) => 1,
            Self::Usage(_)
            | Self::DevicePath(_)
            | Self::File { .. }
            | Self::TlsConfig(_)
            | Self::Ambiguous { .. } => 2,
            Self::Connect { .. }
            | Self::Listen { .. }
            | Self::Dropped { .. }
            | Self::WrongDevice { .. }
            | Self::NotReady { .. } => 3,
            Self::AuthRefused { .. } => 4,
            Self::Device { class, .. } => class.exit_code(),
            Self::Transfer { .. } => 6,
            Self::Timeout { .. } => 9,
        }
    }

    /// A short stable name of the error class (`usage`, `connection`, `auth`, `busy`,
    /// `transfer`, `refused`, `install-failed`, `timeout`, `internal`), for JSON output.
    pub fn class_name(&self) -> &'static str {
        match self.exit_code() {
            2 => "usage",
            3 => "connection",
            4 => "auth",
            5 => "busy",
            6 => "transfer",
            7 => "refused",
            8 => "install-failed",
            9 => "timeout",
            _ => "internal",
        }
    }

    /// The device's report, when the device reported the failure.
    pub fn report(&self) -> Option<&DeviceReport> {
        match self {
            Self::Device { report, .. } => Some(report),
            _ => None,
        }
    }
}

/// Pushes `opts.file` to one device; `progress` sees every [`Progress`] event.
pub async fn push(
    opts: &PushOptions,
    progress: impl FnMut(Progress) + Send,
) -> Result<PushOutcome, CtlError> {
    push::push(opts, progress).await
}

/// Reads the device's update status.
pub async fn status(opts: &StatusOptions) -> Result<DeviceReport, CtlError> {
    session::status(opts).await
}

/// The result of one device in [`push_many`].
#[derive(Debug)]
pub struct ManyResult {
    /// The device.
    pub device: DevicePath,
    /// Its outcome.
    pub result: Result<PushOutcome, CtlError>,
}

impl ManyResult {
    /// Exit status of this device (0 on success).
    pub fn exit_code(&self) -> u8 {
        self.result.as_ref().map_or_else(CtlError::exit_code, |_| 0)
    }
}

/// Pushes the same file to several devices concurrently, each over its own connection;
/// `progress` sees `(device index, event)`. Results come back in `targets` order; the overall
/// exit status is [`worst_exit_code`].
pub async fn push_many(
    targets: &[Target],
    connect: &ConnectOptions,
    file: &std::path::Path,
    progress: impl FnMut(usize, Progress) + Send,
) -> Vec<ManyResult> {
    push::push_many(targets, connect, file, progress).await
}

/// The largest exit status of `results` (0 when all succeeded).
pub fn worst_exit_code(results: &[ManyResult]) -> u8 {
    results.iter().map(ManyResult::exit_code).max().unwrap_or(0)
}
