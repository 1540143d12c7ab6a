//! Benchmark (not a test): the helper's hand-over against plain dpkg, measured in one run.
//!
//! 1. verify + install: a signed package with `IOCOM_BENCH_MIB` MiB (default 256; 1024 for
//!    the 1 GiB figure) of incompressible bytes, taken by the helper (`stage::take`: copy and
//!    single-pass verification, then `txn::run_deferred`: lock, `apt-get --simulate`, space,
//!    cache, journal, `dpkg --install`, commit, receipt) until its result vs a plain
//!    `dpkg --root=… --install` of the same file into another isolated root.
//! 2. hand-over end to end, 64 MiB (`IOCOM_BENCH_E2E_MIB`): what follows the transfer on the
//!    device — the spool's work (copy + SHA-256 + fsync, as iocomd's spool does it) and then
//!    `Install` over a peer-to-peer D-Bus connection to the real service until `Finished` — vs
//!    the raw path: copy + SHA-256 + fsync + `dpkg --install`.
//!
//! 3. streamed hand-over (meta `stream-end`, what iocomd does when the helper takes streams):
//!    the package of (1) and of (2) written into a pipe by a sender thread as fast as the
//!    helper takes it — CRC-16 and the write, as iocomd's stream thread does; the network is
//!    not modelled, so the sender runs at the helper's own pace — then `complete <bytes>`,
//!    `Install` over p2p D-Bus to the real service until `Finished`. Printed: the feed (first
//!    to last byte, and its rate: a transfer slower than that hides the pass entirely), then
//!    after the last byte to the result against a plain `dpkg -i` (the 1 GiB goal), and first
//!    byte to result against the raw path of (2) (the 64 MiB goal).
//!
//! The helper makes its cached copy of the package (the next rollback source) durable after
//! the result ([`txn::CacheSync`]): that fsync is timed apart, printed as `+ cache sync`, and
//! waited for before the next measurement, so it never overlaps one.
//!
//! Every measurement starts after a `sync` (outside the time), so that none pays for the
//! writeback of what an earlier one left dirty. Each comparison runs `IOCOM_BENCH_ROUNDS` (default 3) alternating rounds into fresh roots
//! and prints every round and the median ratio. No sandbox and no systemd (isolated roots):
//! both sides run the same dpkg. `cargo bench -p install-helper --bench handover`.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;
#[path = "../tests/txn_support/mod.rs"]
#[allow(unused_imports)]
mod txn_support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use install_api::{ErrorCode, InstallHelper1Proxy};
use install_helper::auth::AuthConfig;
use install_helper::service::{self, InstallHelper, Transport};
use install_helper::{stage, txn};
use sha2::{Digest, Sha256};
use txn_support::{Signer, World};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let mib = env_usize("IOCOM_BENCH_MIB", 256);
    let e2e_mib = env_usize("IOCOM_BENCH_E2E_MIB", 64);
    let rounds = env_usize("IOCOM_BENCH_ROUNDS", 3).max(1);
    let work = tempfile::tempdir().unwrap();
    let signer = Signer::new(work.path());

    let deb = build(work.path(), "iocom-bench", mib, &signer);
    let big = deb.clone();
    // `IOCOM_BENCH_ONLY=3`: only the streamed hand-over (3).
    let only_streamed = std::env::var("IOCOM_BENCH_ONLY").is_ok_and(|v| v == "3");
    println!(
        "1. verify + install of a signed {mib} MiB package ({} bytes, data.tar.gz -1 of incompressible bytes)",
        std::fs::metadata(&deb).unwrap().len()
    );
    let mut ratios = Vec::new();
    for round in (1..=rounds).filter(|_| !only_streamed) {
        let (w1, w2) = (World::new(), World::new());
        let plain = timed(|| plain_dpkg(&deb, &w1));
        let mut sync = None;
        let mut split = String::new();
        let ours = timed(|| (sync, split) = helper_install(&deb, &signer, &w2));
        let synced = timed(|| sync.map_or((), txn::CacheSync::complete));
        let r = ours.as_secs_f64() / plain.as_secs_f64();
        println!(
            "   round {round}: helper {ours:>8.2?}  plain dpkg -i {plain:>8.2?}  ratio {r:.2}  (+ cache sync {synced:.2?})\n            helper: {split}"
        );
        ratios.push(r);
    }
    println!(
        "   median ratio helper / plain dpkg -i: {:.2}",
        median(ratios)
    );

    let deb = build(work.path(), "iocom-e2e", e2e_mib, &signer);
    println!("2. hand-over end to end, {e2e_mib} MiB: spool + Install over p2p D-Bus to Finished");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut ratios = Vec::new();
    for round in (1..=rounds).filter(|_| !only_streamed) {
        let (w1, w2) = (World::new(), World::new());
        let raw = timed(|| {
            let copy = spool(&deb, w1.tmp.path());
            plain_dpkg(&copy, &w1);
        });
        let ours = timed(|| rt.block_on(handover(&deb, &signer, &w2)));
        let synced = timed(|| wait_gone(&settings(&w2).paths.journal()));
        let r = ours.as_secs_f64() / raw.as_secs_f64();
        println!(
            "   round {round}: hand-over {ours:>8.2?}  raw copy+sha256+fsync+dpkg -i {raw:>8.2?}  ratio {r:.2}  (+ cache sync {synced:.2?})"
        );
        ratios.push(r);
    }
    println!("   median ratio hand-over / raw: {:.2}", median(ratios));

    for (deb, mib) in [(&big, mib), (&deb, e2e_mib)] {
        println!(
            "3. streamed hand-over, {mib} MiB: a sender feeds a pipe, Install with stream-end to Finished"
        );
        let (mut after_ratios, mut whole_ratios) = (Vec::new(), Vec::new());
        for round in 1..=rounds {
            let (w1, w2, w3) = (World::new(), World::new(), World::new());
            let plain = timed(|| plain_dpkg(deb, &w1));
            let raw = timed(|| {
                let copy = spool(deb, w3.tmp.path());
                plain_dpkg(&copy, &w3);
            });
            nix::unistd::sync();
            let (feed, after) = rt.block_on(streamed(deb, &signer, &w2));
            let synced = timed(|| wait_gone(&settings(&w2).paths.journal()));
            let rate = std::fs::metadata(deb).unwrap().len() as f64 / feed.as_secs_f64() / 1e6;
            let (ra, rw) = (
                after.as_secs_f64() / plain.as_secs_f64(),
                (feed + after).as_secs_f64() / raw.as_secs_f64(),
            );
            println!(
                "   round {round}: feed {feed:>8.2?} ({rate:.0} MB/s)  after the last byte {after:>8.2?}  plain dpkg -i {plain:>8.2?}  ratio {ra:.2}\n            first byte to result {:>8.2?}  raw copy+sha256+fsync+dpkg -i {raw:>8.2?}  ratio {rw:.2}  (+ cache sync {synced:.2?})",
                feed + after
            );
            after_ratios.push(ra);
            whole_ratios.push(rw);
        }
        println!(
            "   median ratios: after the last byte / plain dpkg -i {:.2}; first byte to result / raw {:.2}",
            median(after_ratios),
            median(whole_ratios)
        );
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Times `f`, after writing back what earlier steps left dirty (so that no measurement pays
/// for the writeback of another).
fn timed(f: impl FnOnce()) -> Duration {
    nix::unistd::sync();
    let t = Instant::now();
    f();
    t.elapsed()
}

/// A signed package `name` 1.0 with one file of `mib` MiB of pseudo-random bytes.
fn build(dir: &Path, name: &str, mib: usize, signer: &Signer) -> PathBuf {
    let tree = dir.join(format!("tree-{name}"));
    let debian = tree.join("DEBIAN");
    std::fs::create_dir_all(&debian).unwrap();
    std::fs::write(
        debian.join("control"),
        format!(
            "Package: {name}\nVersion: 1.0\nArchitecture: all\nInstalled-Size: {}\n\
             Maintainer: Bench <bench@example.invalid>\nDescription: bench package\n",
            mib * 1024 + 4
        ),
    )
    .unwrap();
    let data_dir = tree.join(format!("usr/share/{name}"));
    std::fs::create_dir_all(&data_dir).unwrap();
    let mut f = std::fs::File::create(data_dir.join("blob")).unwrap();
    let mut seed = 0x5eed_u64;
    let mut chunk = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for b in chunk.chunks_exact_mut(8) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            b.copy_from_slice(&seed.to_le_bytes());
        }
        f.write_all(&chunk).unwrap();
    }
    drop(f);
    std::fs::set_permissions(
        data_dir.join("blob"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let out = dir.join(format!("{name}_1.0_all.deb"));
    let st = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zgzip", "-z1", "--build"])
        .arg(&tree)
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "dpkg-deb --build failed");
    std::fs::remove_dir_all(&tree).unwrap();
    signer.sign(&out)
}

/// `dpkg --install` into a fresh isolated root, the flags the helper uses.
fn plain_dpkg(deb: &Path, w: &World) {
    let st = Command::new("dpkg")
        .arg(format!("--root={}", w.root.display()))
        .arg(format!("--log={}", w.tmp.path().join("dpkg.log").display()))
        .args(["--force-confdef", "--force-confold", "--install"])
        .arg(deb)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "plain dpkg --install failed");
}

fn settings(w: &World) -> install_helper::paths::Settings {
    let mut s = w.settings();
    s.max_package_size = 4 << 30;
    s
}

/// Waits until the service's worker removed the journal: its transaction's cache sync is done.
fn wait_gone(journal: &Path) {
    let t = Instant::now();
    while journal.exists() {
        assert!(t.elapsed() < Duration::from_secs(120), "the journal stays");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The helper's path, in process: take (copy + verify) and the transaction until its result;
/// returns the cache sync that follows the result, and where the time went (the pass, then
/// each phase the transaction reported, until its result).
fn helper_install(deb: &Path, signer: &Signer, w: &World) -> (Option<txn::CacheSync>, String) {
    let start = Instant::now();
    let s = settings(w);
    let verifier = signer.verifier().for_target(&s.paths);
    let txid = txn::new_txid();
    let taken = stage::take(
        std::fs::File::open(deb).unwrap(),
        &s.paths.staging_dir(),
        &txid,
        (s.max_package_size, 0),
        &verifier,
        // As the service: the pass's progress at the default rate (nobody listens here).
        stage::Watch {
            advisory_size: None,
            min_interval: s.progress_interval,
            report: &mut |_| {},
        },
    )
    .unwrap();
    let mut marks = vec![("pass".to_string(), Instant::now())];
    let mut progress = |p: install_api::Phase, _: u32, _: &str| {
        let name = format!("{p:?}").to_lowercase();
        if marks.last().is_none_or(|(n, _)| *n != name) {
            marks.push((name, Instant::now()));
        }
    };
    let mut env = txn::Env {
        settings: &s,
        systemd: None,
        progress: &mut progress,
        healthy: None,
    };
    let (r, sync) = txn::run_deferred(&mut env, &verifier, &txid, taken);
    assert_eq!(r.code, ErrorCode::Ok, "{r:#?}");
    let end = Instant::now();
    let mut split = vec![format!("pass {:.2?}", marks[0].1 - start)];
    for (i, (name, at)) in marks.iter().enumerate().skip(1) {
        let until = marks.get(i + 1).map_or(end, |m| m.1);
        split.push(format!("{name} {:.2?}", until - *at));
    }
    (sync, split.join(", "))
}

/// The spool's work on a received package: copy, SHA-256, fsync (file and directory).
fn spool(deb: &Path, dir: &Path) -> PathBuf {
    let dest = dir.join("spooled.deb");
    let mut src = std::fs::File::open(deb).unwrap();
    let mut out = std::fs::File::create(&dest).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = src.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        out.write_all(&buf[..n]).unwrap();
    }
    out.sync_all().unwrap();
    std::fs::File::open(dir).unwrap().sync_all().unwrap();
    std::hint::black_box(h.finalize());
    dest
}

/// A service over p2p D-Bus for `w` and a proxy to it (the server connection is returned to
/// be kept).
async fn serve(signer: &Signer, w: &World) -> (zbus::Connection, zbus::Connection) {
    let s = settings(w);
    let verifier = Arc::new(signer.verifier().for_target(&s.paths));
    let helper = InstallHelper::new(
        s,
        verifier,
        AuthConfig {
            allowed_uids: vec![nix::unistd::getuid().as_raw()],
            polkit: false,
        },
    );
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let (server, conn) = tokio::join!(
        service::serve(helper, Transport::P2p(a)),
        zbus::connection::Builder::unix_stream(b).p2p().build()
    );
    (server.unwrap(), conn.unwrap())
}

/// Waits for the `Finished` of `txid`, which must be `ok`.
async fn finished_ok(finished: &mut install_api::proxy::FinishedStream, txid: &str) {
    loop {
        let sig = finished.next().await.unwrap();
        let a = sig.args().unwrap();
        if a.txid == txid {
            assert_eq!(a.code, "ok", "{}", a.result_json);
            return;
        }
    }
}

/// The streamed hand-over of `deb`: (first to last byte fed, last byte to `Finished`).
async fn streamed(deb: &Path, signer: &Signer, w: &World) -> (Duration, Duration) {
    let (_server, conn) = serve(signer, w).await;
    let proxy = InstallHelper1Proxy::builder(&conn).build().await.unwrap();
    let mut finished = proxy.receive_finished().await.unwrap();
    let (data_r, mut data_w) = std::io::pipe().unwrap();
    let (end_r, mut end_w) = std::io::pipe().unwrap();
    // As iocomd's package pipe.
    let _ = nix::fcntl::fcntl(&data_w, nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20));
    let deb = deb.to_path_buf();
    let start = Instant::now();
    let feeder = std::thread::spawn(move || {
        let mut src = std::fs::File::open(&deb).unwrap();
        let mut crc = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc16Modbus);
        let (mut buf, mut sent) = (vec![0u8; 64 << 10], 0u64);
        loop {
            let n = src.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            crc.update(&buf[..n]);
            data_w.write_all(&buf[..n]).unwrap();
            sent += n as u64;
        }
        std::hint::black_box(crc.finalize());
        drop(data_w);
        end_w
            .write_all(format!("complete {sent}\n").as_bytes())
            .unwrap();
        Instant::now()
    });
    let meta = HashMap::from([(
        install_api::meta::STREAM_END,
        zbus::Variant::from(zbus::Fd::from(&end_r)),
    )]);
    let txid = proxy.install(zbus::Fd::from(&data_r), meta).await.unwrap();
    drop((data_r, end_r));
    finished_ok(&mut finished, &txid).await;
    let end = Instant::now();
    let last_byte = feeder.join().unwrap();
    (last_byte - start, end - last_byte)
}

/// The spool's work, then `Install` over p2p D-Bus to the real service until `Finished`.
async fn handover(deb: &Path, signer: &Signer, w: &World) {
    let (_server, conn) = serve(signer, w).await;
    let proxy = InstallHelper1Proxy::builder(&conn).build().await.unwrap();
    let mut finished = proxy.receive_finished().await.unwrap();
    let spool_dir = w.tmp.path().join("spool");
    std::fs::create_dir_all(&spool_dir).unwrap();
    let spooled = spool(deb, &spool_dir);
    let file = std::fs::File::open(&spooled).unwrap();
    let txid = proxy
        .install(zbus::Fd::from(&file), HashMap::new())
        .await
        .unwrap();
    finished_ok(&mut finished, &txid).await;
}
