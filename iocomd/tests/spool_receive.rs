//! The package spool: checksums, limits, free space, and that failures leave nothing behind.

use iocomd::proto::crc::crc16;
use iocomd::spool::{Spool, SpoolError};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const MIB: u64 = 1 << 20;

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// Deterministic pseudo-random bytes (xorshift), so the data is not all zeros.
fn data(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn known_input_gives_known_crc_and_sha256() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spool");
    let mut w = Spool::begin(&dir, "check.deb", MIB, 0).unwrap();
    assert!(
        w.partial_path()
            .to_string_lossy()
            .ends_with("check.deb.partial")
    );
    assert_eq!(entries(&dir), vec![w.partial_path().to_path_buf()]);
    w.write(b"1234").unwrap();
    w.write(b"").unwrap();
    w.write(b"56789").unwrap();
    assert_eq!(w.size(), 9);
    let p = w.finish(0x4B37).unwrap();
    assert_eq!(p.size, 9);
    assert_eq!(p.crc, 0x4B37, "CRC-16/MODBUS check value of \"123456789\"");
    assert_eq!(
        p.sha256_hex(),
        "15e2b0d3c33891ebb0f1ef609ec419420c20e320ce94c65fbc8c3312448eb225"
    );
    assert_eq!(
        entries(&dir),
        vec![p.path.clone()],
        "only the final file remains"
    );
    assert!(p.path.to_string_lossy().ends_with("check.deb"));
    let mode = std::fs::metadata(&p.path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dmode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(dmode, 0o700);
    let mut back = String::new();
    p.open().unwrap().read_to_string(&mut back).unwrap();
    assert_eq!(back, "123456789");
    p.remove().unwrap();
    assert!(entries(&dir).is_empty());
}

#[test]
fn large_package_in_uneven_chunks_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let input = data(3 * MIB as usize + 12345);
    let mut w = Spool::begin(tmp.path(), "big", 4 * MIB, 0).unwrap();
    let mut rest = &input[..];
    let mut step = 1;
    while !rest.is_empty() {
        let (a, b) = rest.split_at(step.min(rest.len()));
        w.write(a).unwrap();
        rest = b;
        step = step * 7 % 100_003 + 1;
    }
    let p = w.finish(crc16(&input)).unwrap();
    assert_eq!(p.size, input.len() as u64);
    assert_eq!(p.sha256, <[u8; 32]>::from(Sha256::digest(&input)));
    assert_eq!(std::fs::read(&p.path).unwrap(), input);
}

#[test]
fn too_large_is_rejected_and_the_partial_file_is_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = Spool::begin(tmp.path(), "x", 1000, 0).unwrap();
    let partial = w.partial_path().to_path_buf();
    w.write(&[1; 600]).unwrap();
    w.write(&[2; 400]).unwrap(); // exactly the limit is fine
    match w.write(&[3; 1]) {
        Err(SpoolError::TooLarge { limit: 1000, path }) => assert_eq!(path, partial),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(
        entries(tmp.path()).is_empty(),
        "partial file deleted at once"
    );
    assert!(matches!(w.write(b"more"), Err(SpoolError::Aborted { .. })));
    assert!(matches!(
        w.finish(0),
        Err(SpoolError::CrcMismatch { .. }) | Err(SpoolError::Aborted { .. })
    ));
    assert!(entries(tmp.path()).is_empty());
}

#[test]
fn crc_mismatch_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = Spool::begin(tmp.path(), "x", MIB, 0).unwrap();
    w.write(b"123456789").unwrap();
    let e = w.finish(0x1234).unwrap_err();
    assert!(
        matches!(
            e,
            SpoolError::CrcMismatch {
                expected: 0x1234,
                actual: 0x4B37,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .contains("expected 0x1234, received data has 0x4b37"),
        "{e}"
    );
    assert!(entries(tmp.path()).is_empty());
}

#[test]
fn drop_or_abort_midway_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = Spool::begin(tmp.path(), "x", 10 * MIB, 0).unwrap();
    w.write(&data(200_000)).unwrap(); // more than the in-memory buffer: some of it is on disk
    assert!(std::fs::metadata(w.partial_path()).unwrap().len() > 0);
    drop(w);
    assert!(entries(tmp.path()).is_empty());

    let mut w = Spool::begin(tmp.path(), "y", 10 * MIB, 0).unwrap();
    w.write(b"abc").unwrap();
    w.abort();
    assert!(entries(tmp.path()).is_empty());
}

#[test]
fn stale_partials_are_removed_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("1-0-a.deb.partial"), b"old").unwrap();
    std::fs::write(d.join("2-1-b.partial"), b"old").unwrap();
    std::fs::write(d.join("done.deb"), b"keep").unwrap();
    std::fs::create_dir(d.join("dir.partial")).unwrap();
    let removed = Spool::remove_stale(d).unwrap();
    assert_eq!(
        removed,
        vec![d.join("1-0-a.deb.partial"), d.join("2-1-b.partial")]
    );
    assert_eq!(entries(d), vec![d.join("dir.partial"), d.join("done.deb")]);
    assert_eq!(
        Spool::remove_stale(&d.join("missing")).unwrap(),
        Vec::<PathBuf>::new()
    );
}

#[test]
fn hostile_name_hints_stay_inside_the_spool() {
    let tmp = tempfile::tempdir().unwrap();
    for hint in [
        "../../etc/passwd",
        "",
        ".hidden",
        "a/b\\c\0d",
        "x.partial",
        &"n".repeat(300),
    ] {
        let mut w = Spool::begin(tmp.path(), hint, MIB, 0).unwrap();
        w.write(b"z").unwrap();
        let p = w.finish(crc16(b"z")).unwrap();
        assert_eq!(p.path.parent(), Some(tmp.path()), "{hint:?}");
        let name = p.path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !name.starts_with('.') && !name.ends_with(".partial") && name.len() < 100,
            "{name}"
        );
        p.remove().unwrap();
    }
}

#[test]
fn reserve_larger_than_the_free_space_is_refused_before_any_file_exists() {
    let tmp = tempfile::tempdir().unwrap();
    match Spool::begin(tmp.path(), "x", MIB, u64::MAX / 2) {
        Err(SpoolError::NoSpace {
            path,
            available,
            needed,
        }) => {
            assert_eq!(path, tmp.path());
            assert!(available > 0 && available < needed, "{available} {needed}");
            assert_eq!(needed, u64::MAX / 2);
        }
        other => panic!("expected NoSpace, got {other:?}"),
    }
    assert!(entries(tmp.path()).is_empty());
}

#[test]
fn writer_can_move_to_a_blocking_thread() {
    fn assert_send<T: Send + 'static>(_: &T) {}
    let tmp = tempfile::tempdir().unwrap();
    let mut w = Spool::begin(tmp.path(), "x", MIB, 0).unwrap();
    assert_send(&w);
    w.write(b"123456789").unwrap();
    let p = std::thread::spawn(move || w.finish(0x4B37))
        .join()
        .unwrap()
        .unwrap();
    assert_eq!(p.size, 9);
}

/// A 1 MiB tmpfs mounted for the test; unmounted on drop.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount() -> Option<SmallFs> {
        let dir = tempfile::tempdir().unwrap();
        let r = nix::mount::mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
            Some("size=1m,mode=0700"),
        );
        match r {
            Ok(()) => Some(SmallFs { dir }),
            Err(e) => {
                eprintln!(
                    "note: cannot mount a tmpfs ({e}); skipping the real small-filesystem test"
                );
                None
            }
        }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.dir.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn a_full_filesystem_stops_the_transfer_and_cleans_up() {
    let Some(fs) = SmallFs::mount() else { return };
    let dir = fs.dir.path().join("spool");
    let chunk = data(16 << 10);

    // No reserve: the filesystem itself runs out (statvfs first, ENOSPC as a backstop).
    let mut w = Spool::begin(&dir, "big", 100 * MIB, 0).unwrap();
    let mut written = 0u64;
    let err = loop {
        match w.write(&chunk) {
            Ok(()) => written += chunk.len() as u64,
            Err(e) => break e,
        }
        assert!(
            written <= 2 * MIB,
            "a 1 MiB filesystem accepted {written} bytes"
        );
    };
    assert!(matches!(err, SpoolError::NoSpace { .. }), "{err:?}");
    assert!(written > 0 && written <= MIB, "{written}");
    assert!(entries(&dir).is_empty());
    drop(w);

    // With a 512 KiB reserve, the transfer stops while half the filesystem is still free.
    let mut w = Spool::begin(&dir, "big", 100 * MIB, 512 << 10).unwrap();
    let mut written = 0u64;
    let err = loop {
        match w.write(&chunk) {
            Ok(()) => written += chunk.len() as u64,
            Err(e) => break e,
        }
    };
    match err {
        SpoolError::NoSpace {
            path,
            available,
            needed,
        } => {
            assert_eq!(path, dir);
            assert!(available < needed);
            assert!(
                available >= 400 << 10,
                "stopped before the reserve: {available} free"
            );
        }
        other => panic!("expected NoSpace, got {other:?}"),
    }
    assert!((256 << 10..=512 << 10).contains(&written), "{written}");
    assert!(entries(&dir).is_empty());

    // A package that fits still works afterwards.
    let mut w = Spool::begin(&dir, "small", MIB, 0).unwrap();
    w.write(&chunk).unwrap();
    let p = w.finish(crc16(&chunk)).unwrap();
    assert_eq!(p.size, chunk.len() as u64);
}
