//! What survives a restart, in `STATE/hawkbit/`: the action being worked on (its artifacts and
//! the partial files' validators, for `Range`/`If-Range` resumption), whether it was handed to
//! the installer, the final feedback not yet delivered, and the versions last reported.
//! Files are written atomically (temporary file, fsync, rename); a file that cannot be parsed
//! is logged and ignored (the download then starts over, which the hash check makes safe).

use super::installer::PackageVersion;
use super::model::Feedback;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One artifact of the action being downloaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartState {
    /// Download URL.
    pub href: String,
    /// File name on the server.
    pub filename: String,
    /// Expected size, if the server gave it.
    pub size: Option<u64>,
    /// Expected SHA-256, hex.
    pub sha256: String,
    /// The partial (then final) file in the spool directory.
    pub path: PathBuf,
    /// `ETag` (or `Last-Modified`) of the response the partial file came from, for `If-Range`.
    pub validator: Option<String>,
    /// Module name and version of its chunk.
    pub module: PackageVersion,
}

/// How far the action got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Downloading (or downloaded, waiting to install).
    Downloading,
    /// Handed to the installer; a cancel is refused from here on.
    HandedOver,
    /// Finished; `pending` holds the final feedback still to deliver.
    Report,
}

/// The persisted action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionState {
    /// Action id.
    pub action: String,
    /// Stage.
    pub stage: Stage,
    /// Artifacts, in install order.
    pub parts: Vec<PartState>,
    /// Final feedback not yet delivered (stage [`Stage::Report`]).
    pub pending: Option<Feedback>,
}

/// The state directory of the DDI client.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

const ACTION: &str = "action.json";
const VERSIONS: &str = "reported-versions.json";

impl Store {
    /// `state_dir/hawkbit`, created (mode 0700) if missing.
    pub fn open(state_dir: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = state_dir.join("hawkbit");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        Ok(Self { dir })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn read<T: for<'de> Deserialize<'de>>(&self, name: &str) -> Option<T> {
        let path = self.dir.join(name);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read DDI state; ignoring it");
                return None;
            }
        };
        match serde_json::from_slice(&text) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "corrupt DDI state; ignoring it");
                None
            }
        }
    }

    fn write<T: Serialize>(&self, name: &str, value: &T) -> std::io::Result<()> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&self.dir)?.sync_all()
    }

    /// The persisted action, if any.
    pub fn action(&self) -> Option<ActionState> {
        self.read(ACTION)
    }

    /// Persists the action (logs on failure: resumption is an optimisation, the action goes on).
    pub fn save_action(&self, a: &ActionState) {
        if let Err(e) = self.write(ACTION, a) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot persist DDI action state");
        }
    }

    /// Forgets the action.
    pub fn clear_action(&self) {
        match std::fs::remove_file(self.dir.join(ACTION)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove DDI action state");
            }
            _ => {}
        }
    }

    /// The versions last reported to the server.
    pub fn reported_versions(&self) -> Option<Vec<PackageVersion>> {
        self.read(VERSIONS)
    }

    /// Records the versions reported.
    pub fn save_reported_versions(&self, v: &[PackageVersion]) {
        if let Err(e) = self.write(VERSIONS, &v) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot persist reported versions");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_state_round_trips_and_corruption_is_ignored() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        assert!(s.action().is_none());
        let a = ActionState {
            action: "7".into(),
            stage: Stage::Downloading,
            parts: vec![PartState {
                href: "http://127.0.0.1:1/a.deb".into(),
                filename: "a.deb".into(),
                size: Some(10),
                sha256: "00".repeat(32),
                path: d.path().join("x"),
                validator: Some("\"e1\"".into()),
                module: PackageVersion::new("a", "1"),
            }],
            pending: None,
        };
        s.save_action(&a);
        assert_eq!(s.action(), Some(a));
        std::fs::write(s.dir().join(ACTION), b"{not json").unwrap();
        assert!(s.action().is_none());
        s.clear_action();
        s.clear_action();
        assert!(!s.dir().join(ACTION).exists());
    }
}
