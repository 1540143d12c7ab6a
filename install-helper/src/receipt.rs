//! Results of transactions: the receipt log (`receipts.jsonl`, one JSON line per transaction)
//! and the last result (`status.json`), both durable so iocomd can read the outcome of a
//! self-update after its own restart.

use std::io::{self, BufRead, BufReader};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::fsutil;

pub use install_api::types::now_secs;
pub use install_api::{Step, StepOutcome, TxResult};

/// The content of `status.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedStatus {
    /// The last finished transaction.
    pub last: Option<TxResult>,
}

/// Appends `result` to the receipt log and records it as the last result.
pub fn record(receipts: &Path, status: &Path, result: &TxResult) -> io::Result<()> {
    let line = serde_json::to_string(result).map_err(io::Error::other)?;
    fsutil::append_line(receipts, &line)?;
    let st = PersistedStatus {
        last: Some(result.clone()),
    };
    let bytes = serde_json::to_vec_pretty(&st).map_err(io::Error::other)?;
    fsutil::write_atomic(status, &bytes)
}

/// Reads `status.json` (`None` when absent).
pub fn read_status(status: &Path) -> io::Result<Option<PersistedStatus>> {
    match std::fs::read(status) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| io::Error::other(format!("{}: {e}", status.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Finds the receipt of `txid` (the last one if repeated). Unparsable lines are skipped.
pub fn find_receipt(receipts: &Path, txid: &str) -> io::Result<Option<TxResult>> {
    let f = match std::fs::File::open(receipts) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut found = None;
    for line in BufReader::new(f).lines() {
        let line = line?;
        if let Ok(r) = serde_json::from_str::<TxResult>(&line)
            && r.txid == txid
        {
            found = Some(r);
        }
    }
    Ok(found)
}

/// The last receipt of each package in the log: its code and end time, by package name.
/// Unparsable lines are skipped; the log is read line by line (never whole).
pub fn last_by_package(
    receipts: &Path,
) -> io::Result<std::collections::BTreeMap<String, (install_api::ErrorCode, u64)>> {
    let mut last = std::collections::BTreeMap::new();
    let f = match std::fs::File::open(receipts) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(last),
        Err(e) => return Err(e),
    };
    for line in BufReader::new(f).lines() {
        if let Ok(r) = serde_json::from_str::<TxResult>(&line?)
            && let Some(p) = r.package
        {
            last.insert(p, (r.code, r.time));
        }
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use install_api::ErrorCode;

    #[test]
    fn record_appends_and_sets_last() {
        let d = tempfile::tempdir().unwrap();
        let (r, s) = (d.path().join("r.jsonl"), d.path().join("s.json"));
        let mut a = TxResult::new("a", ErrorCode::Ok, "fine");
        a.step("dpkg-install", StepOutcome::Done, "x");
        let b = TxResult::new("b", ErrorCode::DpkgFailed, "bad");
        record(&r, &s, &a).unwrap();
        record(&r, &s, &b).unwrap();
        assert_eq!(find_receipt(&r, "a").unwrap(), Some(a));
        assert_eq!(find_receipt(&r, "zz").unwrap(), None);
        let last = read_status(&s).unwrap().unwrap().last.unwrap();
        assert_eq!(last.code, ErrorCode::DpkgFailed);
        // The last receipt per package.
        let mut c = TxResult::new("c", ErrorCode::NotNewer, "old");
        c.package = Some("app".into());
        c.time = 7;
        record(&r, &s, &c).unwrap();
        let by = last_by_package(&r).unwrap();
        assert_eq!(by.len(), 1);
        assert_eq!(by["app"], (ErrorCode::NotNewer, 7));
        assert!(last_by_package(&d.path().join("none")).unwrap().is_empty());
        assert_eq!(last.code.number(), 50);
    }
}
