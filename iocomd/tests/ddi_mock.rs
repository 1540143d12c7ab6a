//! The DDI client against the in-process mock server: every branch of an action (multi-chunk
//! install, failure, wrong hash, dropped link resumed, restart resumed with If-Range, 416,
//! cancel before and after hand-over, 410, 429, 409, 304, download/update skip, maintenance
//! window, busy slot, errors with backoff, installedBase, lost final feedback).

mod ddi_support;

use ddi_support::mock::{BASE, Link, Mock};
use ddi_support::*;
use iocomd::ddi::{DdiState, InstallOutcome, PackageVersion};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// A device with a fresh state directory, polling `m`.
fn client(m: &Mock, fake: &Arc<FakeInstaller>) -> (Device, Client) {
    let dev = Device::new();
    let c = dev.start(settings(&m.url), fake.clone());
    (dev, c)
}

fn finals(m: &Mock, id: &str) -> Vec<(String, String)> {
    m.feedback(id)
        .iter()
        .map(Mock::exec)
        .filter(|(e, _)| e == "closed")
        .collect()
}

#[tokio::test]
async fn multi_chunk_action_is_one_install_in_order_and_closed_success_after_the_outcome() {
    let m = Mock::start().await;
    let (a, b) = (data(300_000, 1), data(70_000, 2));
    let chunks = json!([
        { "part": "os", "name": "base", "version": "1.0", "artifacts": [m.artifact("base_1.0_all.deb", &a, Link::Good), m.artifact("base.sig", b"sig", Link::Good)] },
        { "part": "app", "name": "app", "version": "2.0", "artifacts": [m.artifact("app_2.0_all.deb", &b, Link::Good)] },
    ]);
    m.offer("7", chunks, "forced", "forced", None);
    m.set_links(&[
        ("configData", "/configData"),
        ("deploymentBase", "/deploymentBase/7?c=-1"),
    ]);
    let fake = Arc::new(FakeInstaller::default());
    *fake.versions.lock().unwrap() = vec![PackageVersion::new("app", "1.0")];
    let (dev, c) = client(&m, &fake);
    wait_for(20, "closed feedback", || !finals(&m, "7").is_empty()).await;
    let installs = fake.installs();
    assert_eq!(installs.len(), 1, "one transaction");
    let names: Vec<_> = installs[0].iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["base_1.0_all.deb", "app_2.0_all.deb"],
        "chunk order; the .sig is skipped"
    );
    assert_eq!(installs[0][0].1, a);
    assert_eq!(installs[0][1].1, b);
    assert_eq!(finals(&m, "7"), [("closed".into(), "success".into())]);
    let fb = m.feedback("7");
    assert_eq!(
        Mock::exec(&fb[0]),
        ("proceeding".into(), "none".into()),
        "proceeding before closed"
    );
    assert_eq!(
        fb.last().unwrap()["status"]["details"][1],
        "installed: base 1.0, app 2.0"
    );
    let cfg: Vec<_> = m
        .seen()
        .into_iter()
        .filter(|s| s.path == format!("{BASE}/configData"))
        .collect();
    let body = cfg[0].body.as_ref().unwrap();
    assert_eq!(body["mode"], "merge");
    assert_eq!(body["data"]["hw_boardname"], "gina");
    assert_eq!(body["data"]["pkg.app"], "1.0");
    // The mock stops offering a closed action (as hawkBit does): the base resource is unchanged.
    wait_for(5, "304 on the unchanged base resource", || {
        m.state.lock().unwrap().not_modified >= 2
    })
    .await;
    assert_eq!(fake.installs().len(), 1);
    assert_eq!(fake.live_reservations(), 0, "the slot is free again");
    let st = c.status.borrow().clone();
    assert!(st.last_poll.is_some());
    assert_eq!(st.state, DdiState::Idle);
    assert!(
        dev.spool_files().is_empty(),
        "nothing left in the spool: {:?}",
        dev.spool_files()
    );
    c.shutdown().await;
}

#[tokio::test]
async fn helper_failure_is_closed_failure_with_its_code_and_rollback() {
    let m = Mock::start().await;
    let chunks = json!([{ "name": "app", "version": "3", "artifacts": [m.artifact("app_3_all.deb", &data(1000, 3), Link::Good)] }]);
    m.offer("9", chunks, "attempt", "attempt", Some("available"));
    let fake = Arc::new(FakeInstaller::default());
    *fake.outcome.lock().unwrap() = Some(InstallOutcome {
        success: false,
        code: "health-gate-failed".into(),
        number: 31,
        message: "app.service failed after the upgrade".into(),
        rolled_back: true,
        installed: vec![PackageVersion::new("app", "2")],
    });
    let (dev, c) = client(&m, &fake);
    wait_for(20, "closed feedback", || !finals(&m, "9").is_empty()).await;
    let fb = m.feedback("9").pop().unwrap();
    assert_eq!(Mock::exec(&fb), ("closed".into(), "failure".into()));
    assert_eq!(fb["status"]["code"], 31);
    assert_eq!(
        fb["status"]["details"][0],
        "health-gate-failed (31): app.service failed after the upgrade"
    );
    assert_eq!(
        fb["status"]["details"][1],
        "rolled back to the previous versions"
    );
    assert_eq!(fb["status"]["details"][2], "installed: app 2");
    c.shutdown().await;
}

#[tokio::test]
async fn wrong_hash_fails_the_action_without_installing() {
    let m = Mock::start().await;
    let mut art = m.artifact("app_1_all.deb", &data(5000, 4), Link::Good);
    art["hashes"]["sha256"] = json!("ab".repeat(32));
    m.offer_app("3", "app", "1", art);
    let fake = Arc::new(FakeInstaller::default());
    let (dev, c) = client(&m, &fake);
    wait_for(20, "closed feedback", || !finals(&m, "3").is_empty()).await;
    let fb = m.feedback("3").pop().unwrap();
    assert_eq!(Mock::exec(&fb), ("closed".into(), "failure".into()));
    assert!(
        fb["status"]["details"][0]
            .as_str()
            .unwrap()
            .contains("SHA-256 mismatch"),
        "{fb}"
    );
    assert!(fake.installs().is_empty());
    assert_eq!(fake.live_reservations(), 0);
    assert!(dev.spool_files().is_empty(), "{:?}", dev.spool_files());
    c.shutdown().await;
}

#[tokio::test]
async fn dropped_link_mid_download_is_resumed_with_range_and_if_range() {
    let m = Mock::start().await;
    let d = data(200_000, 5);
    let art = m.artifact(
        "app_2_all.deb",
        &d,
        Link::Drop {
            after: 80_000,
            n: 2,
        },
    );
    m.offer_app("4", "app", "2", art);
    let fake = Arc::new(FakeInstaller::default());
    let (dev, c) = client(&m, &fake);
    wait_for(20, "closed feedback", || !finals(&m, "4").is_empty()).await;
    assert_eq!(finals(&m, "4"), [("closed".into(), "success".into())]);
    assert_eq!(
        fake.installs()[0][0].1,
        d,
        "the resumed file is byte-identical"
    );
    let gets: Vec<_> = m
        .seen()
        .into_iter()
        .filter(|s| s.path == "/artifacts/app_2_all.deb")
        .collect();
    assert_eq!(gets.len(), 3, "one full request and two resumptions");
    assert!(!gets[0].headers.contains_key("range"));
    assert_eq!(gets[1].headers["range"], "bytes=80000-");
    assert_eq!(gets[2].headers["range"], "bytes=160000-");
    let etag = m.state.lock().unwrap().artifacts["app_2_all.deb"]
        .etag
        .clone();
    assert_eq!(
        gets[1].headers.get("if-range"),
        Some(&etag),
        "{:?}",
        gets[1].headers
    );
    let progress: Vec<_> = m
        .feedback("4")
        .into_iter()
        .filter(|f| {
            f["status"]["result"]["progress"]["of"] == 100
                && f["status"]["execution"] == "proceeding"
        })
        .collect();
    assert!(
        progress.len() <= 21,
        "progress is sparse: {}",
        progress.len()
    );
    c.shutdown().await;
}

#[tokio::test]
async fn a_restart_resumes_the_partial_file_and_416_means_complete() {
    let m = Mock::start().await;
    let d = data(150_000, 6);
    let art = m.artifact("app_5_all.deb", &d, Link::Stall { after: 60_000 });
    m.offer_app("5", "app", "5", art);
    let fake = Arc::new(FakeInstaller::default());
    let (dev, c) = client(&m, &fake);
    let part = dev.spool_dir().join("hawkbit-5-0-0.deb.ddi-part");
    wait_for(20, "40 % downloaded", || {
        c.status.borrow().progress == Some(40)
    })
    .await;
    c.shutdown().await;
    assert_eq!(
        std::fs::metadata(&part).unwrap().len(),
        60_000,
        "the partial file survives shutdown"
    );
    assert!(dev.state_dir().join("hawkbit/action.json").exists());
    assert_eq!(fake.live_reservations(), 0);
    m.state
        .lock()
        .unwrap()
        .artifacts
        .get_mut("app_5_all.deb")
        .unwrap()
        .link = Link::Good;
    let c = dev.start(settings(&m.url), fake.clone());
    wait_for(20, "closed feedback", || !finals(&m, "5").is_empty()).await;
    assert_eq!(fake.installs()[0][0].1, d);
    let gets: Vec<_> = m
        .seen()
        .into_iter()
        .filter(|s| s.path == "/artifacts/app_5_all.deb")
        .collect();
    assert_eq!(gets.len(), 2);
    assert_eq!(gets[1].headers["range"], "bytes=60000-");
    assert!(gets[1].headers.contains_key("if-range"));
    c.shutdown().await;

    // 416: the server has nothing past the end of a complete partial file (no size announced).
    let d2 = data(10_000, 7);
    let mut art = m.artifact("lib_1_all.deb", &d2, Link::Good);
    art.as_object_mut().unwrap().remove("size");
    m.offer_app("6", "lib", "1", art);
    std::fs::write(dev.spool_dir().join("hawkbit-6-0-0.deb.ddi-part"), &d2).unwrap();
    let c = dev.start(settings(&m.url), fake.clone());
    wait_for(20, "closed feedback", || !finals(&m, "6").is_empty()).await;
    assert_eq!(finals(&m, "6"), [("closed".into(), "success".into())]);
    assert_eq!(fake.installs()[1][0].1, d2);
    let seen: Vec<_> = m
        .seen()
        .into_iter()
        .filter(|s| s.path == "/artifacts/lib_1_all.deb")
        .collect();
    assert_eq!(seen.len(), 1, "one request, answered 416");
    assert_eq!(seen[0].headers["range"], "bytes=10000-");
    c.shutdown().await;
}

#[tokio::test]
async fn cancel_is_accepted_before_hand_over_and_rejected_after() {
    let m = Mock::start().await;
    let art = m.artifact(
        "app_1_all.deb",
        &data(100_000, 8),
        Link::Stall { after: 10_000 },
    );
    m.offer_app("11", "app", "1", art);
    let fake = Arc::new(FakeInstaller::default());
    let (dev, c) = client(&m, &fake);
    wait_for(20, "downloading", || {
        c.status.borrow().state == DdiState::Downloading
    })
    .await;
    m.state
        .lock()
        .unwrap()
        .cancels
        .insert("12".into(), "11".into());
    m.set_links(&[("cancelAction", "/cancelAction/12")]);
    let cancel_fb = |m: &Mock| {
        m.seen()
            .into_iter()
            .filter(|s| s.path == format!("{BASE}/cancelAction/12/feedback"))
            .filter_map(|s| s.body)
            .collect::<Vec<_>>()
    };
    wait_for(20, "cancel feedback", || !cancel_fb(&m).is_empty()).await;
    assert_eq!(
        Mock::exec(&cancel_fb(&m)[0]),
        ("closed".into(), "success".into())
    );
    assert!(fake.installs().is_empty());
    wait_for(5, "slot freed", || fake.live_reservations() == 0).await;
    assert!(dev.spool_files().is_empty(), "{:?}", dev.spool_files());

    // After hand-over: rejected, and the install's result is still reported.
    *fake.hold.lock().unwrap() = true;
    let art = m.artifact("app_2_all.deb", &data(1000, 9), Link::Good);
    m.offer_app("13", "app", "2", art);
    wait_for(20, "installing", || {
        c.status.borrow().state == DdiState::Installing
    })
    .await;
    m.state
        .lock()
        .unwrap()
        .cancels
        .insert("14".into(), "13".into());
    m.set_links(&[("cancelAction", "/cancelAction/14")]);
    let cancel14 = |m: &Mock| {
        m.seen()
            .into_iter()
            .filter(|s| s.path == format!("{BASE}/cancelAction/14/feedback"))
            .filter_map(|s| s.body)
            .collect::<Vec<_>>()
    };
    wait_for(20, "cancel feedback", || !cancel14(&m).is_empty()).await;
    assert_eq!(Mock::exec(&cancel14(&m)[0]).0, "rejected");
    fake.release.notify_one();
    wait_for(20, "closed feedback", || !finals(&m, "13").is_empty()).await;
    assert_eq!(finals(&m, "13"), [("closed".into(), "success".into())]);
    c.shutdown().await;
}

#[tokio::test]
async fn gone_action_is_dropped_and_429_409_are_retried() {
    let m = Mock::start().await;
    m.fault(&format!("GET {BASE}"), 429, Some(1));
    let art = m.artifact("app_1_all.deb", &data(1000, 10), Link::Good);
    m.offer_app("20", "app", "1", art);
    m.fault("/deploymentBase/20/feedback", 410, None);
    let fake = Arc::new(FakeInstaller::default());
    let t0 = std::time::Instant::now();
    let (dev, c) = client(&m, &fake);
    wait_for(20, "the 410 answer", || {
        m.state.lock().unwrap().faults.is_empty()
    })
    .await;
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "Retry-After: 1 was honoured"
    );
    m.set_links(&[]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(fake.installs().is_empty(), "a gone action is not installed");
    assert!(
        m.seen()
            .iter()
            .all(|s| s.path != "/artifacts/app_1_all.deb")
    );
    assert_eq!(fake.live_reservations(), 0);

    // 429 then 409 on the final feedback: retried, delivered once.
    let art = m.artifact("app_2_all.deb", &data(1000, 11), Link::Good);
    m.offer_app("21", "app", "2", art);
    m.state.lock().unwrap().faults.clear();
    let c2 = c;
    wait_for(20, "proceeding", || !m.feedback("21").is_empty()).await;
    m.fault("/deploymentBase/21/feedback", 429, Some(0));
    m.fault("/deploymentBase/21/feedback", 409, None);
    wait_for(20, "closed feedback", || !finals(&m, "21").is_empty()).await;
    assert_eq!(finals(&m, "21").len(), 1);
    c2.shutdown().await;
}

#[tokio::test]
async fn download_skip_update_skip_and_maintenance_window_wait() {
    let m = Mock::start().await;
    let art = m.artifact("app_1_all.deb", &data(2000, 12), Link::Good);
    let chunks = json!([{ "name": "app", "version": "1", "artifacts": [art] }]);
    m.offer("30", chunks.clone(), "skip", "skip", None);
    let fake = Arc::new(FakeInstaller::default());
    let (dev, c) = client(&m, &fake);
    wait_for(20, "deferred", || {
        c.status.borrow().state == DdiState::DownloadDeferred
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        m.seen().iter().all(|s| !s.path.starts_with("/artifacts/")),
        "download=skip: nothing downloaded"
    );

    m.offer("30", chunks.clone(), "forced", "skip", None);
    wait_for(20, "waiting", || {
        c.status.borrow().state == DdiState::WaitingToInstall
    })
    .await;
    assert!(
        m.feedback("30")
            .iter()
            .any(|f| f["status"]["execution"] == "downloaded")
    );
    assert!(fake.installs().is_empty(), "update=skip: not installed");
    assert_eq!(fake.live_reservations(), 0, "no slot held while waiting");

    m.offer(
        "30",
        chunks.clone(),
        "forced",
        "forced",
        Some("unavailable"),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        fake.installs().is_empty(),
        "outside the maintenance window: not installed"
    );

    m.offer("30", chunks, "forced", "forced", Some("available"));
    wait_for(20, "closed feedback", || !finals(&m, "30").is_empty()).await;
    assert_eq!(fake.installs().len(), 1);
    assert_eq!(
        m.seen()
            .iter()
            .filter(|s| s.path == "/artifacts/app_1_all.deb")
            .count(),
        1,
        "downloaded once"
    );
    c.shutdown().await;
}

#[tokio::test]
async fn a_busy_slot_defers_the_action() {
    let m = Mock::start().await;
    let art = m.artifact("app_1_all.deb", &data(2000, 13), Link::Good);
    m.offer_app("40", "app", "1", art);
    let fake = Arc::new(FakeInstaller::default());
    *fake.busy.lock().unwrap() = Some("push from 127.0.0.1".into());
    let (dev, c) = client(&m, &fake);
    wait_for(20, "busy", || c.status.borrow().state == DdiState::Busy).await;
    assert!(fake.installs().is_empty());
    *fake.busy.lock().unwrap() = None;
    wait_for(20, "closed feedback", || !finals(&m, "40").is_empty()).await;
    assert_eq!(fake.installs().len(), 1);
    c.shutdown().await;
}

#[tokio::test]
async fn errors_back_off_and_show_in_the_status() {
    let m = Mock::start().await;
    for _ in 0..3 {
        m.fault(&format!("GET {BASE}"), 401, None);
    }
    m.fault(&format!("GET {BASE}"), 503, None);
    let fake = Arc::new(FakeInstaller::default());
    let (dev, c) = client(&m, &fake);
    wait_for(20, "error status", || {
        c.status
            .borrow()
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("authentication refused"))
    })
    .await;
    assert_eq!(c.status.borrow().state, DdiState::Error);
    wait_for(20, "recovered", || {
        c.status.borrow().last_error.is_none() && c.status.borrow().last_poll.is_some()
    })
    .await;
    let polls: Vec<_> = m
        .seen()
        .into_iter()
        .filter(|s| s.method == "GET" && s.path == BASE)
        .collect();
    assert!(polls.len() >= 5);
    // Waits 50, 100, 200, 400 ms: at least 700 ms from first to fifth poll.
    c.shutdown().await;
    assert_eq!(
        polls.len()
            - polls
                .iter()
                .filter(|p| p.headers.contains_key("x-accepted"))
                .count(),
        4
    );
}

#[tokio::test]
async fn versions_installed_otherwise_are_reported() {
    let m = Mock::start().await;
    let fake = Arc::new(FakeInstaller::default());
    *fake.versions.lock().unwrap() = vec![PackageVersion::new("app", "1.0")];
    let (dev, c) = client(&m, &fake);
    let puts = |m: &Mock, p: &str| {
        m.seen()
            .into_iter()
            .filter(|s| s.path == format!("{BASE}/{p}"))
            .filter_map(|s| s.body)
            .collect::<Vec<_>>()
    };
    wait_for(20, "first configData", || {
        !puts(&m, "configData").is_empty()
    })
    .await;
    assert!(
        puts(&m, "installedBase").is_empty(),
        "the first report is attributes only"
    );
    *fake.versions.lock().unwrap() = vec![PackageVersion::new("app", "1.1")];
    wait_for(20, "installedBase", || {
        !puts(&m, "installedBase").is_empty()
    })
    .await;
    assert_eq!(
        puts(&m, "installedBase")[0],
        json!({ "name": "app", "version": "1.1" })
    );
    wait_for(20, "configData update", || {
        puts(&m, "configData").len() >= 2
    })
    .await;
    assert_eq!(puts(&m, "configData")[1]["data"]["pkg.app"], "1.1");
    // A server without installedBase: attributes only from then on.
    m.state.lock().unwrap().installed_base_status = 404;
    *fake.versions.lock().unwrap() = vec![PackageVersion::new("app", "1.2")];
    wait_for(20, "configData 1.2", || {
        puts(&m, "configData")
            .iter()
            .any(|b| b["data"]["pkg.app"] == "1.2")
    })
    .await;
    *fake.versions.lock().unwrap() = vec![PackageVersion::new("app", "1.3")];
    wait_for(20, "configData 1.3", || {
        puts(&m, "configData")
            .iter()
            .any(|b| b["data"]["pkg.app"] == "1.3")
    })
    .await;
    assert_eq!(
        puts(&m, "installedBase").len(),
        2,
        "not tried again after the 404"
    );
    c.shutdown().await;
}

#[tokio::test]
async fn a_lost_final_feedback_is_delivered_at_the_next_poll() {
    let m = Mock::start().await;
    let art = m.artifact("app_1_all.deb", &data(3000, 14), Link::Good);
    m.offer_app("50", "app", "1", art);
    let fake = Arc::new(FakeInstaller::default());
    *fake.hold.lock().unwrap() = true;
    let (dev, c) = client(&m, &fake);
    wait_for(20, "installing", || {
        c.status.borrow().state == DdiState::Installing
    })
    .await;
    m.fault("/deploymentBase/50/feedback", 503, None);
    fake.release.notify_one();
    wait_for(20, "closed feedback", || !finals(&m, "50").is_empty()).await;
    let attempts = m
        .seen()
        .into_iter()
        .filter(|s| {
            s.path.ends_with("/50/feedback")
                && s.body
                    .as_ref()
                    .is_some_and(|b| b["status"]["execution"] == "closed")
        })
        .count();
    assert_eq!(
        attempts, 2,
        "refused once (503), delivered at the next poll"
    );
    assert_eq!(fake.installs().len(), 1, "not installed again meanwhile");
    c.shutdown().await;
}
