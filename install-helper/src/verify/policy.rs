//! The install policy: which packages, architectures and versions the helper accepts, and
//! which OpenPGP keys it trusts for `_gpgorigin`.
//!
//! Loaded from a TOML file (production: `/etc/iocomd/install-policy.toml`; the commented sample
//! in the repository, `etc/iocomd/install-policy.toml`, documents every key). Unknown keys are
//! errors. Relative key paths are resolved against the directory of the policy file.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::content_rules::ContentPolicy;
use super::signature::TrustedKey;

/// A policy file problem; every variant names the file (and the key where there is one).
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The policy file cannot be read.
    #[error("policy {path}: {source}")]
    Read {
        /// The policy file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML, an unknown key, or a value of the wrong type.
    #[error("policy {path}: {message}")]
    Parse {
        /// The policy file.
        path: PathBuf,
        /// The parser's message (names the key and line).
        message: String,
    },
    /// A key has an unacceptable value.
    #[error("policy {path}: key `{key}`: {reason}")]
    Invalid {
        /// The policy file.
        path: PathBuf,
        /// The TOML key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A trusted key file or directory cannot be used.
    #[error("policy {path}: {source}")]
    Key {
        /// The policy file.
        path: PathBuf,
        /// The key error (names the key file).
        #[source]
        source: super::signature::KeyError,
    },
}

/// The file format (see the shipped sample).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    allowed_packages: Vec<String>,
    architectures: Option<Vec<String>>,
    #[serde(default)]
    allow_downgrade: bool,
    #[serde(default)]
    allow_reinstall: bool,
    #[serde(default = "default_true")]
    require_signature: bool,
    trusted_keys_dir: Option<PathBuf>,
    #[serde(default)]
    trusted_keys: Vec<PathBuf>,
    #[serde(default)]
    content: super::content_rules::ContentFile,
}

fn default_true() -> bool {
    true
}

/// The loaded install policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Globs (`*`, `?`) a package name must match (at least one).
    pub allowed_packages: Vec<String>,
    /// Accepted architectures; `None` means the host's and `all`. The architecture must in any
    /// case be the host's or `all`.
    pub architectures: Option<Vec<String>>,
    /// Accept versions older than the installed one.
    pub allow_downgrade: bool,
    /// Accept the installed version again.
    pub allow_reinstall: bool,
    /// Refuse packages without `_gpgorigin`. A present signature is always verified.
    pub require_signature: bool,
    /// Keys trusted for `_gpgorigin`.
    pub trusted_keys: Vec<TrustedKey>,
    /// What `data.tar` may contain (`[content]`).
    pub content: ContentPolicy,
    /// Where the policy came from (for messages).
    pub source: PathBuf,
}

/// Shell-style match of `name` against `pattern` (`*` any run, `?` one character).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == b'?' || Some(&c) == n.get(ni) => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|&c| c == b'*'))
}

/// `Err(reason)` unless every glob is a package name glob (`[a-z0-9+.-]` and `*` `?`).
pub fn check_name_globs(globs: &[String]) -> Result<(), String> {
    match globs.iter().find(|g| {
        g.is_empty()
            || !g
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+.-*?".contains(&b))
    }) {
        Some(g) => Err(format!(
            "{g:?} is not a package name glob ([a-z0-9+.-] and * ?)"
        )),
        None => Ok(()),
    }
}

impl Policy {
    /// Loads the policy file at `path` and the trusted keys it names.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Policy::from_toml_str(&text, path)
    }

    /// Parses policy text as if read from `path` (relative key paths resolve against its
    /// directory).
    pub fn from_toml_str(text: &str, path: &Path) -> Result<Policy, PolicyError> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| PolicyError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let invalid = |key, reason: String| PolicyError::Invalid {
            path: path.to_owned(),
            key,
            reason,
        };
        if file.allowed_packages.is_empty() {
            return Err(invalid(
                "allowed_packages",
                "empty: no package could ever be installed".into(),
            ));
        }
        check_name_globs(&file.allowed_packages).map_err(|r| invalid("allowed_packages", r))?;
        let content =
            ContentPolicy::from_file(file.content).map_err(|(key, reason)| invalid(key, reason))?;
        if let Some(archs) = &file.architectures {
            if archs.is_empty() {
                return Err(invalid(
                    "architectures",
                    "empty list; omit the key for the host's and \"all\"".into(),
                ));
            }
            if let Some(a) = archs
                .iter()
                .find(|a| !super::control::valid_architecture(a))
            {
                return Err(invalid(
                    "architectures",
                    format!("{a:?} is not an architecture name"),
                ));
            }
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_owned()
            } else {
                base.join(p)
            }
        };
        let key_err = |source| PolicyError::Key {
            path: path.to_owned(),
            source,
        };
        let mut key_files: Vec<PathBuf> = file.trusted_keys.iter().map(|p| resolve(p)).collect();
        if let Some(dir) = &file.trusted_keys_dir {
            let dir = resolve(dir);
            let entries = std::fs::read_dir(&dir)
                .map_err(|e| invalid("trusted_keys_dir", format!("{}: {e}", dir.display())))?;
            let mut found = Vec::new();
            for entry in entries {
                let entry = entry
                    .map_err(|e| invalid("trusted_keys_dir", format!("{}: {e}", dir.display())))?;
                let p = entry.path();
                let is_key = p
                    .extension()
                    .is_some_and(|e| e == "pgp" || e == "asc" || e == "gpg");
                if is_key && p.is_file() {
                    found.push(p);
                }
            }
            found.sort();
            key_files.extend(found);
        }
        let mut trusted_keys = Vec::new();
        for f in &key_files {
            trusted_keys.extend(TrustedKey::from_file(f).map_err(key_err)?);
        }
        if file.require_signature && trusted_keys.is_empty() {
            return Err(invalid(
                "trusted_keys_dir",
                "require_signature is true but no trusted key (*.pgp, *.asc, *.gpg) was found"
                    .into(),
            ));
        }
        Ok(Policy {
            allowed_packages: file.allowed_packages,
            architectures: file.architectures,
            allow_downgrade: file.allow_downgrade,
            allow_reinstall: file.allow_reinstall,
            require_signature: file.require_signature,
            trusted_keys,
            content,
            source: path.to_owned(),
        })
    }

    /// Whether `name` matches one of the allowed globs.
    pub fn name_allowed(&self, name: &str) -> bool {
        self.allowed_packages.iter().any(|g| glob_match(g, name))
    }

    /// Whether `arch` is acceptable on a host of architecture `host_arch`.
    pub fn architecture_allowed(&self, arch: &str, host_arch: &str) -> bool {
        let native = arch == host_arch || arch == "all";
        native
            && self
                .architectures
                .as_ref()
                .is_none_or(|list| list.iter().any(|a| a == arch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("iocom-*", "iocom-app"));
        assert!(glob_match("iocom-*", "iocom-"));
        assert!(!glob_match("iocom-*", "iocomd"));
        assert!(glob_match("*", "x"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("*app*", "iocom-app-dbg"));
        assert!(glob_match("a*b*c", "aXbYbZc"));
        assert!(!glob_match("a*b*c", "aXbYbZ"));
        assert!(glob_match("iocomd", "iocomd"));
        assert!(!glob_match("iocomd", "iocomd2"));
    }

    #[test]
    fn parse_errors_name_the_key() {
        let p = Path::new("/nonexistent/policy.toml");
        let e = Policy::from_toml_str("allowed_packages = []\nrequire_signature = false\n", p)
            .unwrap_err();
        assert!(e.to_string().contains("allowed_packages"), "{e}");
        let e = Policy::from_toml_str("allowed_packages = [\"x*\"]\nallow_downgrad = true\n", p)
            .unwrap_err();
        assert!(e.to_string().contains("allow_downgrad"), "{e}");
        assert!(e.to_string().contains("/nonexistent/policy.toml"), "{e}");
        let e = Policy::from_toml_str("allowed_packages = [\"X\"]\nrequire_signature = false\n", p)
            .unwrap_err();
        assert!(e.to_string().contains("allowed_packages"), "{e}");
        let e = Policy::from_toml_str("allowed_packages = [\"x\"]\n", p).unwrap_err();
        assert!(e.to_string().contains("trusted_keys_dir"), "{e}");
        let e = Policy::from_toml_str(
            "allowed_packages = [\"x\"]\ntrusted_keys_dir = \"keys\"\n",
            p,
        )
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/keys"), "{e}");
        let ok = Policy::from_toml_str(
            "allowed_packages = [\"x*\"]\nrequire_signature = false\narchitectures = [\"all\"]\n",
            p,
        )
        .unwrap();
        assert!(ok.architecture_allowed("all", "amd64"));
        assert!(!ok.architecture_allowed("amd64", "amd64"));
        assert!(!ok.architecture_allowed("arm64", "amd64"));
    }
}
