//! Opening the IOCOM connections of a controller session: one TCP (or TLS) connection to a
//! listening device, one serial line (port opened, serial connect sequence run), or a listener
//! that hands each requested device its own connection once it has authenticated as that
//! device.
//!
//! Each session receives the [`NetEvent`]s of its connection only, on its own channel; the
//! connection tasks are the net driver's ([`crate::net`]). Sessions for targets behind one
//! server address share its connection (a demultiplexer routes data frames by block id), and
//! the listener assigns automatic device numbers (9001, … by unique id) before routing.

use super::{ConnectOptions, CtlError, DevicePath, SerialLine, TlsOptions, Transport};
use crate::net::serial::{Established, SerialPort};
use crate::net::tls::Identity;
use crate::net::{ConnHandle, ConnId, NetEvent, PeerAddr, next_conn_id, run_stream};
use crate::proto::auth::AutoDeviceNumbers;
use crate::proto::conn::{ConnConfig, ConnEvent, LocalIdentity, Role, Side};
use crate::proto::node::{FIRST_MBLK_ID, MBLK_ID_LIMIT};
use rustls_pki_types::ServerName;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Events buffered per session (the connection task blocks when it is full).
const EVENT_QUEUE: usize = 4096;
/// Our user name when no credentials are given.
pub(crate) const DEFAULT_USER: &str = "iocomctl";

/// The connection configuration of a controller talking to `device`.
pub(crate) fn conn_config(device_network: &str, opts: &ConnectOptions, side: Side) -> ConnConfig {
    let (user, password) = match &opts.credentials {
        Some(c) => (c.user.clone(), c.password.clone()),
        None => (DEFAULT_USER.to_owned(), String::new()),
    };
    let identity = LocalIdentity {
        device_name: user,
        device_nr: 0,
        network_name: device_network.to_owned(),
        unique_id: None,
        password,
    };
    let mut cfg = ConnConfig::new(Role::Controller, side, identity);
    // The protocol's largest receive frame: a stock C device still sends min(its 1392, ours),
    // while iocomd (which announces the same) recognises us as a streaming controller
    // (`proto::frame::is_streaming`: 16 KiB frames both ways, the wide window, its large ring).
    cfg.frame_size = crate::proto::frame::MAX_FRAME_SIZE;
    cfg.secure = opts.tls.is_some();
    cfg.handshake_timeout = opts.timeouts.connect;
    cfg
}

/// The connection configuration of a controller on a serial line (no TLS, no password).
fn serial_config(device_network: &str, opts: &ConnectOptions, side: Side) -> ConnConfig {
    let base = conn_config(device_network, opts, side);
    let mut cfg = ConnConfig::serial(Role::Controller, side, base.identity);
    cfg.identity.password.clear();
    cfg.handshake_timeout = opts.timeouts.connect;
    cfg
}

fn tls_err(e: crate::net::tls::TlsError) -> CtlError {
    CtlError::TlsConfig(e.to_string())
}

fn identity(tls: &TlsOptions) -> Result<Option<Identity<'_>>, CtlError> {
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => Ok(Some(Identity { cert, key })),
        (None, None) => Ok(None),
        _ => Err(CtlError::Usage("--cert and --key go together".into())),
    }
}

/// A TLS connector verifying the device against `tls.ca`, with the optional client identity.
pub(crate) fn connector(tls: &TlsOptions) -> Result<TlsConnector, CtlError> {
    let ca = tls.ca.as_deref().ok_or_else(|| {
        CtlError::Usage("--tls needs --ca FILE to verify the device certificate".into())
    })?;
    crate::net::tls::connector(ca, identity(tls)?).map_err(tls_err)
}

/// A TLS acceptor for listen mode (our certificate and key are required).
pub(crate) fn acceptor(tls: &TlsOptions) -> Result<TlsAcceptor, CtlError> {
    let Some(id) = identity(tls)? else {
        return Err(CtlError::Usage(
            "--listen with --tls needs --cert and --key (our server identity)".into(),
        ));
    };
    crate::net::tls::acceptor(id, None).map_err(tls_err)
}

/// The host part of `host:port` (brackets of an IPv6 literal removed).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The connections of one or more sessions; dropping it does not stop them, [`Links::close`]
/// does.
#[derive(Debug)]
pub(crate) struct Links {
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

impl Links {
    /// Stops every connection and listener and waits for their tasks (bounded).
    pub(crate) async fn close(mut self) {
        self.shutdown.cancel();
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(std::time::Duration::from_secs(10), drain)
            .await
            .is_err()
        {
            self.tasks.abort_all();
        }
    }
}

/// The events of one target's session and the block ids it may use.
pub(crate) type SessionLink = (mpsc::Receiver<NetEvent>, Range<u32>);

/// A copy of a connect failure for each target that shared the connection.
fn dup_error(e: &CtlError, device: &DevicePath) -> CtlError {
    match e {
        CtlError::Connect { addr, reason, .. } => CtlError::Connect {
            device: device.to_string(),
            addr: addr.clone(),
            reason: reason.clone(),
        },
        CtlError::TlsConfig(m) => CtlError::TlsConfig(m.clone()),
        other => CtlError::Usage(other.to_string()),
    }
}

/// The block id range of session `i` of `n` sharing one connection.
fn id_range(i: usize, n: usize) -> Range<u32> {
    let span = (MBLK_ID_LIMIT - FIRST_MBLK_ID) / u32::try_from(n.max(1)).unwrap_or(u32::MAX);
    let i = u32::try_from(i).unwrap_or(0);
    FIRST_MBLK_ID + i * span..FIRST_MBLK_ID + (i + 1) * span
}

/// Opens one connection per distinct [`Transport::Connect`] address (targets behind the same
/// server share it, each session with its own block ids) and one listener per distinct listen
/// address; returns every target's events in order. A connect failure is that target's error.
pub(crate) async fn open(
    targets: &[(DevicePath, Transport)],
    opts: &ConnectOptions,
) -> (Links, Vec<Result<SessionLink, CtlError>>) {
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let mut out: Vec<Option<Result<SessionLink, CtlError>>> =
        targets.iter().map(|_| None).collect();
    // Connect targets grouped by address (serial lines one by one), the groups concurrently.
    let mut groups: Vec<(Transport, Vec<usize>)> = Vec::new();
    for (i, (_, transport)) in targets.iter().enumerate() {
        match transport {
            Transport::Connect(addr) => {
                let same = |g: &&mut (Transport, Vec<usize>)| matches!(&g.0, Transport::Connect(a) if a == addr);
                match groups.iter_mut().find(same) {
                    Some(g) => g.1.push(i),
                    None => groups.push((transport.clone(), vec![i])),
                }
            }
            Transport::Serial(_) => groups.push((transport.clone(), vec![i])),
            Transport::Listen(_) => {}
        }
    }
    let mut connecting = JoinSet::new();
    for (gi, (transport, idx)) in groups.iter().enumerate() {
        let Some(first) = idx.first().and_then(|i| targets.get(*i)) else {
            continue;
        };
        let (device, transport, opts) = (first.0.clone(), transport.clone(), opts.clone());
        connecting.spawn(async move {
            let r = match &transport {
                Transport::Serial(line) => open_serial(&device, line, &opts).await,
                Transport::Connect(addr) => connect(&device, addr, &opts).await,
                Transport::Listen(_) => Err(CtlError::Internal("listen target in a group".into())),
            };
            (gi, r)
        });
    }
    while let Some(r) = connecting.join_next().await {
        let (gi, r) = match r {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(error = %e, "connect task failed");
                continue;
            }
        };
        let Some((_, idx)) = groups.get(gi) else {
            continue;
        };
        match r {
            Ok(conn) => {
                let (tx, rx) = mpsc::channel(EVENT_QUEUE);
                let token = shutdown.clone();
                let span = tracing::info_span!("iocom", conn = conn.id, peer = %conn.peer);
                tasks.spawn(conn.run(tx, token).instrument(span));
                if let [i] = idx.as_slice() {
                    if let Some(slot) = out.get_mut(*i) {
                        *slot = Some(Ok((rx, id_range(0, 1))));
                    }
                    continue;
                }
                let mut outs = Vec::new();
                for (k, i) in idx.iter().enumerate() {
                    let (t, r) = mpsc::channel(EVENT_QUEUE);
                    let ids = id_range(k, idx.len());
                    outs.push((t, ids.clone()));
                    if let Some(slot) = out.get_mut(*i) {
                        *slot = Some(Ok((r, ids)));
                    }
                }
                tasks.spawn(demux(rx, outs, shutdown.clone()));
            }
            Err(e) => {
                for i in idx {
                    if let (Some(slot), Some(t)) = (out.get_mut(*i), targets.get(*i)) {
                        *slot = Some(Err(dup_error(&e, &t.0)));
                    }
                }
            }
        }
    }
    // Listen targets, grouped by address.
    let mut by_addr: HashMap<SocketAddr, Vec<usize>> = HashMap::new();
    for (i, (_, transport)) in targets.iter().enumerate() {
        if let Transport::Listen(a) = transport {
            by_addr.entry(*a).or_default().push(i);
        }
    }
    for (addr, idx) in by_addr {
        match start_listener(addr, &idx, targets, opts, &shutdown, &mut tasks).await {
            Ok(rxs) => {
                for (i, rx) in idx.iter().zip(rxs) {
                    if let Some(slot) = out.get_mut(*i) {
                        *slot = Some(Ok((rx, id_range(0, 1))));
                    }
                }
            }
            Err(e) => {
                // One error for every target on this address (CtlError is not Clone).
                let usage = e.exit_code() == 2;
                let (kind, msg) = match &e {
                    CtlError::Listen { source, .. } => (source.kind(), source.to_string()),
                    _ => (std::io::ErrorKind::Other, e.to_string()),
                };
                for i in idx {
                    if let Some(slot) = out.get_mut(i) {
                        *slot = Some(Err(if usage {
                            CtlError::Usage(msg.clone())
                        } else {
                            CtlError::Listen {
                                addr,
                                source: std::io::Error::new(kind, msg.clone()),
                            }
                        }));
                    }
                }
            }
        }
    }
    let out = out
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Err(CtlError::Internal("target not opened".into()))))
        .collect();
    (Links { shutdown, tasks }, out)
}

/// Shares one connection between sessions: every event goes to every session, except data
/// frames, which go to the session whose block ids contain the frame's block.
async fn demux(
    mut rx: mpsc::Receiver<NetEvent>,
    outs: Vec<(mpsc::Sender<NetEvent>, Range<u32>)>,
    shutdown: CancellationToken,
) {
    loop {
        let ev = tokio::select! {
            _ = shutdown.cancelled() => return,
            ev = rx.recv() => match ev { Some(ev) => ev, None => return },
        };
        if let NetEvent::Conn {
            event: ConnEvent::Data { mblk_id, .. },
            ..
        } = &ev
        {
            if let Some((tx, _)) = outs.iter().find(|(_, r)| r.contains(mblk_id)) {
                let _ = tx.send(ev).await;
            }
            continue;
        }
        for (tx, _) in &outs {
            let _ = tx.send(ev.clone()).await;
        }
    }
}

/// An open byte stream, ready to run the IOCOM connection.
struct Opened {
    id: ConnId,
    peer: PeerAddr,
    stream: Stream,
    cfg: ConnConfig,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Serial(Box<(SerialPort, Established)>),
}

impl Opened {
    async fn run(self, tx: mpsc::Sender<NetEvent>, shutdown: CancellationToken) {
        match self.stream {
            Stream::Plain(s) => {
                run_stream(self.id, self.peer, s, self.cfg, &tx, &shutdown).await;
            }
            Stream::Tls(s) => {
                run_stream(self.id, self.peer, *s, self.cfg, &tx, &shutdown).await;
            }
            Stream::Serial(b) => {
                let (mut port, est) = *b;
                crate::net::serial::run_connection_as(
                    self.id, &mut port, est, self.cfg, &tx, &shutdown,
                )
                .await;
            }
        }
    }
}

/// Opens the serial port and runs the connect sequence, once, within the connect timeout.
async fn open_serial(
    device: &DevicePath,
    line: &SerialLine,
    opts: &ConnectOptions,
) -> Result<Opened, CtlError> {
    let fail = |reason: String| CtlError::Connect {
        device: device.to_string(),
        addr: line.params.to_string(),
        reason,
    };
    if opts.tls.is_some() {
        return Err(CtlError::Usage(
            "--tls does not apply to --serial (a serial line has no TLS)".into(),
        ));
    }
    let mut port = SerialPort::open(&line.params).map_err(|e| fail(e.to_string()))?;
    let limit = opts.timeouts.connect;
    let never = CancellationToken::new();
    let est = crate::net::serial::establish(&mut port, line.side, Some(limit), &never)
        .await
        .map_err(|e| fail(e.to_string()))?;
    Ok(Opened {
        id: next_conn_id(),
        peer: PeerAddr::Serial(line.params.path.clone()),
        cfg: serial_config(device.network_or_default(), opts, line.side),
        stream: Stream::Serial(Box::new((port, est))),
    })
}

/// TCP connect and TLS handshake, once, within the connect timeout.
async fn connect(
    device: &DevicePath,
    addr: &str,
    opts: &ConnectOptions,
) -> Result<Opened, CtlError> {
    let fail = |reason: String| CtlError::Connect {
        device: device.to_string(),
        addr: addr.to_owned(),
        reason,
    };
    let tls = match &opts.tls {
        Some(t) => {
            let name = t
                .server_name
                .clone()
                .unwrap_or_else(|| host_of(addr).to_owned());
            let name = ServerName::try_from(name.clone())
                .map_err(|_| CtlError::Usage(format!("invalid TLS server name {name:?}")))?;
            Some((connector(t)?, name))
        }
        None => None,
    };
    let limit = opts.timeouts.connect;
    let tcp = tokio::time::timeout(limit, TcpStream::connect(addr))
        .await
        .map_err(|_| fail(format!("no answer within {limit:?}")))?
        .map_err(|e| fail(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let peer = tcp.peer_addr().map_err(|e| fail(e.to_string()))?.into();
    let cfg = conn_config(device.network_or_default(), opts, Side::Client);
    let stream = match tls {
        None => Stream::Plain(tcp),
        Some((connector, name)) => {
            let s = tokio::time::timeout(limit, connector.connect(name, tcp))
                .await
                .map_err(|_| fail(format!("TLS handshake not finished within {limit:?}")))?
                .map_err(|e| fail(format!("TLS handshake: {e}")))?;
            Stream::Tls(Box::new(s))
        }
    };
    Ok(Opened {
        id: next_conn_id(),
        peer,
        stream,
        cfg,
    })
}

/// Binds `addr`, runs the net listener and a dispatcher that routes each connection to the
/// target it authenticates as.
async fn start_listener(
    addr: SocketAddr,
    idx: &[usize],
    targets: &[(DevicePath, Transport)],
    opts: &ConnectOptions,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Result<Vec<mpsc::Receiver<NetEvent>>, CtlError> {
    let acceptor = match &opts.tls {
        Some(t) => Some(acceptor(t)?),
        None => None,
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| CtlError::Listen { addr, source })?;
    let devices: Vec<DevicePath> = idx
        .iter()
        .filter_map(|i| targets.get(*i).map(|t| t.0.clone()))
        .collect();
    // One network for all: adopt the device's when they differ.
    let network = match devices.first() {
        Some(d) if devices.iter().all(|x| x.network == d.network) => {
            d.network_or_default().to_owned()
        }
        _ => "*".to_owned(),
    };
    let cfg = conn_config(&network, opts, Side::Server);
    if opts.announce {
        let mut nets: Vec<String> = devices
            .iter()
            .map(|d| d.network_or_default().to_owned())
            .collect();
        nets.dedup();
        tasks.spawn(announce(&listener, nets, opts, shutdown.clone()));
    }
    let (tx, rx) = mpsc::channel(EVENT_QUEUE);
    tasks.spawn(crate::net::listen(
        listener,
        acceptor,
        cfg,
        tx,
        shutdown.clone(),
    ));
    let mut outs = Vec::new();
    let mut rxs = Vec::new();
    for _ in &devices {
        let (t, r) = mpsc::channel(EVENT_QUEUE);
        outs.push(t);
        rxs.push(r);
    }
    tasks.spawn(dispatch(rx, devices, outs, shutdown.clone()));
    Ok(rxs)
}

/// The lighthouse announcement of a listener (`--announce`), until `shutdown`.
pub(crate) fn announce(
    listener: &TcpListener,
    networks: Vec<String>,
    opts: &ConnectOptions,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let port = listener.local_addr().map_or(0, |a| a.port());
    let (tls, tcp) = if opts.tls.is_some() {
        (Some(port), None)
    } else {
        (None, Some(port))
    };
    let a = crate::proto::lighthouse::Announcement::iocom("iocomctl", &networks, tls, tcp);
    tracing::info!(port, ?networks, "announcing by lighthouse");
    crate::net::lighthouse::announce(a, crate::net::lighthouse::ANNOUNCE_INTERVAL, shutdown)
}

/// Routes the listener's connections: each requested device gets the first connection that
/// authenticates as it; every other connection is closed. A device that sends number 0 gets
/// an automatic number first (9001, 9002, … by unique id, as the C controller assigns them),
/// which its session sees in [`PeerIdentity::assigned_nr`](crate::proto::conn::PeerIdentity).
async fn dispatch(
    mut rx: mpsc::Receiver<NetEvent>,
    devices: Vec<DevicePath>,
    outs: Vec<mpsc::Sender<NetEvent>>,
    shutdown: CancellationToken,
) {
    let mut pending: HashMap<ConnId, (crate::net::PeerAddr, ConnHandle)> = HashMap::new();
    let mut routed: HashMap<ConnId, usize> = HashMap::new();
    let mut taken = vec![false; devices.len()];
    let mut numbers = AutoDeviceNumbers::new();
    loop {
        let ev = tokio::select! {
            _ = shutdown.cancelled() => return,
            ev = rx.recv() => match ev { Some(ev) => ev, None => return },
        };
        match ev {
            NetEvent::Connected { id, peer, handle } => {
                pending.insert(id, (peer, handle));
            }
            NetEvent::Conn { id, mut event } if pending.contains_key(&id) => {
                let ConnEvent::Authenticated { peer, .. } = &mut event else {
                    continue;
                };
                let Some((addr, handle)) = pending.remove(&id) else {
                    continue;
                };
                if peer.device_nr == 0 {
                    peer.assigned_nr = numbers.assign(peer.unique_id.as_ref());
                }
                let nr = peer.assigned_nr.unwrap_or(peer.device_nr);
                let found = devices.iter().enumerate().position(|(i, d)| {
                    !taken.get(i).copied().unwrap_or(true)
                        && d.name == peer.user_name
                        && d.nr.is_none_or(|n| n == nr)
                        && (d.network.as_deref().is_none_or(|n| n == peer.network_name)
                            || crate::proto::auth::is_auto_network(&peer.network_name))
                });
                let Some(i) = found else {
                    tracing::info!(peer = %peer.account_name(), nr, "not a requested device: closing");
                    let _ = handle.close("not a requested device").await;
                    continue;
                };
                if let Some(t) = taken.get_mut(i) {
                    *t = true;
                }
                routed.insert(id, i);
                let Some(out) = outs.get(i) else { continue };
                let connected = NetEvent::Connected {
                    id,
                    peer: addr,
                    handle,
                };
                let _ = out.send(connected).await;
                let _ = out.send(NetEvent::Conn { id, event }).await;
            }
            NetEvent::Conn { id, event } => {
                if let Some(out) = routed.get(&id).and_then(|i| outs.get(*i)) {
                    let _ = out.send(NetEvent::Conn { id, event }).await;
                }
            }
            NetEvent::QueueFailed { id, error } => {
                if let Some(out) = routed.get(&id).and_then(|i| outs.get(*i)) {
                    let _ = out.send(NetEvent::QueueFailed { id, error }).await;
                }
            }
            NetEvent::Closed { id, reason } => {
                pending.remove(&id);
                if let Some(out) = routed.remove(&id).and_then(|i| outs.get(i)) {
                    let _ = out.send(NetEvent::Closed { id, reason }).await;
                }
            }
        }
    }
}
