//! The write-ahead journal of one transaction (`journal.json`): written (fsync + atomic rename)
//! before dpkg touches the system, updated at each phase change, removed once the receipt is
//! recorded and the new package file in the cache is durable ([`JournalPhase::Committed`]).
//! On start an existing journal means the helper died mid-transaction; see [`crate::recover`].

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil;

/// Where a journaled transaction stood when it was last written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JournalPhase {
    /// dpkg is (or was about to be) installing the new version.
    Installing,
    /// The new version is installed; units are being restarted, gated and watched on
    /// probation.
    Gating,
    /// The previous version is being restored (or the new one removed).
    RollingBack,
    /// The new version stays (committed): the result is recorded and the new package file in
    /// the cache, the next update's rollback source, is being made durable (fsync) after the
    /// result was reported. After a crash in this phase the file is kept only if it still
    /// has the verified `sha256`, and the result is recorded if it was not yet.
    Committed,
}

/// Everything needed to finish or undo a transaction after a crash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// Transaction id.
    pub txid: String,
    /// Package name.
    pub package: String,
    /// Installed version before the transaction (`None`: not installed).
    pub from_version: Option<String>,
    /// Version being installed.
    pub to_version: String,
    /// Architecture of the new package.
    pub architecture: String,
    /// The new package file (in the cache).
    pub new_deb: PathBuf,
    /// The previous version's package file, when the cache has it.
    pub previous_deb: Option<PathBuf>,
    /// Units to restart and gate.
    pub units: Vec<String>,
    /// SHA-256 of the new package.
    pub sha256: String,
    /// Who signed the new package.
    pub signer: String,
    /// Current phase.
    pub phase: JournalPhase,
    /// Why a rollback is running (set with `RollingBack`).
    pub rollback_reason: Option<String>,
    /// Start time, seconds since the Unix epoch.
    pub started: u64,
}

impl Journal {
    /// Writes the journal durably to `path`.
    pub fn write(&self, path: &Path) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        fsutil::write_atomic(path, &bytes)
    }

    /// Sets the phase and writes the journal.
    pub fn advance(&mut self, phase: JournalPhase, path: &Path) -> io::Result<()> {
        self.phase = phase;
        self.write(path)
    }

    /// Reads the journal at `path`; `Ok(None)` when there is none.
    pub fn read(path: &Path) -> io::Result<Option<Journal>> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| io::Error::other(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes the journal at `path` (the transaction is finished).
    pub fn clear(path: &Path) -> io::Result<()> {
        fsutil::remove_durably(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_round_trips_and_clears() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("journal.json");
        assert_eq!(Journal::read(&p).unwrap(), None);
        let mut j = Journal {
            txid: "t1".into(),
            package: "app".into(),
            from_version: Some("1.0".into()),
            to_version: "2.0".into(),
            architecture: "all".into(),
            new_deb: "/c/app_2.0_all.deb".into(),
            previous_deb: None,
            units: vec!["app.service".into()],
            sha256: "00".into(),
            signer: "k".into(),
            phase: JournalPhase::Installing,
            rollback_reason: None,
            started: 5,
        };
        j.write(&p).unwrap();
        assert_eq!(Journal::read(&p).unwrap().as_ref(), Some(&j));
        j.advance(JournalPhase::RollingBack, &p).unwrap();
        assert_eq!(
            Journal::read(&p).unwrap().unwrap().phase,
            JournalPhase::RollingBack
        );
        Journal::clear(&p).unwrap();
        assert_eq!(Journal::read(&p).unwrap(), None);
    }

    #[test]
    fn corrupt_journal_is_an_error_naming_the_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("journal.json");
        std::fs::write(&p, b"{not json").unwrap();
        let e = Journal::read(&p).unwrap_err();
        assert!(e.to_string().contains("journal.json"), "{e}");
    }
}
