//! The action being worked on ([`Job`]) and its download task ([`download_all`]): every
//! artifact in order, with sparse progress feedback, persisting the resumption state.

use super::api::ApiError;
use super::download::{self, DownloadError, Limits};
use super::feedback::{self, ProgressLimiter};
use super::installer::{InstallOutcome, Reservation, SpooledFile};
use super::persist::{ActionState, PartState};
use super::status::DdiStatus;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Why a downloaded action waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// `update=skip`.
    UpdateSkip,
    /// `maintenanceWindow=unavailable`.
    Window,
    /// The update slot is taken.
    Busy,
}

/// The action being worked on.
#[derive(Debug, Default)]
pub(crate) enum Job {
    /// Nothing.
    #[default]
    Idle,
    /// Downloading in a task.
    Downloading {
        action: String,
        /// Why the install will wait once downloaded (`None`: install right away).
        then: Option<Wait>,
        stop: CancellationToken,
        task: JoinHandle<Result<Vec<SpooledFile>, DownloadError>>,
        reservation: Option<Reservation>,
    },
    /// Downloaded; waiting for permission, the window or the slot.
    Waiting {
        action: String,
        files: Vec<SpooledFile>,
        why: Wait,
    },
    /// Handed to the installer.
    Installing {
        action: String,
        task: JoinHandle<InstallOutcome>,
    },
}

/// A finished task of the job.
#[derive(Debug)]
pub(crate) enum JobDone {
    Downloaded(Result<Vec<SpooledFile>, DownloadError>),
    Installed(InstallOutcome),
}

impl Job {
    /// The action id, if any.
    pub fn action(&self) -> Option<&str> {
        match self {
            Job::Idle => None,
            Job::Downloading { action, .. }
            | Job::Waiting { action, .. }
            | Job::Installing { action, .. } => Some(action),
        }
    }

    /// Resolves when the running task finishes; never while idle or waiting.
    pub async fn done(&mut self) -> JobDone {
        match self {
            Job::Downloading { task, .. } => JobDone::Downloaded(task.await.unwrap_or_else(|e| {
                Err(DownloadError::Io {
                    path: "download task".into(),
                    source: std::io::Error::other(e),
                })
            })),
            Job::Installing { task, .. } => JobDone::Installed(task.await.unwrap_or_else(|e| {
                InstallOutcome::not_started("internal", -1, format!("install task failed: {e}"))
            })),
            Job::Idle | Job::Waiting { .. } => std::future::pending().await,
        }
    }
}

pub(super) fn span(action: &str) -> tracing::Span {
    tracing::info_span!("ddi_action", action_id = %action)
}

pub(super) fn safe(action: &str) -> String {
    action
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The download task: every artifact in order, with sparse progress feedback.
pub(super) async fn download_all(
    api: super::api::Api,
    store: super::persist::Store,
    mut state: ActionState,
    limits: Limits,
    stop: CancellationToken,
    interval: Duration,
    status: Arc<watch::Sender<DdiStatus>>,
) -> Result<Vec<SpooledFile>, DownloadError> {
    let total: u64 = state
        .parts
        .iter()
        .map(|p| p.size.unwrap_or(0))
        .sum::<u64>()
        .max(1);
    let pct = Arc::new(AtomicU32::new(0));
    let url = api.url(&format!("deploymentBase/{}/feedback", state.action));
    let gone = CancellationToken::new();
    let reporter = {
        let (pct, gone, api) = (pct.clone(), gone.clone(), api.clone());
        async move {
            let mut limiter = ProgressLimiter::new(interval);
            limiter.admit(Instant::now(), 0);
            while !gone.is_cancelled() {
                tokio::time::sleep(interval).await;
                let p = pct.load(Ordering::Relaxed);
                if limiter.admit(Instant::now(), p)
                    && let Err(ApiError::Gone { .. }) =
                        feedback::send(&api, "progress", &url, &feedback::download_progress(p))
                            .await
                {
                    gone.cancel();
                }
            }
            std::future::pending::<()>().await;
        }
    };
    let work = async {
        let mut files = Vec::new();
        let mut before = 0u64;
        for i in 0..state.parts.len() {
            let mut part = state.parts[i].clone();
            let mut on_bytes = |n: u64| {
                let p = u32::try_from((before + n).saturating_mul(100) / total)
                    .unwrap_or(100)
                    .min(100);
                if pct.swap(p, Ordering::Relaxed) != p {
                    status.send_modify(|s| s.progress = Some(p));
                }
            };
            let snapshot = state.clone();
            let mut on_validator = |p: &PartState| {
                let mut s = snapshot.clone();
                s.parts[i] = p.clone();
                store.save_action(&s);
            };
            let either = stop.child_token();
            let mut hooks = download::Hooks {
                stop: &either,
                on_bytes: &mut on_bytes,
                on_validator: &mut on_validator,
            };
            let r = tokio::select! {
                r = download::fetch(api.http(), &mut part, limits, &mut hooks) => r,
                () = gone.cancelled() => { either.cancel(); Err(DownloadError::Api { filename: part.filename.clone(), source: ApiError::Gone { what: "progress" } }) }
            };
            state.parts[i] = part;
            store.save_action(&state);
            let f = r?;
            before += f.size;
            files.push(f);
        }
        Ok(files)
    };
    tokio::select! {
        r = work => r,
        () = reporter => Err(DownloadError::Stopped), // never: the reporter does not end
    }
}
