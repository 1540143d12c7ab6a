//! The D-Bus interface over a peer-to-peer connection (as `iocomd --demo` uses it), in
//! process: install with signals and a persisted result, `busy` while a transaction runs, a
//! verification refusal reported through `Finished`, and the caller uid taken from the
//! socket's peer credentials.

mod common;
mod txn_support;

use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use install_api::ErrorCode;
use install_api::InstallHelper1Proxy;
use install_helper::auth::{AuthConfig, ServiceError};
use install_helper::service::{self, InstallHelper, Transport};
use txn_support::*;

const LONG: Duration = Duration::from_secs(120);

struct Client {
    _server: zbus::Connection,
    conn: zbus::Connection,
}

impl Client {
    async fn proxy(&self) -> InstallHelper1Proxy<'_> {
        InstallHelper1Proxy::builder(&self.conn)
            .build()
            .await
            .unwrap()
    }
}

async fn connect(helper: InstallHelper) -> Client {
    let (a, b) = UnixStream::pair().unwrap();
    let (server, conn) = tokio::join!(
        service::serve(helper, Transport::P2p(a)),
        zbus::connection::Builder::unix_stream(b).p2p().build()
    );
    Client {
        _server: server.unwrap(),
        conn: conn.unwrap(),
    }
}

fn code_of(e: &zbus::Error) -> Option<ErrorCode> {
    match e {
        zbus::Error::MethodError(name, _, _) => ServiceError::code_from_name(name.as_str()),
        _ => None,
    }
}

fn helper(w: &World, signer: &Signer, uids: Vec<u32>) -> InstallHelper {
    InstallHelper::new(
        w.settings(),
        Arc::new(signer.verifier()),
        AuthConfig {
            allowed_uids: uids,
            polkit: false,
        },
    )
}

/// Reads a FIFO in the package root (blocks until the maintainer script writes it).
async fn read_fifo(path: std::path::PathBuf) -> String {
    let read = tokio::task::spawn_blocking(move || std::fs::read_to_string(path).unwrap());
    tokio::time::timeout(LONG, read).await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn install_signals_busy_and_result_over_p2p() {
    let w = World::new();
    let signer = Signer::new(w.tmp.path());
    // The postinst reports that it started, then waits for the test's go-ahead.
    let script = "if [ -p /tmp/started ]; then echo started > /tmp/started; cat /tmp/go; fi";
    let v1 = signer.sign(&Pkg::new("iocom-app", "1.0").postinst(script).build(&w.debs));
    mkfifo(&w.root.join("tmp/started"));
    mkfifo(&w.root.join("tmp/go"));

    let client = connect(helper(&w, &signer, vec![0])).await;
    let proxy = client.proxy().await;
    let mut finished = proxy.receive_finished().await.unwrap();
    let mut progress = proxy.receive_progress().await.unwrap();

    let file = std::fs::File::open(&v1).unwrap();
    let meta = HashMap::from([("origin", zbus::Variant::from("test"))]);
    let txid = proxy.install(zbus::Fd::from(&file), meta).await.unwrap();
    assert!(!txid.is_empty());
    assert_eq!(read_fifo(w.root.join("tmp/started")).await, "started\n");

    // A second request while dpkg runs the postinst is refused with `busy`.
    let file2 = std::fs::File::open(&v1).unwrap();
    let e = proxy
        .install(zbus::Fd::from(&file2), HashMap::new())
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), Some(ErrorCode::Busy), "{e}");
    assert!(e.to_string().contains(&txid), "{e}");
    let status: serde_json::Value = serde_json::from_str(&proxy.status().await.unwrap()).unwrap();
    assert_eq!(status["current"]["txid"], txid.as_str());

    std::fs::write(w.root.join("tmp/go"), "go\n").unwrap();
    let sig = tokio::time::timeout(LONG, finished.next())
        .await
        .unwrap()
        .unwrap();
    let args = sig.args().unwrap();
    assert_eq!(args.txid, txid);
    assert_eq!(args.code, "ok", "{}", args.result_json);
    let result: serde_json::Value = serde_json::from_str(&args.result_json).unwrap();
    assert_eq!(result["signer"], signer.key.fingerprint.as_str());
    assert_eq!(result["to"], "1.0");

    let mut phases = Vec::new();
    while let Ok(Some(p)) = tokio::time::timeout(Duration::from_millis(500), progress.next()).await
    {
        let a = p.args().unwrap();
        assert_eq!(a.txid, txid);
        phases.push(a.phase);
    }
    for want in ["verify", "lock", "install", "finished"] {
        assert!(phases.iter().any(|p| p == want), "no {want} in {phases:?}");
    }

    // Result() and Status() read the persisted result.
    let r: serde_json::Value = serde_json::from_str(&proxy.result(&txid).await.unwrap()).unwrap();
    assert_eq!(r["code"], "ok");
    let e = proxy.result("no-such-tx").await.unwrap_err();
    assert_eq!(code_of(&e), Some(ErrorCode::BadRequest), "{e}");
    let status: serde_json::Value = serde_json::from_str(&proxy.status().await.unwrap()).unwrap();
    assert!(status["current"].is_null());
    assert_eq!(status["last"]["txid"], txid.as_str());
    assert_eq!(status["packages"][0]["name"], "iocom-app");
    assert_eq!(status["packages"][0]["version"], "1.0");
    assert_eq!(
        dpkg_status(&w.root, "iocom-app"),
        Some(("installed".into(), "1.0".into()))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unsigned_package_is_refused_through_finished_and_changes_nothing() {
    let w = World::new();
    let signer = Signer::new(w.tmp.path());
    let unsigned = Pkg::new("iocom-app", "1.0").build(&w.debs);
    let before = tree_hash(&w.root);
    let client = connect(helper(&w, &signer, vec![0])).await;
    let proxy = client.proxy().await;
    let mut finished = proxy.receive_finished().await.unwrap();
    let file = std::fs::File::open(&unsigned).unwrap();
    let txid = proxy
        .install(zbus::Fd::from(&file), HashMap::new())
        .await
        .unwrap();
    let sig = tokio::time::timeout(LONG, finished.next())
        .await
        .unwrap()
        .unwrap();
    let args = sig.args().unwrap();
    assert_eq!(
        (args.txid.as_str(), args.code.as_str()),
        (txid.as_str(), "signature-missing")
    );
    assert_eq!(tree_hash(&w.root), before);
    assert_eq!(
        std::fs::read_dir(w.state.join("staging")).unwrap().count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn peer_uid_not_in_the_allow_list_is_not_authorized() {
    let w = World::new();
    let signer = Signer::new(w.tmp.path());
    let deb = signer.sign(&Pkg::new("iocom-app", "1.0").build(&w.debs));
    // This test runs as root; only uid 4242 is allowed.
    let client = connect(helper(&w, &signer, vec![4242])).await;
    let proxy = client.proxy().await;
    let file = std::fs::File::open(&deb).unwrap();
    let e = proxy
        .install(zbus::Fd::from(&file), HashMap::new())
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), Some(ErrorCode::NotAuthorized), "{e}");
    assert!(e.to_string().contains("uid 0"), "{e}");
    let e = proxy.status().await.unwrap_err();
    assert_eq!(code_of(&e), Some(ErrorCode::NotAuthorized), "{e}");
    assert!(!w.state.join("staging").exists());
    assert_eq!(dpkg_status(&w.root, "iocom-app"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn staging_without_free_space_is_no_space_and_keeps_nothing() {
    let w = World::new();
    let signer = Signer::new(w.tmp.path());
    let deb = signer.sign(&Pkg::new("iocom-app", "1.0").build(&w.debs));
    let mut settings = w.settings();
    // A reserve larger than any filesystem: the statvfs check before the copy must refuse.
    settings.space_reserve = u64::MAX / 4;
    let helper = InstallHelper::new(
        settings,
        Arc::new(signer.verifier()),
        AuthConfig {
            allowed_uids: vec![0],
            polkit: false,
        },
    );
    let client = connect(helper).await;
    let proxy = client.proxy().await;
    let file = std::fs::File::open(&deb).unwrap();
    let e = proxy
        .install(zbus::Fd::from(&file), HashMap::new())
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), Some(ErrorCode::NoSpace), "{e}");
    assert_eq!(
        std::fs::read_dir(w.state.join("staging")).unwrap().count(),
        0
    );
    // The refusal does not leave the helper busy.
    let status: serde_json::Value = serde_json::from_str(&proxy.status().await.unwrap()).unwrap();
    assert!(status["current"].is_null());
}
