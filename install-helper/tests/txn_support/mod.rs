//! Shared fixtures for the transaction and D-Bus tests: isolated dpkg roots with a minimal
//! chroot (so maintainer scripts run), .debs built with `dpkg-deb`, a tree hash to prove that a
//! refusal changed nothing, and a control-field verifier standing in for the signature checks
//! where a test is about the transaction, not about verification.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use install_api::ErrorCode;
use install_helper::paths::{Paths, Settings, SystemdMode};
use install_helper::txn::{Candidate, Refusal, Verifier};
use sha2::{Digest, Sha256};

/// A package to build.
#[derive(Debug, Clone, Default)]
pub struct Pkg {
    pub name: String,
    pub version: String,
    pub depends: Option<String>,
    pub postinst: Option<String>,
    pub prerm: Option<String>,
    /// Extra files: path inside the package → content.
    pub files: Vec<(String, String)>,
    pub installed_size_kib: Option<u64>,
    /// Bytes of incompressible data in `usr/share/<name>/payload.bin` (built with `xz -0`).
    pub payload: usize,
}

impl Pkg {
    pub fn new(name: &str, version: &str) -> Self {
        Pkg {
            name: name.into(),
            version: version.into(),
            ..Default::default()
        }
    }
    pub fn postinst(mut self, script: &str) -> Self {
        self.postinst = Some(script.into());
        self
    }
    pub fn depends(mut self, d: &str) -> Self {
        self.depends = Some(d.into());
        self
    }
    pub fn installed_size(mut self, kib: u64) -> Self {
        self.installed_size_kib = Some(kib);
        self
    }
    pub fn payload(mut self, bytes: usize) -> Self {
        self.payload = bytes;
        self
    }

    /// Builds `<dir>/<name>_<version>_all.deb` with dpkg-deb (xz, root-owned).
    pub fn build(&self, dir: &Path) -> PathBuf {
        let tree = dir.join(format!("tree-{}-{}", self.name, self.version));
        let debian = tree.join("DEBIAN");
        std::fs::create_dir_all(&debian).unwrap();
        let mut control = format!(
            "Package: {}\nVersion: {}\nArchitecture: all\nMaintainer: Test <test@example.invalid>\nDescription: test package\n",
            self.name, self.version
        );
        if let Some(d) = &self.depends {
            control.push_str(&format!("Depends: {d}\n"));
        }
        if let Some(s) = self.installed_size_kib {
            control.push_str(&format!("Installed-Size: {s}\n"));
        }
        std::fs::write(debian.join("control"), control).unwrap();
        for (name, body) in [("postinst", &self.postinst), ("prerm", &self.prerm)] {
            if let Some(body) = body {
                let p = debian.join(name);
                std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        let mut files = self.files.clone();
        files.push((
            format!("usr/share/{}/version", self.name),
            self.version.clone(),
        ));
        for (path, body) in files {
            let p = tree.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, body).unwrap();
        }
        if self.payload > 0 {
            let mut seed = 0x9e37_79b9_7f4a_7c15u64;
            let data: Vec<u8> = (0..self.payload)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed >> 24) as u8
                })
                .collect();
            std::fs::write(
                tree.join(format!("usr/share/{}/payload.bin", self.name)),
                data,
            )
            .unwrap();
        }
        let level = if self.payload > 0 { "-z0" } else { "-z6" };
        let out = dir.join(format!("{}_{}_all.deb", self.name, self.version));
        let st = Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", level, "--build"])
            .arg(&tree)
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "dpkg-deb --build failed");
        out
    }
}

/// Creates an isolated dpkg root with `/bin/sh`, a few tools and libc, so maintainer scripts
/// (run chrooted by dpkg) work, plus an initialized dpkg database.
pub fn make_root(root: &Path) {
    for dir in [
        "bin",
        "lib/x86_64-linux-gnu",
        "lib64",
        "tmp",
        "etc",
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
    ] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::copy("/bin/dash", root.join("bin/sh")).unwrap();
    for tool in ["sleep", "rm", "touch", "cat"] {
        std::fs::copy(format!("/bin/{tool}"), root.join("bin").join(tool)).unwrap();
    }
    std::fs::copy(
        "/lib/x86_64-linux-gnu/libc.so.6",
        root.join("lib/x86_64-linux-gnu/libc.so.6"),
    )
    .unwrap();
    std::fs::copy(
        "/lib64/ld-linux-x86-64.so.2",
        root.join("lib64/ld-linux-x86-64.so.2"),
    )
    .unwrap();
    for f in ["status", "available"] {
        std::fs::write(root.join("var/lib/dpkg").join(f), "").unwrap();
    }
    // The lock file every dpkg system has (created by dpkg/apt on first use).
    std::fs::write(root.join("var/lib/dpkg/lock-frontend"), "").unwrap();
}

/// Settings for an isolated root: no systemd, short timeouts, no space reserve.
pub fn settings(root: &Path, state: &Path) -> Settings {
    let paths = Paths::isolated(root, state, &state.join("policy.toml"));
    let mut s = Settings::new(paths, SystemdMode::None, "amd64".into());
    s.lock_timeout = Duration::from_secs(2);
    s.space_reserve = 0;
    s.command_timeout = Duration::from_secs(120);
    s.health_window = Duration::ZERO;
    s.probation = Duration::ZERO;
    s
}

/// `dpkg --root=<root> -s <pkg>`: (status word, version) or None when unknown.
pub fn dpkg_status(root: &Path, pkg: &str) -> Option<(String, String)> {
    let out = Command::new("dpkg-query")
        .arg(format!(
            "--admindir={}",
            root.join("var/lib/dpkg").display()
        ))
        .args(["--show", "--showformat=${Status}\t${Version}", pkg])
        .output()
        .unwrap();
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).unwrap();
    let (st, v) = text.split_once('\t').unwrap();
    Some((
        st.split_whitespace().last().unwrap().to_string(),
        v.to_string(),
    ))
}

/// `dpkg --root=<root> --audit` output (empty when clean).
pub fn dpkg_audit(root: &Path) -> String {
    let out = Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .arg("--audit")
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Hash of a tree: every path, its type, mode and content (symlink targets for links).
pub fn tree_hash(root: &Path) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    walk(root, root, &mut map);
    map
}

fn walk(root: &Path, dir: &Path, map: &mut BTreeMap<String, String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let mode = meta.permissions().mode();
        if meta.is_dir() {
            map.insert(rel, format!("dir {mode:o}"));
            walk(root, &p, map);
        } else if meta.file_type().is_symlink() {
            map.insert(
                rel,
                format!("link {}", std::fs::read_link(&p).unwrap().display()),
            );
        } else if meta.is_file() {
            let digest = hex(&Sha256::digest(std::fs::read(&p).unwrap()));
            map.insert(rel, format!("file {mode:o} {digest}"));
        } else {
            map.insert(rel, format!("other {mode:o}"));
        }
    }
}

/// A verifier that reads the control fields with `dpkg-deb -f` and refuses versions that are
/// not newer (`dpkg --compare-versions`). It does NOT check signatures: it stands in for
/// `verify::verify_package` in tests about the transaction; the real one is used by the
/// helper binary and the D-Bus tests.
#[derive(Debug)]
pub struct FieldsVerifier;

impl Verifier for FieldsVerifier {
    fn verify_stream(
        &self,
        stream: &mut dyn std::io::Read,
        _: Option<&std::fs::File>,
        path: &Path,
    ) -> Result<Candidate, Refusal> {
        // The pass writes the copy as it is read: read it all, then look at the copy.
        std::io::copy(stream, &mut std::io::sink())
            .map_err(|e| Refusal::new(ErrorCode::IoError, e.to_string()))?;
        let field = |f: &str| {
            let out = Command::new("dpkg-deb")
                .arg("-f")
                .arg(path)
                .arg(f)
                .output()
                .unwrap();
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
                .filter(|s| !s.is_empty())
        };
        let name = field("Package").ok_or(Refusal::new(ErrorCode::BadControl, "no Package"))?;
        let version = field("Version").ok_or(Refusal::new(ErrorCode::BadControl, "no Version"))?;
        Ok(Candidate {
            name,
            version,
            architecture: field("Architecture").unwrap_or_default(),
            sha256: hex(&Sha256::digest(std::fs::read(path).unwrap())),
            signer: "unverified (test)".into(),
            installed_size_kib: field("Installed-Size").and_then(|s| s.parse().ok()),
            units: vec!["app.service".into()],
            control: Default::default(),
        })
    }

    fn check_order(&self, cand: &Candidate, installed: Option<&str>) -> Result<(), Refusal> {
        let Some(old) = installed else {
            return Ok(());
        };
        let newer = Command::new("dpkg")
            .args(["--compare-versions", &cand.version, "gt", old])
            .status()
            .unwrap()
            .success();
        if newer {
            Ok(())
        } else {
            Err(Refusal::new(
                ErrorCode::NotNewer,
                format!("{} {} <= {old}", cand.name, cand.version),
            ))
        }
    }
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A test world: a package root, helper state and a directory for built packages.
pub struct World {
    pub tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub state: PathBuf,
    pub debs: PathBuf,
}

impl World {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let state = tmp.path().join("state");
        let debs = tmp.path().join("debs");
        make_root(&root);
        std::fs::create_dir_all(&debs).unwrap();
        World {
            tmp,
            root,
            state,
            debs,
        }
    }

    pub fn settings(&self) -> Settings {
        settings(&self.root, &self.state)
    }
}

/// A signing key trusted by a policy file: packages signed with [`Signer::sign`] pass the real
/// verification (`verify::verify_package`).
pub struct Signer {
    pub gpg: crate::common::Gpg,
    pub key: crate::common::Key,
    pub policy: PathBuf,
}

impl Signer {
    /// A new ed25519 key, trusted by `dir/policy.toml` (packages `iocom-*`, signature required).
    pub fn new(dir: &Path) -> Self {
        let gpg = crate::common::Gpg::new();
        let key = gpg.gen_key(
            "iocom test origin <origin@example.invalid>",
            crate::common::KeyAlgo::Ed25519,
        );
        let keys = dir.join("trusted-keys");
        std::fs::create_dir_all(&keys).unwrap();
        gpg.write_key(&key, &keys, false);
        let policy = dir.join("policy.toml");
        std::fs::write(
            &policy,
            format!(
                "allowed_packages = [\"iocom-*\"]\nrequire_signature = true\ntrusted_keys_dir = \"{}\"\n",
                keys.display()
            ),
        )
        .unwrap();
        Signer { gpg, key, policy }
    }

    /// Signs `deb` in place with `debsigs --sign=origin`.
    pub fn sign(&self, deb: &Path) -> PathBuf {
        crate::common::debsigs_sign(&self.gpg, deb, &self.key);
        deb.to_path_buf()
    }

    /// The real verifier for this policy.
    pub fn verifier(&self) -> install_helper::verifier::PolicyVerifier {
        install_helper::verifier::PolicyVerifier::load(&self.policy, "amd64").unwrap()
    }
}

/// Makes `path` and its ancestors up to `/tmp` traversable (and files readable) by other uids,
/// for tests that act as another user.
pub fn open_up(path: &Path) {
    let mut p = Some(path);
    while let Some(cur) = p {
        if cur == Path::new("/tmp") || cur == Path::new("/") {
            break;
        }
        let meta = std::fs::metadata(cur).unwrap();
        let mode = meta.permissions().mode();
        let add = if meta.is_dir() { 0o711 } else { 0o644 };
        std::fs::set_permissions(cur, std::fs::Permissions::from_mode(mode | add)).unwrap();
        p = cur.parent();
    }
}

/// Creates a FIFO at `path`.
pub fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap();
}

/// Stages `deb` the way the service does (one copy-and-verify pass into the staging
/// directory under a new transaction id, no progress reports); returns the id and the copy.
pub fn stage_file(
    settings: &Settings,
    deb: &Path,
    verifier: &dyn Verifier,
) -> (String, install_helper::stage::Taken) {
    let txid = install_helper::txn::new_txid();
    let taken = install_helper::stage::take(
        std::fs::File::open(deb).unwrap(),
        &settings.paths.staging_dir(),
        &txid,
        (settings.max_package_size, 0),
        verifier,
        install_helper::stage::Watch {
            advisory_size: None,
            min_interval: Duration::ZERO,
            report: &mut |_| {},
        },
    )
    .unwrap();
    (txid, taken)
}

/// Runs `f` with the transaction environment the tests use: `settings`, no systemd, no
/// health probe, progress reports ignored.
pub fn with_quiet_env<R>(
    settings: &Settings,
    f: impl FnOnce(&mut install_helper::txn::Env<'_, '_>) -> R,
) -> R {
    let mut progress = |_: install_api::Phase, _: u32, _: &str| {};
    let mut env = install_helper::txn::Env {
        settings,
        systemd: None,
        progress: &mut progress,
        healthy: None,
    };
    f(&mut env)
}
