//! `iocomd --demo`: everything the demo device needs besides the daemon itself.
//!
//! The demo runs as an ordinary user with all of its state under one directory:
//! - `gnupg/`: a GNUPGHOME holding the demo's origin signing key, so users can sign their own
//!   packages for it with `GNUPGHOME=<dir>/gnupg debsigs --sign=origin --default-key=<id>`;
//! - `trusted-keys/demo.pgp` and `install-policy.toml`: the helper's policy: any package
//!   name, but a valid origin signature by the demo key and no downgrade, as in production;
//! - `root/`: the dpkg root packages are installed into (never the host's); the helper runs
//!   dpkg and the maintainer scripts in a sandbox where nothing else is writable, even when the
//!   demo runs as root (`install_helper::sandbox`);
//! - `packages/`: a signed sample package made for you to push.
//!
//! Preparation is idempotent: an existing key and sample package are reused.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Name of the sample package the demo builds.
pub const SAMPLE_PACKAGE: &str = "iocom-demo-hello";
/// Version of the sample package the demo builds.
pub const SAMPLE_VERSION: &str = "1.0";

/// Why the demo could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A required tool is not installed.
    #[error("the demo needs `{tool}` ({package}); install it with: apt-get install {package}")]
    MissingTool {
        /// The program that was not found.
        tool: &'static str,
        /// The Debian package providing it.
        package: &'static str,
    },
    /// A tool ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    ToolFailed {
        /// The command line.
        command: String,
        /// Exit status as text.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A file system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// The prepared demo environment.
#[derive(Debug, Clone)]
pub struct DemoEnv {
    /// The state directory everything lives under.
    pub state_dir: PathBuf,
    /// GNUPGHOME with the demo's signing key.
    pub gnupghome: PathBuf,
    /// Fingerprint of the demo signing key (upper-case hex).
    pub key_fingerprint: String,
    /// The helper policy file for the demo.
    pub policy: PathBuf,
    /// The dpkg root packages are installed into.
    pub dpkg_root: PathBuf,
    /// The helper's own state directory.
    pub helper_state: PathBuf,
    /// A signed sample package to push.
    pub sample_package: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DemoError + '_ {
    move |source| DemoError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn mkdir_private(path: &Path) -> Result<(), DemoError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io_err(path))
}

/// Runs a tool, mapping "not found" and failures to [`DemoError`]; returns its stdout.
fn run<I, S>(
    tool: &'static str,
    package: &'static str,
    args: I,
    env: &[(&str, &Path)],
) -> Result<String, DemoError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let mut cmd = Command::new(tool);
    cmd.args(&args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => DemoError::MissingTool { tool, package },
        _ => DemoError::Io {
            path: PathBuf::from(tool),
            source: e,
        },
    })?;
    if !out.status.success() {
        let command = std::iter::once(tool.to_owned())
            .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
            .collect::<Vec<_>>()
            .join(" ");
        return Err(DemoError::ToolFailed {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Prepares (or reuses) the demo environment under `state_dir`.
pub fn prepare(state_dir: &Path) -> Result<DemoEnv, DemoError> {
    mkdir_private(state_dir)?;
    let state_dir = state_dir.canonicalize().map_err(io_err(state_dir))?;
    let gnupghome = state_dir.join("gnupg");
    mkdir_private(&gnupghome)?;
    let key_fingerprint = ensure_key(&gnupghome)?;

    let keys_dir = state_dir.join("trusted-keys");
    mkdir_private(&keys_dir)?;
    let exported = run(
        "gpg",
        "gnupg",
        ["--batch", "--armor", "--export", &key_fingerprint],
        &[("GNUPGHOME", &gnupghome)],
    )?;
    let key_file = keys_dir.join("demo.asc");
    std::fs::write(&key_file, exported).map_err(io_err(&key_file))?;

    let policy = state_dir.join("install-policy.toml");
    let policy_text = "# Install policy of the iocomd demo: any package name, but signed by the demo key\n\
                       # (trusted-keys/demo.asc) and never a downgrade, exactly as in production.\n\
                       allowed_packages = [\"*\"]\n\
                       allow_downgrade = false\n\
                       allow_reinstall = false\n\
                       require_signature = true\n\
                       trusted_keys_dir = \"trusted-keys\"\n";
    std::fs::write(&policy, policy_text).map_err(io_err(&policy))?;

    let dpkg_root = state_dir.join("root");
    mkdir_private(&dpkg_root)?;
    let helper_state = state_dir.join("helper");
    mkdir_private(&helper_state)?;

    let packages = state_dir.join("packages");
    mkdir_private(&packages)?;
    let sample_package = packages.join(format!("{SAMPLE_PACKAGE}_{SAMPLE_VERSION}_all.deb"));
    if !sample_package.exists() {
        build_sample(&packages, &sample_package)?;
        sign(&gnupghome, &key_fingerprint, &sample_package)?;
    }
    // gpg starts an agent for this GNUPGHOME; do not leave it running behind the demo.
    let _ = run(
        "gpgconf",
        "gnupg",
        ["--kill", "gpg-agent"],
        &[("GNUPGHOME", &gnupghome)],
    );
    Ok(DemoEnv {
        state_dir,
        gnupghome,
        key_fingerprint,
        policy,
        dpkg_root,
        helper_state,
        sample_package,
    })
}

/// Returns the fingerprint of the demo key, generating it on first use.
fn ensure_key(gnupghome: &Path) -> Result<String, DemoError> {
    let env = [("GNUPGHOME", gnupghome)];
    let list = |g: &Path| {
        run(
            "gpg",
            "gnupg",
            ["--batch", "--with-colons", "--list-secret-keys"],
            &[("GNUPGHOME", g)],
        )
    };
    if let Some(fpr) = first_fingerprint(&list(gnupghome)?) {
        return Ok(fpr);
    }
    run(
        "gpg",
        "gnupg",
        [
            "--batch",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--quick-gen-key",
            "iocomd demo origin key <demo@iocomd.invalid>",
            "ed25519",
            "sign",
            "never",
        ],
        &env,
    )?;
    first_fingerprint(&list(gnupghome)?).ok_or_else(|| DemoError::ToolFailed {
        command: "gpg --list-secret-keys".into(),
        status: "no key".into(),
        stderr: "gpg generated no secret key".into(),
    })
}

/// First `fpr` record after a `sec` record in `gpg --with-colons` output.
fn first_fingerprint(colons: &str) -> Option<String> {
    let mut in_sec = false;
    for line in colons.lines() {
        let mut fields = line.split(':');
        match fields.next() {
            Some("sec") => in_sec = true,
            Some("fpr") if in_sec => return fields.nth(8).map(str::to_owned),
            _ => {}
        }
    }
    None
}

/// Builds the unsigned sample package with dpkg-deb (xz members, as debsigs needs).
fn build_sample(work: &Path, out: &Path) -> Result<(), DemoError> {
    let tree = work.join("sample-build");
    let _ = std::fs::remove_dir_all(&tree);
    let debian = tree.join("DEBIAN");
    let share = tree.join("usr/share").join(SAMPLE_PACKAGE);
    for dir in [&debian, &share] {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let control = debian.join("control");
    let control_text = format!(
        "Package: {SAMPLE_PACKAGE}\nVersion: {SAMPLE_VERSION}\nArchitecture: all\n\
         Maintainer: iocomd demo <demo@iocomd.invalid>\nSection: misc\nPriority: optional\n\
         Description: sample package made by iocomd --demo\n \
         Installed by pushing it to the demo device with iocomctl.\n"
    );
    std::fs::write(&control, control_text).map_err(io_err(&control))?;
    let hello = share.join("hello.txt");
    std::fs::write(&hello, "Hello from a package delivered over IOCOM.\n")
        .map_err(io_err(&hello))?;
    run(
        "dpkg-deb",
        "dpkg",
        [
            OsStr::new("--root-owner-group"),
            OsStr::new("-Zxz"),
            OsStr::new("--build"),
            tree.as_os_str(),
            out.as_os_str(),
        ],
        &[],
    )?;
    std::fs::remove_dir_all(&tree).map_err(io_err(&tree))
}

/// Signs `deb` with `debsigs --sign=origin`, as users will sign their own packages.
pub fn sign(gnupghome: &Path, key: &str, deb: &Path) -> Result<(), DemoError> {
    run(
        "debsigs",
        "debsigs",
        [
            OsStr::new("--sign=origin"),
            OsStr::new(&format!("--default-key={key}")),
            deb.as_os_str(),
        ],
        &[("GNUPGHOME", gnupghome)],
    )
    .map(drop)
}

/// The version of `package` installed in the demo's package root (`root/var/lib/dpkg/status`),
/// if it is installed: after a restart the sample may be installed already, and pushing it
/// again is refused as not newer.
pub fn installed_version(env: &DemoEnv, package: &str) -> Option<String> {
    let status = std::fs::read_to_string(env.dpkg_root.join("var/lib/dpkg/status")).ok()?;
    status.split("\n\n").find_map(|para| {
        let field = |name: &str| {
            para.lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
        };
        (field("Package:")?.as_str() == package && field("Status:")?.ends_with(" installed"))
            .then(|| field("Version:"))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_taken_from_the_secret_key_record() {
        let colons = "sec:u:255:22:AAAABBBBCCCCDDDD:1700000000:::u:::scESC:::+:::ed25519:::0:\n\
                      fpr:::::::::0123456789ABCDEF0123456789ABCDEF01234567:\n\
                      grp:::::::::X:\n";
        assert_eq!(
            first_fingerprint(colons).as_deref(),
            Some("0123456789ABCDEF0123456789ABCDEF01234567")
        );
        assert_eq!(first_fingerprint("pub:u:255\nfpr:::::::::AB:\n"), None);
    }

    #[test]
    fn the_installed_sample_is_read_from_the_demo_root() {
        let d = tempfile::tempdir().unwrap();
        let env = DemoEnv {
            state_dir: d.path().into(),
            gnupghome: d.path().into(),
            key_fingerprint: String::new(),
            policy: d.path().into(),
            dpkg_root: d.path().join("root"),
            helper_state: d.path().into(),
            sample_package: d.path().into(),
        };
        assert_eq!(installed_version(&env, SAMPLE_PACKAGE), None);
        let admin = d.path().join("root/var/lib/dpkg");
        std::fs::create_dir_all(&admin).unwrap();
        std::fs::write(
            admin.join("status"),
            "Package: other\nStatus: install ok installed\nVersion: 9\n\n\
             Package: iocom-demo-hello\nStatus: install ok installed\nVersion: 1.0\n",
        )
        .unwrap();
        assert_eq!(
            installed_version(&env, SAMPLE_PACKAGE).as_deref(),
            Some("1.0")
        );
        assert_eq!(installed_version(&env, "missing"), None);
    }
}
