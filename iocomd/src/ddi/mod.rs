//! iocomd as a hawkBit DDI device (`[hawkbit]` in the configuration): a poll client of the
//! hawkBit Direct Device Integration API (also served by gooseBit) that downloads an action's
//! `.deb` artifacts into the spool and hands them to the daemon's update side through the
//! [`Installer`] trait — the only contact with the rest of the daemon.
//!
//! - [`http`]: HTTP/1.1 over TCP/rustls (ring) with timeouts, hyper's connection API.
//! - [`api`]: the controller's resources, ETag caching, HTTP statuses as [`api::ApiError`].
//! - [`model`]: the DDI JSON types.
//! - [`download`]: one artifact to disk with bounded memory, `Range`/`If-Range` resumption,
//!   SHA-256 check; `transfer`: its HTTP requests and body streaming.
//! - [`feedback`]: feedback bodies, 409/429 retries, backoff, sparse progress.
//! - [`persist`]: the state that survives a restart (`STATE/hawkbit/`).
//! - `agent`, `action`, `job` and `settle`: the poll loop, the per-action state machine, the
//!   download task, and final feedback/cancel handling.
//! - [`status`]: what the daemon publishes about the link.
//!
//! Wiring (daemon side, `crate::daemon`): [`DdiConfig::from_settings`]; if it is `Some`,
//! [`start`] with the daemon's [`Installer`] on the update slot and a `watch` sender for
//! [`DdiStatus`] (a start error stops the daemon), then spawn [`Client::run`] with the
//! daemon's shutdown token.

mod action;
mod agent;
pub mod api;
pub mod download;
pub mod feedback;
pub mod http;
pub mod installer;
mod job;
pub mod model;
pub mod persist;
mod settle;
pub mod status;
mod transfer;

pub use installer::{
    BoxFuture, Busy, InstallOutcome, Installer, PackageVersion, Reservation, SpooledFile,
    UNKNOWN_RESULT,
};
pub use job::Wait;
pub use status::{DdiState, DdiStatus};

use crate::config::{HawkbitAuth, HawkbitSettings, Settings};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Everything the DDI client needs from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DdiConfig {
    /// The `[hawkbit]` section.
    pub hawkbit: HawkbitSettings,
    /// Daemon state directory (the client uses `hawkbit/` in it).
    pub state_dir: PathBuf,
    /// Where artifacts are downloaded (the daemon's spool directory).
    pub spool_dir: PathBuf,
    /// Largest artifact accepted (`spool.max_package_size`).
    pub max_package_size: u64,
    /// Free space kept on the spool filesystem (`spool.min_free_space`).
    pub min_free_space: u64,
}

impl DdiConfig {
    /// `None` when `[hawkbit]` is off.
    pub fn from_settings(settings: &Settings, state_dir: &std::path::Path) -> Option<Self> {
        Some(Self {
            hawkbit: settings.hawkbit.clone()?,
            state_dir: state_dir.to_owned(),
            spool_dir: settings.spool.dir.clone(),
            max_package_size: settings.spool.max_package_size,
            min_free_space: settings.spool.min_free_space,
        })
    }
}

/// Why the DDI client cannot start.
#[derive(Debug, thiserror::Error)]
pub enum DdiError {
    /// The token file cannot be read.
    #[error("hawkbit.token_file {}: {source}", path.display())]
    Token {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The token is empty or not printable ASCII.
    #[error("hawkbit.token_file {}: the token must be one line of printable ASCII without spaces", .0.display())]
    TokenFormat(PathBuf),
    /// The CA or client certificate cannot be used.
    #[error("hawkbit TLS: {0}")]
    Tls(#[from] crate::net::tls::TlsError),
    /// The server URL cannot be used.
    #[error("hawkbit.server: invalid URL {0}")]
    Server(String),
    /// The state or spool directory cannot be used.
    #[error("{}: {source}", path.display())]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

fn authorization(auth: &HawkbitAuth) -> Result<Option<hyper::header::HeaderValue>, DdiError> {
    let (scheme, path) = match auth {
        HawkbitAuth::None => return Ok(None),
        HawkbitAuth::TargetToken(p) => ("TargetToken", p),
        HawkbitAuth::GatewayToken(p) => ("GatewayToken", p),
    };
    let text = std::fs::read_to_string(path).map_err(|source| DdiError::Token {
        path: path.clone(),
        source,
    })?;
    let token = text.trim();
    if token.is_empty() || !token.chars().all(|c| c.is_ascii_graphic()) {
        return Err(DdiError::TokenFormat(path.clone()));
    }
    hyper::header::HeaderValue::from_str(&format!("{scheme} {token}"))
        .map(Some)
        .map_err(|_| DdiError::TokenFormat(path.clone()))
}

/// A DDI client that passed its start checks (token, TLS material, directories), ready to
/// [`run`](Self::run).
pub struct Client {
    agent: agent::Agent,
    span: tracing::Span,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

/// Prepares the DDI client: reads the token, builds the TLS configuration, opens its state
/// and the spool directory. Every error here is a configuration the daemon refuses to start
/// with; afterwards errors are logged, retried and shown in the status.
pub fn start(
    config: DdiConfig,
    installer: Arc<dyn Installer>,
    status: watch::Sender<DdiStatus>,
) -> Result<Client, DdiError> {
    let h = &config.hawkbit;
    let server: hyper::Uri = h
        .server
        .parse()
        .map_err(|_| DdiError::Server(h.server.clone()))?;
    let tls = match &h.ca {
        Some(ca) => Some(crate::net::tls::client_config(
            ca,
            h.identity
                .as_ref()
                .map(|(cert, key)| crate::net::tls::Identity { cert, key }),
        )?),
        None => None,
    };
    let auth = authorization(&h.auth)?;
    let client = http::HttpClient::new(&server, tls, auth, h.download_auth_other_hosts);
    let api = api::Api::new(client, &h.server, &h.tenant, &h.controller_id);
    let store = persist::Store::open(&config.state_dir).map_err(|source| DdiError::Dir {
        path: config.state_dir.join("hawkbit"),
        source,
    })?;
    std::fs::create_dir_all(&config.spool_dir).map_err(|source| DdiError::Dir {
        path: config.spool_dir.clone(),
        source,
    })?;
    let span = tracing::info_span!("ddi", controller_id = %h.controller_id);
    tracing::info!(parent: &span, server = %h.server, tenant = %h.tenant, "hawkBit DDI client started");
    let agent = agent::Agent::new(config, api, installer, store, Arc::new(status));
    Ok(Client { agent, span })
}

impl Client {
    /// Polls the server and runs the actions it offers until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::Instrument::instrument(self.agent.run(shutdown), self.span).await;
    }
}

/// Runs the DDI client until `shutdown` ([`start`], then [`Client::run`]): polls the server,
/// runs the actions it offers through `installer`, and publishes its [`DdiStatus`] on
/// `status`. Fails only at start.
pub async fn run(
    config: DdiConfig,
    installer: Arc<dyn Installer>,
    status: watch::Sender<DdiStatus>,
    shutdown: CancellationToken,
) -> Result<(), DdiError> {
    start(config, installer, status)?.run(shutdown).await;
    Ok(())
}
