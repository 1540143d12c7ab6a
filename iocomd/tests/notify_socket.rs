//! sd_notify against a real datagram socket, without systemd.
//!
//! Environment variables cannot be changed safely in the multi-threaded test harness, so each
//! case re-runs this test binary as a child (the ignored test `child`) with `NOTIFY_SOCKET` and
//! `WATCHDOG_*` set, and reads what the child sent on the socket and printed on stdout.

use iocomd::systemd;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What the child does, chosen by the parent through `IOCOMD_NOTIFY_CASE`.
#[test]
#[ignore = "run as a child process by the other tests in this file"]
fn child() {
    let case = std::env::var("IOCOMD_NOTIFY_CASE").unwrap_or_default();
    match case.as_str() {
        "lifecycle" => {
            println!("enabled={}", systemd::enabled());
            println!("timeout={:?}", systemd::watchdog_timeout());
            systemd::ready().unwrap();
            systemd::status("receiving gina3.iocafenet\npackage 42%").unwrap();
            systemd::watchdog_ping().unwrap();
            systemd::ready_with_status("idle").unwrap();
            systemd::stopping().unwrap();
        }
        "watchdog" => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let cancel = CancellationToken::new();
                let task = tokio::spawn(systemd::run_watchdog(cancel.clone()));
                // The interval is 100 ms; a late wake-up delivers the missed ticks in a burst.
                tokio::time::sleep(Duration::from_millis(450)).await;
                cancel.cancel();
                task.await.unwrap();
                println!("watchdog task ended");
            });
        }
        _ => {}
    }
}

struct Run {
    stdout: String,
    messages: Vec<String>,
}

fn run_child(case: &str, env: &[(&str, &str)], with_socket: bool) -> Run {
    let tmp = tempfile::tempdir().unwrap();
    let sock_path = tmp.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "child",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("IOCOMD_NOTIFY_CASE", case)
    .env_remove("NOTIFY_SOCKET")
    .env_remove("WATCHDOG_USEC")
    .env_remove("WATCHDOG_PID");
    if with_socket {
        cmd.env("NOTIFY_SOCKET", &sock_path);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Everything the child sent is queued on the socket by now.
    sock.set_nonblocking(true).unwrap();
    let mut messages = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = sock.recv(&mut buf) {
        messages.push(String::from_utf8(buf[..n].to_vec()).unwrap());
    }
    Run {
        stdout: String::from_utf8(out.stdout).unwrap(),
        messages,
    }
}

#[test]
fn lifecycle_messages_reach_the_socket() {
    let r = run_child("lifecycle", &[("WATCHDOG_USEC", "2000000")], true);
    assert!(r.stdout.contains("enabled=true"), "{}", r.stdout);
    assert!(r.stdout.contains("timeout=Some(2s)"), "{}", r.stdout);
    assert_eq!(
        r.messages,
        vec![
            "READY=1\n",
            "STATUS=receiving gina3.iocafenet package 42%\n",
            "WATCHDOG=1\n",
            "READY=1\nSTATUS=idle\n",
            "STOPPING=1\n",
        ]
    );
}

#[test]
fn watchdog_for_another_pid_is_ignored() {
    let r = run_child(
        "lifecycle",
        &[("WATCHDOG_USEC", "2000000"), ("WATCHDOG_PID", "1")],
        true,
    );
    assert!(r.stdout.contains("timeout=None"), "{}", r.stdout);
    let r = run_child("lifecycle", &[("WATCHDOG_USEC", "0")], true);
    assert!(r.stdout.contains("timeout=None"), "{}", r.stdout);
}

#[test]
fn without_notify_socket_everything_is_a_no_op() {
    let r = run_child("lifecycle", &[("WATCHDOG_USEC", "2000000")], false);
    assert!(r.stdout.contains("enabled=false"), "{}", r.stdout);
    assert!(r.messages.is_empty(), "{:?}", r.messages);
}

#[test]
fn watchdog_task_pings_until_cancelled() {
    let r = run_child("watchdog", &[("WATCHDOG_USEC", "200000")], true);
    assert!(r.stdout.contains("watchdog task ended"), "{}", r.stdout);
    // 450 ms at one ping per 100 ms: 5 pings (the first at once); allow for coarse timers.
    assert!(r.messages.len() >= 3, "{:?}", r.messages);
    assert!(
        r.messages.iter().all(|m| m == "WATCHDOG=1\n"),
        "{:?}",
        r.messages
    );

    let r = run_child("watchdog", &[], true);
    assert!(r.stdout.contains("watchdog task ended"), "{}", r.stdout);
    assert!(
        r.messages.is_empty(),
        "no WATCHDOG_USEC, no pings: {:?}",
        r.messages
    );
}
