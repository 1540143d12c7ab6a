//! A helper killed (SIGKILL to its whole process group, like a power cut) while dpkg runs a
//! slow postinst is recovered by the next start: the unfinished journal is finished (new
//! version fully installed) or rolled back (old version restored), and `dpkg --audit` is clean.
//! The helper binary is driven over its peer-to-peer transports (`--p2p-fd`, `--p2p-socket`).

mod common;
mod txn_support;

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use install_api::InstallHelper1Proxy;
use install_helper::receipt;
use txn_support::*;

const LONG: Duration = Duration::from_secs(120);

/// The v2 postinst: signals the test through a FIFO and sleeps (the helper is killed then);
/// when re-run by `dpkg --configure -a` the FIFO is gone, and it fails if asked to.
const SLOW_POSTINST: &str = r#"
if [ -p /tmp/started ]; then echo started > /tmp/started; rm -f /tmp/started; sleep 60; fi
if [ -e /tmp/fail-on-resume ]; then echo "failing on resume" >&2; exit 1; fi
"#;

enum Via {
    Fd,
    Socket,
}

fn helper_cmd(w: &World, policy: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_iocom-install-helper"));
    cmd.arg("--root")
        .arg(&w.root)
        .arg("--state-dir")
        .arg(&w.state)
        .arg("--policy")
        .arg(policy)
        .args([
            "--allow-uid",
            "0",
            "--lock-timeout",
            "30",
            "--space-reserve-mib",
            "0",
        ])
        .stdin(Stdio::null())
        .stderr(
            std::fs::File::options()
                .create(true)
                .append(true)
                .open(w.tmp.path().join("helper.log"))
                .unwrap(),
        );
    cmd
}

/// Starts the helper in its own process group, connected to us peer-to-peer.
async fn start(w: &World, policy: &Path, via: Via) -> (Child, zbus::Connection) {
    start_with(w, policy, via, &[]).await
}

async fn start_with(
    w: &World,
    policy: &Path,
    via: Via,
    extra: &[&str],
) -> (Child, zbus::Connection) {
    let mut cmd = helper_cmd(w, policy);
    cmd.args(extra);
    cmd.process_group(0);
    let (child, stream) = match via {
        Via::Fd => {
            let (ours, theirs) = UnixStream::pair().unwrap();
            // Let the child inherit its end (std opens sockets close-on-exec).
            nix::fcntl::fcntl(
                &theirs,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
            )
            .unwrap();
            cmd.arg("--p2p-fd").arg(theirs.as_raw_fd().to_string());
            let child = cmd.spawn().unwrap();
            drop(theirs);
            (child, ours)
        }
        Via::Socket => {
            let path = w.tmp.path().join("helper.sock");
            let _ = std::fs::remove_file(&path);
            let listener = UnixListener::bind(&path).unwrap();
            cmd.arg("--p2p-socket").arg(&path);
            let child = cmd.spawn().unwrap();
            let accept = tokio::task::spawn_blocking(move || listener.accept().unwrap().0);
            (
                child,
                tokio::time::timeout(LONG, accept).await.unwrap().unwrap(),
            )
        }
    };
    let conn = zbus::connection::Builder::unix_stream(stream)
        .p2p()
        .build()
        .await
        .unwrap();
    (child, conn)
}

async fn install_and_wait(conn: &zbus::Connection, deb: &Path) -> (String, String) {
    let proxy = InstallHelper1Proxy::new(conn).await.unwrap();
    let mut finished = proxy.receive_finished().await.unwrap();
    let f = std::fs::File::open(deb).unwrap();
    let txid = proxy
        .install(zbus::Fd::from(&f), HashMap::new())
        .await
        .unwrap();
    let sig = tokio::time::timeout(LONG, finished.next())
        .await
        .unwrap()
        .unwrap();
    let a = sig.args().unwrap();
    assert_eq!(a.txid, txid);
    (txid, a.code.clone())
}

/// Installs v1, starts v2 and kills the helper while v2's postinst runs. Returns v2's txid.
async fn crash_during_upgrade(w: &World, signer: &Signer, via: Via) -> String {
    let v1 = signer.sign(&Pkg::new("iocom-app", "1.0").build(&w.debs));
    let v2 = signer.sign(
        &Pkg::new("iocom-app", "2.0")
            .postinst(SLOW_POSTINST)
            .build(&w.debs),
    );
    let (mut child, conn) = start(w, &signer.policy, via).await;
    assert_eq!(install_and_wait(&conn, &v1).await.1, "ok");

    mkfifo(&w.root.join("tmp/started"));
    let proxy = InstallHelper1Proxy::new(&conn).await.unwrap();
    let f = std::fs::File::open(&v2).unwrap();
    let txid = proxy
        .install(zbus::Fd::from(&f), HashMap::new())
        .await
        .unwrap();
    let fifo = w.root.join("tmp/started");
    let read = tokio::task::spawn_blocking(move || {
        let text = std::fs::read_to_string(&fifo).unwrap();
        // So that the postinst does not wait on it again when re-run by the recovery. The
        // postinst removes it too, right after writing: whichever comes first.
        match std::fs::remove_file(&fifo) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("{}: {e}", fifo.display()),
        }
        text
    });
    assert_eq!(
        tokio::time::timeout(LONG, read).await.unwrap().unwrap(),
        "started\n"
    );

    // Power cut: the helper, dpkg and the postinst die together.
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    drop(conn);

    // The crash left dpkg inconsistent and our journal behind.
    assert!(
        !dpkg_audit(&w.root).is_empty(),
        "dpkg --audit is clean right after the crash"
    );
    assert_eq!(
        dpkg_status(&w.root, "iocom-app").unwrap().0,
        "half-configured"
    );
    assert!(w.state.join("journal.json").exists());
    txid
}

fn recover_only(w: &World, policy: &Path) {
    let st = helper_cmd(w, policy)
        .arg("--recover-only")
        .status()
        .unwrap();
    assert!(
        st.success(),
        "recovery failed: {}",
        std::fs::read_to_string(w.tmp.path().join("helper.log")).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_mid_postinst_is_finished_on_next_start() {
    let w = World::new();
    let signer = Signer::new(w.tmp.path());
    let txid = crash_during_upgrade(&w, &signer, Via::Fd).await;

    recover_only(&w, &signer.policy);
    assert_eq!(dpkg_audit(&w.root), "");
    assert_eq!(
        dpkg_status(&w.root, "iocom-app"),
        Some(("installed".into(), "2.0".into()))
    );
    assert!(!w.state.join("journal.json").exists());
    let r = receipt::find_receipt(&w.state.join("receipts.jsonl"), &txid)
        .unwrap()
        .unwrap();
    assert_eq!(r.code.as_str(), "ok", "{r:#?}");
    assert!(r.message.contains("after an interruption"), "{}", r.message);
    let last = receipt::read_status(&w.state.join("status.json"))
        .unwrap()
        .unwrap()
        .last
        .unwrap();
    assert_eq!(last.txid, txid);
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_mid_postinst_is_rolled_back_when_configure_fails() {
    let w = World::new();
    let signer = Signer::new(w.tmp.path());
    let txid = crash_during_upgrade(&w, &signer, Via::Socket).await;
    std::fs::write(w.root.join("tmp/fail-on-resume"), "").unwrap();

    recover_only(&w, &signer.policy);
    assert_eq!(dpkg_audit(&w.root), "");
    assert_eq!(
        dpkg_status(&w.root, "iocom-app"),
        Some(("installed".into(), "1.0".into()))
    );
    let r = receipt::find_receipt(&w.state.join("receipts.jsonl"), &txid)
        .unwrap()
        .unwrap();
    assert_eq!(r.code.as_str(), "dpkg-failed", "{r:#?}");
    assert!(
        r.message.contains("iocom-app 1.0 restored"),
        "{}",
        r.message
    );
    assert!(r.output.contains("failing on resume"), "{}", r.output);

    // The recovered helper serves again, and the next start finds nothing to do.
    let (mut child, conn) = start(&w, &signer.policy, Via::Socket).await;
    let proxy = InstallHelper1Proxy::new(&conn).await.unwrap();
    let status: serde_json::Value = serde_json::from_str(&proxy.status().await.unwrap()).unwrap();
    assert_eq!(status["last"]["txid"], txid.as_str());
    drop(proxy);
    conn.close().await.unwrap();
    // Closing the connection ends the helper.
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap());
    assert!(
        tokio::time::timeout(LONG, exit)
            .await
            .unwrap()
            .unwrap()
            .success()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_helper_exits_by_itself() {
    let w = World::new();
    let signer = Signer::new(w.tmp.path());
    let (mut child, conn) =
        start_with(&w, &signer.policy, Via::Socket, &["--idle-exit", "1"]).await;
    let proxy = InstallHelper1Proxy::new(&conn).await.unwrap();
    let status: serde_json::Value = serde_json::from_str(&proxy.status().await.unwrap()).unwrap();
    assert!(status["current"].is_null());
    // The connection stays open; the helper leaves after one idle second.
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap());
    assert!(
        tokio::time::timeout(LONG, exit)
            .await
            .unwrap()
            .unwrap()
            .success()
    );
    drop(proxy);
}
