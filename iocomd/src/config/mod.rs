//! The daemon configuration: TOML fragments merged in order and validated into [`Settings`].
//!
//! Fragments are read from the base directories of [`Paths::config_dirs`] (production:
//! `/usr/lib/iocomd` < `/run/iocomd` < `/etc/iocomd`); in each, `iocomd.toml` then
//! `conf.d/*.toml` sorted by name. Later fragments win; tables merge key by key, arrays are
//! replaced whole. `--config FILE` reads that one file alone ([`load_file`]). Unknown keys and
//! bad values are errors naming the file and the key. Every key is documented in the shipped
//! sample `etc/iocomd/iocomd.toml`.

mod hawkbit;
mod raw;
mod show;
mod sources;
mod validate;
mod values;

pub use hawkbit::{HawkbitAuth, HawkbitSettings};
pub use show::check_config;
pub use values::{ByteSize, DeviceNumber, PasswordHash};

use crate::paths::Paths;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// IOCOM identity of this device.
    pub device: DeviceIdentity,
    /// Endpoints the device listens on for controllers.
    pub listen: Vec<ListenEndpoint>,
    /// Controllers the device connects up to.
    pub connect: Vec<ConnectEndpoint>,
    /// Serial lines the device talks IOCOM on.
    pub serial: Vec<SerialEndpoint>,
    /// Accept package pushes over plain (unauthenticated) TCP. Default false: pushes are only
    /// accepted from peers authenticated over TLS with an account below.
    pub allow_plain_tcp_push: bool,
    /// Accept package pushes over serial lines. Default false: a serial line has no TLS and
    /// IOCOM sends no password on it, so anyone with access to the line could install
    /// packages; enable it only where the line itself is trusted (a cable inside the cabinet).
    pub allow_serial_push: bool,
    /// Accounts allowed to push packages (TLS connections), sorted by user name.
    pub accounts: Vec<Account>,
    /// Where and how received packages are spooled.
    pub spool: SpoolSettings,
    /// Size in bytes of the `tod_buf` stream ring declared to controllers.
    pub stream_buffer_size: u32,
    /// Bounds on one transfer, so that the single update slot always comes free.
    pub transfer: TransferLimits,
    /// How the daemon reaches the install helper.
    pub helper: HelperConnection,
    /// Logging.
    pub log: LogSettings,
    /// The hawkBit DDI client (`[hawkbit]`); `None` when off (the default).
    pub hawkbit: Option<HawkbitSettings>,
    /// The daemon's state directory (the DDI client keeps `hawkbit/` in it).
    pub state_dir: PathBuf,
    /// The files this was read from, in merge order (empty for built-in settings).
    pub sources: Vec<PathBuf>,
}

/// Bounds on one transfer (`[stream]`): a sender that is too slow or takes too long is cut off
/// with `interrupted` and the reason, and the update slot is free again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferLimits {
    /// The whole transfer must end within this (`stream.max_transfer_seconds`).
    pub max_time: std::time::Duration,
    /// Bytes per second the transfer must average over every `rate_window`
    /// (`stream.min_rate`; 0 = no minimum).
    pub min_rate: u64,
    /// The window the rate is measured over; the first window is a grace period
    /// (`stream.rate_window_seconds`).
    pub rate_window: std::time::Duration,
}

impl Default for TransferLimits {
    fn default() -> Self {
        Self {
            max_time: std::time::Duration::from_secs(defaults::MAX_TRANSFER_SECONDS),
            min_rate: defaults::MIN_RATE,
            rate_window: std::time::Duration::from_secs(defaults::RATE_WINDOW_SECONDS),
        }
    }
}

/// Device name, number and network: the device path `name` `number` `.` `network`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceIdentity {
    /// 1–15 ASCII letters or `_` (IOCOM's `IOC_NAME_SZ`).
    pub name: String,
    /// Fixed number or automatic.
    pub number: DeviceNumber,
    /// 1–23 characters: ASCII letters, digits, `_`, `-`.
    pub network: String,
}

/// A listening endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenEndpoint {
    /// Address to bind.
    pub address: SocketAddr,
    /// TLS files; `None` for plain TCP.
    pub tls: Option<ServerTls>,
}

/// Server-side TLS files (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
    /// If set, clients must present a certificate issued by this CA.
    pub client_ca: Option<PathBuf>,
}

/// A controller to connect up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectEndpoint {
    /// Host name or IP address (without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// TLS settings; `None` for plain TCP.
    pub tls: Option<ClientTls>,
    /// File holding the clear password this device sends in its authentication frame.
    pub password_file: Option<PathBuf>,
}

/// A serial line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialEndpoint {
    /// Port and line settings.
    pub params: crate::net::serial::SerialParams,
    /// Our end of the serial connect sequence.
    pub side: SerialSide,
}

/// Which end of the serial connect sequence the device plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SerialSide {
    /// Serial client, connecting up like the reference device (`IOC_SERIAL|IOC_CONNECT_UP`):
    /// the controller is the serial server (the default).
    Client,
    /// Serial server (`IOC_LISTENER`): the controller is the serial client.
    Server,
}

/// Client-side TLS settings (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTls {
    /// CA that must have issued the controller's certificate.
    pub ca: PathBuf,
    /// Name to verify in the controller's certificate (default: the host).
    pub server_name: String,
    /// Client certificate and key, if the controller asks for one.
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// An account allowed to push packages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// User name as sent in the IOCOM authentication frame.
    pub user: String,
    /// IOCOM password hash; `None`: the certificate alone authenticates.
    pub password_hash: Option<PasswordHash>,
    /// SHA-256 of the client certificate (DER) this account is bound to: a controller uses
    /// the account only with that certificate, on a listener that requires client
    /// certificates (`ca`); with no `password_hash` no password is needed then.
    pub certificate_sha256: Option<[u8; 32]>,
}

/// Spool settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolSettings {
    /// Directory for received packages.
    pub dir: PathBuf,
    /// Largest package accepted, in bytes.
    pub max_package_size: u64,
    /// Free space (bytes) that must remain on the spool's filesystem while receiving.
    pub min_free_space: u64,
    /// A push goes to the install helper while it is received, when the helper takes
    /// streams (`daemon::updates::stream`); `false`: always through a spool file first.
    pub stream_to_helper: bool,
}

/// How to reach the install helper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelperConnection {
    /// The D-Bus system bus (production; the helper is D-Bus activated).
    SystemBus,
    /// A D-Bus bus at an explicit address (tests with a private `dbus-daemon`).
    Bus {
        /// D-Bus address, e.g. `unix:path=/tmp/bus`.
        address: String,
    },
    /// Spawn the helper as a child on a peer-to-peer socket (demo); see
    /// [`crate::helper_client::HelperClient::spawn`].
    Spawn {
        /// Helper executable.
        program: PathBuf,
        /// Its arguments.
        args: Vec<String>,
    },
}

/// Log settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// `tracing` filter directive (e.g. `info`, `iocomd=debug,zbus=warn`); `RUST_LOG` overrides.
    pub level: String,
    /// Where log records go.
    pub target: LogTarget,
}

/// Log destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    /// journald if its socket exists, else standard error.
    Auto,
    /// journald (falls back to standard error if it cannot be reached).
    Journald,
    /// Standard error.
    Stderr,
}

/// Defaults used where the configuration says nothing.
pub mod defaults {
    /// `spool.max_package_size`: 256 MiB.
    pub const MAX_PACKAGE_SIZE: u64 = 256 << 20;
    /// `spool.min_free_space`: 64 MiB.
    pub const MIN_FREE_SPACE: u64 = 64 << 20;
    /// `stream.buffer_size`: 1 MiB (design.md §5a asks for at least 256 KiB). Only a streaming
    /// controller (iocomctl) is offered it; others get 4 KiB + 1 (`proto::info::
    /// COMPAT_TOD_RING`). A push moves at most one ring per round trip: 1 MiB keeps an 8 MiB
    /// push above half of raw TCP at 20 ms (`benches/latency_push.rs`), 256 KiB did not.
    pub const STREAM_BUFFER_SIZE: u32 = 1 << 20;
    /// `stream.max_transfer_seconds`: 30 minutes (a 256 MiB package at 150 KB/s).
    pub const MAX_TRANSFER_SECONDS: u64 = 30 * 60;
    /// `stream.min_rate`: 1 KiB/s (a serial line at 9600 baud still passes).
    pub const MIN_RATE: u64 = 1 << 10;
    /// `stream.rate_window_seconds`: 30 s.
    pub const RATE_WINDOW_SECONDS: u64 = 30;
    /// Smallest `stream.buffer_size`: the reference implementation's 257.
    pub const STREAM_BUFFER_MIN: u32 = 257;
    /// Largest `stream.buffer_size`: 16 MiB (the whole ring is held in memory).
    pub const STREAM_BUFFER_MAX: u32 = 16 << 20;
    /// Smallest `spool.max_package_size`: 1 KiB.
    pub const MAX_PACKAGE_SIZE_MIN: u64 = 1 << 10;
    /// `device.network`.
    pub const NETWORK: &str = "iocafenet";
    /// `device.name`.
    pub const DEVICE_NAME: &str = "iocomd";
    /// `log.level`.
    pub const LOG_LEVEL: &str = "info";
    /// Plain IOCOM TCP port.
    pub const TCP_PORT: u16 = 6368;
    /// IOCOM TLS port.
    pub const TLS_PORT: u16 = 6369;
}

/// A configuration problem; the message names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file or directory could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// TOML syntax, a wrong type or an unknown key.
    #[error("{}: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column.
        message: String,
    },
    /// A value that does not validate.
    #[error("{}: {key}: {message}", Origin(file.as_deref()))]
    Invalid {
        /// The file that set the key; `None` when the built-in default is at fault (a missing
        /// key).
        file: Option<PathBuf>,
        /// Dotted key path, e.g. `endpoints.listen[0].address`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

struct Origin<'a>(Option<&'a Path>);

impl fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(p) => write!(f, "{}", p.display()),
            None => f.write_str("configuration"),
        }
    }
}

/// The fragment files that [`load`] reads, in merge order.
pub fn fragment_files(paths: &Paths) -> Result<Vec<PathBuf>, ConfigError> {
    sources::fragment_files(&paths.config_dirs)
}

/// Reads and validates the merged fragments of [`Paths::config_dirs`].
pub fn load(paths: &Paths) -> Result<Settings, ConfigError> {
    let files = fragment_files(paths)?;
    let merged = sources::Merged::read(&files)?;
    validate::settings(&merged, paths)
}

/// Reads and validates one file alone (`iocomd --config FILE`).
pub fn load_file(file: &Path, paths: &Paths) -> Result<Settings, ConfigError> {
    let merged = sources::Merged::read(&[file.to_path_buf()])?;
    validate::settings(&merged, paths)
}

/// Validates configuration text as if it were the file `name` (for tests and `--check`).
pub fn parse_str(name: &Path, text: &str, paths: &Paths) -> Result<Settings, ConfigError> {
    let mut merged = sources::Merged::default();
    merged.add(name, sources::parse_fragment(name, text)?);
    validate::settings(&merged, paths)
}

/// The `[hawkbit]` section of the fragment `text` (read from `name`), validated for a device
/// with settings `base` (its other sections are not looked at); `None` when it is absent or
/// not enabled.
pub fn parse_hawkbit(
    name: &Path,
    text: &str,
    base: &Settings,
) -> Result<Option<HawkbitSettings>, ConfigError> {
    let mut merged = sources::Merged::default();
    merged.add(name, sources::parse_fragment(name, text)?);
    validate::hawkbit_only(&merged, base)
}

impl Settings {
    /// The embedded demo configuration: plain TCP on 127.0.0.1:6368 with pushes allowed, the
    /// spool in `state_dir/spool`, and the helper spawned as a child (`iocom-install-helper`
    /// next to the running executable if present, else the installed one) with
    /// `--p2p-fd {fd} --root STATE/root --state-dir STATE/helper --policy
    /// STATE/install-policy.toml --allow-uid UID` (our uid), so dpkg stays in `STATE/root`. The
    /// demo setup writes `install-policy.toml` (with the demo signing key) before starting.
    pub fn demo(state_dir: &Path) -> Settings {
        let paths = Paths::demo(state_dir);
        let state = |p: &str| state_dir.join(p).to_string_lossy().into_owned();
        Settings {
            device: DeviceIdentity {
                name: "gina".into(),
                number: DeviceNumber::Fixed(3),
                network: defaults::NETWORK.into(),
            },
            listen: vec![ListenEndpoint {
                address: SocketAddr::from((Ipv4Addr::LOCALHOST, defaults::TCP_PORT)),
                tls: None,
            }],
            connect: Vec::new(),
            serial: Vec::new(),
            allow_plain_tcp_push: true,
            allow_serial_push: false,
            accounts: Vec::new(),
            spool: SpoolSettings {
                dir: paths.spool_dir,
                max_package_size: defaults::MAX_PACKAGE_SIZE,
                min_free_space: defaults::MIN_FREE_SPACE,
                stream_to_helper: true,
            },
            stream_buffer_size: defaults::STREAM_BUFFER_SIZE,
            transfer: TransferLimits::default(),
            helper: HelperConnection::Spawn {
                program: demo_helper_program(),
                args: [
                    "--p2p-fd",
                    "{fd}",
                    "--root",
                    &state("root"),
                    "--state-dir",
                    &state("helper"),
                    "--policy",
                    &state("install-policy.toml"),
                    "--allow-uid",
                    &nix::unistd::getuid().to_string(),
                ]
                .map(String::from)
                .to_vec(),
            },
            log: LogSettings {
                level: defaults::LOG_LEVEL.into(),
                target: LogTarget::Stderr,
            },
            hawkbit: None,
            state_dir: state_dir.to_path_buf(),
            sources: Vec::new(),
        }
    }

    /// The account named `user`, if any.
    pub fn account(&self, user: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.user == user)
    }

    /// The device path, e.g. `gina3.iocafenet` (`gina.iocafenet` for an automatic number).
    pub fn device_path(&self) -> String {
        match self.device.number {
            DeviceNumber::Fixed(n) => format!("{}{n}.{}", self.device.name, self.device.network),
            DeviceNumber::Auto => format!("{}.{}", self.device.name, self.device.network),
        }
    }
}

/// Installed path of the helper.
pub const INSTALLED_HELPER: &str = "/usr/libexec/iocomd/iocom-install-helper";

fn demo_helper_program() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("iocom-install-helper")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(INSTALLED_HELPER))
}
