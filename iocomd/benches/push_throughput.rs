//! Benchmark (not a test): push a 64 MiB file over IOCOM on loopback with the real controller
//! code (`iocomd::ctl::push`, what `iocomctl push` runs) to an iocomd core running in a child
//! process, against a raw TCP copy of the same file into another file with SHA-256 and an
//! fsync (the device fsyncs its spool file before it confirms the stream), in the same run;
//! for several `tod_buf` sizes. Prints throughput (the IOCOM transfer phase: upload start
//! to the device's confirmation), the ratio, CPU time of both processes, and the daemon's idle
//! RSS and peak RSS (VmHWM) during the push, and the frame sizes both ends negotiated (the
//! controller's from its session, the daemon's from its own "controller connected" event).
//!
//! `cargo bench -p iocomd --bench push_throughput` (set `IOCOMD_BENCH_MIB` for another size).
//! Each ring size is measured in `IOCOMD_BENCH_ROUNDS` rounds (default 3), each a raw copy
//! followed by a push; a summary line gives the median ratio of the rounds and its range, since
//! one round of a fraction of a second swings with the load of a shared machine.
//! The daemon child runs without an install helper: each push is received, checked (CRC-16,
//! SHA-256), fsynced and renamed, then ends with `helper-unavailable`.

#[path = "../tests/daemon_support/mod.rs"]
#[allow(unused_imports)]
mod daemon_support;
#[path = "support/raw_sink.rs"]
mod raw_sink;

use daemon_support::pseudo_random;
use iocomd::config::Settings;
use iocomd::ctl::{self, ConnectOptions, DevicePath, Progress, PushOptions, Target, Transport};
use iocomd::daemon::{self, Listener};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

const CHILD_ENV: &str = "IOCOMD_BENCH_CHILD";
/// The child's stdout line with the frame size its daemon negotiated.
const FRAME_LINE: &str = "daemon-send-frame-size ";

fn main() {
    if let Ok(ring) = std::env::var(CHILD_ENV) {
        child(ring.parse().expect("ring size"));
        return;
    }
    let mib: usize = std::env::var("IOCOMD_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rounds: usize = std::env::var("IOCOMD_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let data = pseudo_random(mib << 20, 0x5eed);
    println!("payload: {mib} MiB of incompressible bytes, {rounds} rounds per ring size");
    for ring in [64 << 10, 256 << 10, 1 << 20] {
        let mut ratios: Vec<f64> = (0..rounds)
            .map(|_| rt.block_on(run_one(&data, ring)))
            .collect();
        ratios.sort_by(f64::total_cmp);
        let median = ratios[ratios.len() / 2];
        println!(
            "tod_buf {:>7} B: median ratio {:.2} of {} rounds (min {:.2}, max {:.2})",
            ring + 1,
            median,
            ratios.len(),
            ratios[0],
            ratios[ratios.len() - 1]
        );
    }
}

/// One round: a raw copy, then a push to a new daemon child; prints the round's figures and
/// returns its ratio (IOCOM / raw throughput).
async fn run_one(data: &[u8], ring: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("payload.bin");
    std::fs::write(&file, data).unwrap();
    let raw = raw_copy(&file, data, dir.path()).await;

    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_ENV, ring.to_string())
        .env("IOCOMD_BENCH_STATE", dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr: SocketAddr = line.trim().parse().expect("child address");
    // Later lines of the child: the frame size the daemon sends with, once a controller is in.
    let (frame_tx, frame_rx) = std::sync::mpsc::channel::<u64>();
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            if let Some(n) = line
                .strip_prefix(FRAME_LINE)
                .and_then(|n| n.trim().parse().ok())
            {
                let _ = frame_tx.send(n);
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = rss(pid);

    // The real controller path (`iocomctl push` is this call), reading the file in chunks.
    let target = Target {
        device: "gina3.iocafenet".parse::<DevicePath>().unwrap(),
        transport: Transport::Connect(addr.to_string()),
    };
    let opts = PushOptions::new(target, ConnectOptions::default(), file.to_path_buf());
    let cpu0 = cpu_secs(pid);
    let own0 = cpu_secs(std::process::id());
    let mut started = None;
    let mut transferred = None;
    let mut ctl_frame = None;
    let result = ctl::push(&opts, |p| match p {
        Progress::Authenticated { frame_size, .. } => ctl_frame = Some(frame_size),
        Progress::Started { .. } => started = Some(Instant::now()),
        Progress::Transferred { bytes, .. } => transferred = Some((Instant::now(), bytes)),
        _ => {}
    })
    .await;
    let cpu = cpu_secs(pid) - cpu0;
    let own = cpu_secs(std::process::id()) - own0;
    let peak = rss(pid);
    let (Some(t0), Some((t1, bytes))) = (started, transferred) else {
        panic!("the transfer did not complete: {result:?}");
    };
    assert_eq!(bytes as usize, data.len());
    let iocom = t1 - t0;
    // Without a helper the device ends with helper-unavailable after receiving everything.
    let code = match &result {
        Ok(_) => "ok".to_string(),
        Err(e) => e
            .report()
            .and_then(|r| r.code.clone())
            .unwrap_or_else(|| e.to_string()),
    };
    let dev_frame = frame_rx.recv_timeout(Duration::from_secs(5)).ok();
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let _ = child.wait();
    let shown = |f: Option<u64>| f.map_or_else(|| "?".to_string(), |n| n.to_string());

    let mb = data.len() as f64 / 1e6;
    let (r_iocom, r_raw) = (mb / iocom.as_secs_f64(), mb / raw.as_secs_f64());
    println!(
        "tod_buf {:>7} B: IOCOM {:6.1} MB/s ({:.2} s), raw TCP+file+SHA-256+fsync {:6.1} MB/s ({:.2} s), \
         ratio {:.2}; frames: controller sends {} B, daemon sends {} B; \
         CPU daemon {:.2} s, controller {:.2} s; daemon RSS idle {:.1} MiB, peak (VmHWM) {:.1} MiB; result {}",
        ring + 1,
        r_iocom,
        iocom.as_secs_f64(),
        r_raw,
        raw.as_secs_f64(),
        r_iocom / r_raw,
        shown(ctl_frame.map(u64::from)),
        shown(dev_frame),
        cpu,
        own,
        idle.0 as f64 / 1024.0,
        peak.1 as f64 / 1024.0,
        code
    );
    r_iocom / r_raw
}

/// User + system CPU seconds of process `pid` (all threads).
fn cpu_secs(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is 14th, stime 15th.
    let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Clock ticks are 100 per second on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

/// (VmRSS, VmHWM) in KiB of process `pid`.
fn rss(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Raw TCP copy of `file` (holding `data`) on loopback into another file, with SHA-256 over
/// the bytes and an fsync (`raw_sink`); the sender reads the file in 64 KiB chunks like iocomctl
/// does.
async fn raw_copy(file: &std::path::Path, data: &[u8], dir: &std::path::Path) -> Duration {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let path = dir.join("raw.bin");
    let t0 = Instant::now();
    let recv = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        raw_sink::receive_to_file(&mut s, &path).await.1
    });
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut input = std::fs::File::open(file).unwrap();
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let n = std::io::Read::read(&mut input, &mut chunk).unwrap();
        if n == 0 {
            break;
        }
        s.write_all(&chunk[..n]).await.unwrap();
    }
    s.shutdown().await.unwrap();
    drop(s);
    let digest = recv.await.unwrap();
    let elapsed = t0.elapsed();
    assert_eq!(digest.as_slice(), Sha256::digest(data).as_slice());
    elapsed
}

/// The daemon child: demo settings without a helper, `tod_buf` = `ring` + 1.
fn child(ring: usize) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    // Only the connection side's info events reach the probe: the hot path stays untraced.
    let only = tracing_subscriber::filter::Targets::new()
        .with_target("iocomd::daemon::peers", tracing::Level::INFO);
    let _ = tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(FrameSizeProbe.with_filter(only)),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let state = std::path::PathBuf::from(std::env::var("IOCOMD_BENCH_STATE").unwrap());
        let mut settings = Settings::demo(&state.join("daemon"));
        settings.stream_buffer_size = u32::try_from(ring + 1).unwrap();
        settings.spool.min_free_space = 0;
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", tcp.local_addr().unwrap());
        std::io::stdout().flush().unwrap();
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

/// A tracing layer of the daemon child: prints the `send_frame_size` of the daemon's
/// "controller connected" event (what its connection really negotiated) as a [`FRAME_LINE`].
struct FrameSizeProbe;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for FrameSizeProbe {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Find(Option<u64>);
        impl tracing::field::Visit for Find {
            fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
                if field.name() == "send_frame_size" {
                    self.0 = Some(value);
                }
            }
            fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
        }
        let mut found = Find(None);
        event.record(&mut found);
        if let Some(n) = found.0 {
            println!("{FRAME_LINE}{n}");
            let _ = std::io::stdout().flush();
        }
    }
}
