//! An in-test IOCOM relay server in the role of iocafe's `frank`: devices connect up to it,
//! controllers connect down; it keeps one copy of every block it learns of and relays block
//! contents between the connections (transport.md §5; traces i and j). Built from the
//! protocol core only: one `Node` with a role per connection, chosen as frank does from the
//! peer's authentication frame (`CONNECT_UP`: a device below, we are its controller and give
//! it an automatic number; otherwise a controller above, we are its device and announce every
//! block, and later the blocks of devices that connect afterwards).

use iocomd::net::{self, ConnHandle, ConnId, NetEvent};
use iocomd::proto::auth::{AutoDeviceNumbers, auth_flags};
use iocomd::proto::conn::{ConnConfig, ConnEvent, LocalIdentity, PeerAuth, Role, Side};
use iocomd::proto::frame::FrameFlags;
use iocomd::proto::node::{ConnSetup, Node};
use iocomd::proto::password::{Account, Accounts, hash_password};
use iocomd::proto::sysframe::SystemFrame;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// TLS for controllers: certificate, key, and the password of account `root`.
pub struct RelayTls {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub password: &'static str,
}

/// A running relay.
pub struct TestRelay {
    /// Plain TCP: devices connect up here (controllers may connect too).
    pub addr: SocketAddr,
    /// TLS with account check, when configured: for controllers.
    pub tls_addr: Option<SocketAddr>,
    /// Controller (upward) connections seen so far.
    pub controllers: Arc<AtomicUsize>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl TestRelay {
    pub async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}

fn config(accounts: Option<&'static str>) -> ConnConfig {
    // frank's own number is automatic: sent as 0 (controllers give it a number of theirs).
    let identity = LocalIdentity::new("frank", 9000, "cafenet");
    // Sends its authentication frame first, like frank, whoever the peer turns out to be.
    let mut cfg = ConnConfig::new(Role::Controller, Side::Server, identity);
    if let Some(pw) = accounts {
        cfg.peer_auth = PeerAuth::Accounts(Accounts {
            accounts: vec![Account {
                user: "root".into(),
                network: "cafenet".into(),
                password_hash: hash_password(pw),
                admin: true,
                certificate_sha256: None,
            }],
        });
        cfg.secure = true;
    }
    cfg
}

pub async fn start_relay(tls: Option<RelayTls>) -> TestRelay {
    let shutdown = CancellationToken::new();
    let (tx, rx) = mpsc::channel(4096);
    let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = plain.local_addr().unwrap();
    let mut tasks = vec![tokio::spawn(net::listen(
        plain,
        None,
        config(None),
        tx.clone(),
        shutdown.clone(),
    ))];
    let mut tls_addr = None;
    if let Some(t) = tls {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        tls_addr = Some(l.local_addr().unwrap());
        let id = net::tls::Identity {
            cert: &t.cert,
            key: &t.key,
        };
        let acceptor = net::tls::acceptor(id, None).unwrap();
        tasks.push(tokio::spawn(net::listen(
            l,
            Some(acceptor),
            config(Some(t.password)),
            tx,
            shutdown.clone(),
        )));
    }
    let controllers = Arc::new(AtomicUsize::new(0));
    tasks.push(tokio::spawn(run_relay(
        rx,
        controllers.clone(),
        shutdown.clone(),
    )));
    TestRelay {
        addr,
        tls_addr,
        controllers,
        shutdown,
        tasks,
    }
}

async fn run_relay(
    mut rx: mpsc::Receiver<NetEvent>,
    controllers: Arc<AtomicUsize>,
    shutdown: CancellationToken,
) {
    let mut node = Node::new(Role::Controller);
    let mut numbers = AutoDeviceNumbers::new();
    let mut handles: HashMap<ConnId, ConnHandle> = HashMap::new();
    let mut up: Vec<ConnId> = Vec::new();
    loop {
        let ev = tokio::select! {
            _ = shutdown.cancelled() => return,
            ev = tokio::time::timeout(Duration::from_millis(10), rx.recv()) => ev,
        };
        let mut batch = Vec::new();
        match ev {
            Ok(Some(ev)) => batch.push(ev),
            Ok(None) => return,
            Err(_) => {}
        }
        while let Ok(ev) = rx.try_recv() {
            batch.push(ev);
        }
        for ev in batch {
            match ev {
                NetEvent::Connected { id, handle, .. } => {
                    handles.insert(id, handle);
                }
                NetEvent::Conn {
                    id,
                    event:
                        ConnEvent::Authenticated {
                            peer,
                            send_frame_size,
                            network_name,
                            framing,
                            ..
                        },
                } => {
                    let below = peer.flags & auth_flags::CONNECT_UP != 0;
                    let setup = ConnSetup {
                        role: if below {
                            Role::Controller
                        } else {
                            Role::Device
                        },
                        network: network_name,
                        frame_size: send_frame_size,
                        auto_nr: (below && peer.device_nr == 0)
                            .then(|| numbers.assign(peer.unique_id.as_ref()))
                            .flatten(),
                        framing,
                    };
                    let infos = node.connect_as(id, setup);
                    if !below {
                        up.push(id);
                        controllers.fetch_add(1, Ordering::SeqCst);
                    }
                    if let Some(h) = handles.get(&id) {
                        for i in infos {
                            let _ = h.queue_system(SystemFrame::MblkInfo(i)).await;
                        }
                    }
                }
                NetEvent::Conn { id, event } => {
                    let before = node.len();
                    let out = match node.handle(id, event) {
                        Ok(out) => out,
                        Err(e) => {
                            if let Some(h) = handles.get(&id) {
                                let _ = h.close(e.to_string()).await;
                            }
                            continue;
                        }
                    };
                    if let Some(h) = handles.get(&id) {
                        for i in out.infos {
                            let _ = h.queue_system(SystemFrame::MblkInfo(i)).await;
                        }
                    }
                    // A device's new blocks are announced to every controller above.
                    for ix in before..node.len() {
                        let Some(info) = node.info_of(ix) else {
                            continue;
                        };
                        for c in &up {
                            if let Some(h) = handles.get(c) {
                                let _ = h.queue_system(SystemFrame::MblkInfo(info.clone())).await;
                            }
                        }
                    }
                }
                NetEvent::Closed { id, .. } => {
                    handles.remove(&id);
                    up.retain(|c| *c != id);
                    node.disconnect(id);
                }
                NetEvent::QueueFailed { .. } => {}
            }
        }
        for (id, f) in node.transmit_all(128) {
            if let Some(h) = handles.get(&id) {
                let _ = h
                    .queue_data(f.mblk_id, f.addr, FrameFlags::from_bits(f.flags), f.payload)
                    .await;
            }
        }
    }
}
