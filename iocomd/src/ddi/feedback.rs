//! Feedback messages and their delivery: building `proceeding`/`downloaded`/`closed`/`rejected`
//! bodies, retrying 409/429 a few times (hawkBit asks for it), [`Backoff`] for everything
//! else, and [`ProgressLimiter`], which keeps `proceeding` progress sparse (hawkBit stores
//! every message as an action status and caps them per action).

use super::api::{Api, ApiError};
use super::installer::InstallOutcome;
use super::model::{Execution, Feedback, FeedbackResult, FeedbackStatus, Finished, Progress};
use hyper::Method;
use std::time::{Duration, Instant, SystemTime};

/// Attempts for one feedback message while the server answers 409 or 429.
pub const FEEDBACK_ATTEMPTS: u32 = 5;

/// Milliseconds since the epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A feedback body.
pub fn message(
    execution: Execution,
    finished: Finished,
    progress: Option<Progress>,
    code: Option<i32>,
    details: Vec<String>,
) -> Feedback {
    Feedback {
        timestamp: now_ms(),
        status: FeedbackStatus {
            execution,
            result: FeedbackResult { finished, progress },
            code,
            details,
        },
    }
}

/// `proceeding` with a detail line.
pub fn proceeding(detail: impl Into<String>) -> Feedback {
    message(
        Execution::Proceeding,
        Finished::None,
        None,
        None,
        vec![detail.into()],
    )
}

/// `proceeding` with progress `pct` of 100; the detail reads `Downloaded N%` (the line
/// gooseBit and SWUpdate parse for progress).
pub fn download_progress(pct: u32) -> Feedback {
    message(
        Execution::Proceeding,
        Finished::None,
        Some(Progress {
            cnt: pct.min(100),
            of: 100,
        }),
        None,
        vec![format!("Downloaded {}%", pct.min(100))],
    )
}

/// The final `closed` message for the installer's outcome: `success` only when the helper
/// reported success (health gate passed); else `failure` with its code number and message.
pub fn closed(outcome: &InstallOutcome) -> Feedback {
    let versions: Vec<String> = outcome
        .installed
        .iter()
        .map(|p| format!("{} {}", p.name, p.version))
        .collect();
    let installed = format!(
        "installed: {}",
        if versions.is_empty() {
            "-".to_owned()
        } else {
            versions.join(", ")
        }
    );
    if outcome.success {
        let msg = if outcome.message.is_empty() {
            "installed, health gate passed".to_owned()
        } else {
            outcome.message.clone()
        };
        message(
            Execution::Closed,
            Finished::Success,
            Some(Progress { cnt: 100, of: 100 }),
            Some(0),
            vec![msg, installed],
        )
    } else {
        let mut details = vec![format!(
            "{} ({}): {}",
            outcome.code, outcome.number, outcome.message
        )];
        if outcome.rolled_back {
            details.push("rolled back to the previous versions".into());
        }
        details.push(installed);
        message(
            Execution::Closed,
            Finished::Failure,
            None,
            Some(outcome.number),
            details,
        )
    }
}

/// `closed`+`failure` for an action that failed on the device before any install (download,
/// hash, space); `code` is -1 (no helper code).
pub fn failed(detail: impl Into<String>) -> Feedback {
    message(
        Execution::Closed,
        Finished::Failure,
        None,
        Some(-1),
        vec![detail.into()],
    )
}

/// POSTs `fb` to `url`, retrying while the server answers 409 or 429 (at most
/// [`FEEDBACK_ATTEMPTS`]). A 410 comes back as [`ApiError::Gone`]: stop reporting this action.
pub async fn send(api: &Api, what: &'static str, url: &str, fb: &Feedback) -> Result<(), ApiError> {
    let mut attempt = 1;
    loop {
        match api.send_json(what, Method::POST, url, fb).await {
            Err(ApiError::Conflict { .. }) if attempt < FEEDBACK_ATTEMPTS => {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(ApiError::RateLimited { retry_after, .. }) if attempt < FEEDBACK_ATTEMPTS => {
                tokio::time::sleep(retry_after).await;
            }
            other => return other,
        }
        attempt += 1;
        tracing::info!(what, attempt, "retrying feedback");
    }
}

/// Waits between failed polls: exponential from `min` to `max`, except the server's own
/// `Retry-After` (429) and one second for 409.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// A backoff between `min` and `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            failures: 0,
        }
    }

    /// After a success.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The wait after `e`.
    pub fn after(&mut self, e: &ApiError) -> Duration {
        match e {
            ApiError::RateLimited { retry_after, .. } => *retry_after,
            ApiError::Conflict { .. } => Duration::from_secs(1),
            _ => {
                let d = self
                    .min
                    .saturating_mul(1 << self.failures.min(20))
                    .min(self.max);
                self.failures = self.failures.saturating_add(1);
                d
            }
        }
    }
}

/// Lets a progress message through when at least `interval` passed since the last one and the
/// percentage moved by at least [`ProgressLimiter::STEP`] (the first and 100 % always pass).
#[derive(Debug, Clone)]
pub struct ProgressLimiter {
    interval: Duration,
    last: Option<(Instant, u32)>,
}

impl ProgressLimiter {
    /// Smallest percentage step reported.
    pub const STEP: u32 = 5;

    /// A limiter with the least time between two messages.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
        }
    }

    /// Whether to report `pct` at `now`; records it if so.
    pub fn admit(&mut self, now: Instant, pct: u32) -> bool {
        let ok = match self.last {
            None => true,
            Some((_, p)) if p == pct => false,
            Some(_) if pct >= 100 => true,
            Some((t, p)) => now.duration_since(t) >= self.interval && pct >= p + Self::STEP,
        };
        if ok {
            self.last = Some((now, pct));
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_sparse_in_time_and_steps() {
        let t0 = Instant::now();
        let mut l = ProgressLimiter::new(Duration::from_secs(5));
        assert!(l.admit(t0, 0));
        assert!(!l.admit(t0 + Duration::from_secs(1), 50), "too soon");
        assert!(!l.admit(t0 + Duration::from_secs(6), 3), "step too small");
        assert!(l.admit(t0 + Duration::from_secs(6), 50));
        assert!(!l.admit(t0 + Duration::from_secs(6), 50));
        assert!(
            l.admit(t0 + Duration::from_secs(7), 100),
            "100 % always passes"
        );
        assert!(!l.admit(t0 + Duration::from_secs(20), 100), "but only once");
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_honours_retry_after() {
        let mut b = Backoff::new(Duration::from_secs(2), Duration::from_secs(10));
        let server = ApiError::Server {
            what: "poll",
            status: 503,
        };
        let waits: Vec<_> = (0..4).map(|_| b.after(&server).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 10]);
        let limited = ApiError::RateLimited {
            what: "poll",
            retry_after: Duration::from_secs(7),
        };
        assert_eq!(b.after(&limited), Duration::from_secs(7));
        assert_eq!(
            b.after(&ApiError::Conflict { what: "poll" }),
            Duration::from_secs(1)
        );
        assert_eq!(b.failures(), 4);
        b.reset();
        assert_eq!(b.after(&server), Duration::from_secs(2));
    }

    #[test]
    fn closed_means_what_the_helper_said() {
        let ok = InstallOutcome {
            success: true,
            code: "ok".into(),
            number: 0,
            message: String::new(),
            rolled_back: false,
            installed: vec![super::super::installer::PackageVersion::new("app", "2.0")],
        };
        let f = closed(&ok);
        assert_eq!(
            (f.status.execution, f.status.result.finished),
            (Execution::Closed, Finished::Success)
        );
        assert_eq!(f.status.details[1], "installed: app 2.0");
        let bad = InstallOutcome {
            success: false,
            code: "health-gate-failed".into(),
            number: 31,
            message: "app.service did not stay active".into(),
            rolled_back: true,
            ..ok
        };
        let f = closed(&bad);
        assert_eq!(f.status.result.finished, Finished::Failure);
        assert_eq!(f.status.code, Some(31));
        assert_eq!(
            f.status.details[0],
            "health-gate-failed (31): app.service did not stay active"
        );
        assert_eq!(f.status.details[1], "rolled back to the previous versions");
    }
}
