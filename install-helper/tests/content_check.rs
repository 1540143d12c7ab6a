//! The content check end to end: hostile `data.tar` archives are built byte by byte in the
//! test (dpkg-deb would refuse to make most of them), put in a .deb with a normal control
//! member, signed with a trusted key, and handed to a real transaction on an isolated dpkg
//! root. Each is refused before dpkg with its own code naming the entry, and the root is
//! unchanged. A policy exception lets a legitimate setuid binary and sudoers file through.

mod common;
mod txn_support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use install_api::ErrorCode;
use install_helper::paths::Settings;
use install_helper::receipt::TxResult;
use install_helper::txn;
use install_helper::verifier::PolicyVerifier;
use install_helper::verify::Policy;
use tar::{EntryType, Header};
use txn_support::*;

/// A tar stream written header by header (names and link targets verbatim).
#[derive(Default)]
struct Tar(Vec<u8>);

impl Tar {
    fn raw(mut self, path: &str, kind: EntryType, mode: u32, link: &str, data: &[u8]) -> Self {
        let mut h = Header::new_gnu();
        let name = &mut h.as_old_mut().name;
        assert!(path.len() < name.len());
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        if !link.is_empty() {
            h.set_link_name_literal(link).unwrap();
        }
        if matches!(kind, EntryType::Char | EntryType::Block) {
            h.set_device_major(1).unwrap();
            h.set_device_minor(1).unwrap();
        }
        h.set_cksum();
        self.0.extend_from_slice(h.as_bytes());
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().div_ceil(512) * 512, 0);
        self
    }
    fn dir(self, path: &str) -> Self {
        self.raw(path, EntryType::Directory, 0o755, "", b"")
    }
    fn file(self, path: &str, data: &[u8]) -> Self {
        self.raw(path, EntryType::Regular, 0o644, "", data)
    }
    /// The usual directory entries, then `entries`.
    fn base() -> Self {
        Tar::default()
            .dir("./")
            .dir("./usr/")
            .dir("./usr/bin/")
            .dir("./usr/share/")
            .dir("./usr/share/x/")
    }
    /// The finished stream, xz-compressed (as data.tar.xz).
    fn xz(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0u8; 1024]);
        let mut enc = xz2::write::XzEncoder::new(Vec::new(), 1);
        enc.write_all(&self.0).unwrap();
        enc.finish().unwrap()
    }
}

struct Fixture {
    w: World,
    signer: Signer,
}

impl Fixture {
    fn new() -> Self {
        let w = World::new();
        let signer = Signer::new(w.tmp.path());
        Fixture { w, signer }
    }

    /// A signed .deb of package `name` (Installed-Size `kib`) whose data member is `data_xz`.
    fn deb(&self, name: &str, kib: u64, data_xz: Vec<u8>) -> PathBuf {
        let dir = self.w.debs.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let plain = common::DebSpec::new(name, "1.0", "all")
            .field("Installed-Size", &kib.to_string())
            .build(&dir);
        let control = common::run(
            Command::new("ar")
                .arg("p")
                .arg(&plain)
                .arg("control.tar.xz"),
        );
        let deb = dir.join(format!("{name}.deb"));
        std::fs::write(&deb, b"!<arch>\n").unwrap();
        common::append_ar_member(&deb, "debian-binary", b"2.0\n");
        common::append_ar_member(&deb, "control.tar.xz", &control);
        common::append_ar_member(&deb, "data.tar.xz", &data_xz);
        common::sign_by_hand(&self.signer.gpg, &deb, &self.signer.key, false);
        deb
    }

    /// A policy trusting the signer, with `extra` TOML appended.
    fn verifier(&self, settings: &Settings, extra: &str) -> PolicyVerifier {
        let path = self.w.tmp.path().join("content-policy.toml");
        let keys = self.w.tmp.path().join("trusted-keys");
        std::fs::write(
            &path,
            format!(
                "allowed_packages = [\"iocom-*\"]\ntrusted_keys_dir = \"{}\"\n{extra}\n",
                keys.display()
            ),
        )
        .unwrap();
        PolicyVerifier::new(Policy::load(&path).unwrap(), "amd64").for_target(&settings.paths)
    }

    /// Stages and installs `deb` with the real verifier.
    fn install(&self, deb: &Path, extra_policy: &str) -> TxResult {
        let settings = self.w.settings();
        let verifier = self.verifier(&settings, extra_policy);
        let (txid, taken) = stage_file(&settings, deb, &verifier);
        with_quiet_env(&settings, |env| txn::run(env, &verifier, &txid, taken))
    }

    /// Installs `deb` and checks it is refused with `code`, naming `entry`, root unchanged.
    fn refused(&self, what: &str, deb: &Path, code: ErrorCode, entry: &str) -> String {
        let before = tree_hash(&self.w.root);
        let r = self.install(deb, "");
        assert_eq!(r.code, code, "{what}: {}", r.message);
        assert!(
            r.message.contains(&format!("data.tar entry {entry}")),
            "{what}: {}",
            r.message
        );
        assert_eq!(tree_hash(&self.w.root), before, "{what}: the root changed");
        r.message
    }
}

#[test]
fn hostile_archives_are_refused_before_dpkg_with_their_code() {
    let f = Fixture::new();
    use EntryType::*;
    use ErrorCode::*;
    let cases: Vec<(&str, Tar, ErrorCode, &str)> = vec![
        (
            "hard link to ../../etc/shadow",
            Tar::base().raw(
                "./usr/share/x/shadow",
                Link,
                0o644,
                "../../../../etc/shadow",
                b"",
            ),
            ContentHardLink,
            "./usr/share/x/shadow",
        ),
        (
            "hard link to an absolute path",
            Tar::base().raw("./usr/share/x/shadow", Link, 0o644, "/etc/shadow", b""),
            ContentHardLink,
            "./usr/share/x/shadow",
        ),
        (
            "hard link to a later entry",
            Tar::base()
                .raw("./usr/share/x/l", Link, 0o644, "./usr/share/x/later", b"")
                .file("./usr/share/x/later", b"x"),
            ContentHardLink,
            "./usr/share/x/l",
        ),
        (
            "char device 0666",
            Tar::base().raw("./usr/share/x/mem", Char, 0o666, "", b""),
            ContentSpecialFile,
            "./usr/share/x/mem",
        ),
        (
            "FIFO",
            Tar::base().raw("./usr/share/x/fifo", Fifo, 0o666, "", b""),
            ContentSpecialFile,
            "./usr/share/x/fifo",
        ),
        (
            "setuid root binary",
            Tar::base().raw("./usr/bin/iocom-su", Regular, 0o4755, "", b"\x7fELF"),
            ContentSetuid,
            "./usr/bin/iocom-su",
        ),
        (
            "setgid file",
            Tar::base().raw("./usr/bin/iocom-sg", Regular, 0o2755, "", b"#!/bin/sh\n"),
            ContentSetuid,
            "./usr/bin/iocom-sg",
        ),
        (
            "../ path",
            Tar::base().file("./usr/../../etc/x", b"x"),
            ContentUnsafePath,
            "./usr/../../etc/x",
        ),
        (
            "absolute path",
            Tar::base().file("/usr/bin/evil", b"x"),
            ContentUnsafePath,
            "/usr/bin/evil",
        ),
        (
            "symlink escaping the package root",
            Tar::base().raw("./usr/share/x/up", Symlink, 0o777, "../../../../etc", b""),
            ContentSymlinkEscape,
            "./usr/share/x/up",
        ),
        (
            "file written through a symlink of the same archive",
            Tar::base()
                .raw("./usr/share/x/etc", Symlink, 0o777, "/etc", b"")
                .file("./usr/share/x/etc/passwd", b"root::0:0::/:/bin/sh\n"),
            ContentSymlinkEscape,
            "./usr/share/x/etc/passwd",
        ),
        (
            "/etc/passwd replacement",
            Tar::base()
                .dir("./etc/")
                .file("./etc/passwd", b"root::0:0::/:/bin/sh\n"),
            ContentPathDenied,
            "./etc/passwd",
        ),
        (
            "cron entry",
            Tar::base()
                .dir("./etc/")
                .file("./etc/cron.d/evil", b"* * * * * root sh\n"),
            ContentPathDenied,
            "./etc/cron.d/evil",
        ),
        (
            "root's authorized_keys",
            Tar::base().file("./root/.ssh/authorized_keys", b"ssh-ed25519 AAAA\n"),
            ContentPathDenied,
            "./root/.ssh/authorized_keys",
        ),
        (
            "a service user's authorized_keys",
            Tar::base().file(
                "./var/lib/iocom/.ssh/authorized_keys",
                b"ssh-ed25519 AAAA\n",
            ),
            ContentPathDenied,
            "./var/lib/iocom/.ssh/authorized_keys",
        ),
        (
            "file outside the allowed prefixes",
            Tar::base().dir("./run/").file("./run/x", b"x"),
            ContentPathDenied,
            "./run/",
        ),
        (
            "the same name twice",
            Tar::base()
                .file("./usr/share/x/a", b"1")
                .file("./usr/share/x/a", b"2"),
            ContentUnsafePath,
            "./usr/share/x/a",
        ),
    ];
    for (i, (what, tar, code, entry)) in cases.into_iter().enumerate() {
        let deb = f.deb(&format!("iocom-hostile{i}"), 4, tar.xz());
        f.refused(what, &deb, code, entry);
    }
    assert_eq!(dpkg_audit(&f.w.root), "");
}

/// The size in "stopped after unpacking N bytes".
fn unpacked_bytes(message: &str) -> u64 {
    let rest = message.split("stopped after unpacking ").nth(1).unwrap();
    rest.split(' ').next().unwrap().parse().unwrap()
}

#[test]
fn decompression_bombs_stop_at_the_cap() {
    let f = Fixture::new();
    // 256 MiB of zeros announced by one header (a ~40 KiB member), Installed-Size 4 KiB: the
    // cap is 2 × 4 KiB + 1 MiB; the header alone is enough to refuse.
    let mut tar = Tar::base().0;
    let mut h = Header::new_gnu();
    h.set_path("./usr/share/x/zeros").unwrap();
    h.set_size(256 << 20);
    h.set_mode(0o644);
    h.set_cksum();
    tar.extend_from_slice(h.as_bytes());
    let mut enc = xz2::write::XzEncoder::new(Vec::new(), 1);
    enc.write_all(&tar).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..256 {
        enc.write_all(&zeros).unwrap();
    }
    enc.write_all(&[0u8; 1024]).unwrap();
    let data = enc.finish().unwrap();
    assert!(data.len() < 1 << 20, "{}", data.len());
    let deb = f.deb("iocom-bomb", 4, data);
    let m = f.refused(
        "zero-filled bomb",
        &deb,
        ErrorCode::ContentTooLarge,
        "usr/share/x/zeros",
    );
    let cap = 2 * 4096 + (1 << 20);
    assert!(unpacked_bytes(&m) <= cap, "{m}");

    // 4000 empty files: every header announces 0 bytes, the stream itself passes the cap.
    let mut tar = Tar::base();
    for i in 0..4000 {
        tar = tar.file(&format!("./usr/share/x/{i}"), b"");
    }
    let deb = f.deb("iocom-bomb-headers", 1, tar.xz());
    let before = tree_hash(&f.w.root);
    let r = f.install(&deb, "");
    assert_eq!(r.code, ErrorCode::ContentTooLarge, "{}", r.message);
    let read = unpacked_bytes(&r.message);
    assert_eq!(read, 2 * 1024 + (1 << 20) + 1, "{}", r.message);
    assert_eq!(tree_hash(&f.w.root), before);
    // A larger ratio for this package lets the same archive through to dpkg.
    let r = f.install(
        &deb,
        "[[content.exception]]\npackages = [\"iocom-bomb-headers\"]\nmax_unpacked_ratio = 4000\n",
    );
    assert_eq!(r.code, ErrorCode::Ok, "{}", r.message);
}

#[test]
fn symlinks_planted_on_the_target_are_not_written_through() {
    let f = Fixture::new();
    // Package A plants an absolute and a relative symlink to the root's /etc (both fine as
    // symlinks: an absolute target is how Debian packages write them).
    let a = Tar::base()
        .dir("./usr/share/iocom-a/")
        .raw(
            "./usr/share/iocom-a/abs",
            EntryType::Symlink,
            0o777,
            "/etc",
            b"",
        )
        .raw(
            "./usr/share/iocom-a/rel",
            EntryType::Symlink,
            0o777,
            "../../../etc",
            b"",
        );
    let r = f.install(&f.deb("iocom-a", 4, a.xz()), "");
    assert_eq!(r.code, ErrorCode::Ok, "{}", r.message);
    // Package B writes through them: the absolute one would leave the isolated root, the
    // relative one belongs to another package.
    let b = Tar::base().dir("./usr/share/iocom-a/").file(
        "./usr/share/iocom-a/abs/cron.d/evil",
        b"* * * * * root sh\n",
    );
    let m = f.refused(
        "through an absolute symlink",
        &f.deb("iocom-b", 4, b.xz()),
        ErrorCode::ContentSymlinkEscape,
        "./usr/share/iocom-a/abs/cron.d/evil",
    );
    assert!(m.contains("outside the isolated root"), "{m}");
    let b = Tar::base()
        .dir("./usr/share/iocom-a/")
        .file("./usr/share/iocom-a/rel/iocom-b.conf", b"x\n");
    let m = f.refused(
        "through another package's symlink",
        &f.deb("iocom-b2", 4, b.xz()),
        ErrorCode::ContentSymlinkEscape,
        "./usr/share/iocom-a/rel/iocom-b.conf",
    );
    assert!(m.contains("owned by package iocom-a"), "{m}");
    // The package's own symlink is followed, and judged by where it lands: /etc/shadow.
    let again = Tar::base()
        .dir("./usr/share/iocom-a/")
        .file("./usr/share/iocom-a/rel/shadow", b"x\n");
    let deb = f.deb("iocom-a", 4, again.xz());
    let before = tree_hash(&f.w.root);
    let r = f.install(&deb, "allow_reinstall = true");
    assert_eq!(r.code, ErrorCode::ContentPathDenied, "{}", r.message);
    assert!(
        r.message.contains("written as /etc/shadow"),
        "{}",
        r.message
    );
    assert_eq!(tree_hash(&f.w.root), before);
}

#[test]
fn a_policy_exception_lets_a_legitimate_package_through() {
    let f = Fixture::new();
    let tar = || {
        Tar::base()
            .raw(
                "./usr/bin/iocom-ping",
                EntryType::Regular,
                0o4755,
                "",
                b"#!/bin/sh\n",
            )
            .raw(
                "./usr/bin/iocom-ping2",
                EntryType::Link,
                0o4755,
                "./usr/bin/iocom-ping",
                b"",
            )
            .raw(
                "./usr/share/x/ping",
                EntryType::Symlink,
                0o777,
                "../../bin/iocom-ping",
                b"",
            )
            .dir("./etc/")
            .dir("./etc/sudoers.d/")
            .raw(
                "./etc/sudoers.d/iocom-ping",
                EntryType::Regular,
                0o440,
                "",
                b"# none\n",
            )
    };
    let deb = f.deb("iocom-ping", 4, tar().xz());
    // Without the exception: refused, first at the setuid file.
    let m = f.refused(
        "setuid",
        &deb,
        ErrorCode::ContentSetuid,
        "./usr/bin/iocom-ping",
    );
    assert!(m.contains("4755"), "{m}");
    let exception = "[[content.exception]]\npackages = [\"iocom-ping\"]\n\
                     setuid = [\"/usr/bin/iocom-ping\"]\npaths = [\"/etc/sudoers.d/iocom-ping\"]\n";
    let r = f.install(&deb, exception);
    assert_eq!(r.code, ErrorCode::Ok, "{}", r.message);
    assert_eq!(
        dpkg_status(&f.w.root, "iocom-ping"),
        Some(("installed".into(), "1.0".into()))
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(f.w.root.join("usr/bin/iocom-ping"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o4755);
    assert!(f.w.root.join("etc/sudoers.d/iocom-ping").is_file());
    // The exception is per package: another name with the same content is still refused.
    let other = f.deb("iocom-other", 4, tar().xz());
    let before = tree_hash(&f.w.root);
    let r = f.install(&other, exception);
    assert_eq!(r.code, ErrorCode::ContentSetuid, "{}", r.message);
    assert_eq!(tree_hash(&f.w.root), before);
}
