//! Results of transactions: the receipt log (`receipts.jsonl`, one JSON line per transaction)
//! and the last result (`status.json`), both durable so iocomd can read the outcome of a
//! self-update after its own restart.

use std::io::{self, BufRead, BufReader};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;
use crate::fsutil;

/// How one step of a transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepOutcome {
    /// The step ran and succeeded.
    Done,
    /// The step did not run (e.g. unit restarts without systemd); never counted as done.
    Skipped,
    /// The step ran and failed.
    Failed,
}

/// One step of a transaction with its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Step name, e.g. `repair`, `dpkg-install`, `restart-units`, `health-gate`, `rollback`.
    pub name: String,
    /// How it ended.
    pub outcome: StepOutcome,
    /// Human detail (what ran, why skipped, why failed).
    pub detail: String,
}

/// The result of one transaction: the receipt line, the `Finished` signal's JSON and the
/// `Result()` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxResult {
    /// Transaction id.
    pub txid: String,
    /// End time, seconds since the Unix epoch.
    pub time: u64,
    /// Package name, once known (after verification).
    pub package: Option<String>,
    /// Version installed before.
    pub from: Option<String>,
    /// Version that was to be installed.
    pub to: Option<String>,
    /// Stable result code string (`ok`, `dpkg-failed`, ...).
    pub code: String,
    /// Stable result code number.
    pub code_number: u16,
    /// Human message.
    pub message: String,
    /// SHA-256 of the package (of the helper's own copy).
    pub sha256: Option<String>,
    /// Signer of the package.
    pub signer: Option<String>,
    /// Version installed after the transaction, as dpkg reports it.
    pub installed: Option<String>,
    /// The steps taken.
    pub steps: Vec<Step>,
    /// Captured dpkg/apt output of failing steps (truncated).
    pub output: String,
}

impl TxResult {
    /// A result with no package information yet.
    pub fn new(txid: &str, code: ErrorCode, message: impl Into<String>) -> Self {
        TxResult {
            txid: txid.to_string(),
            time: now_secs(),
            package: None,
            from: None,
            to: None,
            code: code.as_str().to_string(),
            code_number: code.number(),
            message: message.into(),
            sha256: None,
            signer: None,
            installed: None,
            steps: Vec::new(),
            output: String::new(),
        }
    }

    /// The code as an [`ErrorCode`] (`Internal` if the stored string is unknown).
    pub fn error_code(&self) -> ErrorCode {
        ErrorCode::from_str_code(&self.code).unwrap_or(ErrorCode::Internal)
    }

    /// Sets the code and message.
    pub fn set_code(&mut self, code: ErrorCode, message: impl Into<String>) {
        self.code = code.as_str().to_string();
        self.code_number = code.number();
        self.message = message.into();
    }

    /// Records a step.
    pub fn step(&mut self, name: &str, outcome: StepOutcome, detail: impl Into<String>) {
        self.steps.push(Step {
            name: name.to_string(),
            outcome,
            detail: detail.into(),
        });
    }

    /// Appends captured output, keeping the total below 64 KiB (the tail is kept).
    pub fn add_output(&mut self, label: &str, text: &str) {
        const MAX: usize = 64 * 1024;
        self.output.push_str(&format!("--- {label}\n{text}\n"));
        if self.output.len() > MAX {
            let mut cut = self.output.len() - MAX;
            while !self.output.is_char_boundary(cut) {
                cut += 1;
            }
            self.output = format!("[truncated]\n{}", &self.output[cut..]);
        }
    }

    /// JSON text of this result.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(last.error_code(), ErrorCode::DpkgFailed);
        assert_eq!(last.code_number, 50);
    }

    #[test]
    fn output_is_bounded_and_keeps_the_tail() {
        let mut r = TxResult::new("a", ErrorCode::Ok, "");
        for i in 0..5000 {
            r.add_output("dpkg", &format!("line {i} ü"));
        }
        assert!(r.output.len() <= 64 * 1024 + 16);
        assert!(r.output.contains("line 4999"));
        assert!(r.output.starts_with("[truncated]"));
    }
}
