//! `iocomd --check-config` (like `sshd -t`): a valid configuration is printed as it would run
//! (files, effective settings, merged keys; secrets redacted) with exit 0; an invalid one
//! names the file and the key, exit 1.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_iocomd"))
        .args(args)
        .output()
        .expect("iocomd runs");
    (
        out.status.code().expect("exit status"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_valid_configuration_is_printed_merged_with_its_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("iocomd.toml");
    std::fs::write(
        &f,
        "[device]\nname = \"gina\"\nnumber = 7\n\n[[endpoints.listen]]\ntransport = \"tcp\"\n\
         address = \"127.0.0.1:6368\"\n\n[accounts.ctl]\n\
         password_hash = \"!WdjEE1b87DwXX81xJEtDpbQ_Y_ecFo6lPzSonKFoSz8\"\n",
    )
    .unwrap();
    let (code, out, err) = run(&["--check-config", "--config", f.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("# iocomd configuration: valid\n"), "{out}");
    assert!(out.contains(&format!("#   {}", f.display())), "{out}");
    assert!(out.contains("#   device: gina7.iocafenet"), "{out}");
    assert!(
        out.contains("#   listen: 127.0.0.1:6368 (plain TCP)"),
        "{out}"
    );
    // A default the file does not set.
    assert!(out.contains("#   spool: /var/cache/iocomd/spool"), "{out}");
    assert!(
        out.contains("[device]\nname = \"gina\"\nnumber = 7\n"),
        "{out}"
    );
    assert!(out.contains("password_hash = \"<redacted>\""), "{out}");
    assert!(!out.contains("WdjEE1b87"), "{out}");
    // The shipped sample is valid.
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/../etc/iocomd/iocomd.toml");
    let (code, _, err) = run(&["--check-config", "--config", sample]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn an_invalid_configuration_names_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.toml");
    std::fs::write(&f, "[device]\nname = \"gina\"\nnumbr = 7\n").unwrap();
    let (code, out, err) = run(&["--check-config", "--config", f.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.is_empty(), "{out}");
    assert!(err.contains(&f.display().to_string()), "{err}");
    assert!(err.contains("numbr"), "{err}");
    let f2 = dir.path().join("bad2.toml");
    std::fs::write(&f2, "[spool]\nmax_package_size = \"12 parsecs\"\n").unwrap();
    let (code, _, err) = run(&["--check-config", "--config", f2.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("max_package_size"), "{err}");
    // A file that is not there.
    let (code, _, err) = run(&["--check-config", "--config", "/nonexistent/iocomd.toml"]);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/iocomd.toml"), "{err}");
}
