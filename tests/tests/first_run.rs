//! The first run of a fresh clone: `make demo` builds the helper too (through scripts/demo),
//! the demo installs only the demo's packages, install-deps waits (bounded) for a dpkg lock
//! another apt holds, `make deb` keeps its outputs inside the clone, and the system test picks
//! a free port and a machine name of its own.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests crate lives in the workspace")
        .to_path_buf()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn make_demo_builds_the_helper_and_installs_only_the_demo_packages() {
    let make = read("Makefile");
    assert!(
        make.contains("demo:\n\t./scripts/demo"),
        "make demo must run scripts/demo"
    );
    let demo = read("scripts/demo");
    assert!(demo.contains("cargo build --profile demo --locked -p iocomd -p install-helper"));
    assert!(demo.contains("exec target/demo/iocomd --demo"), "{demo}");
    // The demo's profile is release without LTO (a first run in minutes); the package keeps
    // release's thin LTO.
    let cargo = read("Cargo.toml");
    assert!(
        cargo.contains("[profile.demo]\ninherits = \"release\"\nlto = \"off\"\n"),
        "the demo profile is release without LTO"
    );
    assert!(
        cargo.contains("[profile.release]\ndebug = false\nlto = \"thin\"\n"),
        "the package keeps thin LTO"
    );
    assert!(demo.contains("scripts/install-deps demo"), "{demo}");
    // The demo's profile is a handful of packages, not the test toolchain.
    let out = Command::new("bash")
        .arg(repo().join("scripts/install-deps"))
        .arg("nonsense")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown profile is a usage error"
    );
    let deps = read("scripts/install-deps");
    let demo_list = deps
        .split("demo=(")
        .nth(1)
        .and_then(|s| s.split("\n)").next())
        .expect("demo list");
    let names: Vec<&str> = demo_list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| !w.starts_with('#'))
        .collect();
    assert_eq!(
        names,
        [
            "binutils",
            "xz-utils",
            "gnupg",
            "debsigs",
            "pkg-config",
            "libzstd-dev",
            "liblzma-dev"
        ]
    );
    // The demo's build and the package's link the same system compression libraries (one
    // build serves both): the package build depends on them and both set zstd-sys to them.
    let control = read("debian/control");
    for lib in ["pkg-config", "libzstd-dev", "liblzma-dev"] {
        assert!(
            control.contains(lib),
            "debian/control Build-Depends lacks {lib}"
        );
    }
    assert!(read("debian/rules").contains("export ZSTD_SYS_USE_PKG_CONFIG = 1"));
    assert!(read("scripts/release-env").contains("export ZSTD_SYS_USE_PKG_CONFIG=1"));
    for heavy in ["systemd", "lintian", "debootstrap", "python3-venv"] {
        assert!(!names.contains(&heavy));
    }
    // One release build for demo, docs, the package and the system test (same flags).
    for f in ["scripts/demo", "scripts/docs", "tests/system/run"] {
        assert!(
            read(f).contains("scripts/release-env"),
            "{f} does not use scripts/release-env"
        );
    }
}

#[test]
fn install_deps_waits_for_the_dpkg_lock_and_gives_up_in_bounded_time() {
    if !nix_is_root() {
        eprintln!("skipped: install-deps installs (and so waits) only as root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("lock-frontend");
    std::fs::write(&lock, "").unwrap();
    // Another package manager holds the lock (flock shows in lslocks like dpkg's fcntl lock).
    let mut holder = Command::new("flock")
        .arg(&lock)
        .args(["sleep", "30"])
        .spawn()
        .expect("flock runs");
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        let l = Command::new("lslocks")
            .args(["-n", "-o", "PATH"])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&l.stdout).contains(lock.to_str().unwrap()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let t0 = Instant::now();
    let out = Command::new("bash")
        .arg(repo().join("scripts/install-deps"))
        .arg("demo")
        .env("IOCOMD_DPKG_LOCKS", &lock)
        .env("IOCOMD_LOCK_WAIT", "5")
        .env("IOCOMD_MISSING", "iocomd-not-a-package")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let waited = t0.elapsed();
    let _ = holder.kill();
    let _ = holder.wait();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("holds the dpkg lock"), "{err}");
    assert!(err.contains("waiting up to 5s"), "{err}");
    assert!(err.contains("still held after 5s"), "{err}");
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(20),
        "{waited:?}"
    );
    // Nothing was installed: apt never ran.
    assert!(!err.contains("installing for the demo"), "{err}");
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

#[test]
fn build_outputs_stay_inside_the_clone_and_the_system_test_picks_its_port_and_name() {
    let build = read("scripts/build-deb");
    assert!(
        !build.contains("cd ..") && !build.contains("$parent"),
        "{build}"
    );
    assert!(build.contains("IOCOMD_DEB_DESTDIR=$dest"), "{build}");
    assert!(
        build.contains("--buildinfo-file=\"$dest/") && build.contains("--changes-file=\"$dest/")
    );
    let rules = read("debian/rules");
    assert!(
        rules.contains("dh_builddeb --destdir=$(or $(IOCOMD_DEB_DESTDIR),..)"),
        "{rules}"
    );
    let sys = read("tests/system/run");
    assert!(!sys.contains("16369"), "a fixed port in tests/system/run");
    assert!(
        sys.contains("machine=\"iocomd-systest-$$\""),
        "a fixed machine name"
    );
    assert!(
        sys.contains("port_free \"$port\""),
        "a given port is not checked"
    );
}
