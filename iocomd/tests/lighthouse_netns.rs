//! Lighthouse discovery between two network namespaces the test makes (a veth pair, 10.231.x):
//! in namespace A, the iocomctl binary listens with `--announce`; in namespace B, two devices
//! configured to connect to `*` (as iocomd's connect-up does) find it by the multicast and
//! connect up. Only the requested one receives the package: the other is closed, unasked.
//! Needs root (namespaces); skipped with a printed reason otherwise.

mod ctl_support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const CHILD: &str = "IOCOMD_LH_CHILD";

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces joined by a veth pair; removed on drop.
struct Namespaces {
    a: String,
    b: String,
}

impl Namespaces {
    fn new() -> Self {
        let id = std::process::id();
        let (a, b) = (format!("iocomd-lh-a-{id}"), format!("iocomd-lh-b-{id}"));
        let ns = Self { a, b };
        ip(&["netns", "add", &ns.a]);
        ip(&["netns", "add", &ns.b]);
        ip(&[
            "link", "add", "lhA", "netns", &ns.a, "type", "veth", "peer", "name", "lhB", "netns",
            &ns.b,
        ]);
        for (n, dev, addr) in [
            (&ns.a, "lhA", "10.231.0.1/24"),
            (&ns.b, "lhB", "10.231.0.2/24"),
        ] {
            ip(&["-n", n, "link", "set", "lo", "up"]);
            ip(&["-n", n, "addr", "add", addr, "dev", dev]);
            ip(&["-n", n, "link", "set", dev, "up"]);
            ip(&["-n", n, "route", "add", "224.0.0.0/4", "dev", dev]);
        }
        ns
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

#[test]
fn a_device_finds_an_announcing_iocomctl_across_namespaces() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: creating network namespaces needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = ctl_support::random_bytes(30_000, 9);
    let file = dir.path().join("pkg.deb");
    std::fs::write(&file, &data).unwrap();
    let done = dir.path().join("done");
    let ns = Namespaces::new();
    // The devices, in B.
    let exe = std::env::current_exe().unwrap();
    let mut devices = Command::new("ip")
        .args(["netns", "exec", &ns.b])
        .arg(&exe)
        .args(["--exact", "device_child", "--ignored", "--nocapture"])
        .env(CHILD, dir.path())
        .spawn()
        .unwrap();
    // The controller, in A: waits for gina7 and pushes to it.
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.a, env!("CARGO_BIN_EXE_iocomctl")])
        .args(["push", "--json", "--listen", "0.0.0.0:16368", "--announce"])
        .args(["--listen-timeout", "60", "gina7.cafenet"])
        .arg(&file)
        .output()
        .unwrap();
    std::fs::write(&done, b"").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "iocomctl: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("\"peer\":\"10.231.0.2:"), "{stdout}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = devices.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "device child did not end");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "device child failed");
    assert_eq!(std::fs::read(dir.path().join("gina7")).unwrap(), data);
    assert_eq!(std::fs::read(dir.path().join("gina8")).unwrap(), b"");
}

/// Runs inside namespace B (started by the test above): two devices connect up to `*`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "started by a_device_finds_an_announcing_iocomctl_across_namespaces"]
async fn device_child() {
    let Ok(dir) = std::env::var(CHILD) else {
        return;
    };
    let dir = Path::new(&dir);
    let nowhere = "0.0.0.0:0".parse().unwrap();
    let seven = ctl_support::start_up_to(ctl_support::Spec::new("gina", 7), "*".into(), nowhere);
    let eight = ctl_support::start_up_to(ctl_support::Spec::new("gina", 8), "*".into(), nowhere);
    let deadline = Instant::now() + Duration::from_secs(90);
    while !dir.join("done").exists() {
        assert!(Instant::now() < deadline, "controller did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::write(dir.join("gina7"), seven.stop().await).unwrap();
    std::fs::write(dir.join("gina8"), eight.stop().await).unwrap();
}
