//! Test support for the daemon tests: a daemon on 127.0.0.1:0 with the demo environment and
//! the real install helper as a child (dpkg into an isolated root), and a controller built on
//! `ControllerEndpoint` over `net::connect`.
#![allow(dead_code)]

pub mod bus;

use iocomd::config::Settings;
use iocomd::daemon::{self, Listener};
use iocomd::demo::DemoEnv;
use iocomd::net::{self, Backoff, ConnHandle, ConnectTarget, NetEvent};
use iocomd::proto::conn::{ConnConfig, ConnEvent, LocalIdentity, Role, Side};
use iocomd::proto::endpoint::ControllerEndpoint;
use iocomd::proto::frame::{FrameFlags, flags};
use iocomd::proto::stream::controller::Progress;
use iocomd::proto::stream::{ChunkSink, ChunkSource, SourceRead};
use iocomd::proto::sysframe::SystemFrame;
use iocomd::status::UpdateStatus;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Generous limit for anything a test waits for (loaded 2-core machine).
pub const WAIT: Duration = Duration::from_secs(120);

/// The install helper binary: `$IOCOMD_TEST_HELPER`, else the workspace's debug build, which
/// must exist and be newer than the helper's sources (`cargo test --workspace`, as
/// `scripts/test` runs it, builds it; so does `cargo build -p install-helper`).
pub fn helper_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("IOCOMD_TEST_HELPER") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("iocom-install-helper");
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} is missing: run `cargo build -p install-helper` (or `cargo test --workspace`)",
                bin.display()
            )
        });
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../install-helper/src");
    let newest = newest_mtime(&src);
    assert!(
        newest.is_none_or(|t| t <= built),
        "{} is older than its sources: run `cargo build -p install-helper`",
        bin.display()
    );
    bin
}

fn newest_mtime(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let t = if e.file_type().ok()?.is_dir() {
            newest_mtime(&e.path())
        } else {
            e.metadata().ok()?.modified().ok()
        };
        newest = newest.max(t);
    }
    newest
}

/// A running daemon.
pub struct Daemon {
    pub addr: SocketAddr,
    /// The TLS listener's address and its certificate (the CA for clients), if any.
    pub tls: Option<(SocketAddr, PathBuf)>,
    pub env: DemoEnv,
    pub settings: Settings,
    pub shutdown: CancellationToken,
    pub task: Option<tokio::task::JoinHandle<Result<(), daemon::DaemonError>>>,
    pub child: Option<tokio::process::Child>,
    /// Arguments added to the helper's command line (kept across [`Daemon::restart`]).
    helper_extra: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts a demo daemon; `tune` adjusts its settings.
    pub async fn start(tune: impl FnOnce(&mut Settings)) -> Daemon {
        Self::start_with(tune, false).await
    }

    /// Starts a demo daemon, with a second, TLS listener when `tls` (certificate for
    /// `localhost`, self-signed).
    pub async fn start_with(tune: impl FnOnce(&mut Settings), tls: bool) -> Daemon {
        Self::start_in(tempfile::tempdir().unwrap(), tune, tls, Vec::new()).await
    }

    /// Starts a demo daemon whose helper gets `extra` arguments too (e.g. a shorter
    /// `--progress-interval-ms`).
    pub async fn start_with_helper_args(
        extra: &[&str],
        tune: impl FnOnce(&mut Settings),
    ) -> Daemon {
        let extra = extra.iter().map(|a| a.to_string()).collect();
        Self::start_in(tempfile::tempdir().unwrap(), tune, false, extra).await
    }

    /// Stops the daemon and starts a new one on the same state (helper state, dpkg root,
    /// spool); `tune` runs on the new settings before it starts.
    pub async fn restart(mut self, tune: impl FnOnce(&mut Settings)) -> Daemon {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            tokio::time::timeout(WAIT, t)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
        }
        if let Some(mut c) = self.child.take() {
            let _ = tokio::time::timeout(WAIT, c.wait()).await;
        }
        let tls = self.tls.is_some();
        let extra = std::mem::take(&mut self.helper_extra);
        Self::start_in(self._dir, tune, tls, extra).await
    }

    async fn start_in(
        dir: tempfile::TempDir,
        tune: impl FnOnce(&mut Settings),
        tls: bool,
        helper_extra: Vec<String>,
    ) -> Daemon {
        let state = dir.path().join("state");
        let env = iocomd::demo::prepare(&state).unwrap();
        let mut settings = Settings::demo(&env.state_dir);
        settings.listen.clear();
        tune(&mut settings);
        let uid = nix::unistd::getuid().as_raw().to_string();
        // `{fd}` as in the configuration (the demo binary relies on the default instead).
        let mut args: Vec<String> = vec![
            "--p2p-fd".into(),
            "{fd}".into(),
            "--root".into(),
            env.dpkg_root.to_string_lossy().into(),
            "--state-dir".into(),
            env.helper_state.to_string_lossy().into(),
            "--policy".into(),
            env.policy.to_string_lossy().into(),
            "--allow-uid".into(),
            uid,
        ];
        args.extend(helper_extra.iter().cloned());
        // The daemon respawns the helper with the same program and arguments.
        settings.helper = iocomd::config::HelperConnection::Spawn {
            program: helper_binary(),
            args: args.clone(),
        };
        let mut spawned = iocomd::helper_client::HelperClient::spawn(&helper_binary(), &args)
            .await
            .unwrap();
        let helper_child = spawned.take_child().unwrap();
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let mut listeners = vec![Listener { tcp, tls: None }];
        let mut tls_info = None;
        if tls {
            let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
            let cert = dir.path().join("cert.pem");
            let key = dir.path().join("key.pem");
            std::fs::write(&cert, ck.cert.pem()).unwrap();
            std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
            let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tls_info = Some((tcp.local_addr().unwrap(), cert.clone()));
            listeners.push(Listener {
                tcp,
                tls: Some(
                    net::tls::acceptor(
                        iocomd::net::tls::Identity {
                            cert: cert.as_ref(),
                            key: key.as_ref(),
                        },
                        None,
                    )
                    .unwrap(),
                ),
            });
        }
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(daemon::run(
            listeners,
            settings.clone(),
            Some(spawned),
            shutdown.clone(),
        ));
        Daemon {
            addr,
            tls: tls_info,
            env,
            settings,
            shutdown,
            task: Some(task),
            child: Some(helper_child),
            helper_extra,
            _dir: dir,
        }
    }

    /// Stops the daemon and waits for it and the helper to exit.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            tokio::time::timeout(WAIT, t)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
        }
        if let Some(mut c) = self.child.take() {
            let _ = tokio::time::timeout(WAIT, c.wait()).await;
        }
    }

    /// Files left in the spool directory.
    pub fn spool_files(&self) -> Vec<PathBuf> {
        match std::fs::read_dir(&self.settings.spool.dir) {
            Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// `dpkg --root ROOT -s pkg`: the installed version, if any.
    pub fn installed(&self, pkg: &str) -> Option<String> {
        installed_version(&self.env.dpkg_root, pkg)
    }
}

/// `dpkg --root ROOT -s pkg` → `Version:` of an installed package.
pub fn installed_version(root: &Path, pkg: &str) -> Option<String> {
    let out = Command::new("dpkg")
        .arg("--root")
        .arg(root)
        .args(["-s", pkg])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !text.contains("Status: install ok installed") {
        return None;
    }
    text.lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .map(str::to_owned)
}

/// Builds and signs (with the demo key) a package `name` `version` with `payload` bytes of
/// incompressible data.
pub fn build_package(env: &DemoEnv, name: &str, version: &str, payload: usize) -> PathBuf {
    build_package_with(env, name, version, "", payload)
}

/// [`build_package`] with `control` lines added to its control file (e.g. `Depends: …\n`).
pub fn build_package_with(
    env: &DemoEnv,
    name: &str,
    version: &str,
    control: &str,
    payload: usize,
) -> PathBuf {
    let work = env.state_dir.join(format!("build-{name}-{version}"));
    let debian = work.join("DEBIAN");
    let share = work.join("usr/share").join(name);
    std::fs::create_dir_all(&debian).unwrap();
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(
        debian.join("control"),
        format!(
            "Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: t <t@t.invalid>\n\
             {control}Description: test package\n test\n"
        ),
    )
    .unwrap();
    std::fs::write(share.join("data.bin"), pseudo_random(payload, 99)).unwrap();
    let out = env.state_dir.join(format!("{name}_{version}_all.deb"));
    let st = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "-z0", "--build"])
        .arg(&work)
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    iocomd::demo::sign(&env.gnupghome, &env.key_fingerprint, &out).unwrap();
    out
}

/// Deterministic incompressible bytes.
pub fn pseudo_random(n: usize, mut seed: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

/// Upload source: the bytes, optionally holding back (Pending) after `hold_at` bytes.
pub struct Source {
    pub data: Vec<u8>,
    pub pos: usize,
    pub hold_at: Option<usize>,
}

impl ChunkSource for Source {
    fn open(&mut self, _select: i64) -> Result<(), u8> {
        Ok(())
    }
    fn read(&mut self, buf: &mut [u8]) -> Result<SourceRead, u8> {
        let limit = self.hold_at.unwrap_or(self.data.len()).min(self.data.len());
        if self.pos >= limit {
            return Ok(if limit < self.data.len() {
                SourceRead::Pending
            } else {
                SourceRead::End
            });
        }
        let n = (limit - self.pos).min(buf.len());
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(SourceRead::Bytes(n))
    }
}

/// A sink that refuses every stream (a controller that only sends).
pub struct NoSink;
impl ChunkSink for NoSink {
    fn open(&mut self, _: i64) -> Result<(), iocomd::proto::stream::LocalError> {
        Err(1.into())
    }
    fn write(&mut self, _: &[u8]) -> Result<(), iocomd::proto::stream::LocalError> {
        Err(1.into())
    }
    fn close(&mut self, _: bool) {}
}

impl Tls {
    /// TLS to the daemon's TLS listener as `user` with `password`.
    pub fn to(ca: &Path, user: &str, password: &str) -> Tls {
        Tls {
            connector: net::tls::connector(ca, None).unwrap(),
            server_name: rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            user: user.into(),
            password: password.into(),
        }
    }
}

/// Credentials for a TLS connection.
pub struct Tls {
    pub connector: tokio_rustls::TlsConnector,
    pub server_name: rustls_pki_types::ServerName<'static>,
    pub user: String,
    pub password: String,
}

/// A controller connected to one device.
pub struct Ctl {
    events: mpsc::Receiver<NetEvent>,
    handle: Option<ConnHandle>,
    id: u64,
    pub ep: ControllerEndpoint,
    stop: CancellationToken,
    frame_size: usize,
    /// Corrupt one tod_buf byte on the wire (once).
    pub corrupt: bool,
    pub closed: Option<String>,
}

impl Ctl {
    /// Connects (plain TCP unless `tls`) to `device` at `addr`, announcing 16 KiB frames like
    /// iocomctl (a streaming controller).
    pub async fn connect(addr: SocketAddr, device: &str, tls: Option<Tls>) -> Ctl {
        Self::connect_sized(addr, device, tls, iocomd::proto::frame::MAX_FRAME_SIZE).await
    }

    /// [`Ctl::connect`] announcing `frame_size` (1392: what a stock C controller such as ispy
    /// announces).
    pub async fn connect_sized(
        addr: SocketAddr,
        device: &str,
        tls: Option<Tls>,
        frame_size: u32,
    ) -> Ctl {
        let (user, password, target_tls) = match tls {
            Some(t) => (t.user, t.password, Some((t.connector, t.server_name))),
            None => ("ctl".to_owned(), String::new(), None),
        };
        let identity = LocalIdentity {
            device_name: user,
            device_nr: 0,
            network_name: "iocafenet".into(),
            unique_id: None,
            password,
        };
        let mut cfg = ConnConfig::new(Role::Controller, Side::Client, identity);
        cfg.frame_size = frame_size;
        let (tx, events) = mpsc::channel(4096);
        let stop = CancellationToken::new();
        tokio::spawn(net::connect(
            ConnectTarget {
                addr: addr.to_string(),
                tls: target_tls,
            },
            cfg,
            Backoff {
                initial: Duration::from_secs(30),
                max: Duration::from_secs(30),
            },
            tx,
            stop.clone(),
        ));
        Ctl {
            events,
            handle: None,
            id: 0,
            ep: ControllerEndpoint::new(device),
            stop,
            frame_size: 0,
            corrupt: false,
            closed: None,
        }
    }

    /// Handles the next batch of events (waits at most `max`). False once closed.
    pub async fn pump(&mut self, max: Duration) -> bool {
        let first = match tokio::time::timeout(max, self.events.recv()).await {
            Ok(Some(ev)) => ev,
            Ok(None) => return false,
            Err(_) => return self.closed.is_none(),
        };
        self.on_event(first).await;
        while let Ok(ev) = self.events.try_recv() {
            self.on_event(ev).await;
        }
        self.closed.is_none()
    }

    async fn on_event(&mut self, ev: NetEvent) {
        match ev {
            NetEvent::Connected { id, handle, .. } => {
                self.id = id;
                self.handle = Some(handle);
            }
            NetEvent::Conn { id, event } => {
                if let ConnEvent::Authenticated {
                    send_frame_size, ..
                } = &event
                {
                    self.frame_size = *send_frame_size as usize;
                }
                let out = self.ep.handle(id, event).unwrap();
                if let Some(h) = &self.handle {
                    for i in out.infos {
                        let _ = h.queue_system(SystemFrame::MblkInfo(i)).await;
                    }
                }
            }
            NetEvent::QueueFailed { error, .. } => panic!("queue failed: {error}"),
            NetEvent::Closed { reason, .. } => {
                self.closed = Some(reason.to_string());
                self.stop.cancel();
            }
        }
    }

    /// Sends what changed in our blocks.
    pub async fn flush(&mut self) {
        self.transmit().await;
    }

    async fn transmit(&mut self) {
        let Some(h) = &self.handle else { return };
        if self.frame_size == 0 {
            return;
        }
        for mut f in self.ep.transmit(self.id, self.frame_size, 256) {
            // conf_imp is the device's block 10 (exp 8, conf_exp 9, conf_imp 10, info 11).
            if self.corrupt
                && f.mblk_id == 10
                && f.payload.len() > 400
                && f.flags & flags::COMPRESSED == 0
            {
                f.payload[200] ^= 0x5A;
                self.corrupt = false;
            }
            let _ = h
                .queue_data(f.mblk_id, f.addr, FrameFlags::from_bits(f.flags), f.payload)
                .await;
        }
    }

    /// Waits until the device's blocks are bound and its status arrived, and the device is not
    /// waiting for its install helper's first status (a push before that is told busy: on a
    /// loaded machine a test's first push could otherwise beat the helper's answer).
    pub async fn wait_ready(&mut self) {
        let until = Instant::now() + WAIT;
        let ready = |c: &Self| {
            c.ep.ready()
                && c.status()
                    .is_some_and(|s| !s.msg.starts_with("waiting for the install helper"))
        };
        while !ready(self) {
            assert!(Instant::now() < until, "device not ready");
            assert!(
                self.pump(Duration::from_millis(200)).await,
                "closed: {:?}",
                self.closed
            );
            self.transmit().await;
        }
    }

    /// The device's status signals.
    pub fn status(&self) -> Option<UpdateStatus> {
        let info = self.ep.peer_info()?.as_ref().ok()?;
        let ix = self.ep.node().find("exp", None)?;
        UpdateStatus::read_with_info(info, self.ep.node().block(ix)?)
    }

    /// The device's `tod_err`.
    pub fn tod_err(&self) -> Option<u8> {
        self.ep.device_status()
    }

    /// Waits until `pred(status)` holds.
    pub async fn wait_status(&mut self, pred: impl Fn(&UpdateStatus) -> bool) -> UpdateStatus {
        let until = Instant::now() + WAIT;
        loop {
            if let Some(s) = self.status()
                && pred(&s)
            {
                return s;
            }
            assert!(
                Instant::now() < until,
                "status never matched: {:?}",
                self.status()
            );
            assert!(
                self.pump(Duration::from_millis(200)).await,
                "closed: {:?}",
                self.closed
            );
            self.transmit().await;
        }
    }

    /// Uploads from `source` to select 1 until the stream ends or `until_bytes` were sent.
    pub async fn upload(
        &mut self,
        source: &mut Source,
        stop_at: Option<usize>,
    ) -> Option<Progress> {
        self.ep.start_upload(1).unwrap();
        self.run_upload(source, stop_at).await
    }

    /// Continues an upload started by [`Ctl::upload`] until it ends.
    pub async fn upload_continue(&mut self, source: &mut Source) -> Progress {
        self.run_upload(source, None).await.unwrap()
    }

    async fn run_upload(
        &mut self,
        source: &mut Source,
        stop_at: Option<usize>,
    ) -> Option<Progress> {
        let until = Instant::now() + WAIT;
        loop {
            let p = self
                .ep
                .poll_transfer(Instant::now(), source, &mut NoSink)
                .unwrap();
            if p != Progress::Running {
                return Some(p);
            }
            self.transmit().await;
            if stop_at.is_some_and(|n| source.pos >= n) {
                return None;
            }
            assert!(Instant::now() < until, "upload did not finish");
            assert!(
                self.pump(Duration::from_millis(50)).await,
                "closed: {:?}",
                self.closed
            );
        }
    }

    /// Waits until `tod_err` is no longer 0 or 4 (pending); returns it.
    pub async fn wait_final_tod_err(&mut self) -> Option<u8> {
        let until = Instant::now() + WAIT;
        while matches!(self.tod_err(), None | Some(0) | Some(4)) {
            assert!(Instant::now() < until, "tod_err stays {:?}", self.tod_err());
            assert!(
                self.pump(Duration::from_millis(200)).await,
                "closed: {:?}",
                self.closed
            );
            self.transmit().await;
        }
        self.tod_err()
    }

    /// Drops the connection.
    pub fn disconnect(&self) {
        self.stop.cancel();
    }

    /// Waits until the connection closed; returns the reason.
    pub async fn wait_closed(&mut self) -> String {
        let until = Instant::now() + WAIT;
        while self.closed.is_none() {
            assert!(Instant::now() < until, "not closed");
            self.pump(Duration::from_millis(200)).await;
        }
        self.closed.clone().unwrap_or_default()
    }
}

/// Pushes `bytes` and waits for the final result (a new `upd_seq`).
pub async fn push(addr: SocketAddr, bytes: Vec<u8>) -> (Progress, UpdateStatus, Option<u8>) {
    let mut c = Ctl::connect(addr, "gina", None).await;
    c.wait_ready().await;
    let seq0 = c.status().unwrap().seq;
    let mut src = Source {
        data: bytes,
        pos: 0,
        hold_at: None,
    };
    let p = c.upload(&mut src, None).await.unwrap();
    let st = c
        .wait_status(|s| s.seq != seq0 && s.state == iocomd::status::UpdState::Idle)
        .await;
    // The final tod_err is published in the same flush as the status (conf_exp frames follow
    // the exp frames).
    let tod = c.wait_final_tod_err().await;
    c.disconnect();
    (p, st, tod)
}
