//! `iocomctl check FILE`: the helper's verification of a local package before it is pushed —
//! structure, control fields and the origin signature against a given keyring — with the
//! helper's codes and iocomctl's exit statuses (0 passes, 7 refused, 2 usage).

use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn check(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_iocomctl"))
        .arg("check")
        .args(args)
        .output()
        .expect("iocomctl runs");
    (
        out.status.code().expect("exit status"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn unsigned_package(dir: &Path) -> std::path::PathBuf {
    let root = dir.join("pkg");
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(root.join("usr/share/iocom-check")).unwrap();
    std::fs::write(
        root.join("DEBIAN/control"),
        "Package: iocom-check\nVersion: 2.0\nArchitecture: all\nMaintainer: t <t@t.invalid>\n\
         Description: check test\n",
    )
    .unwrap();
    std::fs::write(root.join("usr/share/iocom-check/x"), "x\n").unwrap();
    let deb = dir.join("iocom-check_2.0_all.deb");
    let st = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "-b"])
        .arg(&root)
        .arg(&deb)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    deb
}

#[test]
fn a_package_is_checked_against_a_keyring_before_it_is_pushed() {
    let dir = tempfile::tempdir().unwrap();
    let env = iocomd::demo::prepare(&dir.path().join("demo")).expect("demo environment");
    let sample = env.sample_package.to_str().unwrap().to_owned();
    let keyring = env.state_dir.join("trusted-keys/demo.asc");
    let keyring = keyring.to_str().unwrap();

    // Signed by a key of the keyring: passes, the signer and the control fields shown.
    let (code, out, err) = check(&["--keyring", keyring, &sample]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!(
            "signature:     verified, signer {}",
            env.key_fingerprint
        )),
        "{out}"
    );
    assert!(
        out.contains("package:       iocom-demo-hello 1.0 (all)"),
        "{out}"
    );
    assert!(out.contains("  Maintainer: "), "{out}");
    // Without a keyring the signature is reported, not judged.
    let (code, out, _) = check(&[&sample]);
    assert_eq!(code, 0);
    assert!(out.contains("present, not checked"), "{out}");
    // The device's policy whole, on an armhf device (an `all` package fits).
    let policy = env.policy.to_str().unwrap();
    let (code, out, err) = check(&["--policy", policy, "--arch", "armhf", "--json", &sample]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (v["ok"].as_bool(), v["signature"].as_str()),
        (Some(true), Some("verified"))
    );

    // One byte changed in the signed data: the signature no longer verifies.
    let mut bytes = std::fs::read(&env.sample_package).unwrap();
    let at = bytes.windows(8).position(|w| w == b"data.tar").unwrap() + 60 + 40;
    bytes[at] ^= 0x55;
    let tampered = dir.path().join("tampered.deb");
    std::fs::write(&tampered, &bytes).unwrap();
    let (code, out, _) = check(&["--json", "--keyring", keyring, tampered.to_str().unwrap()]);
    assert_eq!(code, 7, "{out}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["code"], "signature-invalid", "{v}");
    assert!(
        !v["error"].as_str().unwrap().contains("tampered.deb"),
        "{v}"
    );

    // Unsigned, but a keyring demands a signer.
    let unsigned = unsigned_package(dir.path());
    let (code, _, err) = check(&["--keyring", keyring, unsigned.to_str().unwrap()]);
    assert_eq!(code, 7, "{err}");
    assert!(err.contains("refused (signature-missing)"), "{err}");
    let (code, out, _) = check(&[unsigned.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.contains("signature:     none"), "{out}");

    // Not a .deb; a missing keyring (usage).
    let (code, _, err) = check(&[keyring]);
    assert_eq!(code, 7);
    assert!(err.contains("refused (bad-archive)"), "{err}");
    let (code, _, err) = check(&["--keyring", "/nonexistent.asc", &sample]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = check(&["/nonexistent.deb"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/nonexistent.deb"), "{err}");
}
