//! `iocomd::ctl` against in-test devices (our DeviceEndpoint over the net driver on
//! 127.0.0.1): a successful push delivers identical bytes with progress events; refused
//! connections, wrong passwords, busy devices and each failure code end in their exit class.

mod ctl_support;

use ctl_support::{Spec, Verdict, free_addr, pki, random_bytes, start, start_up};
use iocomd::ctl::{
    self, ConnectOptions, Credentials, CtlError, DevicePath, FailureClass, Progress, PushOptions,
    StatusOptions, Target, Timeouts, TlsOptions, Transport, UpdState,
};
use std::path::PathBuf;
use std::time::Duration;

fn device(s: &str) -> DevicePath {
    s.parse().unwrap()
}

fn connect_to(dev: &str, addr: std::net::SocketAddr) -> Target {
    Target {
        device: device(dev),
        transport: Transport::Connect(addr.to_string()),
    }
}

/// Generous timeouts: the machine is shared and loaded.
fn options() -> ConnectOptions {
    ConnectOptions {
        timeouts: Timeouts {
            connect: Duration::from_secs(30),
            ready: Duration::from_secs(60),
            result: Duration::from_secs(60),
            ..Timeouts::default()
        },
        ..ConnectOptions::default()
    }
}

fn package(dir: &tempfile::TempDir, n: usize) -> (PathBuf, Vec<u8>) {
    let data = random_bytes(n, n as u64 + 7);
    let path = dir.path().join("pkg.deb");
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_delivers_identical_bytes_and_reports_progress() {
    let dir = tempfile::tempdir().unwrap();
    // Several ring cycles with a small ring: 100 KB through 4097 bytes.
    let (file, data) = package(&dir, 100_000);
    let dev = start(Spec::new("gina", 3)).await;
    let opts = PushOptions::new(connect_to("gina3.cafenet", dev.addr), options(), file);
    let mut events = Vec::new();
    let out = ctl::push(&opts, |p| events.push(p)).await.unwrap();
    assert_eq!(out.bytes, data.len() as u64);
    assert_eq!(out.crc, iocomd::proto::crc::crc16(&data));
    assert_eq!(out.report.code.as_deref(), Some("ok"));
    assert_eq!(out.report.tod_err, Some(6));
    assert_eq!(out.report.seq, Some(6), "seq moved from 5 to 6");
    assert_eq!(out.report.installed_version.as_deref(), Some("2.0"));
    let received = dev.stop().await;
    assert!(received == data, "device received different bytes");

    // Event order: connected, authenticated, located, started, transfer…, transferred, device.
    assert!(
        matches!(events[0], Progress::Connected { .. }),
        "{events:?}"
    );
    assert!(matches!(events[1], Progress::Authenticated { .. }));
    assert_eq!(
        events[2],
        Progress::Located {
            device: "gina3.cafenet".into(),
            via: None
        }
    );
    match &events[3] {
        Progress::Started {
            total,
            ring,
            installed_version,
        } => {
            assert_eq!(*total, 100_000);
            assert_eq!(*ring, 4097);
            assert_eq!(installed_version.as_deref(), Some("1.0"));
        }
        e => panic!("expected Started, got {e:?}"),
    }
    let transferred = events
        .iter()
        .position(|e| matches!(e, Progress::Transferred { bytes: 100_000, .. }))
        .expect("Transferred event");
    let transfers: Vec<u64> = events[..transferred]
        .iter()
        .filter_map(|e| match e {
            Progress::Transfer { bytes, .. } => Some(*bytes),
            _ => None,
        })
        .collect();
    assert_eq!(transfers.last(), Some(&100_000));
    assert!(transfers.windows(2).all(|w| w[0] <= w[1]), "{transfers:?}");
    assert!(events[transferred..].iter().any(|e| matches!(
        e,
        Progress::Device {
            state: UpdState::Idle,
            percent: Some(100)
        }
    )));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_is_class_3() {
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = package(&dir, 10);
    // A port with nothing listening: bind, note it, close.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let opts = PushOptions::new(connect_to("gina3.cafenet", addr), options(), file);
    let e = ctl::push(&opts, |_| {}).await.unwrap_err();
    assert!(matches!(e, CtlError::Connect { .. }), "{e:?}");
    assert_eq!(e.exit_code(), 3);
    assert!(e.to_string().contains("gina3.cafenet"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_file_is_a_usage_error_before_connecting() {
    let addr: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let opts = PushOptions::new(
        connect_to("gina3.cafenet", addr),
        options(),
        "/nonexistent/pkg.deb".into(),
    );
    let e = ctl::push(&opts, |_| {}).await.unwrap_err();
    assert!(matches!(e, CtlError::File { .. }), "{e:?}");
    assert_eq!(e.exit_code(), 2);
}

fn tls_options(ca: &std::path::Path, password: &str) -> ConnectOptions {
    ConnectOptions {
        tls: Some(TlsOptions {
            ca: Some(ca.to_owned()),
            server_name: Some("localhost".into()),
            ..TlsOptions::default()
        }),
        credentials: Some(Credentials {
            user: "ctl".into(),
            password: password.into(),
        }),
        ..options()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_push_with_password_and_wrong_password_is_class_4() {
    let dir = tempfile::tempdir().unwrap();
    let (file, data) = package(&dir, 20_000);
    let (_pki, cert, key) = pki();
    let dev = start(Spec {
        password: Some("s3cret"),
        tls: Some((cert.clone(), key)),
        ..Spec::new("gina", 3)
    })
    .await;
    let target = connect_to("gina3.cafenet", dev.addr);
    let bad = PushOptions::new(target.clone(), tls_options(&cert, "guess"), file.clone());
    let e = ctl::push(&bad, |_| {}).await.unwrap_err();
    assert!(matches!(e, CtlError::AuthRefused { .. }), "{e:?}");
    assert_eq!(e.exit_code(), 4);

    let good = PushOptions::new(target, tls_options(&cert, "s3cret"), file);
    let out = ctl::push(&good, |_| {}).await.unwrap();
    assert_eq!(out.bytes, 20_000);
    assert!(dev.stop().await == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_an_untrusted_device_certificate_is_class_3() {
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = package(&dir, 100);
    let (_a, cert, key) = pki();
    let (_b, other_ca, _) = pki();
    let dev = start(Spec {
        tls: Some((cert, key)),
        ..Spec::new("gina", 3)
    })
    .await;
    let opts = PushOptions::new(
        connect_to("gina3.cafenet", dev.addr),
        tls_options(&other_ca, ""),
        file,
    );
    let e = ctl::push(&opts, |_| {}).await.unwrap_err();
    assert!(
        matches!(&e, CtlError::Connect { reason, .. } if reason.contains("TLS")),
        "{e:?}"
    );
    assert_eq!(e.exit_code(), 3);
    dev.stop().await;
}

async fn push_with_verdict(verdict: Verdict) -> CtlError {
    let dir = tempfile::tempdir().unwrap();
    let (file, data) = package(&dir, 5_000);
    let dev = start(Spec {
        verdict,
        ..Spec::new("gina", 3)
    })
    .await;
    let mut opts = PushOptions::new(connect_to("gina3.cafenet", dev.addr), options(), file);
    opts.connect.timeouts.result = Duration::from_secs(3);
    let e = ctl::push(&opts, |_| {}).await.unwrap_err();
    assert!(dev.stop().await == data, "the bytes arrived nonetheless");
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_failure_codes_map_onto_exit_classes() {
    for (code, number, tod_err, class, exit) in [
        ("signature-invalid", 21, 168, FailureClass::Refused, 7),
        ("not-newer", 32, 168, FailureClass::Refused, 7),
        (
            "unhealthy-rolled-back",
            60,
            168,
            FailureClass::InstallFailed,
            8,
        ),
        ("crc-mismatch", 201, 204, FailureClass::Transfer, 6),
        ("busy", 3, 168, FailureClass::Busy, 5),
    ] {
        let e = push_with_verdict(Verdict::Fail {
            code,
            number,
            tod_err,
        })
        .await;
        match &e {
            CtlError::Device {
                class: c, report, ..
            } => {
                assert_eq!(*c, class, "{code}");
                assert_eq!(report.code.as_deref(), Some(code));
                assert_eq!(report.result, Some(number));
                assert_eq!(report.tod_err, Some(tod_err));
                assert_eq!(report.message.as_deref(), Some("scripted failure"));
            }
            other => panic!("{code}: expected a device failure, got {other:?}"),
        }
        assert_eq!(e.exit_code(), exit, "{code}");
        assert!(e.to_string().contains(code), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_result_in_time_is_class_9() {
    let e = push_with_verdict(Verdict::Silent).await;
    assert!(matches!(e, CtlError::Timeout { .. }), "{e:?}");
    assert_eq!(e.exit_code(), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_device_is_class_5_and_receives_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = package(&dir, 1_000);
    let dev = start(Spec {
        initial_state: 3,
        ..Spec::new("gina", 3)
    })
    .await;
    let opts = PushOptions::new(connect_to("gina3.cafenet", dev.addr), options(), file);
    let e = ctl::push(&opts, |_| {}).await.unwrap_err();
    assert!(
        matches!(
            &e,
            CtlError::Device {
                class: FailureClass::Busy,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.exit_code(), 5);
    assert!(dev.stop().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_device_and_missing_status_signals_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (file, data) = package(&dir, 3_000);
    let dev = start(Spec::new("gina", 3)).await;
    let opts = PushOptions::new(
        connect_to("gina4.cafenet", dev.addr),
        options(),
        file.clone(),
    );
    let e = ctl::push(&opts, |_| {}).await.unwrap_err();
    assert!(
        matches!(&e, CtlError::WrongDevice { found, .. } if found == "gina3.cafenet"),
        "{e:?}"
    );
    assert_eq!(e.exit_code(), 3);
    dev.stop().await;

    // A plain IOCOM device (no upd_* signals): refused unless tod_err alone is accepted.
    let plain = start(Spec {
        status_signals: false,
        ..Spec::new("gina", 3)
    })
    .await;
    let mut opts = PushOptions::new(connect_to("gina3.cafenet", plain.addr), options(), file);
    let e = ctl::push(&opts, |_| {}).await.unwrap_err();
    assert!(matches!(e, CtlError::NotReady { .. }), "{e:?}");
    opts.accept_tod_err_only = true;
    let out = ctl::push(&opts, |_| {}).await.unwrap();
    assert_eq!(out.report.tod_err, Some(6));
    assert!(plain.stop().await == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reads_the_installed_version_and_last_result() {
    let dev = start(Spec::new("gina", 3)).await;
    let opts = StatusOptions {
        target: connect_to("gina3.cafenet", dev.addr),
        connect: options(),
    };
    let r = ctl::status(&opts).await.unwrap();
    assert_eq!(r.installed_version.as_deref(), Some("1.0"));
    assert_eq!(r.code.as_deref(), Some("ok"));
    assert_eq!(r.seq, Some(5));
    assert_eq!(r.state, Some(UpdState::Idle));
    assert_eq!(r.package.as_deref(), Some("sample-app"));
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_many_runs_devices_concurrently_with_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let (file, data) = package(&dir, 30_000);
    let good = start(Spec::new("gina", 3)).await;
    let bad = start(Spec {
        verdict: Verdict::Fail {
            code: "signature-invalid",
            number: 21,
            tod_err: 168,
        },
        ..Spec::new("gina", 4)
    })
    .await;
    let targets = [
        connect_to("gina3.cafenet", good.addr),
        connect_to("gina4.cafenet", bad.addr),
        connect_to("gina5.cafenet", free_addr()),
    ];
    let mut seen = [0usize; 3];
    let results = ctl::push_many(&targets, &options(), &file, |i, _| seen[i] += 1).await;
    assert_eq!(results.len(), 3);
    assert!(
        matches!(results[2].result, Err(CtlError::Connect { .. })),
        "{:?}",
        results[2].result
    );
    assert_eq!(results[2].exit_code(), 3);
    assert_eq!(results[0].device.to_string(), "gina3.cafenet");
    assert!(results[0].result.is_ok(), "{:?}", results[0].result);
    assert_eq!(results[1].exit_code(), 7);
    assert_eq!(ctl::worst_exit_code(&results), 7);
    assert!(seen[0] > 3 && seen[1] > 3, "{seen:?}");
    assert!(good.stop().await == data);
    assert!(bad.stop().await == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_mode_waits_for_the_device_and_ignores_others() {
    let dir = tempfile::tempdir().unwrap();
    let (file, data) = package(&dir, 50_000);
    let addr = free_addr();
    // Another device connects up to the same address first; it is closed, not used.
    let stranger = start_up(Spec::new("gina", 7), addr);
    let dev = start_up(Spec::new("gina", 3), addr);
    let target = Target {
        device: device("gina3.cafenet"),
        transport: Transport::Listen(addr),
    };
    let opts = PushOptions::new(target, options(), file);
    let out = ctl::push(&opts, |_| {}).await.unwrap();
    assert_eq!(out.device, "gina3.cafenet");
    assert!(dev.stop().await == data);
    assert!(stranger.stop().await.is_empty(), "the stranger got nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_many_in_listen_mode_routes_each_device_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (file, data) = package(&dir, 40_000);
    let addr = free_addr();
    let a = start_up(Spec::new("gina", 3), addr);
    let b = start_up(
        Spec {
            verdict: Verdict::Fail {
                code: "dpkg-failed",
                number: 50,
                tod_err: 168,
            },
            ..Spec::new("gina", 4)
        },
        addr,
    );
    let targets = ["gina3.cafenet", "gina4.cafenet"].map(|d| Target {
        device: device(d),
        transport: Transport::Listen(addr),
    });
    let results = ctl::push_many(&targets, &options(), &file, |_, _| {}).await;
    assert!(results[0].result.is_ok(), "{:?}", results[0].result);
    assert_eq!(results[1].exit_code(), 8);
    assert_eq!(ctl::worst_exit_code(&results), 8);
    assert!(a.stop().await == data);
    assert!(b.stop().await == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_restarting_after_the_transfer_is_reconnected_for_its_result() {
    let dir = tempfile::tempdir().unwrap();
    let (file, data) = package(&dir, 20_000);
    let dev = start(Spec {
        restart: true,
        ..Spec::new("gina", 3)
    })
    .await;
    let opts = PushOptions::new(connect_to("gina3.cafenet", dev.addr), options(), file);
    let mut events = Vec::new();
    let out = ctl::push(&opts, |p| events.push(p)).await.unwrap();
    assert_eq!(out.report.code.as_deref(), Some("ok"));
    assert_eq!(out.report.seq, Some(6));
    let reconnect = events
        .iter()
        .position(|e| matches!(e, Progress::Reconnecting { .. }))
        .expect("Reconnecting event");
    assert!(
        events[reconnect..]
            .iter()
            .any(|e| matches!(e, Progress::Authenticated { .. })),
        "{events:?}"
    );
    assert!(dev.stop().await == data);
}

/// Regression: when the ring is exactly full the writer asks the source whether it is at its
/// end with an empty read; that must not end the file early (it did, after one ring).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_many_rings_long_arrive_whole_whatever_the_ring_size() {
    let dir = tempfile::tempdir().unwrap();
    let (file, data) = package(&dir, 1_000_000);
    for ring in [262_144, 262_145, 4096] {
        let dev = start(Spec {
            tod_ring: ring,
            ..Spec::new("gina", 3)
        })
        .await;
        let opts = PushOptions::new(
            connect_to("gina3.cafenet", dev.addr),
            options(),
            file.clone(),
        );
        let out = ctl::push(&opts, |_| {}).await.unwrap();
        assert_eq!(out.bytes, 1_000_000, "ring {ring}");
        assert!(dev.stop().await == data, "ring {ring}: different bytes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_in_listen_mode() {
    let addr = free_addr();
    let dev = start_up(Spec::new("gina", 3), addr);
    let opts = StatusOptions {
        target: Target {
            device: device("gina3.cafenet"),
            transport: Transport::Listen(addr),
        },
        connect: options(),
    };
    let r = ctl::status(&opts).await.unwrap();
    assert_eq!(r.installed_version.as_deref(), Some("1.0"));
    assert_eq!(r.seq, Some(5));
    assert!(dev.stop().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_failing_mid_transfer_is_class_6_and_a_drop_class_3() {
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = package(&dir, 200_000);
    // The device's sink fails (writing file failed, 142): the stream is interrupted, and the
    // device says why in tod_err only.
    let dev = start(Spec {
        sink_fail_after: Some((50_000, 142)),
        ..Spec::new("gina", 3)
    })
    .await;
    let opts = PushOptions::new(
        connect_to("gina3.cafenet", dev.addr),
        options(),
        file.clone(),
    );
    let e = ctl::push(&opts, |_| {}).await.unwrap_err();
    assert!(
        matches!(
            &e,
            CtlError::Device {
                class: FailureClass::Transfer,
                report,
                ..
            } if report.tod_err == Some(142)
        ),
        "{e:?}"
    );
    assert_eq!(e.exit_code(), 6);
    dev.stop().await;

    // The device drops the connection in the middle of the transfer.
    let dev = start(Spec {
        drop_after: Some(50_000),
        ..Spec::new("gina", 3)
    })
    .await;
    let opts = PushOptions::new(connect_to("gina3.cafenet", dev.addr), options(), file);
    let e = ctl::push(&opts, |_| {}).await.unwrap_err();
    // Cut off mid-transfer (a device shutting down does the same): interrupted, exit 6.
    assert!(matches!(e, CtlError::Transfer { .. }), "{e:?}");
    assert!(e.to_string().contains("interrupted after"), "{e}");
    assert_eq!(e.exit_code(), 6);
    dev.stop().await;
}
