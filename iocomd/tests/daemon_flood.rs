//! Admission under a bounded flood: sockets that never handshake (and reconnect when closed)
//! from another address, and more authenticated idle controllers than the device serves, do
//! not keep a valid push out. Also: one address cannot fill the handshake pool. Prints the
//! push time under the flood against the same push without it (one run, same machine).

mod daemon_support;

use daemon_support::{Ctl, Daemon, WAIT, push};
use iocomd::daemon::MAX_PEERS;
use iocomd::proto::stream::controller::Progress;
use iocomd::status::tod_err;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// Idle sockets of the flood, all from 127.0.0.2.
const IDLE_SOCKETS: usize = 200;
/// Authenticated controllers that then do nothing (more than the device serves).
const IDLE_CONTROLLERS: usize = MAX_PEERS + 8;

/// One flooding socket: connect from `from`, send nothing, reconnect when closed; counts
/// connections. Stops when `stop` is set.
async fn idle_socket(to: SocketAddr, from: &str, stop: Arc<AtomicBool>, count: Arc<AtomicU64>) {
    let from: std::net::IpAddr = from.parse().unwrap();
    while !stop.load(Ordering::Relaxed) {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        if sock.bind((from, 0).into()).is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let Ok(mut s) = sock.connect(to).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        count.fetch_add(1, Ordering::Relaxed);
        let mut buf = [0u8; 64];
        // Held until the device closes it (handshake deadline or eviction).
        loop {
            tokio::select! {
                r = s.read(&mut buf) => if matches!(r, Ok(0) | Err(_)) { break },
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    if stop.load(Ordering::Relaxed) { return; }
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_push_succeeds_during_a_flood_of_idle_and_authenticated_sockets() {
    let d = Daemon::start(|_| {}).await;
    // Three versions of one package: 1.0 installed first, then an upgrade timed on the quiet
    // device (1.1) and one under the flood (1.2), each transferred, verified and installed.
    let package = |v: &str| {
        let deb = daemon_support::build_package(&d.env, "iocom-flood", v, 256 << 10);
        std::fs::read(deb).unwrap()
    };
    let (v10, v11, v12) = (package("1.0"), package("1.1"), package("1.2"));
    let size = v12.len();
    let (_, st, tod) = push(d.addr, v10).await;
    assert_eq!((st.code.as_str(), tod), ("ok", Some(tod_err::COMPLETED)));
    let t = Instant::now();
    let (p, st, tod) = push(d.addr, v11).await;
    let quiet = t.elapsed();
    assert!(matches!(p, Progress::Completed { .. }), "{p:?}");
    assert_eq!((st.code.as_str(), tod), ("ok", Some(tod_err::COMPLETED)));

    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..IDLE_SOCKETS {
        flood.spawn(idle_socket(
            d.addr,
            "127.0.0.2",
            stop.clone(),
            count.clone(),
        ));
    }
    let mut idle = Vec::new();
    for _ in 0..IDLE_CONTROLLERS {
        let mut c = Ctl::connect(d.addr, "gina", None).await;
        c.wait_ready().await;
        idle.push(c);
    }
    // The flood is in place: the device holds its full budget of idle controllers and a pool
    // of idle sockets.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        count.load(Ordering::Relaxed) >= 8,
        "the flood did not connect"
    );

    let t = Instant::now();
    let (p, st, tod) = tokio::time::timeout(WAIT, push(d.addr, v12))
        .await
        .expect("the push did not finish during the flood");
    let flooded = t.elapsed();
    assert!(matches!(p, Progress::Completed { .. }), "{p:?}");
    assert_eq!(
        (st.code.as_str(), st.seq, tod),
        ("ok", 3, Some(tod_err::COMPLETED)),
        "the push was installed, not turned away: {st:?}"
    );
    assert_eq!(d.installed("iocom-flood").as_deref(), Some("1.2"));
    stop.store(true, Ordering::Relaxed);
    let connections = count.load(Ordering::Relaxed);
    flood.abort_all();
    while flood.join_next().await.is_some() {}
    drop(idle);
    eprintln!(
        "push of {} bytes: {:.3} s quiet, {:.3} s under a flood of {IDLE_SOCKETS} idle sockets \
         ({connections} connections made) and {IDLE_CONTROLLERS} idle authenticated \
         controllers (ratio {:.2})",
        size,
        quiet.as_secs_f64(),
        flooded.as_secs_f64(),
        flooded.as_secs_f64() / quiet.as_secs_f64()
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_fill_the_handshake_pool() {
    let d = Daemon::start(|_| {}).await;
    // 20 idle sockets from 127.0.0.3 (more than the per-address cap of 8), never reconnecting:
    // the oldest are closed at once, the rest by the handshake deadline.
    let mut socks = Vec::new();
    for _ in 0..20 {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind(([127, 0, 0, 3], 0).into()).unwrap();
        socks.push(s.connect(d.addr).await.unwrap());
    }
    let closed_quickly = async {
        let mut closed = 0;
        for s in socks.iter_mut() {
            let mut b = [0u8; 8];
            if let Ok(Ok(0) | Err(_)) =
                tokio::time::timeout(Duration::from_millis(500), s.read(&mut b)).await
            {
                closed += 1;
            }
        }
        closed
    };
    let closed = closed_quickly.await;
    assert!(closed >= 12, "only {closed} of 20 were closed at once");
    // A controller from another address is served meanwhile.
    let mut c = Ctl::connect(d.addr, "gina", None).await;
    c.wait_ready().await;
    assert!(c.status().is_some());
    d.stop().await;
}

/// `VmRSS` of process `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_returns_after_a_flood() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut daemon = tokio::process::Command::new(env!("CARGO_BIN_EXE_iocomd"))
        .arg("--demo")
        .arg("--state-dir")
        .arg(dir.path().join("demo"))
        .args(["--listen", &addr.to_string(), "--helper"])
        .arg(daemon_support::helper_binary())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = daemon.id().unwrap();
    // Serving: one controller sees the status.
    let mut c = Ctl::connect(addr, "gina", None).await;
    c.wait_ready().await;
    c.disconnect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = rss_kib(pid);

    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..IDLE_SOCKETS {
        flood.spawn(idle_socket(addr, "127.0.0.2", stop.clone(), count.clone()));
    }
    let mut controllers = Vec::new();
    for _ in 0..IDLE_CONTROLLERS {
        let mut c = Ctl::connect(addr, "gina", None).await;
        c.wait_ready().await;
        controllers.push(c);
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let peak = rss_kib(pid);
    stop.store(true, Ordering::Relaxed);
    flood.abort_all();
    while flood.join_next().await.is_some() {}
    for c in &controllers {
        c.disconnect();
    }
    drop(controllers);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib(pid);
    eprintln!(
        "iocomd RSS: {idle} KiB idle, {peak} KiB during a flood of {IDLE_SOCKETS} idle sockets \
         ({} connections) and {IDLE_CONTROLLERS} controllers, {after} KiB after it",
        count.load(Ordering::Relaxed)
    );
    assert!(
        after <= 2 * idle,
        "{after} KiB after the flood, {idle} KiB idle"
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = tokio::time::timeout(Duration::from_secs(30), daemon.wait()).await;
}
