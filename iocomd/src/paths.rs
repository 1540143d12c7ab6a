//! The daemon's system paths in one place, so that tests and the demo can root every one of
//! them in a temporary or state directory.
//!
//! Production values follow `docs/architecture.md` ("Installed paths"): configuration fragments
//! in `/usr/lib/iocomd` < `/run/iocomd` < `/etc/iocomd`, state in `/var/lib/iocomd`, the spool in
//! `/var/cache/iocomd/spool`, runtime files in `/run/iocomd`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Where the daemon reads its configuration and keeps its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// Configuration base directories in increasing priority; each may hold `iocomd.toml` and
    /// `conf.d/*.toml`. Missing directories are skipped.
    pub config_dirs: Vec<PathBuf>,
    /// Persistent daemon state (systemd `StateDirectory=`).
    pub state_dir: PathBuf,
    /// Default directory for received packages before hand-over (systemd `CacheDirectory=`).
    /// The configuration key `spool.dir` overrides it.
    pub spool_dir: PathBuf,
    /// Runtime files (systemd `RuntimeDirectory=`).
    pub runtime_dir: PathBuf,
}

/// Production configuration base directories, lowest priority first.
pub const SYSTEM_CONFIG_DIRS: [&str; 3] = ["/usr/lib/iocomd", "/run/iocomd", "/etc/iocomd"];
/// Production state directory.
pub const SYSTEM_STATE_DIR: &str = "/var/lib/iocomd";
/// Production spool directory.
pub const SYSTEM_SPOOL_DIR: &str = "/var/cache/iocomd/spool";
/// Production runtime directory.
pub const SYSTEM_RUNTIME_DIR: &str = "/run/iocomd";

impl Paths {
    /// The production paths.
    pub fn system() -> Self {
        Self {
            config_dirs: SYSTEM_CONFIG_DIRS.iter().map(PathBuf::from).collect(),
            state_dir: PathBuf::from(SYSTEM_STATE_DIR),
            spool_dir: PathBuf::from(SYSTEM_SPOOL_DIR),
            runtime_dir: PathBuf::from(SYSTEM_RUNTIME_DIR),
        }
    }

    /// The production paths, except where systemd passes the unit's directories
    /// (`STATE_DIRECTORY`, `CACHE_DIRECTORY` → `…/spool`, `RUNTIME_DIRECTORY`; the first of a
    /// colon-separated list). `var` looks a variable up, normally `|k| std::env::var_os(k)`.
    pub fn system_from_env(var: impl Fn(&str) -> Option<OsString>) -> Self {
        let first = |k: &str| {
            var(k).and_then(|v| {
                let v = v.to_string_lossy().into_owned();
                v.split(':')
                    .next()
                    .filter(|p| p.starts_with('/'))
                    .map(PathBuf::from)
            })
        };
        let mut p = Self::system();
        if let Some(d) = first("STATE_DIRECTORY") {
            p.state_dir = d;
        }
        if let Some(d) = first("CACHE_DIRECTORY") {
            p.spool_dir = d.join("spool");
        }
        if let Some(d) = first("RUNTIME_DIRECTORY") {
            p.runtime_dir = d;
        }
        p
    }

    /// The production layout below `root` (for tests: `root/etc/iocomd`, `root/var/lib/iocomd`, …).
    pub fn rooted(root: &Path) -> Self {
        let below = |p: &str| root.join(p.trim_start_matches('/'));
        Self {
            config_dirs: SYSTEM_CONFIG_DIRS.iter().map(|d| below(d)).collect(),
            state_dir: below(SYSTEM_STATE_DIR),
            spool_dir: below(SYSTEM_SPOOL_DIR),
            runtime_dir: below(SYSTEM_RUNTIME_DIR),
        }
    }

    /// The demo layout: everything under `state_dir` (`spool/`, `run/`), and no configuration
    /// directories (the demo runs on [`crate::config::Settings::demo`]).
    pub fn demo(state_dir: &Path) -> Self {
        Self {
            config_dirs: Vec::new(),
            state_dir: state_dir.to_path_buf(),
            spool_dir: state_dir.join("spool"),
            runtime_dir: state_dir.join("run"),
        }
    }
}

impl Default for Paths {
    fn default() -> Self {
        Self::system()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooted_prefixes_every_system_path() {
        let p = Paths::rooted(Path::new("/tmp/r"));
        assert_eq!(
            p.config_dirs,
            vec![
                PathBuf::from("/tmp/r/usr/lib/iocomd"),
                PathBuf::from("/tmp/r/run/iocomd"),
                PathBuf::from("/tmp/r/etc/iocomd"),
            ]
        );
        assert_eq!(p.state_dir, Path::new("/tmp/r/var/lib/iocomd"));
        assert_eq!(p.spool_dir, Path::new("/tmp/r/var/cache/iocomd/spool"));
        assert_eq!(p.runtime_dir, Path::new("/tmp/r/run/iocomd"));
    }

    #[test]
    fn system_paths_match_the_architecture_doc() {
        let p = Paths::system();
        assert_eq!(
            p.config_dirs.last().map(PathBuf::as_path),
            Some(Path::new("/etc/iocomd"))
        );
        assert_eq!(p.spool_dir, Path::new("/var/cache/iocomd/spool"));
    }

    #[test]
    fn systemd_directories_override_the_defaults() {
        let env = |k: &str| match k {
            "STATE_DIRECTORY" => Some(OsString::from("/var/lib/private/iocomd:/other")),
            "CACHE_DIRECTORY" => Some(OsString::from("/var/cache/iocomd")),
            "RUNTIME_DIRECTORY" => Some(OsString::from("relative/ignored")),
            _ => None,
        };
        let p = Paths::system_from_env(env);
        assert_eq!(p.state_dir, Path::new("/var/lib/private/iocomd"));
        assert_eq!(p.spool_dir, Path::new("/var/cache/iocomd/spool"));
        assert_eq!(p.runtime_dir, Path::new("/run/iocomd"));
        assert_eq!(p.config_dirs, Paths::system().config_dirs);
        assert_eq!(Paths::system_from_env(|_| None), Paths::system());
    }

    #[test]
    fn demo_keeps_everything_under_the_state_dir() {
        let p = Paths::demo(Path::new("/s"));
        assert!(p.config_dirs.is_empty());
        assert_eq!(p.spool_dir, Path::new("/s/spool"));
        assert_eq!(p.runtime_dir, Path::new("/s/run"));
    }
}
