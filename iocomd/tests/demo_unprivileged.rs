//! `iocomd --demo` started as an unprivileged user (uid 65534 via `setpriv`) installs the
//! sample package into its state dir: the helper child runs dpkg in its sandbox, where dpkg
//! is uid 0 of a user namespace (dpkg alone refuses to run as non-root).

mod daemon_support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn an_unprivileged_demo_installs_the_sample_package() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIP: needs root to start the demo as another user");
        return;
    }
    let helper = daemon_support::helper_binary();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let chown = |p: &std::path::Path| {
        let st = Command::new("chown")
            .arg("65534:65534")
            .arg(p)
            .status()
            .unwrap();
        assert!(st.success());
    };
    chown(&home);
    // The temp dir must be traversable by that user; the state dir is made by the demo.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = home.join("demo");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut daemon = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_iocomd"))
        .env("HOME", &home)
        .arg("--demo")
        .arg("--state-dir")
        .arg(&state)
        .args(["--listen", &listen, "--helper"])
        .arg(&helper)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(daemon.stdout.take().unwrap()).lines();
    let sample = loop {
        let line = lines.next().expect("iocomd ended early").unwrap();
        if line.contains(" push --connect ") {
            break line.split_whitespace().last().unwrap().to_owned();
        }
    };
    let out = Command::new(env!("CARGO_BIN_EXE_iocomctl"))
        .args(["push", "--connect", &listen, "gina3.iocafenet", &sample])
        .output()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(daemon.id()).unwrap());
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let _ = daemon.wait();
    assert!(
        out.status.success(),
        "iocomctl push: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let root = state.join("root");
    assert_eq!(
        daemon_support::installed_version(&root, "iocom-demo-hello").as_deref(),
        Some("1.0")
    );
    use std::os::unix::fs::MetadataExt;
    let file = root.join("usr/share/iocom-demo-hello/hello.txt");
    assert_eq!(std::fs::metadata(&file).unwrap().uid(), 65534);
}
