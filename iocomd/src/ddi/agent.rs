//! The poll loop: read the base resource (honouring `sleep`, with `If-None-Match`), deliver a
//! final feedback still owed, send attributes when asked or when versions changed, report
//! versions that arrived otherwise (`PUT installedBase`), answer cancels, and hand
//! deployments to [`super::action`]. Errors back off ([`Backoff`]) and are logged once per
//! change of kind.

use super::DdiConfig;
use super::api::{Api, ApiError, Fetched};
use super::feedback::{self, Backoff};
use super::installer::{Installer, PackageVersion};
use super::job::{Job, JobDone};
use super::model::{AssignedVersion, ConfigData, ControllerBase};
use super::persist::{Stage, Store};
use super::status::{DdiState, DdiStatus};
use hyper::Method;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Longest poll interval accepted from the server.
pub const MAX_SLEEP: Duration = Duration::from_secs(24 * 3600);
/// How long shutdown waits for a running install's result, to report it.
pub const DRAIN: Duration = Duration::from_secs(20);

/// The DDI client's state (one owner: the poll loop task).
pub(crate) struct Agent {
    pub cfg: DdiConfig,
    pub api: Api,
    pub installer: Arc<dyn Installer>,
    pub store: Store,
    pub status: Arc<watch::Sender<DdiStatus>>,
    pub job: Job,
    backoff: Backoff,
    last_error_kind: Option<std::mem::Discriminant<ApiError>>,
    /// Versions last sent as attributes (persisted).
    reported: Option<Vec<PackageVersion>>,
    /// Versions a DDI install of ours produced (not to be reported as "installed otherwise").
    pub ours: Option<Vec<PackageVersion>>,
    installed_base_supported: bool,
}

enum Event {
    Shutdown,
    Poll,
    Job(JobDone),
}

impl Agent {
    pub fn new(
        cfg: DdiConfig,
        api: Api,
        installer: Arc<dyn Installer>,
        store: Store,
        status: Arc<watch::Sender<DdiStatus>>,
    ) -> Self {
        let backoff = Backoff::new(cfg.hawkbit.retry_min, cfg.hawkbit.retry_max);
        let reported = store.reported_versions();
        Self {
            cfg,
            api,
            installer,
            store,
            status,
            job: Job::Idle,
            backoff,
            last_error_kind: None,
            reported,
            ours: None,
            installed_base_supported: true,
        }
    }

    /// Updates the published status.
    pub fn set_status(&self, f: impl FnOnce(&mut DdiStatus)) {
        self.status.send_modify(f);
    }

    /// Runs until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        self.set_status(|s| s.state = DdiState::Idle);
        self.recover().await;
        let mut next = Instant::now();
        loop {
            let ev = tokio::select! {
                () = shutdown.cancelled() => Event::Shutdown,
                () = tokio::time::sleep_until(next) => Event::Poll,
                d = self.job.done() => Event::Job(d),
            };
            match ev {
                Event::Shutdown => break,
                Event::Poll => {
                    let wait = self.cycle().await;
                    next = Instant::now() + wait;
                }
                Event::Job(d) => {
                    self.on_job_done(d).await;
                    // Look again soon: the server may have the next action, or want feedback.
                    next = next.min(Instant::now() + self.cfg.hawkbit.min_poll_interval);
                }
            }
        }
        self.stop(DRAIN).await;
        self.set_status(|s| s.state = DdiState::Off);
    }

    /// One poll; returns the wait until the next.
    async fn cycle(&mut self) -> Duration {
        match self.poll().await {
            Ok(wait) => {
                self.backoff.reset();
                if self.last_error_kind.take().is_some() {
                    tracing::info!(server = %self.cfg.hawkbit.server, "DDI server reachable again");
                }
                self.set_status(|s| {
                    s.last_poll = Some(SystemTime::now());
                    s.last_error = None;
                    if s.state == DdiState::Error {
                        s.state = DdiState::Idle;
                    }
                });
                wait
            }
            Err(e) => {
                let wait = self.backoff.after(&e);
                let kind = std::mem::discriminant(&e);
                if self.last_error_kind != Some(kind) {
                    tracing::warn!(error = %e, retry_in = ?wait, "DDI poll failed");
                } else {
                    tracing::debug!(error = %e, retry_in = ?wait, failures = self.backoff.failures(), "DDI poll failed again");
                }
                self.last_error_kind = Some(kind);
                let msg = e.to_string();
                self.set_status(|s| {
                    s.last_error = Some(msg);
                    if s.state == DdiState::Idle {
                        s.state = DdiState::Error;
                    }
                });
                wait
            }
        }
    }

    async fn poll(&mut self) -> Result<Duration, ApiError> {
        self.deliver_pending().await?;
        let url = self.api.base_url().to_owned();
        let base: ControllerBase = match self.api.get_json("poll", &url, false).await? {
            Fetched::Value(b) => b,
            Fetched::Nothing => ControllerBase::default(),
        };
        let h = &self.cfg.hawkbit;
        let wait = base
            .sleep()
            .unwrap_or(h.poll_interval)
            .clamp(h.min_poll_interval, MAX_SLEEP);
        tracing::debug!(links = ?base.links, ?wait, "polled");
        match self.attributes(base.links.config_data.is_some()).await {
            // Attributes are retried at the next poll; they do not hold up the actions.
            Err(e @ (ApiError::Transport { .. } | ApiError::Auth { .. })) => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "device attributes not accepted; retrying at the next poll")
            }
            Ok(()) => {}
        }
        if let Some(link) = &base.links.cancel_action {
            self.on_cancel(&link.href).await?;
        }
        match &base.links.deployment_base {
            Some(link) => self.on_deployment(&link.href).await?,
            None => self.not_offered().await,
        }
        Ok(wait)
    }

    /// Sends the final feedback a previous cycle (or run) could not deliver.
    async fn deliver_pending(&mut self) -> Result<(), ApiError> {
        let Some(state) = self.store.action() else {
            return Ok(());
        };
        let (Stage::Report, Some(fb)) = (state.stage, &state.pending) else {
            return Ok(());
        };
        let url = self
            .api
            .url(&format!("deploymentBase/{}/feedback", state.action));
        match feedback::send(&self.api, "final feedback", &url, fb).await {
            Ok(()) => {
                tracing::info!(action_id = %state.action, execution = ?fb.status.execution, finished = ?fb.status.result.finished, "final feedback delivered")
            }
            Err(ApiError::Gone { .. } | ApiError::NotFound { .. }) => {
                tracing::warn!(action_id = %state.action, "action gone on the server; final feedback dropped");
            }
            Err(e) => return Err(e),
        }
        self.store.clear_action();
        self.set_status(|s| s.action = None);
        Ok(())
    }

    /// `PUT configData` when asked or when the versions changed; `PUT installedBase` for
    /// versions that changed without a DDI action of ours.
    async fn attributes(&mut self, asked: bool) -> Result<(), ApiError> {
        if matches!(self.job, Job::Installing { .. }) {
            return Ok(());
        }
        let now = self.installer.installed_versions();
        if !asked && self.reported.as_ref() == Some(&now) {
            return Ok(());
        }
        if let Some(before) = &self.reported
            && *before != now
            && self.ours.as_ref() != Some(&now)
            && self.installed_base_supported
        {
            for p in now.iter().filter(|p| !before.contains(p)) {
                let body = AssignedVersion {
                    name: p.name.clone(),
                    version: p.version.clone(),
                };
                match self
                    .api
                    .send_json(
                        "installedBase",
                        Method::PUT,
                        &self.api.url("installedBase"),
                        &body,
                    )
                    .await
                {
                    Ok(()) => {
                        tracing::info!(package = %p.name, version = %p.version, "reported a version installed outside DDI")
                    }
                    Err(
                        ApiError::NotFound { .. }
                        | ApiError::NotAllowed { .. }
                        | ApiError::Unexpected { .. },
                    ) => {
                        tracing::info!(
                            "the server does not offer PUT installedBase; versions go in configData only"
                        );
                        self.installed_base_supported = false;
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        let mut data: BTreeMap<String, String> = self.cfg.hawkbit.attributes.clone();
        for p in &now {
            data.insert(format!("pkg.{}", p.name), p.version.clone());
        }
        if let Some(pkg) = &self.cfg.hawkbit.version_package
            && let Some(p) = now.iter().find(|p| p.name == *pkg)
        {
            data.insert("sw_version".into(), p.version.clone());
        }
        let body = ConfigData {
            mode: "merge",
            data,
        };
        self.api
            .send_json(
                "configData",
                Method::PUT,
                &self.api.url("configData"),
                &body,
            )
            .await?;
        tracing::info!(packages = now.len(), asked, "sent device attributes");
        self.store.save_reported_versions(&now);
        self.reported = Some(now);
        self.ours = None;
        Ok(())
    }

    /// A daemon restart found an action in the state directory.
    async fn recover(&mut self) {
        let Some(mut state) = self.store.action() else {
            return;
        };
        match state.stage {
            Stage::Downloading => {
                tracing::info!(action_id = %state.action, "resuming DDI action when the server offers it again");
            }
            Stage::Report => {}
            Stage::HandedOver => {
                let fb = match self.installer.recover(&state.action).await {
                    Some(outcome) => feedback::closed(&outcome),
                    None => feedback::message(
                        super::model::Execution::Closed,
                        super::model::Finished::Failure,
                        None,
                        Some(super::installer::UNKNOWN_RESULT),
                        vec!["result unknown: iocomd restarted while the install ran".into()],
                    ),
                };
                tracing::warn!(action_id = %state.action, finished = ?fb.status.result.finished, "install result recovered after a restart");
                state.stage = Stage::Report;
                state.pending = Some(fb);
                self.store.save_action(&state);
            }
        }
    }
}
