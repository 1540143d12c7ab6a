//! iocomd and iocomctl over a serial line made of pseudo-terminals (`serial_support`): our
//! controller and our device in both serial roles, a real install over serial, the default
//! refusal of serial pushes, recovery from a port that goes away mid-transfer, a corrupted
//! byte (CRC error), garbage on the line and a stalled line, and a late confirm reply.
//!
//! The daemon runs without the install helper where only the link matters: every push is then
//! received and spooled and ends with `helper-unavailable` (206, exit 8) — proof that the whole
//! package crossed the line.

mod daemon_support;
mod serial_support;

use iocomd::config::{SerialEndpoint, SerialSide, Settings};
use iocomd::ctl::{
    self, ConnectOptions, CtlError, DevicePath, FailureClass, PushOptions, SerialLine,
    StatusOptions, Target, Timeouts, Transport,
};
use iocomd::daemon;
use iocomd::net::serial::SerialParams;
use iocomd::proto::conn::Side;
use serial_support::Line;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const DEVICE: &str = "gina3.iocafenet";

fn options() -> ConnectOptions {
    ConnectOptions {
        timeouts: Timeouts {
            connect: Duration::from_secs(20),
            ready: Duration::from_secs(30),
            result: Duration::from_secs(60),
            ..Timeouts::default()
        },
        ..ConnectOptions::default()
    }
}

fn target(port: &Path, side: Side) -> Target {
    Target {
        device: DEVICE.parse::<DevicePath>().unwrap(),
        transport: Transport::Serial(SerialLine {
            params: SerialParams::new(port),
            side,
        }),
    }
}

/// A daemon without helper whose only endpoint is the serial port `port`.
struct Dev {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), daemon::DaemonError>>,
    spool: std::path::PathBuf,
    _dir: tempfile::TempDir,
    sample: std::path::PathBuf,
}

fn serial_settings(s: &mut Settings, port: &Path, side: SerialSide, allow: bool) {
    s.listen.clear();
    s.allow_plain_tcp_push = false;
    s.allow_serial_push = allow;
    s.serial = vec![SerialEndpoint {
        params: SerialParams::new(port),
        side,
    }];
}

fn start_device(port: &Path, side: SerialSide, allow: bool) -> Dev {
    let dir = tempfile::tempdir().unwrap();
    let env = iocomd::demo::prepare(&dir.path().join("state")).unwrap();
    let mut settings = Settings::demo(&env.state_dir);
    serial_settings(&mut settings, port, side, allow);
    let spool = settings.spool.dir.clone();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(daemon::run(vec![], settings, None, shutdown.clone()));
    Dev {
        shutdown,
        task,
        spool,
        _dir: dir,
        sample: env.sample_package,
    }
}

impl Dev {
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    fn partial_files(&self) -> usize {
        std::fs::read_dir(&self.spool)
            .map(|rd| {
                rd.filter(|e| {
                    e.as_ref()
                        .is_ok_and(|e| e.path().to_string_lossy().ends_with(".partial"))
                })
                .count()
            })
            .unwrap_or(0)
    }
}

/// A push the daemon received completely: without a helper it ends `helper-unavailable`.
fn assert_received(r: Result<ctl::PushOutcome, CtlError>, size: u64) {
    match r {
        Err(CtlError::Device { class, report, .. }) => {
            assert_eq!(class, FailureClass::InstallFailed);
            assert_eq!(report.code.as_deref(), Some("helper-unavailable"));
            assert_eq!(report.bytes, Some(size), "every byte crossed the line");
        }
        other => panic!("expected helper-unavailable, got {other:?}"),
    }
}

async fn status(port: &Path, side: Side) -> Result<ctl::DeviceReport, CtlError> {
    ctl::status(&StatusOptions {
        target: target(port, side),
        connect: options(),
    })
    .await
}

/// A large incompressible file (the daemon spools it before asking the absent helper).
fn big_file(dir: &Path, n: usize) -> std::path::PathBuf {
    let p = dir.join("big.deb");
    std::fs::write(&p, daemon_support::pseudo_random(n, 7)).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_as_serial_client_and_as_serial_server() {
    for (dev_side, ctl_side) in [
        (SerialSide::Client, Side::Server),
        (SerialSide::Server, Side::Client),
    ] {
        let line = Line::new(None);
        let dev = start_device(&line.device_port, dev_side, true);
        let size = std::fs::metadata(&dev.sample).unwrap().len();
        let opts = PushOptions::new(
            target(&line.ctl_port, ctl_side),
            options(),
            dev.sample.clone(),
        );
        let mut events = Vec::new();
        let r = ctl::push(&opts, |p| events.push(p)).await;
        assert_received(r, size);
        assert!(
            matches!(&events[0], ctl::Progress::Connected { peer } if peer.is_serial()),
            "{events:?}"
        );
        let st = status(&line.ctl_port, ctl_side).await.unwrap();
        assert_eq!(st.code.as_deref(), Some("helper-unavailable"));
        assert_eq!(st.seq, Some(1));
        dev.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_pushes_are_refused_unless_the_configuration_allows_them() {
    let line = Line::new(None);
    let dev = start_device(&line.device_port, SerialSide::Client, false);
    let opts = PushOptions::new(
        target(&line.ctl_port, Side::Server),
        options(),
        dev.sample.clone(),
    );
    let e = ctl::push(&opts, |_| {}).await.unwrap_err();
    assert_eq!(e.exit_code(), 4, "{e}");
    // The status stays readable, and the refusal is no result of the device's.
    let st = status(&line.ctl_port, Side::Server).await.unwrap();
    assert_eq!(st.seq, Some(0));
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_confirm_reply_does_not_restart_the_connect_sequence() {
    // The device's FB reaches the controller 600 ms late, so its FA comes 600 ms after the
    // FB (as from a loaded controller). A device that started over at 300 ms, as the C client
    // does, would send FD to a controller that is connected by then: a frame-number error
    // there, and this status query would fail.
    let line = Line::new(None);
    line.control.hold_confirm_ms.store(600, Ordering::SeqCst);
    let dev = start_device(&line.device_port, SerialSide::Client, false);
    let st = status(&line.ctl_port, Side::Server).await.unwrap();
    assert_eq!(st.seq, Some(0));
    assert_eq!(
        line.control.hold_confirm_ms.load(Ordering::SeqCst),
        0,
        "the confirm was held"
    );
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirm_reply_later_than_the_device_waits_costs_one_more_connect_sequence() {
    // The device's FB reaches the controller 1.5 s late: the device started over at 1 s, and
    // its new FD reaches the controller after the controller connected, which drops that
    // connection (a frame-number error, as in C). The status query connects again.
    let line = Line::new(None);
    line.control.hold_confirm_ms.store(1500, Ordering::SeqCst);
    let dev = start_device(&line.device_port, SerialSide::Client, false);
    let st = status(&line.ctl_port, Side::Server).await.unwrap();
    assert_eq!(st.seq, Some(0));
    assert_eq!(line.control.hold_confirm_ms.load(Ordering::SeqCst), 0);
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_gone_mid_transfer_is_reopened_with_backoff() {
    let line = Line::new(None);
    let dev = start_device(&line.device_port, SerialSide::Client, true);
    let dir = tempfile::tempdir().unwrap();
    let file = big_file(dir.path(), 256 << 10);
    let opts = PushOptions::new(target(&line.ctl_port, Side::Server), options(), file);
    let push = tokio::spawn(async move { ctl::push(&opts, |_| {}).await });
    // Unplug once 32 KiB went down the line.
    let t0 = std::time::Instant::now();
    while line.c2d() < 32 << 10 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "transfer did not start"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    line.unplug();
    let e = push.await.unwrap().unwrap_err();
    assert_eq!(e.exit_code(), 6, "a transfer cut off by the line: {e}");
    // The adapter comes back under the same name; the daemon reopens it and the partial
    // file is gone; the interrupted push is the last result.
    tokio::time::sleep(Duration::from_millis(500)).await;
    line.plug();
    let st = status(&line.ctl_port, Side::Server).await.unwrap();
    assert_eq!(st.code.as_deref(), Some("interrupted"), "{st:?}");
    assert_eq!(dev.partial_files(), 0);
    // And a whole push works again.
    let size = std::fs::metadata(&dev.sample).unwrap().len();
    let opts = PushOptions::new(
        target(&line.ctl_port, Side::Server),
        options(),
        dev.sample.clone(),
    );
    assert_received(ctl::push(&opts, |_| {}).await, size);
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_byte_and_garbage_are_survived() {
    let line = Line::new(None);
    // Garbage on the line before anyone connects: the connect sequence skips it.
    line.inject_to_device(&[0x00, 0x13, 0xFA, 0x55, 0xFF, 0x42, 0x07]);
    let dev = start_device(&line.device_port, SerialSide::Client, true);
    tokio::time::sleep(Duration::from_millis(200)).await;
    line.inject_to_device(&[0x99, 0xFC, 0x01, 0x02]);
    status(&line.ctl_port, Side::Server).await.unwrap();
    // One flipped bit in the middle of a push: the device's CRC check drops the frame and
    // the connection; the push fails, the link comes back.
    let dir = tempfile::tempdir().unwrap();
    let file = big_file(dir.path(), 64 << 10);
    line.control
        .corrupt_c2d
        .store(line.c2d() + 20_000, Ordering::SeqCst);
    let opts = PushOptions::new(target(&line.ctl_port, Side::Server), options(), file);
    let e = ctl::push(&opts, |_| {}).await.unwrap_err();
    assert_eq!(e.exit_code(), 6, "a transfer cut off by the line: {e}");
    assert_eq!(
        line.control.corrupt_c2d.load(Ordering::SeqCst),
        0,
        "the byte was corrupted"
    );
    let st = status(&line.ctl_port, Side::Server).await.unwrap();
    assert_eq!(st.code.as_deref(), Some("interrupted"), "{st:?}");
    let size = std::fs::metadata(&dev.sample).unwrap().len();
    let opts = PushOptions::new(
        target(&line.ctl_port, Side::Server),
        options(),
        dev.sample.clone(),
    );
    assert_received(ctl::push(&opts, |_| {}).await, size);
    assert_eq!(dev.partial_files(), 0);
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_line_times_out_and_recovers() {
    let line = Line::new(None);
    let dev = start_device(&line.device_port, SerialSide::Client, true);
    let dir = tempfile::tempdir().unwrap();
    let file = big_file(dir.path(), 256 << 10);
    let opts = PushOptions::new(target(&line.ctl_port, Side::Server), options(), file);
    let push = tokio::spawn(async move { ctl::push(&opts, |_| {}).await });
    let t0 = std::time::Instant::now();
    while line.c2d() < 16 << 10 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "transfer did not start"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Nothing moves for 1 s: four times the 250 ms silence timeout.
    line.control.stalled.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    line.control.stalled.store(false, Ordering::SeqCst);
    let e = push.await.unwrap().unwrap_err();
    assert_eq!(e.exit_code(), 6, "a transfer cut off by the line: {e}");
    let st = status(&line.ctl_port, Side::Server).await.unwrap();
    assert_eq!(st.code.as_deref(), Some("interrupted"), "{st:?}");
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_is_installed_over_serial() {
    let line = Line::new(None);
    let port = line.device_port.clone();
    let dev = daemon_support::Daemon::start(|s| {
        serial_settings(s, &port, SerialSide::Client, true);
    })
    .await;
    let sample = dev.env.sample_package.to_str().unwrap().to_owned();
    let serial = format!("{},baud=115200", line.ctl_port.display());
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_iocomctl"))
        .args(["push", "--json", "--serial", &serial, DEVICE, &sample])
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["code"], "ok");
    assert_eq!(
        dev.installed(iocomd::demo::SAMPLE_PACKAGE).as_deref(),
        Some(iocomd::demo::SAMPLE_VERSION)
    );
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_iocomctl"))
        .args(["status", "--serial", &serial, DEVICE])
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(iocomd::demo::SAMPLE_VERSION), "{text}");
    dev.stop().await;
}
