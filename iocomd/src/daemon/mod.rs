//! The daemon: listeners, the core loop and the install helper, wired by channels.
//!
//! [`run`] starts one [`crate::net::listen`] task per [`Listener`] and a task forwarding the
//! helper's signals; all of them send typed events to the core loop ([`core`]). It owns two
//! sides with one seam between them: the connection side ([`peers`]: every connection's
//! [`crate::proto::endpoint::DeviceEndpoint`], streams, transmission) and the update side
//! ([`updates`]: the state machine [`update::Update`], the helper link, the last result), which
//! takes packages from any [`update::Origin`] (`submit`) and derives the published status.
//! Each connection gets its own endpoint (its own copy of the conf blocks), so a second
//! controller's stream can be refused without touching the running one; the status block is
//! written into every endpoint.
//!
//! A fleet server (`[hawkbit]`) reaches the update side through [`fleet`]: the DDI client
//! ([`crate::ddi`]) runs as a task of its own and asks the core loop for the slot and the
//! installs over the same channel.
//!
//! Authentication: TLS listeners require a password account from the configuration (wrong
//! password or unknown user → the connection is refused, counted in `auth_fail` and logged
//! without the password); plain TCP peers may read the status but push only when
//! `allow_plain_tcp_push` is set (the demo on loopback). Serial lines ([`crate::net::serial`])
//! feed the core exactly like TCP connections; their peers push only when
//! `allow_serial_push` is set (a serial line has no TLS and IOCOM sends no password on it).

mod core;
mod fleet;
mod helper_link;
mod notify;
mod peers;
mod trim;
pub use self::peers::MAX_PEERS;
pub(crate) mod update;
mod updates;

use crate::config::{DeviceNumber, Settings};
use crate::helper_client::HelperClient;
use crate::net::NetEvent;
use crate::proto::conn::{ConnConfig, LocalIdentity, PeerAuth, Role, Side};
use crate::proto::password::{Account, Accounts};
use crate::spool::{Spool, SpoolError};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// How long shutdown waits for the fleet client to record its state and stop.
const FLEET_STOP: Duration = Duration::from_secs(3);

/// How long shutdown waits for a running install to finish before leaving it to the helper.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// The receive frame size we announce: the protocol's largest. A peer sends frames of the
/// smaller of its own size and ours, so reference peers (1392) are unaffected, while our own
/// controller moves 16 KiB per frame (12 times fewer frames, and a 44-frame window of 704 KiB).
pub const DEVICE_FRAME_SIZE: u32 = crate::proto::frame::MAX_FRAME_SIZE;

/// A bound listening socket, plain TCP or TLS.
pub struct Listener {
    /// The socket (bind it to `127.0.0.1:0` in tests and read `local_addr` first).
    pub tcp: TcpListener,
    /// TLS acceptor; `None` for plain TCP.
    pub tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("tcp", &self.tcp.local_addr().ok())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The spool directory is unusable.
    #[error("spool: {0}")]
    Spool(#[from] SpoolError),
    /// The configuration cannot be used by the protocol core.
    #[error("device configuration: {0}")]
    Endpoint(#[from] crate::proto::endpoint::EndpointError),
    /// The `[hawkbit]` client cannot start (token file, TLS files, directories).
    #[error("hawkbit: {0}")]
    Fleet(#[from] crate::ddi::DdiError),
    /// A connect-up endpoint cannot be set up (TLS files, password file, server name).
    #[error("endpoints.connect {target}: {message}")]
    Connect {
        /// `host:port`.
        target: String,
        /// What is wrong.
        message: String,
    },
}

/// Resolves a connect-up endpoint: target (TLS connector, server name) and the connection
/// configuration carrying our password.
fn connect_up(
    settings: &Settings,
    ep: &crate::config::ConnectEndpoint,
) -> Result<(crate::net::ConnectTarget, ConnConfig), DaemonError> {
    let addr = if ep.host.contains(':') {
        format!("[{}]:{}", ep.host, ep.port)
    } else {
        format!("{}:{}", ep.host, ep.port)
    };
    let fail = |message: String| DaemonError::Connect {
        target: addr.clone(),
        message,
    };
    let tls = match &ep.tls {
        Some(t) => {
            let identity = t
                .identity
                .as_ref()
                .map(|(cert, key)| crate::net::tls::Identity { cert, key });
            let connector =
                crate::net::tls::connector(&t.ca, identity).map_err(|e| fail(e.to_string()))?;
            let name = rustls_pki_types::ServerName::try_from(t.server_name.clone())
                .map_err(|e| fail(format!("server name {:?}: {e}", t.server_name)))?;
            Some((connector, name))
        }
        None => None,
    };
    let mut cfg = ConnConfig::new(Role::Device, Side::Client, identity(settings));
    cfg.frame_size = DEVICE_FRAME_SIZE;
    if let Some(f) = &ep.password_file {
        let text = std::fs::read_to_string(f)
            .map_err(|e| fail(format!("password file {}: {e}", f.display())))?;
        cfg.identity.password = text.trim_end_matches(['\n', '\r']).to_owned();
    }
    let target = crate::net::ConnectTarget {
        addr: addr.clone(),
        tls,
    };
    Ok((target, cfg))
}

/// An event for the core loop.
#[derive(Debug)]
pub(crate) enum CoreEvent {
    /// A helper signal.
    Helper(install_api::HelperSignal),
    /// The helper's signal stream ended or its connection closed (helper gone).
    HelperGone(Arc<HelperClient>),
    /// The link to the helper is back (reconnected, or a new child spawned).
    HelperBack(Arc<HelperClient>),
    /// The helper's `Status()` answer (read off the core loop).
    HelperStatus(Box<Result<install_api::HelperStatus, crate::helper_client::HelperError>>),
    /// The helper's bus name changed owner: `Some` a new instance, `None` it went away.
    HelperOwner {
        helper: Arc<HelperClient>,
        owner: Option<String>,
    },
    /// The status of a new helper instance, for its policy and features (read off the core
    /// loop).
    HelperPolicy(Box<Result<install_api::HelperStatus, crate::helper_client::HelperError>>),
    /// The spool's writing thread failed (the transfer fails with this error).
    SpoolFailed { push: u64, error: SpoolError },
    /// The spool's queue had been full and has room again (poll the stream).
    SpoolReady { push: u64 },
    /// A streamed push ended on our side (its CRC checked): `Ok(bytes)`.
    Streamed {
        push: u64,
        result: Result<u64, SpoolError>,
    },
    /// Finishing the spool file ended.
    Spooled {
        push: u64,
        result: Result<crate::spool::SpooledPackage, SpoolError>,
    },
    /// The `Install` call returned.
    InstallCall {
        push: u64,
        result: Result<String, crate::helper_client::HelperError>,
    },
    /// A request of the fleet (hawkBit DDI) client.
    Fleet(fleet::FleetRequest),
}

fn identity(settings: &Settings) -> LocalIdentity {
    LocalIdentity {
        device_name: settings.device.name.clone(),
        device_nr: match settings.device.number {
            DeviceNumber::Fixed(n) => n,
            DeviceNumber::Auto => crate::proto::auth::AUTO_DEVICE_NR,
        },
        network_name: settings.device.network.clone(),
        unique_id: None,
        password: String::new(),
    }
}

/// The deadline for an accepted connection's TLS handshake, IOCOM handshake and
/// authentication: a controller needs a few round trips, a peer that holds a slot without
/// authenticating gets no more (see [`peers::MAX_PENDING`]).
pub const LISTEN_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

fn conn_config(settings: &Settings, tls: bool) -> ConnConfig {
    let mut cfg = ConnConfig::new(Role::Device, Side::Server, identity(settings));
    cfg.frame_size = DEVICE_FRAME_SIZE;
    cfg.handshake_timeout = LISTEN_HANDSHAKE_TIMEOUT;
    if tls {
        cfg.peer_auth = PeerAuth::Accounts(Accounts {
            accounts: settings
                .accounts
                .iter()
                .map(|a| Account {
                    user: a.user.clone(),
                    network: "*".into(),
                    password_hash: a
                        .password_hash
                        .as_ref()
                        .map_or_else(|| "*".to_owned(), |h| h.as_str().to_owned()),
                    admin: false,
                    certificate_sha256: a.certificate_sha256,
                })
                .collect(),
        });
    }
    cfg
}

/// Reopening a serial port that went away: after 1 s, doubling up to 30 s.
const SERIAL_REOPEN: crate::net::Backoff = crate::net::Backoff {
    initial: Duration::from_secs(1),
    max: Duration::from_secs(30),
};

/// A serial line's connection configuration: the device role, our end of the connect sequence,
/// the serial frame size and timers; no accounts (IOCOM sends no password on a serial line).
fn serial_config(settings: &Settings, side: crate::config::SerialSide) -> ConnConfig {
    let side = match side {
        crate::config::SerialSide::Client => Side::Client,
        crate::config::SerialSide::Server => Side::Server,
    };
    ConnConfig::serial(Role::Device, side, identity(settings))
}

/// The channels on which the connection tasks of every network source (listeners, connect-up,
/// serial lines) report to the core loop: one for plain sources, one for TLS ones, read by
/// the core loop itself (no task in between: a hop per received frame costs a wake-up).
struct NetChannels {
    plain: mpsc::Sender<NetEvent>,
    secure: mpsc::Sender<NetEvent>,
}

impl NetChannels {
    fn new() -> (Self, core::NetInputs) {
        let (plain, plain_rx) = mpsc::channel::<NetEvent>(1024);
        let (secure, secure_rx) = mpsc::channel::<NetEvent>(1024);
        (
            Self { plain, secure },
            core::NetInputs::new(plain_rx, secure_rx),
        )
    }

    /// The sender for a source, `secure` = TLS.
    fn sender(&self, secure: bool) -> mpsc::Sender<NetEvent> {
        if secure {
            self.secure.clone()
        } else {
            self.plain.clone()
        }
    }
}

/// Runs the daemon until `shutdown` is cancelled: serves `listeners` and connects up to the
/// controllers of `settings.connect` (reconnecting with backoff), receives pushes into
/// `settings.spool.dir` and hands them to `helper` (`None`: every push ends with
/// `helper-unavailable`). Removes stale partial spool files first and publishes the helper's
/// last result. On shutdown a running receive is dropped (partial file deleted); a running
/// install is left to a helper on the bus (it persists the result, published after the
/// restart) and awaited for at most [`DRAIN_TIMEOUT`] when the helper is our child (demo).
pub async fn run(
    listeners: Vec<Listener>,
    settings: Settings,
    helper: Option<HelperClient>,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    std::fs::create_dir_all(&settings.spool.dir).map_err(|source| SpoolError::Io {
        path: settings.spool.dir.clone(),
        source,
    })?;
    let stale = Spool::remove_stale(&settings.spool.dir)?;
    for p in &stale {
        tracing::info!(path = %p.display(), "removed a stale partial spool file");
    }
    let (tx, rx) = mpsc::channel::<CoreEvent>(1024);
    let (net, net_rx) = NetChannels::new();
    let net_stop = shutdown.child_token();
    let mut tasks = tokio::task::JoinSet::new();
    let mut aux = tokio::task::JoinSet::new();
    for l in listeners {
        let secure = l.tls.is_some();
        let ntx = net.sender(secure);
        let cfg = conn_config(&settings, secure);
        tasks.spawn(crate::net::listen(l.tcp, l.tls, cfg, ntx, net_stop.clone()));
    }
    for ep in &settings.connect {
        let (target, cfg) = connect_up(&settings, ep)?;
        let ntx = net.sender(target.tls.is_some());
        tasks.spawn(crate::net::connect(
            target,
            cfg,
            crate::net::Backoff::default(),
            ntx,
            net_stop.clone(),
        ));
    }
    for ep in &settings.serial {
        let ntx = net.sender(false);
        tasks.spawn(crate::net::serial::serve(
            ep.params.clone(),
            serial_config(&settings, ep.side),
            SERIAL_REOPEN,
            ntx,
            net_stop.clone(),
        ));
    }
    let helper = helper.map(Arc::new);
    if let Some(h) = &helper {
        // Subscribed before the loop runs (no signal is missed); the status is read off the
        // loop, so connections are served (and told busy) while a recovering helper is slow.
        if let Some(signals) = helper_link::subscribe(h).await {
            aux.spawn(helper_link::forward(h.clone(), signals, tx.clone()));
        }
        if let Some(owners) = helper_link::subscribe_owner(h).await {
            aux.spawn(helper_link::follow_owner(h.clone(), owners, tx.clone()));
        }
        aux.spawn(helper_link::read_status(h.clone(), tx.clone()));
    }
    let fleet = crate::ddi::DdiConfig::from_settings(&settings, &settings.state_dir);
    let mut fleet_task = None;
    let mut core = core::Core::new(settings, helper, tx.clone())?;
    if let Some(config) = fleet {
        let (status, watch) = tokio::sync::watch::channel(crate::ddi::DdiStatus::default());
        let installer = fleet::FleetInstaller::new(tx.clone(), core.versions());
        let client = crate::ddi::start(config, Arc::new(installer), status)?;
        core.set_fleet_status(watch);
        fleet_task = Some(tokio::spawn(client.run(shutdown.child_token())));
    }
    drop(tx);
    drop(net);
    let r = core.run(rx, net_rx, shutdown.clone()).await;
    net_stop.cancel();
    aux.abort_all();
    if let Some(t) = fleet_task {
        // It records an install it handed over (reported after the restart), then stops.
        let abort = t.abort_handle();
        if tokio::time::timeout(FLEET_STOP, t).await.is_err() {
            abort.abort();
        }
    }
    let drained = tokio::time::timeout(Duration::from_secs(6), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tasks.abort_all();
    }
    r
}
