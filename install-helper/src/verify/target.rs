//! Where a `data.tar` entry really lands on the target root.
//!
//! dpkg writes `<root>/<entry>` and the kernel follows every symlink already on the system in
//! the parent path, so an entry `usr/share/a/l/cron.d/x` lands in `/etc/cron.d/x` when
//! package A planted `usr/share/a/l -> /etc` earlier (and dpkg's file-conflict detection,
//! which compares names, never notices). [`TargetRoot::destination`] resolves the parent path
//! on the root as the kernel would and refuses, naming the symlink, when a symlink in it
//! - is not owned by the owner of the root directory (root in production), or
//! - is owned (per `<admindir>/info/*.list`) by another package than the one being installed,
//!   unless it is one of the policy's `trusted_symlinks` (the merged-`/usr` links), or
//! - leads out of the root: a target climbing above it, or, for an isolated root (the demo,
//!   tests), any absolute target — there the kernel resolves it against the host's `/`.
//!
//! Symlinks owned by no package (made by the installer or the administrator) and the
//! package's own are followed; the caller then applies the path policy to the destination.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::content_rules::ContentRules;

/// Most symlinks followed while resolving one path (as the kernel's `MAXSYMLINKS`).
const MAX_HOPS: usize = 40;

/// The root dpkg installs into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetRoot {
    /// dpkg's instdir (`/` in production).
    pub root: PathBuf,
    /// dpkg's admindir (for package ownership of symlinks).
    pub admindir: PathBuf,
}

impl TargetRoot {
    /// The target `root` with its dpkg database at `admindir`.
    pub fn new(root: &Path, admindir: &Path) -> Self {
        TargetRoot {
            root: root.to_owned(),
            admindir: admindir.to_owned(),
        }
    }

    fn isolated(&self) -> bool {
        self.root != Path::new("/")
    }

    /// The package owning absolute `path` per the dpkg database, if any.
    fn owner_package(&self, path: &str) -> Option<String> {
        let dir = std::fs::read_dir(self.admindir.join("info")).ok()?;
        for e in dir.flatten() {
            let file = e.file_name();
            let Some(pkg) = file.to_str().and_then(|f| f.strip_suffix(".list")) else {
                continue;
            };
            let Ok(text) = std::fs::read_to_string(e.path()) else {
                continue;
            };
            if text.lines().any(|l| l == path) {
                // `name:arch.list` for multi-arch packages.
                return Some(pkg.split(':').next().unwrap_or(pkg).to_owned());
            }
        }
        None
    }

    /// The absolute path (as seen inside the root) that entry `rel` of package `package`
    /// would be written to, or why it must not be written.
    pub fn destination(
        &self,
        rel: &str,
        package: &str,
        rules: &ContentRules<'_>,
    ) -> Result<String, String> {
        let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        let root_uid = std::fs::metadata(&self.root)
            .map_err(|e| format!("target root {}: {e}", self.root.display()))?
            .uid();
        let mut done: Vec<String> = Vec::new();
        let mut todo: Vec<String> = parent
            .split('/')
            .filter(|c| !c.is_empty())
            .rev()
            .map(str::to_owned)
            .collect();
        let mut hops = 0;
        while let Some(c) = todo.pop() {
            match c.as_str() {
                "." => continue,
                ".." => {
                    if done.pop().is_none() {
                        return Err("a symlink on the target leads above its root".into());
                    }
                    continue;
                }
                _ => {}
            }
            let here = format!(
                "{}/{c}",
                done.iter().map(|d| format!("/{d}")).collect::<String>()
            );
            let on_disk = self.root.join(here.trim_start_matches('/'));
            let meta = match std::fs::symlink_metadata(&on_disk) {
                Ok(m) => m,
                // Not there yet: dpkg creates the rest as directories.
                Err(_) => {
                    done.push(c);
                    done.extend(todo.drain(..).rev());
                    break;
                }
            };
            if !meta.file_type().is_symlink() {
                done.push(c);
                continue;
            }
            hops += 1;
            if hops > MAX_HOPS {
                return Err(format!("too many symlinks resolving {here} on the target"));
            }
            if meta.uid() != root_uid {
                return Err(format!(
                    "{here} on the target is a symlink owned by uid {}, not by the root's owner",
                    meta.uid()
                ));
            }
            let link = std::fs::read_link(&on_disk).map_err(|e| format!("{here}: {e}"))?;
            let link = link
                .to_str()
                .ok_or_else(|| format!("{here} on the target: link target not UTF-8"))?;
            if link.starts_with('/') && self.isolated() {
                return Err(format!(
                    "{here} on the target is a symlink to {link}, outside the isolated root"
                ));
            }
            if !rules.trusted_symlink(&here)
                && let Some(owner) = self.owner_package(&here)
                && owner != package
            {
                return Err(format!(
                    "{here} on the target is a symlink owned by package {owner}"
                ));
            }
            if link.starts_with('/') {
                done.clear();
            }
            todo.extend(
                link.split('/')
                    .filter(|c| !c.is_empty())
                    .rev()
                    .map(str::to_owned),
            );
        }
        let mut out: String = done.iter().map(|d| format!("/{d}")).collect();
        out.push('/');
        out.push_str(name);
        Ok(out)
    }
}
