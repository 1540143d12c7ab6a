//! Unit restarts and the health gate driver, behind the small [`Systemd`] trait.
//!
//! [`SystemdDbus`] is the real implementation (systemd's D-Bus API through the proxies of [`crate::systemd1`]); the
//! decisions live in [`crate::health`] and are unit-tested with recorded property values.
//! Without systemd (isolated root, demo) the transaction reports the unit steps as skipped and
//! never calls this module.

use std::time::{Duration, Instant};

use crate::systemd1::{ManagerProxy, ServiceProxy, UnitProxy};

use crate::health::{HealthJudge, UnitSample, Verdict};

/// A failed systemd operation.
#[derive(Debug, thiserror::Error)]
#[error("systemd {operation} {unit}: {message}")]
pub struct UnitError {
    /// What was attempted (`daemon-reload`, `restart`, `properties`).
    pub operation: String,
    /// The unit (empty for manager operations).
    pub unit: String,
    /// The cause.
    pub message: String,
}

impl UnitError {
    fn new(operation: &str, unit: &str, e: impl std::fmt::Display) -> Self {
        UnitError {
            operation: operation.to_string(),
            unit: unit.to_string(),
            message: e.to_string(),
        }
    }
}

/// The systemd operations the helper needs.
pub trait Systemd: Send {
    /// `systemctl daemon-reload`.
    fn daemon_reload(&mut self) -> Result<(), UnitError>;
    /// `systemctl restart unit` (job queued in mode `replace`).
    fn restart(&mut self, unit: &str) -> Result<(), UnitError>;
    /// Current properties of `unit`; `Ok(None)` when the unit is unknown to systemd.
    fn sample(&mut self, unit: &str) -> Result<Option<UnitSample>, UnitError>;
}

/// Timing of the health gate.
#[derive(Debug, Clone, Copy)]
pub struct GateTiming {
    /// How long a unit may take to become active after the restart.
    pub start_timeout: Duration,
    /// How long it must then stay healthy (the gate of units other than `Type=notify`).
    pub window: Duration,
    /// The gate of `Type=notify` units (READY=1 sent).
    pub ready_gate: Duration,
    /// How long the units are watched after the gate (zero: no probation).
    pub probation: Duration,
    /// Sampling interval.
    pub poll: Duration,
}

/// Restarts every unit in `units`, then gates each on health. `Err` carries the first reason.
/// `Ok` carries the judges still on probation ([`watch_probation`]; empty without one).
///
/// `before_dpkg` are the units' samples from before dpkg ran (same order; empty if unknown).
/// A unit that runs under a new main PID since then was (re)started by the package's
/// maintainer scripts (debhelper's postinst does that): it is gated as it is, against its
/// pre-dpkg PID, instead of being restarted a second time.
pub fn restart_and_gate(
    sd: &mut dyn Systemd,
    units: &[String],
    before_dpkg: &[Option<UnitSample>],
    timing: GateTiming,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<HealthJudge>, String> {
    sd.daemon_reload().map_err(|e| e.to_string())?;
    let mut judges = Vec::new();
    for (i, unit) in units.iter().enumerate() {
        let now = sd.sample(unit).map_err(|e| e.to_string())?;
        let earlier = before_dpkg.get(i).cloned().flatten();
        let before = if !before_dpkg.is_empty() && started_since(earlier.as_ref(), now.as_ref()) {
            let pid = now.as_ref().map_or(0, |s| s.main_pid);
            tracing::info!(
                "{unit} was restarted by the package (main PID {pid}): gating it as it runs"
            );
            progress(&format!("{unit} was restarted by the package"));
            earlier
        } else {
            tracing::info!("restarting {unit}");
            progress(&format!("restarting {unit}"));
            sd.restart(unit).map_err(|e| e.to_string())?;
            now
        };
        judges.push(
            HealthJudge::new(
                unit,
                before,
                Instant::now(),
                timing.start_timeout,
                timing.window,
            )
            .with_probation(timing.ready_gate, timing.probation),
        );
    }
    let mut on_probation = Vec::new();
    for (unit, mut judge) in units.iter().zip(judges) {
        progress(&format!("health gate for {unit}"));
        loop {
            let s = sd
                .sample(unit)
                .map_err(|e| e.to_string())?
                .unwrap_or_default();
            match judge.observe(&s, Instant::now()) {
                Verdict::Pending => std::thread::sleep(timing.poll),
                Verdict::Healthy | Verdict::Confirmed => break,
                Verdict::Unhealthy(reason) => return Err(reason),
            }
        }
        if judge.in_probation() {
            on_probation.push(judge);
        }
    }
    Ok(on_probation)
}

/// Watches every unit on probation (all of them at each `poll`) until each probation ended
/// (`Ok`) or one unit crashed, restarted or missed its watchdog (`Err` with the reason).
pub fn watch_probation(
    sd: &mut dyn Systemd,
    mut judges: Vec<HealthJudge>,
    poll: Duration,
) -> Result<(), String> {
    while !judges.is_empty() {
        std::thread::sleep(poll);
        let mut open = Vec::with_capacity(judges.len());
        for mut j in judges {
            let s = sd
                .sample(j.unit())
                .map_err(|e| e.to_string())?
                .unwrap_or_default();
            match j.observe(&s, Instant::now()) {
                Verdict::Unhealthy(reason) => return Err(reason),
                Verdict::Confirmed => tracing::info!(unit = j.unit(), "probation passed"),
                Verdict::Pending | Verdict::Healthy => open.push(j),
            }
        }
        judges = open;
    }
    Ok(())
}

/// True when `now` shows the unit active under a main PID it did not have `earlier`.
fn started_since(earlier: Option<&UnitSample>, now: Option<&UnitSample>) -> bool {
    let Some(now) = now else { return false };
    let old_pid = earlier.map_or(0, |e| e.main_pid);
    now.active_state == "active" && now.main_pid != 0 && now.main_pid != old_pid
}

/// systemd over D-Bus (`org.freedesktop.systemd1` on the system bus), driven from the
/// transaction's worker thread through a tokio runtime handle.
#[derive(Debug)]
pub struct SystemdDbus {
    rt: tokio::runtime::Handle,
    conn: zbus::Connection,
}

impl SystemdDbus {
    /// Connects to the system bus.
    pub fn connect(rt: tokio::runtime::Handle) -> Result<Self, UnitError> {
        let conn = rt
            .block_on(zbus::Connection::system())
            .map_err(|e| UnitError::new("connect", "", e))?;
        Ok(SystemdDbus { rt, conn })
    }
}

fn read_exe(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

impl Systemd for SystemdDbus {
    fn daemon_reload(&mut self) -> Result<(), UnitError> {
        let conn = self.conn.clone();
        self.rt
            .block_on(async move { ManagerProxy::new(&conn).await?.reload().await })
            .map_err(|e| UnitError::new("daemon-reload", "", e))
    }

    fn restart(&mut self, unit: &str) -> Result<(), UnitError> {
        let conn = self.conn.clone();
        let name = unit.to_string();
        self.rt
            .block_on(async move {
                ManagerProxy::new(&conn)
                    .await?
                    .restart_unit(&name, "replace")
                    .await
            })
            .map(|_job| ())
            .map_err(|e| UnitError::new("restart", unit, e))
    }

    fn sample(&mut self, unit: &str) -> Result<Option<UnitSample>, UnitError> {
        let conn = self.conn.clone();
        let name = unit.to_string();
        let r: zbus::Result<Option<UnitSample>> = self.rt.block_on(async move {
            let mgr = ManagerProxy::new(&conn).await?;
            let path = mgr.load_unit(&name).await?;
            let u = UnitProxy::builder(&conn)
                .path(path.clone())
                .cache_properties(zbus::proxy::CacheProperties::No)
                .build()
                .await?;
            if u.load_state().await? != "loaded" {
                return Ok(None);
            }
            let s = ServiceProxy::builder(&conn)
                .path(path)
                .cache_properties(zbus::proxy::CacheProperties::No)
                .build()
                .await?;
            let main_pid = s.main_pid().await?;
            Ok(Some(UnitSample {
                active_state: u.active_state().await?,
                sub_state: u.sub_state().await?,
                service_type: s.service_type().await?,
                result: s.result().await?,
                main_pid,
                n_restarts: s.n_restarts().await?,
                exe: (main_pid != 0).then(|| read_exe(main_pid)).flatten(),
            }))
        });
        r.map_err(|e| UnitError::new("properties", unit, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// Replays recorded samples; records the calls made.
    struct Recorded {
        samples: VecDeque<Option<UnitSample>>,
        calls: Vec<String>,
    }

    impl Systemd for Recorded {
        fn daemon_reload(&mut self) -> Result<(), UnitError> {
            self.calls.push("reload".into());
            Ok(())
        }
        fn restart(&mut self, unit: &str) -> Result<(), UnitError> {
            self.calls.push(format!("restart {unit}"));
            Ok(())
        }
        fn sample(&mut self, unit: &str) -> Result<Option<UnitSample>, UnitError> {
            self.calls.push(format!("sample {unit}"));
            self.samples
                .pop_front()
                .ok_or_else(|| UnitError::new("properties", unit, "no more recorded samples"))
        }
    }

    fn s(active: &str, pid: u32, restarts: u32) -> Option<UnitSample> {
        Some(UnitSample {
            active_state: active.into(),
            sub_state: "running".into(),
            service_type: "simple".into(),
            result: "success".into(),
            main_pid: pid,
            n_restarts: restarts,
            exe: Some("/usr/bin/app".into()),
        })
    }

    const T: GateTiming = GateTiming {
        start_timeout: Duration::from_secs(60),
        window: Duration::ZERO,
        ready_gate: Duration::ZERO,
        probation: Duration::ZERO,
        poll: Duration::from_millis(1),
    };

    #[test]
    fn reloads_restarts_then_gates() {
        let mut sd = Recorded {
            samples: [s("active", 10, 0), s("active", 10, 0), s("active", 11, 0)].into(),
            calls: vec![],
        };
        restart_and_gate(&mut sd, &["app.service".into()], &[], T, &mut |_| {}).unwrap();
        assert_eq!(
            sd.calls,
            [
                "reload",
                "sample app.service",
                "restart app.service",
                "sample app.service",
                "sample app.service"
            ]
        );
    }

    #[test]
    fn a_unit_restarted_by_the_package_is_gated_without_a_second_restart() {
        // Before dpkg: PID 10. After dpkg: PID 12 (the postinst restarted it).
        let mut sd = Recorded {
            samples: [s("active", 12, 0), s("active", 12, 0)].into(),
            calls: vec![],
        };
        let before = [s("active", 10, 0)];
        restart_and_gate(&mut sd, &["app.service".into()], &before, T, &mut |_| {}).unwrap();
        assert_eq!(
            sd.calls,
            ["reload", "sample app.service", "sample app.service"]
        );
    }

    #[test]
    fn a_unit_the_package_did_not_restart_is_restarted() {
        // Same PID as before dpkg: restarted by us; a unit that is down too.
        for after in [s("active", 10, 0), s("failed", 0, 0), None] {
            let mut sd = Recorded {
                samples: [after.clone(), s("active", 11, 0)].into(),
                calls: vec![],
            };
            let before = [s("active", 10, 0)];
            restart_and_gate(&mut sd, &["app.service".into()], &before, T, &mut |_| {}).unwrap();
            assert_eq!(
                sd.calls,
                [
                    "reload",
                    "sample app.service",
                    "restart app.service",
                    "sample app.service"
                ],
                "after dpkg: {after:?}"
            );
        }
    }

    #[test]
    fn a_new_unit_started_by_the_package_is_not_restarted() {
        let mut sd = Recorded {
            samples: [s("active", 7, 0), s("active", 7, 0)].into(),
            calls: vec![],
        };
        restart_and_gate(&mut sd, &["app.service".into()], &[None], T, &mut |_| {}).unwrap();
        assert!(
            !sd.calls.iter().any(|c| c.starts_with("restart")),
            "{:?}",
            sd.calls
        );
    }

    #[test]
    fn a_unit_restarted_by_the_package_that_then_crashes_fails_the_gate() {
        let mut sd = Recorded {
            samples: [s("active", 12, 0), s("activating", 0, 1)].into(),
            calls: vec![],
        };
        let before = [s("active", 10, 0)];
        let e = restart_and_gate(&mut sd, &["app.service".into()], &before, T, &mut |_| {})
            .unwrap_err();
        assert!(e.contains("restarted automatically"), "{e}");
    }

    #[test]
    fn unhealthy_unit_fails_the_gate() {
        let mut sd = Recorded {
            samples: [s("active", 10, 0), s("failed", 0, 0)].into(),
            calls: vec![],
        };
        let e =
            restart_and_gate(&mut sd, &["app.service".into()], &[], T, &mut |_| {}).unwrap_err();
        assert!(e.contains("app.service failed"), "{e}");
    }
}
