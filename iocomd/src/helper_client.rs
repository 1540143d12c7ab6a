//! Client of the install helper's D-Bus interface (`org.iocom.InstallHelper1`, see
//! docs/architecture.md "D-Bus contract of the helper"), over the system bus, a bus at an
//! explicit address, or a peer-to-peer socket to a helper spawned as a child (demo).
//!
//! A spawned helper inherits its end of a socketpair as an extra file descriptor; every
//! `{fd}` in its arguments is replaced by that descriptor's number (e.g.
//! `iocom-install-helper --p2p-fd {fd}`). It must serve the interface on it as a peer-to-peer
//! D-Bus server (`connection::Builder::unix_stream(..).server(guid).p2p()`) at
//! `/org/iocom/InstallHelper1`. Its standard input is `/dev/null`; standard output and error
//! are inherited.

use crate::config::HelperConnection;
use futures_util::stream::{Stream, StreamExt};
use nix::fcntl::{FcntlArg, FdFlag};
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// Bus name, object path and interface name of the helper.
pub const BUS_NAME: &str = "org.iocom.InstallHelper1";
/// Object path of the helper.
pub const OBJECT_PATH: &str = "/org/iocom/InstallHelper1";

/// How long a spawned helper may take to answer the D-Bus handshake.
pub const SPAWN_TIMEOUT: Duration = Duration::from_secs(30);

/// The helper's interface. `Install` returns once the helper has taken its copy of the fd.
#[zbus::proxy(
    interface = "org.iocom.InstallHelper1",
    default_service = "org.iocom.InstallHelper1",
    default_path = "/org/iocom/InstallHelper1"
)]
pub trait InstallHelper1 {
    /// `Install(h package, a{sv} meta) -> s transaction_id`.
    fn install(
        &self,
        package: zbus::Fd<'_>,
        meta: HashMap<&str, zbus::Variant<'_>>,
    ) -> zbus::Result<String>;

    /// `Status() -> s json`.
    fn status(&self) -> zbus::Result<String>;

    /// `Result(s transaction_id) -> s json`.
    fn result(&self, transaction_id: &str) -> zbus::Result<String>;

    /// `Progress(s transaction_id, s phase, u percent, s message)`.
    #[zbus(signal)]
    fn progress(
        &self,
        transaction_id: &str,
        phase: &str,
        percent: u32,
        message: &str,
    ) -> zbus::Result<()>;

    /// `Finished(s transaction_id, s code, s message, s result_json)`.
    #[zbus(signal)]
    fn finished(
        &self,
        transaction_id: &str,
        code: &str,
        message: &str,
        result_json: &str,
    ) -> zbus::Result<()>;
}

/// Advisory metadata sent with `Install` (the helper recomputes what it checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallMeta {
    /// SHA-256 of the package, lower-case hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// Where it came from, e.g. the controller's address and user.
    pub origin: String,
}

/// A signal from the helper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelperEvent {
    /// `Progress`.
    Progress {
        /// Transaction id.
        transaction_id: String,
        /// Phase name.
        phase: String,
        /// 0–100.
        percent: u32,
        /// Human message.
        message: String,
    },
    /// `Finished`.
    Finished {
        /// Transaction id.
        transaction_id: String,
        /// Stable error code (or success code).
        code: String,
        /// Human message.
        message: String,
        /// The full result as JSON.
        result_json: String,
    },
}

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

    /// The helper's stable error code (e.g. `dpkg-locked`): its D-Bus error messages start
    /// with `code: `.
    pub fn remote_error_code(&self) -> Option<String> {
        let HelperError::Call {
            source: zbus::Error::MethodError(_, Some(desc), _),
            ..
        } = self
        else {
            return None;
        };
        let (code, _) = desc.split_once(": ")?;
        let valid = !code.is_empty()
            && code
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        valid.then(|| code.to_owned())
    }
}

/// A connection to the install helper.
#[derive(Debug)]
pub struct HelperClient {
    proxy: InstallHelper1Proxy<'static>,
    /// The spawned helper, killed when the client is dropped.
    child: Option<tokio::process::Child>,
}

impl HelperClient {
    /// Connects as the configuration says.
    pub async fn connect(how: &HelperConnection) -> Result<Self, HelperError> {
        match how {
            HelperConnection::SystemBus => Self::system_bus().await,
            HelperConnection::Bus { address } => Self::bus(address).await,
            HelperConnection::Spawn { program, args } => Self::spawn(program, args).await,
        }
    }

    /// Connects over the D-Bus system bus (the helper is D-Bus activated on first call).
    pub async fn system_bus() -> Result<Self, HelperError> {
        let conn = zbus::Connection::system()
            .await
            .map_err(|source| HelperError::Connect {
                target: "the system bus".into(),
                source,
            })?;
        Self::on_connection(conn, "the system bus").await
    }

    /// Connects over the bus at `address` (e.g. a private `dbus-daemon` in tests).
    pub async fn bus(address: &str) -> Result<Self, HelperError> {
        let conn = zbus::connection::Builder::address(address)
            .build()
            .await
            .map_err(|source| HelperError::Connect {
                target: format!("bus {address}"),
                source,
            })?;
        Self::on_connection(conn, address).await
    }

    /// Connects peer-to-peer over `stream`, whose other end is served by the helper.
    pub async fn p2p(stream: UnixStream) -> Result<Self, HelperError> {
        let conn = zbus::connection::Builder::unix_stream(stream)
            .p2p()
            .build()
            .await
            .map_err(|source| HelperError::Connect {
                target: "a peer-to-peer socket".into(),
                source,
            })?;
        Self::on_connection(conn, "a peer-to-peer socket").await
    }

    /// Spawns `program args…` with one end of a socketpair inherited (its number replaces
    /// `{fd}` in `args`) and connects peer-to-peer over the other end. The child is killed
    /// when the client is dropped.
    pub async fn spawn(program: &Path, args: &[String]) -> Result<Self, HelperError> {
        let spawn_err = |source| HelperError::Spawn {
            program: program.to_path_buf(),
            source,
        };
        let (ours, theirs) = UnixStream::pair().map_err(spawn_err)?;
        // Let the child inherit `theirs`: clear close-on-exec just for the spawn. Our copy is
        // closed right after, so only this child keeps it.
        nix::fcntl::fcntl(&theirs, FcntlArg::F_SETFD(FdFlag::empty()))
            .map_err(|e| spawn_err(std::io::Error::from(e)))?;
        let fd = theirs.as_raw_fd().to_string();
        let child = tokio::process::Command::new(program)
            .args(args.iter().map(|a| a.replace("{fd}", &fd)))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn();
        drop(theirs);
        let child = child.map_err(spawn_err)?;
        let mut client = match tokio::time::timeout(SPAWN_TIMEOUT, Self::p2p(ours)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(HelperError::SpawnTimeout {
                    program: program.to_path_buf(),
                    timeout: SPAWN_TIMEOUT,
                });
            }
        };
        client.child = Some(child);
        Ok(client)
    }

    async fn on_connection(conn: zbus::Connection, target: &str) -> Result<Self, HelperError> {
        let proxy = InstallHelper1Proxy::builder(&conn)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(|source| HelperError::Connect {
                target: target.to_owned(),
                source,
            })?;
        Ok(Self { proxy, child: None })
    }

    /// The underlying proxy.
    pub fn proxy(&self) -> &InstallHelper1Proxy<'static> {
        &self.proxy
    }

    /// The spawned helper's process id, if this client spawned one.
    pub fn child_pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(tokio::process::Child::id)
    }

    /// Resolves when the connection to the helper has closed (e.g. a spawned helper exited);
    /// the owner then reconnects or respawns.
    pub async fn closed(&self) {
        self.proxy.inner().connection().closed().await;
    }

    /// Closes the connection. A spawned helper then finishes a running transaction and exits;
    /// it gets `grace` to do so before it is killed. Returns its exit status (`None` if this
    /// client spawned no helper, or its status could not be read).
    pub async fn close(mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let conn = self.proxy.inner().connection().clone();
        if let Err(e) = conn.close().await {
            tracing::debug!(error = %e, "closing the helper connection");
        }
        let mut child = self.child.take()?;
        match tokio::time::timeout(grace, child.wait()).await {
            Ok(Ok(status)) => Some(status),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot wait for the install helper");
                None
            }
            Err(_) => {
                tracing::warn!(?grace, "install helper did not exit; killing it");
                if let Err(e) = child.kill().await {
                    tracing::warn!(error = %e, "cannot kill the install helper");
                }
                child.wait().await.ok()
            }
        }
    }

    /// Hands `package` (an open file) to the helper; returns the transaction id.
    pub async fn install(
        &self,
        package: &impl AsFd,
        meta: &InstallMeta,
    ) -> Result<String, HelperError> {
        let mut m: HashMap<&str, zbus::Variant<'_>> = HashMap::new();
        m.insert("sha256", zbus::Variant::from(meta.sha256.as_str()));
        m.insert("size", zbus::Variant::from(meta.size));
        m.insert("origin", zbus::Variant::from(meta.origin.as_str()));
        self.proxy
            .install(zbus::Fd::from(package.as_fd()), m)
            .await
            .map_err(|source| HelperError::Call {
                method: "Install",
                source,
            })
    }

    /// `Status()`: JSON text.
    pub async fn status(&self) -> Result<String, HelperError> {
        self.proxy
            .status()
            .await
            .map_err(|source| HelperError::Call {
                method: "Status",
                source,
            })
    }

    /// `Result(transaction_id)`: JSON text.
    pub async fn result(&self, transaction_id: &str) -> Result<String, HelperError> {
        self.proxy
            .result(transaction_id)
            .await
            .map_err(|source| HelperError::Call {
                method: "Result",
                source,
            })
    }

    /// The helper's `Progress` and `Finished` signals, in the order the helper sent them, from
    /// the helper only (the proxy filters by sender on a bus). Subscribe before calling
    /// [`HelperClient::install`] so that no signal is missed. Signals that do not decode are
    /// skipped.
    pub async fn events(
        &self,
    ) -> Result<impl Stream<Item = HelperEvent> + Send + Unpin + 'static, HelperError> {
        let signals = self
            .proxy
            .inner()
            .receive_all_signals()
            .await
            .map_err(|source| HelperError::Call {
                method: "AddMatch",
                source,
            })?;
        Ok(signals.filter_map(|m| std::future::ready(decode_event(&m))))
    }
}

/// Decodes a `Progress` or `Finished` signal.
fn decode_event(m: &zbus::Message) -> Option<HelperEvent> {
    let header = m.header();
    let body = m.body();
    match header.member()?.as_str() {
        "Progress" => {
            let (transaction_id, phase, percent, message): (String, String, u32, String) =
                body.deserialize().ok()?;
            Some(HelperEvent::Progress {
                transaction_id,
                phase,
                percent,
                message,
            })
        }
        "Finished" => {
            let (transaction_id, code, message, result_json): (String, String, String, String) =
                body.deserialize().ok()?;
            Some(HelperEvent::Finished {
                transaction_id,
                code,
                message,
                result_json,
            })
        }
        _ => None,
    }
}
