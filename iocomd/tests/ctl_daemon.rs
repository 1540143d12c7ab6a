//! `iocomctl` against the real daemon: `iocomd::daemon::run` on 127.0.0.1:0 with the demo
//! environment (signing key, policy, isolated dpkg root) and the real install helper as a
//! child: a signed package is installed (exit 0, the version in the dpkg root), the same version
//! again is refused as not newer (exit 7), an unsigned newer one for its missing signature, and
//! `status` shows the installed version and the last result.
//!
//! Without a helper every push is received, spooled and then reported as
//! `helper-unavailable` (206). Checks the whole controller path against the daemon's stream
//! handling and status signals: the result of *this* push is detected (upd_seq), classified
//! (exit 8), shown in JSON by the binary, and `status` reads it back; TLS with a password
//! account; a plain TCP push refused at the start of the stream (exit 4).

mod daemon_support;

use daemon_support::{helper_binary, installed_version};
use iocomd::config::Settings;
use iocomd::ctl::{
    self, ConnectOptions, CtlError, DevicePath, FailureClass, PushOptions, StatusOptions, Target,
    Timeouts, Transport,
};
use iocomd::daemon::{self, Listener};
use iocomd::demo::{SAMPLE_PACKAGE, SAMPLE_VERSION};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// An unsigned package `name` `version` built with dpkg-deb.
fn unsigned_package(dir: &Path, name: &str, version: &str) -> PathBuf {
    let work = dir.join(format!("build-{version}"));
    std::fs::create_dir_all(work.join("DEBIAN")).unwrap();
    std::fs::write(
        work.join("DEBIAN/control"),
        format!(
            "Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: t <t@t.invalid>\n\
             Description: test\n test\n"
        ),
    )
    .unwrap();
    let out = dir.join(format!("{name}_{version}_all.deb"));
    let st = Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&work)
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    out
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_to_the_daemon_core_end_with_its_result() {
    let dir = tempfile::tempdir().unwrap();
    let env = iocomd::demo::prepare(&dir.path().join("state")).unwrap();
    let mut settings = Settings::demo(&env.state_dir);
    settings.listen.clear();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let device = format!("gina3.{}", settings.device.network);
    let task = tokio::spawn(daemon::run(
        vec![Listener { tcp, tls: None }],
        settings,
        None,
        shutdown.clone(),
    ));
    let target = Target {
        device: device.parse::<DevicePath>().unwrap(),
        transport: Transport::Connect(addr.to_string()),
    };

    // The library: the daemon's verdict on this push, classified.
    let opts = PushOptions::new(target.clone(), options(), env.sample_package.clone());
    let mut events = Vec::new();
    let e = ctl::push(&opts, |p| events.push(p)).await.unwrap_err();
    match &e {
        CtlError::Device { class, report, .. } => {
            assert_eq!(*class, FailureClass::InstallFailed);
            assert_eq!(report.code.as_deref(), Some("helper-unavailable"));
            assert_eq!(report.result, Some(206));
            assert_eq!(report.seq, Some(1));
            let size = std::fs::metadata(&env.sample_package).unwrap().len();
            assert_eq!(report.bytes, Some(size), "the daemon counted every byte");
        }
        other => panic!("expected helper-unavailable, got {other:?}"),
    }
    assert_eq!(e.exit_code(), 8);
    assert!(
        events
            .iter()
            .any(|p| matches!(p, ctl::Progress::Transferred { .. })),
        "{events:?}"
    );

    // The binary: JSON result line and exit status 8; the next push is a new result (seq 2).
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_iocomctl"))
        .args(["push", "--json", "--connect", &addr.to_string(), &device])
        .arg(&env.sample_package)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(8), "{stdout}");
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["class"], "install-failed");
    assert_eq!(last["code"], "helper-unavailable");
    assert_eq!(last["report"]["seq"], 2);

    // Status reads the last result back.
    let st = ctl::status(&StatusOptions {
        target,
        connect: options(),
    })
    .await
    .unwrap();
    assert_eq!(st.code.as_deref(), Some("helper-unavailable"));
    assert_eq!(st.seq, Some(2));
    assert_eq!(st.state, Some(ctl::UpdState::Idle));

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_password_account_on_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let env = iocomd::demo::prepare(&dir.path().join("state")).unwrap();
    let mut settings = Settings::demo(&env.state_dir);
    settings.listen.clear();
    settings.allow_plain_tcp_push = false;
    settings.accounts = vec![iocomd::config::Account {
        user: "ctl".into(),
        password_hash: Some(iocomd::config::PasswordHash::from_password("s3cret")),
        certificate_sha256: None,
    }];
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let device = format!("gina3.{}", settings.device.network);
    let tls = iocomd::net::tls::acceptor(
        iocomd::net::tls::Identity {
            cert: cert.as_ref(),
            key: key.as_ref(),
        },
        None,
    )
    .unwrap();
    let task = tokio::spawn(daemon::run(
        vec![Listener {
            tcp,
            tls: Some(tls),
        }],
        settings,
        None,
        shutdown.clone(),
    ));
    let run = |password: &'static str| {
        let (addr, device, cert, pkg) = (
            addr.to_string(),
            device.clone(),
            cert.clone(),
            env.sample_package.clone(),
        );
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_iocomctl"))
                .args(["push", "--tls", "--ca"])
                .arg(&cert)
                .args(["--server-name", "localhost", "--user", "ctl", "--connect"])
                .args([&addr, &device])
                .arg(&pkg)
                .env("IOCOMCTL_PASSWORD", password)
                .kill_on_drop(true)
                .output()
                .await
                .unwrap()
        }
    };
    let out = run("wrong").await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("authentication refused"), "{stderr}");
    // The right password gets through to the daemon's verdict (no helper here: exit 8).
    let out = run("s3cret").await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(8), "{stderr}");
    assert!(stderr.contains("helper-unavailable"), "{stderr}");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_tcp_push_refused_by_the_daemon_is_an_auth_failure() {
    let dir = tempfile::tempdir().unwrap();
    let env = iocomd::demo::prepare(&dir.path().join("state")).unwrap();
    let mut settings = Settings::demo(&env.state_dir);
    settings.listen.clear();
    settings.allow_plain_tcp_push = false;
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let device = format!("gina3.{}", settings.device.network);
    let task = tokio::spawn(daemon::run(
        vec![Listener { tcp, tls: None }],
        settings,
        None,
        shutdown.clone(),
    ));
    let target = Target {
        device: device.parse::<DevicePath>().unwrap(),
        transport: Transport::Connect(addr.to_string()),
    };
    let opts = PushOptions::new(target, options(), env.sample_package.clone());
    let e = ctl::push(&opts, |_| {}).await.unwrap_err();
    assert_eq!(e.exit_code(), 4, "{e:?}");
    let r = e.report().expect("device report");
    assert_eq!(r.tod_err, Some(186));
    assert_eq!(r.code, None, "no result code of an earlier push is shown");
    assert!(
        e.to_string().contains("refused the stream at its start"),
        "{e}"
    );
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_refuse_and_status_against_the_real_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let env = iocomd::demo::prepare(&dir.path().join("state")).unwrap();
    let mut settings = Settings::demo(&env.state_dir);
    settings.listen.clear();
    let uid = nix::unistd::getuid().as_raw().to_string();
    let args: Vec<String> = vec![
        "--root".into(),
        env.dpkg_root.to_string_lossy().into(),
        "--state-dir".into(),
        env.helper_state.to_string_lossy().into(),
        "--policy".into(),
        env.policy.to_string_lossy().into(),
        "--allow-uid".into(),
        uid,
    ];
    let mut helper = iocomd::helper_client::HelperClient::spawn(&helper_binary(), &args)
        .await
        .unwrap();
    let helper_child = helper.take_child().unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let device = format!("gina3.{}", settings.device.network);
    let task = tokio::spawn(daemon::run(
        vec![Listener { tcp, tls: None }],
        settings,
        Some(helper),
        shutdown.clone(),
    ));

    // 1. The binary pushes the signed sample: exit 0 only once it is installed.
    let sample = env.sample_package.to_str().unwrap().to_owned();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_iocomctl"))
        .args([
            "push",
            "--json",
            "--connect",
            &addr.to_string(),
            &device,
            &sample,
        ])
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
    assert_eq!(last["tod_err"], 6);
    assert_eq!(last["installed_version"], SAMPLE_VERSION);
    assert_eq!(
        installed_version(&env.dpkg_root, SAMPLE_PACKAGE).as_deref(),
        Some(SAMPLE_VERSION)
    );

    // 2. The same version again: refused as not newer, nothing changes.
    let target = Target {
        device: device.parse::<DevicePath>().unwrap(),
        transport: Transport::Connect(addr.to_string()),
    };
    let opts = PushOptions::new(target.clone(), options(), env.sample_package.clone());
    let e = ctl::push(&opts, |_| {}).await.unwrap_err();
    match &e {
        CtlError::Device { class, report, .. } => {
            assert_eq!(*class, FailureClass::Refused);
            assert_eq!(report.code.as_deref(), Some("not-newer"));
            assert_eq!(report.result, Some(32));
        }
        other => panic!("expected not-newer, got {other:?}"),
    }
    assert_eq!(e.exit_code(), 7);

    // 3. A newer but unsigned package: refused for the missing origin signature.
    let unsigned = unsigned_package(dir.path(), SAMPLE_PACKAGE, "2.0");
    let opts = PushOptions::new(target.clone(), options(), unsigned);
    let e = ctl::push(&opts, |_| {}).await.unwrap_err();
    assert_eq!(e.exit_code(), 7, "{e}");
    assert_eq!(
        e.report().and_then(|r| r.code.as_deref()),
        Some("signature-missing")
    );
    assert_eq!(
        installed_version(&env.dpkg_root, SAMPLE_PACKAGE).as_deref(),
        Some(SAMPLE_VERSION)
    );

    // 4. Status: installed version and the last result.
    let st = ctl::status(&StatusOptions {
        target,
        connect: options(),
    })
    .await
    .unwrap();
    assert_eq!(st.installed_version.as_deref(), Some(SAMPLE_VERSION));
    assert_eq!(st.code.as_deref(), Some("signature-missing"));
    assert_eq!(st.seq, Some(3));

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(120), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let mut child = helper_child;
    let _ = tokio::time::timeout(Duration::from_secs(60), child.wait()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_push_while_one_is_received_is_busy() {
    let dir = tempfile::tempdir().unwrap();
    let env = iocomd::demo::prepare(&dir.path().join("state")).unwrap();
    let mut settings = Settings::demo(&env.state_dir);
    settings.listen.clear();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let device = format!("gina3.{}", settings.device.network);
    let task = tokio::spawn(daemon::run(
        vec![Listener { tcp, tls: None }],
        settings,
        None,
        shutdown.clone(),
    ));
    let target = Target {
        device: device.parse::<DevicePath>().unwrap(),
        transport: Transport::Connect(addr.to_string()),
    };
    // A large first push keeps the daemon receiving while the second one starts.
    let big = dir.path().join("big.deb");
    let data: Vec<u8> = (0..16_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&big, data).unwrap();
    let first = PushOptions::new(target.clone(), options(), big);
    let second = PushOptions::new(target, options(), env.sample_package.clone());
    let receiving = tokio::sync::Notify::new();
    let a = ctl::push(&first, |p| {
        if matches!(
            p,
            ctl::Progress::Transfer { .. } | ctl::Progress::Transferred { .. }
        ) {
            receiving.notify_one();
        }
    });
    let b = async {
        receiving.notified().await;
        ctl::push(&second, |_| {}).await
    };
    let (ra, rb) = tokio::join!(a, b);
    let eb = rb.unwrap_err();
    assert!(
        matches!(
            &eb,
            CtlError::Device {
                class: FailureClass::Busy,
                ..
            }
        ),
        "{eb:?}"
    );
    assert_eq!(eb.exit_code(), 5);
    // The first push went on undisturbed to the daemon's verdict (no helper here).
    let ea = ra.unwrap_err();
    assert_eq!(
        ea.report().and_then(|r| r.code.as_deref()),
        Some("helper-unavailable"),
        "{ea:?}"
    );
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
