//! The DDI link's status as the daemon publishes it (status signals, `systemctl status`
//! STATUS lines): last poll, current action and what the client is doing. The client owns it
//! and sends every change on a `tokio::sync::watch` channel; [`DdiStatus::summary`] is the
//! one-line form. The line names the last poll's time (UTC), not its age: it changes only when
//! the link does, so the status signals are not republished every second.

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
    /// One line, e.g. `hawkbit: downloading action 12 (40%), last poll 2026-12-02T05:47:41Z`.
    pub fn summary(&self) -> String {
        let mut s = format!("hawkbit: {}", self.state.name());
        if let Some(a) = &self.action {
            s.push_str(&format!(" action {a}"));
        }
        if let Some(p) = self.progress {
            s.push_str(&format!(" ({p}%)"));
        }
        match self.last_poll {
            Some(t) => s.push_str(&format!(", last poll {}", utc(t))),
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
        f.write_str(&self.summary())
    }
}

/// `t` as RFC 3339 UTC to the second (`2026-12-02T05:47:41Z`); times before 1970 print as 1970.
pub fn utc(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{}Z", crate::civil::Civil::from_unix(secs).format('T'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn summary_names_state_action_progress_and_poll_time() {
        let mut s = DdiStatus::default();
        assert_eq!(s.summary(), "hawkbit: off, not polled yet");
        s.state = DdiState::Downloading;
        s.action = Some("12".into());
        s.progress = Some(40);
        s.last_poll = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_190_461));
        assert_eq!(
            s.summary(),
            "hawkbit: downloading action 12 (40%), last poll 2026-12-02T05:47:41Z"
        );
        s.state = DdiState::Error;
        s.last_error = Some("poll: HTTP 503: server error".into());
        assert!(
            s.summary()
                .ends_with("05:47:41Z: poll: HTTP 503: server error")
        );
    }

    #[test]
    fn utc_dates_across_months_leap_years_and_the_epoch() {
        let at = |secs: u64| utc(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(951_955_199), "2000-03-01T23:59:59Z");
        assert_eq!(at(1_709_164_800), "2024-02-29T00:00:00Z");
        assert_eq!(at(1_735_689_599), "2024-12-31T23:59:59Z");
        assert_eq!(at(4_107_542_400), "2100-03-01T00:00:00Z");
        let before = SystemTime::UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(utc(before), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn the_line_does_not_change_while_the_link_does_not() {
        let s = DdiStatus {
            state: DdiState::Idle,
            last_poll: Some(SystemTime::now()),
            ..DdiStatus::default()
        };
        let first = s.summary();
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(s.summary(), first);
    }
}
