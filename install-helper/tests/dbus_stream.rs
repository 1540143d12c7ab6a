//! `Install` of a streamed package (meta `stream-end`) over a peer-to-peer D-Bus connection:
//! the package arrives through a pipe while a sender writes it, and only a stream the sender
//! confirms `complete <bytes>` is taken. An unconfirmed stream (a transfer that dropped or
//! failed its CRC) leaves no result, no receipt, no copy, and the helper free; a stream the
//! verifier refuses early is still read to its end, and refused only once confirmed.

mod common;
mod txn_support;

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use install_api::{ErrorCode, InstallHelper1Proxy};
use install_helper::auth::{AuthConfig, ServiceError};
use install_helper::service::{self, InstallHelper, Transport};
use sha2::{Digest, Sha256};
use txn_support::*;

const LONG: Duration = Duration::from_secs(120);

async fn connect(helper: InstallHelper) -> (zbus::Connection, zbus::Connection) {
    let (a, b) = UnixStream::pair().unwrap();
    let (server, conn) = tokio::join!(
        service::serve(helper, Transport::P2p(a)),
        zbus::connection::Builder::unix_stream(b).p2p().build()
    );
    (server.unwrap(), conn.unwrap())
}

fn helper(w: &World, signer: &Signer) -> InstallHelper {
    let auth = AuthConfig {
        allowed_uids: vec![0],
        polkit: false,
    };
    InstallHelper::new(w.settings(), Arc::new(signer.verifier()), auth)
}

/// How the sender ends the stream.
#[derive(Clone, Copy)]
enum End {
    /// `complete <bytes>` after all of them.
    Complete,
    /// Both pipes closed after `n` bytes, no word (a dropped transfer).
    DropAfter(usize),
    /// All bytes, then the end closed without a word (a CRC mismatch).
    Silent,
}

/// Calls `Install` with a pipe that a thread feeds with `bytes` in 64 KiB writes, ending as
/// `end` says; returns the answer and how many bytes the helper read.
async fn install_streamed(
    proxy: &InstallHelper1Proxy<'_>,
    bytes: Vec<u8>,
    end: End,
) -> (zbus::Result<String>, usize) {
    let (data_r, mut data_w) = std::io::pipe().unwrap();
    let (end_r, mut end_w) = std::io::pipe().unwrap();
    let feeder = std::thread::spawn(move || {
        let n = match end {
            End::DropAfter(n) => n,
            _ => bytes.len(),
        };
        let mut sent = 0;
        for c in bytes[..n].chunks(64 << 10) {
            if data_w.write_all(c).is_err() {
                return sent;
            }
            sent += c.len();
        }
        drop(data_w);
        if let End::Complete = end {
            end_w
                .write_all(format!("complete {sent}\n").as_bytes())
                .unwrap();
        }
        sent
    });
    let meta = HashMap::from([
        ("origin", zbus::Variant::from("test")),
        (
            install_api::meta::STREAM_END,
            zbus::Variant::from(zbus::Fd::from(&end_r)),
        ),
    ]);
    let r = proxy.install(zbus::Fd::from(&data_r), meta).await;
    drop((data_r, end_r));
    (r, feeder.join().unwrap())
}

/// The next `Finished`, which must be `code` for `txid`.
async fn finished_as(
    finished: &mut install_api::proxy::FinishedStream,
    txid: &str,
    code: &str,
) -> String {
    let sig = tokio::time::timeout(LONG, finished.next())
        .await
        .unwrap()
        .unwrap();
    let args = sig.args().unwrap();
    assert_eq!((args.txid.as_str(), args.code.as_str()), (txid, code));
    args.result_json.clone()
}

/// `Status()`, decoded.
async fn status(proxy: &InstallHelper1Proxy<'_>) -> install_api::HelperStatus {
    serde_json::from_str(&proxy.status().await.unwrap()).unwrap()
}

fn code_of(e: &zbus::Error) -> Option<ErrorCode> {
    match e {
        zbus::Error::MethodError(name, _, _) => ServiceError::code_from_name(name.as_str()),
        _ => None,
    }
}

fn staged(w: &World) -> usize {
    std::fs::read_dir(w.state.join("staging")).map_or(0, |r| r.count())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_confirmed_stream_installs_and_names_the_streamed_bytes() {
    let w = World::new();
    let signer = Signer::new(w.tmp.path());
    let deb = signer.sign(&Pkg::new("iocom-app", "1.0").payload(3 << 20).build(&w.debs));
    let bytes = std::fs::read(&deb).unwrap();
    let (_server, conn) = connect(helper(&w, &signer)).await;
    let proxy = InstallHelper1Proxy::builder(&conn).build().await.unwrap();
    let status = status(&proxy).await;
    assert!(status.has(install_api::FEATURE_STREAM_END), "{status:?}");
    let mut finished = proxy.receive_finished().await.unwrap();

    let (r, sent) = install_streamed(&proxy, bytes.clone(), End::Complete).await;
    let txid = r.unwrap();
    assert_eq!(sent, bytes.len());
    let result = finished_as(&mut finished, &txid, "ok").await;
    let result: serde_json::Value = serde_json::from_str(&result).unwrap();
    assert_eq!(result["sha256"], hex(&Sha256::digest(&bytes)));
    assert_eq!(result["signer"], signer.key.fingerprint.as_str());
    assert_eq!(
        dpkg_status(&w.root, "iocom-app"),
        Some(("installed".into(), "1.0".into()))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unconfirmed_stream_leaves_nothing_and_the_helper_free() {
    let w = World::new();
    let signer = Signer::new(w.tmp.path());
    let deb = signer.sign(&Pkg::new("iocom-app", "1.0").payload(2 << 20).build(&w.debs));
    let bytes = std::fs::read(&deb).unwrap();
    let before = tree_hash(&w.root);
    let (_server, conn) = connect(helper(&w, &signer)).await;
    let proxy = InstallHelper1Proxy::builder(&conn).build().await.unwrap();

    // Dropped half-way, and whole but never confirmed (the sender's CRC did not match).
    for (end, read) in [
        (End::DropAfter(1 << 20), 1 << 20),
        (End::Silent, bytes.len()),
    ] {
        let (r, sent) = install_streamed(&proxy, bytes.clone(), end).await;
        let e = r.unwrap_err();
        assert_eq!(code_of(&e), Some(ErrorCode::BadRequest), "{e}");
        assert!(
            e.to_string().contains(&format!("after {read} bytes")),
            "{e}"
        );
        assert!(
            e.to_string().contains("without the sender's completion"),
            "{e}"
        );
        assert_eq!(sent, read);
        assert_eq!(staged(&w), 0);
        let status = status(&proxy).await;
        assert!(
            status.current.is_none() && status.last.is_none(),
            "{status:?}"
        );
    }
    assert_eq!(tree_hash(&w.root), before);
    assert!(!w.state.join("receipts.jsonl").exists());

    // Free at once: the same bytes confirmed install.
    let mut finished = proxy.receive_finished().await.unwrap();
    let (r, _) = install_streamed(&proxy, bytes, End::Complete).await;
    let txid = r.unwrap();
    finished_as(&mut finished, &txid, "ok").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_refused_from_its_first_bytes_is_read_to_its_end_first() {
    let w = World::new();
    let signer = Signer::new(w.tmp.path());
    let (_server, conn) = connect(helper(&w, &signer)).await;
    let proxy = InstallHelper1Proxy::builder(&conn).build().await.unwrap();
    // Not an ar archive: the verifier decides at once, the sender still writes all 3 MiB.
    let junk = vec![0x5a_u8; 3 << 20];

    let (r, sent) = install_streamed(&proxy, junk.clone(), End::Silent).await;
    let e = r.unwrap_err();
    assert_eq!(code_of(&e), Some(ErrorCode::BadRequest), "{e}");
    assert_eq!(sent, junk.len(), "the helper stopped reading early");
    assert!(!w.state.join("receipts.jsonl").exists());

    let mut finished = proxy.receive_finished().await.unwrap();
    let (r, sent) = install_streamed(&proxy, junk.clone(), End::Complete).await;
    let txid = r.unwrap();
    assert_eq!(sent, junk.len());
    finished_as(&mut finished, &txid, "bad-archive").await;
    assert_eq!(staged(&w), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_end_that_is_not_a_file_descriptor_is_a_bad_request() {
    let w = World::new();
    let signer = Signer::new(w.tmp.path());
    let (_server, conn) = connect(helper(&w, &signer)).await;
    let proxy = InstallHelper1Proxy::builder(&conn).build().await.unwrap();
    let (data_r, _data_w) = std::io::pipe().unwrap();
    let meta = HashMap::from([(install_api::meta::STREAM_END, zbus::Variant::from("fd 3"))]);
    let e = proxy
        .install(zbus::Fd::from(&data_r), meta)
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), Some(ErrorCode::BadRequest), "{e}");
    assert!(e.to_string().contains("stream-end"), "{e}");
    let status = status(&proxy).await;
    assert!(status.current.is_none(), "{status:?}");
}
