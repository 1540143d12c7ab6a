//! The DDI client inside the real daemon (`daemon::run` with `[hawkbit]`, the real install
//! helper on the demo's dpkg root) against the in-process mock server: a fleet action's
//! packages are installed in the server's order under one reservation and reported
//! `closed/success` with the helper's result; one update at a time across the IOCOM and fleet
//! origins, both ways; the link's status is in the `fleet` status signal.

mod daemon_support;
mod ddi_support;

use daemon_support::{Ctl, Daemon, NoSink, Source, push};
use ddi_support::mock::{Link, Mock};
use ddi_support::{settings, wait_for};
use iocomd::config::HawkbitSettings;
use iocomd::demo::DemoEnv;
use iocomd::status::{DaemonCode, UpdState, tod_err};
use serde_json::json;
use std::process::Command;
use std::time::Duration;

/// A package `name` `version` signed with the demo key, with `control` lines added.
fn package(env: &DemoEnv, name: &str, version: &str, control: &str) -> Vec<u8> {
    package_with(env, name, version, control, 0)
}

/// [`package`] with `payload` incompressible bytes in it.
fn package_with(
    env: &DemoEnv,
    name: &str,
    version: &str,
    control: &str,
    payload: usize,
) -> Vec<u8> {
    std::fs::read(daemon_support::build_package_with(
        env, name, version, control, payload,
    ))
    .unwrap()
}

/// Starts a push of `pkg` and returns the `tod_err` it is refused with (the refusal of a second
/// update shows only there; the status keeps describing the running one).
async fn refused_push(addr: std::net::SocketAddr, pkg: &[u8]) -> u8 {
    let mut c = Ctl::connect(addr, "gina", None).await;
    c.wait_ready().await;
    let mut src = Source {
        data: pkg.to_vec(),
        pos: 0,
        hold_at: None,
    };
    c.ep.start_upload(1).unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(t) = c.tod_err().filter(|t| *t >= 100) {
            c.disconnect();
            return t;
        }
        assert!(
            std::time::Instant::now() < until,
            "the push was not refused"
        );
        let _ =
            c.ep.poll_transfer(std::time::Instant::now(), &mut src, &mut NoSink);
        c.pump(Duration::from_millis(50)).await;
        c.flush().await;
    }
}

fn hawkbit(m: &Mock) -> HawkbitSettings {
    let mut h = settings(&m.url);
    h.poll_interval = Duration::from_millis(200);
    h.min_poll_interval = Duration::from_millis(100);
    h
}

fn finals(m: &Mock, id: &str) -> Vec<serde_json::Value> {
    m.feedback(id)
        .into_iter()
        .filter(|v| Mock::exec(v).0 == "closed")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_action_installs_its_packages_in_order_and_reports_the_helpers_result() {
    let m = Mock::start().await;
    let h = hawkbit(&m);
    let d = Daemon::start(|s| s.hawkbit = Some(h)).await;
    // b depends on a: installed out of order, b would be refused (unmet dependencies).
    let a = package(&d.env, "iocom-fleet-a", "1.0", "");
    let b = package(
        &d.env,
        "iocom-fleet-b",
        "1.0",
        "Depends: iocom-fleet-a (>= 1.0)\n",
    );
    let chunks = json!([
        { "name": "iocom-fleet-a", "version": "1.0",
          "artifacts": [m.artifact("iocom-fleet-a_1.0_all.deb", &a, Link::Good)] },
        { "name": "iocom-fleet-b", "version": "1.0",
          "artifacts": [m.artifact("iocom-fleet-b_1.0_all.deb", &b, Link::Drop { after: 700, n: 1 })] },
    ]);
    m.offer("21", chunks, "forced", "forced", None);
    wait_for(120, "closed feedback of action 21", || {
        !finals(&m, "21").is_empty()
    })
    .await;
    let fin = finals(&m, "21");
    assert_eq!(
        Mock::exec(&fin[0]),
        ("closed".into(), "success".into()),
        "{fin:?}"
    );
    assert_eq!(d.installed("iocom-fleet-a").as_deref(), Some("1.0"));
    assert_eq!(d.installed("iocom-fleet-b").as_deref(), Some("1.0"));
    assert!(d.spool_files().is_empty(), "{:?}", d.spool_files());

    // The daemon's status names the last result and the DDI link.
    let mut c = Ctl::connect(d.addr, "gina", None).await;
    c.wait_ready().await;
    let st = c
        .wait_status(|s| s.state == UpdState::Idle && s.fleet.starts_with("hawkbit: idle"))
        .await;
    assert_eq!((st.code.as_str(), st.seq), ("ok", 2), "{st:?}");
    assert_eq!(st.pkg, "iocom-fleet-b");
    c.disconnect();
    // `iocomctl status` shows the link too.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_iocomctl"))
        .args(["status", "--json", "--connect", &d.addr.to_string(), "gina"])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let fleet = v.to_string();
    assert!(fleet.contains("hawkbit: idle, last poll"), "{fleet}");

    // A version the helper refuses (not newer): closed/failure with its stable code.
    let old = package(&d.env, "iocom-fleet-a", "0.9", "");
    let art = m.artifact("iocom-fleet-a_0.9_all.deb", &old, Link::Good);
    m.offer_app("22", "iocom-fleet-a", "0.9", art);
    wait_for(120, "closed feedback of action 22", || {
        !finals(&m, "22").is_empty()
    })
    .await;
    let fin = finals(&m, "22");
    assert_eq!(
        Mock::exec(&fin[0]),
        ("closed".into(), "failure".into()),
        "{fin:?}"
    );
    assert_eq!(fin[0]["status"]["code"], 32, "not-newer's number: {fin:?}");
    let details = fin[0]["status"]["details"].to_string();
    assert!(details.contains("not-newer"), "{details}");
    assert_eq!(d.installed("iocom-fleet-a").as_deref(), Some("1.0"));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_update_at_a_time_across_iocom_pushes_and_fleet_actions() {
    let m = Mock::start().await;
    let h = hawkbit(&m);
    let d = Daemon::start(|s| s.hawkbit = Some(h)).await;
    let pkg = package(&d.env, "iocom-fleet-c", "1.0", "");

    // A fleet download holds the slot: a push is told busy, naming the action.
    let art = m.artifact(
        "iocom-fleet-c_1.0_all.deb",
        &pkg,
        Link::Stall { after: 500 },
    );
    m.offer_app("31", "iocom-fleet-c", "1.0", art);
    let mut watcher = Ctl::connect(d.addr, "gina", None).await;
    watcher.wait_ready().await;
    let st = watcher
        .wait_status(|s| s.fleet.contains("downloading action 31"))
        .await;
    assert_eq!(st.state, UpdState::Receiving, "{st:?}");
    assert!(st.msg.contains("fleet action 31"), "{st:?}");
    assert_eq!(refused_push(d.addr, &pkg).await, DaemonCode::Busy.tod_err());
    let st = watcher.status().unwrap();
    assert_eq!(
        (st.state, st.seq),
        (UpdState::Receiving, 0),
        "the refusal changes nothing: {st:?}"
    );
    assert_eq!(d.installed("iocom-fleet-c"), None);

    // Cancelled before hand-over: the slot comes free and a push installs.
    m.state
        .lock()
        .unwrap()
        .cancels
        .insert("32".into(), "31".into());
    m.set_links(&[("cancelAction", "/cancelAction/32")]);
    wait_for(60, "cancel feedback", || {
        !m.cancel_feedback("32").is_empty()
    })
    .await;
    assert_eq!(Mock::exec(&m.cancel_feedback("32")[0]).0, "closed");
    watcher.wait_status(|s| s.state == UpdState::Idle).await;
    let (_, st, tod) = push(d.addr, pkg.clone()).await;
    assert_eq!(
        (st.code.as_str(), tod),
        ("ok", Some(tod_err::COMPLETED)),
        "{st:?}"
    );
    assert_eq!(d.installed("iocom-fleet-c").as_deref(), Some("1.0"));

    // A push in progress holds the slot: the fleet client is told busy and retries later.
    let newer = package_with(&d.env, "iocom-fleet-c", "2.0", "", 256 << 10);
    let mut c = Ctl::connect(d.addr, "gina", None).await;
    c.wait_ready().await;
    let mut src = Source {
        data: newer.clone(),
        pos: 0,
        hold_at: Some(1000),
    };
    assert_eq!(c.upload(&mut src, Some(1000)).await, None);
    watcher
        .wait_status(|s| s.state == UpdState::Receiving && s.bytes > 0)
        .await;
    let art = m.artifact("iocom-fleet-c_2.0_all.deb", &newer, Link::Good);
    m.offer_app("33", "iocom-fleet-c", "2.0", art);
    watcher
        .wait_status(|s| s.fleet.starts_with("hawkbit: busy"))
        .await;
    assert!(
        finals(&m, "33").is_empty(),
        "no final result while it waits for the slot"
    );
    // The push is dropped: the action takes the slot at its next poll and installs.
    c.disconnect();
    wait_for(120, "closed feedback of action 33", || {
        !finals(&m, "33").is_empty()
    })
    .await;
    assert_eq!(
        Mock::exec(&finals(&m, "33")[0]),
        ("closed".into(), "success".into())
    );
    assert_eq!(d.installed("iocom-fleet-c").as_deref(), Some("2.0"));
    watcher.disconnect();
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_takes_its_hawkbit_section_from_a_file() {
    let m = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let frag = dir.path().join("hawkbit.toml");
    let run = |frag: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_iocomd"))
            .arg("--demo")
            .arg("--state-dir")
            .arg(dir.path().join("demo"))
            .args(["--listen", "127.0.0.1:0", "--helper"])
            .arg(daemon_support::helper_binary())
            .arg("--hawkbit")
            .arg(frag)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    // No enabled section: refused at start, naming the file.
    std::fs::write(&frag, "[hawkbit]\nenabled = false\n").unwrap();
    let out = run(&frag).wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no [hawkbit] section with enabled = true"),
        "{err}"
    );
    // An invalid one: the key is named.
    std::fs::write(&frag, "[hawkbit]\nenabled = true\n").unwrap();
    let out = run(&frag).wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("hawkbit.server"),
        "{err}"
    );
    // A good one: the demo device polls the server as `demo-e2e`.
    std::fs::write(
        &frag,
        format!(
            "[hawkbit]\nenabled = true\nserver = \"{}\"\nallow_plain_http = true\nauth = \"none\"\n\
             controller_id = \"demo-e2e\"\npoll_interval = 1\nmin_poll_interval = 1\n",
            m.url
        ),
    )
    .unwrap();
    let mut child = run(&frag);
    wait_for(60, "a poll of demo-e2e", || {
        m.seen()
            .iter()
            .any(|s| s.method == "GET" && s.path.ends_with("/controller/v1/demo-e2e"))
    })
    .await;
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
}
