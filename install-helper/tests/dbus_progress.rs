//! The progress of the pass that copies and verifies a package, over a peer-to-peer
//! connection: while `Install` has not returned, the helper signals `Progress` in the `verify`
//! phase with a percentage that follows the bytes (of the file's size; of the advisory `size`
//! for a pipe), in order and rate-limited, and `Status()` shows it too.

mod common;
mod txn_support;

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use install_api::{InstallHelper1Proxy, Phase};
use install_helper::auth::AuthConfig;
use install_helper::service::{self, InstallHelper, Transport};
use txn_support::*;

const LONG: Duration = Duration::from_secs(120);

/// One `Progress` signal as received.
#[derive(Debug, Clone)]
struct Seen {
    txid: String,
    phase: String,
    percent: u32,
    message: String,
}

async fn connect(helper: InstallHelper) -> (zbus::Connection, zbus::Connection) {
    let (a, b) = UnixStream::pair().unwrap();
    let (server, conn) = tokio::join!(
        service::serve(helper, Transport::P2p(a)),
        zbus::connection::Builder::unix_stream(b).p2p().build()
    );
    (server.unwrap(), conn.unwrap())
}

fn helper(w: &World, signer: &Signer, interval: Duration) -> InstallHelper {
    let mut settings = w.settings();
    settings.progress_interval = interval;
    InstallHelper::new(
        settings,
        Arc::new(signer.verifier()),
        AuthConfig {
            allowed_uids: vec![0],
            polkit: false,
        },
    )
}

/// Calls `Install` with `fd` and collects every `Progress` that arrives before its answer
/// (the helper sends them before the answer on the same connection, and the stream is polled
/// first).
async fn install_collecting(
    proxy: &InstallHelper1Proxy<'_>,
    fd: zbus::Fd<'_>,
    meta: HashMap<&str, zbus::Variant<'_>>,
) -> (String, Vec<Seen>) {
    let mut progress = proxy.receive_progress().await.unwrap();
    let install = proxy.install(fd, meta);
    tokio::pin!(install);
    let mut seen = Vec::new();
    let until = tokio::time::Instant::now() + LONG;
    let txid = loop {
        tokio::select! {
            biased;
            Some(p) = progress.next() => {
                let a = p.args().unwrap();
                seen.push(Seen {
                    txid: a.txid.clone(),
                    phase: a.phase.clone(),
                    percent: a.percent,
                    message: a.message.clone(),
                });
            }
            r = &mut install => break r.unwrap(),
            _ = tokio::time::sleep_until(until) => panic!("Install did not answer"),
        }
    };
    (txid, seen)
}

/// The pass's own reports: in the `verify` phase, of `txid`, strictly increasing inside the
/// phase's range, ending at its end with the whole package checked. (The transaction's worker
/// starts before `Install` answers: its first signals may follow.)
fn check_pass(seen: &[Seen], txid: &str) -> Vec<u32> {
    let end = seen
        .iter()
        .position(|s| s.message.starts_with("checked the package"))
        .expect("no end of the pass before Install answered");
    let seen = &seen[..=end];
    let (lo, hi) = Phase::Verify.range();
    for s in seen {
        assert_eq!(
            (s.txid.as_str(), s.phase.as_str()),
            (txid, "verify"),
            "{s:?}"
        );
        assert!((lo..=hi).contains(&s.percent), "{s:?}");
    }
    let pcts: Vec<u32> = seen.iter().map(|s| s.percent).collect();
    assert!(pcts.windows(2).all(|w| w[0] < w[1]), "{pcts:?}");
    let last = seen.last().expect("no progress before Install answered");
    assert_eq!(last.percent, hi, "{seen:?}");
    assert!(last.message.starts_with("checked the package"), "{last:?}");
    pcts
}

#[tokio::test(flavor = "multi_thread")]
async fn a_multi_mib_file_is_verified_with_increasing_percentages_before_install_answers() {
    let w = World::new();
    let signer = Signer::new(w.tmp.path());
    let deb = signer.sign(&Pkg::new("iocom-big", "1.0").payload(6 << 20).build(&w.debs));
    let size = std::fs::metadata(&deb).unwrap().len();
    // No rate limit: every integer percent of the pass is signalled.
    let (_server, conn) = connect(helper(&w, &signer, Duration::ZERO)).await;
    let proxy = InstallHelper1Proxy::builder(&conn).build().await.unwrap();
    let mut finished = proxy.receive_finished().await.unwrap();
    let file = std::fs::File::open(&deb).unwrap();
    let (txid, seen) = install_collecting(&proxy, zbus::Fd::from(&file), HashMap::new()).await;
    let pcts = check_pass(&seen, &txid);
    // 256 KiB reads of a 6 MiB package: a report for (nearly) every read, each a step of
    // about 4 % of the pass, i.e. more than one overall percent.
    assert!(pcts.len() >= 15, "{pcts:?}");
    let mib = size as f64 / (1024.0 * 1024.0);
    let middle = &seen[seen.len() / 2].message;
    assert!(
        middle.starts_with("verifying the package: ")
            && middle.ends_with(&format!("of {mib:.1} MiB")),
        "{middle}"
    );
    let done = tokio::time::timeout(LONG, finished.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.args().unwrap().code, "ok");
    assert_eq!(
        dpkg_status(&w.root, "iocom-big"),
        Some(("installed".into(), "1.0".into()))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pipe_is_measured_by_its_advisory_size_at_most_ten_a_second_and_status_shows_it() {
    let w = World::new();
    let signer = Signer::new(w.tmp.path());
    let deb = signer.sign(
        &Pkg::new("iocom-piped", "1.0")
            .payload(4 << 20)
            .build(&w.debs),
    );
    let bytes = std::fs::read(&deb).unwrap();
    let size = bytes.len() as u64;
    let (_server, conn) = connect(helper(&w, &signer, Duration::from_millis(100))).await;
    let proxy = InstallHelper1Proxy::builder(&conn).build().await.unwrap();
    let (r, pipe) = std::io::pipe().unwrap();
    // The package arrives in 16 pieces, 80 ms apart (about 1.3 s in all).
    let writer = std::thread::spawn(move || {
        let mut pipe = pipe;
        for piece in bytes.chunks(bytes.len().div_ceil(16)) {
            std::thread::sleep(Duration::from_millis(80));
            pipe.write_all(piece).unwrap();
        }
    });
    let meta = HashMap::from([(install_api::meta::SIZE, zbus::Variant::from(size))]);
    let t0 = Instant::now();
    let during = async {
        // Halfway through, the running transaction shows the pass's progress.
        tokio::time::sleep(Duration::from_millis(700)).await;
        serde_json::from_str::<serde_json::Value>(&proxy.status().await.unwrap()).unwrap()
    };
    let ((txid, seen), st) =
        tokio::join!(install_collecting(&proxy, zbus::Fd::from(&r), meta), during);
    let elapsed = t0.elapsed();
    writer.join().unwrap();
    let pcts = check_pass(&seen, &txid);
    assert!(pcts.len() >= 5, "{pcts:?}");
    // Rate-limited: not more than one report per 100 ms (plus the first and the last).
    let bound = elapsed.as_millis() as usize / 100 + 2;
    assert!(pcts.len() <= bound, "{} reports in {elapsed:?}", pcts.len());
    assert!(seen[1].message.contains(" of about "), "{:?}", seen[1]);
    let (lo, hi) = Phase::Verify.range();
    assert_eq!(st["current"]["txid"], txid.as_str(), "{st}");
    assert_eq!(st["current"]["phase"], "verify", "{st}");
    let shown = st["current"]["percent"].as_u64().unwrap() as u32;
    assert!(shown > lo && shown < hi, "{st}");
    assert!(pcts.contains(&shown), "{shown} not among {pcts:?}");
}
