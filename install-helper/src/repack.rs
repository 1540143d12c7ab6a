//! Rollback source for a version the helper did not install. A rollback reinstalls the
//! previous version from the package cache; a version installed behind the helper's back (by
//! apt, by hand) has no cached file, so before such an upgrade the installed version is
//! rebuilt from the files on disk with `dpkg-repack` and cached. If that fails, the upgrade is
//! refused (`no-rollback-source`) before anything changes: an update that could not be undone
//! is not started.

use std::path::{Path, PathBuf};

use crate::cache::Cache;
use crate::dpkg::Dpkg;
use crate::fsutil;

/// Rebuilds `name` at `version` (installed) into the cache; returns the cached file or why not.
/// `work` is a private scratch directory (created, and removed afterwards).
pub fn repack_into_cache(
    dpkg: &Dpkg,
    cache: &Cache,
    work: &Path,
    name: &str,
    version: &str,
) -> Result<PathBuf, String> {
    let _ = std::fs::remove_dir_all(work);
    fsutil::ensure_private_dir(work).map_err(|e| format!("{}: {e}", work.display()))?;
    let result = repack_in(dpkg, cache, work, name, version);
    let _ = std::fs::remove_dir_all(work);
    result
}

fn repack_in(
    dpkg: &Dpkg,
    cache: &Cache,
    work: &Path,
    name: &str,
    version: &str,
) -> Result<PathBuf, String> {
    let out = dpkg
        .repack(name, work)
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
    let debs: Vec<PathBuf> = std::fs::read_dir(work)
        .map_err(|e| format!("{}: {e}", work.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    let [deb] = debs.as_slice() else {
        return Err(format!(
            "dpkg-repack made {} package files, expected one",
            debs.len()
        ));
    };
    let Some((pkg, ver, arch)) = dpkg
        .deb_identity(deb)
        .map_err(|e| format!("dpkg-deb could not run: {e}"))?
    else {
        return Err("the repacked file is not a readable package".into());
    };
    if pkg != name || ver != version {
        return Err(format!(
            "the repacked file is {pkg} {ver}, expected {name} {version}"
        ));
    }
    cache
        .insert(deb, &pkg, &ver, &arch)
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
