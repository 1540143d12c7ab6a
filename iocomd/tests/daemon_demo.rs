//! The demo contract end to end with the real binaries: `iocomd --demo` prints how to push,
//! the printed `iocomctl push` line installs the sample package into the demo's dpkg root,
//! `iocomctl status` reports it, and SIGTERM stops the daemon cleanly.

mod daemon_support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn the_printed_push_command_installs_the_sample_package() {
    let helper = daemon_support::helper_binary();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("demo");
    // A free port (the daemon binds it right after; nothing else here races for it).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    // The service manager's notification socket, as systemd would pass it.
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // Read it all the time, as systemd does (a full datagram queue would block the sender).
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut messages = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                match notify.recv(&mut buf) {
                    Ok(n) => messages.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                    Err(_) if done.load(std::sync::atomic::Ordering::SeqCst) => break,
                    Err(_) => {}
                }
            }
            messages
        })
    };
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_iocomd"))
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "1000000")
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
    let mut printed = Vec::new();
    let push_line = loop {
        let line = lines.next().expect("iocomd ended early").unwrap();
        printed.push(line.clone());
        if line.contains(" push --connect ") {
            break line;
        }
    };
    assert!(printed[0].contains("gina3.iocafenet"), "{printed:?}");
    assert!(printed[0].contains(&listen), "{printed:?}");
    let words: Vec<&str> = push_line.split_whitespace().collect();
    assert_eq!(
        words[1..4],
        ["push", "--connect", listen.as_str()],
        "{push_line}"
    );
    assert_eq!(words[4], "gina3.iocafenet");
    let sample = words[5];
    assert!(sample.ends_with("iocom-demo-hello_1.0_all.deb"), "{sample}");
    let rest: Vec<String> = lines.by_ref().take(4).map(|l| l.unwrap()).collect();
    assert!(
        rest.iter()
            .any(|l| l.contains("debsigs --sign=origin --default-key=")),
        "{rest:?}"
    );

    let ctl = env!("CARGO_BIN_EXE_iocomctl");
    let out = Command::new(ctl)
        .args(["push", "--connect", &listen, "gina3.iocafenet", sample])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "iocomctl push: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        daemon_support::installed_version(&state.join("root"), "iocom-demo-hello").as_deref(),
        Some("1.0")
    );
    let status = Command::new(ctl)
        .args(["status", "--connect", &listen, "gina3.iocafenet"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{text}");
    assert!(
        text.contains("iocom-demo-hello") && text.contains("1.0"),
        "{text}"
    );
    assert!(
        std::fs::read_dir(state.join("spool"))
            .unwrap()
            .next()
            .is_none(),
        "spool not empty"
    );

    let pid = nix::unistd::Pid::from_raw(i32::try_from(daemon.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let until = Instant::now() + daemon_support::WAIT;
    let code = loop {
        if let Some(st) = daemon.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < until, "iocomd did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(code.success(), "{code:?}");

    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let messages = reader.join().unwrap();
    let has = |what: &str| messages.iter().any(|m| m.contains(what));
    assert!(has("READY=1"), "{messages:?}");
    assert!(
        has("STATUS=idle; last push: ok iocom-demo-hello 1.0"),
        "{messages:?}"
    );
    assert!(has("WATCHDOG=1"), "{messages:?}");
    assert!(has("STOPPING=1"), "{messages:?}");
}

#[test]
fn iocomd_runs_from_a_configuration_file() {
    let helper = daemon_support::helper_binary();
    let dir = tempfile::tempdir().unwrap();
    // The demo environment supplies a signing key, a policy and a signed package.
    let env = iocomd::demo::prepare(&dir.path().join("env")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let spool = dir.path().join("spool");
    let config = dir.path().join("iocomd.toml");
    let q = |p: &std::path::Path| format!("{:?}", p.to_str().unwrap());
    std::fs::write(
        &config,
        format!(
            "[device]\nname = \"gina\"\nnumber = 7\nnetwork = \"iocafenet\"\n\
             [[endpoints.listen]]\ntransport = \"tcp\"\naddress = \"{listen}\"\n\
             [security]\nallow_plain_tcp_push = true\n\
             [spool]\ndir = {}\n\
             [helper]\nconnection = \"spawn\"\nprogram = {}\n\
             args = [\"--p2p-fd\", \"{{fd}}\", \"--root\", {}, \"--state-dir\", {}, \"--policy\", {}, \
             \"--allow-uid\", \"{}\"]\n\
             [log]\ntarget = \"stderr\"\n",
            q(&spool),
            q(&helper),
            q(&env.dpkg_root),
            q(&env.helper_state),
            q(&env.policy),
            nix::unistd::getuid()
        ),
    )
    .unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(daemon_support::WAIT)).unwrap();
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_iocomd"))
        .arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // READY=1 comes once the listener is bound and the core loop runs.
    let mut buf = [0u8; 4096];
    loop {
        let n = notify.recv(&mut buf).expect("no READY=1 from iocomd");
        if String::from_utf8_lossy(&buf[..n]).contains("READY=1") {
            break;
        }
    }
    let out = Command::new(env!("CARGO_BIN_EXE_iocomctl"))
        .args(["push", "--connect", &listen, "gina7.iocafenet"])
        .arg(&env.sample_package)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        daemon_support::installed_version(&env.dpkg_root, "iocom-demo-hello").as_deref(),
        Some("1.0")
    );
    assert!(std::fs::read_dir(&spool).unwrap().next().is_none());
    let pid = nix::unistd::Pid::from_raw(i32::try_from(daemon.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    // STOPPING=1 is sent when shutdown starts; then the process exits.
    loop {
        let n = notify.recv(&mut buf).expect("no STOPPING=1 from iocomd");
        if String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1") {
            break;
        }
    }
    assert!(daemon.wait().unwrap().success());
}
