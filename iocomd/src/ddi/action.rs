//! One DDI action from offer to final feedback, as a state machine over [`Job`]:
//!
//! `Idle` → (offer, slot reserved) `Downloading` → (`update=skip` or window closed)
//! `Waiting` → (allowed, slot reserved) `Installing` → (outcome) final feedback → `Idle`.
//! `Downloading` → `Installing` directly when allowed. A cancel is accepted in `Downloading`
//! and `Waiting` (the download stops, files go, the slot is freed) and rejected in
//! `Installing`. A new action id replaces an unstarted one. `download=skip` and a busy slot
//! leave the job `Idle` until the next poll.

use super::agent::Agent;
use super::api::{ApiError, Fetched};
use super::download::{self, DownloadError, Limits, PART_SUFFIX};
use super::feedback::{self, ProgressLimiter};
use super::installer::{InstallOutcome, PackageVersion, Reservation, SpooledFile};
use super::model::{CancelAction, DeploymentBase, Execution, Finished, Handling, Window};
use super::persist::{ActionState, PartState, Stage};
use super::status::{DdiState, DdiStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

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

fn span(action: &str) -> tracing::Span {
    tracing::info_span!("ddi_action", action_id = %action)
}

fn safe(action: &str) -> String {
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

impl Agent {
    fn feedback_url(&self, action: &str) -> String {
        self.api.url(&format!("deploymentBase/{action}/feedback"))
    }

    /// Best-effort `proceeding`/`downloaded` message; `Err` only for a 410 (action gone).
    async fn tell(&self, action: &str, fb: super::model::Feedback) -> Result<(), ()> {
        match feedback::send(&self.api, "feedback", &self.feedback_url(action), &fb).await {
            Ok(()) => Ok(()),
            Err(ApiError::Gone { .. }) => Err(()),
            Err(e) => {
                tracing::info!(action_id = %action, error = %e, "feedback not delivered");
                Ok(())
            }
        }
    }

    /// Records and delivers a final feedback (kept for the next poll if it cannot be sent).
    async fn finish(&mut self, action: &str, fb: super::model::Feedback) {
        let mut state = self
            .store
            .action()
            .filter(|s| s.action == action)
            .unwrap_or(ActionState {
                action: action.to_owned(),
                stage: Stage::Report,
                parts: Vec::new(),
                pending: None,
            });
        tracing::info!(action_id = %action, finished = ?fb.status.result.finished, details = ?fb.status.details, "action finished");
        state.stage = Stage::Report;
        state.pending = Some(fb);
        self.store.save_action(&state);
        self.job = Job::Idle;
        self.set_status(|s| {
            s.state = DdiState::Idle;
            s.progress = None;
        });
        // Delivered now, or by the next poll.
        if let Err(e) = self.deliver_now().await {
            tracing::warn!(action_id = %action, error = %e, "final feedback not delivered yet; retrying at the next poll");
        }
    }

    async fn deliver_now(&mut self) -> Result<(), ApiError> {
        let Some(state) = self.store.action() else {
            return Ok(());
        };
        let Some(fb) = &state.pending else {
            return Ok(());
        };
        match feedback::send(
            &self.api,
            "final feedback",
            &self.feedback_url(&state.action),
            fb,
        )
        .await
        {
            Ok(()) | Err(ApiError::Gone { .. }) => {
                self.store.clear_action();
                self.set_status(|s| s.action = None);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Removes the files of an abandoned action and forgets it.
    fn discard(&mut self, files: &[SpooledFile]) {
        if let Some(state) = self.store.action() {
            for p in &state.parts {
                let _ = std::fs::remove_file(&p.path);
                let _ = std::fs::remove_file(download::final_path(&p.path));
            }
        }
        for f in files {
            let _ = std::fs::remove_file(&f.path);
        }
        self.store.clear_action();
        self.job = Job::Idle;
        self.set_status(|s| {
            s.state = DdiState::Idle;
            s.action = None;
            s.progress = None;
        });
    }

    /// Stops the current job unless it is installing; returns the files it had.
    async fn abandon(&mut self) -> Vec<SpooledFile> {
        match std::mem::take(&mut self.job) {
            Job::Downloading { stop, task, .. } => {
                stop.cancel();
                let _ = task.await;
                Vec::new()
            }
            Job::Waiting { files, .. } => files,
            other => {
                self.job = other;
                Vec::new()
            }
        }
    }

    /// The server no longer offers a deployment: an unstarted action of ours is void.
    pub async fn not_offered(&mut self) {
        if let Job::Downloading { action, .. } | Job::Waiting { action, .. } = &self.job {
            tracing::warn!(action_id = %action, "the server no longer offers the action; dropping it");
            let files = self.abandon().await;
            self.discard(&files);
        }
    }

    /// `cancelAction`: accept before hand-over, reject after.
    pub async fn on_cancel(&mut self, href: &str) -> Result<(), ApiError> {
        let Fetched::Value(c) = self
            .api
            .get_json::<CancelAction>("cancelAction", href, true)
            .await?
        else {
            return Ok(());
        };
        let stop = c.cancel_action.stop_id;
        let url = self.api.url(&format!("cancelAction/{}/feedback", c.id));
        let pending_for_it = self
            .store
            .action()
            .is_some_and(|s| s.action == stop && s.stage != Stage::Downloading);
        let (fb, verdict) = if self.job.action() == Some(stop.as_str())
            && !matches!(self.job, Job::Installing { .. })
        {
            let files = self.abandon().await;
            self.discard(&files);
            (
                feedback::message(
                    Execution::Closed,
                    Finished::Success,
                    None,
                    None,
                    vec!["cancelled before the install started".into()],
                ),
                "accepted",
            )
        } else if (matches!(self.job, Job::Installing { .. })
            && self.job.action() == Some(stop.as_str()))
            || pending_for_it
        {
            (
                feedback::message(
                    Execution::Rejected,
                    Finished::None,
                    None,
                    None,
                    vec!["the install has started (or finished); it cannot be cancelled".into()],
                ),
                "rejected",
            )
        } else {
            (
                feedback::message(
                    Execution::Closed,
                    Finished::Success,
                    None,
                    None,
                    vec![format!("nothing runs for action {stop}")],
                ),
                "accepted",
            )
        };
        tracing::info!(action_id = %stop, cancel_id = %c.id, verdict, "cancel request");
        match feedback::send(&self.api, "cancel feedback", &url, &fb).await {
            Err(ApiError::Gone { .. }) | Ok(()) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A `deploymentBase` link.
    pub async fn on_deployment(&mut self, href: &str) -> Result<(), ApiError> {
        let db = match self
            .api
            .get_json::<DeploymentBase>("deploymentBase", href, true)
            .await
        {
            Ok(Fetched::Value(db)) => db,
            Ok(Fetched::Nothing) | Err(ApiError::Gone { .. }) => {
                self.not_offered().await;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let id = db.id.clone();
        if self
            .store
            .action()
            .is_some_and(|s| s.action == id && s.stage != Stage::Downloading)
        {
            return Ok(()); // finished or handed over; its report is on the way
        }
        match &self.job {
            Job::Installing { .. } => return Ok(()),
            Job::Downloading { action, .. } if *action == id => return Ok(()),
            Job::Waiting { action, .. } if *action == id => {
                self.retry_waiting(&db).await;
                return Ok(());
            }
            Job::Downloading { action, .. } | Job::Waiting { action, .. } => {
                tracing::warn!(old = %action, new = %id, "the server replaced the action");
                let files = self.abandon().await;
                self.discard(&files);
            }
            Job::Idle => {}
        }
        self.start(db).instrument(span(&id)).await;
        Ok(())
    }

    fn install_allowed(db: &DeploymentBase) -> Option<Wait> {
        if db.deployment.update == Handling::Skip {
            Some(Wait::UpdateSkip)
        } else if db.deployment.maintenance_window == Some(Window::Unavailable) {
            Some(Wait::Window)
        } else {
            None
        }
    }

    async fn retry_waiting(&mut self, db: &DeploymentBase) {
        if Self::install_allowed(db).is_some() {
            return;
        }
        let Job::Waiting { action, files, why } = std::mem::take(&mut self.job) else {
            return;
        };
        tracing::info!(action_id = %action, waited_for = ?why, "the install may go ahead now");
        match self.installer.reserve(&action) {
            Ok(r) => {
                self.install(action, r, files)
                    .instrument(span(&db.id))
                    .await
            }
            Err(busy) => {
                tracing::info!(action_id = %action, holder = %busy.holder, "install waits: update slot busy");
                self.job = Job::Waiting {
                    action,
                    files,
                    why: Wait::Busy,
                };
                self.set_status(|s| s.state = DdiState::Busy);
            }
        }
    }

    /// A new action: plan the artifacts, take the slot, start the download.
    async fn start(&mut self, db: DeploymentBase) {
        let id = db.id.clone();
        self.set_status(|s| s.action = Some(id.clone()));
        let previous = self.store.action().filter(|s| s.action == id);
        if previous.is_none()
            && let Some(old) = self.store.action()
        {
            for p in &old.parts {
                let _ = std::fs::remove_file(&p.path);
            }
            self.store.clear_action();
        }
        let mut parts = Vec::new();
        for (ci, chunk) in db.deployment.chunks.iter().enumerate() {
            for (ai, a) in chunk.artifacts.iter().enumerate() {
                if !a.filename.ends_with(".deb") {
                    tracing::info!(artifact = %a.filename, "skipping a non-.deb artifact");
                    continue;
                }
                let (Some(href), Some(sha)) = (a.href(), a.sha256()) else {
                    return self
                        .finish(
                            &id,
                            feedback::failed(format!(
                                "{}: no download link or no SHA-256 given",
                                a.filename
                            )),
                        )
                        .await;
                };
                let sha = download::hex(&sha);
                let old = previous.as_ref().and_then(|p| {
                    p.parts
                        .iter()
                        .find(|o| o.sha256 == sha && o.filename == a.filename)
                });
                let path = self
                    .cfg
                    .spool_dir
                    .join(format!("hawkbit-{}-{ci}-{ai}.deb{PART_SUFFIX}", safe(&id)));
                parts.push(PartState {
                    href: href.to_owned(),
                    filename: a.filename.clone(),
                    size: a.size,
                    sha256: sha,
                    path: old.map_or(path, |o| o.path.clone()),
                    validator: old.and_then(|o| o.validator.clone()),
                    module: PackageVersion::new(&chunk.name, &chunk.version),
                });
            }
        }
        if parts.is_empty() {
            return self
                .finish(&id, feedback::failed("the action has no .deb artifact"))
                .await;
        }
        if db.deployment.download == Handling::Skip {
            tracing::info!(action_id = %id, "download deferred by the server (download=skip)");
            self.set_status(|s| s.state = DdiState::DownloadDeferred);
            return;
        }
        let reservation = match self.installer.reserve(&id) {
            Ok(r) => r,
            Err(busy) => {
                tracing::info!(action_id = %id, holder = %busy.holder, "action waits: update slot busy");
                self.set_status(|s| s.state = DdiState::Busy);
                return;
            }
        };
        let state = ActionState {
            action: id.clone(),
            stage: Stage::Downloading,
            parts,
            pending: None,
        };
        self.store.save_action(&state);
        let total: u64 = state.parts.iter().filter_map(|p| p.size).sum();
        let resumed = state.parts.iter().any(|p| p.validator.is_some());
        let what = format!(
            "downloading {} artifact(s), {total} bytes{}",
            state.parts.len(),
            if resumed { ", resuming" } else { "" }
        );
        tracing::info!(action_id = %id, download = ?db.deployment.download, update = ?db.deployment.update, window = ?db.deployment.maintenance_window, "{what}");
        if self.tell(&id, feedback::proceeding(what)).await.is_err() {
            return self.discard(&[]);
        }
        let stop = CancellationToken::new();
        let task = tokio::spawn(
            download_all(
                self.api.clone(),
                self.store.clone(),
                state,
                self.limits(),
                stop.clone(),
                self.cfg.hawkbit.progress_interval,
                self.status.clone(),
            )
            .instrument(span(&id)),
        );
        self.set_status(|s| {
            s.state = DdiState::Downloading;
            s.progress = Some(0);
        });
        let then = Self::install_allowed(&db);
        self.job = Job::Downloading {
            action: id.clone(),
            then,
            stop,
            task,
            reservation: Some(reservation),
        };
    }

    fn limits(&self) -> Limits {
        Limits {
            max_size: self.cfg.max_package_size,
            min_free: self.cfg.min_free_space,
        }
    }

    /// Hands the files over; from here on a cancel is rejected.
    async fn install(&mut self, action: String, r: Reservation, files: Vec<SpooledFile>) {
        if let Some(mut state) = self.store.action().filter(|s| s.action == action) {
            state.stage = Stage::HandedOver;
            self.store.save_action(&state);
        }
        let names: Vec<&str> = files.iter().map(|f| f.filename.as_str()).collect();
        tracing::info!(action_id = %action, files = ?names, "handing the packages to the installer");
        let _ = self
            .tell(
                &action,
                feedback::proceeding(format!("installing {}", names.join(", "))),
            )
            .await;
        let fut = self.installer.install(r, files);
        let task = tokio::spawn(fut.instrument(span(&action)));
        self.set_status(|s| s.state = DdiState::Installing);
        self.job = Job::Installing { action, task };
    }

    /// A task of the job finished.
    pub async fn on_job_done(&mut self, done: JobDone) {
        let job = std::mem::take(&mut self.job);
        match (job, done) {
            (
                Job::Downloading {
                    action,
                    then,
                    reservation,
                    ..
                },
                JobDone::Downloaded(Ok(files)),
            ) => match (then, reservation) {
                (None, Some(r)) => {
                    let sp = span(&action);
                    self.install(action, r, files).instrument(sp).await;
                }
                (why, _) => {
                    let why = why.unwrap_or(Wait::Busy);
                    tracing::info!(action_id = %action, ?why, "downloaded; the install waits");
                    let detail = match why {
                        Wait::Window => "downloaded; waiting for the maintenance window",
                        Wait::UpdateSkip => {
                            "downloaded; the server defers the install (update=skip)"
                        }
                        Wait::Busy => "downloaded; waiting for the update slot",
                    };
                    let fb = feedback::message(
                        Execution::Downloaded,
                        Finished::None,
                        None,
                        None,
                        vec![detail.into()],
                    );
                    let gone = self.tell(&action, fb).await.is_err();
                    self.job = Job::Waiting { action, files, why };
                    self.set_status(|s| s.state = DdiState::WaitingToInstall);
                    if gone {
                        let files = self.abandon().await;
                        self.discard(&files);
                    }
                }
            },
            (
                Job::Downloading {
                    action,
                    reservation,
                    ..
                },
                JobDone::Downloaded(Err(e)),
            ) => {
                drop(reservation);
                match e {
                    DownloadError::Stopped => {}
                    DownloadError::Api {
                        source: ApiError::Gone { .. },
                        ..
                    } => self.discard(&[]),
                    e if e.is_transient() => {
                        tracing::warn!(action_id = %action, error = %e, "download interrupted; resuming at the next poll");
                        self.set_status(|s| {
                            s.state = DdiState::Idle;
                            s.last_error = Some(e.to_string());
                        });
                    }
                    e => {
                        self.discard(&[]);
                        self.finish(&action, feedback::failed(e.to_string())).await;
                    }
                }
            }
            (Job::Installing { action, .. }, JobDone::Installed(outcome)) => {
                self.ours = Some(outcome.installed.clone());
                self.finish(&action, feedback::closed(&outcome)).await;
            }
            (job, _) => self.job = job,
        }
    }

    /// Shutdown: stop a download (its partial files stay for resumption) and wait up to
    /// `drain` for a running install's result.
    pub async fn stop(&mut self, drain: Duration) {
        match &mut self.job {
            Job::Downloading { stop, .. } => {
                stop.cancel();
                let _ = self.job.done().await;
            }
            Job::Installing { .. } => {
                if let Ok(d) = tokio::time::timeout(drain, self.job.done()).await {
                    self.on_job_done(d).await;
                } else {
                    tracing::warn!(
                        "install still running at shutdown; its result is reported after the restart"
                    );
                }
            }
            _ => {}
        }
    }
}

/// The download task: every artifact in order, with sparse progress feedback.
async fn download_all(
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
            let r = tokio::select! {
                r = download::fetch(api.http(), &mut part, limits, &mut download::Hooks { stop: &either, on_bytes: &mut on_bytes, on_validator: &mut on_validator }) => r,
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
