//! The early refusal of a streamed package from its head (`verify::head::judge_head`): the
//! control member is at the start of a .deb, so a package the policy refuses is known after
//! its first kilobytes; the verdicts are the full verification's codes.

mod common;

use common::{Comp, DebSpec, host_arch};
use install_api::{ErrorCode, PolicySummary};
use install_helper::verify::head::{HeadVerdict, judge_head};

fn policy() -> PolicySummary {
    PolicySummary {
        host_arch: host_arch(),
        allowed_packages: vec!["iocom-*".into()],
        architectures: None,
        allow_downgrade: false,
        allow_reinstall: false,
    }
}

fn code(v: &HeadVerdict) -> Option<ErrorCode> {
    match v {
        HeadVerdict::Refused { code, .. } => Some(*code),
        _ => None,
    }
}

#[test]
fn the_control_member_at_the_head_decides_name_architecture_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let payload = vec![7u8; 256 << 10];
    let deb = DebSpec::new("iocom-early", "2.0", "all")
        .compression(Comp::Xz)
        .file("usr/share/iocom-early/blob", &payload)
        .build(dir.path());
    let bytes = std::fs::read(&deb).unwrap();
    let none = |_: &str| None;
    let p = policy();
    // Not enough yet: every prefix before the end of the control member.
    assert_eq!(
        judge_head(&bytes[..7], Some(&p), &none),
        HeadVerdict::NeedMore
    );
    assert_eq!(
        judge_head(&bytes[..100], Some(&p), &none),
        HeadVerdict::NeedMore
    );
    // Somewhere within the first few KiB it passes (the data member is not needed).
    let at = (100..bytes.len())
        .find(|n| judge_head(&bytes[..*n], Some(&p), &none) != HeadVerdict::NeedMore)
        .unwrap();
    assert!(at < 4096, "control member ends at {at} of {}", bytes.len());
    assert_eq!(
        judge_head(&bytes[..at], Some(&p), &none),
        HeadVerdict::Passed {
            package: "iocom-early".into(),
            version: "2.0".into(),
            architecture: "all".into()
        }
    );
    // The same version installed: not newer, from the head alone.
    let installed = |n: &str| (n == "iocom-early").then(|| "2.0".to_owned());
    let v = judge_head(&bytes[..at], Some(&p), &installed);
    assert_eq!(code(&v), Some(ErrorCode::NotNewer), "{v:?}");
    let newer = |_: &str| Some("3.0".to_owned());
    assert_eq!(
        code(&judge_head(&bytes[..at], Some(&p), &newer)),
        Some(ErrorCode::NotNewer)
    );
    let reinstall = PolicySummary {
        allow_reinstall: true,
        ..policy()
    };
    assert!(matches!(
        judge_head(&bytes[..at], Some(&reinstall), &installed),
        HeadVerdict::Passed { .. }
    ));
    // A name the policy does not allow.
    let other = PolicySummary {
        allowed_packages: vec!["app-*".into()],
        ..policy()
    };
    let v = judge_head(&bytes[..at], Some(&other), &none);
    assert_eq!(code(&v), Some(ErrorCode::NameNotAllowed), "{v:?}");
    // Without the helper's policy only structure and control are judged.
    assert!(matches!(
        judge_head(&bytes[..at], None, &installed),
        HeadVerdict::Passed { .. }
    ));
}

#[test]
fn a_foreign_architecture_and_a_non_deb_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let foreign = if host_arch() == "riscv64" {
        "s390x"
    } else {
        "riscv64"
    };
    let deb = DebSpec::new("iocom-foreign", "1.0", foreign)
        .compression(Comp::Gzip)
        .file("usr/share/iocom-foreign/x", b"x")
        .build(dir.path());
    let bytes = std::fs::read(&deb).unwrap();
    let v = judge_head(&bytes, Some(&policy()), &|_| None);
    assert_eq!(code(&v), Some(ErrorCode::WrongArchitecture), "{v:?}");
    if let HeadVerdict::Refused {
        reason, package, ..
    } = &v
    {
        assert!(reason.contains(foreign), "{reason}");
        assert_eq!(
            package.as_ref().map(|p| p.0.as_str()),
            Some("iocom-foreign")
        );
    }
    // Not an ar archive: refused from its first bytes.
    let v = judge_head(b"PK\x03\x04 a zip file", Some(&policy()), &|_| None);
    assert_eq!(code(&v), Some(ErrorCode::BadArchive), "{v:?}");
    // A wrong first member.
    let mut fake = b"!<arch>\n".to_vec();
    fake.extend_from_slice(
        format!(
            "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
            "data.tar", 0, 0, 0, 644, 4
        )
        .as_bytes(),
    );
    let v = judge_head(&fake, None, &|_| None);
    assert_eq!(code(&v), Some(ErrorCode::BadArchive), "{v:?}");
}
