//! An iocomd 0.1 (eacab26, before the `install-api` crate) talks to this helper during a
//! self-update: the old daemon is still running while the new helper serves. Its view of the
//! interface is frozen here — the raw method and signal signatures it called, the structs it
//! parsed the JSON into, and how it read codes out of D-Bus errors — and checked against the
//! real service: an install, its progress and result, `Status()`, and a refusal.

mod common;
mod txn_support;

use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use install_helper::auth::AuthConfig;
use install_helper::service::{self, InstallHelper, Transport};
use serde::Deserialize;
use txn_support::*;

/// The 0.1 client's proxy, as iocomd/src/helper_client.rs declared it.
#[zbus::proxy(
    interface = "org.iocom.InstallHelper1",
    default_service = "org.iocom.InstallHelper1",
    default_path = "/org/iocom/InstallHelper1"
)]
trait OldInstallHelper1 {
    fn install(
        &self,
        package: zbus::Fd<'_>,
        meta: HashMap<&str, zbus::Variant<'_>>,
    ) -> zbus::Result<String>;
    fn status(&self) -> zbus::Result<String>;
    #[zbus(signal)]
    fn progress(&self, txid: &str, phase: &str, percent: u32, message: &str) -> zbus::Result<()>;
    #[zbus(signal)]
    fn finished(
        &self,
        txid: &str,
        code: &str,
        message: &str,
        result_json: &str,
    ) -> zbus::Result<()>;
}

/// 0.1's `TxSummary` (iocomd/src/daemon/helper.rs at eacab26).
#[derive(Debug, Deserialize)]
struct OldTxSummary {
    #[serde(default)]
    txid: String,
    #[serde(default)]
    package: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    code: String,
    #[serde(default)]
    code_number: u16,
    #[serde(default)]
    installed: Option<String>,
}

/// 0.1's `HelperStatus`.
#[derive(Debug, Deserialize)]
struct OldStatus {
    #[serde(default)]
    current: Option<OldCurrent>,
    #[serde(default)]
    last: Option<OldTxSummary>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)] // 0.1 parsed these; the test only needs the parse to succeed.
struct OldCurrent {
    txid: String,
    #[serde(default)]
    phase: String,
}

/// 0.1's phase table (`phase_state`): the phases it knew. Others it silently ignored.
const OLD_PHASES: &[&str] = &[
    "staging",
    "verify",
    "lock",
    "preflight",
    "install",
    "repair",
    "restart",
    "health",
    "rollback",
];

/// 0.1's way to read a code out of a D-Bus error: the name's prefix, the message's `code: `.
fn old_code_of(e: &zbus::Error) -> Option<(String, String)> {
    let zbus::Error::MethodError(name, Some(desc), _) = e else {
        return None;
    };
    let name = name.as_str();
    if !name.starts_with("org.iocom.InstallHelper1.Error.") {
        return None;
    }
    let (code, _) = desc.split_once(": ")?;
    Some((name.to_owned(), code.to_owned()))
}

/// The current helper serving `uid` on a socketpair; returns (server, client) connections.
async fn connect(w: &World, signer: &Signer, uid: u32) -> (zbus::Connection, zbus::Connection) {
    let helper = InstallHelper::new(
        w.settings(),
        Arc::new(signer.verifier()),
        AuthConfig {
            allowed_uids: vec![uid],
            polkit: false,
        },
    );
    let (a, b) = UnixStream::pair().unwrap();
    let (server, conn) = tokio::join!(
        service::serve(helper, Transport::P2p(a)),
        zbus::connection::Builder::unix_stream(b).p2p().build()
    );
    (server.unwrap(), conn.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_iocomd_0_1_installs_and_reads_results_from_this_helper() {
    let w = World::new();
    let signer = Signer::new(w.tmp.path());
    let v1 = signer.sign(&Pkg::new("iocom-app", "1.0").build(&w.debs));
    let (_server, conn) = connect(&w, &signer, 0).await;
    let proxy = OldInstallHelper1Proxy::builder(&conn)
        .build()
        .await
        .unwrap();
    let mut finished = proxy.receive_finished().await.unwrap();
    let mut progress = proxy.receive_progress().await.unwrap();

    let file = std::fs::File::open(&v1).unwrap();
    let meta = HashMap::from([
        ("sha256", zbus::Variant::from("00")),
        ("size", zbus::Variant::from(1u64)),
        ("origin", zbus::Variant::from("iocom 0.1")),
    ]);
    let txid = proxy.install(zbus::Fd::from(&file), meta).await.unwrap();
    let sig = tokio::time::timeout(Duration::from_secs(120), finished.next())
        .await
        .unwrap()
        .unwrap();
    let args = sig.args().unwrap();
    assert_eq!((args.txid(), args.code()), (&txid.as_str(), &"ok"));
    let summary: OldTxSummary = serde_json::from_str(args.result_json()).unwrap();
    assert_eq!(
        (
            summary.code.as_str(),
            summary.code_number,
            summary.package.as_deref(),
            summary.to.as_deref(),
            summary.installed.as_deref()
        ),
        ("ok", 0, Some("iocom-app"), Some("1.0"), Some("1.0"))
    );
    // Every phase it is sent is one it knows, except the new `rollback-source`/`finished`,
    // which 0.1 ignored; and the percent never falls (0.1 showed it as is).
    let mut last = 0;
    while let Ok(Some(p)) = tokio::time::timeout(Duration::from_millis(500), progress.next()).await
    {
        let a = p.args().unwrap();
        let phase = *a.phase();
        assert!(
            OLD_PHASES.contains(&phase) || phase == "finished" || phase == "rollback-source",
            "{phase}"
        );
        assert!(
            *a.percent() >= last,
            "progress fell to {} in {phase}",
            a.percent()
        );
        last = *a.percent();
    }
    assert_eq!(last, 100);

    let status: OldStatus = serde_json::from_str(&proxy.status().await.unwrap()).unwrap();
    assert!(status.current.is_none());
    let last = status.last.unwrap();
    assert_eq!(
        (last.txid.as_str(), last.code.as_str()),
        (txid.as_str(), "ok")
    );

    // A second install of the same version, the 0.1 way.
    let file = std::fs::File::open(&v1).unwrap();
    let e = proxy
        .install(zbus::Fd::from(&file), HashMap::new())
        .await
        .map(|t| format!("accepted as {t}"));
    let sig = tokio::time::timeout(Duration::from_secs(120), finished.next())
        .await
        .unwrap()
        .unwrap();
    // Reinstalling 1.0 is refused by verification, reported through Finished.
    let again = sig.args().unwrap();
    assert_eq!(*again.code(), "not-newer", "{e:?}");
    let again: OldTxSummary = serde_json::from_str(again.result_json()).unwrap();
    assert_eq!(again.code_number, 32);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_iocomd_0_1_reads_the_code_of_a_refused_call() {
    let w = World::new();
    let signer = Signer::new(w.tmp.path());
    let (_server, conn) = connect(&w, &signer, 4242).await;
    let proxy = OldInstallHelper1Proxy::builder(&conn)
        .build()
        .await
        .unwrap();
    let e = proxy.status().await.unwrap_err();
    assert_eq!(
        old_code_of(&e),
        Some((
            "org.iocom.InstallHelper1.Error.NotAuthorized".to_owned(),
            "not-authorized".to_owned()
        )),
        "{e}"
    );
}
