//! Every filesystem location and tunable the helper uses, as parameters.
//!
//! Production uses [`Paths::production`] (dpkg root `/`, state in
//! `/var/lib/iocom-install-helper`); tests and `iocomd --demo` use [`Paths::isolated`], which
//! confines dpkg to a package root and keeps its log out of the host's `/var/log/dpkg.log`.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Locations of the helper's state and of the dpkg database it operates on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// Root-only (0700) helper state: `staging/`, `cache/`, `journal.json`, `receipts.jsonl`,
    /// `status.json`.
    pub state_dir: PathBuf,
    /// dpkg instdir. `/` in production; an isolated package root otherwise (`dpkg --root`).
    pub root: PathBuf,
    /// dpkg admindir, `<root>/var/lib/dpkg`.
    pub admindir: PathBuf,
    /// Where dpkg logs (`dpkg --log`). Never the host log for an isolated root.
    pub dpkg_log: PathBuf,
    /// The install policy (names, architectures, trusted keys), read by `verify`.
    pub policy: PathBuf,
}

impl Paths {
    /// The production layout (see docs/architecture.md, "Installed paths").
    pub fn production() -> Self {
        Paths {
            state_dir: PathBuf::from("/var/lib/iocom-install-helper"),
            root: PathBuf::from("/"),
            admindir: PathBuf::from("/var/lib/dpkg"),
            dpkg_log: PathBuf::from("/var/log/dpkg.log"),
            policy: PathBuf::from("/etc/iocomd/install-policy.toml"),
        }
    }

    /// An isolated package root `root` (dpkg `--root=root`, admindir `root/var/lib/dpkg`), with the
    /// helper state in `state_dir` and dpkg's log at `state_dir/dpkg.log`.
    pub fn isolated(root: &Path, state_dir: &Path, policy: &Path) -> Self {
        Paths {
            state_dir: state_dir.to_path_buf(),
            root: root.to_path_buf(),
            admindir: root.join("var/lib/dpkg"),
            dpkg_log: state_dir.join("dpkg.log"),
            policy: policy.to_path_buf(),
        }
    }

    /// True when dpkg operates on the real system root.
    pub fn is_system_root(&self) -> bool {
        self.root == Path::new("/")
    }

    /// Where received packages are copied before verification.
    pub fn staging_dir(&self) -> PathBuf {
        self.state_dir.join("staging")
    }

    /// Package files kept for rollback (every package the helper installed).
    pub fn cache_dir(&self) -> PathBuf {
        self.state_dir.join("cache")
    }

    /// The write-ahead journal of the running transaction.
    pub fn journal(&self) -> PathBuf {
        self.state_dir.join("journal.json")
    }

    /// One JSON line per finished transaction.
    pub fn receipts(&self) -> PathBuf {
        self.state_dir.join("receipts.jsonl")
    }

    /// The last result, read by iocomd after a self-update.
    pub fn status(&self) -> PathBuf {
        self.state_dir.join("status.json")
    }

    /// Private apt state used for `apt-get --simulate` (empty lists: only installed packages
    /// satisfy dependencies, since the helper never downloads anything).
    pub fn apt_dir(&self) -> PathBuf {
        self.state_dir.join("apt")
    }

    /// dpkg's frontend lock, taken by the helper like apt does.
    pub fn lock_frontend(&self) -> PathBuf {
        self.admindir.join("lock-frontend")
    }

    /// dpkg's own journal directory; non-empty means an interrupted dpkg run.
    pub fn dpkg_updates_dir(&self) -> PathBuf {
        self.admindir.join("updates")
    }
}

/// How the helper reaches systemd for daemon-reload, restarts and the health gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemdMode {
    /// systemd's D-Bus API on the system bus (production).
    SystemBus,
    /// No systemd (isolated root, demo, tests): unit steps are reported as skipped.
    None,
}

/// The default least time between two progress reports of the copy-and-verify pass (about ten
/// a second).
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// Everything the transaction needs besides the package: paths and tunables.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Filesystem locations.
    pub paths: Paths,
    /// Whether units are restarted and health-gated.
    pub systemd: SystemdMode,
    /// dpkg architecture of the host (`dpkg --print-architecture`).
    pub host_arch: String,
    /// How long to wait for the dpkg frontend lock before `dpkg-locked`.
    pub lock_timeout: Duration,
    /// Bytes that must stay free on the staging and the root filesystem after the copy / unpack.
    pub space_reserve: u64,
    /// Largest package accepted for staging.
    pub max_package_size: u64,
    /// How long a restarted unit must stay healthy.
    pub health_window: Duration,
    /// The gate of `Type=notify` units: up, READY and stable this long before the install is
    /// reported healthy (provisionally, while the probation runs).
    pub ready_gate: Duration,
    /// How long the units are watched after the gate; a crash or missed watchdog in it rolls
    /// back. Zero: no probation (success is settled at the gate).
    pub probation: Duration,
    /// How long a restarted unit may take to become active.
    pub start_timeout: Duration,
    /// Upper bound for one dpkg or apt-get run; it is killed after that.
    pub command_timeout: Duration,
    /// Run dpkg's installs, purges and repairs confined to the package root (isolated roots
    /// only: `--root` sets it; `None` in production). See [`crate::sandbox`].
    pub sandbox: Option<crate::sandbox::Sandbox>,
    /// Least time between two `Progress` signals of the copy-and-verify pass (tests: zero).
    pub progress_interval: Duration,
}

impl Settings {
    /// Defaults for `paths`, systemd mode chosen by the caller.
    pub fn new(paths: Paths, systemd: SystemdMode, host_arch: String) -> Self {
        Settings {
            paths,
            systemd,
            host_arch,
            lock_timeout: Duration::from_secs(120),
            space_reserve: 64 * 1024 * 1024,
            max_package_size: 1024 * 1024 * 1024,
            health_window: Duration::from_secs(10),
            ready_gate: Duration::from_secs(1),
            probation: Duration::from_secs(30),
            start_timeout: Duration::from_secs(90),
            command_timeout: Duration::from_secs(600),
            sandbox: None,
            progress_interval: PROGRESS_INTERVAL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolated_paths_stay_inside_their_dirs() {
        let p = Paths::isolated(Path::new("/r"), Path::new("/s"), Path::new("/p.toml"));
        assert_eq!(p.admindir, Path::new("/r/var/lib/dpkg"));
        assert_eq!(
            p.lock_frontend(),
            Path::new("/r/var/lib/dpkg/lock-frontend")
        );
        assert_eq!(p.dpkg_log, Path::new("/s/dpkg.log"));
        assert!(!p.is_system_root());
        assert!(Paths::production().is_system_root());
        for d in [
            p.staging_dir(),
            p.cache_dir(),
            p.journal(),
            p.receipts(),
            p.status(),
        ] {
            assert!(d.starts_with("/s"), "{d:?}");
        }
    }
}
