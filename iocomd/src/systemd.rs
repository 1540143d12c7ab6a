//! All contact with the service manager's notification socket (sd_notify): readiness, status
//! text, the watchdog and stopping. Everything is a no-op when `NOTIFY_SOCKET` is not set
//! (not started by systemd, or `Type=` is not `notify`).
//!
//! The daemon calls [`ready`] once its endpoints are up, [`status`] on every change worth
//! showing in `systemctl status`, [`stopping`] when shutdown begins, and runs [`run_watchdog`]
//! (or pings from its own loop with [`Watchdog`]) when `WatchdogSec=` is set.

use std::io;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

/// True if a notification socket is configured (`NOTIFY_SOCKET` is set).
pub fn enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

fn send(states: &[NotifyState<'_>]) -> io::Result<()> {
    let r = sd_notify::notify(states);
    if let Err(e) = &r {
        tracing::debug!(error = %e, "sd_notify failed");
    }
    r
}

/// A status line must not contain newlines (they would start another `KEY=value`).
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect()
}

/// `READY=1`: startup is finished.
pub fn ready() -> io::Result<()> {
    send(&[NotifyState::Ready])
}

/// `READY=1` and `STATUS=text` in one message.
pub fn ready_with_status(text: &str) -> io::Result<()> {
    let text = one_line(text);
    send(&[NotifyState::Ready, NotifyState::Status(&text)])
}

/// `STATUS=text`: free-form status shown by `systemctl status` (newlines become spaces).
pub fn status(text: &str) -> io::Result<()> {
    let text = one_line(text);
    send(&[NotifyState::Status(&text)])
}

/// `STOPPING=1`: shutdown has begun.
pub fn stopping() -> io::Result<()> {
    send(&[NotifyState::Stopping])
}

/// `WATCHDOG=1`: the service is alive.
pub fn watchdog_ping() -> io::Result<()> {
    send(&[NotifyState::Watchdog])
}

/// The watchdog timeout from `WATCHDOG_USEC`, if it is set and meant for this process
/// (`WATCHDOG_PID` absent or equal to our pid).
pub fn watchdog_timeout() -> Option<Duration> {
    sd_notify::watchdog_enabled().filter(|d| !d.is_zero())
}

/// The service manager's watchdog, when one is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watchdog {
    timeout: Duration,
}

impl Watchdog {
    /// The watchdog configured for this process, if any.
    pub fn from_env() -> Option<Watchdog> {
        watchdog_timeout().map(|timeout| Watchdog { timeout })
    }

    /// The timeout after which the service manager kills the service.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// How often to ping: half the timeout, as sd_watchdog_enabled(3) recommends.
    pub fn ping_interval(&self) -> Duration {
        self.timeout / 2
    }

    /// Sends `WATCHDOG=1`.
    pub fn ping(&self) -> io::Result<()> {
        watchdog_ping()
    }
}

/// Pings the watchdog every half timeout until `cancel` fires. Returns at once if no watchdog
/// is configured. Run it on the task whose liveness should count (e.g. `select!`-ed next to
/// the core loop's work), so that a stuck loop stops the pings.
pub async fn run_watchdog(cancel: CancellationToken) {
    let Some(wd) = Watchdog::from_env() else {
        return;
    };
    tracing::debug!(timeout = ?wd.timeout(), "systemd watchdog enabled");
    let mut tick = tokio::time::interval(wd.ping_interval());
    loop {
        tokio::select! {
            // Due pings first: after a stall, the missed ones are sent before stopping.
            biased;
            _ = tick.tick() => {
                // A failed ping is logged in `send`; systemd will restart us if pings stop.
                let _ = wd.ping();
            }
            () = cancel.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_text_stays_on_one_line() {
        assert_eq!(one_line("a\nb\r\nc"), "a b  c");
    }

    #[test]
    fn ping_interval_is_half_the_timeout() {
        let wd = Watchdog {
            timeout: Duration::from_secs(30),
        };
        assert_eq!(wd.ping_interval(), Duration::from_secs(15));
    }
}
