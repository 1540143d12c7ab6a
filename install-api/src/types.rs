//! The result and status types the helper sends as JSON: [`TxResult`] (the receipt line, the
//! `Finished` signal's JSON and the `Result()` answer) and [`HelperStatus`] (`Status()`).
//!
//! The JSON keeps the field names of 0.1 (`code` string plus `code_number`), so a reader of
//! either version understands the other. Reading is lenient where a newer helper may send more:
//! unknown fields are ignored, an unknown code string falls back to its number and then to
//! `internal`, an unknown phase reads as `None`.

use crate::{ErrorCode, Phase};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

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

/// The result of one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// The stable result code.
    pub code: ErrorCode,
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
    /// `false` only for the provisional success of the `Healthy` signal: installed, the units
    /// passed the ready gate, probation runs until [`TxResult::probation_until`]; the settled
    /// result follows in `Finished`. Every `Finished`, receipt and `Result()` is settled
    /// (wire field `settled`, absent in 0.1 = settled).
    pub settled: bool,
    /// End of the probation (seconds since the Unix epoch) for a provisional result, or of the
    /// probation that was watched for a settled one; `None`: no probation (no units, no
    /// systemd, or the install failed before the gate).
    pub probation_until: Option<u64>,
}

/// Captured output kept in a result, at most (the tail is kept).
pub const MAX_OUTPUT: usize = 64 * 1024;

impl TxResult {
    /// A result with no package information yet, ending now.
    pub fn new(txid: &str, code: ErrorCode, message: impl Into<String>) -> Self {
        TxResult {
            txid: txid.to_string(),
            time: now_secs(),
            package: None,
            from: None,
            to: None,
            code,
            message: message.into(),
            sha256: None,
            signer: None,
            installed: None,
            steps: Vec::new(),
            output: String::new(),
            settled: true,
            probation_until: None,
        }
    }

    /// A provisional success (see [`TxResult::settled`]): healthy, probation still running.
    pub fn is_provisional(&self) -> bool {
        !self.settled
    }

    /// Sets the code and message.
    pub fn set_code(&mut self, code: ErrorCode, message: impl Into<String>) {
        self.code = code;
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

    /// Appends captured output, keeping the total below [`MAX_OUTPUT`] (the tail is kept).
    pub fn add_output(&mut self, label: &str, text: &str) {
        self.output.push_str(&format!("--- {label}\n{text}\n"));
        if self.output.len() > MAX_OUTPUT {
            let mut cut = self.output.len() - MAX_OUTPUT;
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

/// The JSON form of [`TxResult`] (field names of 0.1).
#[derive(Serialize, Deserialize)]
struct TxResultWire {
    #[serde(default)]
    txid: String,
    #[serde(default)]
    time: u64,
    #[serde(default)]
    package: Option<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    code: String,
    #[serde(default)]
    code_number: Option<u16>,
    #[serde(default)]
    message: String,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    signer: Option<String>,
    #[serde(default)]
    installed: Option<String>,
    #[serde(default)]
    steps: Vec<Step>,
    #[serde(default)]
    output: String,
    #[serde(default = "settled_default")]
    settled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    probation_until: Option<u64>,
}

fn settled_default() -> bool {
    true
}

impl Serialize for TxResult {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        TxResultWire {
            txid: self.txid.clone(),
            time: self.time,
            package: self.package.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
            code: self.code.as_str().to_owned(),
            code_number: Some(self.code.number()),
            message: self.message.clone(),
            sha256: self.sha256.clone(),
            signer: self.signer.clone(),
            installed: self.installed.clone(),
            steps: self.steps.clone(),
            output: self.output.clone(),
            settled: self.settled,
            probation_until: self.probation_until,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for TxResult {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = TxResultWire::deserialize(d)?;
        let code = ErrorCode::from_str_code(&w.code)
            .or_else(|| w.code_number.and_then(ErrorCode::from_number))
            .unwrap_or(ErrorCode::Internal);
        Ok(TxResult {
            txid: w.txid,
            time: w.time,
            package: w.package,
            from: w.from,
            to: w.to,
            code,
            message: w.message,
            sha256: w.sha256,
            signer: w.signer,
            installed: w.installed,
            steps: w.steps,
            output: w.output,
            settled: w.settled,
            probation_until: w.probation_until,
        })
    }
}

/// The running transaction in `Status()`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrentTx {
    /// Transaction id.
    pub txid: String,
    /// The phase it is in (`None`: a phase this reader does not know).
    #[serde(default, deserialize_with = "lenient_phase")]
    pub phase: Option<Phase>,
    /// Overall progress, percent.
    #[serde(default)]
    pub percent: u32,
    /// Human message of the phase.
    #[serde(default)]
    pub message: String,
    /// Set once the transaction reported a provisional success (`Healthy`): the end of its
    /// probation, seconds since the Unix epoch. The transaction (and the helper's busy state)
    /// lasts until the settled `Finished`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probation_until: Option<u64>,
}

fn lenient_phase<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Phase>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    Ok(s.as_deref().and_then(Phase::from_name))
}

/// A package the helper manages (it installed a version of it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageState {
    /// Package name.
    pub name: String,
    /// dpkg's status (`install ok installed`, …), `None` when not installed.
    #[serde(default)]
    pub status: Option<String>,
    /// Installed version.
    #[serde(default)]
    pub version: Option<String>,
    /// Result code (`ok`, `not-newer`, …) of the last transaction about this package, from
    /// the receipt log (`None`: a 0.1 helper, or no receipt).
    #[serde(default)]
    pub last_result: Option<String>,
    /// When that transaction ended, seconds since the Unix epoch.
    #[serde(default)]
    pub last_time: Option<u64>,
}

/// The parts of the install policy a package's control fields are judged by (name globs,
/// architecture, version order), in `Status()`, so iocomd refuses a package it streams as
/// soon as its control member has arrived instead of after the whole transfer. The helper
/// judges every package in full all the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySummary {
    /// The host architecture (`dpkg --print-architecture`).
    pub host_arch: String,
    /// Globs a package name must match.
    pub allowed_packages: Vec<String>,
    /// Accepted architectures (`None`: the host's and `all`).
    #[serde(default)]
    pub architectures: Option<Vec<String>>,
    /// Older versions accepted.
    #[serde(default)]
    pub allow_downgrade: bool,
    /// The installed version accepted again.
    #[serde(default)]
    pub allow_reinstall: bool,
}

/// The answer of `Status()`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelperStatus {
    /// The running transaction.
    #[serde(default)]
    pub current: Option<CurrentTx>,
    /// The last finished transaction.
    #[serde(default)]
    pub last: Option<TxResult>,
    /// The packages the helper manages, with their installed versions.
    #[serde(default)]
    pub packages: Vec<PackageState>,
    /// Whether the helper restarts units through systemd.
    #[serde(default)]
    pub systemd: bool,
    /// The root dpkg installs into.
    #[serde(default)]
    pub root: String,
    /// The policy's name, architecture and version rules (`None`: a 0.1 helper).
    #[serde(default)]
    pub policy: Option<PolicySummary>,
    /// What this helper takes beyond 0.2 (e.g. [`crate::FEATURE_STREAM_END`]); empty for
    /// older helpers.
    #[serde(default)]
    pub features: Vec<String>,
}

impl HelperStatus {
    /// Whether the helper lists `feature`.
    pub fn has(&self, feature: &str) -> bool {
        self.features.iter().any(|f| f == feature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Status()` as a 0.1 helper answered it (tests/system and eacab26).
    const STATUS_0_1: &str = r#"{"current":{"txid":"t2","phase":"install","percent":45,"message":"m"},
        "last":{"txid":"t1","time":1,"package":"p","from":null,"to":"1.0","code":"ok","code_number":0,
        "message":"installed","sha256":null,"signer":null,"installed":"1.0","steps":[
        {"name":"dpkg-install","outcome":"done","detail":"x"}],"output":""},
        "packages":[{"name":"p","status":"install ok installed","version":"1.0"}],
        "systemd":false,"root":"/tmp/r"}"#;

    #[test]
    fn a_0_1_status_parses() {
        let s: HelperStatus = serde_json::from_str(STATUS_0_1).unwrap();
        let cur = s.current.unwrap();
        assert_eq!((cur.phase, cur.percent), (Some(Phase::Install), 45));
        let last = s.last.unwrap();
        assert_eq!(last.code, ErrorCode::Ok);
        assert_eq!(last.installed.as_deref(), Some("1.0"));
        assert_eq!(last.steps[0].outcome, StepOutcome::Done);
        assert_eq!(s.packages[0].version.as_deref(), Some("1.0"));
        assert_eq!(s.packages[0].last_result, None);
        assert_eq!(s.root, "/tmp/r");
    }

    #[test]
    fn results_keep_the_0_1_fields_and_round_trip() {
        let mut r = TxResult::new("tx", ErrorCode::UnhealthyRolledBack, "back to 1.0");
        r.package = Some("app".into());
        r.step("health-gate", StepOutcome::Failed, "crashed");
        let j: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(j["code"], "unhealthy-rolled-back");
        assert_eq!(j["code_number"], 60);
        assert_eq!(j["steps"][0]["outcome"], "failed");
        let back: TxResult = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn unknown_codes_and_phases_from_a_newer_helper_do_not_break_reading() {
        let r: TxResult =
            serde_json::from_str(r#"{"txid":"a","code":"later-code","code_number":50,"x":1}"#)
                .unwrap();
        assert_eq!(r.code, ErrorCode::DpkgFailed);
        let r: TxResult =
            serde_json::from_str(r#"{"txid":"a","code":"later","code_number":180}"#).unwrap();
        assert_eq!(r.code, ErrorCode::Internal);
        let c: CurrentTx = serde_json::from_str(r#"{"txid":"a","phase":"defrag"}"#).unwrap();
        assert_eq!(c.phase, None);
    }

    #[test]
    fn provisional_and_settled_results_are_told_apart() {
        // A 0.1 result (no `settled`) is settled; so is every new result by default.
        let r: TxResult = serde_json::from_str(r#"{"txid":"a","code":"ok"}"#).unwrap();
        assert!(r.settled && !r.is_provisional() && r.probation_until.is_none());
        let mut p = TxResult::new("a", ErrorCode::Ok, "healthy");
        assert!(!p.is_provisional());
        p.settled = false;
        p.probation_until = Some(1_800_000_030);
        let j: serde_json::Value = serde_json::from_str(&p.to_json()).unwrap();
        assert_eq!(
            (j["settled"].as_bool(), j["probation_until"].as_u64()),
            (Some(false), Some(1_800_000_030))
        );
        let back: TxResult = serde_json::from_str(&p.to_json()).unwrap();
        assert!(back.is_provisional());
        assert_eq!(back, p);
        let c: CurrentTx =
            serde_json::from_str(r#"{"txid":"a","phase":"health","probation_until":5}"#).unwrap();
        assert_eq!(c.probation_until, Some(5));
    }

    #[test]
    fn output_is_bounded_and_keeps_the_tail() {
        let mut r = TxResult::new("a", ErrorCode::Ok, "");
        for i in 0..5000 {
            r.add_output("dpkg", &format!("line {i} ü"));
        }
        assert!(r.output.len() <= MAX_OUTPUT + 16);
        assert!(r.output.contains("line 4999"));
        assert!(r.output.starts_with("[truncated]"));
    }
}
