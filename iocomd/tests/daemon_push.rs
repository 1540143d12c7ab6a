//! Loopback tests of the daemon: a real install helper child installing with dpkg into an
//! isolated root, packages built with dpkg-deb and signed with debsigs, pushed over IOCOM by a
//! controller built on `ControllerEndpoint`.

mod daemon_support;

use std::path::PathBuf;

use daemon_support::{Ctl, Daemon, Source, Tls, WAIT, build_package, pseudo_random, push};
use iocomd::proto::stream::controller::Progress;
use iocomd::status::{DaemonCode, UpdState, tod_err};

const SAMPLE: &str = "iocom-demo-hello";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_package_is_installed_and_reported() {
    let d = Daemon::start(|_| {}).await;
    let bytes = std::fs::read(&d.env.sample_package).unwrap();
    let (p, st, tod) = push(d.addr, bytes.clone()).await;
    assert!(
        matches!(p, Progress::Completed { bytes: b, .. } if b == bytes.len() as u64),
        "{p:?}"
    );
    assert_eq!(st.code, "ok", "{st:?}");
    assert_eq!(st.result, 0);
    assert_eq!(st.seq, 1);
    assert_eq!(st.pkg, SAMPLE);
    assert_eq!(st.ver, "1.0");
    assert_eq!(st.inst_ver, "1.0");
    assert_eq!(st.bytes as usize, bytes.len());
    assert_eq!(tod, Some(tod_err::COMPLETED));
    assert_eq!(d.installed(SAMPLE).as_deref(), Some("1.0"));
    assert!(d.spool_files().is_empty(), "{:?}", d.spool_files());
    // The list of managed packages follows the result.
    let list = st.packages.entries();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].name, SAMPLE);
    assert_eq!(list[0].version.as_deref(), Some("1.0"));
    assert_eq!(list[0].last_result.as_deref(), Some("ok"));
    assert!(list[0].last_time.is_some_and(|t| t > 1_700_000_000));

    // The same version again: the helper refuses it, nothing changes.
    let (_, st, tod) = push(d.addr, bytes).await;
    assert_eq!(
        (st.code.as_str(), st.result, st.seq),
        ("not-newer", 32, 2),
        "{st:?}"
    );
    // ispy shows "failed: program installation failed" for it.
    assert_eq!(tod, Some(tod_err::PROGRAM_INSTALLATION_FAILED));
    assert_eq!(d.installed(SAMPLE).as_deref(), Some("1.0"));
    let list = st.packages.entries();
    assert_eq!(
        (list[0].version.as_deref(), list[0].last_result.as_deref()),
        (Some("1.0"), Some("not-newer"))
    );
    // The package list names what is installed, not only the last result's package.
    assert_eq!(st.inst_ver, "1.0", "{st:?}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_the_policy_refuses_is_stopped_after_its_head() {
    let d = Daemon::start(|_| {}).await;
    let pkg = build_package(&d.env, "iocom-test-early", "1.0", 3 << 20);
    let bytes = std::fs::read(&pkg).unwrap();
    let (p, st, _) = push(d.addr, bytes.clone()).await;
    assert!(matches!(p, Progress::Completed { .. }), "{p:?}");
    assert_eq!(st.code, "ok", "{st:?}");
    // The same version again: refused by the helper's rules from the control member at the
    // head of the stream, long before the 3 MiB have arrived.
    let (p, st, tod) = push(d.addr, bytes.clone()).await;
    assert!(!matches!(p, Progress::Completed { .. }), "{p:?}");
    assert_eq!((st.code.as_str(), st.result), ("not-newer", 32), "{st:?}");
    assert!(st.msg.contains("(refused from its first"), "{}", st.msg);
    assert!(
        (st.bytes as usize) < bytes.len() / 4,
        "{} of {}",
        st.bytes,
        bytes.len()
    );
    assert_eq!(tod, Some(tod_err::PROGRAM_INSTALLATION_FAILED));
    assert_eq!(
        (st.pkg.as_str(), st.inst_ver.as_str()),
        ("iocom-test-early", "1.0")
    );
    assert!(d.spool_files().is_empty(), "{:?}", d.spool_files());
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_transfer_is_a_crc_error_and_the_next_push_works() {
    let d = Daemon::start(|_| {}).await;
    let pkg = build_package(&d.env, "iocom-test-crc", "1.0", 64 << 10);
    let bytes = std::fs::read(&pkg).unwrap();
    let mut c = Ctl::connect(d.addr, "gina", None).await;
    c.wait_ready().await;
    c.corrupt = true;
    let mut src = Source {
        data: bytes.clone(),
        pos: 0,
        hold_at: None,
    };
    let p = c.upload(&mut src, None).await.unwrap();
    assert!(!c.corrupt, "nothing was corrupted");
    assert!(matches!(p, Progress::Completed { .. }), "{p:?}");
    let st = c
        .wait_status(|s| s.seq == 1 && s.state == UpdState::Idle)
        .await;
    assert_eq!(st.code, "crc-mismatch", "{st:?}");
    assert_eq!(st.result, DaemonCode::CrcMismatch.number());
    assert_eq!(c.wait_final_tod_err().await, Some(tod_err::CHECKSUM_ERROR));
    assert!(d.spool_files().is_empty());
    assert_eq!(d.installed("iocom-test-crc"), None);
    c.disconnect();

    let (_, st, _) = push(d.addr, bytes).await;
    assert_eq!(st.code, "ok", "{st:?}");
    assert_eq!(d.installed("iocom-test-crc").as_deref(), Some("1.0"));
    d.stop().await;
}

/// Files in the helper's staging directory (its copy of a package being taken).
fn staged(d: &Daemon) -> Vec<PathBuf> {
    std::fs::read_dir(d.env.helper_state.join("staging"))
        .map(|r| r.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

/// A controller drops its connection at 1 MiB of 3: `interrupted`, nothing left behind, and
/// the next push installs. Spooled: the partial file in the spool goes. Streamed: the spool
/// is never used, the helper's partial copy goes and it records nothing (no receipt, no
/// last result), and it is free for the next push at once.
async fn dropped_controller(stream: bool) {
    let d = Daemon::start(|s| s.spool.stream_to_helper = stream).await;
    let pkg = build_package(&d.env, "iocom-test-big", "1.0", 3 << 20);
    let bytes = std::fs::read(&pkg).unwrap();
    let mut watcher = Ctl::connect(d.addr, "gina", None).await;
    watcher.wait_ready().await;

    let mut c = Ctl::connect(d.addr, "gina", None).await;
    c.wait_ready().await;
    let mut src = Source {
        data: bytes.clone(),
        pos: 0,
        hold_at: Some(1 << 20),
    };
    assert_eq!(c.upload(&mut src, Some(1 << 20)).await, None);
    watcher
        .wait_status(|s| s.state == UpdState::Receiving && s.bytes > 0)
        .await;
    if stream {
        assert!(d.spool_files().is_empty(), "{:?}", d.spool_files());
        assert_eq!(staged(&d).len(), 1, "the helper's copy while receiving");
    } else {
        assert_eq!(d.spool_files().len(), 1, "a partial file while receiving");
        assert!(staged(&d).is_empty(), "{:?}", staged(&d));
    }
    c.disconnect();
    let st = watcher.wait_status(|s| s.seq == 1).await;
    assert_eq!(st.code, "interrupted", "{st:?}");
    assert_eq!(st.state, UpdState::Idle);
    assert!(d.spool_files().is_empty(), "{:?}", d.spool_files());
    assert_eq!(d.installed("iocom-test-big"), None);
    let until = std::time::Instant::now() + WAIT;
    while !staged(&d).is_empty() {
        assert!(std::time::Instant::now() < until, "left {:?}", staged(&d));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let receipts = d.env.helper_state.join("receipts.jsonl");
    let n = std::fs::read_to_string(&receipts).map_or(0, |r| r.lines().count());
    assert_eq!(n, 0, "a receipt for an interrupted push");

    let (_, st, tod) = push(d.addr, bytes).await;
    assert_eq!(st.code, "ok", "{st:?}");
    assert_eq!(st.seq, 2, "{st:?}");
    assert_eq!(tod, Some(tod_err::COMPLETED));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_controller_leaves_nothing_behind() {
    dropped_controller(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_controller_of_a_streamed_push_leaves_the_helper_nothing() {
    dropped_controller(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_push_is_refused_while_the_first_runs() {
    let d = Daemon::start(|_| {}).await;
    let bytes = std::fs::read(&d.env.sample_package).unwrap();
    let mut first = Ctl::connect(d.addr, "gina", None).await;
    first.wait_ready().await;
    let mut src = Source {
        data: bytes.clone(),
        pos: 0,
        hold_at: Some(bytes.len() / 2),
    };
    assert_eq!(first.upload(&mut src, Some(bytes.len() / 2)).await, None);
    first
        .wait_status(|s| s.state == UpdState::Receiving && s.bytes > 0)
        .await;

    let mut second = Ctl::connect(d.addr, "gina", None).await;
    second.wait_ready().await;
    let mut src2 = Source {
        data: bytes.clone(),
        pos: 0,
        hold_at: None,
    };
    second.ep.start_upload(1).unwrap();
    let until = std::time::Instant::now() + WAIT;
    while second.tod_err() != Some(tod_err::BUSY) {
        assert!(std::time::Instant::now() < until, "no busy refusal");
        let _ = second
            .ep
            .poll_transfer(std::time::Instant::now(), &mut src2, &mut NoSinkT);
        second.pump(std::time::Duration::from_millis(50)).await;
        second_transmit(&mut second).await;
    }
    assert_eq!(second.status().unwrap().state, UpdState::Receiving);
    second.disconnect();

    // The first push is unaffected and completes.
    src.hold_at = None;
    let p = first.upload_continue(&mut src).await;
    assert!(matches!(p, Progress::Completed { .. }), "{p:?}");
    let st = first.wait_status(|s| s.seq == 1).await;
    assert_eq!(st.code, "ok", "{st:?}");
    assert_eq!(d.installed(SAMPLE).as_deref(), Some("1.0"));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_package_is_refused() {
    let d = Daemon::start(|s| s.spool.max_package_size = 64 << 10).await;
    let (p, st, tod) = push(d.addr, pseudo_random(200 << 10, 5)).await;
    assert_eq!(st.code, "too-large", "{st:?} {p:?}");
    assert_eq!(st.result, DaemonCode::TooLarge.number());
    assert_eq!(tod, Some(tod_err::TOO_LARGE));
    assert!(d.spool_files().is_empty());
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_tcp_pushes_are_refused_unless_allowed() {
    let d = Daemon::start(|s| s.allow_plain_tcp_push = false).await;
    let bytes = std::fs::read(&d.env.sample_package).unwrap();
    let mut c = Ctl::connect(d.addr, "gina", None).await;
    c.wait_ready().await;
    c.ep.start_upload(1).unwrap();
    let mut src = Source {
        data: bytes,
        pos: 0,
        hold_at: None,
    };
    let until = std::time::Instant::now() + WAIT;
    while c.tod_err() != Some(tod_err::NO_ACCESS_RIGHT) {
        assert!(std::time::Instant::now() < until, "no refusal");
        let _ =
            c.ep.poll_transfer(std::time::Instant::now(), &mut src, &mut NoSinkT);
        c.pump(std::time::Duration::from_millis(50)).await;
        second_transmit(&mut c).await;
    }
    assert_eq!(c.status().unwrap().seq, 0);
    assert!(d.spool_files().is_empty());
    assert_eq!(d.installed(SAMPLE), None);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_refused_counted_and_harmless() {
    use iocomd::config::{Account, PasswordHash};
    let d = Daemon::start_with(
        |s| {
            s.allow_plain_tcp_push = false;
            s.accounts = vec![Account {
                user: "ctl".into(),
                password_hash: Some(PasswordHash::from_password("secret")),
                certificate_sha256: None,
            }];
        },
        true,
    )
    .await;
    let (tls_addr, ca) = d.tls.clone().unwrap();
    let mut watcher = Ctl::connect(d.addr, "gina", None).await;
    watcher.wait_ready().await;

    let mut bad = Ctl::connect(tls_addr, "gina", Some(Tls::to(&ca, "ctl", "wrong"))).await;
    bad.wait_closed().await;
    assert!(!bad.ep.ready());
    let st = watcher.wait_status(|s| s.auth_fail == 1).await;
    assert_eq!(st.seq, 0);

    // The right password over TLS may push.
    let bytes = std::fs::read(&d.env.sample_package).unwrap();
    let mut good = Ctl::connect(tls_addr, "gina", Some(Tls::to(&ca, "ctl", "secret"))).await;
    good.wait_ready().await;
    let mut src = Source {
        data: bytes,
        pos: 0,
        hold_at: None,
    };
    let p = good.upload(&mut src, None).await.unwrap();
    assert!(matches!(p, Progress::Completed { .. }), "{p:?}");
    let st = good.wait_status(|s| s.seq == 1).await;
    assert_eq!((st.code.as_str(), st.auth_fail), ("ok", 1), "{st:?}");
    assert_eq!(good.wait_final_tod_err().await, Some(tod_err::COMPLETED));
    assert_eq!(d.installed(SAMPLE).as_deref(), Some("1.0"));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_daemon_reports_the_last_result_and_cleans_the_spool() {
    let d = Daemon::start(|_| {}).await;
    let bytes = std::fs::read(&d.env.sample_package).unwrap();
    let (_, st, _) = push(d.addr, bytes).await;
    assert_eq!(st.code, "ok", "{st:?}");
    let stale = d.settings.spool.dir.join("1-0-push.partial");
    let d = d
        .restart(|s| {
            std::fs::write(s.spool.dir.join("1-0-push.partial"), b"left by a crash").unwrap();
        })
        .await;
    let mut c = Ctl::connect(d.addr, "gina", None).await;
    c.wait_ready().await;
    assert!(!stale.exists(), "stale partial file not removed");
    // The helper's status is read off the loop: wait for it (it comes within moments).
    let st = c.wait_status(|s| s.seq == 1).await;
    assert_eq!(st.state, UpdState::Idle);
    assert_eq!(
        (st.code.as_str(), st.result, st.seq),
        ("ok", 0, 1),
        "{st:?}"
    );
    assert_eq!((st.pkg.as_str(), st.inst_ver.as_str()), (SAMPLE, "1.0"));
    c.disconnect();
    d.stop().await;
}

/// Moves `src` to the device until the first result is published; that result.
async fn transfer_until_result(c: &mut Ctl, src: &mut Source) -> iocomd::status::UpdateStatus {
    let until = std::time::Instant::now() + WAIT;
    while c.status().is_none_or(|s| s.seq == 0) {
        assert!(std::time::Instant::now() < until, "no result");
        let _ =
            c.ep.poll_transfer(std::time::Instant::now(), src, &mut NoSinkT);
        c.pump(std::time::Duration::from_millis(50)).await;
        c.flush().await;
    }
    c.status().unwrap()
}

struct NoSinkT;
impl iocomd::proto::stream::ChunkSink for NoSinkT {
    fn open(&mut self, _: i64) -> Result<(), iocomd::proto::stream::LocalError> {
        Err(1.into())
    }
    fn write(&mut self, _: &[u8]) -> Result<(), iocomd::proto::stream::LocalError> {
        Err(1.into())
    }
    fn close(&mut self, _: bool) {}
}

async fn second_transmit(c: &mut Ctl) {
    c.flush().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_connects_up_to_a_listening_iocomctl() {
    use iocomd::config::ConnectEndpoint;
    use iocomd::ctl::{ConnectOptions, PushOptions, Target, Transport};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = Daemon::start(|s| {
        s.connect = vec![ConnectEndpoint {
            host: "127.0.0.1".into(),
            port,
            tls: None,
            password_file: None,
        }];
    })
    .await;
    let target = Target {
        device: "gina3.iocafenet".parse().unwrap(),
        transport: Transport::Listen(([127, 0, 0, 1], port).into()),
    };
    let opts = PushOptions::new(
        target,
        ConnectOptions::default(),
        d.env.sample_package.clone(),
    );
    let out = iocomd::ctl::push(&opts, |_| {}).await.unwrap();
    assert_eq!(out.report.code.as_deref(), Some("ok"), "{out:?}");
    assert_eq!(out.report.tod_err, Some(tod_err::COMPLETED));
    assert_eq!(out.report.installed_version.as_deref(), Some("1.0"));
    assert_eq!(d.installed(SAMPLE).as_deref(), Some("1.0"));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_transfer_times_out_and_leaves_nothing_behind() {
    let d = Daemon::start(|_| {}).await;
    let bytes = std::fs::read(&d.env.sample_package).unwrap();
    let mut c = Ctl::connect(d.addr, "gina", None).await;
    c.wait_ready().await;
    let half = bytes.len() / 2;
    let mut src = Source {
        data: bytes.clone(),
        pos: 0,
        hold_at: Some(half),
    };
    assert_eq!(c.upload(&mut src, Some(half)).await, None);
    // Keep the connection alive but send nothing more: the device gives up after 5 s.
    let st = c.wait_status(|s| s.seq == 1).await;
    assert_eq!(st.code, "interrupted", "{st:?}");
    assert!(st.msg.contains("stalled"), "{st:?}");
    assert_eq!(c.wait_final_tod_err().await, Some(tod_err::TIMEOUT));
    assert!(d.spool_files().is_empty(), "{:?}", d.spool_files());
    assert_eq!(d.installed(SAMPLE), None);
    c.disconnect();
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_push_the_helper_has_no_room_for_ends_with_the_helpers_code() {
    // The helper keeps a reserve no filesystem has free: it refuses the stream at its start,
    // and the transfer ends with its code (not the spool's: nothing is spooled).
    let d = Daemon::start_with_helper_args(&["--space-reserve-mib", "1099511627776"], |_| {}).await;
    // Bigger than the pipe and the queue: the helper's answer comes while it is received.
    let pkg = build_package(&d.env, "iocom-test-room", "1.0", 8 << 20);
    let mut c = Ctl::connect(d.addr, "gina", None).await;
    c.wait_ready().await;
    c.ep.start_upload(1).unwrap();
    let mut src = Source {
        data: std::fs::read(&pkg).unwrap(),
        pos: 0,
        hold_at: None,
    };
    let st = transfer_until_result(&mut c, &mut src).await;
    assert_eq!((st.code.as_str(), st.result), ("no-space", 41), "{st:?}");
    assert!(st.msg.contains("bytes needed"), "{st:?}");
    assert!(
        src.pos < src.data.len(),
        "refused only after the whole transfer"
    );
    assert_eq!(
        c.wait_final_tod_err().await,
        Some(tod_err::WRITING_FILE_FAILED)
    );
    c.disconnect();
    assert!(d.spool_files().is_empty(), "{:?}", d.spool_files());
    assert!(staged(&d).is_empty(), "{:?}", staged(&d));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_without_spool_space_is_refused_with_a_result() {
    // A reserve no filesystem can keep free: the spool refuses at the start.
    let d = Daemon::start(|s| {
        s.spool.min_free_space = 1 << 60;
        s.spool.stream_to_helper = false;
    })
    .await;
    let bytes = std::fs::read(&d.env.sample_package).unwrap();
    let mut c = Ctl::connect(d.addr, "gina", None).await;
    c.wait_ready().await;
    c.ep.start_upload(1).unwrap();
    let mut src = Source {
        data: bytes,
        pos: 0,
        hold_at: None,
    };
    let st = transfer_until_result(&mut c, &mut src).await;
    assert_eq!((st.code.as_str(), st.result), ("no-space", 202), "{st:?}");
    assert_eq!(
        c.wait_final_tod_err().await,
        Some(tod_err::WRITING_FILE_FAILED)
    );
    assert!(d.spool_files().is_empty(), "{:?}", d.spool_files());
    c.disconnect();
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_limit_the_oldest_idle_connection_makes_room_and_others_keep_working() {
    let d = Daemon::start(|_| {}).await;
    let mut oldest = Ctl::connect(d.addr, "gina", None).await;
    oldest.wait_ready().await;
    // More controllers fill the remaining places (each ready, so the daemon has counted it).
    let mut idle = Vec::new();
    for _ in 1..iocomd::daemon::MAX_PEERS {
        let mut c = Ctl::connect(d.addr, "gina", None).await;
        c.wait_ready().await;
        idle.push(c);
    }
    // One more is served: the oldest connection, which is not pushing, is closed for it.
    let mut extra = Ctl::connect(d.addr, "gina", None).await;
    extra.wait_ready().await;
    oldest.wait_closed().await;
    assert!(extra.status().is_some());
    // The others are unaffected, and places come back when peers leave.
    for c in &idle {
        c.disconnect();
    }
    for c in &mut idle {
        c.wait_closed().await;
    }
    let bytes = std::fs::read(&d.env.sample_package).unwrap();
    let (_, st, _) = push(d.addr, bytes).await;
    assert_eq!(st.code, "ok", "{st:?}");
    let st = extra.wait_status(|s| s.seq == 1).await;
    assert_eq!(st.inst_ver, "1.0");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickle_push_is_cut_off_and_the_update_slot_comes_free() {
    use std::time::{Duration, Instant};
    let d = Daemon::start(|s| {
        s.transfer.min_rate = 1000;
        s.transfer.rate_window = Duration::from_secs(1);
    })
    .await;
    let big = build_package(&d.env, "iocom-test-trickle", "1.0", 64 << 10);
    let bytes = std::fs::read(big).unwrap();
    let mut c = Ctl::connect(d.addr, "gina", None).await;
    c.wait_ready().await;
    // 20 bytes every 200 ms: 100 B/s, never long enough silent for the 5 s stall timeout.
    let mut src = Source {
        data: bytes.clone(),
        pos: 0,
        hold_at: Some(20),
    };
    c.ep.start_upload(1).unwrap();
    let started = Instant::now();
    while c.tod_err() != Some(tod_err::INTERRUPTED) {
        assert!(started.elapsed() < WAIT, "not cut off: {:?}", c.status());
        let _ = c.ep.poll_transfer(Instant::now(), &mut src, &mut NoSinkT);
        second_transmit(&mut c).await;
        c.pump(Duration::from_millis(50)).await;
        // Paced by the clock, not by the loop (which runs at every event).
        src.hold_at = Some(20 * (1 + started.elapsed().as_millis() as usize / 200));
    }
    let st = c.wait_status(|s| s.seq == 1).await;
    assert_eq!(
        (st.code.as_str(), st.result),
        ("interrupted", DaemonCode::Interrupted.number()),
        "{st:?}"
    );
    assert!(st.msg.contains("too slow"), "{st:?}");
    assert!(d.spool_files().is_empty(), "{:?}", d.spool_files());
    c.disconnect();

    // The slot is free: a normal push installs.
    let sample = std::fs::read(&d.env.sample_package).unwrap();
    let (p, st, tod) = push(d.addr, sample).await;
    assert!(matches!(p, Progress::Completed { .. }), "{p:?}");
    assert_eq!(
        (st.code.as_str(), st.seq, tod),
        ("ok", 2, Some(tod_err::COMPLETED))
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_helper_child_is_respawned_and_the_next_push_installs() {
    let mut d = Daemon::start(|_| {}).await;
    let mut child = d.child.take().unwrap();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let _ = child.wait().await;
    // The daemon notices, respawns the helper (its own child now) and serves pushes again.
    // Meanwhile a push ends with `helper-unavailable` (the helper died under it) or `busy`
    // (the new helper has not answered yet), never without a result.
    let bytes = std::fs::read(&d.env.sample_package).unwrap();
    let until = std::time::Instant::now() + WAIT;
    loop {
        let (_, st, tod) = push(d.addr, bytes.clone()).await;
        if st.code == "ok" {
            assert_eq!(tod, Some(tod_err::COMPLETED));
            break;
        }
        assert!(
            matches!(st.code.as_str(), "busy" | "helper-unavailable"),
            "{st:?}"
        );
        assert!(std::time::Instant::now() < until, "no helper again: {st:?}");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    assert_eq!(d.installed(SAMPLE).as_deref(), Some("1.0"));
    d.stop().await;
}
