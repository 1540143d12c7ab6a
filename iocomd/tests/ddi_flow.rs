//! The DDI client against the in-process mock server, the control side of an action: cancel
//! before and after hand-over, 410, 429, 409, download/update skip, the maintenance window, a
//! busy update slot, errors with backoff, installedBase, a lost final feedback.

mod ddi_support;

use ddi_support::mock::{BASE, Link, Mock};
use ddi_support::*;
use iocomd::ddi::{DdiState, PackageVersion};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

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
    wait_for(60, "downloading", || {
        c.status.borrow().state == DdiState::Downloading
    })
    .await;
    m.state
        .lock()
        .unwrap()
        .cancels
        .insert("12".into(), "11".into());
    m.set_links(&[("cancelAction", "/cancelAction/12")]);
    wait_for(60, "cancel feedback", || {
        !m.cancel_feedback("12").is_empty()
    })
    .await;
    assert_eq!(
        Mock::exec(&m.cancel_feedback("12")[0]),
        ("closed".into(), "success".into())
    );
    assert!(fake.installs().is_empty());
    wait_for(5, "slot freed", || fake.live_reservations() == 0).await;
    assert!(dev.spool_files().is_empty(), "{:?}", dev.spool_files());

    // After hand-over: rejected, and the install's result is still reported.
    *fake.hold.lock().unwrap() = true;
    let art = m.artifact("app_2_all.deb", &data(1000, 9), Link::Good);
    m.offer_app("13", "app", "2", art);
    wait_for(60, "installing", || {
        c.status.borrow().state == DdiState::Installing
    })
    .await;
    m.state
        .lock()
        .unwrap()
        .cancels
        .insert("14".into(), "13".into());
    m.set_links(&[("cancelAction", "/cancelAction/14")]);
    wait_for(60, "cancel feedback", || {
        !m.cancel_feedback("14").is_empty()
    })
    .await;
    assert_eq!(Mock::exec(&m.cancel_feedback("14")[0]).0, "rejected");
    fake.release.notify_one();
    wait_for(60, "closed feedback", || !finals(&m, "13").is_empty()).await;
    assert_eq!(finals(&m, "13"), [("closed".into(), "success".into())]);
    // A cancel for an action this device never ran: nothing to stop, accepted.
    m.state
        .lock()
        .unwrap()
        .cancels
        .insert("15".into(), "99".into());
    m.set_links(&[("cancelAction", "/cancelAction/15")]);
    wait_for(60, "cancel feedback", || {
        !m.cancel_feedback("15").is_empty()
    })
    .await;
    assert_eq!(
        Mock::exec(&m.cancel_feedback("15")[0]),
        ("closed".into(), "success".into())
    );
    assert_eq!(
        m.cancel_feedback("15")[0]["status"]["details"][0],
        "nothing runs for action 99"
    );
    assert_eq!(fake.installs().len(), 1);
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
    wait_for(60, "the 410 answer", || {
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
    m.fault(r#""execution":"closed""#, 429, Some(0));
    m.fault(r#""execution":"closed""#, 409, None);
    wait_for(60, "closed feedback", || !finals(&m, "21").is_empty()).await;
    assert_eq!(finals(&m, "21").len(), 1);
    let closed = m
        .seen()
        .into_iter()
        .filter(|s| {
            s.body
                .as_ref()
                .is_some_and(|b| b["status"]["execution"] == "closed")
        })
        .count();
    assert_eq!(closed, 3, "429, 409, then delivered");

    // 410 when the device announces the install: the action is not handed over.
    let art = m.artifact("app_3_all.deb", &data(1000, 12), Link::Good);
    m.fault("installing app_3_all.deb", 410, None);
    m.offer_app("22", "app", "3", art);
    wait_for(60, "the 410 answer", || {
        m.state.lock().unwrap().faults.is_empty()
    })
    .await;
    m.set_links(&[]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.installs().len(), 1, "only action 21 was installed");
    assert_eq!(fake.live_reservations(), 0);
    assert!(dev.spool_files().is_empty(), "{:?}", dev.spool_files());
    c.shutdown().await;
}

#[tokio::test]
async fn download_skip_update_skip_and_maintenance_window_wait() {
    let m = Mock::start().await;
    let art = m.artifact("app_1_all.deb", &data(2000, 12), Link::Good);
    let chunks = json!([{ "name": "app", "version": "1", "artifacts": [art] }]);
    m.offer("30", chunks.clone(), "skip", "skip", None);
    let fake = Arc::new(FakeInstaller::default());
    let (dev, c) = client(&m, &fake);
    wait_for(60, "deferred", || {
        c.status.borrow().state == DdiState::DownloadDeferred
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        m.seen().iter().all(|s| !s.path.starts_with("/artifacts/")),
        "download=skip: nothing downloaded"
    );

    m.offer("30", chunks.clone(), "forced", "skip", None);
    wait_for(60, "waiting", || {
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

    // A restart while waiting: the downloaded file is verified again, not downloaded again.
    c.shutdown().await;
    let c = dev.start(settings(&m.url), fake.clone());
    wait_for(60, "waiting after the restart", || {
        c.status.borrow().state == DdiState::WaitingToInstall
    })
    .await;
    assert!(fake.installs().is_empty());

    m.offer("30", chunks, "forced", "forced", Some("available"));
    wait_for(60, "closed feedback", || !finals(&m, "30").is_empty()).await;
    assert_eq!(fake.installs().len(), 1);
    assert_eq!(
        m.seen()
            .iter()
            .filter(|s| s.path == "/artifacts/app_1_all.deb")
            .count(),
        1,
        "downloaded once, across the restart"
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
    let (_dev, c) = client(&m, &fake);
    wait_for(60, "busy", || c.status.borrow().state == DdiState::Busy).await;
    assert!(fake.installs().is_empty());
    *fake.busy.lock().unwrap() = None;
    wait_for(60, "closed feedback", || !finals(&m, "40").is_empty()).await;
    assert_eq!(fake.installs().len(), 1);
    c.shutdown().await;
}

#[tokio::test]
async fn errors_back_off_and_show_in_the_status() {
    let m = Mock::start().await;
    for status in [401, 403, 404, 503] {
        m.fault(&format!("GET {BASE}"), status, None);
    }
    let fake = Arc::new(FakeInstaller::default());
    let t0 = std::time::Instant::now();
    let (_dev, c) = client(&m, &fake);
    wait_for(60, "error status", || {
        c.status
            .borrow()
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("authentication refused"))
    })
    .await;
    assert_eq!(c.status.borrow().state, DdiState::Error);
    wait_for(60, "recovered", || {
        c.status.borrow().last_error.is_none() && c.status.borrow().last_poll.is_some()
    })
    .await;
    let polls: Vec<_> = m
        .seen()
        .into_iter()
        .filter(|s| s.method == "GET" && s.path == BASE)
        .collect();
    assert!(polls.len() >= 5);
    // Backoff 50, 100, 200, 400 ms (retry_min to retry_max of the test settings).
    assert!(
        t0.elapsed() >= std::time::Duration::from_millis(750),
        "{:?}",
        t0.elapsed()
    );
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
    let (_dev, c) = client(&m, &fake);
    let puts = |m: &Mock, p: &str| {
        m.seen()
            .into_iter()
            .filter(|s| s.path == format!("{BASE}/{p}"))
            .filter_map(|s| s.body)
            .collect::<Vec<_>>()
    };
    wait_for(60, "first configData", || {
        !puts(&m, "configData").is_empty()
    })
    .await;
    assert!(
        puts(&m, "installedBase").is_empty(),
        "the first report is attributes only"
    );
    *fake.versions.lock().unwrap() = vec![PackageVersion::new("app", "1.1")];
    wait_for(60, "installedBase", || {
        !puts(&m, "installedBase").is_empty()
    })
    .await;
    assert_eq!(
        puts(&m, "installedBase")[0],
        json!({ "name": "app", "version": "1.1" })
    );
    wait_for(60, "configData update", || {
        puts(&m, "configData").len() >= 2
    })
    .await;
    assert_eq!(puts(&m, "configData")[1]["data"]["pkg.app"], "1.1");
    // A server without installedBase: attributes only from then on.
    m.state.lock().unwrap().installed_base_status = 404;
    *fake.versions.lock().unwrap() = vec![PackageVersion::new("app", "1.2")];
    wait_for(60, "configData 1.2", || {
        puts(&m, "configData")
            .iter()
            .any(|b| b["data"]["pkg.app"] == "1.2")
    })
    .await;
    *fake.versions.lock().unwrap() = vec![PackageVersion::new("app", "1.3")];
    wait_for(60, "configData 1.3", || {
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
    let (_dev, c) = client(&m, &fake);
    wait_for(60, "installing", || {
        c.status.borrow().state == DdiState::Installing
    })
    .await;
    m.fault("/deploymentBase/50/feedback", 503, None);
    fake.release.notify_one();
    wait_for(60, "closed feedback", || !finals(&m, "50").is_empty()).await;
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

#[tokio::test]
async fn a_cancel_after_a_restart_removes_the_partial_download() {
    let m = Mock::start().await;
    let art = m.artifact(
        "app_1_all.deb",
        &data(100_000, 21),
        Link::Stall { after: 30_000 },
    );
    m.offer_app("60", "app", "1", art);
    let fake = Arc::new(FakeInstaller::default());
    let (dev, c) = client(&m, &fake);
    wait_for(60, "30 % downloaded", || {
        c.status.borrow().progress == Some(30)
    })
    .await;
    c.shutdown().await;
    assert_eq!(
        dev.spool_files().len(),
        1,
        "the partial file stays for resumption"
    );
    m.state
        .lock()
        .unwrap()
        .cancels
        .insert("61".into(), "60".into());
    m.set_links(&[("cancelAction", "/cancelAction/61")]);
    let c = dev.start(settings(&m.url), fake.clone());
    wait_for(60, "cancel feedback", || {
        !m.cancel_feedback("61").is_empty()
    })
    .await;
    assert_eq!(
        Mock::exec(&m.cancel_feedback("61")[0]),
        ("closed".into(), "success".into())
    );
    assert!(dev.spool_files().is_empty(), "{:?}", dev.spool_files());
    assert!(!dev.state_dir().join("hawkbit/action.json").exists());
    assert!(fake.installs().is_empty());
    c.shutdown().await;
}
