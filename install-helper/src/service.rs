//! The D-Bus service `org.iocom.InstallHelper1` (see docs/architecture.md, "D-Bus contract"),
//! on the system bus, on a given bus address, or peer-to-peer over a Unix stream.
//!
//! `Install` authorizes the caller, refuses with `busy` while a transaction runs, copies the fd
//! into staging while verifying it, and returns the transaction id; the rest runs on a worker
//! thread ([`worker`]) and reports through `Progress`, `Healthy` (provisional success,
//! probation running) and `Finished` (settled) signals. Only one transaction runs at a time;
//! the probation is part of it.
//!
//! The copy-and-verify pass reports `Progress` in the `verify` phase while `Install` has not
//! returned, so those signals name a transaction id the caller does not know yet: it is the
//! one `Install` then returns. A caller whose `Install` is refused `busy` may have seen the
//! running transaction's signals meanwhile; they are not its own.

use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use install_api::{CurrentTx, HelperStatus, PackageState, Phase};
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{Connection, interface};

use crate::auth::{self, AuthConfig, ServiceError};
use crate::cache::Cache;
use crate::dpkg::Dpkg;
use crate::paths::{Settings, SystemdMode};
use crate::receipt;
use crate::txn::{self, Verifier};
use crate::units::Systemd;
use install_api::ErrorCode;

mod worker;

pub use install_api::{BUS_NAME, OBJECT_PATH};

/// How the service is reached.
#[derive(Debug)]
pub enum Transport {
    /// The system bus (production).
    SystemBus,
    /// A bus at this address (tests: a private dbus-daemon).
    Bus(String),
    /// Peer-to-peer over this stream; the helper is the server side (demo, tests).
    P2p(UnixStream),
}

#[derive(Debug)]
struct Shared {
    settings: Settings,
    verifier: Arc<dyn Verifier>,
    auth: AuthConfig,
    /// The one running transaction (the busy flag).
    current: Mutex<Option<CurrentTx>>,
    /// Last method call or transaction end (for idle exit).
    last_activity: Mutex<std::time::Instant>,
    /// Held by a transaction's worker from its start until its cache sync is complete, after
    /// `Finished`
    /// ([`txn::CacheSync`]): the next transaction waits for it, and the helper is not idle.
    gate: Mutex<()>,
    /// A systemd stand-in made for each transaction instead of the system bus (tests).
    stand_in: Option<StandIn>,
}

struct StandIn(SystemdFactory);

impl std::fmt::Debug for StandIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("systemd stand-in")
    }
}

/// Makes the systemd a transaction talks to (see [`InstallHelper::with_systemd`]).
pub type SystemdFactory = Box<dyn Fn() -> Box<dyn Systemd> + Send + Sync>;

impl std::fmt::Debug for dyn Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier")
    }
}

/// The interface object.
#[derive(Debug, Clone)]
pub struct InstallHelper {
    shared: Arc<Shared>,
    p2p: bool,
}

impl InstallHelper {
    /// A service for `settings`, verifying with `verifier`, authorizing with `auth`.
    pub fn new(settings: Settings, verifier: Arc<dyn Verifier>, auth: AuthConfig) -> Self {
        InstallHelper {
            shared: Arc::new(Shared {
                settings,
                verifier,
                auth,
                current: Mutex::new(None),
                last_activity: Mutex::new(std::time::Instant::now()),
                gate: Mutex::new(()),
                stand_in: None,
            }),
            p2p: false,
        }
    }

    /// The same service with transactions talking to the systemd `make` returns (a stand-in
    /// for tests: units restarted, gated and watched on probation without a system bus).
    /// Call before serving.
    pub fn with_systemd(mut self, make: SystemdFactory) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.stand_in = Some(StandIn(make));
        }
        self
    }

    /// True while a transaction runs.
    pub fn busy(&self) -> bool {
        self.shared
            .current
            .lock()
            .map(|c| c.is_some())
            .unwrap_or(true)
    }

    /// How long the service has been idle (zero while a transaction runs or its cache sync).
    pub fn idle_for(&self) -> std::time::Duration {
        let settling = matches!(
            self.shared.gate.try_lock(),
            Err(std::sync::TryLockError::WouldBlock)
        );
        if self.busy() || settling {
            return std::time::Duration::ZERO;
        }
        self.shared
            .last_activity
            .lock()
            .map(|t| t.elapsed())
            .unwrap_or_default()
    }

    fn touch(&self) {
        if let Ok(mut t) = self.shared.last_activity.lock() {
            *t = std::time::Instant::now();
        }
    }

    async fn authorize(
        &self,
        hdr: &Header<'_>,
        conn: &Connection,
        install: bool,
    ) -> Result<u32, ServiceError> {
        self.touch();
        let not_auth = |e: &dyn std::fmt::Display| {
            ServiceError::new(
                ErrorCode::NotAuthorized,
                format!("cannot identify the caller: {e}"),
            )
        };
        let uid = if self.p2p {
            let creds = conn.peer_creds().await.map_err(|e| not_auth(&e))?;
            creds
                .unix_user_id()
                .ok_or_else(|| not_auth(&"no peer uid"))?
        } else {
            let sender = hdr.sender().ok_or_else(|| not_auth(&"no sender"))?;
            let dbus = zbus::fdo::DBusProxy::new(conn)
                .await
                .map_err(|e| not_auth(&e))?;
            dbus.get_connection_unix_user(sender.clone().into())
                .await
                .map_err(|e| not_auth(&e))?
        };
        self.shared.auth.check_uid(uid)?;
        if install && self.shared.auth.polkit && !self.p2p {
            auth::polkit_allows(conn, hdr).await?;
        }
        Ok(uid)
    }

    fn status_json(&self) -> String {
        let s = &self.shared.settings;
        let current = self
            .shared
            .current
            .lock()
            .map(|c| c.clone())
            .unwrap_or(None);
        let last = receipt::read_status(&s.paths.status())
            .ok()
            .flatten()
            .and_then(|p| p.last);
        let dpkg = Dpkg::for_settings(s);
        let receipts = receipt::last_by_package(&s.paths.receipts()).unwrap_or_default();
        let packages = Cache::new(&s.paths.cache_dir())
            .packages()
            .into_iter()
            .map(|name| {
                let st = dpkg.query(&name).ok();
                let last = receipts.get(&name);
                PackageState {
                    status: st.as_ref().map(|s| s.status.clone()),
                    version: st.and_then(|s| s.version),
                    last_result: last.map(|(c, _)| c.as_str().to_owned()),
                    last_time: last.map(|(_, t)| *t),
                    name,
                }
            })
            .collect();
        let status = HelperStatus {
            current,
            last,
            packages,
            systemd: s.systemd == SystemdMode::SystemBus,
            root: s.paths.root.display().to_string(),
            policy: self.shared.verifier.policy_summary(),
            features: vec![install_api::FEATURE_STREAM_END.to_owned()],
        };
        serde_json::to_string(&status).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

#[interface(name = "org.iocom.InstallHelper1")]
impl InstallHelper {
    /// Takes a package fd; returns the transaction id once the helper's own copy is staged and
    /// verified in the same pass (a refusal is the transaction's `Finished`). While the pass
    /// runs, `Progress` (phase `verify`, the id returned) follows the bytes copied.
    async fn install(
        &self,
        package: zbus::OwnedFd,
        mut meta: HashMap<String, zbus::OwnedVariant>,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<String, ServiceError> {
        let uid = self.authorize(&hdr, conn, true).await?;
        // A package streamed while it is received: how its transfer ended comes on this fd.
        let end = match meta.remove(install_api::meta::STREAM_END) {
            None => None,
            Some(v) => {
                let fd = zbus::Fd::try_from(v)
                    .and_then(std::os::fd::OwnedFd::try_from)
                    .map_err(|e| {
                        ServiceError::new(
                            ErrorCode::BadRequest,
                            format!(
                                "meta {}: not a file descriptor ({e})",
                                install_api::meta::STREAM_END
                            ),
                        )
                    })?;
                Some(crate::stage::StreamEnd::new(std::fs::File::from(fd)))
            }
        };
        let txid = txn::new_txid();
        {
            let mut cur = self
                .shared
                .current
                .lock()
                .map_err(|_| ServiceError::new(ErrorCode::Internal, "state lock poisoned"))?;
            if let Some(c) = cur.as_ref() {
                return Err(ServiceError::new(
                    ErrorCode::Busy,
                    format!(
                        "transaction {} is running ({})",
                        c.txid,
                        c.phase.map_or("?", Phase::as_str)
                    ),
                ));
            }
            *cur = Some(CurrentTx {
                txid: txid.clone(),
                phase: Some(Phase::Staging),
                percent: 0,
                message: String::new(),
                probation_until: None,
            });
        }
        tracing::info!(%txid, uid, advisory = ?meta.keys().collect::<Vec<_>>(), "install requested");
        let settings = self.shared.settings.clone();
        let file = std::fs::File::from(std::os::fd::OwnedFd::from(package));
        let stage_txid = txid.clone();
        let verifier = self.shared.verifier.clone();
        // Advisory, for a pipe's percentage only (a regular file's own size counts).
        let advisory_size = meta
            .get(install_api::meta::SIZE)
            .and_then(|v| u64::try_from(v.clone()).ok());
        let pass =
            worker::PassProgress::start(self.shared.clone(), emitter.to_owned(), txid.clone());
        let reports = pass.sender();
        let staged = tokio::task::spawn_blocking(move || {
            let mut report = |r| {
                let _ = reports.send(r);
            };
            let watch = crate::stage::Watch {
                advisory_size,
                min_interval: settings.progress_interval,
                report: &mut report,
            };
            let (dir, limits) = (
                settings.paths.staging_dir(),
                (settings.max_package_size, settings.space_reserve),
            );
            match end {
                Some(end) => crate::stage::take_stream(
                    file,
                    end,
                    &dir,
                    &stage_txid,
                    limits,
                    verifier.as_ref(),
                    watch,
                ),
                None => {
                    crate::stage::take(file, &dir, &stage_txid, limits, verifier.as_ref(), watch)
                }
            }
        })
        .await
        .map_err(|e| ServiceError::new(ErrorCode::Internal, e))
        .and_then(|r| r.map_err(|e| ServiceError::new(e.code(), e)));
        // Every progress of the pass is signalled before the answer and the worker's signals.
        let pass_end = pass.finish().await;
        let staged = match staged {
            Ok(p) => p,
            Err(e) => {
                if let Ok(mut c) = self.shared.current.lock() {
                    *c = None;
                }
                return Err(e);
            }
        };
        self.start_worker(txid.clone(), staged, emitter.to_owned(), pass_end);
        Ok(txid)
    }

    /// Managed packages, the running transaction and the last result, as JSON.
    async fn status(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ServiceError> {
        self.authorize(&hdr, conn, false).await?;
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.status_json())
            .await
            .map_err(|e| ServiceError::new(ErrorCode::Internal, e))
    }

    /// The persisted result of one transaction, as JSON.
    async fn result(
        &self,
        txid: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ServiceError> {
        self.authorize(&hdr, conn, false).await?;
        let receipts = self.shared.settings.paths.receipts();
        match receipt::find_receipt(&receipts, &txid) {
            Ok(Some(r)) => Ok(r.to_json()),
            Ok(None) => Err(ServiceError::new(
                ErrorCode::BadRequest,
                format!("no finished transaction {txid}"),
            )),
            Err(e) => Err(ServiceError::new(
                ErrorCode::IoError,
                format!("{}: {e}", receipts.display()),
            )),
        }
    }

    /// Progress of a transaction.
    #[zbus(signal)]
    async fn progress(
        emitter: &SignalEmitter<'_>,
        txid: &str,
        phase: &str,
        percent: u32,
        message: &str,
    ) -> zbus::Result<()>;

    /// Provisional success (since 0.2): installed, the units passed the ready gate, probation
    /// running until `probation_until` (Unix seconds); the settled `Finished` follows.
    #[zbus(signal)]
    async fn healthy(
        emitter: &SignalEmitter<'_>,
        txid: &str,
        probation_until: u64,
        result_json: &str,
    ) -> zbus::Result<()>;

    /// End of a transaction (settled): code, message and the full result JSON.
    #[zbus(signal)]
    async fn finished(
        emitter: &SignalEmitter<'_>,
        txid: &str,
        code: &str,
        message: &str,
        result_json: &str,
    ) -> zbus::Result<()>;
}

/// Serves `helper` on `transport`; returns the connection (the service runs while it lives).
pub async fn serve(mut helper: InstallHelper, transport: Transport) -> zbus::Result<Connection> {
    use zbus::connection::Builder;
    helper.p2p = matches!(transport, Transport::P2p(_));
    let builder = match transport {
        Transport::SystemBus => Builder::system().name(BUS_NAME),
        Transport::Bus(addr) => Builder::address(addr.as_str()).name(BUS_NAME),
        Transport::P2p(stream) => Builder::unix_stream(stream)
            .server(zbus::Guid::generate())
            .p2p(),
    };
    builder.serve_at(OBJECT_PATH, helper).build().await
}
