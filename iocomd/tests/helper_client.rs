//! The helper client against an in-test zbus server implementing `org.iocom.InstallHelper1`
//! on a peer-to-peer socket: fd passing, metadata, signals, errors, and a spawned child helper
//! (this test binary re-run as the child, serving on its standard input).

mod daemon_support;

use daemon_support::bus::PrivateBus;
use futures_util::StreamExt;
use install_api::{ErrorCode, HelperSignal, HelperStatus, TxResult};
use iocomd::config::HelperConnection;
use iocomd::helper_client::{HelperClient, HelperError, InstallMeta};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{Read, Seek, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::time::Duration;
use zbus::object_server::SignalEmitter;

#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.iocom.InstallHelper1.Error")]
enum FakeError {
    #[zbus(error)]
    ZBus(zbus::Error),
    UnknownTransaction(String),
    BadPackage(String),
}

/// Remembers what it installed; reads the package through the received fd.
#[derive(Debug, Default)]
struct FakeHelper {
    results: Mutex<HashMap<String, TxResult>>,
}

#[zbus::interface(name = "org.iocom.InstallHelper1")]
impl FakeHelper {
    async fn install(
        &self,
        package: zbus::Fd<'_>,
        meta: HashMap<String, zbus::OwnedVariant>,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<String, FakeError> {
        let fd: OwnedFd = package.try_into().map_err(FakeError::ZBus)?;
        let mut file = std::fs::File::from(fd);
        file.rewind()
            .map_err(|e| FakeError::BadPackage(e.to_string()))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| FakeError::BadPackage(e.to_string()))?;
        if bytes.is_empty() {
            return Err(FakeError::BadPackage(
                "empty package, no code prefix".into(),
            ));
        }
        let sha: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let claimed_sha = String::try_from(meta.get("sha256").cloned().unwrap()).unwrap();
        let claimed_size = u64::try_from(meta.get("size").cloned().unwrap()).unwrap();
        let origin = String::try_from(meta.get("origin").cloned().unwrap()).unwrap();
        let id = format!("txn-{}", self.results.lock().unwrap().len() + 1);
        let mut result = TxResult::new(
            &id,
            ErrorCode::Ok,
            format!(
                "{} bytes; claimed {claimed_sha} {claimed_size} from {origin}",
                bytes.len()
            ),
        );
        result.sha256 = Some(sha);
        self.results
            .lock()
            .unwrap()
            .insert(id.clone(), result.clone());
        Self::progress(&emitter, &id, "verify", 10, "checking").await?;
        Self::progress(&emitter, &id, "install", 90, "dpkg").await?;
        Self::finished(&emitter, &id, "ok", "installed", &result.to_json()).await?;
        Ok(id)
    }

    async fn status(&self) -> String {
        let results = self.results.lock().unwrap();
        let status = HelperStatus {
            last: results.values().max_by_key(|r| r.txid.clone()).cloned(),
            root: format!("{} transactions", results.len()),
            ..HelperStatus::default()
        };
        serde_json::to_string(&status).unwrap()
    }

    async fn result(&self, transaction_id: &str) -> Result<String, FakeError> {
        self.results
            .lock()
            .unwrap()
            .get(transaction_id)
            .map(TxResult::to_json)
            .ok_or_else(|| {
                FakeError::UnknownTransaction(format!("unknown-transaction: {transaction_id}"))
            })
    }

    #[zbus(signal)]
    async fn progress(
        emitter: &SignalEmitter<'_>,
        transaction_id: &str,
        phase: &str,
        percent: u32,
        message: &str,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn finished(
        emitter: &SignalEmitter<'_>,
        transaction_id: &str,
        code: &str,
        message: &str,
        result_json: &str,
    ) -> zbus::Result<()>;
}

async fn serve(stream: UnixStream) -> zbus::Connection {
    zbus::connection::Builder::unix_stream(stream)
        .server(zbus::Guid::generate())
        .p2p()
        .serve_at("/org/iocom/InstallHelper1", FakeHelper::default())
        .build()
        .await
        .unwrap()
}

fn package_file(content: &[u8]) -> std::fs::File {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(content).unwrap();
    f.rewind().unwrap();
    f
}

fn meta(content: &[u8]) -> InstallMeta {
    InstallMeta {
        sha256: Sha256::digest(content)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        size: content.len() as u64,
        origin: "tls:127.0.0.1 user frank".into(),
    }
}

/// Runs `client` against the fake helper on a socketpair.
async fn with_p2p_helper() -> (HelperClient, zbus::Connection) {
    let (a, b) = UnixStream::pair().unwrap();
    let (server, client) = tokio::join!(serve(a), HelperClient::p2p(b));
    (client.unwrap(), server)
}

async fn next_event(
    events: &mut (impl futures_util::Stream<Item = HelperSignal> + Unpin),
) -> HelperSignal {
    tokio::time::timeout(Duration::from_secs(30), events.next())
        .await
        .expect("no signal within 30 s")
        .expect("signal stream ended")
}

async fn exercise(client: &HelperClient) {
    let content = b"!<arch>\npretend this is a .deb".repeat(1000);
    let mut events = client.events().await.unwrap();
    let file = package_file(&content);
    let id = client.install(&file, &meta(&content)).await.unwrap();
    assert_eq!(id, "txn-1");

    let sha = meta(&content).sha256;
    // What the fake helper saw: the real bytes through the fd, and our advisory metadata.
    let expect_message = format!(
        "{n} bytes; claimed {sha} {n} from tls:127.0.0.1 user frank",
        n = content.len()
    );
    assert_eq!(
        next_event(&mut events).await,
        HelperSignal::Progress {
            txid: id.clone(),
            phase: Some(install_api::Phase::Verify),
            percent: 10,
            message: "checking".into()
        }
    );
    assert!(matches!(
        next_event(&mut events).await,
        HelperSignal::Progress { percent: 90, .. }
    ));
    let HelperSignal::Finished(finished) = next_event(&mut events).await else {
        panic!("expected Finished");
    };
    assert_eq!(
        (
            finished.txid.as_str(),
            finished.code,
            finished.message.as_str(),
            finished.sha256.as_deref()
        ),
        (
            id.as_str(),
            ErrorCode::Ok,
            expect_message.as_str(),
            Some(sha.as_str())
        )
    );
    assert_eq!(client.result(&id).await.unwrap(), *finished);
    let status = client.status().await.unwrap();
    assert_eq!(status.last.as_ref(), Some(&*finished));
    assert_eq!(status.root, "1 transactions");

    let e = client.result("txn-99").await.unwrap_err();
    assert_eq!(
        e.remote_error_name().as_deref(),
        Some("org.iocom.InstallHelper1.Error.UnknownTransaction")
    );
    assert!(
        e.to_string().starts_with("install helper Result failed"),
        "{e}"
    );

    let empty = package_file(b"");
    let e = client.install(&empty, &meta(b"")).await.unwrap_err();
    assert_eq!(
        e.remote_error_name().as_deref(),
        Some("org.iocom.InstallHelper1.Error.BadPackage")
    );
}

#[tokio::test]
async fn proxy_talks_to_a_p2p_helper_with_fd_passing_and_signals() {
    let (client, _server) = with_p2p_helper().await;
    assert_eq!(client.child_pid(), None);
    exercise(&client).await;
}

/// The fake helper as a child process: serves on the inherited socket named by
/// `IOCOMD_FAKE_HELPER_FD` until the peer hangs up.
#[test]
#[ignore = "run as a child process by spawned_helper_serves_on_an_inherited_fd"]
#[allow(unsafe_code)]
fn fake_helper_child() {
    let Some(fd) = std::env::var("IOCOMD_FAKE_HELPER_FD").ok() else {
        return;
    };
    let fd: i32 = fd.parse().unwrap();
    assert!(fd > 2, "the socket must not be a stdio descriptor");
    let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
    assert!(
        target.to_string_lossy().starts_with("socket:"),
        "{}",
        target.display()
    );
    // SAFETY: the descriptor was inherited for exactly this purpose (checked to be an open
    // socket above) and nothing else in this process uses it.
    let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let conn = serve(UnixStream::from(owned)).await;
        // Serve until the client hangs up (the stream ends when the socket closes).
        let mut messages = zbus::MessageStream::from(&conn);
        while messages.next().await.is_some() {}
    });
}

#[tokio::test]
async fn spawned_helper_serves_on_an_inherited_fd() {
    // The child learns the fd through its environment; env(1) sets it, with `{fd}` replaced
    // by the spawn code like in any other argument.
    let exe = std::env::current_exe()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let args = [
        "IOCOMD_FAKE_HELPER_FD={fd}",
        &exe,
        "--exact",
        "fake_helper_child",
        "--ignored",
        "--test-threads=1",
    ];
    let client = HelperClient::connect(&HelperConnection::Spawn {
        program: "/usr/bin/env".into(),
        args: args.map(String::from).to_vec(),
    })
    .await
    .unwrap();
    assert!(client.child_pid().is_some());
    exercise(&client).await;
    // Closing the connection lets the helper exit by itself (no kill needed).
    let status = client.close(Duration::from_secs(30)).await.unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn closed_resolves_when_the_helper_goes_away() {
    let (client, server) = with_p2p_helper().await;
    assert_eq!(client.status().await.unwrap().root, "0 transactions");
    server.close().await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), client.closed())
        .await
        .expect("closed() did not resolve");
    let e = client.status().await.unwrap_err();
    assert!(
        matches!(
            e,
            HelperError::Call {
                method: "Status",
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        client.close(Duration::from_secs(1)).await,
        None,
        "no child to wait for"
    );
}

#[tokio::test]
async fn spawn_failures_are_reported() {
    let e = HelperClient::spawn(std::path::Path::new("/nonexistent/helper"), &[])
        .await
        .unwrap_err();
    assert!(matches!(e, HelperError::Spawn { .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with("cannot start the install helper /nonexistent/helper:"),
        "{e}"
    );
    // A helper that exits at once closes the socket: the handshake fails instead of hanging.
    let e = HelperClient::spawn(std::path::Path::new("/bin/true"), &[])
        .await
        .unwrap_err();
    assert!(matches!(e, HelperError::Connect { .. }), "{e:?}");
}

#[tokio::test]
async fn proxy_works_over_a_bus_and_ignores_signals_from_other_senders() {
    let bus = PrivateBus::start(None);
    assert!(bus.address.starts_with("unix:"), "{}", bus.address);
    let _server = zbus::connection::Builder::address(bus.address.as_str())
        .name("org.iocom.InstallHelper1")
        .serve_at("/org/iocom/InstallHelper1", FakeHelper::default())
        .build()
        .await
        .unwrap();
    let client = HelperClient::connect(&HelperConnection::Bus {
        address: bus.address.clone(),
    })
    .await
    .unwrap();

    exercise(&client).await;

    // Another client on the bus forges signals with the helper's path and interface, before
    // the helper sends its own: the client must only see the helper's.
    let forger = zbus::connection::Builder::address(bus.address.as_str())
        .build()
        .await
        .unwrap();
    let mut events = client.events().await.unwrap();
    // Control: a plain match rule without a sender does see the forged signals.
    let listener = zbus::connection::Builder::address(bus.address.as_str())
        .build()
        .await
        .unwrap();
    let rule = "type='signal',interface='org.iocom.InstallHelper1'";
    let mut unfiltered = zbus::MessageStream::for_match_rule(rule, &listener, None)
        .await
        .unwrap();
    let (path, iface) = ("/org/iocom/InstallHelper1", "org.iocom.InstallHelper1");
    forger
        .emit_signal(
            None::<&str>,
            path,
            iface,
            "Progress",
            &("txn-2", "forged", 1u32, "forged"),
        )
        .await
        .unwrap();
    forger
        .emit_signal(
            None::<&str>,
            path,
            iface,
            "Finished",
            &("txn-2", "ok", "forged", "{}"),
        )
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(30), unfiltered.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let (_, phase, _, _): (String, String, u32, String) = first.body().deserialize().unwrap();
    assert_eq!(
        phase, "forged",
        "the forged signal was delivered on the bus"
    );

    let content = b"second package";
    let id = client
        .install(&package_file(content), &meta(content))
        .await
        .unwrap();
    match next_event(&mut events).await {
        HelperSignal::Progress { txid, phase, .. } => {
            assert_eq!(
                (txid.as_str(), phase),
                (id.as_str(), Some(install_api::Phase::Verify))
            );
        }
        other => panic!("expected the helper's Progress, got {other:?}"),
    }
}
