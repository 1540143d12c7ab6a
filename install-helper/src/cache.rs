//! The package cache (`<state>/cache/`): every package file the helper installed, named
//! `<name>_<version>_<arch>.deb` (`:` in versions written as `%3a`, like apt). The previous
//! version of a package is taken from here for a rollback, so a rollback never needs the
//! network. After a commit only the installed version's file is kept.

use std::io;
use std::path::{Path, PathBuf};

use crate::fsutil;

/// The package cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

fn encode_version(v: &str) -> String {
    v.replace(':', "%3a")
}

impl Cache {
    /// The cache in `dir`.
    pub fn new(dir: &Path) -> Self {
        Cache {
            dir: dir.to_path_buf(),
        }
    }

    /// The file name for a package version.
    pub fn file_for(&self, name: &str, version: &str, arch: &str) -> PathBuf {
        self.dir
            .join(format!("{name}_{}_{arch}.deb", encode_version(version)))
    }

    /// Moves a verified staged file into the cache (replacing an older copy of the same version).
    pub fn insert(
        &self,
        staged: &Path,
        name: &str,
        version: &str,
        arch: &str,
    ) -> io::Result<PathBuf> {
        fsutil::ensure_private_dir(&self.dir)?;
        let dest = self.file_for(name, version, arch);
        std::fs::rename(staged, &dest)?;
        fsutil::sync_dir(&self.dir)?;
        if let Some(parent) = staged.parent() {
            fsutil::sync_dir(parent)?;
        }
        Ok(dest)
    }

    /// The cached file of `name` at `version`, any architecture.
    pub fn find(&self, name: &str, version: &str) -> Option<PathBuf> {
        let prefix = format!("{name}_{}_", encode_version(version));
        self.entries()
            .into_iter()
            .find(|p| file_name(p).is_some_and(|f| f.starts_with(&prefix)))
    }

    /// Removes every cached version of `name` except the file `keep`.
    pub fn prune(&self, name: &str, keep: &Path) -> io::Result<()> {
        let prefix = format!("{name}_");
        for p in self.entries() {
            if p != keep && file_name(&p).is_some_and(|f| f.starts_with(&prefix)) {
                fsutil::remove_durably(&p)?;
            }
        }
        Ok(())
    }

    /// Names of the packages with a cached file (the packages this helper manages).
    pub fn packages(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .entries()
            .iter()
            .filter_map(|p| file_name(p).and_then(|f| f.split('_').next().map(str::to_string)))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    fn entries(&self) -> Vec<PathBuf> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut v: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "deb"))
            .collect();
        v.sort();
        v
    }
}

fn file_name(p: &Path) -> Option<&str> {
    p.file_name().and_then(|f| f.to_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_find_prune() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::new(&d.path().join("cache"));
        let staged = d.path().join("s.deb");
        std::fs::write(&staged, b"v1").unwrap();
        let v1 = c.insert(&staged, "app", "1:1.0", "all").unwrap();
        assert!(v1.ends_with("app_1%3a1.0_all.deb"));
        std::fs::write(&staged, b"v2").unwrap();
        let v2 = c.insert(&staged, "app", "1:2.0", "amd64").unwrap();
        std::fs::write(&staged, b"o").unwrap();
        c.insert(&staged, "app-other", "1.0", "all").unwrap();
        assert_eq!(c.find("app", "1:1.0"), Some(v1.clone()));
        assert_eq!(c.find("app", "1:2.0"), Some(v2.clone()));
        assert_eq!(c.find("app", "3.0"), None);
        assert_eq!(c.packages(), ["app", "app-other"]);
        c.prune("app", &v2).unwrap();
        assert_eq!(c.find("app", "1:1.0"), None);
        assert!(v2.exists());
        assert!(c.find("app-other", "1.0").is_some());
    }
}
