//! The `[content]` table of the install policy: where packages may put files, which setuid
//! files are allowed, which target-root symlinks may be written through, and the cap on the
//! unpacked size of `data.tar` relative to `Installed-Size`. Per-package exceptions
//! (`[[content.exception]]`, matched by package-name glob) allow what a package really needs.
//!
//! Paths are absolute (`/usr/bin/x`). A *pattern* (`denied_paths`, exception `paths`) is a
//! shell-style glob (`*` also matches `/`) that covers the path it matches and everything
//! below it: `/etc/sudoers*` covers `/etc/sudoers` and `/etc/sudoers.d/x`. A *prefix*
//! (`allowed_prefixes`, `trusted_symlinks`) is a plain path covering itself and what is below.

use serde::Deserialize;

use super::policy::glob_match;

/// Where packages may install files unless an exception says otherwise.
pub const DEFAULT_ALLOWED_PREFIXES: &[&str] = &[
    "/usr", "/etc", "/var", "/opt", "/srv", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];

/// Paths no package may write, even inside an allowed prefix, unless an exception names them:
/// accounts, privilege and login configuration, scheduled jobs, SSH keys, the boot loader.
pub const DEFAULT_DENIED_PATHS: &[&str] = &[
    "/etc/passwd*",
    "/etc/shadow*",
    "/etc/group*",
    "/etc/gshadow*",
    "/etc/subuid*",
    "/etc/subgid*",
    "/etc/sudoers*",
    "/etc/doas.conf",
    "/etc/crontab",
    "/etc/cron.*",
    "/etc/anacrontab",
    "/var/spool/cron",
    "/etc/ld.so.preload",
    "/etc/pam.d",
    "/etc/security",
    "/etc/ssh",
    "*/.ssh",
    "/root",
    "/home",
    "/boot",
];

/// Target-root symlinks that are followed whoever owns them: the merged-`/usr` links.
pub const DEFAULT_TRUSTED_SYMLINKS: &[&str] =
    &["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];

/// Default cap: unpacked `data.tar` at most this many times `Installed-Size` (plus 1 MiB).
pub const DEFAULT_MAX_UNPACKED_RATIO: u64 = 2;
/// Default absolute cap on the unpacked `data.tar`, MiB (also without `Installed-Size`).
pub const DEFAULT_MAX_UNPACKED_MIB: u64 = 4096;
/// Added to the ratio cap: tar headers and padding of packages with many small files.
pub const UNPACKED_SLACK: u64 = 1 << 20;

/// `[content]` as written in the policy file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ContentFile {
    allowed_prefixes: Option<Vec<String>>,
    denied_paths: Option<Vec<String>>,
    trusted_symlinks: Option<Vec<String>>,
    max_unpacked_ratio: Option<u64>,
    max_unpacked_mib: Option<u64>,
    #[serde(default)]
    exception: Vec<ExceptionFile>,
}

/// `[[content.exception]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExceptionFile {
    packages: Vec<String>,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    setuid: Vec<String>,
    max_unpacked_ratio: Option<u64>,
}

/// What a package matching `packages` may do beyond the general rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exception {
    /// Package-name globs.
    pub packages: Vec<String>,
    /// Patterns allowed although denied or outside the allowed prefixes.
    pub paths: Vec<String>,
    /// Exact paths allowed to be setuid/setgid files.
    pub setuid: Vec<String>,
    /// A larger (or smaller) unpacked-size ratio.
    pub max_unpacked_ratio: Option<u64>,
}

/// The validated `[content]` rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentPolicy {
    /// See [`DEFAULT_ALLOWED_PREFIXES`].
    pub allowed_prefixes: Vec<String>,
    /// See [`DEFAULT_DENIED_PATHS`].
    pub denied_paths: Vec<String>,
    /// See [`DEFAULT_TRUSTED_SYMLINKS`].
    pub trusted_symlinks: Vec<String>,
    /// See [`DEFAULT_MAX_UNPACKED_RATIO`].
    pub max_unpacked_ratio: u64,
    /// See [`DEFAULT_MAX_UNPACKED_MIB`].
    pub max_unpacked_mib: u64,
    /// Per-package exceptions.
    pub exceptions: Vec<Exception>,
}

impl Default for ContentPolicy {
    fn default() -> Self {
        ContentPolicy::from_file(ContentFile::default()).expect("defaults are valid")
    }
}

/// A `[content]` value problem: the key (e.g. `content.denied_paths`) and why.
pub(super) type Invalid = (&'static str, String);

fn owned(v: Option<Vec<String>>, default: &[&str]) -> Vec<String> {
    v.unwrap_or_else(|| default.iter().map(|s| s.to_string()).collect())
}

fn check_prefixes(key: &'static str, list: &[String]) -> Result<(), Invalid> {
    for p in list {
        let ok = p.starts_with('/')
            && p.len() > 1
            && !p.ends_with('/')
            && !p.contains(['*', '?', '\n'])
            && p.split('/')
                .skip(1)
                .all(|c| !c.is_empty() && c != "." && c != "..");
        if !ok {
            return Err((key, format!("{p:?} is not an absolute path like /usr/lib")));
        }
    }
    Ok(())
}

fn check_patterns(key: &'static str, list: &[String]) -> Result<(), Invalid> {
    for p in list {
        let ok = (p.starts_with('/') || p.starts_with('*'))
            && p.len() > 1
            && !p.ends_with('/')
            && !p.contains('\n')
            && !p.split('/').any(|c| c == "..");
        if !ok {
            return Err((key, format!("{p:?} is not an absolute path pattern")));
        }
    }
    Ok(())
}

fn check_ratio(key: &'static str, r: Option<u64>) -> Result<(), Invalid> {
    match r {
        Some(0) => Err((key, "must be at least 1".into())),
        _ => Ok(()),
    }
}

impl ContentPolicy {
    /// Validates the table (absent keys take the defaults above).
    pub(super) fn from_file(f: ContentFile) -> Result<ContentPolicy, Invalid> {
        let allowed_prefixes = owned(f.allowed_prefixes, DEFAULT_ALLOWED_PREFIXES);
        check_prefixes("content.allowed_prefixes", &allowed_prefixes)?;
        let denied_paths = owned(f.denied_paths, DEFAULT_DENIED_PATHS);
        check_patterns("content.denied_paths", &denied_paths)?;
        let trusted_symlinks = owned(f.trusted_symlinks, DEFAULT_TRUSTED_SYMLINKS);
        check_prefixes("content.trusted_symlinks", &trusted_symlinks)?;
        check_ratio("content.max_unpacked_ratio", f.max_unpacked_ratio)?;
        let max_unpacked_mib = f.max_unpacked_mib.unwrap_or(DEFAULT_MAX_UNPACKED_MIB);
        if max_unpacked_mib == 0 {
            return Err(("content.max_unpacked_mib", "must be at least 1".into()));
        }
        let mut exceptions = Vec::new();
        for e in f.exception {
            if e.packages.is_empty() {
                return Err(("content.exception.packages", "empty list".into()));
            }
            super::policy::check_name_globs(&e.packages)
                .map_err(|r| ("content.exception.packages", r))?;
            check_patterns("content.exception.paths", &e.paths)?;
            check_prefixes("content.exception.setuid", &e.setuid)?;
            check_ratio("content.exception.max_unpacked_ratio", e.max_unpacked_ratio)?;
            exceptions.push(Exception {
                packages: e.packages,
                paths: e.paths,
                setuid: e.setuid,
                max_unpacked_ratio: e.max_unpacked_ratio,
            });
        }
        Ok(ContentPolicy {
            allowed_prefixes,
            denied_paths,
            trusted_symlinks,
            max_unpacked_ratio: f.max_unpacked_ratio.unwrap_or(DEFAULT_MAX_UNPACKED_RATIO),
            max_unpacked_mib,
            exceptions,
        })
    }

    /// The rules for package `name`: the general ones plus its matching exceptions.
    pub fn rules_for(&self, name: &str) -> ContentRules<'_> {
        ContentRules {
            policy: self,
            exceptions: self
                .exceptions
                .iter()
                .filter(|e| e.packages.iter().any(|g| glob_match(g, name)))
                .collect(),
        }
    }
}

/// Whether pattern `p` covers `path` (matches it or one of its ancestors).
pub fn pattern_covers(p: &str, path: &str) -> bool {
    glob_match(p, path) || glob_match(&format!("{p}/*"), path)
}

/// Whether prefix `p` covers `path` (is it or one of its ancestors).
pub fn prefix_covers(p: &str, path: &str) -> bool {
    path == p
        || path
            .strip_prefix(p)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Whether `path` is `/` or an ancestor of `p`.
fn ancestor_of(path: &str, p: &str) -> bool {
    path == "/" || prefix_covers(path, p)
}

/// The content rules that apply to one package.
#[derive(Debug, Clone)]
pub struct ContentRules<'a> {
    policy: &'a ContentPolicy,
    exceptions: Vec<&'a Exception>,
}

impl ContentRules<'_> {
    /// `Err(reason)` when a package may not place an entry at the absolute `path`. Directory
    /// entries may also be ancestors of an allowed location (`/`, `/usr`).
    pub fn check_path(&self, path: &str, is_dir: bool) -> Result<(), String> {
        let excepted = self
            .exceptions
            .iter()
            .flat_map(|e| &e.paths)
            .find(|p| pattern_covers(p, path) || (is_dir && ancestor_of(path, p)));
        if excepted.is_some() {
            return Ok(());
        }
        if let Some(d) = self
            .policy
            .denied_paths
            .iter()
            .find(|d| pattern_covers(d, path))
        {
            return Err(format!("{path} is denied by the policy ({d})"));
        }
        let allowed = self
            .policy
            .allowed_prefixes
            .iter()
            .any(|p| prefix_covers(p, path) || (is_dir && ancestor_of(path, p)));
        if allowed {
            Ok(())
        } else {
            Err(format!(
                "{path} is outside the allowed prefixes ({})",
                self.policy.allowed_prefixes.join(", ")
            ))
        }
    }

    /// Whether a setuid/setgid file may be installed at `path`.
    pub fn setuid_allowed(&self, path: &str) -> bool {
        self.exceptions
            .iter()
            .any(|e| e.setuid.iter().any(|s| s == path))
    }

    /// Whether a target-root symlink at `path` may be followed whoever owns it.
    pub fn trusted_symlink(&self, path: &str) -> bool {
        self.policy.trusted_symlinks.iter().any(|s| s == path)
    }

    /// Largest accepted decompressed `data.tar`, in bytes.
    pub fn unpacked_limit(&self, installed_size_kib: Option<u64>) -> u64 {
        let absolute = self.policy.max_unpacked_mib.saturating_mul(1 << 20);
        let ratio = self
            .exceptions
            .iter()
            .filter_map(|e| e.max_unpacked_ratio)
            .max()
            .unwrap_or(self.policy.max_unpacked_ratio);
        match installed_size_kib {
            None => absolute,
            Some(kib) => kib
                .saturating_mul(1024)
                .saturating_mul(ratio)
                .saturating_add(UNPACKED_SLACK)
                .min(absolute),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(toml_text: &str) -> Result<ContentPolicy, Invalid> {
        ContentPolicy::from_file(toml::from_str(toml_text).unwrap())
    }

    #[test]
    fn defaults_refuse_accounts_cron_keys_and_boot() {
        let p = ContentPolicy::default();
        let r = p.rules_for("iocom-app");
        for ok in [
            "/usr/bin/x",
            "/etc/iocom/app.toml",
            "/lib/systemd/system/a.service",
        ] {
            assert_eq!(r.check_path(ok, false), Ok(()), "{ok}");
        }
        for dir in ["/", "/usr", "/etc"] {
            assert_eq!(r.check_path(dir, true), Ok(()), "{dir}");
        }
        for bad in [
            "/etc/passwd",
            "/etc/shadow",
            "/etc/sudoers",
            "/etc/sudoers.d/x",
            "/etc/cron.d/x",
            "/etc/crontab",
            "/var/spool/cron/crontabs/root",
            "/root/.ssh/authorized_keys",
            "/home/u/.ssh/authorized_keys",
            "/var/lib/x/.ssh/authorized_keys",
            "/boot/vmlinuz",
            "/tmp/x",
            "/dev/x",
            "/usrx/y",
        ] {
            assert!(r.check_path(bad, false).is_err(), "{bad}");
        }
        assert!(r.check_path("/etc/cron.d", true).is_err());
        assert!(r.check_path("/boot", true).is_err());
        assert!(!r.setuid_allowed("/usr/bin/x"));
        assert!(r.trusted_symlink("/lib"));
        assert!(!r.trusted_symlink("/usr/share"));
        assert_eq!(r.unpacked_limit(Some(10)), 20 * 1024 + UNPACKED_SLACK);
        assert_eq!(r.unpacked_limit(None), 4096 << 20);
    }

    #[test]
    fn exceptions_apply_to_matching_packages_only() {
        let p = policy(
            r#"
            allowed_prefixes = ["/usr", "/etc"]
            max_unpacked_ratio = 3
            [[exception]]
            packages = ["iocom-net*"]
            paths = ["/etc/sudoers.d/iocom-net", "/run/iocom"]
            setuid = ["/usr/bin/iocom-ping"]
            max_unpacked_ratio = 50
            "#,
        )
        .unwrap();
        let net = p.rules_for("iocom-net-tools");
        assert_eq!(net.check_path("/etc/sudoers.d/iocom-net", false), Ok(()));
        assert_eq!(net.check_path("/run/iocom/x", false), Ok(()));
        assert_eq!(net.check_path("/run", true), Ok(()));
        assert!(net.check_path("/etc/sudoers.d/other", false).is_err());
        assert!(net.check_path("/var/lib/x", false).is_err());
        assert!(net.setuid_allowed("/usr/bin/iocom-ping"));
        assert_eq!(net.unpacked_limit(Some(1)), 50 * 1024 + UNPACKED_SLACK);
        let other = p.rules_for("iocom-app");
        assert!(other.check_path("/etc/sudoers.d/iocom-net", false).is_err());
        assert!(!other.setuid_allowed("/usr/bin/iocom-ping"));
        assert_eq!(other.unpacked_limit(Some(1)), 3 * 1024 + UNPACKED_SLACK);
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            ("allowed_prefixes = [\"usr\"]", "content.allowed_prefixes"),
            ("allowed_prefixes = [\"/usr/\"]", "content.allowed_prefixes"),
            (
                "allowed_prefixes = [\"/usr/../etc\"]",
                "content.allowed_prefixes",
            ),
            ("denied_paths = [\"etc\"]", "content.denied_paths"),
            ("trusted_symlinks = [\"/l*\"]", "content.trusted_symlinks"),
            ("max_unpacked_ratio = 0", "content.max_unpacked_ratio"),
            ("max_unpacked_mib = 0", "content.max_unpacked_mib"),
            ("[[exception]]\npackages = []", "content.exception.packages"),
            (
                "[[exception]]\npackages = [\"A\"]",
                "content.exception.packages",
            ),
            (
                "[[exception]]\npackages = [\"a\"]\nsetuid = [\"/usr/bin/*\"]",
                "content.exception.setuid",
            ),
        ] {
            let e = policy(text).unwrap_err();
            assert_eq!(e.0, key, "{text}: {e:?}");
        }
    }
}
