//! The content check: one streaming pass over the decompressed `data.tar` before dpkg ever
//! sees it. It refuses, naming the entry, with one stable code per kind ([`ContentKind`]):
//! - hard links whose target is not an earlier regular-file entry of the same archive
//!   (`../../etc/shadow`, an absolute name, a later entry);
//! - device nodes, FIFOs and entry types dpkg does not install (sparse, volume, ...);
//! - setuid/setgid files, unless the policy lists the path for this package;
//! - names that are absolute, have `..` components, are not UTF-8, hold a newline, or appear
//!   twice; symlinks whose target climbs above the package root;
//! - entries below a path that is a symlink in the archive or, on the target root, one that
//!   leads out of the root or that another package owns ([`super::target`]);
//! - by policy ([`super::content_rules`]), paths outside the allowed prefixes or denied
//!   (accounts, sudoers, cron, SSH keys, `/boot`), judged where dpkg would really write;
//! - more unpacked bytes than the cap derived from `Installed-Size`: entry sizes are checked
//!   from their headers before their data is read, and the decompressed stream itself is
//!   counted, so reading stops as soon as the cap is passed.
//!
//! The same pass lists the `.service` units the package ships.

use std::cell::Cell;
use std::collections::{BTreeSet, HashSet};
use std::io::{self, Read};
use std::rc::Rc;

use tar::EntryType;

use super::ar::Compression;
use super::content_rules::ContentRules;
use super::control::{decoder, valid_unit_name};
use super::target::TargetRoot;
use install_api::ErrorCode;

/// The kinds of refusal, each with its stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentKind {
    /// `content-hard-link`
    HardLink,
    /// `content-special-file`
    SpecialFile,
    /// `content-setuid`
    Setuid,
    /// `content-unsafe-path`
    UnsafePath,
    /// `content-symlink-escape`
    SymlinkEscape,
    /// `content-path-denied`
    PathDenied,
    /// `content-too-large`
    TooLarge,
}

impl ContentKind {
    /// The stable error code.
    pub fn code(self) -> ErrorCode {
        match self {
            ContentKind::HardLink => ErrorCode::ContentHardLink,
            ContentKind::SpecialFile => ErrorCode::ContentSpecialFile,
            ContentKind::Setuid => ErrorCode::ContentSetuid,
            ContentKind::UnsafePath => ErrorCode::ContentUnsafePath,
            ContentKind::SymlinkEscape => ErrorCode::ContentSymlinkEscape,
            ContentKind::PathDenied => ErrorCode::ContentPathDenied,
            ContentKind::TooLarge => ErrorCode::ContentTooLarge,
        }
    }
}

/// Why the data tarball was refused.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// Not a readable tarball (maps to `bad-archive`).
    #[error("{member}: {reason}")]
    Archive {
        /// `data.tar*`
        member: String,
        /// What went wrong.
        reason: String,
    },
    /// An entry the helper does not let dpkg install.
    #[error("data.tar entry {entry}: {reason}")]
    Refused {
        /// Which rule.
        kind: ContentKind,
        /// The entry's name as written in the archive (lossy UTF-8).
        entry: String,
        /// What is wrong.
        reason: String,
    },
}

/// What the check found in an accepted archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentReport {
    /// `.service` units shipped in `lib/systemd/system/` or `usr/lib/systemd/system/` as
    /// regular files (templates excluded), sorted.
    pub units: Vec<String>,
    /// Bytes of the decompressed tar stream.
    pub unpacked: u64,
}

/// Counts the bytes read through it and fails once more than `limit` were read.
struct Capped<R> {
    inner: R,
    read: Rc<Cell<u64>>,
    limit: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = (self.limit + 1).saturating_sub(self.read.get());
        if left == 0 {
            return Err(io::Error::other("unpacked size cap passed"));
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

/// A tar member name without `./`: `Ok("")` for the root entry itself.
fn member_path(raw: &[u8]) -> Result<String, String> {
    let s = std::str::from_utf8(raw).map_err(|_| "name is not UTF-8".to_string())?;
    if s.contains('\n') {
        return Err("name contains a newline".into());
    }
    if s.starts_with('/') {
        return Err("absolute name".into());
    }
    let mut parts = Vec::new();
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err("name has a `..` component".into()),
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

/// Resolves symlink `target` written at `link` (both package-root relative) lexically; `None`
/// when it climbs above the root.
fn resolve_link(link: &str, target: &str) -> Option<String> {
    let mut parts: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        link.split('/').collect()
    };
    if !target.starts_with('/') {
        parts.pop();
    }
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

/// Proper ancestors of a relative path, shortest first (`a`, `a/b` for `a/b/c`).
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

/// The unit name if `path` is a shipped `.service` unit.
fn unit_name(path: &str) -> Option<&str> {
    let name = path
        .strip_prefix("usr/lib/systemd/system/")
        .or_else(|| path.strip_prefix("lib/systemd/system/"))?;
    (!name.contains('/') && name.ends_with(".service") && valid_unit_name(name)).then_some(name)
}

/// Checks the data tarball read from `r` (its compressed member contents) for package
/// `package` with `rules`, `Installed-Size` `installed_size_kib`, against `target` (the root
/// dpkg will write to; `None` skips the target-root checks).
pub fn check<R: Read>(
    member: &str,
    c: Compression,
    r: R,
    package: &str,
    rules: &ContentRules<'_>,
    installed_size_kib: Option<u64>,
    target: Option<&TargetRoot>,
) -> Result<ContentReport, ContentError> {
    let limit = rules.unpacked_limit(installed_size_kib);
    let read = Rc::new(Cell::new(0u64));
    let too_large = |entry: &str| ContentError::Refused {
        kind: ContentKind::TooLarge,
        entry: entry.to_owned(),
        reason: format!(
            "the unpacked data passes the cap of {limit} bytes (Installed-Size {} KiB); \
             stopped after unpacking {} bytes",
            installed_size_kib.map_or_else(|| "absent".into(), |k| k.to_string()),
            read.get()
        ),
    };
    let dec = decoder(c, r).map_err(|e| ContentError::Archive {
        member: member.to_owned(),
        reason: e.to_string(),
    })?;
    let capped = Capped {
        inner: dec,
        read: read.clone(),
        limit,
    };
    let mut last = String::from("(start of archive)");
    let archive_err = |last: &str, e: io::Error| {
        if read.get() > limit {
            too_large(last)
        } else {
            ContentError::Archive {
                member: member.to_owned(),
                reason: e.to_string(),
            }
        }
    };
    let mut tar = tar::Archive::new(capped);
    let mut files: HashSet<String> = HashSet::new();
    let mut symlinks: HashSet<String> = HashSet::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut units = BTreeSet::new();
    let mut announced = 0u64;
    let entries = tar.entries().map_err(|e| archive_err(&last, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| archive_err(&last, e))?;
        let raw = entry.path_bytes();
        let name = String::from_utf8_lossy(&raw).into_owned();
        last.clone_from(&name);
        let refuse = |kind, reason: String| ContentError::Refused {
            kind,
            entry: name.clone(),
            reason,
        };
        let kind = entry.header().entry_type();
        if kind == EntryType::XGlobalHeader {
            continue;
        }
        announced = announced.saturating_add(entry.size());
        if announced > limit {
            return Err(too_large(&name));
        }
        let rel = member_path(&raw).map_err(|r| refuse(ContentKind::UnsafePath, r))?;
        if !seen.insert(rel.clone()) {
            return Err(refuse(ContentKind::UnsafePath, "appears twice".into()));
        }
        if rel.is_empty() {
            if kind.is_dir() {
                continue;
            }
            return Err(refuse(
                ContentKind::UnsafePath,
                "the package root is not a directory".into(),
            ));
        }
        let is_dir = kind.is_dir();
        match kind {
            EntryType::Regular | EntryType::Directory => {}
            EntryType::Symlink => {
                let target = entry.link_name_bytes().unwrap_or_default();
                let target = std::str::from_utf8(&target)
                    .map_err(|_| refuse(ContentKind::UnsafePath, "link target not UTF-8".into()))?;
                if target.is_empty() || target.contains('\n') {
                    return Err(refuse(ContentKind::UnsafePath, "bad link target".into()));
                }
                if resolve_link(&rel, target).is_none() {
                    return Err(refuse(
                        ContentKind::SymlinkEscape,
                        format!("symlink target {target} leads out of the package root"),
                    ));
                }
            }
            EntryType::Link => {
                let target = entry.link_name_bytes().unwrap_or_default();
                let shown = String::from_utf8_lossy(&target).into_owned();
                let ok = member_path(&target).is_ok_and(|t| files.contains(&t));
                if !ok {
                    return Err(refuse(
                        ContentKind::HardLink,
                        format!(
                            "hard link to {shown}, which is not an earlier regular file of this archive"
                        ),
                    ));
                }
            }
            EntryType::Char | EntryType::Block => {
                return Err(refuse(ContentKind::SpecialFile, "device node".into()));
            }
            EntryType::Fifo => return Err(refuse(ContentKind::SpecialFile, "FIFO".into())),
            other => {
                return Err(refuse(
                    ContentKind::SpecialFile,
                    format!(
                        "entry type {:?} is not installed by dpkg",
                        other.as_byte() as char
                    ),
                ));
            }
        }
        if let Some(a) = ancestors(&rel).find(|a| symlinks.contains(*a)) {
            return Err(refuse(
                ContentKind::SymlinkEscape,
                format!("below /{a}, a symlink in this archive"),
            ));
        }
        let abs = format!("/{rel}");
        rules
            .check_path(&abs, is_dir)
            .map_err(|r| refuse(ContentKind::PathDenied, r))?;
        if let Some(t) = target {
            let dest = t
                .destination(&rel, package, rules)
                .map_err(|r| refuse(ContentKind::SymlinkEscape, r))?;
            if dest != abs {
                rules
                    .check_path(&dest, is_dir)
                    .map_err(|r| refuse(ContentKind::PathDenied, format!("written as {r}")))?;
            }
        }
        let mode = entry.header().mode().map_err(|e| archive_err(&name, e))?;
        if kind == EntryType::Regular && mode & 0o6000 != 0 && !rules.setuid_allowed(&abs) {
            return Err(refuse(
                ContentKind::Setuid,
                format!("setuid/setgid file (mode {mode:o}) not allowed by the policy"),
            ));
        }
        match kind {
            EntryType::Regular => {
                if let Some(u) = unit_name(&rel) {
                    units.insert(u.to_owned());
                }
                files.insert(rel);
            }
            EntryType::Symlink => {
                symlinks.insert(rel);
            }
            _ => {}
        }
    }
    // Drain what the tar reader left (end-of-archive blocks) so corruption there is caught too.
    let mut rest = tar.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| archive_err(&last, e))?;
    Ok(ContentReport {
        units: units.into_iter().collect(),
        unpacked: read.get(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_paths() {
        assert_eq!(member_path(b"./usr/bin/x").unwrap(), "usr/bin/x");
        assert_eq!(member_path(b"./").unwrap(), "");
        assert_eq!(member_path(b"usr//bin/./x").unwrap(), "usr/bin/x");
        assert!(member_path(b"/etc/passwd").is_err());
        assert!(member_path(b"./usr/../../etc").is_err());
        assert!(member_path(b"./a\nb").is_err());
        assert!(member_path(b"./\xff").is_err());
    }

    #[test]
    fn link_resolution() {
        assert_eq!(resolve_link("usr/bin/x", "y").as_deref(), Some("usr/bin/y"));
        assert_eq!(
            resolve_link("usr/bin/x", "../lib/y").as_deref(),
            Some("usr/lib/y")
        );
        assert_eq!(
            resolve_link("usr/bin/x", "/etc/y").as_deref(),
            Some("etc/y")
        );
        assert_eq!(resolve_link("usr/bin/x", "../../y").as_deref(), Some("y"));
        assert_eq!(resolve_link("usr/bin/x", "../../../etc"), None);
        assert_eq!(ancestors("a/b/c").collect::<Vec<_>>(), ["a", "a/b"]);
        assert_eq!(unit_name("lib/systemd/system/a.service"), Some("a.service"));
        assert_eq!(unit_name("lib/systemd/system/a@.service"), None);
        assert_eq!(unit_name("lib/systemd/system/d/a.service"), None);
    }
}
