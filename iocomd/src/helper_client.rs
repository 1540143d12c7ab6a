//! Client of the install helper (`org.iocom.InstallHelper1`, the contract in the
//! `install-api` crate) over the system bus, a bus at an explicit address, or a peer-to-peer
//! socket to a helper spawned as a child (demo, tests).
//!
//! A spawned helper inherits its end of a socketpair as an extra file descriptor; every
//! `{fd}` in its arguments is replaced by that descriptor's number (e.g.
//! `iocom-install-helper --p2p-fd {fd}`); without a `{fd}`, `--p2p-fd N` is put first. It must
//! serve the interface on it as a peer-to-peer D-Bus server at `/org/iocom/InstallHelper1`.
//! Its standard input is `/dev/null`; standard output and error are inherited. It runs in a
//! process group of its own, so that [`HelperClient::close`] can end dpkg and maintainer
//! scripts it left behind together with it.

use crate::config::HelperConnection;
use futures_util::stream::{Stream, StreamExt};
use install_api::{HelperSignal, HelperStatus, InstallHelper1Proxy, TxResult};
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

mod error;

pub use error::HelperError;
pub use install_api::{BUS_NAME, OBJECT_PATH};

/// How long a spawned helper may take to answer the D-Bus handshake.
pub const SPAWN_TIMEOUT: Duration = Duration::from_secs(30);

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

/// A connection to the install helper.
#[derive(Debug)]
pub struct HelperClient {
    proxy: InstallHelper1Proxy<'static>,
    /// The spawned helper (see [`HelperClient::close`]).
    child: Option<tokio::process::Child>,
    /// Its process group (the helper leads it; dpkg and maintainer scripts are in it too).
    group: Option<nix::unistd::Pid>,
    /// Reached through a bus (it has a well-known name), not peer-to-peer.
    on_bus: bool,
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
        Self::on_connection(conn, "the system bus", true).await
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
        Self::on_connection(conn, address, true).await
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
        Self::on_connection(conn, "a peer-to-peer socket", false).await
    }

    /// Spawns `program args…` with one end of a socketpair inherited (see the module doc) and
    /// connects peer-to-peer over the other end. The child is ended by [`HelperClient::close`]
    /// or, if the client is dropped, when it notices its socket closed.
    #[allow(unsafe_code)]
    pub async fn spawn(program: &Path, args: &[String]) -> Result<Self, HelperError> {
        let spawn_err = |source| HelperError::Spawn {
            program: program.to_path_buf(),
            source,
        };
        let (ours, theirs) = UnixStream::pair().map_err(spawn_err)?;
        let fd = theirs.as_raw_fd();
        let n = fd.to_string();
        let mut cmd = tokio::process::Command::new(program);
        if !args.iter().any(|a| a.contains("{fd}")) {
            cmd.arg("--p2p-fd").arg(&n);
        }
        cmd.args(args.iter().map(|a| a.replace("{fd}", &n)))
            .stdin(Stdio::null())
            .process_group(0)
            .kill_on_drop(false);
        // SAFETY: the closure runs in the forked child before exec and only calls fcntl(2),
        // which is async-signal-safe. `fd` is open in the child (inherited from the parent,
        // where `theirs` lives until after spawn); clearing close-on-exec there only, and not
        // in the parent, keeps other children spawned meanwhile from inheriting it.
        unsafe {
            cmd.pre_exec(move || {
                let borrowed = std::os::fd::BorrowedFd::borrow_raw(fd);
                nix::fcntl::fcntl(
                    borrowed,
                    nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
                )
                .map(drop)
                .map_err(std::io::Error::from)
            });
        }
        let mut child = cmd.spawn().map_err(spawn_err)?;
        drop(theirs);
        match tokio::time::timeout(SPAWN_TIMEOUT, Self::p2p(ours)).await {
            Ok(Ok(mut client)) => {
                client.group = child
                    .id()
                    .and_then(|p| i32::try_from(p).ok())
                    .map(nix::unistd::Pid::from_raw);
                client.child = Some(child);
                Ok(client)
            }
            Ok(Err(e)) => {
                kill_group(&mut child);
                Err(e)
            }
            Err(_) => {
                kill_group(&mut child);
                Err(HelperError::SpawnTimeout {
                    program: program.to_path_buf(),
                    timeout: SPAWN_TIMEOUT,
                })
            }
        }
    }

    async fn on_connection(
        conn: zbus::Connection,
        target: &str,
        on_bus: bool,
    ) -> Result<Self, HelperError> {
        let proxy = InstallHelper1Proxy::builder(&conn)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(|source| HelperError::Connect {
                target: target.to_owned(),
                source,
            })?;
        Ok(Self {
            proxy,
            child: None,
            group: None,
            on_bus,
        })
    }

    /// The underlying proxy.
    pub fn proxy(&self) -> &InstallHelper1Proxy<'static> {
        &self.proxy
    }

    /// The spawned helper's process id, if this client spawned one.
    pub fn child_pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(tokio::process::Child::id)
    }

    /// Whether this client spawned its helper (which then dies with this daemon).
    pub fn is_spawned(&self) -> bool {
        self.group.is_some()
    }

    /// Takes the spawned helper's process, for an owner that waits for it itself (the
    /// client stays a spawned helper's client).
    pub fn take_child(&mut self) -> Option<tokio::process::Child> {
        self.child.take()
    }

    /// Resolves when the connection to the helper has closed (e.g. a spawned helper exited);
    /// the owner then reconnects or respawns.
    pub async fn closed(&self) {
        self.proxy.inner().connection().closed().await;
    }

    /// Closes the connection. A spawned helper then finishes a running transaction and exits;
    /// it gets `grace` to do so before its whole process group (dpkg, maintainer scripts) is
    /// killed. Returns its exit status (`None` if this client spawned no helper, or its status
    /// could not be read).
    pub async fn close(mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let conn = self.proxy.inner().connection().clone();
        if let Err(e) = conn.close().await {
            tracing::debug!(error = %e, "closing the helper connection");
        }
        let mut child = self.child.take()?;
        let status = match tokio::time::timeout(grace, child.wait()).await {
            Ok(Ok(status)) => Some(status),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot wait for the install helper");
                None
            }
            Err(_) => {
                tracing::warn!(?grace, "install helper did not exit; killing it");
                kill_group(&mut child);
                child.wait().await.ok()
            }
        };
        self.kill_leftovers();
        status
    }

    /// The owners of the helper's well-known bus name as they change (the bus's
    /// `NameOwnerChanged`): `Some(unique name)` when a helper instance took it (D-Bus
    /// activation, a restart), `None` when it went away (it exits when idle). `Ok(None)` for
    /// a peer-to-peer helper, which has no bus name.
    pub async fn owner_changes(
        &self,
    ) -> Result<Option<impl Stream<Item = Option<String>> + Send + Unpin + 'static>, HelperError>
    {
        if !self.on_bus {
            return Ok(None);
        }
        let changes = self
            .proxy
            .inner()
            .receive_owner_changed()
            .await
            .map_err(|source| HelperError::Call {
                method: "AddMatch",
                source,
            })?;
        Ok(Some(changes.map(|o| o.map(|n| n.to_string()))))
    }

    /// Kills whatever a spawned helper that is gone left running in its process group (an
    /// orphaned dpkg would keep the dpkg lock and block every later install).
    pub fn kill_leftovers(&self) {
        if let Some(group) = self.group
            && nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL).is_ok()
        {
            tracing::warn!(
                pgid = group.as_raw(),
                "killed processes the install helper left behind"
            );
        }
    }

    /// Hands `package` (an open file) to the helper; returns the transaction id.
    pub async fn install(
        &self,
        package: &impl AsFd,
        meta: &InstallMeta,
    ) -> Result<String, HelperError> {
        use install_api::meta as key;
        let mut m: HashMap<&str, zbus::Variant<'_>> = HashMap::new();
        m.insert(key::SHA256, zbus::Variant::from(meta.sha256.as_str()));
        m.insert(key::SIZE, zbus::Variant::from(meta.size));
        m.insert(key::ORIGIN, zbus::Variant::from(meta.origin.as_str()));
        self.call_install(package, m).await
    }

    async fn call_install(
        &self,
        package: &impl AsFd,
        meta: HashMap<&str, zbus::Variant<'_>>,
    ) -> Result<String, HelperError> {
        self.proxy
            .install(zbus::Fd::from(package.as_fd()), meta)
            .await
            .map_err(|source| HelperError::Call {
                method: "Install",
                source,
            })
    }

    /// `Install` of a package streamed while it is received: `package` is the read end of
    /// the pipe fed with its bytes, `end` the read end of the pipe that says how the transfer
    /// ended (meta [`install_api::meta::STREAM_END`]). Answers once the stream ended and the
    /// helper took its copy; fails (`bad-request`) for a stream not confirmed complete.
    pub async fn install_stream(
        &self,
        package: &impl AsFd,
        end: &impl AsFd,
        origin: &str,
    ) -> Result<String, HelperError> {
        use install_api::meta as key;
        let mut m: HashMap<&str, zbus::Variant<'_>> = HashMap::new();
        m.insert(key::ORIGIN, zbus::Variant::from(origin));
        m.insert(
            key::STREAM_END,
            zbus::Variant::from(zbus::Fd::from(end.as_fd())),
        );
        self.call_install(package, m).await
    }

    /// `Status()`: managed packages, the running transaction and the last result.
    pub async fn status(&self) -> Result<HelperStatus, HelperError> {
        let text = self
            .proxy
            .status()
            .await
            .map_err(|source| HelperError::Call {
                method: "Status",
                source,
            })?;
        serde_json::from_str(&text).map_err(|e| HelperError::Decode {
            method: "Status",
            message: e.to_string(),
        })
    }

    /// `Result(transaction_id)`: the persisted result of one transaction.
    pub async fn result(&self, transaction_id: &str) -> Result<TxResult, HelperError> {
        let text = self
            .proxy
            .result(transaction_id)
            .await
            .map_err(|source| HelperError::Call {
                method: "Result",
                source,
            })?;
        serde_json::from_str(&text).map_err(|e| HelperError::Decode {
            method: "Result",
            message: e.to_string(),
        })
    }

    /// The helper's `Progress` and `Finished` signals, in the order the helper sent them, from
    /// the helper only (the proxy filters by sender on a bus). Subscribe before calling
    /// [`HelperClient::install`] so that no signal is missed. Signals that do not decode are
    /// skipped.
    pub async fn events(
        &self,
    ) -> Result<impl Stream<Item = HelperSignal> + Send + Unpin + 'static, HelperError> {
        let signals = self
            .proxy
            .inner()
            .receive_all_signals()
            .await
            .map_err(|source| HelperError::Call {
                method: "AddMatch",
                source,
            })?;
        Ok(signals.filter_map(|m| std::future::ready(install_api::decode_signal(&m))))
    }
}

/// Kills a spawned helper's whole process group (it leads its own group).
fn kill_group(child: &mut tokio::process::Child) {
    match child.id().and_then(|p| i32::try_from(p).ok()) {
        Some(pid) => {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        None => {
            let _ = child.start_kill();
        }
    }
}
