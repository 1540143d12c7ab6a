//! The tokio driver on 127.0.0.1: plain TCP and TLS connections between our own device and
//! controller, password accounts over TLS, reconnect after a close, shutdown, and bad peers that
//! are closed with a reason while a good connection on the same listener keeps working.

use iocomd::net::{self, Backoff, ConnHandle, ConnId, ConnectTarget, NetEvent};
use iocomd::proto::auth::AuthFrame;
use iocomd::proto::conn::{
    CloseReason, ConnConfig, ConnEvent, LocalIdentity, PeerAuth, Role, Side,
};
use iocomd::proto::frame::{FrameError, FrameFlags, Framing};
use iocomd::proto::handshake::{ClientHello, HandshakeError};
use iocomd::proto::password::{Account, Accounts, AuthRejection, hash_password};
use iocomd::proto::sysframe::{MblkInfo, SystemFrame, mblk_flags};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Generous: the machine is shared and loaded.
const WAIT: Duration = Duration::from_secs(30);

fn ident(name: &str, nr: u32, net: &str) -> LocalIdentity {
    LocalIdentity {
        device_name: name.into(),
        device_nr: nr,
        network_name: net.into(),
        unique_id: None,
        password: String::new(),
    }
}

fn device_cfg() -> ConnConfig {
    ConnConfig::new(Role::Device, Side::Client, ident("gina", 3, "cafenet"))
}

fn controller_cfg() -> ConnConfig {
    ConnConfig::new(
        Role::Controller,
        Side::Server,
        ident("frank", 9000, "cafenet"),
    )
}

fn info(id: u32, name: &str, flags: u16) -> MblkInfo {
    MblkInfo {
        mblk_id: id,
        device_name: "gina".into(),
        device_nr: 3,
        network_name: "cafenet".into(),
        mblk_name: name.into(),
        size: 64,
        flags,
    }
}

/// The next event matching `pred`; others are skipped. Panics after [`WAIT`].
async fn wait_for(
    rx: &mut mpsc::Receiver<NetEvent>,
    what: &str,
    mut pred: impl FnMut(&NetEvent) -> bool,
) -> NetEvent {
    tokio::time::timeout(WAIT, async {
        loop {
            let ev = rx.recv().await.expect("event channel open");
            if pred(&ev) {
                return ev;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

async fn connected(rx: &mut mpsc::Receiver<NetEvent>) -> (ConnId, ConnHandle) {
    match wait_for(rx, "Connected", |e| matches!(e, NetEvent::Connected { .. })).await {
        NetEvent::Connected { id, handle, .. } => (id, handle),
        _ => unreachable!(),
    }
}

async fn event_of(rx: &mut mpsc::Receiver<NetEvent>, conn: ConnId, what: &str) -> ConnEvent {
    match wait_for(
        rx,
        what,
        |e| matches!(e, NetEvent::Conn { id, .. } if *id == conn),
    )
    .await
    {
        NetEvent::Conn { event, .. } => event,
        _ => unreachable!(),
    }
}

async fn closed(rx: &mut mpsc::Receiver<NetEvent>, conn: ConnId) -> CloseReason {
    match wait_for(
        rx,
        "Closed",
        |e| matches!(e, NetEvent::Closed { id, .. } if *id == conn),
    )
    .await
    {
        NetEvent::Closed { reason, .. } => reason,
        _ => unreachable!(),
    }
}

struct Controller {
    addr: SocketAddr,
    rx: mpsc::Receiver<NetEvent>,
    task: JoinHandle<()>,
}

async fn start_controller(
    cfg: ConnConfig,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: &CancellationToken,
) -> Controller {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel(64);
    let task = tokio::spawn(net::listen(listener, tls, cfg, tx, shutdown.clone()));
    Controller { addr, rx, task }
}

struct Device {
    rx: mpsc::Receiver<NetEvent>,
    task: JoinHandle<()>,
}

fn start_device(
    target: ConnectTarget,
    cfg: ConnConfig,
    backoff: Backoff,
    shutdown: &CancellationToken,
) -> Device {
    let (tx, rx) = mpsc::channel(64);
    let task = tokio::spawn(net::connect(target, cfg, backoff, tx, shutdown.clone()));
    Device { rx, task }
}

/// Device and controller authenticate, bind `exp` (device id 8 → controller id 10) and the
/// device sends one data frame. Returns the connection ids and handles.
async fn bind_and_send(
    dev: &mut Device,
    ctl: &mut Controller,
) -> ((ConnId, ConnHandle), (ConnId, ConnHandle)) {
    let (did, dh) = connected(&mut dev.rx).await;
    let (cid, ch) = connected(&mut ctl.rx).await;
    let ConnEvent::Authenticated { peer, .. } = event_of(&mut dev.rx, did, "auth").await else {
        panic!("device: expected Authenticated")
    };
    assert_eq!(peer.user_name, "frank");
    let ConnEvent::Authenticated { peer, .. } = event_of(&mut ctl.rx, cid, "auth").await else {
        panic!("controller: expected Authenticated")
    };
    assert_eq!(peer.account_name(), "gina3");
    dh.queue_system(SystemFrame::MblkInfo(info(8, "exp", mblk_flags::UP)))
        .await
        .unwrap();
    assert_eq!(
        event_of(&mut ctl.rx, cid, "info").await,
        ConnEvent::MblkInfo(info(8, "exp", mblk_flags::UP))
    );
    ch.queue_system(SystemFrame::MblkInfo(info(10, "exp", mblk_flags::UP)))
        .await
        .unwrap();
    assert_eq!(
        event_of(&mut dev.rx, did, "reply").await,
        ConnEvent::MblkInfo(info(10, "exp", mblk_flags::UP))
    );
    send_and_expect(&dh, ctl, cid, 1).await;
    ((did, dh), (cid, ch))
}

async fn send_and_expect(dh: &ConnHandle, ctl: &mut Controller, cid: ConnId, marker: u8) {
    dh.queue_data(
        10,
        0,
        FrameFlags::data(false, false, true),
        vec![marker; 20],
    )
    .await
    .unwrap();
    assert_eq!(
        event_of(&mut ctl.rx, cid, "data").await,
        ConnEvent::Data {
            mblk_id: 10,
            addr: 0,
            flags: FrameFlags::data(false, false, true),
            payload: vec![marker; 20]
        }
    );
}

async fn stop(shutdown: CancellationToken, tasks: Vec<JoinHandle<()>>) {
    shutdown.cancel();
    for t in tasks {
        tokio::time::timeout(WAIT, t)
            .await
            .expect("task ends after shutdown")
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_tcp_device_connects_up_and_shuts_down() {
    let shutdown = CancellationToken::new();
    let mut ctl = start_controller(controller_cfg(), None, &shutdown).await;
    let target = ConnectTarget {
        addr: ctl.addr.to_string(),
        tls: None,
    };
    let mut dev = start_device(target, device_cfg(), Backoff::default(), &shutdown);
    let ((did, _), (cid, _)) = bind_and_send(&mut dev, &mut ctl).await;
    shutdown.cancel();
    assert_eq!(
        closed(&mut dev.rx, did).await,
        CloseReason::Local("shutdown".into())
    );
    let r = closed(&mut ctl.rx, cid).await;
    assert!(
        matches!(r, CloseReason::Local(_) | CloseReason::PeerClosed),
        "{r:?}"
    );
    stop(shutdown, vec![ctl.task, dev.task]).await;
}

struct Pki {
    _dir: tempfile::TempDir,
    cert: std::path::PathBuf,
    acceptor: tokio_rustls::TlsAcceptor,
    connector: tokio_rustls::TlsConnector,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    Pki {
        acceptor: net::tls::acceptor(
            iocomd::net::tls::Identity {
                cert: cert.as_ref(),
                key: key.as_ref(),
            },
            None,
        )
        .unwrap(),
        connector: net::tls::connector(cert.as_ref(), None).unwrap(),
        cert,
        _dir: dir,
    }
}

fn accounts() -> PeerAuth {
    PeerAuth::Accounts(Accounts {
        accounts: vec![Account {
            user: "gina*".into(),
            network: "cafenet".into(),
            password_hash: hash_password("devpass"),
            admin: false,
            certificate_sha256: None,
        }],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_password_account() {
    let pki = pki();
    let shutdown = CancellationToken::new();
    let mut ccfg = controller_cfg();
    ccfg.peer_auth = accounts();
    let mut ctl = start_controller(ccfg, Some(pki.acceptor.clone()), &shutdown).await;
    let target = ConnectTarget {
        addr: ctl.addr.to_string(),
        tls: Some((
            pki.connector.clone(),
            ServerName::try_from("localhost").unwrap(),
        )),
    };
    let mut dcfg = device_cfg();
    dcfg.identity.password = "devpass".into();
    let mut dev = start_device(target.clone(), dcfg, Backoff::default(), &shutdown);
    bind_and_send(&mut dev, &mut ctl).await;

    // A device with the wrong password is refused; the good connection is unaffected.
    let mut bad = device_cfg();
    bad.identity.password = "guess".into();
    let slow = Backoff {
        initial: Duration::from_secs(60),
        max: Duration::from_secs(60),
    };
    let mut bad_dev = start_device(target, bad, slow, &shutdown);
    let (bid, _) = connected(&mut ctl.rx).await;
    assert_eq!(
        closed(&mut ctl.rx, bid).await,
        CloseReason::Rejected(AuthRejection::WrongPassword {
            user: "gina3".into()
        })
    );
    let (bdid, _) = connected(&mut bad_dev.rx).await;
    let r = closed(&mut bad_dev.rx, bdid).await;
    assert!(
        matches!(r, CloseReason::PeerClosed | CloseReason::Io(_)),
        "{r:?}"
    );
    stop(shutdown, vec![ctl.task, dev.task, bad_dev.task]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_refuses_an_untrusted_server() {
    let server = pki();
    let other = pki();
    let shutdown = CancellationToken::new();
    let ctl = start_controller(controller_cfg(), Some(server.acceptor.clone()), &shutdown).await;
    let target = ConnectTarget {
        addr: ctl.addr.to_string(),
        tls: Some((other.connector, ServerName::try_from("localhost").unwrap())),
    };
    let (tx, mut rx) = mpsc::channel(8);
    let dev = tokio::spawn(net::connect(
        target,
        device_cfg(),
        Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(100),
        },
        tx,
        shutdown.clone(),
    ));
    // Several attempts fail in the TLS handshake: no connection is ever reported.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(rx.try_recv().is_err());
    // A single attempt reports why.
    let (tx1, _rx1) = mpsc::channel(8);
    let target = ConnectTarget {
        addr: ctl.addr.to_string(),
        tls: Some((pki().connector, ServerName::try_from("localhost").unwrap())),
    };
    let err = net::connect_once(&target, device_cfg(), &tx1, &shutdown)
        .await
        .unwrap_err();
    assert!(matches!(err, net::ConnectError::Tls { .. }), "{err}");
    stop(shutdown, vec![ctl.task, dev]).await;
}

/// A check of a close reason.
type Expect = Box<dyn Fn(&CloseReason) -> bool>;

/// Raw client bytes: hello, initial ACK and a device authentication frame.
fn device_preamble() -> Vec<u8> {
    let mut v = Vec::new();
    ClientHello::client("cafenet").encode(&mut v).unwrap();
    v.extend_from_slice(&[0xFF, 0, 0, 0]);
    let auth = AuthFrame {
        frame_size: 1392,
        flags: 0x10,
        user_name: "evil".into(),
        device_nr: 1,
        unique_id: None,
        network_name: "cafenet".into(),
        password: String::new(),
    };
    v.extend(auth.to_frame().unwrap().to_bytes(Framing::Socket).unwrap());
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_peers_are_closed_and_the_good_connection_keeps_working() {
    let shutdown = CancellationToken::new();
    let mut ccfg = controller_cfg();
    ccfg.handshake_timeout = Duration::from_secs(1);
    let mut ctl = start_controller(ccfg, None, &shutdown).await;
    let target = ConnectTarget {
        addr: ctl.addr.to_string(),
        tls: None,
    };
    let mut dev = start_device(target, device_cfg(), Backoff::default(), &shutdown);
    let ((_did, dh), (cid, _)) = bind_and_send(&mut dev, &mut ctl).await;

    // Data frame 1 after the auth frame, addressed to a block the controller never announced.
    let mut unknown = device_preamble();
    unknown.extend_from_slice(&[1, 0x10, 1, 0, 99, 0, 7]);
    // A header claiming 65535 payload bytes.
    let mut oversize = device_preamble();
    oversize.extend_from_slice(&[1, 0x20, 0xFF, 0xFF, 8, 0]);
    // Frame number 5 where 1 is due.
    let mut wrong_nr = device_preamble();
    wrong_nr.extend_from_slice(&[5, 0x10, 1, 0, 8, 0, 7]);
    // Half a frame, then the peer closes.
    let mut truncated = device_preamble();
    truncated.extend_from_slice(&[1, 0x10, 100, 0, 8, 0, 1, 2, 3]);
    let cases: Vec<(&str, Vec<u8>, Expect)> = vec![
        (
            "not IOCOM",
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            Box::new(|r| matches!(r, CloseReason::Handshake(HandshakeError::BadType(b'G')))),
        ),
        (
            "unknown block id",
            unknown,
            Box::new(|r| *r == CloseReason::UnknownMblk(99)),
        ),
        (
            "oversize frame",
            oversize,
            Box::new(|r| matches!(r, CloseReason::Frame(FrameError::TooLarge { .. }))),
        ),
        (
            "wrong frame number",
            wrong_nr,
            Box::new(|r| {
                matches!(
                    r,
                    CloseReason::Frame(FrameError::FrameNr {
                        expected: 1,
                        got: 5
                    })
                )
            }),
        ),
        (
            "truncated frame",
            truncated,
            Box::new(|r| matches!(r, CloseReason::Truncated { buffered: 9 })),
        ),
        (
            "silent peer",
            Vec::new(),
            Box::new(|r| matches!(r, CloseReason::HandshakeTimeout(_))),
        ),
    ];
    for (i, (name, bytes, want)) in cases.into_iter().enumerate() {
        let mut s = TcpStream::connect(ctl.addr).await.unwrap();
        let (bad_id, _) = connected(&mut ctl.rx).await;
        assert_ne!(bad_id, cid);
        if !bytes.is_empty() {
            s.write_all(&bytes).await.unwrap();
        }
        if name == "truncated frame" {
            s.shutdown().await.unwrap();
        }
        let reason = closed(&mut ctl.rx, bad_id).await;
        assert!(want(&reason), "{name}: {reason:?}");
        // The good connection still works.
        send_and_expect(&dh, &mut ctl, cid, 2 + i as u8).await;
        drop(s);
    }
    stop(shutdown, vec![ctl.task, dev.task]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_reconnects_after_the_controller_drops_it() {
    let shutdown = CancellationToken::new();
    let mut ctl = start_controller(controller_cfg(), None, &shutdown).await;
    let target = ConnectTarget {
        addr: ctl.addr.to_string(),
        tls: None,
    };
    let fast = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(400),
    };
    let mut dev = start_device(target, device_cfg(), fast, &shutdown);
    let ((did, _), (cid, ch)) = bind_and_send(&mut dev, &mut ctl).await;
    ch.close("test drops the device").await.unwrap();
    assert_eq!(
        closed(&mut ctl.rx, cid).await,
        CloseReason::Local("test drops the device".into())
    );
    assert_eq!(closed(&mut dev.rx, did).await, CloseReason::PeerClosed);
    // A fresh connection with new ids, fully working again.
    let ((did2, _), (cid2, _)) = bind_and_send(&mut dev, &mut ctl).await;
    assert!(did2 != did && cid2 != cid);
    stop(shutdown, vec![ctl.task, dev.task]).await;
}

#[test]
fn backoff_doubles_up_to_the_maximum() {
    let b = Backoff {
        initial: Duration::from_secs(2),
        max: Duration::from_secs(60),
    };
    let mut d = b.initial;
    let mut seen = vec![d];
    for _ in 0..6 {
        d = b.next(d);
        seen.push(d);
    }
    let secs: Vec<u64> = seen.iter().map(|d| d.as_secs()).collect();
    assert_eq!(secs, vec![2, 4, 8, 16, 32, 60, 60]);
}

/// The device can be the TLS server: a controller connects down to it over TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_as_tls_server_controller_connects_down() {
    let pki = pki();
    let shutdown = CancellationToken::new();
    // Our device listens (Role::Device, CONNECT_UP): it waits for the controller's auth first.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (dtx, mut drx) = mpsc::channel(64);
    let mut dcfg = device_cfg();
    dcfg.side = Side::Server;
    let dev_task = tokio::spawn(net::listen(
        listener,
        Some(pki.acceptor.clone()),
        dcfg,
        dtx,
        shutdown.clone(),
    ));
    let (ctx, mut crx) = mpsc::channel(64);
    let mut ccfg = controller_cfg();
    ccfg.identity.password = "ctlpass".into();
    let target = ConnectTarget {
        addr: addr.to_string(),
        tls: Some((
            pki.connector.clone(),
            ServerName::try_from("localhost").unwrap(),
        )),
    };
    let ctl_task = tokio::spawn(net::connect(
        target,
        ccfg,
        Backoff::default(),
        ctx,
        shutdown.clone(),
    ));
    let (did, _) = connected(&mut drx).await;
    let (cid, _) = connected(&mut crx).await;
    let ConnEvent::Authenticated { peer, .. } = event_of(&mut drx, did, "auth").await else {
        panic!("device: expected Authenticated")
    };
    // The controller is the TLS client, so its password travelled (hashed on receipt).
    assert_eq!(peer.user_name, "frank");
    assert_eq!(peer.password_hash, hash_password("ctlpass"));
    let ConnEvent::Authenticated { peer, .. } = event_of(&mut crx, cid, "auth").await else {
        panic!("controller: expected Authenticated")
    };
    assert_eq!(peer.account_name(), "gina3");
    assert_eq!(
        peer.password_hash, "",
        "a TLS server never sends a password"
    );
    stop(shutdown, vec![dev_task, ctl_task]).await;
}

/// A TLS 1.2-only client (like older mbedTLS builds of the C library) is accepted, and the mark
/// byte `5B` arrives first inside the tunnel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_only_client_is_accepted() {
    use tokio::io::AsyncReadExt;
    let pki = pki();
    let shutdown = CancellationToken::new();
    let mut ctl = start_controller(controller_cfg(), Some(pki.acceptor.clone()), &shutdown).await;
    // A TLS 1.2-only client trusting the server's certificate.
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&pki.cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
    let tcp = TcpStream::connect(ctl.addr).await.unwrap();
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let mut mark = [0u8; 1];
    tokio::time::timeout(WAIT, tls.read_exact(&mut mark))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(mark[0], 0x5B);
    let (id, _) = connected(&mut ctl.rx).await;
    drop(tls);
    let r = closed(&mut ctl.rx, id).await;
    assert!(
        matches!(r, CloseReason::PeerClosed | CloseReason::Io(_)),
        "{r:?}"
    );
    stop(shutdown, vec![ctl.task]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_once_reports_refusal_and_runs_a_session() {
    let shutdown = CancellationToken::new();
    // Nothing listens on a port we just released.
    let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = free.local_addr().unwrap();
    drop(free);
    let (tx, _rx) = mpsc::channel(8);
    let target = ConnectTarget {
        addr: dead.to_string(),
        tls: None,
    };
    let err = net::connect_once(&target, device_cfg(), &tx, &shutdown)
        .await
        .unwrap_err();
    assert!(matches!(err, net::ConnectError::Connect { .. }), "{err}");

    let mut ctl = start_controller(controller_cfg(), None, &shutdown).await;
    let target = ConnectTarget {
        addr: ctl.addr.to_string(),
        tls: None,
    };
    let (tx, mut rx) = mpsc::channel(64);
    let sd = shutdown.clone();
    let session =
        tokio::spawn(async move { net::connect_once(&target, device_cfg(), &tx, &sd).await });
    let (did, _) = connected(&mut rx).await;
    let (cid, ch) = connected(&mut ctl.rx).await;
    assert!(matches!(
        event_of(&mut rx, did, "auth").await,
        ConnEvent::Authenticated { .. }
    ));
    assert!(matches!(
        event_of(&mut ctl.rx, cid, "auth").await,
        ConnEvent::Authenticated { .. }
    ));
    ch.close("done").await.unwrap();
    let (reason, authenticated) = tokio::time::timeout(WAIT, session)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(reason, CloseReason::PeerClosed);
    assert!(authenticated);
    stop(shutdown, vec![ctl.task]).await;
}

/// A CA, a server certificate and three client certificates: two issued by the CA (`gina`,
/// `other`), one not (`stranger`).
struct MutualPki {
    _dir: tempfile::TempDir,
    ca: std::path::PathBuf,
    files: std::collections::HashMap<&'static str, (std::path::PathBuf, std::path::PathBuf)>,
}

fn mutual_pki() -> MutualPki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let mut files = std::collections::HashMap::new();
    let mut write = |name: &'static str, cert: String, key: &KeyPair| {
        let c = dir.path().join(format!("{name}.pem"));
        let k = dir.path().join(format!("{name}.key"));
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        files.insert(name, (c, k));
    };
    for name in ["server", "gina", "other"] {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        write(name, params.signed_by(&key, &ca).unwrap().pem(), &key);
    }
    let stranger = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    write("stranger", stranger.cert.pem(), &stranger.signing_key);
    MutualPki {
        _dir: dir,
        ca: ca_file,
        files,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_only_certificates_of_the_client_ca() {
    let pki = mutual_pki();
    let id = |name: &str| {
        let (c, k) = &pki.files[name];
        net::tls::Identity { cert: c, key: k }
    };
    let shutdown = CancellationToken::new();
    let acceptor = net::tls::acceptor(id("server"), Some(&pki.ca)).unwrap();
    let mut ctl = start_controller(controller_cfg(), Some(acceptor), &shutdown).await;
    let target = |client: Option<&str>| ConnectTarget {
        addr: ctl.addr.to_string(),
        tls: Some((
            net::tls::connector(&pki.ca, client.map(id)).unwrap(),
            ServerName::try_from("localhost").unwrap(),
        )),
    };
    let slow = Backoff {
        initial: Duration::from_secs(60),
        max: Duration::from_secs(60),
    };
    // No certificate, or one of another issuer: the TLS handshake fails, nothing is served.
    for client in [None, Some("stranger")] {
        let _dev = start_device(target(client), device_cfg(), slow, &shutdown);
        let got = tokio::time::timeout(Duration::from_secs(2), ctl.rx.recv()).await;
        assert!(
            !matches!(got, Ok(Some(NetEvent::Connected { .. }))),
            "{client:?} was admitted"
        );
    }
    // A certificate of the client CA: served.
    let mut dev = start_device(target(Some("gina")), device_cfg(), slow, &shutdown);
    bind_and_send(&mut dev, &mut ctl).await;
    stop(shutdown, vec![ctl.task, dev.task]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_bound_account_admits_its_certificate_without_a_password() {
    use sha2::Digest;
    let pki = mutual_pki();
    let id = |name: &str| {
        let (c, k) = &pki.files[name];
        net::tls::Identity { cert: c, key: k }
    };
    let der = |name: &str| CertificateDer::from_pem_file(&pki.files[name].0).unwrap();
    let gina: [u8; 32] = sha2::Sha256::digest(der("gina").as_ref()).into();
    let shutdown = CancellationToken::new();
    let mut ccfg = controller_cfg();
    ccfg.peer_auth = PeerAuth::Accounts(Accounts {
        accounts: vec![Account {
            user: "gina*".into(),
            network: "*".into(),
            password_hash: "*".into(),
            admin: false,
            certificate_sha256: Some(gina),
        }],
    });
    let acceptor = net::tls::acceptor(id("server"), Some(&pki.ca)).unwrap();
    let mut ctl = start_controller(ccfg, Some(acceptor), &shutdown).await;
    let target = |client: &str| ConnectTarget {
        addr: ctl.addr.to_string(),
        tls: Some((
            net::tls::connector(&pki.ca, Some(id(client))).unwrap(),
            ServerName::try_from("localhost").unwrap(),
        )),
    };
    let slow = Backoff {
        initial: Duration::from_secs(60),
        max: Duration::from_secs(60),
    };
    // Another certificate of the same CA passes TLS, but the account is bound to gina's.
    let other = start_device(target("other"), device_cfg(), slow, &shutdown);
    let (oid, _) = connected(&mut ctl.rx).await;
    assert_eq!(
        closed(&mut ctl.rx, oid).await,
        CloseReason::Rejected(AuthRejection::CertificateRequired {
            user: "gina3".into()
        })
    );
    // gina's certificate, no password: admitted as the account.
    let mut dev = start_device(target("gina"), device_cfg(), slow, &shutdown);
    bind_and_send(&mut dev, &mut ctl).await;
    stop(shutdown, vec![ctl.task, dev.task, other.task]).await;
}
