//! The ar reader on hostile input: never panics on arbitrary bytes or on mutations of a real
//! .deb, and rejects every truncation of a real package that does not end on a member boundary.

mod common;

use std::sync::OnceLock;

use install_helper::verify::ar::{self, ArError, Limits};
use proptest::prelude::*;

/// A real xz .deb built with dpkg-deb, with an appended `_gpgorigin`-like member.
fn real_deb() -> &'static [u8] {
    static DEB: OnceLock<Vec<u8>> = OnceLock::new();
    DEB.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let deb = common::DebSpec::new("iocom-fuzz", "1.0-1", "all")
            .file("usr/bin/iocom-fuzz", b"#!/bin/sh\nexit 0\n")
            .build(dir.path());
        common::append_ar_member(&deb, "_gpgorigin", b"not really a signature");
        std::fs::read(&deb).unwrap()
    })
}

#[test]
fn real_deb_scans_and_every_truncation_is_rejected() {
    let bytes = real_deb();
    let a = ar::scan(bytes, &Limits::default()).unwrap();
    let names: Vec<&str> = a.members().iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "debian-binary",
            "control.tar.xz",
            "data.tar.xz",
            "_gpgorigin"
        ]
    );
    let sig = &a.members()[3];
    let data_end = (sig.offset - 60) as usize;
    let mut rejected = 0;
    for cut in 0..bytes.len() {
        match ar::scan(&bytes[..cut], &Limits::default()) {
            Ok(_) => assert_eq!(cut, data_end, "accepted truncation at {cut}"),
            Err(ArError::Io(e)) => panic!("I/O error from a slice: {e}"),
            Err(_) => rejected += 1,
        }
    }
    assert_eq!(rejected, bytes.len() - 1);
}

#[test]
fn limits_are_enforced() {
    let small = Limits {
        max_control: 16,
        max_extra: 1 << 20,
    };
    assert!(matches!(
        ar::scan(real_deb(), &small),
        Err(ArError::TooLarge { .. })
    ));
    let tiny_extra = Limits {
        max_control: 1 << 20,
        max_extra: 4,
    };
    assert!(matches!(
        ar::scan(real_deb(), &tiny_extra),
        Err(ArError::TooLarge { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = ar::scan(&bytes[..], &Limits::default());
        let mut prefixed = ar::GLOBAL_MAGIC.to_vec();
        prefixed.extend_from_slice(&bytes);
        let _ = ar::scan(&prefixed[..], &Limits::default());
    }

    #[test]
    fn never_panics_on_mutated_real_deb(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = real_deb().to_vec();
        for (i, b) in flips {
            let i = i.index(bytes.len());
            bytes[i] = b;
        }
        let len = bytes.len();
        let _ = ar::scan(&bytes[..], &Limits::default());
        let _ = ar::scan(&bytes[..cut.index(len)], &Limits::default());
    }

    #[test]
    fn header_fields_fuzzed(name in "[ -~]{16}", size in "[ -~]{10}", term in "[ -~\n]{2}") {
        let mut bytes = ar::GLOBAL_MAGIC.to_vec();
        bytes.extend_from_slice(name.as_bytes());
        bytes.extend_from_slice(b"0           0     0     100644  ");
        bytes.extend_from_slice(size.as_bytes());
        bytes.extend_from_slice(term.as_bytes());
        bytes.extend_from_slice(b"2.0\n");
        prop_assert!(ar::scan(&bytes[..], &Limits::default()).is_err());
    }
}
