//! The install transaction against real dpkg in isolated roots: install, upgrade, every
//! refusal before dpkg (root unchanged), dpkg failure with purge, rollback, rollback failure,
//! unhealthy rollback with a scripted systemd.

mod common;
mod txn_support;

use std::path::Path;
use std::time::Duration;

use install_api::ErrorCode;
use install_helper::dpkg::FrontendLock;
use install_helper::health::UnitSample;
use install_helper::paths::Settings;
use install_helper::receipt::{self, StepOutcome, TxResult};
use install_helper::txn::{self, Env};
use install_helper::units::{Systemd, UnitError};
use txn_support::*;

/// Stages `deb` like the service does and runs a transaction; returns the result and the
/// progress phases seen.
fn install(
    settings: &Settings,
    deb: &Path,
    systemd: Option<&mut dyn Systemd>,
) -> (TxResult, Vec<String>) {
    let (txid, taken) = stage_file(settings, deb, &FieldsVerifier);
    let staged = taken.path.clone();
    let mut phases = Vec::new();
    let mut progress = |phase: install_api::Phase, _pct: u32, _msg: &str| {
        if phases.last().map(String::as_str) != Some(phase.as_str()) {
            phases.push(phase.as_str().to_string());
        }
    };
    let mut env = Env {
        settings,
        systemd,
        progress: &mut progress,
        healthy: None,
    };
    let r = txn::run(&mut env, &FieldsVerifier, &txid, taken);
    assert!(!staged.exists(), "staged copy left behind");
    (r, phases)
}

fn step<'a>(r: &'a TxResult, name: &str) -> &'a receipt::Step {
    r.steps
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no step {name} in {:#?}", r.steps))
}

#[test]
fn install_then_upgrade_commits_caches_and_records() {
    let w = World::new();
    let s = w.settings();
    let v1 = Pkg::new("app", "1.0")
        .postinst("touch /tmp/v1-configured")
        .build(&w.debs);
    let v2 = Pkg::new("app", "2.0").build(&w.debs);

    let (r, phases) = install(&s, &v1, None);
    assert_eq!(r.code, ErrorCode::Ok, "{r:#?}");
    assert_eq!((r.from.as_deref(), r.to.as_deref()), (None, Some("1.0")));
    assert!(
        w.root.join("tmp/v1-configured").exists(),
        "postinst did not run"
    );
    assert_eq!(
        dpkg_status(&w.root, "app"),
        Some(("installed".into(), "1.0".into()))
    );
    // Without systemd the unit steps are reported as skipped, never as done.
    assert_eq!(step(&r, "restart-units").outcome, StepOutcome::Skipped);
    assert_eq!(step(&r, "health-gate").outcome, StepOutcome::Skipped);
    assert!(r.message.contains("skipped"), "{}", r.message);
    assert_eq!(phases.first().map(String::as_str), Some("verify"));
    assert!(phases.iter().any(|p| p == "install"), "{phases:?}");

    let (r2, _) = install(&s, &v2, None);
    assert_eq!(r2.code, ErrorCode::Ok, "{r2:#?}");
    assert_eq!(
        (r2.from.as_deref(), r2.to.as_deref()),
        (Some("1.0"), Some("2.0"))
    );
    assert_eq!(r2.installed.as_deref(), Some("2.0"));
    assert_eq!(
        dpkg_status(&w.root, "app"),
        Some(("installed".into(), "2.0".into()))
    );

    // Cache keeps exactly the installed version; journal gone; receipts and status recorded.
    let cached: Vec<_> = std::fs::read_dir(s.paths.cache_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(cached, ["app_2.0_all.deb"]);
    assert!(!s.paths.journal().exists());
    let lines = std::fs::read_to_string(s.paths.receipts()).unwrap();
    assert_eq!(lines.lines().count(), 2);
    assert_eq!(
        receipt::find_receipt(&s.paths.receipts(), &r.txid)
            .unwrap()
            .unwrap()
            .to
            .as_deref(),
        Some("1.0")
    );
    let last = receipt::read_status(&s.paths.status())
        .unwrap()
        .unwrap()
        .last
        .unwrap();
    assert_eq!(last.txid, r2.txid);
    assert_eq!(last.sha256, r2.sha256);
    // The host's dpkg log is untouched: ours went to the state dir.
    assert!(
        std::fs::read_to_string(&s.paths.dpkg_log)
            .unwrap()
            .contains("app")
    );
    assert_eq!(dpkg_audit(&w.root), "");
}

#[test]
fn refusals_before_dpkg_leave_the_root_unchanged() {
    let w = World::new();
    let mut s = w.settings();
    let v1 = Pkg::new("app", "1.0").build(&w.debs);
    assert_eq!(install(&s, &v1, None).0.code, ErrorCode::Ok);
    let before = tree_hash(&w.root);

    // unmet-dependencies: apt-get --simulate exits 100.
    let deps = Pkg::new("app", "2.0")
        .depends("libiocom-does-not-exist (>= 1)")
        .build(&w.debs);
    let (r, _) = install(&s, &deps, None);
    assert_eq!(r.code, ErrorCode::UnmetDependencies, "{r:#?}");
    assert!(
        r.message.contains("libiocom-does-not-exist"),
        "{}",
        r.message
    );
    assert_eq!(tree_hash(&w.root), before);

    // no-space: Installed-Size (about 1 PiB) exceeds the free space of the root filesystem.
    let huge = Pkg::new("app", "2.1")
        .installed_size(1 << 40)
        .build(&w.debs);
    let (r, _) = install(&s, &huge, None);
    assert_eq!(r.code, ErrorCode::NoSpace, "{r:#?}");
    assert_eq!(tree_hash(&w.root), before);

    // no-space from the configured reserve (statvfs vs reserve).
    let v2 = Pkg::new("app", "2.0").build(&w.debs);
    s.space_reserve = u64::MAX / 4;
    let (r, _) = install(&s, &v2, None);
    assert_eq!(r.code, ErrorCode::NoSpace, "{r:#?}");
    assert_eq!(tree_hash(&w.root), before);
    s.space_reserve = 0;

    // dpkg-locked: another process (here: an OFD lock of the test) holds lock-frontend.
    let held = FrontendLock::acquire(&s.paths.lock_frontend(), Duration::from_secs(5)).unwrap();
    s.lock_timeout = Duration::from_millis(500);
    let (r, _) = install(&s, &v2, None);
    assert_eq!(r.code, ErrorCode::DpkgLocked, "{r:#?}");
    assert!(r.message.contains("lock-frontend"), "{}", r.message);
    assert_eq!(tree_hash(&w.root), before);
    drop(held);

    // Each refusal got a receipt and left no journal, no staged file, no cached package.
    assert_eq!(
        std::fs::read_to_string(s.paths.receipts())
            .unwrap()
            .lines()
            .count(),
        5
    );
    assert!(!s.paths.journal().exists());
    assert_eq!(std::fs::read_dir(s.paths.staging_dir()).unwrap().count(), 0);
    let cached: Vec<_> = std::fs::read_dir(s.paths.cache_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(cached, ["app_1.0_all.deb"]);

    // With the lock free the same package installs.
    let (r, _) = install(&s, &v2, None);
    assert_eq!(r.code, ErrorCode::Ok, "{r:#?}");
}

#[test]
fn failed_fresh_install_is_purged_and_reported_dpkg_failed() {
    let w = World::new();
    let s = w.settings();
    let bad = Pkg::new("app", "1.0")
        .postinst("echo 'postinst: cannot configure' >&2; exit 1")
        .build(&w.debs);
    let (r, _) = install(&s, &bad, None);
    assert_eq!(r.code, ErrorCode::DpkgFailed, "{r:#?}");
    assert!(r.message.contains("purged"), "{}", r.message);
    assert!(
        r.output.contains("postinst: cannot configure"),
        "{}",
        r.output
    );
    assert_eq!(step(&r, "dpkg-install").outcome, StepOutcome::Failed);
    assert_eq!(step(&r, "rollback").outcome, StepOutcome::Done);
    assert_eq!(dpkg_status(&w.root, "app"), None);
    assert!(!w.root.join("usr/share/app/version").exists());
    assert_eq!(std::fs::read_dir(s.paths.cache_dir()).unwrap().count(), 0);
    assert_eq!(dpkg_audit(&w.root), "");
}

#[test]
fn failed_upgrade_restores_the_previous_version_from_the_cache() {
    let w = World::new();
    let s = w.settings();
    let v1 = Pkg::new("app", "1.0").build(&w.debs);
    let v2 = Pkg::new("app", "2.0")
        .postinst(r#"if [ -n "$2" ]; then echo "refusing upgrade from $2" >&2; exit 1; fi"#)
        .build(&w.debs);
    assert_eq!(install(&s, &v1, None).0.code, ErrorCode::Ok);
    let (r, phases) = install(&s, &v2, None);
    assert_eq!(r.code, ErrorCode::DpkgFailed, "{r:#?}");
    assert!(
        r.message.contains("rolled back") && r.message.contains("app 1.0 restored"),
        "{}",
        r.message
    );
    assert!(
        r.output.contains("refusing upgrade from 1.0"),
        "{}",
        r.output
    );
    assert_eq!(r.installed.as_deref(), Some("1.0"));
    assert!(phases.iter().any(|p| p == "rollback"), "{phases:?}");
    assert_eq!(
        dpkg_status(&w.root, "app"),
        Some(("installed".into(), "1.0".into()))
    );
    assert_eq!(
        std::fs::read_to_string(w.root.join("usr/share/app/version")).unwrap(),
        "1.0"
    );
    let cached: Vec<_> = std::fs::read_dir(s.paths.cache_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(cached, ["app_1.0_all.deb"]);
    assert_eq!(dpkg_audit(&w.root), "");
}

#[test]
fn a_rollback_that_fails_is_rollback_failed() {
    let w = World::new();
    let s = w.settings();
    // Both versions refuse to be configured over another version.
    let refuse = r#"if [ -n "$2" ]; then echo "refusing $2" >&2; exit 1; fi"#;
    let v1 = Pkg::new("app", "1.0").postinst(refuse).build(&w.debs);
    let v2 = Pkg::new("app", "2.0").postinst(refuse).build(&w.debs);
    assert_eq!(install(&s, &v1, None).0.code, ErrorCode::Ok);
    let (r, _) = install(&s, &v2, None);
    assert_eq!(r.code, ErrorCode::RollbackFailed, "{r:#?}");
    assert!(r.message.contains("rollback failed"), "{}", r.message);
    assert_eq!(step(&r, "rollback").outcome, StepOutcome::Failed);
    assert!(!s.paths.journal().exists());
}

/// Installs `deb` into the world's root with plain dpkg, behind the helper's back (as apt
/// would): the helper's cache has no copy of it.
fn install_behind_the_helpers_back(w: &World, deb: &Path) {
    let st = std::process::Command::new("dpkg")
        .arg(format!("--root={}", w.root.display()))
        .arg(format!("--log={}", w.tmp.path().join("dpkg.log").display()))
        .arg("-i")
        .arg(deb)
        .output()
        .unwrap();
    assert!(st.status.success(), "{st:?}");
}

#[test]
fn upgrade_of_a_version_not_in_the_cache_rolls_back_to_its_repacked_files() {
    let w = World::new();
    let s = w.settings();
    let v1 = Pkg::new("app", "1:1.0-1").build(&w.debs);
    install_behind_the_helpers_back(&w, &v1);
    let v2 = Pkg::new("app", "1:2.0-1").postinst("exit 1").build(&w.debs);
    let (r, phases) = install(&s, &v2, None);
    assert_eq!(r.code, ErrorCode::DpkgFailed, "{r:#?}");
    assert!(phases.iter().any(|p| p == "rollback-source"), "{phases:?}");
    assert_eq!(step(&r, "rollback-source").outcome, StepOutcome::Done);
    assert_eq!(step(&r, "rollback").outcome, StepOutcome::Done);
    // v1 is back, with its own files (the version file the package ships).
    assert_eq!(
        dpkg_status(&w.root, "app"),
        Some(("installed".into(), "1:1.0-1".into()))
    );
    assert_eq!(
        std::fs::read_to_string(w.root.join("usr/share/app/version")).unwrap(),
        "1:1.0-1"
    );
    assert_eq!(dpkg_audit(&w.root), "");
    // The repacked file stays cached as the installed version's rollback source.
    let cached: Vec<String> = std::fs::read_dir(s.paths.cache_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        cached.iter().any(|f| f.starts_with("app_1%3a1.0-1_")),
        "{cached:?}"
    );
    // The next upgrade (healthy) goes through and needs no repack.
    let v3 = Pkg::new("app", "1:3.0-1").build(&w.debs);
    let (r, _) = install(&s, &v3, None);
    assert_eq!(r.code, ErrorCode::Ok, "{r:#?}");
    assert!(
        r.steps.iter().all(|s| s.name != "rollback-source"),
        "{r:#?}"
    );
}

#[test]
fn upgrade_without_a_complete_rollback_source_is_refused_and_changes_nothing() {
    let w = World::new();
    let s = w.settings();
    let v1 = Pkg::new("app", "1.0").build(&w.debs);
    install_behind_the_helpers_back(&w, &v1);
    // A file of the installed version is gone: a repacked copy would be incomplete.
    std::fs::remove_file(w.root.join("usr/share/app/version")).unwrap();
    let before = tree_hash(&w.root);
    let v2 = Pkg::new("app", "2.0").build(&w.debs);
    let (r, _) = install(&s, &v2, None);
    assert_eq!(r.code, ErrorCode::NoRollbackSource, "{r:#?}");
    assert!(
        r.message
            .contains("app 1.0 is installed but not in the package cache")
            && r.message.contains("cannot find file"),
        "{}",
        r.message
    );
    assert_eq!(tree_hash(&w.root), before, "the root changed");
    assert_eq!(
        dpkg_status(&w.root, "app"),
        Some(("installed".into(), "1.0".into()))
    );
    assert!(!s.paths.journal().exists());
    let left: Vec<_> = std::fs::read_dir(s.paths.staging_dir()).unwrap().collect();
    assert!(left.is_empty(), "staging not cleaned: {left:?}");
}

/// systemd stand-in whose unit health follows the installed files: the service "runs" the
/// version in `usr/share/app/version`; version 2.0 crashes and is restarted by systemd.
struct ScriptedSystemd<'a> {
    root: &'a Path,
    pid: u32,
    restarts: u32,
    calls: Vec<String>,
}

impl Systemd for ScriptedSystemd<'_> {
    fn daemon_reload(&mut self) -> Result<(), UnitError> {
        self.calls.push("daemon-reload".into());
        Ok(())
    }
    fn restart(&mut self, unit: &str) -> Result<(), UnitError> {
        self.calls.push(format!("restart {unit}"));
        self.pid += 10;
        Ok(())
    }
    fn sample(&mut self, _unit: &str) -> Result<Option<UnitSample>, UnitError> {
        let v =
            std::fs::read_to_string(self.root.join("usr/share/app/version")).unwrap_or_default();
        let crashing = v == "2.0";
        if crashing {
            self.restarts += 1;
            self.pid += 1;
        }
        Ok(Some(UnitSample {
            active_state: if crashing { "activating" } else { "active" }.into(),
            sub_state: if crashing { "auto-restart" } else { "running" }.into(),
            service_type: "notify".into(),
            result: if crashing { "exit-code" } else { "success" }.into(),
            main_pid: self.pid,
            n_restarts: self.restarts,
            exe: Some("/usr/bin/app".into()),
        }))
    }
}

#[test]
fn unhealthy_new_version_is_rolled_back_and_regated() {
    let w = World::new();
    let mut s = w.settings();
    s.health_window = Duration::from_millis(300);
    let v1 = Pkg::new("app", "1.0").build(&w.debs);
    let v2 = Pkg::new("app", "2.0").build(&w.debs);
    let mut sd = ScriptedSystemd {
        root: &w.root,
        pid: 100,
        restarts: 0,
        calls: vec![],
    };
    let (r, _) = install(&s, &v1, Some(&mut sd));
    assert_eq!(r.code, ErrorCode::Ok, "{r:#?}");
    assert_eq!(step(&r, "health-gate").outcome, StepOutcome::Done);
    let (r, _) = install(&s, &v2, Some(&mut sd));
    assert_eq!(r.code, ErrorCode::UnhealthyRolledBack, "{r:#?}");
    assert!(
        r.message.contains("app.service") && r.message.contains("app 1.0 restored"),
        "{}",
        r.message
    );
    assert_eq!(step(&r, "health-gate").outcome, StepOutcome::Failed);
    assert_eq!(
        step(&r, "health-gate-after-rollback").outcome,
        StepOutcome::Done
    );
    assert_eq!(
        dpkg_status(&w.root, "app"),
        Some(("installed".into(), "1.0".into()))
    );
    let restarts = sd.calls.iter().filter(|c| c.starts_with("restart")).count();
    assert_eq!(restarts, 3, "{:?}", sd.calls);
}
