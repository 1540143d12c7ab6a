//! The demo's environment is usable by the real verifier: the sample package it builds and
//! signs passes the install helper's verification under the demo policy, and preparing again
//! reuses the same key.

use install_helper::verify::{Policy, verify_package};

fn host_arch() -> String {
    let out = std::process::Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .expect("dpkg is installed");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

#[test]
fn demo_sample_package_verifies_under_the_demo_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let env = iocomd::demo::prepare(&state).expect("demo prepares");
    assert_eq!(env.key_fingerprint.len(), 40, "{}", env.key_fingerprint);

    let policy = Policy::load(&env.policy).expect("demo policy loads");
    let verified = verify_package(&env.sample_package, &policy, &host_arch(), None)
        .expect("sample package verifies");
    assert_eq!(verified.name, iocomd::demo::SAMPLE_PACKAGE);
    assert_eq!(verified.version, iocomd::demo::SAMPLE_VERSION);
    assert_eq!(verified.signer, env.key_fingerprint);

    // Same version again is refused exactly as in production (no reinstall, no downgrade).
    let err = verify_package(
        &env.sample_package,
        &policy,
        &host_arch(),
        Some(iocomd::demo::SAMPLE_VERSION),
    )
    .expect_err("reinstall refused");
    assert_eq!(err.code().as_str(), "not-newer");

    let again = iocomd::demo::prepare(&state).expect("demo prepares again");
    assert_eq!(again.key_fingerprint, env.key_fingerprint);
}
