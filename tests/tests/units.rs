//! Every shipped systemd unit passes `systemd-analyze verify`.
//!
//! The host has no systemd as PID 1 and the binaries are not installed at their final paths,
//! so the only complaint accepted is "Command ... is not executable" for the unit's own
//! ExecStart binary; any parse error, unknown key or bad value fails the test. The full check
//! against installed binaries runs in the system test (tests/system/run).

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests crate lives in the workspace")
        .to_path_buf()
}

/// Runs `systemd-analyze verify` and returns the lines that are real problems.
fn verify(unit: &Path) -> Vec<String> {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .output()
        .expect("systemd-analyze is installed (scripts/install-deps)");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !l.contains("is not executable: No such file or directory"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn shipped_units_verify() {
    let dir = repo().join("systemd/system");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("systemd/system exists") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "service") {
            let problems = verify(&path);
            assert!(problems.is_empty(), "{}: {problems:#?}", path.display());
            n += 1;
        }
    }
    assert!(n >= 2, "expected the daemon and helper units, found {n}");
}

#[test]
fn app_template_verifies_once_filled_in() {
    let template = std::fs::read_to_string(repo().join("systemd/templates/iocom-app.service"))
        .expect("template exists");
    assert!(template.contains("@APP@") && template.contains("@EXEC@"));
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = dir.path().join("demo-app.service");
    // /bin/sleep exists everywhere, so even the executable check passes.
    let filled = template
        .replace("@APP@", "demo-app")
        .replace("@EXEC@", "/bin/sleep infinity");
    std::fs::write(&unit, filled).expect("write unit");
    let problems = verify(&unit);
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn a_broken_unit_is_caught() {
    // Guards the filter above: a unit with bad values must produce problems.
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = dir.path().join("broken.service");
    std::fs::write(
        &unit,
        "[Service]\nType=notifyy\nWatchdogSec=abc\nExecStart=/bin/true\n",
    )
    .expect("write unit");
    assert!(!verify(&unit).is_empty());
}

#[test]
fn serial_drop_in_verifies_with_the_daemon_unit() {
    let unit = std::fs::read_to_string(repo().join("systemd/system/iocomd.service"))
        .expect("daemon unit exists");
    let drop_in = std::fs::read_to_string(repo().join("systemd/templates/iocomd-serial.conf"))
        .expect("serial drop-in exists");
    assert!(drop_in.contains("SupplementaryGroups=dialout"));
    assert!(drop_in.contains("DeviceAllow=/dev/ttyUSB0 rw"));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("iocomd.service");
    std::fs::write(&path, unit).expect("write unit");
    let d = dir.path().join("iocomd.service.d");
    std::fs::create_dir(&d).expect("drop-in dir");
    std::fs::write(d.join("serial.conf"), &drop_in).expect("write drop-in");
    let problems = verify(&path);
    assert!(problems.is_empty(), "{problems:#?}");
    // The drop-in is really read: a bad value in it is reported.
    std::fs::write(
        d.join("serial.conf"),
        format!("{drop_in}PrivateDevices=maybe\n"),
    )
    .expect("write drop-in");
    assert!(!verify(&path).is_empty(), "the drop-in was not loaded");
}
