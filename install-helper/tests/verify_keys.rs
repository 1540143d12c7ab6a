//! Key validity at signature time: expiry, revocation, signing subkeys. rPGP checks only the
//! cryptography; these checks are ours. Where debsig-verify (gpg) differs, the test says so.

mod common;

use std::fs;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{DebSpec, Gpg, Key, KeyAlgo, debsig_verify, debsigs_sign, host_arch};
use install_api::ErrorCode;
use install_helper::verify::{Policy, verify_package};

const DAY: u64 = 86_400;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn faked(t: u64) -> String {
    format!("--faked-system-time={t}!")
}

/// A policy trusting exactly `key` as currently known to `gpg`.
fn policy(gpg: &Gpg, key: &Key, dir: &Path) -> Policy {
    let keys = dir.join("keys");
    let _ = fs::remove_dir_all(&keys);
    gpg.write_key(key, &keys, false);
    let p = dir.join("policy.toml");
    fs::write(
        &p,
        "allowed_packages = [\"iocom-*\"]\ntrusted_keys_dir = \"keys\"\n",
    )
    .unwrap();
    Policy::load(&p).unwrap()
}

fn deb(dir: &Path, version: &str) -> std::path::PathBuf {
    DebSpec::new("iocom-app", version, "all")
        .file("usr/bin/iocom-app", b"#!/bin/sh\n")
        .build(dir)
}

#[test]
fn signature_after_key_expiry_is_untrusted_but_before_is_fine() {
    let gpg = Gpg::new();
    let dir = tempfile::tempdir().unwrap();
    let t0 = now() - 10 * DAY;
    let key = gpg.gen_key_with(
        "Exp <exp@example.invalid>",
        KeyAlgo::Ed25519,
        "1y",
        &[&faked(t0)],
    );
    // Signed now (key still valid for a year at that point) ...
    let late = deb(dir.path(), "1.0");
    debsigs_sign(&gpg, &late, &key);
    // ... signed while the key was young ...
    let early = deb(dir.path(), "1.1");
    common::sign_by_hand_with(&gpg, &early, &key, false, &[&faked(t0 + DAY / 2)]);
    // ... then the key's expiry is moved to t0 + 3 days by a newer self-signature.
    common::run(gpg.cmd().arg(faked(t0 + DAY)).args([
        "--quick-set-expire",
        &key.fingerprint,
        "2d",
    ]));
    let p = policy(&gpg, &key, dir.path());
    let err = verify_package(&late, &p, &host_arch(), None).unwrap_err();
    assert_eq!(err.code(), ErrorCode::UntrustedSigner, "{err}");
    assert!(err.to_string().contains("expired"), "{err}");
    // gpg reports "Good signature ... Note: This key has expired!" and debsig-verify accepts:
    // it does not check expiry against the signature time. We are stricter.
    assert_eq!(debsig_verify(&gpg, &late, &key), 0);
    // A signature made while the key was valid stays valid after the key expired.
    let ok = verify_package(&early, &p, &host_arch(), None).unwrap();
    assert_eq!(ok.signer, key.fingerprint);
    assert_eq!(debsig_verify(&gpg, &early, &key), 0);
}

#[test]
fn revoked_key_is_untrusted() {
    let gpg = Gpg::new();
    let dir = tempfile::tempdir().unwrap();
    let key = gpg.gen_key("Rev <rev@example.invalid>", KeyAlgo::Ed25519);
    let d = deb(dir.path(), "1.0");
    debsigs_sign(&gpg, &d, &key);
    assert!(verify_package(&d, &policy(&gpg, &key, dir.path()), &host_arch(), None).is_ok());
    gpg.revoke(&key);
    let p = policy(&gpg, &key, dir.path());
    let err = verify_package(&d, &p, &host_arch(), None).unwrap_err();
    assert_eq!(err.code(), ErrorCode::UntrustedSigner, "{err}");
    assert!(err.to_string().contains("revoked"), "{err}");
    // gpg says "Good signature ... WARNING: This key has been revoked by its owner!" and
    // debsig-verify accepts the package: it does not check revocation. We are stricter.
    assert_eq!(debsig_verify(&gpg, &d, &key), 0);
}

#[test]
fn signing_subkey_is_accepted_and_reports_the_primary() {
    let gpg = Gpg::new();
    let dir = tempfile::tempdir().unwrap();
    let key = gpg.gen_key("Sub <sub@example.invalid>", KeyAlgo::Ed25519);
    let sub = gpg.add_signing_subkey(&key, KeyAlgo::Ed25519);
    assert_ne!(sub, key.fingerprint);
    let d = deb(dir.path(), "1.0");
    debsigs_sign(&gpg, &d, &key);
    // gpg picked the subkey.
    let sig = common::run(
        std::process::Command::new("ar")
            .arg("p")
            .arg(&d)
            .arg("_gpgorigin"),
    );
    let sig_path = dir.path().join("sig");
    fs::write(&sig_path, sig).unwrap();
    let listing =
        String::from_utf8(common::run(gpg.cmd().arg("--list-packets").arg(&sig_path))).unwrap();
    assert!(
        listing.contains(&sub[24..]),
        "not signed by the subkey: {listing}"
    );
    let p = policy(&gpg, &key, dir.path());
    let ok = verify_package(&d, &p, &host_arch(), None).unwrap();
    assert_eq!(ok.signer, key.fingerprint);
    // gpg agrees. debsig-verify 0.28 does not handle signing subkeys: with the policy under
    // the primary key ID it finds no policy (11), under the subkey ID it selects none (12).
    let payload = dir.path().join("payload");
    fs::write(&payload, common::signed_payload(&d)).unwrap();
    common::run(gpg.cmd().arg("--verify").arg(&sig_path).arg(&payload));
    assert_eq!(debsig_verify(&gpg, &d, &key), 11);
    let sub_key = Key {
        fingerprint: key.fingerprint.clone(),
        key_id: sub[24..].to_owned(),
    };
    assert_eq!(debsig_verify(&gpg, &d, &sub_key), 12);
}

#[test]
fn soft_revocation_counts_from_its_date_hard_revocation_always() {
    let gpg = Gpg::new();
    let dir = tempfile::tempdir().unwrap();
    let t0 = now() - 10 * DAY;
    let key = gpg.gen_key_with(
        "Soft <soft@example.invalid>",
        KeyAlgo::Ed25519,
        "1y",
        &[&faked(t0)],
    );
    let before = deb(dir.path(), "1.0");
    common::sign_by_hand_with(&gpg, &before, &key, false, &[&faked(t0 + DAY)]);
    let after = deb(dir.path(), "1.1");
    common::sign_by_hand_with(&gpg, &after, &key, false, &[&faked(t0 + 3 * DAY)]);
    // "Key is superseded", dated t0 + 2 days.
    gpg.revoke_with_reason(&key, "2", &[&faked(t0 + 2 * DAY)]);
    let p = policy(&gpg, &key, dir.path());
    assert_eq!(
        verify_package(&before, &p, &host_arch(), None)
            .unwrap()
            .signer,
        key.fingerprint
    );
    let err = verify_package(&after, &p, &host_arch(), None).unwrap_err();
    assert_eq!(err.code(), ErrorCode::UntrustedSigner, "{err}");
    assert!(err.to_string().contains("revoked"), "{err}");
    // "Key material compromised" invalidates every signature, whenever made.
    gpg.revoke_with_reason(&key, "1", &[&faked(t0 + 5 * DAY)]);
    let p = policy(&gpg, &key, dir.path());
    let err = verify_package(&before, &p, &host_arch(), None).unwrap_err();
    assert_eq!(err.code(), ErrorCode::UntrustedSigner, "{err}");
}

#[test]
fn expired_signature_and_signature_predating_its_key_are_refused() {
    let gpg = Gpg::new();
    let dir = tempfile::tempdir().unwrap();
    let t0 = now() - 10 * DAY;
    let key = gpg.gen_key_with(
        "Old <old@example.invalid>",
        KeyAlgo::Ed25519,
        "1y",
        &[&faked(t0)],
    );
    let p = policy(&gpg, &key, dir.path());
    // A signature that expired one day after it was made, nine days ago.
    let d = deb(dir.path(), "1.0");
    common::sign_by_hand_with(
        &gpg,
        &d,
        &key,
        false,
        &[&faked(t0 + DAY), "--default-sig-expire", "1d"],
    );
    let err = verify_package(&d, &p, &host_arch(), None).unwrap_err();
    assert_eq!(err.code(), ErrorCode::SignatureInvalid, "{err}");
    assert!(err.to_string().contains("expired"), "{err}");
    assert_ne!(debsig_verify(&gpg, &d, &key), 0);
    // A signature dated before the key existed.
    let d = deb(dir.path(), "1.1");
    common::sign_by_hand_with(
        &gpg,
        &d,
        &key,
        false,
        &[&faked(t0 - DAY), "--ignore-time-conflict"],
    );
    let err = verify_package(&d, &p, &host_arch(), None).unwrap_err();
    assert_eq!(err.code(), ErrorCode::UntrustedSigner, "{err}");
    assert!(err.to_string().contains("predates"), "{err}");
}
