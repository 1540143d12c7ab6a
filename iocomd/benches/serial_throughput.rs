//! Benchmark (not a test): push a file over an emulated 115200 8N1 serial line with the real
//! controller code (`iocomd::ctl::push`, what `iocomctl push --serial` runs) to an iocomd core
//! on the other end. The line is two pseudo-terminal pairs and a relay that delivers each
//! direction at 11 520 bytes/s (a pty alone moves bytes at memory speed). Prints the transfer
//! phase's payload throughput, the bytes the relay carried each way (frames, ACKs, keep-alives)
//! and both against the line's limit; for our default `tod_buf` ring (256 KiB) and the
//! reference's 257 bytes.
//!
//! `cargo bench -p iocomd --bench serial_throughput` (`IOCOMD_BENCH_KIB` sets the size,
//! default 32). The daemon runs without an install helper: each push is received, spooled and
//! then ends with `helper-unavailable`.

#[path = "../tests/daemon_support/mod.rs"]
#[allow(unused_imports)]
mod daemon_support;
#[path = "../tests/serial_support/mod.rs"]
mod serial_support;

use daemon_support::pseudo_random;
use iocomd::config::{SerialEndpoint, SerialSide, Settings};
use iocomd::ctl::{self, ConnectOptions, DevicePath, Progress, PushOptions, SerialLine, Target};
use iocomd::net::serial::SerialParams;
use iocomd::proto::conn::Side;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

fn main() {
    let kib: usize = std::env::var("IOCOMD_BENCH_KIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let line_rate = SerialParams::new("/dev/null").line_bytes_per_sec();
    println!(
        "line: 115200 baud 8N1 = {line_rate:.0} B/s each way; payload {kib} KiB incompressible"
    );
    let data = pseudo_random(kib << 10, 0x5e71a1);
    for ring in [256 << 10, 257] {
        rt.block_on(run_one(&data, ring, line_rate));
    }
}

async fn run_one(data: &[u8], ring: u32, line_rate: f64) {
    let line = serial_support::Line::new(Some(line_rate));
    let dir = tempfile::tempdir().unwrap();
    let env = iocomd::demo::prepare(&dir.path().join("state")).unwrap();
    let mut settings = Settings::demo(&env.state_dir);
    settings.listen.clear();
    settings.stream_buffer_size = ring;
    settings.allow_serial_push = true;
    settings.serial = vec![SerialEndpoint {
        params: SerialParams::new(&line.device_port),
        side: SerialSide::Client,
    }];
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(iocomd::daemon::run(
        vec![],
        settings,
        None,
        shutdown.clone(),
    ));
    let file = dir.path().join("payload.bin");
    std::fs::write(&file, data).unwrap();
    let target = Target {
        device: "gina3.iocafenet".parse::<DevicePath>().unwrap(),
        transport: ctl::Transport::Serial(SerialLine {
            params: SerialParams::new(&line.ctl_port),
            side: Side::Server,
        }),
    };
    let opts = PushOptions::new(target, ConnectOptions::default(), file);
    let (mut start, mut end) = (None, None);
    let mut wire = (0, 0);
    let r = ctl::push(&opts, |p| match p {
        Progress::Started { .. } => {
            start = Some(Instant::now());
            wire = (
                line.control.c2d.load(std::sync::atomic::Ordering::SeqCst),
                line.control.d2c.load(std::sync::atomic::Ordering::SeqCst),
            );
        }
        Progress::Transferred { .. } => end = Some(Instant::now()),
        _ => {}
    })
    .await;
    let wire_end = (
        line.control.c2d.load(std::sync::atomic::Ordering::SeqCst),
        line.control.d2c.load(std::sync::atomic::Ordering::SeqCst),
    );
    let code = r
        .as_ref()
        .err()
        .and_then(|e| e.report())
        .and_then(|r| r.code.clone());
    let (Some(s), Some(e)) = (start, end) else {
        println!("ring {ring:>6}: transfer did not complete: {r:?}");
        return;
    };
    let secs = (e - s).as_secs_f64();
    let bps = data.len() as f64 / secs;
    let c2d = (wire_end.0 - wire.0) as f64 / secs;
    let d2c = (wire_end.1 - wire.1) as f64 / secs;
    println!(
        "ring {ring:>6}: {} B in {secs:.2} s = {bps:.0} B/s payload, {:.2} of the line; \
         wire c2d {c2d:.0} B/s ({:.2}), d2c {d2c:.0} B/s ({:.2}); device result {}",
        data.len(),
        bps / line_rate,
        c2d / line_rate,
        d2c / line_rate,
        code.as_deref().unwrap_or("-"),
    );
    shutdown.cancel();
    let _ = task.await;
}
