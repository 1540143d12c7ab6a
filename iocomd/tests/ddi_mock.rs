//! The DDI client against the in-process mock server, the download side of an action:
//! multi-chunk install in order, helper failure, wrong hash, dropped link resumed with
//! `Range`/`If-Range`, a restart resumed from the partial file, 416 as complete, 304, a redirect
//! to other storage (no token there).

mod ddi_support;

use ddi_support::mock::{BASE, Link, Mock};
use ddi_support::*;
use iocomd::ddi::{DdiState, InstallOutcome, PackageVersion};
use serde_json::json;
use std::sync::Arc;

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
    wait_for(60, "closed feedback", || !finals(&m, "7").is_empty()).await;
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
    let (_dev, c) = client(&m, &fake);
    wait_for(60, "closed feedback", || !finals(&m, "9").is_empty()).await;
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
    wait_for(60, "closed feedback", || !finals(&m, "3").is_empty()).await;
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
    let (_dev, c) = client(&m, &fake);
    wait_for(60, "closed feedback", || !finals(&m, "4").is_empty()).await;
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
    wait_for(60, "40 % downloaded", || {
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
    wait_for(60, "closed feedback", || !finals(&m, "5").is_empty()).await;
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
    wait_for(60, "closed feedback", || !finals(&m, "6").is_empty()).await;
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
async fn a_redirect_to_other_storage_gets_no_token() {
    let m = Mock::start().await;
    let storage = Mock::start().await;
    let d = data(20_000, 22);
    let mut art = storage.artifact("app_7_all.deb", &d, Link::Good);
    art["_links"]["download"] = m.href("/artifacts/app_7_all.deb");
    m.state.lock().unwrap().redirects.insert(
        "/artifacts/app_7_all.deb".into(),
        format!("{}/artifacts/app_7_all.deb", storage.url),
    );
    m.offer_app("70", "app", "7", art);
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t0k3n").unwrap();
    let mut h = settings(&m.url);
    h.auth = iocomd::config::HawkbitAuth::TargetToken(token);
    let fake = Arc::new(FakeInstaller::default());
    let dev = Device::new();
    let c = dev.start(h, fake.clone());
    wait_for(60, "closed feedback", || !finals(&m, "70").is_empty()).await;
    assert_eq!(finals(&m, "70"), [("closed".into(), "success".into())]);
    assert_eq!(fake.installs()[0][0].1, d);
    let first = m
        .seen()
        .into_iter()
        .find(|s| s.path == "/artifacts/app_7_all.deb")
        .unwrap();
    assert_eq!(first.headers["authorization"], "TargetToken t0k3n");
    let stored = storage.seen();
    assert_eq!(stored.len(), 1);
    assert!(
        !stored[0].headers.contains_key("authorization"),
        "no token to other hosts"
    );
    c.shutdown().await;
}
