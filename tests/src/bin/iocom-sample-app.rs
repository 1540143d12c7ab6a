//! A sample IOCOM application for the packaging and system tests.
//!
//! It behaves like a real application unit built from `systemd/templates/iocom-app.service`:
//! it reports `READY=1` once "serving", then pings the watchdog. Its behaviour comes from the
//! package it was installed with: `/usr/share/iocom-sample-app/behaviour` holds `ok` (serve
//! forever) or `crash` (exit with an error right after start, as a broken release would), so
//! the tests can build a good v1/v2 and a broken v3 of the same package.

use std::time::Duration;

const BEHAVIOUR_FILE: &str = "/usr/share/iocom-sample-app/behaviour";

fn main() -> std::process::ExitCode {
    let behaviour = std::fs::read_to_string(BEHAVIOUR_FILE).unwrap_or_else(|_| "ok".into());
    let version = std::fs::read_to_string("/usr/share/iocom-sample-app/version")
        .unwrap_or_else(|_| "unknown".into());
    eprintln!(
        "iocom-sample-app {} starting ({})",
        version.trim(),
        behaviour.trim()
    );
    if behaviour.trim() == "crash" {
        eprintln!("iocom-sample-app: simulated fatal error at start-up");
        return std::process::ExitCode::from(3);
    }
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&format!("serving version {}", version.trim())),
    ]);
    let mut interval = Duration::from_secs(1);
    if let Some(wd) = sd_notify::watchdog_enabled() {
        interval = wd / 3;
    }
    loop {
        std::thread::sleep(interval);
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
    }
}
