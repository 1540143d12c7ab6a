//! Benchmark (not a test): an 8 MiB push with the real controller code (`iocomd::ctl::push`,
//! what `iocomctl push` runs) to an iocomd core, against a raw TCP copy of the same bytes over
//! the same link, at 0, 20 and 50 ms round-trip time, in one run. Prints both rates and their
//! ratio for every RTT.
//!
//! The link: two network namespaces, each holding one end of a tun point-to-point link, joined
//! by a user-space delay line in this process (it reads each packet from one tun and writes it
//! to the other after the one-way delay; `tc netem` is not available on the machines this runs
//! on, see `../shared/notes/test-infrastructure.md`). TCP runs end to end over it, so slow
//! start, windows and ACK clocking see the real RTT. The daemon (demo settings, no install
//! helper: each push is received, CRC-checked, SHA-256'd, fsynced, then ends with
//! `helper-unavailable`) and the raw receiver (which writes, SHA-256s and fsyncs the bytes
//! into a file too, `support/raw_sink.rs`) run in a child process in the device namespace;
//! the controller and the raw sender run here, in the controller namespace.
//!
//! `cargo bench -p iocomd --bench latency_push` (as root; without root, `/dev/net/tun` or `ip`
//! it prints why it is skipped and exits). `IOCOMD_BENCH_MIB` sets the size (default 8),
//! `IOCOMD_BENCH_REPS` the repetitions per RTT (default 2; the best of each is compared),
//! `IOCOMD_BENCH_RING` the daemon's `stream.buffer_size` (default: the configuration's).

#[path = "../tests/daemon_support/mod.rs"]
#[allow(unused_imports)]
mod daemon_support;
#[path = "support/raw_sink.rs"]
mod raw_sink;

use daemon_support::{Ctl, Source, pseudo_random};
use iocomd::config::Settings;
use iocomd::ctl::{self, ConnectOptions, DevicePath, Progress, PushOptions, Target, Transport};
use iocomd::daemon::{self, Listener};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const CHILD_ENV: &str = "IOCOMD_LATENCY_CHILD";
/// Addresses of the two tun ends.
const CTL_ADDR: &str = "10.77.0.1";
const DEV_ADDR: &str = "10.77.0.2";
const RTTS_MS: [u64; 3] = [0, 20, 50];
/// Size of the push by a controller announcing the reference's 1392-byte frames (the daemon
/// offers it the small ring, as it does ispy).
const STOCK_BYTES: usize = 256 << 10;

fn main() {
    if std::env::var_os(CHILD_ENV).is_some() {
        child();
        return;
    }
    if let Err(why) = can_run() {
        println!("latency_push: skipped: {why}");
        return;
    }
    let mib: usize = env_or("IOCOMD_BENCH_MIB", 8);
    let reps: usize = env_or("IOCOMD_BENCH_REPS", 2).max(1);
    let link = Link::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("payload.bin");
    let data = pseudo_random(mib << 20, 0x1a7e);
    std::fs::write(&file, &data).unwrap();
    let (mut child, iocom_port, raw_port) = start_child(&link, dir.path());

    // From here on this thread (and the runtime's threads it starts) live in the controller
    // namespace: every socket the controller and the raw sender open is on the delay line.
    link.enter_ctl();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "payload: {mib} MiB of incompressible bytes; link: tun pair between two network \
         namespaces, user-space delay line, MTU 1500; best of {reps} per RTT"
    );
    let mut rows = Vec::new();
    for rtt in RTTS_MS {
        link.set_rtt(Duration::from_millis(rtt));
        let (mut raw, mut iocom) = (0f64, 0f64);
        for _ in 0..reps {
            let r = rt.block_on(raw_push(raw_port, &data));
            let i = rt.block_on(iocom_push(iocom_port, &file, data.len()));
            println!(
                "  RTT {rtt:>2} ms: raw TCP {:6.1} MB/s, IOCOM {:6.1} MB/s",
                mbps(data.len(), r),
                mbps(data.len(), i)
            );
            raw = raw.max(mbps(data.len(), r));
            iocom = iocom.max(mbps(data.len(), i));
        }
        let stock = rt.block_on(stock_push(iocom_port, STOCK_BYTES));
        rows.push((rtt, raw, iocom, mbps(STOCK_BYTES, stock)));
    }
    println!(
        "RTT    raw TCP      IOCOM        ratio   stock-style controller (1392-byte frames, \
         4 KiB + 1 ring, {} KiB)",
        STOCK_BYTES >> 10
    );
    for (rtt, raw, iocom, stock) in rows {
        println!(
            "{rtt:>2} ms  {raw:6.1} MB/s  {iocom:6.1} MB/s  {:.2}    {stock:6.2} MB/s",
            iocom / raw
        );
    }
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn mbps(bytes: usize, t: Duration) -> f64 {
    bytes as f64 / 1e6 / t.as_secs_f64()
}

/// Why this machine cannot run the benchmark, if it cannot.
fn can_run() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("needs root (network namespaces and tun devices)".into());
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Err("/dev/net/tun is missing".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err("the `ip` tool (iproute2) is missing".into()),
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces, a tun in each, and the delay line between them; the namespaces are removed
/// on drop (the forwarding threads end with the process).
struct Link {
    ctl: String,
    dev: String,
    /// One-way delay in microseconds, read for every packet.
    delay_us: Arc<AtomicU64>,
}

impl Link {
    fn new() -> Self {
        let id = std::process::id();
        let link = Self {
            ctl: format!("iocomd-lat-ctl-{id}"),
            dev: format!("iocomd-lat-dev-{id}"),
            delay_us: Arc::new(AtomicU64::new(0)),
        };
        let ends = [
            (&link.ctl, "latc", CTL_ADDR, DEV_ADDR),
            (&link.dev, "latd", DEV_ADDR, CTL_ADDR),
        ];
        let mut tuns = Vec::new();
        for (ns, name, local, peer) in ends {
            ip(&["netns", "add", ns]);
            let tun = open_tun(ns, name);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "addr", "add", local, "peer", peer, "dev", name]);
            ip(&["-n", ns, "link", "set", name, "up"]);
            // No cached ssthresh/RTT from the previous RTT setting.
            let _ = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    ns,
                    "sysctl",
                    "-qw",
                    "net.ipv4.tcp_no_metrics_save=1",
                ])
                .status();
            tuns.push(tun);
        }
        let (b, a) = (tuns.pop().unwrap(), tuns.pop().unwrap());
        let (a2, b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
        forward(a, b2, link.delay_us.clone());
        forward(b, a2, link.delay_us.clone());
        link
    }

    fn set_rtt(&self, rtt: Duration) {
        let one_way = u64::try_from(rtt.as_micros() / 2).unwrap_or(u64::MAX);
        self.delay_us.store(one_way, Ordering::Relaxed);
    }

    /// Moves the calling thread into the controller namespace.
    fn enter_ctl(&self) {
        enter(&self.ctl);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        for ns in [&self.ctl, &self.dev] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn enter(ns: &str) {
    let f = File::open(format!("/run/netns/{ns}")).expect("namespace file");
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
}

/// Opens a new tun device `name` inside namespace `ns` (from a thread that joins it, so the
/// device is created there).
fn open_tun(ns: &str, name: &str) -> File {
    let (ns, name) = (ns.to_owned(), name.to_owned());
    std::thread::spawn(move || {
        enter(&ns);
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .expect("open /dev/net/tun");
        tun_set_iff(&f, &name).expect("TUNSETIFF");
        f
    })
    .join()
    .unwrap()
}

/// `struct ifreq` with the name and the flags member of its union (40 bytes on Linux).
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: i16,
    _pad: [u8; 22],
}

const TUNSETIFF: nix::libc::c_ulong = 0x4004_54ca;
const IFF_TUN: i16 = 0x0001;
const IFF_NO_PI: i16 = 0x1000;

#[allow(unsafe_code)]
fn tun_set_iff(f: &File, name: &str) -> std::io::Result<()> {
    let mut req = IfReq {
        name: [0; 16],
        flags: IFF_TUN | IFF_NO_PI,
        _pad: [0; 22],
    };
    let n = name.len().min(15);
    req.name[..n].copy_from_slice(&name.as_bytes()[..n]);
    // SAFETY: TUNSETIFF reads (and writes back) a `struct ifreq`, which `IfReq` lays out; the
    // pointer is valid for the call and the fd is open.
    let r = unsafe { nix::libc::ioctl(f.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReq) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// One direction of the delay line: a thread reads packets and stamps them with their
/// departure time, a second one writes each to the other tun once that time has come (FIFO,
/// so the deadlines ascend).
fn forward(mut from: File, mut to: File, delay_us: Arc<AtomicU64>) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        loop {
            let Ok(n) = from.read(&mut buf) else { return };
            let due = Instant::now() + Duration::from_micros(delay_us.load(Ordering::Relaxed));
            if tx.send((due, buf[..n].to_vec())).is_err() {
                return;
            }
        }
    });
    std::thread::spawn(move || {
        while let Ok((due, pkt)) = rx.recv() {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if to.write(&pkt).is_err() {
                return;
            }
        }
    });
}

/// Starts the device side in the device namespace; returns it with its IOCOM and raw ports.
fn start_child(link: &Link, dir: &std::path::Path) -> (Child, u16, u16) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &link.dev])
        .arg(std::env::current_exe().unwrap())
        .env(CHILD_ENV, "1")
        .env("IOCOMD_BENCH_STATE", dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mut ports = line
        .split_whitespace()
        .map(|p| p.parse::<u16>().expect("port"));
    let (iocom, raw) = (ports.next().unwrap(), ports.next().unwrap());
    (child, iocom, raw)
}

/// Raw TCP: connect, send everything, half-close; the receiver answers with the byte count
/// once it has read to the end and written, hashed and fsynced the bytes into a file
/// (`raw_sink`, what `push_throughput`'s raw path does too). Timed from the connected socket to that answer.
async fn raw_push(port: u16, data: &[u8]) -> Duration {
    let mut s = tokio::net::TcpStream::connect((DEV_ADDR, port))
        .await
        .unwrap();
    let t0 = Instant::now();
    for chunk in data.chunks(64 << 10) {
        s.write_all(chunk).await.unwrap();
    }
    s.shutdown().await.unwrap();
    let got = s.read_u64().await.unwrap();
    let t = t0.elapsed();
    assert_eq!(got as usize, data.len());
    t
}

/// One push with the real controller; timed like `push_throughput` (the transfer phase: the
/// upload's start to the device's confirmation of the stream and its CRC).
async fn iocom_push(port: u16, file: &std::path::Path, len: usize) -> Duration {
    let target = Target {
        device: "gina3.iocafenet".parse::<DevicePath>().unwrap(),
        transport: Transport::Connect(format!("{DEV_ADDR}:{port}")),
    };
    let opts = PushOptions::new(target, ConnectOptions::default(), file.to_path_buf());
    let mut started = None;
    let mut transferred = None;
    let result = ctl::push(&opts, |p| match p {
        Progress::Started { .. } => started = Some(Instant::now()),
        Progress::Transferred { bytes, .. } => transferred = Some((Instant::now(), bytes)),
        _ => {}
    })
    .await;
    let (Some(t0), Some((t1, bytes))) = (started, transferred) else {
        panic!("the transfer did not complete: {result:?}");
    };
    assert_eq!(bytes as usize, len);
    // Let the daemon finish with the push (it ends with helper-unavailable) before the next.
    tokio::time::sleep(Duration::from_millis(300)).await;
    t1 - t0
}

/// A push by a controller that is not a streaming peer (1392-byte frames, like ispy and every
/// stock C controller): the daemon offers it the small ring. Timed from the upload's start to
/// its end (the device left RUNNING), the test suite's `ControllerEndpoint` controller.
async fn stock_push(port: u16, len: usize) -> Duration {
    let addr = std::net::SocketAddr::new(DEV_ADDR.parse().unwrap(), port);
    let mut c = Ctl::connect_sized(addr, "gina", None, 1392).await;
    c.wait_ready().await;
    let mut src = Source {
        data: pseudo_random(len, 3),
        pos: 0,
        hold_at: None,
    };
    let t0 = Instant::now();
    let p = c.upload(&mut src, None).await;
    let t = t0.elapsed();
    assert!(
        matches!(
            p,
            Some(iocomd::proto::stream::controller::Progress::Completed { .. })
        ),
        "stock-style push: {p:?}"
    );
    let _ = c.wait_final_tod_err().await;
    c.disconnect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    t
}

/// The device side: the daemon with demo settings (no helper) and a raw receiver.
fn child() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let state = std::path::PathBuf::from(std::env::var("IOCOMD_BENCH_STATE").unwrap());
        let mut settings = Settings::demo(&state.join("daemon"));
        settings.spool.min_free_space = 0;
        if let Some(ring) = std::env::var("IOCOMD_BENCH_RING")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            settings.stream_buffer_size = ring;
        }
        eprintln!(
            "daemon: stream.buffer_size {} B (tod_buf for a streaming controller)",
            settings.stream_buffer_size
        );
        let tcp = tokio::net::TcpListener::bind((DEV_ADDR, 0)).await.unwrap();
        let raw = tokio::net::TcpListener::bind((DEV_ADDR, 0)).await.unwrap();
        println!(
            "{} {}",
            tcp.local_addr().unwrap().port(),
            raw.local_addr().unwrap().port()
        );
        std::io::stdout().flush().unwrap();
        let raw_file = state.join("raw.bin");
        tokio::spawn(async move {
            // One push at a time: each writes, hashes and fsyncs the file before it answers.
            while let Ok((mut s, _)) = raw.accept().await {
                let (n, _digest) = raw_sink::receive_to_file(&mut s, &raw_file).await;
                let _ = s.write_u64(n).await;
            }
        });
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
            term.recv().await;
            s.cancel();
        });
        daemon::run(vec![Listener { tcp, tls: None }], settings, None, stop)
            .await
            .unwrap();
    });
}
