//! End-to-end verdicts of `verify_package` on real .debs built with dpkg-deb, signed with
//! debsigs (or by hand for zstd), each signature verdict cross-checked with debsig-verify.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Comp, DebSpec, Gpg, Key, KeyAlgo, debsig_verify, debsigs_sign, host_arch, run};
use install_api::ErrorCode;
use install_helper::verify::{Policy, VerifyError, ar, verify_package};

/// debsig-verify exit codes.
const DSV_OK: i32 = 0;
const DSV_NO_SIG: i32 = 10;
const DSV_NO_POLICY: i32 = 11;
const DSV_BAD_SIG: i32 = 13;

struct Env {
    dir: tempfile::TempDir,
    gpg: Gpg,
    key: Key,
    host: String,
}

fn env() -> Env {
    let gpg = Gpg::new();
    let key = gpg.gen_key("Trusted Origin <origin@example.invalid>", KeyAlgo::Ed25519);
    Env {
        dir: tempfile::tempdir().unwrap(),
        gpg,
        key,
        host: host_arch(),
    }
}

impl Env {
    /// Writes a policy trusting `self.key` (binary export) plus `extra` lines, and loads it.
    fn policy(&self, extra: &str) -> Policy {
        let pdir = self.dir.path().join("etc");
        self.gpg
            .write_key(&self.key, &pdir.join("trusted-keys"), false);
        let text = format!(
            "allowed_packages = [\"iocom-*\"]\ntrusted_keys_dir = \"trusted-keys\"\n{extra}\n"
        );
        let path = pdir.join("install-policy.toml");
        fs::write(&path, text).unwrap();
        Policy::load(&path).unwrap()
    }

    fn signed(&self, spec: DebSpec) -> PathBuf {
        let deb = spec.build(self.dir.path());
        debsigs_sign(&self.gpg, &deb, &self.key);
        deb
    }

    fn verify(
        &self,
        deb: &Path,
        policy: &Policy,
        installed: Option<&str>,
    ) -> Result<install_helper::verify::VerifiedPackage, VerifyError> {
        verify_package(deb, policy, &self.host, installed)
    }

    fn dsv(&self, deb: &Path) -> i32 {
        debsig_verify(&self.gpg, deb, &self.key)
    }
}

fn code(r: Result<install_helper::verify::VerifiedPackage, VerifyError>) -> ErrorCode {
    match r {
        Ok(p) => panic!("unexpectedly verified: {p:?}"),
        Err(e) => {
            // Every refusal has a message naming the file or package.
            assert!(!e.to_string().is_empty());
            e.code()
        }
    }
}

fn sha256sum(p: &Path) -> String {
    let out = String::from_utf8(run(Command::new("sha256sum").arg(p))).unwrap();
    out.split_whitespace().next().unwrap().to_owned()
}

fn app(version: &str) -> DebSpec {
    DebSpec::new("iocom-app", version, "all").file("usr/bin/iocom-app", b"#!/bin/sh\necho hi\n")
}

#[test]
fn success_reports_signer_hash_units_and_fields() {
    let e = env();
    let policy = e.policy("");
    let deb = e.signed(
        app("1.2-3")
            .file(
                "lib/systemd/system/iocom-app.service",
                b"[Service]\nExecStart=/usr/bin/iocom-app\n",
            )
            .file("usr/lib/systemd/system/iocom-extra.service", b"[Service]\n")
            .file("lib/systemd/system/iocom-tmpl@.service", b"[Service]\n")
            .file(
                "lib/systemd/system/iocom-app.service.d/override.conf",
                b"[Service]\n",
            )
            .file("lib/systemd/system/iocom-app.socket", b"[Socket]\n")
            .field("Installed-Size", "7")
            .field("X-Iocom-Units", "iocomd.service, iocom-app.service"),
    );
    assert_eq!(
        common::ar_members(&deb),
        [
            "debian-binary",
            "control.tar.xz",
            "data.tar.xz",
            "_gpgorigin"
        ]
    );
    let p = e.verify(&deb, &policy, Some("1.2-2")).unwrap();
    assert_eq!(p.name, "iocom-app");
    assert_eq!(p.version, "1.2-3");
    assert_eq!(p.architecture, "all");
    assert_eq!(p.sha256, sha256sum(&deb));
    assert_eq!(p.signer, e.key.fingerprint);
    assert_eq!(p.installed_size_kib, Some(7));
    assert_eq!(
        p.units,
        ["iocomd.service", "iocom-app.service", "iocom-extra.service"]
    );
    assert_eq!(
        p.control.get("Maintainer").map(String::as_str),
        Some("Test <t@example.invalid>")
    );
    assert_eq!(e.dsv(&deb), DSV_OK);
    // First install (nothing installed) and host architecture are fine too.
    let native = e.signed(DebSpec::new("iocom-native", "0.1", &e.host));
    let p = e.verify(&native, &policy, None).unwrap();
    assert_eq!(
        (p.architecture.as_str(), p.units.len()),
        (e.host.as_str(), 0)
    );
    assert_eq!(e.dsv(&native), DSV_OK);
}

#[test]
fn success_with_gzip_zstd_rsa_and_armored_forms() {
    let e = env();
    // gzip, signed by debsigs.
    let policy = e.policy("");
    let gz = e.signed(app("1.0").compression(Comp::Gzip));
    assert_eq!(
        e.verify(&gz, &policy, None).unwrap().signer,
        e.key.fingerprint
    );
    assert_eq!(e.dsv(&gz), DSV_OK);
    // zstd, signed correctly by hand, with an armored signature.
    let zst = app("1.1").compression(Comp::Zstd).build(e.dir.path());
    common::sign_by_hand(&e.gpg, &zst, &e.key, true);
    assert_eq!(
        common::ar_members(&zst),
        [
            "debian-binary",
            "control.tar.zst",
            "data.tar.zst",
            "_gpgorigin"
        ]
    );
    assert_eq!(
        e.verify(&zst, &policy, None).unwrap().signer,
        e.key.fingerprint
    );
    // Uncompressed members.
    let none = e.signed(app("1.2").compression(Comp::None));
    assert_eq!(e.verify(&none, &policy, None).unwrap().version, "1.2");
    assert_eq!(e.dsv(&none), DSV_OK);
    // RSA-3072 key, trusted through an armored key file.
    let rsa = e
        .gpg
        .gen_key("RSA Origin <rsa@example.invalid>", KeyAlgo::Rsa3072);
    let rdir = e.dir.path().join("rsa");
    e.gpg.write_key(&rsa, &rdir.join("keys"), true);
    fs::write(
        rdir.join("p.toml"),
        "allowed_packages = [\"iocom-*\"]\ntrusted_keys = [\"keys/".to_owned()
            + &rsa.key_id
            + ".asc\"]\n",
    )
    .unwrap();
    let rpolicy = Policy::load(&rdir.join("p.toml")).unwrap();
    // debsigs passes --openpgp, so with an RSA key gpg picks SHA-1: refused by us and by
    // debsig-verify alike.
    let sha1 = app("2.0").build(e.dir.path());
    debsigs_sign(&e.gpg, &sha1, &rsa);
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ar p {} _gpgorigin | gpg --list-packets >&2",
            sha1.display()
        ))
        .status();
    let err = e.verify(&sha1, &rpolicy, None).unwrap_err();
    assert_eq!(err.code(), ErrorCode::SignatureInvalid, "{err}");
    assert!(err.to_string().contains("Sha1"), "{err}");
    assert_eq!(debsig_verify(&e.gpg, &sha1, &rsa), DSV_BAD_SIG);
    e.gpg.set_digest("SHA512");
    let deb = app("2.1").build(e.dir.path());
    debsigs_sign(&e.gpg, &deb, &rsa);
    assert_eq!(
        e.verify(&deb, &rpolicy, None).unwrap().signer,
        rsa.fingerprint
    );
    assert_eq!(debsig_verify(&e.gpg, &deb, &rsa), DSV_OK);
    // The ed25519 policy does not trust the RSA key.
    assert_eq!(
        code(e.verify(&deb, &policy, None)),
        ErrorCode::UntrustedSigner
    );
}

#[test]
fn signature_missing_unless_policy_allows_unsigned() {
    let e = env();
    let deb = app("1.0").build(e.dir.path());
    assert_eq!(
        code(e.verify(&deb, &e.policy(""), None)),
        ErrorCode::SignatureMissing
    );
    assert_eq!(e.dsv(&deb), DSV_NO_SIG);
    let lax = e.policy("require_signature = false");
    let p = e.verify(&deb, &lax, None).unwrap();
    assert_eq!(p.signer, "");
}

#[test]
fn signature_invalid_when_data_tampered() {
    let e = env();
    let policy = e.policy("require_signature = false");
    let deb = e.signed(app("1.0").file("usr/share/iocom-app/blob", &[7u8; 4096]));
    let a = ar::scan(fs::File::open(&deb).unwrap(), &ar::Limits::default()).unwrap();
    let d = a.data_member();
    let mut bytes = fs::read(&deb).unwrap();
    let at = (d.offset + d.size / 2) as usize;
    bytes[at] ^= 0x01;
    fs::write(&deb, &bytes).unwrap();
    // Even with signatures optional, a present signature must verify.
    assert_eq!(
        code(e.verify(&deb, &policy, None)),
        ErrorCode::SignatureInvalid
    );
    assert_eq!(e.dsv(&deb), DSV_BAD_SIG);
}

#[test]
fn signature_invalid_for_zstd_package_signed_by_debsigs() {
    let e = env();
    let deb = e.signed(app("1.0").compression(Comp::Zstd));
    // debsigs' bug: the signature covers debian-binary only.
    let sig = e.gpg.home.path().join("sig");
    let dbin = e.gpg.home.path().join("debian-binary");
    fs::write(
        &sig,
        run(Command::new("ar").arg("p").arg(&deb).arg("_gpgorigin")),
    )
    .unwrap();
    fs::write(&dbin, b"2.0\n").unwrap();
    run(e.gpg.cmd().arg("--verify").arg(&sig).arg(&dbin));
    assert_eq!(
        code(e.verify(&deb, &e.policy(""), None)),
        ErrorCode::SignatureInvalid
    );
    assert_eq!(e.dsv(&deb), DSV_BAD_SIG);
}

#[test]
fn signature_invalid_when_garbage_or_wrong_type() {
    let e = env();
    let policy = e.policy("");
    let deb = app("1.0").build(e.dir.path());
    common::append_ar_member(&deb, "_gpgorigin", b"this is not a signature");
    assert_eq!(
        code(e.verify(&deb, &policy, None)),
        ErrorCode::SignatureInvalid
    );
    assert_ne!(e.dsv(&deb), DSV_OK);
    // A text-mode signature over the right bytes is refused (debsigs makes binary ones).
    let deb = app("1.1").build(e.dir.path());
    let sig = e.gpg.detach_sign(
        &e.key,
        &common::signed_payload(&deb),
        false,
        &["--textmode"],
    );
    common::append_ar_member(&deb, "_gpgorigin", &sig);
    let err = e.verify(&deb, &policy, None).unwrap_err();
    assert_eq!(err.code(), ErrorCode::SignatureInvalid, "{err}");
    assert!(err.to_string().contains("binary"), "{err}");
}

#[test]
fn untrusted_signer() {
    let e = env();
    let other = e
        .gpg
        .gen_key("Other <other@example.invalid>", KeyAlgo::Ed25519);
    let deb = app("1.0").build(e.dir.path());
    debsigs_sign(&e.gpg, &deb, &other);
    let err = e.verify(&deb, &e.policy(""), None).unwrap_err();
    assert_eq!(err.code(), ErrorCode::UntrustedSigner);
    assert!(err.to_string().contains(&other.fingerprint), "{err}");
    assert_eq!(e.dsv(&deb), DSV_NO_POLICY);
    assert_eq!(debsig_verify(&e.gpg, &deb, &other), DSV_OK);
}

#[test]
fn name_not_allowed() {
    let e = env();
    let deb = e.signed(DebSpec::new("evil-app", "1.0", "all"));
    let err = e.verify(&deb, &e.policy(""), None).unwrap_err();
    assert_eq!(err.code(), ErrorCode::NameNotAllowed);
    assert!(err.to_string().contains("evil-app"), "{err}");
    assert_eq!(e.dsv(&deb), DSV_OK);
}

#[test]
fn wrong_architecture() {
    let e = env();
    let foreign = if e.host == "arm64" { "amd64" } else { "arm64" };
    let deb = e.signed(DebSpec::new("iocom-app", "1.0", foreign));
    let err = e.verify(&deb, &e.policy(""), None).unwrap_err();
    assert_eq!(err.code(), ErrorCode::WrongArchitecture);
    assert!(err.to_string().contains(foreign), "{err}");
    assert_eq!(e.dsv(&deb), DSV_OK);
    // Listing a foreign architecture in the policy does not make it installable.
    let lax = e.policy(&format!("architectures = [\"{foreign}\", \"all\"]"));
    assert_eq!(
        code(e.verify(&deb, &lax, None)),
        ErrorCode::WrongArchitecture
    );
    // A policy can narrow down to "all" only.
    let native = e.signed(DebSpec::new("iocom-app", "1.0", &e.host));
    let only_all = e.policy("architectures = [\"all\"]");
    assert_eq!(
        code(e.verify(&native, &only_all, None)),
        ErrorCode::WrongArchitecture
    );
    assert!(e.verify(&native, &e.policy(""), None).is_ok());
}

#[test]
fn not_newer_unless_policy_allows() {
    let e = env();
    let strict = e.policy("");
    let deb = e.signed(app("1:1.0-1"));
    assert_eq!(e.dsv(&deb), DSV_OK);
    for (installed, ok) in [
        ("1:1.0-1", false),
        ("1:1.0-1.0", false),
        ("1:1.0-2", false),
        ("2:0.1", false),
        ("1:1.0", true),
        ("1:1.0-1~bpo1", true),
        ("99.0", true),
    ] {
        let r = e.verify(&deb, &strict, Some(installed));
        if ok {
            assert!(r.is_ok(), "installed {installed}: {r:?}");
        } else {
            let err = r.unwrap_err();
            assert_eq!(
                err.code(),
                ErrorCode::NotNewer,
                "installed {installed}: {err}"
            );
            assert!(err.to_string().contains(installed), "{err}");
        }
    }
    let reinstall = e.policy("allow_reinstall = true");
    assert!(e.verify(&deb, &reinstall, Some("1:1.0-1")).is_ok());
    assert_eq!(
        code(e.verify(&deb, &reinstall, Some("1:1.0-2"))),
        ErrorCode::NotNewer
    );
    let downgrade = e.policy("allow_downgrade = true");
    assert!(e.verify(&deb, &downgrade, Some("1:1.0-2")).is_ok());
    assert_eq!(
        code(e.verify(&deb, &downgrade, Some("1:1.0-1"))),
        ErrorCode::NotNewer
    );
}

#[test]
fn bad_control() {
    let e = env();
    let policy = e.policy("");
    for (what, control) in [
        (
            "no Version",
            "Package: iocom-app\nArchitecture: all\nMaintainer: T <t@example.invalid>\nDescription: x\n",
        ),
        (
            "bad Version",
            "Package: iocom-app\nVersion: abc\nArchitecture: all\nMaintainer: T <t@example.invalid>\nDescription: x\n",
        ),
        (
            "bad Package",
            "Package: IOCOM_app\nVersion: 1.0\nArchitecture: all\nMaintainer: T <t@example.invalid>\nDescription: x\n",
        ),
        (
            "no Architecture",
            "Package: iocom-app\nVersion: 1.0\nMaintainer: T <t@example.invalid>\nDescription: x\n",
        ),
        (
            "bad unit",
            "Package: iocom-app\nVersion: 1.0\nArchitecture: all\nX-Iocom-Units: ../../etc/x.service\nDescription: x\n",
        ),
    ] {
        let deb = e.signed(app("1.0").raw_control(control));
        let err = e.verify(&deb, &policy, None).unwrap_err();
        assert_eq!(err.code(), ErrorCode::BadControl, "{what}: {err}");
        assert_eq!(e.dsv(&deb), DSV_OK, "{what}");
        fs::remove_file(&deb).unwrap();
    }
}

/// Rebuilds an archive from `members` (name, contents) in the given order.
fn assemble(path: &Path, members: &[(&str, Vec<u8>)]) {
    fs::write(path, b"!<arch>\n").unwrap();
    for (n, d) in members {
        common::append_ar_member(path, n, d);
    }
}

#[test]
fn bad_archive() {
    let e = env();
    let policy = e.policy("");
    let good = e.signed(app("1.0").file("usr/share/doc/iocom-app/x", &[1u8; 2000]));
    assert!(e.verify(&good, &policy, None).is_ok());
    let member = |n: &str| run(Command::new("ar").arg("p").arg(&good).arg(n));
    let (dbin, ctl, data, sig) = (
        member("debian-binary"),
        member("control.tar.xz"),
        member("data.tar.xz"),
        member("_gpgorigin"),
    );
    let dir = e.dir.path();
    let mut cases: Vec<(&str, PathBuf)> = Vec::new();

    let p = dir.join("garbage.deb");
    fs::write(&p, b"this is not a debian package at all, just text\n").unwrap();
    cases.push(("garbage", p));

    let bytes = fs::read(&good).unwrap();
    let p = dir.join("truncated.deb");
    fs::write(&p, &bytes[..bytes.len() - 30]).unwrap();
    cases.push(("truncated", p));

    let p = dir.join("order.deb");
    assemble(
        &p,
        &[
            ("debian-binary", dbin.clone()),
            ("data.tar.xz", data.clone()),
            ("control.tar.xz", ctl.clone()),
            ("_gpgorigin", sig.clone()),
        ],
    );
    cases.push(("wrong member order", p));

    let p = dir.join("extra.deb");
    assemble(
        &p,
        &[
            ("debian-binary", dbin.clone()),
            ("control.tar.xz", ctl.clone()),
            ("data.tar.xz", data.clone()),
            ("evil", b"x".to_vec()),
            ("_gpgorigin", sig.clone()),
        ],
    );
    cases.push(("extra member", p));

    let p = dir.join("extra-after.deb");
    assemble(
        &p,
        &[
            ("debian-binary", dbin.clone()),
            ("control.tar.xz", ctl.clone()),
            ("data.tar.xz", data.clone()),
            ("_gpgorigin", sig.clone()),
            ("postinst", b"x".to_vec()),
        ],
    );
    cases.push(("extra member after signature", p));

    let p = dir.join("misnamed.deb");
    assemble(
        &p,
        &[
            ("debian-binary", dbin.clone()),
            ("control.tar.lz4", ctl.clone()),
            ("data.tar.xz", data.clone()),
            ("_gpgorigin", sig.clone()),
        ],
    );
    cases.push(("unknown control compression", p));

    let p = dir.join("v3.deb");
    assemble(
        &p,
        &[
            ("debian-binary", b"3.0\n".to_vec()),
            ("control.tar.xz", ctl.clone()),
            ("data.tar.xz", data.clone()),
        ],
    );
    cases.push(("debian-binary 3.0", p));

    let mut bad_size = bytes.clone();
    // Size field of the data member header: 10 bytes before the final "`\n" of its header.
    let a = ar::scan(&bytes[..], &ar::Limits::default()).unwrap();
    let hdr = (a.data_member().offset - 60) as usize;
    bad_size[hdr + 48..hdr + 58].copy_from_slice(b"12x4      ");
    let p = dir.join("badsize.deb");
    fs::write(&p, &bad_size).unwrap();
    cases.push(("bad size field", p));

    let mut huge = bytes.clone();
    huge[hdr + 48..hdr + 58].copy_from_slice(b"9999999999");
    let p = dir.join("huge.deb");
    fs::write(&p, &huge).unwrap();
    cases.push(("size beyond end of file", p));

    for (what, p) in &cases {
        let err = e.verify(p, &policy, None).unwrap_err();
        assert_eq!(err.code(), ErrorCode::BadArchive, "{what}: {err}");
        // Cross-check with the reference tools. We are stricter than both: debsig-verify looks
        // members up by name and only checks the signature; dpkg-deb reads only the members it
        // needs and ignores extra members and the tail of the file.
        let (dsv_accepts, dpkg_reads) = match *what {
            "wrong member order" => (true, false),
            "truncated" => (false, true),
            w if w.starts_with("extra member") => (true, true),
            _ => (false, false),
        };
        assert_eq!(e.dsv(p) == DSV_OK, dsv_accepts, "{what}: debsig-verify");
        assert_eq!(common::dpkg_deb_reads(p), dpkg_reads, "{what}: dpkg-deb");
    }

    // A corrupt data tarball with a valid signature over it is caught when the data is read.
    let broken_data = {
        let mut d = data.clone();
        let n = d.len();
        d[n / 2..].fill(0);
        d
    };
    let p = dir.join("corrupt-data.deb");
    assemble(
        &p,
        &[
            ("debian-binary", dbin.clone()),
            ("control.tar.xz", ctl.clone()),
            ("data.tar.xz", broken_data),
        ],
    );
    common::sign_by_hand(&e.gpg, &p, &e.key, false);
    assert_eq!(e.dsv(&p), DSV_OK);
    assert_eq!(code(e.verify(&p, &policy, None)), ErrorCode::BadArchive);
}

#[test]
fn missing_file_is_io_error() {
    let e = env();
    let err = e
        .verify(&e.dir.path().join("nope.deb"), &e.policy(""), None)
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::IoError);
    assert!(err.to_string().contains("nope.deb"), "{err}");
}

mod robustness {
    //! Mutated unsigned packages under a policy that does not require signatures reach the
    //! decompressors and tar readers: they must never panic, only refuse.
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    struct Fixture {
        _dir: tempfile::TempDir,
        debs: Vec<Vec<u8>>,
        policy: Policy,
        work: tempfile::TempDir,
    }

    fn fixture() -> &'static Fixture {
        static F: OnceLock<Fixture> = OnceLock::new();
        F.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let debs = [Comp::Xz, Comp::Gzip, Comp::Zstd, Comp::None]
                .into_iter()
                .map(|c| {
                    let d = app("1.0")
                        .compression(c)
                        .file("lib/systemd/system/iocom-app.service", b"[Service]\n")
                        .build(dir.path());
                    fs::read(d).unwrap()
                })
                .collect();
            let pdir = dir.path().join("policy");
            fs::create_dir_all(&pdir).unwrap();
            let ppath = pdir.join("p.toml");
            fs::write(
                &ppath,
                "allowed_packages = [\"iocom-*\"]\nrequire_signature = false\n",
            )
            .unwrap();
            Fixture {
                policy: Policy::load(&ppath).unwrap(),
                _dir: dir,
                debs,
                work: tempfile::tempdir().unwrap(),
            }
        })
    }

    #[test]
    fn unmutated_fixtures_verify() {
        let f = fixture();
        for (i, d) in f.debs.iter().enumerate() {
            let p = f.work.path().join(format!("ok{i}.deb"));
            fs::write(&p, d).unwrap();
            let v = verify_package(&p, &f.policy, "amd64", None).unwrap();
            assert_eq!(v.units, ["iocom-app.service"]);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn mutated_packages_never_panic(
            which in 0usize..4,
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        ) {
            let f = fixture();
            let mut bytes = f.debs[which].clone();
            for (i, b) in &flips {
                let i = i.index(bytes.len());
                bytes[i] = *b;
            }
            let p = f.work.path().join(format!("m{which}.deb"));
            fs::write(&p, &bytes).unwrap();
            if let Err(e) = verify_package(&p, &f.policy, "amd64", None) {
                prop_assert!(e.code() != ErrorCode::IoError, "{}", e);
            }
        }
    }
}

#[test]
fn the_helpers_own_unit_is_never_restarted() {
    // The iocomd package ships the helper's unit; restarting it would stop the running
    // transaction (self-update), so it is not among the units to restart, even when named.
    let e = env();
    let policy = e.policy("");
    let deb = e.signed(
        app("2.0")
            .file("lib/systemd/system/iocom-app.service", b"[Service]\n")
            .file(
                "lib/systemd/system/iocom-install-helper.service",
                b"[Service]\n",
            )
            .field("X-Iocom-Units", "iocom-install-helper.service"),
    );
    let p = e.verify(&deb, &policy, Some("1.0")).unwrap();
    assert_eq!(p.units, ["iocom-app.service"]);
}
