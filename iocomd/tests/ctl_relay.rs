//! iocomctl through an IOCOM relay server (the in-test frank of `ctl_support::relay`):
//! devices connect up to the relay, iocomctl connects down and finds its target among the
//! blocks the relay advertises; several targets share one connection; TLS with the server's
//! account; automatic device numbers assigned by the relay, and by iocomctl when it listens;
//! `devices` and `status` of a plain IOCOM device.

mod ctl_support;

use ctl_support::relay::{RelayTls, start_relay};
use ctl_support::{Spec, free_addr, pki, random_bytes, start_up};
use iocomd::ctl::{
    self, ConnectOptions, Credentials, CtlError, DevicePath, DevicesOptions, Progress, PushOptions,
    StatusOptions, Target, Timeouts, TlsOptions, Transport,
};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn options() -> ConnectOptions {
    ConnectOptions {
        timeouts: Timeouts {
            connect: Duration::from_secs(30),
            ready: Duration::from_secs(60),
            result: Duration::from_secs(60),
            listen: Duration::from_secs(60),
        },
        ..ConnectOptions::default()
    }
}

fn target(dev: &str, t: Transport) -> Target {
    Target {
        device: dev.parse::<DevicePath>().unwrap(),
        transport: t,
    }
}

fn auto_gina(id: u8) -> Spec {
    Spec {
        unique_id: Some([id; 12]),
        ..Spec::new("gina", 9000)
    }
}

/// Waits until the relay has learnt `n` devices' blocks (devices connect up with retries).
async fn wait_devices(addr: std::net::SocketAddr, n: usize) -> Vec<ctl::DeviceEntry> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let opts = DevicesOptions {
            transport: Transport::Connect(addr.to_string()),
            connect: options(),
            network: Some("cafenet".into()),
        };
        let list = ctl::devices(&opts).await.unwrap();
        if list.iter().filter(|d| d.device.starts_with("gina")).count() >= n {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "devices did not appear: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_many_through_the_relay_over_one_connection() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(40_000, 11);
    let file = dir.path().join("pkg.deb");
    std::fs::write(&file, &data).unwrap();
    let relay = start_relay(None).await;
    let auto = start_up(auto_gina(1), relay.addr);
    let seven = start_up(Spec::new("gina", 7), relay.addr);

    // The list: both ginas, through frank, with iocomd's status.
    let list = wait_devices(relay.addr, 2).await;
    let names: Vec<&str> = list.iter().map(|d| d.device.as_str()).collect();
    assert!(names.contains(&"gina9001.cafenet"), "{names:?}");
    assert!(names.contains(&"gina7.cafenet"), "{names:?}");
    for d in list.iter().filter(|d| d.device.starts_with("gina")) {
        assert!(d.iocomd && d.info, "{d:?}");
        assert_eq!(d.installed_version.as_deref(), Some("1.0"));
        assert!(
            d.via.as_deref().is_some_and(|v| v.starts_with("frank")),
            "{d:?}"
        );
    }
    let listed = relay.controllers.load(Ordering::SeqCst);

    // One connection for both targets.
    let via = Transport::Connect(relay.addr.to_string());
    let targets = [
        target("gina9001.cafenet", via.clone()),
        target("gina7.cafenet", via.clone()),
    ];
    let mut located = Vec::new();
    let results = ctl::push_many(&targets, &options(), &file, |i, p| {
        if let Progress::Located { device, via } = p {
            located.push((i, device, via));
        }
    })
    .await;
    for r in &results {
        let out = r
            .result
            .as_ref()
            .unwrap_or_else(|e| panic!("{}: {e}", r.device));
        assert_eq!(out.report.code.as_deref(), Some("ok"));
        assert_eq!(out.bytes, data.len() as u64);
    }
    assert_eq!(relay.controllers.load(Ordering::SeqCst), listed + 1);
    located.sort();
    assert_eq!(located.len(), 2);
    assert_eq!(located[0].1, "gina9001.cafenet");
    assert!(
        located[0]
            .2
            .as_deref()
            .is_some_and(|v| v.starts_with("frank"))
    );
    assert!(auto.stop().await == data);
    assert!(seven.stop().await == data);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_status_and_wrong_targets_through_the_relay() {
    let relay = start_relay(None).await;
    let a = start_up(auto_gina(1), relay.addr);
    let b = start_up(auto_gina(2), relay.addr);
    let plain = start_up(
        Spec {
            status_signals: false,
            ..Spec::new("plain", 3)
        },
        relay.addr,
    );
    wait_devices(relay.addr, 2).await;
    let via = || Transport::Connect(relay.addr.to_string());
    let status = |dev: &str| StatusOptions {
        target: target(dev, via()),
        connect: options(),
    };
    // Two automatically numbered ginas: 9001 and 9002, in the order they connected.
    let r1 = ctl::status(&status("gina9001.cafenet")).await.unwrap();
    let r2 = ctl::status(&status("gina9002")).await.unwrap();
    assert_eq!(r1.device.as_deref(), Some("gina9001.cafenet"));
    assert_eq!(r2.device.as_deref(), Some("gina9002.cafenet"));
    assert!(r1.iocomd && r1.installed_version.as_deref() == Some("1.0"));
    // The name alone is ambiguous here.
    let e = ctl::status(&status("gina")).await.unwrap_err();
    assert!(
        matches!(&e, CtlError::Ambiguous { matches, .. }
        if matches.contains("gina9001.cafenet") && matches.contains("gina9002.cafenet")),
        "{e}"
    );
    assert_eq!(e.exit_code(), 2);
    // No such device behind the relay: the ones that are there are named.
    let e = ctl::status(&status("gina5.cafenet")).await.unwrap_err();
    assert!(
        matches!(&e, CtlError::WrongDevice { found, advertised, .. }
        if found.starts_with("frank") && advertised.contains("gina9002.cafenet")),
        "{e}"
    );
    assert_eq!(e.exit_code(), 3);
    // The binary: one tab-separated line per device off a terminal, JSON with --json.
    let relay_addr = relay.addr.to_string();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_iocomctl"))
        .args(["devices", "--connect", &relay_addr, "--network", "cafenet"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("plain3.cafenet\t"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("no iocomd: tod_state 0"), "{line}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("gina9002.cafenet\tfrank")),
        "{text}"
    );
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_iocomctl"))
        .args([
            "devices",
            "--json",
            "--connect",
            &relay_addr,
            "--network",
            "cafenet",
        ])
        .output()
        .await
        .unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let g = lines
        .iter()
        .find(|v| v["device"] == "gina9001.cafenet")
        .unwrap();
    assert_eq!(
        (g["iocomd"].as_bool(), g["installed_version"].as_str()),
        (Some(true), Some("1.0"))
    );
    // A plain IOCOM device: status works (exit 0), marked as no iocomd status.
    let r = ctl::status(&status("plain")).await.unwrap();
    assert!(!r.iocomd);
    assert_eq!(r.tod_state, Some(0));
    assert_eq!(r.device.as_deref(), Some("plain3.cafenet"));
    a.stop().await;
    b.stop().await;
    plain.stop().await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_through_the_relay_with_its_account() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(10_000, 5);
    let file = dir.path().join("pkg.deb");
    std::fs::write(&file, &data).unwrap();
    let (_pki, cert, key) = pki();
    let relay = start_relay(Some(RelayTls {
        cert: cert.clone(),
        key,
        password: "pass",
    }))
    .await;
    let dev = start_up(Spec::new("gina", 7), relay.addr);
    wait_devices(relay.addr, 1).await;
    let tls = |password: &str| ConnectOptions {
        tls: Some(TlsOptions {
            ca: Some(cert.clone()),
            server_name: Some("localhost".into()),
            ..TlsOptions::default()
        }),
        credentials: Some(Credentials {
            user: "root".into(),
            password: password.into(),
        }),
        ..options()
    };
    let at = Transport::Connect(relay.tls_addr.unwrap().to_string());
    let opts = PushOptions::new(
        target("gina7.cafenet", at.clone()),
        tls("pass"),
        file.clone(),
    );
    let out = ctl::push(&opts, |_| {}).await.unwrap();
    assert_eq!(out.report.code.as_deref(), Some("ok"));
    let opts = PushOptions::new(target("gina7.cafenet", at), tls("wrong"), file);
    let e = ctl::push(&opts, |_| {}).await.unwrap_err();
    assert_eq!(e.exit_code(), 4, "{e}");
    assert!(dev.stop().await == data);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_iocomctl_numbers_stock_devices_9001_9002() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(8_000, 3);
    let file = dir.path().join("pkg.deb");
    std::fs::write(&file, &data).unwrap();
    let addr = free_addr();
    let a = start_up(auto_gina(1), addr);
    // The first to authenticate gets 9001; make that `a`.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let targets = [target("gina9001.cafenet", Transport::Listen(addr))];
    let results = ctl::push_many(&targets, &options(), &file, |_, _| {}).await;
    assert!(results[0].result.is_ok(), "{:?}", results[0].result);
    assert!(a.stop().await == data);
    // A second stock device on a new listener session also starts at 9001 (a fresh table),
    // and two of them get 9001 and 9002.
    let b = start_up(auto_gina(2), addr);
    let c = start_up(auto_gina(3), addr);
    let targets = [
        target("gina9001.cafenet", Transport::Listen(addr)),
        target("gina9002.cafenet", Transport::Listen(addr)),
    ];
    let results = ctl::push_many(&targets, &options(), &file, |_, _| {}).await;
    for r in &results {
        assert!(r.result.is_ok(), "{}: {:?}", r.device, r.result);
    }
    assert!(b.stop().await == data);
    assert!(c.stop().await == data);
}
