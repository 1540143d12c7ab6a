//! The cached package file of a committed transaction is made durable after the result
//! (`txn::run_deferred` + `CacheSync`), and recovery after a crash before that keeps it only
//! if it still has the verified SHA-256: against real dpkg in isolated roots.

mod common;
mod txn_support;

use std::path::Path;

use install_api::ErrorCode;
use install_helper::journal::{Journal, JournalPhase};
use install_helper::paths::Settings;
use install_helper::receipt::{self, TxResult};
use install_helper::recover::{self, Recovery};
use install_helper::txn::{self, CacheSync};
use txn_support::*;

/// Stages `deb` like the service does and runs the transaction until its result.
fn install_deferred(settings: &Settings, deb: &Path) -> (TxResult, Option<CacheSync>) {
    let (txid, taken) = stage_file(settings, deb, &FieldsVerifier);
    with_quiet_env(settings, |env| {
        txn::run_deferred(env, &FieldsVerifier, &txid, taken)
    })
}

fn recover_now(settings: &Settings) -> Recovery {
    with_quiet_env(settings, |env| recover::recover(env).unwrap())
}

fn cached(s: &Settings) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(s.paths.cache_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn receipts(s: &Settings) -> usize {
    std::fs::read_to_string(s.paths.receipts())
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// Overwrites `f` with as many zero bytes (what a power cut before the writeback can leave).
fn zero(f: &Path) {
    let len = std::fs::metadata(f).unwrap().len() as usize;
    std::fs::write(f, vec![0u8; len]).unwrap();
}

#[test]
fn the_result_comes_before_the_cache_sync_which_then_prunes_and_clears_the_journal() {
    let w = World::new();
    let s = w.settings();
    let v1 = Pkg::new("app", "1.0").build(&w.debs);
    let v2 = Pkg::new("app", "2.0").build(&w.debs);
    let (r1, sync) = install_deferred(&s, &v1);
    assert_eq!(r1.code, ErrorCode::Ok, "{r1:#?}");
    sync.expect("a committed transaction has a cache sync")
        .complete();
    assert!(!s.paths.journal().exists());

    let (r2, sync) = install_deferred(&s, &v2);
    assert_eq!(r2.code, ErrorCode::Ok, "{r2:#?}");
    let sync = sync.unwrap();
    // The result is recorded; the journal says what is left to do.
    assert_eq!(receipts(&s), 2);
    let j = Journal::read(&s.paths.journal()).unwrap().unwrap();
    assert_eq!(
        (j.phase, j.txid.as_str()),
        (JournalPhase::Committed, r2.txid.as_str())
    );
    assert_eq!(sync.new_deb(), j.new_deb);
    assert_eq!(Some(j.sha256.clone()), r2.sha256);
    assert_eq!(cached(&s), ["app_1.0_all.deb", "app_2.0_all.deb"]);
    sync.complete();
    assert_eq!(cached(&s), ["app_2.0_all.deb"]);
    assert!(!s.paths.journal().exists());
    assert_eq!(recover_now(&s), Recovery::Clean);
}

#[test]
fn a_refused_or_rolled_back_transaction_has_no_cache_sync() {
    let w = World::new();
    let s = w.settings();
    let bad = Pkg::new("app", "1.0").postinst("exit 1").build(&w.debs);
    let (r, sync) = install_deferred(&s, &bad);
    assert_eq!(r.code, ErrorCode::DpkgFailed, "{r:#?}");
    assert!(sync.is_none());
    assert!(!s.paths.journal().exists());
    assert!(cached(&s).is_empty(), "{:?}", cached(&s));
}

/// A world where app 1.0 was installed and its cache sync has not run yet.
fn v1_installed_sync_pending() -> (World, Settings, TxResult, Option<CacheSync>) {
    let w = World::new();
    let s = w.settings();
    let v1 = Pkg::new("app", "1.0").build(&w.debs);
    let (r, sync) = install_deferred(&s, &v1);
    assert_eq!(r.code, ErrorCode::Ok, "{r:#?}");
    (w, s, r, sync)
}

#[test]
fn after_a_crash_an_intact_cached_package_is_kept_and_a_missing_result_recorded() {
    let (w, s, r, sync) = v1_installed_sync_pending();
    // The helper dies after the commit, before the receipt and the cache sync.
    drop(sync);
    std::fs::remove_file(s.paths.receipts()).unwrap();
    std::fs::remove_file(s.paths.status()).unwrap();
    let rec = recover_now(&s);
    assert_eq!(
        rec,
        Recovery::Committed {
            txid: r.txid.clone(),
            kept: true,
            recorded: true
        }
    );
    assert_eq!(cached(&s), ["app_1.0_all.deb"]);
    assert!(!s.paths.journal().exists());
    let got = receipt::find_receipt(&s.paths.receipts(), &r.txid)
        .unwrap()
        .unwrap();
    assert_eq!(got.code, ErrorCode::Ok);
    assert_eq!(
        (got.to.as_deref(), got.installed.as_deref()),
        (Some("1.0"), Some("1.0"))
    );
    assert_eq!(got.sha256, r.sha256);
    assert_eq!(recover_now(&s), Recovery::Clean);
    // It is the rollback source of the next update: no repack.
    let v2 = Pkg::new("app", "2.0").postinst("exit 1").build(&w.debs);
    let (r2, sync) = install_deferred(&s, &v2);
    assert!(sync.is_none());
    assert_eq!(r2.code, ErrorCode::DpkgFailed, "{r2:#?}");
    assert!(
        r2.steps.iter().all(|s| s.name != "rollback-source"),
        "{r2:#?}"
    );
    assert_eq!(
        dpkg_status(&w.root, "app"),
        Some(("installed".into(), "1.0".into()))
    );
}

#[test]
fn after_a_crash_a_cached_package_without_the_verified_hash_is_not_a_rollback_source() {
    let (w, s, r, sync) = v1_installed_sync_pending();
    let deb = sync.as_ref().unwrap().new_deb().to_path_buf();
    drop(sync);
    // A power cut before the copy was written back: same size, zeros.
    zero(&deb);
    let rec = recover_now(&s);
    assert_eq!(
        rec,
        Recovery::Committed {
            txid: r.txid.clone(),
            kept: false,
            recorded: false
        }
    );
    assert!(cached(&s).is_empty(), "{:?}", cached(&s));
    assert!(!s.paths.journal().exists());
    // The result was recorded once, before the crash; the package stays installed.
    assert_eq!(receipts(&s), 1);
    assert_eq!(
        dpkg_status(&w.root, "app"),
        Some(("installed".into(), "1.0".into()))
    );
    // The next update takes its rollback source from the installed files instead.
    let v2 = Pkg::new("app", "2.0").build(&w.debs);
    let (r2, sync) = install_deferred(&s, &v2);
    assert_eq!(r2.code, ErrorCode::Ok, "{r2:#?}");
    assert!(
        r2.steps.iter().any(|s| s.name == "rollback-source"),
        "{r2:#?}"
    );
    sync.unwrap().complete();
    assert_eq!(cached(&s), ["app_2.0_all.deb"]);
}

#[test]
fn a_crash_while_gating_finishes_but_drops_a_cached_package_that_lost_its_data() {
    let (w, s, r, sync) = v1_installed_sync_pending();
    drop(sync);
    // As if the helper had died in the gate (after dpkg), and the copy's data was lost.
    let mut j = Journal::read(&s.paths.journal()).unwrap().unwrap();
    j.advance(JournalPhase::Gating, &s.paths.journal()).unwrap();
    zero(&j.new_deb);
    let Recovery::Transaction(t) = recover_now(&s) else {
        panic!("not resumed")
    };
    assert_eq!(t.code, ErrorCode::Ok, "{t:#?}");
    assert_eq!(t.txid, r.txid);
    assert!(cached(&s).is_empty(), "{:?}", cached(&s));
    assert!(!s.paths.journal().exists());
    // With its data intact, the same crash keeps it.
    let v2 = Pkg::new("app", "2.0").build(&w.debs);
    let (r2, sync) = install_deferred(&s, &v2);
    assert_eq!(r2.code, ErrorCode::Ok, "{r2:#?}");
    drop(sync);
    let mut j = Journal::read(&s.paths.journal()).unwrap().unwrap();
    j.advance(JournalPhase::Gating, &s.paths.journal()).unwrap();
    let Recovery::Transaction(t) = recover_now(&s) else {
        panic!("not resumed")
    };
    assert_eq!(t.code, ErrorCode::Ok, "{t:#?}");
    assert_eq!(cached(&s), ["app_2.0_all.deb"]);
    assert!(!s.paths.journal().exists());
}
