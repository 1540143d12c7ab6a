//! Finishing and abandoning actions: best-effort and final feedback (persisted until
//! delivered), removing an abandoned action's files, and answering cancel requests (accepted
//! before hand-over, rejected after).

use super::agent::Agent;
use super::api::{ApiError, Fetched};
use super::download;
use super::feedback;
use super::installer::SpooledFile;
use super::job::Job;
use super::model::{CancelAction, Execution, Finished};
use super::persist::{ActionState, Stage};
use super::status::DdiState;

impl Agent {
    pub(super) fn feedback_url(&self, action: &str) -> String {
        self.api.url(&format!("deploymentBase/{action}/feedback"))
    }

    /// Best-effort `proceeding`/`downloaded` message; `Err` only for a 410 (action gone).
    pub(super) async fn tell(&self, action: &str, fb: super::model::Feedback) -> Result<(), ()> {
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
    pub(super) async fn finish(&mut self, action: &str, fb: super::model::Feedback) {
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

    pub(super) async fn deliver_now(&mut self) -> Result<(), ApiError> {
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
    pub(super) fn discard(&mut self, files: &[SpooledFile]) {
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
    pub(super) async fn abandon(&mut self) -> Vec<SpooledFile> {
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
        // Also an action whose download broke off and waits (in the state directory only) to
        // be resumed.
        let partial_of_it = self
            .store
            .action()
            .is_some_and(|s| s.action == stop && s.stage == Stage::Downloading);
        let (fb, verdict) = if (self.job.action() == Some(stop.as_str())
            && !matches!(self.job, Job::Installing { .. }))
            || (partial_of_it && matches!(self.job, Job::Idle))
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
}
