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
use super::feedback;
use super::installer::{PackageVersion, Reservation, SpooledFile};
use super::job::{Job, JobDone, Wait, download_all, safe, span};
use super::model::{DeploymentBase, Execution, Finished, Handling, Window};
use super::persist::{ActionState, PartState, Stage};
use super::status::DdiState;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

impl Agent {
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

    pub(super) fn install_allowed(db: &DeploymentBase) -> Option<Wait> {
        if db.deployment.update == Handling::Skip {
            Some(Wait::UpdateSkip)
        } else if db.deployment.maintenance_window == Some(Window::Unavailable) {
            Some(Wait::Window)
        } else {
            None
        }
    }

    pub(super) async fn retry_waiting(&mut self, db: &DeploymentBase) {
        if Self::install_allowed(db).is_some() {
            return;
        }
        let Job::Waiting { action, files, why } = std::mem::take(&mut self.job) else {
            return;
        };
        tracing::info!(action_id = %action, waited_for = ?why, "the install may go ahead now");
        match self.installer.reserve(&action).await {
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
    pub(super) async fn start(&mut self, db: DeploymentBase) {
        let id = db.id.clone();
        self.set_status(|s| s.action = Some(id.clone()));
        let previous = self.store.action().filter(|s| s.action == id);
        if previous.is_none()
            && let Some(old) = self.store.action()
        {
            // Another action's leftovers (its download broke off, the server moved on).
            for p in &old.parts {
                let _ = std::fs::remove_file(&p.path);
                let _ = std::fs::remove_file(download::final_path(&p.path));
            }
            self.store.clear_action();
        }
        let plain = self.cfg.hawkbit.ca.is_none();
        let mut parts = Vec::new();
        for (ci, chunk) in db.deployment.chunks.iter().enumerate() {
            for (ai, a) in chunk.artifacts.iter().enumerate() {
                if !a.filename.ends_with(".deb") {
                    tracing::info!(artifact = %a.filename, "skipping a non-.deb artifact");
                    continue;
                }
                let (Some(href), Some(sha)) = (a.href(plain), a.sha256()) else {
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
        let reservation = match self.installer.reserve(&id).await {
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

    pub(super) fn limits(&self) -> Limits {
        Limits {
            max_size: self.cfg.max_package_size,
            min_free: self.cfg.min_free_space,
        }
    }

    /// Hands the files over; from here on a cancel is rejected.
    pub(super) async fn install(
        &mut self,
        action: String,
        r: Reservation,
        files: Vec<SpooledFile>,
    ) {
        let names: Vec<&str> = files.iter().map(|f| f.filename.as_str()).collect();
        let detail = format!("installing {}", names.join(", "));
        if self
            .tell(&action, feedback::proceeding(detail))
            .await
            .is_err()
        {
            tracing::warn!(action_id = %action, "the action is gone on the server; not installing it");
            drop(r);
            return self.discard(&files);
        }
        tracing::info!(action_id = %action, files = ?names, "handing the packages to the installer");
        if let Some(mut state) = self.store.action().filter(|s| s.action == action) {
            state.stage = Stage::HandedOver;
            self.store.save_action(&state);
        }
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
                (why, r) => {
                    drop(r); // no slot is held while waiting
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
