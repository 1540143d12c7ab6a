//! `iocomctl devices`: the devices reachable at an address. Connected to a device, that is the
//! device; connected to an IOCOM server such as iocafe's `frank`, every device the server
//! advertises. Listening, every device that connects up within the listen time. For each: its
//! full path (automatic numbers as assigned), and iocomd's installed package, version and
//! update state where it runs iocomd, else the stream's `tod_state`/`tod_err`.

use super::link::{self, acceptor};
use super::report::{StatusSignals, UpdState};
use super::session::{Core, Step};
use super::{ConnectOptions, CtlError, DevicePath, Progress, Transport};
use crate::net::{ConnId, NetEvent};
use crate::proto::auth::AutoDeviceNumbers;
use crate::proto::conn::{ConnEvent, Side};
use crate::proto::endpoint::ControllerEndpoint;
use crate::proto::node::DeviceId;
use crate::proto::stream::{Direction, StreamSignals};
use serde::Serialize;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What to list.
#[derive(Debug, Clone)]
pub struct DevicesOptions {
    /// Connect to a device or server, or listen for devices connecting up.
    pub transport: Transport,
    /// Connection settings (the listen timeout is how long to collect devices).
    pub connect: ConnectOptions,
    /// The network named in our authentication frame (default `iocafenet`).
    pub network: Option<String>,
}

/// One reachable device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceEntry {
    /// Full path, e.g. `gina9001.cafenet`.
    pub device: String,
    /// The peer it was reached through, when that is not the device itself (a server).
    pub via: Option<String>,
    /// True when it publishes iocomd's status signals.
    pub iocomd: bool,
    /// `upd_pkg`.
    pub package: Option<String>,
    /// `inst_ver`.
    pub installed_version: Option<String>,
    /// `upd_state`.
    pub state: Option<UpdState>,
    /// `upd_code` of the last result.
    pub last_result: Option<String>,
    /// `tod_state`.
    pub tod_state: Option<u8>,
    /// `tod_err`.
    pub tod_err: Option<u8>,
    /// False when its `info` block did not arrive in time (nothing else is known then).
    pub info: bool,
}

fn entry(ep: &ControllerEndpoint, d: &DeviceId, via: Option<&String>) -> DeviceEntry {
    let device = format!("{}{}.{}", d.name, d.nr, d.network);
    let mut e = DeviceEntry {
        via: via.filter(|p| **p != device).cloned(),
        device,
        iocomd: false,
        package: None,
        installed_version: None,
        state: None,
        last_result: None,
        tod_state: None,
        tod_err: None,
        info: false,
    };
    let Some(info) = ep.info_of(d) else {
        return e;
    };
    e.info = true;
    let exp = ep.block_of(d, "conf_exp");
    let tod = info
        .block("conf_exp")
        .zip(info.block("conf_imp"))
        .and_then(|(x, i)| StreamSignals::resolve(Direction::ToDevice, x, i));
    if let (Some(tod), Some(exp)) = (tod, exp) {
        let get = |s: &crate::proto::signals::Signal| {
            s.get_int(exp)
                .ok()
                .filter(|(_, st)| st & crate::proto::signals::STATE_CONNECTED != 0)
                .map(|(v, _)| v as u8)
        };
        e.tod_state = get(&tod.state);
        e.tod_err = get(&tod.err);
    }
    let status = StatusSignals::locate(&info);
    if status.present() {
        let r = status.read(ep.block_of(d, super::names::BLOCK), None);
        e.iocomd = true;
        e.package = r.package;
        e.installed_version = r.installed_version;
        e.state = r.state;
        e.last_result = r.code;
    }
    e
}

/// True when every advertised device's info (and iocomd status, where published) is there.
fn complete(ep: &ControllerEndpoint) -> bool {
    ep.advertised().iter().all(|d| match ep.info_of(d) {
        None => false,
        Some(info) => {
            let s = StatusSignals::locate(&info);
            !s.present()
                || ep
                    .block_of(d, super::names::BLOCK)
                    .is_some_and(|b| s.known(b))
        }
    })
}

/// Lists the devices of one connection once the announcements settled and the infos are
/// there (or the ready timeout passed: then with what arrived).
async fn list_one(
    core: &mut Core<'_>,
    opts: &ConnectOptions,
    first: Duration,
) -> Result<Vec<DeviceEntry>, CtlError> {
    core.run_until(
        Instant::now() + first,
        "connecting and authenticating",
        first,
        |c, _| {
            Ok(if c.authenticated {
                Step::Done(())
            } else {
                Step::Wait
            })
        },
    )
    .await?;
    let ready = opts.timeouts.ready;
    let r = core
        .run_until(Instant::now() + ready, "", ready, |c, now| {
            Ok(if c.settled(now) && complete(&c.ep) {
                Step::Done(())
            } else {
                Step::Wait
            })
        })
        .await;
    match r {
        Ok(()) | Err(CtlError::Timeout { .. }) => {}
        Err(e) => return Err(e),
    }
    Ok(core
        .ep
        .advertised()
        .iter()
        .map(|d| entry(&core.ep, d, core.peer.as_ref()))
        .collect())
}

/// Lists the devices reachable as `opts` says.
pub async fn devices(opts: &DevicesOptions) -> Result<Vec<DeviceEntry>, CtlError> {
    let network = opts
        .network
        .clone()
        .unwrap_or_else(|| super::path::DEFAULT_NETWORK.into());
    match &opts.transport {
        Transport::Serial(_) => Err(CtlError::Usage(
            "devices lists what a server or a listener reaches; over --serial there is one \
             device: use status"
                .into(),
        )),
        Transport::Connect(addr) => {
            let me = DevicePath {
                name: addr.clone(),
                nr: None,
                network: Some(network),
            };
            let (links, mut rxs) =
                link::open(&[(me, Transport::Connect(addr.clone()))], &opts.connect).await;
            let rx = match rxs.pop() {
                Some(Ok((rx, _))) => rx,
                Some(Err(e)) => {
                    links.close().await;
                    return Err(e);
                }
                None => return Err(CtlError::Internal("no connection".into())),
            };
            let mut ignore = |_p: Progress| {};
            let mut core = Core::listing(addr, rx, &mut ignore);
            let r = list_one(&mut core, &opts.connect, opts.connect.timeouts.connect).await;
            drop(core);
            links.close().await;
            r
        }
        Transport::Listen(addr) => listen(*addr, &network, opts).await,
    }
}

/// Collects the devices that connect up to `addr` within the listen timeout.
async fn listen(
    addr: std::net::SocketAddr,
    network: &str,
    opts: &DevicesOptions,
) -> Result<Vec<DeviceEntry>, CtlError> {
    let tls = match &opts.connect.tls {
        Some(t) => Some(acceptor(t)?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| CtlError::Listen { addr, source })?;
    let cfg = link::conn_config(network, &opts.connect, Side::Server);
    let shutdown = CancellationToken::new();
    let announcer = opts.connect.announce.then(|| {
        tokio::spawn(link::announce(
            &listener,
            vec![network.to_owned()],
            &opts.connect,
            shutdown.clone(),
        ))
    });
    let (tx, mut rx) = mpsc::channel(4096);
    let server = tokio::spawn(crate::net::listen(listener, tls, cfg, tx, shutdown.clone()));
    let until = tokio::time::Instant::now() + opts.connect.timeouts.listen;
    let mut routes: HashMap<ConnId, mpsc::Sender<NetEvent>> = HashMap::new();
    let mut numbers = AutoDeviceNumbers::new();
    let mut sessions = tokio::task::JoinSet::new();
    loop {
        let ev = tokio::select! {
            _ = tokio::time::sleep_until(until) => break,
            ev = rx.recv() => match ev { Some(ev) => ev, None => break },
        };
        let id = match &ev {
            NetEvent::Connected { id, .. }
            | NetEvent::Conn { id, .. }
            | NetEvent::QueueFailed { id, .. }
            | NetEvent::Closed { id, .. } => *id,
        };
        let mut ev = ev;
        if let NetEvent::Conn {
            event: ConnEvent::Authenticated { peer, .. },
            ..
        } = &mut ev
            && peer.device_nr == 0
        {
            peer.assigned_nr = numbers.assign(peer.unique_id.as_ref());
        }
        if matches!(ev, NetEvent::Connected { .. }) {
            let (stx, srx) = mpsc::channel(4096);
            routes.insert(id, stx);
            let copts = opts.connect.clone();
            sessions.spawn(async move {
                let mut ignore = |_p: Progress| {};
                let mut core = Core::listing("listener", srx, &mut ignore);
                list_one(&mut core, &copts, copts.timeouts.connect).await
            });
        }
        if let Some(stx) = routes.get(&id) {
            let _ = stx.send(ev).await;
        }
    }
    let mut out = Vec::new();
    // Sessions still waiting for their infos finish within the ready timeout.
    while let Some(r) = sessions.join_next().await {
        if let Ok(Ok(list)) = r {
            out.extend(list);
        }
    }
    shutdown.cancel();
    let _ = server.await;
    if let Some(a) = announcer {
        let _ = a.await;
    }
    out.sort_by(|a, b| a.device.cmp(&b.device));
    Ok(out)
}
