//! An in-test IOCOM device for iocomctl tests: our `DeviceEndpoint` (sans-I/O core) driven by
//! the net driver on 127.0.0.1:0, with iocomd's status signals in `exp` and a scripted verdict.
#![allow(dead_code)]

pub mod relay;

use iocomd::net::{self, ConnHandle, ConnId, NetEvent};
use iocomd::proto::conn::{ConnConfig, LocalIdentity, PeerAuth, Role, Side};
use iocomd::proto::endpoint::{BlockDef, DeviceConfig, DeviceEndpoint, StreamEvent};
use iocomd::proto::frame::FrameFlags;
use iocomd::proto::info::{REFERENCE_RING, signal_block};
use iocomd::proto::node::{DeviceId, device_flags};
use iocomd::proto::password::{Account, Accounts, hash_password};
use iocomd::proto::stream::device::DeviceEvent;
use iocomd::proto::stream::{ChunkSink, ChunkSource, SourceRead, status};
use iocomd::proto::sysframe::SystemFrame;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What the device answers after a complete transfer.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Installed and healthy: upd_code "ok", tod_err 6.
    Ok,
    /// A failure with code string, number and tod_err.
    Fail {
        code: &'static str,
        number: u16,
        tod_err: u8,
    },
    /// Never answer (tod_err stays pending).
    Silent,
}

/// How to build the device.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: &'static str,
    pub nr: u32,
    pub network: &'static str,
    pub tod_ring: usize,
    pub verdict: Verdict,
    /// Initial upd_state (non-zero = busy).
    pub initial_state: i64,
    /// Require this password for user `ctl*` (needs TLS).
    pub password: Option<&'static str>,
    /// TLS cert and key files.
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// Publish iocomd's status signals.
    pub status_signals: bool,
    /// Drop every connection right after the transfer and publish the verdict afterwards,
    /// like iocomd restarting during a self-update (tod_err back to 0).
    pub restart: bool,
    /// The sink refuses the data once this many bytes arrived, with this `tod_err` code.
    pub sink_fail_after: Option<(usize, u8)>,
    /// Close the connection once this many bytes arrived.
    pub drop_after: Option<usize>,
    /// Unique id sent with an automatic number (nr 9000) when connecting up.
    pub unique_id: Option<[u8; 12]>,
    /// `inst_ver` before the first push (empty: a fresh device, nothing installed).
    pub installed: &'static str,
}

impl Spec {
    pub fn new(name: &'static str, nr: u32) -> Self {
        Self {
            name,
            nr,
            network: "cafenet",
            tod_ring: 4097,
            verdict: Verdict::Ok,
            initial_state: 0,
            password: None,
            tls: None,
            status_signals: true,
            restart: false,
            sink_fail_after: None,
            drop_after: None,
            unique_id: None,
            installed: "1.0",
        }
    }
}

/// A running test device.
pub struct TestDevice {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<Vec<u8>>,
    listener: JoinHandle<()>,
}

impl TestDevice {
    /// Stops the device; returns the bytes of the last complete transfer.
    pub async fn stop(self) -> Vec<u8> {
        self.shutdown.cancel();
        let got = tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("device task ends")
            .expect("device task ok");
        let _ = tokio::time::timeout(Duration::from_secs(30), self.listener).await;
        got
    }
}

#[derive(Default)]
struct Sink {
    data: Vec<u8>,
    done: Option<Vec<u8>>,
    fail_after: Option<(usize, u8)>,
}

impl ChunkSink for Sink {
    fn open(&mut self, _select: i64) -> Result<(), iocomd::proto::stream::LocalError> {
        self.data.clear();
        Ok(())
    }
    fn write(&mut self, chunk: &[u8]) -> Result<(), iocomd::proto::stream::LocalError> {
        self.data.extend_from_slice(chunk);
        match self.fail_after {
            Some((n, code)) if self.data.len() >= n => Err(code.into()),
            _ => Ok(()),
        }
    }
    fn close(&mut self, ok: bool) {
        if ok {
            self.done = Some(std::mem::take(&mut self.data));
        }
    }
}

struct NoSource;

impl ChunkSource for NoSource {
    fn open(&mut self, _select: i64) -> Result<(), u8> {
        Err(status::NO_ACCESS_RIGHT)
    }
    fn read(&mut self, _buf: &mut [u8]) -> Result<SourceRead, u8> {
        Ok(SourceRead::End)
    }
}

fn status_block() -> BlockDef {
    iocomd::status::status_block_def()
}

fn plain_block() -> BlockDef {
    BlockDef {
        name: "exp".into(),
        flags: device_flags::EXP,
        json: Some(signal_block("exp", "up", "io", &[("led", "boolean", 1)])),
        min_size: 0,
    }
}

fn set(dev: &mut DeviceEndpoint, name: &str, v: i64) {
    let sig = dev.info().signal("exp", name).cloned().expect("signal");
    let ix = dev.node().find("exp", None).expect("exp");
    sig.set_int(dev.node_mut().block_mut(ix).unwrap(), v)
        .unwrap();
}

fn set_str(dev: &mut DeviceEndpoint, name: &str, v: &str) {
    let sig = dev.info().signal("exp", name).cloned().expect("signal");
    let ix = dev.node().find("exp", None).expect("exp");
    sig.set_str(dev.node_mut().block_mut(ix).unwrap(), v)
        .unwrap();
}

fn conn_config(spec: &Spec, side: Side) -> ConnConfig {
    let identity = LocalIdentity {
        device_name: spec.name.into(),
        device_nr: spec.nr,
        network_name: spec.network.into(),
        unique_id: spec.unique_id,
        password: String::new(),
    };
    let mut cfg = ConnConfig::new(Role::Device, side, identity);
    if let Some(pw) = spec.password {
        cfg.peer_auth = PeerAuth::Accounts(Accounts {
            accounts: vec![Account {
                user: "ctl*".into(),
                network: spec.network.into(),
                password_hash: hash_password(pw),
                admin: false,
                certificate_sha256: None,
            }],
        });
    }
    cfg
}

/// Starts a device listening on 127.0.0.1:0.
pub async fn start(spec: Spec) -> TestDevice {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let cfg = conn_config(&spec, Side::Server);
    let acceptor = spec.tls.as_ref().map(|(c, k)| {
        net::tls::acceptor(
            iocomd::net::tls::Identity {
                cert: c.as_ref(),
                key: k.as_ref(),
            },
            None,
        )
        .unwrap()
    });
    let (tx, rx) = mpsc::channel(4096);
    let listener = tokio::spawn(net::listen(listener, acceptor, cfg, tx, shutdown.clone()));
    let task = tokio::spawn(run_device(spec, rx, shutdown.clone()));
    TestDevice {
        addr,
        shutdown,
        task,
        listener,
    }
}

/// Starts a device that connects up to a controller at `addr` (plain TCP), retrying until
/// the controller listens.
pub fn start_up(spec: Spec, addr: SocketAddr) -> TestDevice {
    start_up_to(spec, addr.to_string(), addr)
}

/// [`start_up`] to `target` (`*`: found by lighthouse); `addr` is only recorded.
pub fn start_up_to(spec: Spec, target: String, addr: SocketAddr) -> TestDevice {
    let shutdown = CancellationToken::new();
    let cfg = conn_config(&spec, Side::Client);
    let target = net::ConnectTarget {
        addr: target,
        tls: None,
    };
    let backoff = net::Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(500),
    };
    let (tx, rx) = mpsc::channel(4096);
    let listener = tokio::spawn(net::connect(target, cfg, backoff, tx, shutdown.clone()));
    let task = tokio::spawn(run_device(spec, rx, shutdown.clone()));
    TestDevice {
        addr,
        shutdown,
        task,
        listener,
    }
}

/// A free port on 127.0.0.1 (bound and released; the devices retry until it is used).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn run_device(
    spec: Spec,
    mut rx: mpsc::Receiver<NetEvent>,
    shutdown: CancellationToken,
) -> Vec<u8> {
    let block = if spec.status_signals {
        status_block()
    } else {
        plain_block()
    };
    let mut dev = DeviceEndpoint::new(DeviceConfig {
        device: DeviceId::new(spec.name, spec.nr, spec.network),
        blocks: vec![block],
        tod_ring: spec.tod_ring,
        frd_ring: REFERENCE_RING,
    })
    .unwrap();
    let mut seq = 5;
    if spec.status_signals {
        set(&mut dev, "upd_state", spec.initial_state);
        set(&mut dev, "upd_progress", 0);
        set(&mut dev, "upd_bytes", 0);
        set(&mut dev, "upd_seq", seq);
        set(&mut dev, "upd_result", 0);
        set_str(&mut dev, "upd_code", "ok");
        set_str(&mut dev, "upd_msg", "previous update");
        set_str(&mut dev, "upd_pkg", "sample-app");
        set_str(&mut dev, "upd_ver", "1.0");
        set_str(&mut dev, "inst_ver", spec.installed);
        if !spec.installed.is_empty() {
            let list = format!(
                "sample-app {} ok 1700000000\nsample-lib 0.5 ok 1600000000\n",
                spec.installed
            );
            set_str(&mut dev, "upd_pkgs", &list);
        }
    }
    let mut conns: HashMap<ConnId, (ConnHandle, usize)> = HashMap::new();
    let mut sink = Sink {
        fail_after: spec.sink_fail_after,
        ..Sink::default()
    };
    let mut received = Vec::new();
    let mut restart: Option<(Instant, &str, u16, &str)> = None;
    loop {
        let ev = tokio::select! {
            _ = shutdown.cancelled() => return received,
            ev = tokio::time::timeout(Duration::from_millis(10), rx.recv()) => ev,
        };
        let mut batch = Vec::new();
        match ev {
            Ok(Some(ev)) => batch.push(ev),
            Ok(None) => return received,
            Err(_) => {}
        }
        while let Ok(ev) = rx.try_recv() {
            batch.push(ev);
        }
        for ev in batch {
            match ev {
                NetEvent::Connected { id, handle, .. } => {
                    conns.insert(id, (handle, 0));
                }
                NetEvent::Conn { id, event } => {
                    if let iocomd::proto::conn::ConnEvent::Authenticated {
                        send_frame_size, ..
                    } = &event
                        && let Some(c) = conns.get_mut(&id)
                    {
                        c.1 = *send_frame_size as usize;
                    }
                    match dev.handle(id, event) {
                        Ok(out) => {
                            if let Some((h, _)) = conns.get(&id) {
                                for i in out.infos {
                                    let _ = h.queue_system(SystemFrame::MblkInfo(i)).await;
                                }
                            }
                        }
                        Err(e) => {
                            if let Some((h, _)) = conns.get(&id) {
                                let _ = h.close(e.to_string()).await;
                            }
                        }
                    }
                }
                NetEvent::Closed { id, .. } => {
                    conns.remove(&id);
                    dev.disconnect(id);
                }
                NetEvent::QueueFailed { .. } => {}
            }
        }
        for StreamEvent { event, .. } in dev.poll_streams(Instant::now(), &mut sink, &mut NoSource)
        {
            match event {
                DeviceEvent::Started { .. } if spec.status_signals => {
                    set(&mut dev, "upd_state", 1);
                }
                DeviceEvent::Completed { bytes, .. } => {
                    received = sink.done.take().unwrap_or_default();
                    assert_eq!(received.len() as u64, bytes);
                    if !spec.status_signals {
                        let code = match spec.verdict {
                            Verdict::Ok => status::COMPLETED,
                            Verdict::Fail { tod_err, .. } => tod_err,
                            Verdict::Silent => continue,
                        };
                        dev.report(code).unwrap();
                        continue;
                    }
                    set(&mut dev, "upd_bytes", bytes as i64);
                    let (code, number, tod_err, msg) = match spec.verdict {
                        Verdict::Ok => ("ok", 0, status::COMPLETED, "installed sample-app 2.0"),
                        Verdict::Fail {
                            code,
                            number,
                            tod_err,
                        } => (code, number, tod_err, "scripted failure"),
                        Verdict::Silent => {
                            set(&mut dev, "upd_state", 3);
                            continue;
                        }
                    };
                    seq += 1;
                    set(&mut dev, "upd_state", 0);
                    set(&mut dev, "upd_progress", 100);
                    set(&mut dev, "upd_result", i64::from(number));
                    set_str(&mut dev, "upd_code", code);
                    set_str(&mut dev, "upd_msg", msg);
                    set_str(&mut dev, "upd_ver", "2.0");
                    if code == "ok" {
                        set_str(&mut dev, "inst_ver", "2.0");
                    }
                    if spec.restart {
                        // Installing; the verdict comes after the "restart" below.
                        set(&mut dev, "upd_state", 3);
                        restart = Some((
                            Instant::now() + Duration::from_millis(300),
                            code,
                            number,
                            msg,
                        ));
                        continue;
                    }
                    set(&mut dev, "upd_seq", seq);
                    dev.report(tod_err).unwrap();
                }
                _ => {}
            }
        }
        if let Some((at, code, number, msg)) = restart
            && Instant::now() >= at
        {
            restart = None;
            for (h, _) in conns.values() {
                let _ = h.close("restarting").await;
            }
            set(&mut dev, "upd_state", 0);
            set(&mut dev, "upd_result", i64::from(number));
            set_str(&mut dev, "upd_code", code);
            set_str(&mut dev, "upd_msg", msg);
            set(&mut dev, "upd_seq", seq);
            dev.report(0).unwrap();
        }
        if let Some(n) = spec.drop_after
            && sink.data.len() >= n
        {
            for (h, _) in conns.values() {
                let _ = h.close("dropping mid-transfer").await;
            }
        }
        for (id, (h, fs)) in &conns {
            if *fs == 0 {
                continue;
            }
            for f in dev.transmit(*id, *fs, 128) {
                let _ = h
                    .queue_data(f.mblk_id, f.addr, FrameFlags::from_bits(f.flags), f.payload)
                    .await;
            }
        }
    }
}

/// A self-signed certificate for "localhost" in a temp dir: (dir, cert, key).
pub fn pki() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (dir, cert, key)
}

/// Deterministic pseudo-random bytes.
pub fn random_bytes(n: usize, mut seed: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}
