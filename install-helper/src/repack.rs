//! Rollback source for a version the helper did not install. A rollback reinstalls the
//! previous version from the package cache; a version installed behind the helper's back (by
//! apt, by hand) has no cached file, so before such an upgrade the installed version is
//! rebuilt from the files on disk with `dpkg-repack` and cached. If that fails, the upgrade is
//! refused (`no-rollback-source`) before anything changes: an update that could not be undone
//! is not started.

use std::path::{Path, PathBuf};

use crate::cache::Cache;
use crate::dpkg::Dpkg;
use crate::verify::{self, Version};

/// Rebuilds `name` at `version` (installed) into the cache; returns the cached file or why not.
/// The work happens in a private scratch directory under `scratch_parent`, removed afterwards.
pub fn repack_into_cache(
    dpkg: &Dpkg,
    cache: &Cache,
    scratch_parent: &Path,
    name: &str,
    version: &str,
) -> Result<PathBuf, String> {
    // 0700, and removed with whatever is left in it when dropped.
    let work = tempfile::Builder::new()
        .prefix("repack-")
        .tempdir_in(scratch_parent)
        .map_err(|e| format!("{}: {e}", scratch_parent.display()))?;
    let out = dpkg
        .repack(name, work.path())
        .map_err(|e| format!("dpkg-repack could not run: {e}"))?;
    if !out.success() {
        return Err(format!(
            "dpkg-repack failed: {}",
            last_line(&out.stderr).unwrap_or("no output")
        ));
    }
    // A warning means an incomplete copy (e.g. "cannot find file" for a file dpkg lists):
    // rolling back to it would install a broken package.
    if let Some(w) = out.stderr.lines().find(|l| l.contains("warning:")) {
        return Err(format!("dpkg-repack: {}", w.trim()));
    }
    let debs: Vec<PathBuf> = std::fs::read_dir(work.path())
        .map_err(|e| format!("{}: {e}", work.path().display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    let [deb] = debs.as_slice() else {
        return Err(format!(
            "dpkg-repack made {} package files, expected one",
            debs.len()
        ));
    };
    let info = verify::read_control(deb).map_err(|e| format!("the repacked file: {e}"))?;
    let same_version = Version::parse(version).is_ok_and(|v| v == info.version);
    if info.package != name || !same_version {
        return Err(format!(
            "the repacked file is {} {}, expected {name} {version}",
            info.package, info.version
        ));
    }
    // The rollback source of the upgrade about to start: durable before the upgrade begins
    // (the cache's rename and directory syncs do not write the file's data).
    std::fs::File::open(deb)
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("the repacked file {}: {e}", deb.display()))?;
    cache
        .insert(deb, name, version, &info.architecture)
        .map_err(|e| format!("package cache: {e}"))
}

fn last_line(text: &str) -> Option<&str> {
    text.lines().rev().map(str::trim).find(|l| !l.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_line_skips_blank_lines() {
        assert_eq!(last_line("a\nerror: x\n\n"), Some("error: x"));
        assert_eq!(last_line("\n \n"), None);
    }
}
