//! The single verification pass refuses what separate passes refused: a check that the
//! restructuring could have skipped is exercised here — the signature over data the pass
//! hashes as it streams by (from a regular file, through the helper's copy, and from a pipe,
//! where the signature cannot be read ahead), a `_gpgorigin` that differs from the one read
//! ahead, the ranking of a forged signature before a content refusal, and the version order,
//! now a check of its own.

mod common;

use std::fs;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

use common::{DebSpec, Gpg, Key, KeyAlgo, debsigs_sign, host_arch, sign_by_hand_with};
use install_api::ErrorCode;
use install_helper::paths::Paths;
use install_helper::stage;
use install_helper::verifier::PolicyVerifier;
use install_helper::verify::pass::{self, Prefetch};
use install_helper::verify::{Policy, VerifyError, ar, check_order, verify_package};

struct Fixture {
    dir: tempfile::TempDir,
    gpg: Gpg,
    key: Key,
}

impl Fixture {
    fn new() -> Self {
        let gpg = Gpg::new();
        let key = gpg.gen_key("Trusted Origin <origin@example.invalid>", KeyAlgo::Ed25519);
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            gpg,
            key,
        }
    }

    fn policy_path(&self, extra: &str) -> PathBuf {
        let pdir = self.dir.path().join("etc");
        self.gpg
            .write_key(&self.key, &pdir.join("trusted-keys"), false);
        let path = pdir.join("install-policy.toml");
        fs::write(
            &path,
            format!(
                "allowed_packages = [\"iocom-*\"]\ntrusted_keys_dir = \"trusted-keys\"\n{extra}\n"
            ),
        )
        .unwrap();
        path
    }

    fn policy(&self, extra: &str) -> Policy {
        Policy::load(&self.policy_path(extra)).unwrap()
    }

    fn signed(&self, spec: DebSpec) -> PathBuf {
        let deb = spec.build(self.dir.path());
        debsigs_sign(&self.gpg, &deb, &self.key);
        deb
    }

    fn verifier(&self) -> PolicyVerifier {
        let root = self.dir.path().join("root");
        fs::create_dir_all(&root).unwrap();
        let paths = Paths::isolated(&root, &self.dir.path().join("state"), &self.policy_path(""));
        PolicyVerifier::new(self.policy(""), &host_arch()).for_target(&paths)
    }
}

fn app(version: &str) -> DebSpec {
    DebSpec::new("iocom-app", version, "all").file("usr/bin/iocom-app", b"#!/bin/sh\necho hi\n")
}

/// A copy of `deb` with one byte of its data member's contents flipped.
fn tampered(deb: &Path) -> PathBuf {
    let a = ar::scan(
        BufReader::new(fs::File::open(deb).unwrap()),
        &ar::Limits::default(),
    )
    .unwrap();
    let dm = a.data_member();
    let mut bytes = fs::read(deb).unwrap();
    let at = usize::try_from(dm.offset + dm.size / 2).unwrap();
    bytes[at] ^= 0x40;
    let out = deb.with_extension("tampered.deb");
    fs::write(&out, bytes).unwrap();
    out
}

/// The package through a pipe: not a regular file, so nothing can be read ahead.
fn pipe_of(deb: &Path) -> (fs::File, std::thread::JoinHandle<()>) {
    let (r, w) = std::io::pipe().unwrap();
    let bytes = fs::read(deb).unwrap();
    let writer = std::thread::spawn(move || {
        let mut w = w;
        let _ = w.write_all(&bytes);
    });
    (fs::File::from(std::os::fd::OwnedFd::from(r)), writer)
}

fn take(f: &Fixture, src: fs::File, txid: &str) -> stage::Taken {
    stage::take(
        src,
        &f.dir.path().join("staging"),
        txid,
        (1 << 30, 0),
        &f.verifier(),
        stage::Watch {
            advisory_size: None,
            min_interval: std::time::Duration::ZERO,
            report: &mut |_| {},
        },
    )
    .unwrap()
}

#[test]
fn tampered_data_is_refused_from_a_file_through_the_copy_and_from_a_pipe() {
    let f = Fixture::new();
    let deb = f.signed(app("1.0"));
    let bad = tampered(&deb);
    let policy = f.policy("");
    let e = verify_package(&bad, &policy, &host_arch(), None).unwrap_err();
    assert_eq!(e.code(), ErrorCode::SignatureInvalid, "{e}");

    let t = take(&f, fs::File::open(&bad).unwrap(), "file");
    assert_eq!(t.verdict.unwrap_err().code, ErrorCode::SignatureInvalid);

    let (src, writer) = pipe_of(&bad);
    let t = take(&f, src, "pipe");
    writer.join().unwrap();
    let r = t.verdict.unwrap_err();
    assert_eq!(r.code, ErrorCode::SignatureInvalid, "{}", r.message);

    // The intact package passes both ways, and the copy is byte for byte the package.
    for (txid, src) in [
        ("ok-file", fs::File::open(&deb).unwrap()),
        ("ok-pipe", pipe_of(&deb).0),
    ] {
        let t = take(&f, src, txid);
        let cand = t.verdict.unwrap();
        assert_eq!(
            fs::read(&t.path).unwrap(),
            fs::read(&deb).unwrap(),
            "{txid}"
        );
        assert_eq!(cand.signer, f.key.fingerprint.to_uppercase(), "{txid}");
        use sha2::Digest;
        let want: String = sha2::Sha256::digest(fs::read(&deb).unwrap())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(cand.sha256, want, "{txid}");
    }
}

#[test]
fn a_signature_other_than_the_one_read_ahead_is_refused() {
    let f = Fixture::new();
    let policy = f.policy("");
    let deb = f.signed(app("1.0"));
    let other = f.signed(app("1.1"));
    let other_sig = match pass::prefetch_signature(&fs::File::open(&other).unwrap()) {
        Prefetch::Found(s) => s,
        p => panic!("no signature read ahead: {p:?}"),
    };
    let own = pass::prefetch_signature(&fs::File::open(&deb).unwrap());
    assert!(matches!(own, Prefetch::Found(ref s) if *s != other_sig));
    let verify = |path: &Path, prefetch: Prefetch| {
        pass::verify_stream(
            BufReader::new(fs::File::open(path).unwrap()),
            prefetch,
            path,
            &policy,
            &host_arch(),
            None,
        )
    };
    // The signature read ahead verifies over its own package, but the stream carries another.
    let e = verify(&deb, Prefetch::Found(other_sig.clone())).unwrap_err();
    assert!(
        matches!(&e, VerifyError::SignatureInvalid { reason, .. } if reason.contains("changed")),
        "{e}"
    );
    // A signature read ahead that is gone from the stream.
    let unsigned = app("1.2").build(f.dir.path());
    let e = verify(&unsigned, Prefetch::Found(other_sig)).unwrap_err();
    assert!(
        matches!(&e, VerifyError::SignatureInvalid { reason, .. } if reason.contains("disappeared")),
        "{e}"
    );
    // No signature at all, known ahead or not.
    assert_eq!(
        pass::prefetch_signature(&fs::File::open(&unsigned).unwrap()),
        Prefetch::Absent
    );
    for p in [Prefetch::Absent, Prefetch::Unknown] {
        assert_eq!(
            verify(&unsigned, p).unwrap_err().code(),
            ErrorCode::SignatureMissing
        );
    }
    assert!(verify(&deb, own).is_ok());
}

#[test]
fn a_forged_signature_ranks_before_what_the_content_check_found() {
    let f = Fixture::new();
    let policy = f.policy("");
    // Refused by the content check when signed correctly...
    let spec = app("1.0").file("etc/cron.d/iocom-app", b"* * * * * root true\n");
    let deb = f.signed(spec);
    let e = verify_package(&deb, &policy, &host_arch(), None).unwrap_err();
    assert_eq!(e.code(), ErrorCode::ContentPathDenied, "{e}");
    // ...but with its data changed the signature is what fails, whatever the pass decompressed.
    let e = verify_package(&tampered(&deb), &policy, &host_arch(), None).unwrap_err();
    assert_eq!(e.code(), ErrorCode::SignatureInvalid, "{e}");
}

#[test]
fn the_version_order_is_checked_on_its_own() {
    let f = Fixture::new();
    let deb = f.signed(app("1.0-2"));
    let strict = f.policy("");
    let pkg = verify_package(&deb, &strict, &host_arch(), None).unwrap();
    assert!(check_order(&pkg, &strict, None).is_ok());
    assert!(check_order(&pkg, &strict, Some("1.0-1")).is_ok());
    for installed in ["1.0-2", "1.0-10", "2:0.1", "not a version!"] {
        let e = check_order(&pkg, &strict, Some(installed)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::NotNewer, "{installed}: {e}");
    }
    let lax = f.policy("allow_reinstall = true\nallow_downgrade = true");
    assert!(check_order(&pkg, &lax, Some("1.0-10")).is_ok());
    // verify_package runs it too.
    let e = verify_package(&deb, &strict, &host_arch(), Some("1.0-2")).unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotNewer);
}

#[test]
fn a_pipe_is_verified_from_the_hash_taken_in_passing_without_reading_the_copy() {
    let f = Fixture::new();
    let policy = f.policy("");
    let nowhere = f.dir.path().join("no-copy-here.deb");
    let verify = |deb: &Path, copy: &Path| {
        let (src, writer) = pipe_of(deb);
        let r = pass::verify_stream(
            BufReader::new(src),
            Prefetch::Unknown,
            copy,
            &policy,
            &host_arch(),
            None,
        );
        writer.join().unwrap();
        r
    };
    // SHA-256 (debsigs' and gpg's default): finished from the hash of the pass, so a copy
    // that is not there is never read; a flipped data byte still fails the signature.
    let deb = f.signed(app("1.0"));
    let v = verify(&deb, &nowhere).unwrap();
    assert_eq!(v.signer, f.key.fingerprint);
    let e = verify(&tampered(&deb), &nowhere).unwrap_err();
    assert!(matches!(e, VerifyError::SignatureInvalid { .. }), "{e}");
    // A SHA-512 signature does not fit the SHA-256 taken in passing: the signed members are
    // read again from the copy (and verify).
    let sha512 = app("1.1").build(f.dir.path());
    sign_by_hand_with(&f.gpg, &sha512, &f.key, false, &["--digest-algo", "SHA512"]);
    let e = verify(&sha512, &nowhere).unwrap_err();
    assert!(
        matches!(e, VerifyError::Io { ref path, .. } if *path == nowhere),
        "{e}"
    );
    assert_eq!(verify(&sha512, &sha512).unwrap().signer, f.key.fingerprint);
}
