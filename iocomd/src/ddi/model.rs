//! The DDI JSON resources iocomd reads and writes (hawkBit's `Ddi*` classes, the subset a
//! device uses). Unknown fields are ignored: servers add fields, and gooseBit omits some.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// A `{"href": …}` link.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Link {
    /// Absolute URL.
    pub href: String,
}

/// `GET /{tenant}/controller/v1/{id}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ControllerBase {
    /// Polling configuration.
    #[serde(default)]
    pub config: Option<ControllerConfig>,
    /// What the server wants from the device now.
    #[serde(default, rename = "_links")]
    pub links: BaseLinks,
}

/// `config` of the base resource.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ControllerConfig {
    /// `polling.sleep`.
    #[serde(default)]
    pub polling: Option<Polling>,
}

/// `config.polling`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Polling {
    /// `HH:MM:SS`.
    #[serde(default)]
    pub sleep: Option<String>,
}

/// `_links` of the base resource; each appears only when relevant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct BaseLinks {
    /// An action to run.
    #[serde(default, rename = "deploymentBase")]
    pub deployment_base: Option<Link>,
    /// A cancel request.
    #[serde(default, rename = "cancelAction")]
    pub cancel_action: Option<Link>,
    /// The server asks for device attributes.
    #[serde(default, rename = "configData")]
    pub config_data: Option<Link>,
    /// The last installed action.
    #[serde(default, rename = "installedBase")]
    pub installed_base: Option<Link>,
}

impl ControllerBase {
    /// The server's `sleep`, if present and well-formed.
    pub fn sleep(&self) -> Option<Duration> {
        parse_sleep(self.config.as_ref()?.polling.as_ref()?.sleep.as_deref()?)
    }
}

/// Parses `HH:MM:SS` (hours may exceed 23).
pub fn parse_sleep(s: &str) -> Option<Duration> {
    let mut it = s.split(':');
    let (h, m, sec) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() {
        return None;
    }
    let num = |t: &str, max: u64| t.parse::<u64>().ok().filter(|v| *v <= max && !t.is_empty());
    Some(Duration::from_secs(
        num(h, 10_000)? * 3600 + num(m, 59)? * 60 + num(sec, 59)?,
    ))
}

/// `download` / `update` handling types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Handling {
    /// Do not (yet).
    Skip,
    /// Soft: the device may choose; iocomd treats it like forced (there is no user to ask).
    Attempt,
    /// Now.
    Forced,
}

/// `maintenanceWindow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Window {
    /// Inside the window: installing is allowed.
    Available,
    /// Outside: download only, install later.
    Unavailable,
}

/// `GET …/deploymentBase/{actionId}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DeploymentBase {
    /// Action id (a string in the JSON).
    pub id: String,
    /// What to do.
    pub deployment: Deployment,
}

/// `deployment`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Deployment {
    /// Download handling.
    pub download: Handling,
    /// Update handling.
    pub update: Handling,
    /// Absent when the action has no window.
    #[serde(default, rename = "maintenanceWindow")]
    pub maintenance_window: Option<Window>,
    /// Software modules, in install order.
    #[serde(default)]
    pub chunks: Vec<Chunk>,
}

/// A software module.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Chunk {
    /// Module type, e.g. `os`, `application`.
    #[serde(default)]
    pub part: String,
    /// Module name.
    pub name: String,
    /// Module version.
    pub version: String,
    /// Files.
    #[serde(default)]
    pub artifacts: Vec<Artifact>,
}

/// A file of a module.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Artifact {
    /// File name.
    pub filename: String,
    /// Size in bytes.
    #[serde(default)]
    pub size: Option<u64>,
    /// Hashes (hex).
    #[serde(default)]
    pub hashes: BTreeMap<String, String>,
    /// `download` (https) and `download-http`.
    #[serde(default, rename = "_links")]
    pub links: BTreeMap<String, Link>,
}

impl Artifact {
    /// The download URL: `download` (hawkBit's https link), else `download-http`; with
    /// `plain` (an `http://` server, which has no TLS set up) `download-http` first.
    pub fn href(&self, plain: bool) -> Option<&str> {
        let (first, second) = if plain {
            ("download-http", "download")
        } else {
            ("download", "download-http")
        };
        self.links
            .get(first)
            .or_else(|| self.links.get(second))
            .map(|l| l.href.as_str())
    }

    /// The SHA-256 the server gives, decoded.
    pub fn sha256(&self) -> Option<[u8; 32]> {
        let hex = self.hashes.get("sha256")?;
        let mut out = [0u8; 32];
        if hex.len() != 64 {
            return None;
        }
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(out)
    }
}

/// `GET …/cancelAction/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CancelAction {
    /// The cancel action's own id.
    pub id: String,
    /// What to stop.
    #[serde(rename = "cancelAction")]
    pub cancel_action: CancelTarget,
}

/// `cancelAction`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CancelTarget {
    /// Id of the action to stop.
    #[serde(rename = "stopId")]
    pub stop_id: String,
}

/// Feedback `execution`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Execution {
    /// Working on it (download, waiting, installing).
    Proceeding,
    /// Downloaded, install waits (`update=skip` or outside the maintenance window).
    Downloaded,
    /// Finished; see `finished`.
    Closed,
    /// Refused (a cancel that came too late).
    Rejected,
}

/// Feedback `result.finished`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Finished {
    /// Succeeded.
    Success,
    /// Failed.
    Failure,
    /// Not finished.
    None,
}

/// `POST …/feedback` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feedback {
    /// Milliseconds since the epoch.
    pub timestamp: u64,
    /// The status.
    pub status: FeedbackStatus,
}

/// `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedbackStatus {
    /// Execution state.
    pub execution: Execution,
    /// Result.
    pub result: FeedbackResult,
    /// Numeric code (the helper's stable number on failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// Human-readable lines.
    #[serde(default)]
    pub details: Vec<String>,
}

/// `result`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedbackResult {
    /// Finished state.
    pub finished: Finished,
    /// Progress (both fields are required by some servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
}

/// `progress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Done so far.
    pub cnt: u32,
    /// Total.
    pub of: u32,
}

/// `PUT …/configData` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigData {
    /// Always `merge` (never `null`: gooseBit refuses it).
    pub mode: &'static str,
    /// Attributes.
    pub data: BTreeMap<String, String>,
}

/// `PUT …/installedBase` body (hawkBit's experimental `DdiAssignedVersion`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AssignedVersion {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleep_is_hh_mm_ss() {
        assert_eq!(parse_sleep("00:05:00"), Some(Duration::from_secs(300)));
        assert_eq!(
            parse_sleep("26:00:01"),
            Some(Duration::from_secs(26 * 3600 + 1))
        );
        for bad in [
            "",
            "5",
            "00:60:00",
            "00:00:60",
            "a:b:c",
            "00:00:00:00",
            "-1:00:00",
            "00::00",
        ] {
            assert_eq!(parse_sleep(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn hawkbit_documentation_examples_parse() {
        // From hawkBit's DDI API documentation (trimmed).
        let base: ControllerBase = serde_json::from_str(
            r#"{"config":{"polling":{"sleep":"12:00:00"}},"_links":{"deploymentBase":{"href":"https://h/DEFAULT/controller/v1/t/deploymentBase/5?c=-2129030598"},"configData":{"href":"https://h/DEFAULT/controller/v1/t/configData"}}}"#,
        )
        .unwrap();
        assert_eq!(base.sleep(), Some(Duration::from_secs(12 * 3600)));
        assert!(
            base.links
                .deployment_base
                .unwrap()
                .href
                .ends_with("?c=-2129030598")
        );
        assert!(base.links.cancel_action.is_none());
        let db: DeploymentBase = serde_json::from_str(
            r#"{"id":"8","deployment":{"download":"forced","update":"attempt","maintenanceWindow":"unavailable","chunks":[{"part":"jvm","version":"1.0.75","name":"oneapp","metadata":[{"key":"k","value":"v"}],"artifacts":[{"filename":"binary.tgz","hashes":{"sha1":"e4","md5":"1c","sha256":"00ff000000000000000000000000000000000000000000000000000000000001"},"size":3,"_links":{"download-http":{"href":"http://h/a"},"md5sum-http":{"href":"http://h/a.MD5SUM"}}}]}]},"actionHistory":{"status":"RUNNING","messages":["x"]}}"#,
        )
        .unwrap();
        assert_eq!(
            (db.deployment.download, db.deployment.update),
            (Handling::Forced, Handling::Attempt)
        );
        assert_eq!(db.deployment.maintenance_window, Some(Window::Unavailable));
        let a = &db.deployment.chunks[0].artifacts[0];
        assert_eq!(
            a.href(false),
            Some("http://h/a"),
            "download-http when there is no download link"
        );
        let mut both = a.clone();
        both.links.insert(
            "download".into(),
            Link {
                href: "https://h/a".into(),
            },
        );
        assert_eq!(both.href(false), Some("https://h/a"));
        assert_eq!(
            both.href(true),
            Some("http://h/a"),
            "an http:// server: its http link"
        );
        let sha = a.sha256().unwrap();
        assert_eq!((sha[0], sha[1], sha[31]), (0x00, 0xff, 0x01));
        let mut bad = a.clone();
        bad.hashes.insert("sha256".into(), "zz".repeat(32));
        assert_eq!(bad.sha256(), None);
        bad.hashes.insert("sha256".into(), "00".into());
        assert_eq!(bad.sha256(), None);
        let c: CancelAction =
            serde_json::from_str(r#"{"id":"11","cancelAction":{"stopId":"11"}}"#).unwrap();
        assert_eq!(c.cancel_action.stop_id, "11");
    }

    #[test]
    fn feedback_serializes_as_hawkbit_expects() {
        let fb = Feedback {
            timestamp: 1,
            status: FeedbackStatus {
                execution: Execution::Closed,
                result: FeedbackResult {
                    finished: Finished::Failure,
                    progress: None,
                },
                code: Some(31),
                details: vec!["d".into()],
            },
        };
        assert_eq!(
            serde_json::to_string(&fb).unwrap(),
            r#"{"timestamp":1,"status":{"execution":"closed","result":{"finished":"failure"},"code":31,"details":["d"]}}"#
        );
        let cd = ConfigData {
            mode: "merge",
            data: [("a".to_owned(), "b".to_owned())].into(),
        };
        assert_eq!(
            serde_json::to_string(&cd).unwrap(),
            r#"{"mode":"merge","data":{"a":"b"}}"#
        );
    }
}
