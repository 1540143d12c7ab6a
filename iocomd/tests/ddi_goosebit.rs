//! End to end against a real DDI server: gooseBit from PyPI (in a venv cached under
//! `target/goosebit/`, set up by `tests/goosebit/setup`), on 127.0.0.1 and a free port, with the
//! small `gb_deb` plugin that lets it serve a `.deb`, driving a rollout to a real demo device
//! (`daemon::run` with `[hawkbit]`, the real install helper, the demo's dpkg root and signing
//! key). A rollout of `gbtest 1.0.0` is downloaded, hash-checked, verified and installed by the
//! helper, and the server records `closed/success` (device Finished, rollout success count 1).
//! Then a rollout of a `2.0.0` whose maintainer script fails (the demo runs no services, so
//! this is how a version breaks here; `tests/system/run` covers a crashing service under
//! systemd): the helper rolls back, the server records the failure with the helper's code,
//! and the device still has 1.0.0. The test fails — it does not skip — when gooseBit cannot
//! be installed or started.

mod daemon_support;
mod ddi_support;

use daemon_support::Daemon;
use ddi_support::settings;
use iocomd::config::HawkbitAuth;
use iocomd::demo::DemoEnv;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn setup_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/goosebit/setup")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    )
}

fn run(args: &[&str]) -> String {
    let out = Command::new(setup_script())
        .args(args)
        .output()
        .expect("run tests/goosebit/setup");
    assert!(
        out.status.success(),
        "tests/goosebit/setup {} failed:\n{}",
        args[0],
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Kills the server at the end of the test, whatever happens.
struct Server {
    pid: i32,
    base: String,
    token: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end && nix::sys::signal::kill(pid, None).is_ok() {
            let _ = nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    }
}

impl Server {
    fn api(&self, path: &str) -> Value {
        let out = Command::new("curl")
            .args([
                "-sf",
                "--max-time",
                "30",
                "-H",
                &format!("Authorization: Bearer {}", self.token),
                &format!("{}{path}", self.base),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "GET {path} failed");
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn device(&self, id: &str) -> Option<Value> {
        let v = self.api("/api/v1/devices");
        let list = v.get("devices").cloned().unwrap_or(v);
        list.as_array()?.iter().find(|d| d["id"] == id).cloned()
    }

    fn rollout(&self, name: &str) -> Option<Value> {
        let v = self.api("/api/v1/rollouts");
        let list = v.get("rollouts").cloned().unwrap_or(v);
        list.as_array()?.iter().find(|r| r["name"] == name).cloned()
    }
}

/// Builds `gbtest` `version` signed with the demo key; `postinst` fails when `breaks`.
fn build_deb(env: &DemoEnv, dir: &Path, version: &str, breaks: bool) -> PathBuf {
    let root = dir.join(format!("gbtest-{version}"));
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(root.join("usr/share/gbtest")).unwrap();
    std::fs::write(root.join("usr/share/gbtest/version"), version).unwrap();
    std::fs::write(
        root.join("DEBIAN/control"),
        format!("Package: gbtest\nVersion: {version}\nArchitecture: all\nMaintainer: CI <ci@example.invalid>\nDescription: fleet test package\n"),
    )
    .unwrap();
    if breaks {
        use std::os::unix::fs::PermissionsExt;
        let p = root.join("DEBIAN/postinst");
        std::fs::write(
            &p,
            "#!/bin/sh\necho 'gbtest: broken on purpose' >&2\nexit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let deb = dir.join(format!("gbtest_{version}_all.deb"));
    let st = Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&root)
        .arg(&deb)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "dpkg-deb: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    iocomd::demo::sign(&env.gnupghome, &env.key_fingerprint, &deb).unwrap();
    deb
}

async fn wait_until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            Instant::now() < end,
            "timed out after {secs} s waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goosebit_rollout_installs_and_a_broken_version_is_rolled_back_and_reported() {
    std::fs::create_dir_all(target_dir().join("goosebit")).unwrap();
    let venv = target_dir()
        .join("goosebit")
        .canonicalize()
        .unwrap()
        .join("venv");
    let venv = venv.to_str().unwrap().to_owned();
    tokio::task::spawn_blocking({
        let venv = venv.clone();
        move || run(&["install", &venv])
    })
    .await
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let w = work.path().to_str().unwrap().to_owned();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let pid: i32 = run(&["start", &venv, &w, &port])
        .parse()
        .expect("server pid");
    let mut server = Server {
        pid,
        base: format!("http://127.0.0.1:{port}"),
        token: String::new(),
    };
    server.token = run(&["token", &w, &port]);

    let id = format!("iocomd-e2e-{}", std::process::id());
    let mut h = settings(&server.base);
    h.controller_id = id.clone();
    h.auth = HawkbitAuth::None;
    h.poll_interval = Duration::from_secs(1);
    h.min_poll_interval = Duration::from_millis(500);
    h.progress_interval = Duration::from_millis(200);
    h.version_package = Some("gbtest".into());
    h.attributes = [("hw_boardname", "default"), ("hw_revision", "default")]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into();
    let dev = Daemon::start(|s| s.hawkbit = Some(h)).await;
    let good = build_deb(&dev.env, work.path(), "1.0.0", false);
    let bad = build_deb(&dev.env, work.path(), "2.0.0", true);
    run(&[
        "offer",
        &w,
        &port,
        &server.token,
        good.to_str().unwrap(),
        "r1",
    ]);

    wait_until(90, "device Finished with gbtest 1.0.0", || {
        server.device(&id).is_some_and(|d| {
            d["sw_version"] == "1.0.0"
                && d["last_state"]
                    .as_str()
                    .is_some_and(|s| s.eq_ignore_ascii_case("finished"))
        })
    })
    .await;
    assert_eq!(server.rollout("r1").unwrap()["success_count"], 1);
    assert_eq!(dev.installed("gbtest").as_deref(), Some("1.0.0"));

    run(&[
        "offer",
        &w,
        &port,
        &server.token,
        bad.to_str().unwrap(),
        "r2",
    ]);
    wait_until(90, "rollout r2 failure recorded", || {
        server
            .rollout("r2")
            .is_some_and(|r| r["failure_count"] == 1)
    })
    .await;
    let d = server.device(&id).unwrap();
    assert!(
        d["last_state"]
            .as_str()
            .is_some_and(|s| s.eq_ignore_ascii_case("error")),
        "{d}"
    );
    let log = server.api(&format!("/api/v1/devices/{id}/log"));
    assert!(
        log["log"]
            .as_str()
            .unwrap_or("")
            .contains("dpkg-failed (50)"),
        "{log}"
    );
    assert_eq!(
        dev.installed("gbtest").as_deref(),
        Some("1.0.0"),
        "the device still has 1.0.0"
    );
    assert_eq!(server.rollout("r2").unwrap()["success_count"], 0);
    assert_eq!(
        server.rollout("r1").unwrap()["success_count"],
        1,
        "success was not reported twice"
    );
    dev.stop().await;
    drop(server);
}
