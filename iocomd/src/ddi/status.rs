//! The DDI link's status as the daemon publishes it (status signals, `systemctl status`
//! STATUS lines): last poll, current action and what the client is doing. The client owns it
//! and sends every change on a `tokio::sync::watch` channel; [`DdiStatus::summary`] is the
//! one-line form.

use std::fmt;
use std::time::SystemTime;

/// What the DDI client is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DdiState {
    /// Not started yet (or `[hawkbit]` is off).
    #[default]
    Off,
    /// Polling; nothing to do.
    Idle,
    /// The server deferred the download (`download=skip`).
    DownloadDeferred,
    /// The update slot is taken by something else; retried at the next poll.
    Busy,
    /// Downloading the action's artifacts.
    Downloading,
    /// Downloaded; the install waits for `update` to allow it or for the maintenance window.
    WaitingToInstall,
    /// Handed to the installer.
    Installing,
    /// The last poll failed; retrying with backoff.
    Error,
}

impl DdiState {
    /// Stable lower-case name (for signals and scripts).
    pub fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Idle => "idle",
            Self::DownloadDeferred => "download-deferred",
            Self::Busy => "busy",
            Self::Downloading => "downloading",
            Self::WaitingToInstall => "waiting-to-install",
            Self::Installing => "installing",
            Self::Error => "error",
        }
    }
}

/// The published status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DdiStatus {
    /// State.
    pub state: DdiState,
    /// When the base resource was last read successfully.
    pub last_poll: Option<SystemTime>,
    /// The last poll's error, if it failed (no secrets: the messages never contain the token).
    pub last_error: Option<String>,
    /// Current action id.
    pub action: Option<String>,
    /// Download progress of the current action, percent.
    pub progress: Option<u32>,
}

impl DdiStatus {
    /// One line, e.g. `hawkbit: downloading action 12 (40%), last poll 3 s ago`.
    pub fn summary(&self, now: SystemTime) -> String {
        self.to_line(now)
    }

    fn to_line(&self, now: SystemTime) -> String {
        let mut s = format!("hawkbit: {}", self.state.name());
        if let Some(a) = &self.action {
            s.push_str(&format!(" action {a}"));
        }
        if let Some(p) = self.progress {
            s.push_str(&format!(" ({p}%)"));
        }
        match self.last_poll {
            Some(t) => {
                let ago = now.duration_since(t).map_or(0, |d| d.as_secs());
                s.push_str(&format!(", last poll {ago} s ago"));
            }
            None => s.push_str(", not polled yet"),
        }
        if let Some(e) = &self.last_error {
            s.push_str(&format!(": {e}"));
        }
        s
    }
}

impl fmt::Display for DdiStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_line(SystemTime::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn summary_names_state_action_progress_and_poll_age() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let mut s = DdiStatus::default();
        assert_eq!(s.summary(t), "hawkbit: off, not polled yet");
        s.state = DdiState::Downloading;
        s.action = Some("12".into());
        s.progress = Some(40);
        s.last_poll = Some(t - Duration::from_secs(3));
        assert_eq!(
            s.summary(t),
            "hawkbit: downloading action 12 (40%), last poll 3 s ago"
        );
        s.state = DdiState::Error;
        s.last_error = Some("poll: HTTP 503: server error".into());
        assert!(s.summary(t).ends_with("ago: poll: HTTP 503: server error"));
    }
}
