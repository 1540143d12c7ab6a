//! The cache sync of a committed transaction. The new package file in the cache is the next
//! update's rollback source, so it must become durable, but nothing of the installed system
//! needs it (dpkg made the installed files durable itself). Its fsync, and with it the
//! writeback of the whole package (up to gigabytes), therefore runs after the result was
//! recorded and reported, not before; the copy is not written back early either, so dpkg's
//! own fsyncs do not wait for it.
//!
//! Crash safety: the journal stays, in [`JournalPhase::Committed`], until the file is durable.
//! The next transaction waits until the previous one's sync is complete (the service's worker
//! holds its transaction gate through [`CacheSync::complete`]). After a crash
//! [`crate::recover`] keeps the file only if its contents still have the SHA-256 verification
//! found ([`keep_if_intact`]); otherwise it is removed and the next update takes its rollback
//! source from the installed files (`dpkg-repack`), as for a version the helper did not
//! install.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::cache::Cache;
use crate::fsutil;
use crate::journal::{Journal, JournalPhase};

/// A committed transaction whose new package file is not durable yet.
#[must_use = "the journal stays until the cache sync is complete"]
#[derive(Debug)]
pub struct CacheSync {
    journal_path: PathBuf,
    cache_dir: PathBuf,
    package: String,
    new_deb: PathBuf,
}

impl CacheSync {
    /// The cache sync of `journal` (in phase [`JournalPhase::Committed`]) at `journal_path`.
    pub(crate) fn new(journal_path: &Path, cache_dir: &Path, journal: &Journal) -> Self {
        debug_assert_eq!(journal.phase, JournalPhase::Committed);
        CacheSync {
            journal_path: journal_path.to_path_buf(),
            cache_dir: cache_dir.to_path_buf(),
            package: journal.package.clone(),
            new_deb: journal.new_deb.clone(),
        }
    }

    /// The cached package file being made durable.
    pub fn new_deb(&self) -> &Path {
        &self.new_deb
    }

    /// Makes the new package file durable, prunes the package's older cached versions and
    /// removes the journal. A file that cannot be fsynced is removed from the cache (the next
    /// update repacks its rollback source).
    pub fn complete(self) {
        if let Err(e) = std::fs::File::open(&self.new_deb).and_then(|f| f.sync_all()) {
            tracing::warn!(error = %e, file = %self.new_deb.display(),
                "cannot make the cached package durable; removing it");
            let _ = fsutil::remove_durably(&self.new_deb);
        }
        prune(&self.cache_dir, &self.package, &self.new_deb);
        if let Err(e) = Journal::clear(&self.journal_path) {
            tracing::error!(error = %e, "cannot remove the journal");
        }
    }
}

/// Removes every cached version of `package` but `keep`.
pub(crate) fn prune(cache_dir: &Path, package: &str, keep: &Path) {
    if let Err(e) = Cache::new(cache_dir).prune(package, keep) {
        tracing::warn!(error = %e, "cannot prune the package cache");
    }
}

/// SHA-256 of the file at `path`, lowercase hex.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// After a crash: keeps the cached package file `deb` (and makes it durable) only if its
/// contents have `sha256`, the hash verification found; otherwise removes it. Returns
/// whether it was kept.
pub fn keep_if_intact(deb: &Path, sha256: &str) -> bool {
    let found = sha256_file(deb);
    match &found {
        Ok(h) if h.eq_ignore_ascii_case(sha256) => {
            match std::fs::File::open(deb).and_then(|f| f.sync_all()) {
                Ok(()) => return true,
                Err(e) => tracing::warn!(error = %e, file = %deb.display(),
                    "cannot make the cached package durable"),
            }
        }
        Ok(h) => tracing::warn!(file = %deb.display(), found = %h, expected = %sha256,
            "the cached package does not have the verified SHA-256 (incomplete after a crash?)"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return false,
        Err(e) => {
            tracing::warn!(error = %e, file = %deb.display(), "cannot read the cached package")
        }
    }
    if let Err(e) = fsutil::remove_durably(deb) {
        tracing::error!(error = %e, file = %deb.display(), "cannot remove the cached package");
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn an_intact_file_is_kept_and_a_changed_one_removed() {
        let d = tempfile::tempdir().unwrap();
        let deb = d.path().join("app_1.0_all.deb");
        std::fs::write(&deb, b"abc").unwrap();
        assert_eq!(sha256_file(&deb).unwrap(), ABC);
        assert!(keep_if_intact(&deb, ABC));
        assert!(keep_if_intact(&deb, &ABC.to_uppercase()));
        assert_eq!(std::fs::read(&deb).unwrap(), b"abc");
        // The same size, other bytes (a power cut before the writeback: zeros).
        std::fs::write(&deb, [0u8; 3]).unwrap();
        assert!(!keep_if_intact(&deb, ABC));
        assert!(!deb.exists());
        // Truncated.
        std::fs::write(&deb, b"ab").unwrap();
        assert!(!keep_if_intact(&deb, ABC));
        assert!(!deb.exists());
        // Gone.
        assert!(!keep_if_intact(&deb, ABC));
    }

    #[test]
    fn complete_makes_the_file_durable_prunes_and_clears_the_journal() {
        let d = tempfile::tempdir().unwrap();
        let cache = d.path().join("cache");
        std::fs::create_dir_all(&cache).unwrap();
        let (old, new) = (cache.join("app_1.0_all.deb"), cache.join("app_2.0_all.deb"));
        let other = cache.join("other_1.0_all.deb");
        for f in [&old, &new, &other] {
            std::fs::write(f, b"x").unwrap();
        }
        let jp = d.path().join("journal.json");
        let j = Journal {
            txid: "t".into(),
            package: "app".into(),
            from_version: Some("1.0".into()),
            to_version: "2.0".into(),
            architecture: "all".into(),
            new_deb: new.clone(),
            previous_deb: Some(old.clone()),
            units: vec![],
            sha256: ABC.into(),
            signer: "k".into(),
            phase: JournalPhase::Committed,
            rollback_reason: None,
            started: 1,
        };
        j.write(&jp).unwrap();
        let s = CacheSync::new(&jp, &cache, &j);
        assert_eq!(s.new_deb(), new);
        s.complete();
        assert!(new.exists() && other.exists() && !old.exists());
        assert!(!jp.exists());
    }
}
