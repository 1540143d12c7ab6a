//! Every file shipped from `systemd/` and `etc/` is installed by the Debian package.
//!
//! Files installed on a system live in folders that mirror their install location; the Debian
//! packaging lists them in `debian/iocomd.install`, or links them as `debian/iocomd.sysusers`
//! and `debian/iocomd.tmpfiles`. A file added to those folders but forgotten in the packaging
//! fails this test. (The system test additionally checks the built .deb with `dpkg-deb -c`.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests crate lives in the workspace")
        .to_path_buf()
}

fn files_under(root: &Path, rel: &Path, out: &mut BTreeSet<String>) {
    let dir = root.join(rel);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries {
        let entry = entry.expect("dir entry");
        let rel = rel.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            files_under(root, &rel, out);
        } else {
            out.insert(rel.to_string_lossy().into_owned());
        }
    }
}

/// Source paths the packaging installs, with `*` globs expanded against the tree.
fn packaged(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let install =
        std::fs::read_to_string(root.join("debian/iocomd.install")).expect("debian/iocomd.install");
    for line in install.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let src = line.split_whitespace().next().expect("non-empty line");
        if let Some((dir, pattern)) = src.rsplit_once('/')
            && pattern.contains('*')
        {
            let (prefix, suffix) = pattern.split_once('*').expect("has *");
            for entry in std::fs::read_dir(root.join(dir)).expect("glob dir exists") {
                let name = entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned();
                if name.starts_with(prefix) && name.ends_with(suffix) {
                    out.insert(format!("{dir}/{name}"));
                }
            }
        } else {
            out.insert(src.to_owned());
        }
    }
    for link in ["debian/iocomd.sysusers", "debian/iocomd.tmpfiles"] {
        let target = std::fs::read_link(root.join(link)).expect("packaging link");
        let resolved = Path::new("debian").join(target);
        let normal: PathBuf = resolved
            .components()
            .fold(PathBuf::new(), |mut acc, c| match c {
                std::path::Component::ParentDir => {
                    acc.pop();
                    acc
                }
                other => {
                    acc.push(other);
                    acc
                }
            });
        out.insert(normal.to_string_lossy().into_owned());
    }
    out
}

#[test]
fn every_shipped_file_is_in_the_package() {
    let root = repo();
    let mut shipped = BTreeSet::new();
    files_under(&root, Path::new("systemd"), &mut shipped);
    files_under(&root, Path::new("etc"), &mut shipped);
    assert!(!shipped.is_empty());
    let packaged = packaged(&root);
    let missing: Vec<_> = shipped.difference(&packaged).collect();
    assert!(missing.is_empty(), "not installed by debian/: {missing:#?}");
    for p in &packaged {
        if !p.starts_with("target/") {
            assert!(
                root.join(p).is_file(),
                "packaging names a missing file: {p}"
            );
        }
    }
}

/// Shell completions (bash, zsh, fish) and the manual pages of both programs are made by
/// `scripts/docs` (`make docs`, also run by debian/rules) into `target/docs` and installed
/// where each shell and man look for them.
#[test]
fn completions_and_manual_pages_are_built_and_shipped() {
    let root = repo();
    let install = std::fs::read_to_string(root.join("debian/iocomd.install")).unwrap();
    let lines: BTreeSet<(String, String)> = install
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_owned(), w.next()?.to_owned()))
        })
        .collect();
    let script = std::fs::read_to_string(root.join("scripts/docs")).unwrap();
    for prog in ["iocomctl", "iocomd"] {
        let expect = [
            (
                format!("target/docs/completions/bash/{prog}"),
                "usr/share/bash-completion/completions",
            ),
            (
                format!("target/docs/completions/zsh/_{prog}"),
                "usr/share/zsh/vendor-completions",
            ),
            (
                format!("target/docs/completions/fish/{prog}.fish"),
                "usr/share/fish/vendor_completions.d",
            ),
        ];
        for (src, dst) in expect {
            assert!(
                lines.contains(&(src.clone(), dst.to_owned())),
                "debian/iocomd.install lacks {src} {dst}"
            );
        }
    }
    for dir in [
        "completions/bash/$prog",
        "completions/zsh/_$prog",
        "completions/fish/$prog.fish",
    ] {
        assert!(script.contains(dir), "scripts/docs does not write {dir}");
    }
    let manpages = std::fs::read_to_string(root.join("debian/iocomd.manpages")).unwrap();
    for page in ["target/docs/man/iocomd.1", "target/docs/man/iocomctl.1"] {
        assert!(
            manpages.lines().any(|l| l.trim() == page),
            "{page} not in iocomd.manpages"
        );
    }
    assert!(script.contains("debian/make-manpages \"$bin\" \"$out/man\""));
    let rules = std::fs::read_to_string(root.join("debian/rules")).unwrap();
    assert!(
        rules.contains("scripts/docs target/release"),
        "debian/rules does not run scripts/docs"
    );
    let make = std::fs::read_to_string(root.join("Makefile")).unwrap();
    assert!(make.contains("docs:\n\t./scripts/docs"), "no make docs");
}
