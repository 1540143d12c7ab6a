//! `iocomctl` against the real daemon core: `iocomd::daemon::run` on 127.0.0.1:0 with the demo
//! settings and no install helper, so every push is received, spooled and then reported as
//! `helper-unavailable` (206). Checks the whole controller path against the daemon's stream
//! handling and status signals: the result of *this* push is detected (upd_seq), classified
//! (exit 8), shown in JSON by the binary, and `status` reads it back; TLS with a password
//! account; a plain TCP push refused at the start of the stream (exit 4).

use iocomd::config::Settings;
use iocomd::ctl::{
    self, ConnectOptions, CtlError, DevicePath, FailureClass, PushOptions, StatusOptions, Target,
    Timeouts, Transport,
};
use iocomd::daemon::{self, Listener};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

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
        password_hash: iocomd::config::PasswordHash::from_password("s3cret"),
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
    let tls = iocomd::net::tls::acceptor(&cert, &key).unwrap();
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
