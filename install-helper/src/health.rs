//! The health gate's decisions, as a pure state machine fed with sampled unit properties.
//!
//! After a restart a unit is healthy when, within `start_timeout`, it becomes `active` with a
//! main PID that differs from the one before the restart and whose `/proc/PID/exe` is an
//! existing file (not `… (deleted)`, i.e. the new executable), and then, for `window`, keeps
//! the same main PID, stays active and its `NRestarts` does not grow. For `Type=notify` units
//! systemd only reports `active` after `READY=1`, so `active` covers READY. `Type=oneshot`
//! units are healthy once they finished successfully (`active`/`exited` or `inactive` with
//! result `success`).
//!
//! Gate and probation: the window a unit must stay up before the install is reported healthy
//! (the *gate*) is the short `ready_gate` for `Type=notify` units (READY=1 was sent, so little
//! more is needed) and `window` for the others. With a probation, [`Verdict::Healthy`] is
//! then provisional: the judge keeps watching the same way until the probation ends
//! ([`Verdict::Confirmed`]) or the unit crashes, restarts or misses its watchdog
//! ([`Verdict::Unhealthy`]). Without one, `Healthy` is final.

use std::time::{Duration, Instant};

/// Unit and service properties at one instant (systemd D-Bus properties).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnitSample {
    /// `ActiveState`: active, activating, deactivating, inactive, failed, reloading.
    pub active_state: String,
    /// `SubState`: running, exited, auto-restart, start, ...
    pub sub_state: String,
    /// Service `Type`: simple, exec, notify, forking, oneshot, dbus, idle.
    pub service_type: String,
    /// Service `Result`: success, exit-code, signal, timeout, watchdog, ...
    pub result: String,
    /// `MainPID` (0: none).
    pub main_pid: u32,
    /// `NRestarts` (automatic restarts by `Restart=`).
    pub n_restarts: u32,
    /// Target of `/proc/MainPID/exe`, if it could be read.
    pub exe: Option<String>,
}

/// What the judge concluded from the samples so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Keep sampling.
    Pending,
    /// Healthy: the gate passed (provisional while [`HealthJudge::in_probation`]).
    Healthy,
    /// The probation after the gate passed too: final.
    Confirmed,
    /// Unhealthy, with the reason.
    Unhealthy(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Waiting for the restarted unit to become active with a new main PID.
    Starting,
    /// Active with this PID and restart count since `since`; watching for the gate.
    Watching {
        pid: u32,
        restarts: u32,
        since: Instant,
        gate: Duration,
    },
    /// The gate passed; watching the same way until `until`.
    Probation {
        pid: u32,
        restarts: u32,
        until: Instant,
    },
    /// A final verdict was reached.
    Done(Verdict),
}

/// Decides the health of one unit after one restart.
#[derive(Debug, Clone)]
pub struct HealthJudge {
    unit: String,
    before: Option<UnitSample>,
    started: Instant,
    start_timeout: Duration,
    window: Duration,
    ready_gate: Option<Duration>,
    probation: Duration,
    phase: Phase,
}

impl HealthJudge {
    /// A judge for `unit`, restarted at `started`; `before` is the sample taken before the
    /// restart (`None` if the unit did not exist / was not loaded).
    pub fn new(
        unit: &str,
        before: Option<UnitSample>,
        started: Instant,
        start_timeout: Duration,
        window: Duration,
    ) -> Self {
        HealthJudge {
            unit: unit.to_string(),
            before,
            started,
            start_timeout,
            window,
            ready_gate: None,
            probation: Duration::ZERO,
            phase: Phase::Starting,
        }
    }

    /// The same judge with the gate `ready_gate` for `Type=notify` units (instead of the
    /// window) and a `probation` after the gate (zero: none).
    pub fn with_probation(mut self, ready_gate: Duration, probation: Duration) -> Self {
        self.ready_gate = Some(ready_gate);
        self.probation = probation;
        self
    }

    /// The unit judged.
    pub fn unit(&self) -> &str {
        &self.unit
    }

    /// True after a provisional [`Verdict::Healthy`], until the probation's verdict.
    pub fn in_probation(&self) -> bool {
        matches!(self.phase, Phase::Probation { .. })
    }

    /// When the running probation ends.
    pub fn probation_until(&self) -> Option<Instant> {
        match self.phase {
            Phase::Probation { until, .. } => Some(until),
            _ => None,
        }
    }

    fn baseline_restarts(&self) -> u32 {
        self.before.as_ref().map_or(0, |b| b.n_restarts)
    }

    fn old_pid(&self) -> u32 {
        self.before.as_ref().map_or(0, |b| b.main_pid)
    }

    /// Feeds one sample taken at `now`.
    pub fn observe(&mut self, s: &UnitSample, now: Instant) -> Verdict {
        let verdict = match self.phase.clone() {
            Phase::Done(v) => return v,
            Phase::Starting => self.starting(s, now),
            Phase::Watching {
                pid,
                restarts,
                since,
                gate,
            } => self
                .watching(s, now, (pid, restarts), "within the health window")
                .unwrap_or_else(|| self.gate_check(since, gate, now, pid, restarts)),
            Phase::Probation {
                pid,
                restarts,
                until,
            } => self
                .watching(s, now, (pid, restarts), "during the probation")
                .unwrap_or(if now >= until {
                    Verdict::Confirmed
                } else {
                    Verdict::Pending
                }),
        };
        let last = match &verdict {
            Verdict::Pending => false,
            Verdict::Healthy => !self.in_probation(),
            Verdict::Confirmed | Verdict::Unhealthy(_) => true,
        };
        if last {
            self.phase = Phase::Done(verdict.clone());
        }
        verdict
    }

    /// The gate for a unit of this service type.
    fn gate_for(&self, service_type: &str) -> Duration {
        match self.ready_gate {
            Some(g) if service_type == "notify" => g,
            _ => self.window,
        }
    }

    /// Gate passed at `now`? Then healthy, and on probation if there is one.
    fn gate_check(
        &mut self,
        since: Instant,
        gate: Duration,
        now: Instant,
        pid: u32,
        restarts: u32,
    ) -> Verdict {
        if now.saturating_duration_since(since) < gate {
            return Verdict::Pending;
        }
        if !self.probation.is_zero() {
            self.phase = Phase::Probation {
                pid,
                restarts,
                until: now + self.probation,
            };
        }
        Verdict::Healthy
    }

    fn starting(&mut self, s: &UnitSample, now: Instant) -> Verdict {
        let u = &self.unit;
        if s.active_state == "failed" {
            return Verdict::Unhealthy(format!("{u} failed (result {})", s.result));
        }
        if s.n_restarts > self.baseline_restarts() {
            return Verdict::Unhealthy(format!(
                "{u} was restarted automatically {} time(s) while starting",
                s.n_restarts - self.baseline_restarts()
            ));
        }
        if s.service_type == "oneshot" {
            let finished_ok = s.active_state == "active"
                || (s.active_state == "inactive" && s.result == "success");
            if finished_ok && s.result == "success" {
                return Verdict::Healthy;
            }
        } else if s.active_state == "active" && s.main_pid != 0 && s.main_pid != self.old_pid() {
            match &s.exe {
                Some(exe) if exe.ends_with(" (deleted)") => {
                    return Verdict::Unhealthy(format!(
                        "{u} main PID {} runs a deleted executable {exe}",
                        s.main_pid
                    ));
                }
                Some(_) => {
                    let gate = self.gate_for(&s.service_type);
                    self.phase = Phase::Watching {
                        pid: s.main_pid,
                        restarts: s.n_restarts,
                        since: now,
                        gate,
                    };
                    return self.gate_check(now, gate, now, s.main_pid, s.n_restarts);
                }
                None => {
                    return Verdict::Unhealthy(format!(
                        "{u} main PID {} has no readable executable",
                        s.main_pid
                    ));
                }
            }
        }
        if now.saturating_duration_since(self.started) >= self.start_timeout {
            return Verdict::Unhealthy(format!(
                "{u} did not become active with a new main PID within {:?} (state {}/{}, PID {})",
                self.start_timeout, s.active_state, s.sub_state, s.main_pid
            ));
        }
        Verdict::Pending
    }

    /// The checks while watching a started unit: `Some(Unhealthy)` when it crashed, was
    /// restarted, changed its main PID or missed its watchdog; `None` while it is fine.
    fn watching(
        &self,
        s: &UnitSample,
        _now: Instant,
        (pid, restarts): (u32, u32),
        when: &str,
    ) -> Option<Verdict> {
        let u = &self.unit;
        let why = if s.result == "watchdog" {
            format!(
                "{u} missed its watchdog {when} ({}/{}, result watchdog)",
                s.active_state, s.sub_state
            )
        } else if s.active_state != "active" {
            format!(
                "{u} left the active state ({}/{}, result {}) {when}",
                s.active_state, s.sub_state, s.result
            )
        } else if s.n_restarts != restarts {
            format!(
                "{u} restarted {} time(s) {when}",
                s.n_restarts.saturating_sub(restarts)
            )
        } else if s.main_pid != pid {
            format!("{u} main PID changed from {pid} to {} {when}", s.main_pid)
        } else {
            return None;
        };
        Some(Verdict::Unhealthy(why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(active: &str, sub: &str, pid: u32, restarts: u32) -> UnitSample {
        UnitSample {
            active_state: active.into(),
            sub_state: sub.into(),
            service_type: "notify".into(),
            result: "success".into(),
            main_pid: pid,
            n_restarts: restarts,
            exe: Some("/usr/bin/app".into()),
        }
    }

    fn judge(before: Option<UnitSample>, t0: Instant) -> HealthJudge {
        HealthJudge::new(
            "app.service",
            before,
            t0,
            Duration::from_secs(30),
            Duration::from_secs(10),
        )
    }

    #[test]
    fn new_pid_that_stays_up_for_the_window_is_healthy() {
        let t0 = Instant::now();
        let mut j = judge(Some(sample("active", "running", 100, 0)), t0);
        // Restart job not run yet: still the old PID.
        assert_eq!(
            j.observe(&sample("active", "running", 100, 0), t0),
            Verdict::Pending
        );
        // Type=notify before READY=1.
        let s = sample("activating", "start", 120, 0);
        assert_eq!(j.observe(&s, t0 + Duration::from_secs(1)), Verdict::Pending);
        let s = sample("active", "running", 120, 0);
        assert_eq!(j.observe(&s, t0 + Duration::from_secs(2)), Verdict::Pending);
        assert_eq!(j.observe(&s, t0 + Duration::from_secs(8)), Verdict::Pending);
        assert_eq!(
            j.observe(&s, t0 + Duration::from_secs(12)),
            Verdict::Healthy
        );
        // The verdict is final.
        let bad = sample("failed", "failed", 0, 3);
        assert_eq!(
            j.observe(&bad, t0 + Duration::from_secs(13)),
            Verdict::Healthy
        );
    }

    #[test]
    fn restart_loop_within_the_window_is_unhealthy() {
        // Recorded from a unit with Restart=on-failure whose new binary exits after 1 s.
        let t0 = Instant::now();
        let mut j = judge(Some(sample("active", "running", 100, 0)), t0);
        let s = sample("active", "running", 130, 0);
        assert_eq!(j.observe(&s, t0 + Duration::from_secs(1)), Verdict::Pending);
        let s = sample("activating", "auto-restart", 0, 1);
        let v = j.observe(&s, t0 + Duration::from_secs(3));
        assert!(
            matches!(&v, Verdict::Unhealthy(r) if r.contains("left the active state")),
            "{v:?}"
        );
    }

    #[test]
    fn restart_counter_growth_and_pid_change_are_unhealthy() {
        let t0 = Instant::now();
        let mut j = judge(Some(sample("active", "running", 100, 2)), t0);
        let s = sample("active", "running", 130, 2);
        assert_eq!(j.observe(&s, t0), Verdict::Pending);
        let s = sample("active", "running", 140, 3);
        let v = j.observe(&s, t0 + Duration::from_secs(4));
        assert!(
            matches!(&v, Verdict::Unhealthy(r) if r.contains("restarted 1")),
            "{v:?}"
        );

        let mut j = judge(None, t0);
        assert_eq!(
            j.observe(&sample("active", "running", 130, 0), t0),
            Verdict::Pending
        );
        let v = j.observe(
            &sample("active", "running", 131, 0),
            t0 + Duration::from_secs(1),
        );
        assert!(
            matches!(&v, Verdict::Unhealthy(r) if r.contains("PID changed")),
            "{v:?}"
        );
    }

    #[test]
    fn auto_restart_while_starting_is_unhealthy() {
        let t0 = Instant::now();
        let mut j = judge(Some(sample("active", "running", 100, 0)), t0);
        let v = j.observe(&sample("activating", "auto-restart", 0, 1), t0);
        assert!(
            matches!(&v, Verdict::Unhealthy(r) if r.contains("automatically 1")),
            "{v:?}"
        );
    }

    #[test]
    fn failed_unit_and_start_timeout_are_unhealthy() {
        let t0 = Instant::now();
        let mut j = judge(None, t0);
        let mut s = sample("failed", "failed", 0, 0);
        s.result = "exit-code".into();
        let v = j.observe(&s, t0);
        assert!(
            matches!(&v, Verdict::Unhealthy(r) if r.contains("exit-code")),
            "{v:?}"
        );

        // Type=notify that never sends READY=1.
        let mut j = judge(Some(sample("active", "running", 100, 0)), t0);
        let s = sample("activating", "start", 150, 0);
        assert_eq!(
            j.observe(&s, t0 + Duration::from_secs(29)),
            Verdict::Pending
        );
        let v = j.observe(&s, t0 + Duration::from_secs(30));
        assert!(
            matches!(&v, Verdict::Unhealthy(r) if r.contains("did not become active")),
            "{v:?}"
        );

        // The old process kept running (restart had no effect).
        let mut j = judge(Some(sample("active", "running", 100, 0)), t0);
        let v = j.observe(
            &sample("active", "running", 100, 0),
            t0 + Duration::from_secs(31),
        );
        assert!(matches!(v, Verdict::Unhealthy(_)), "{v:?}");
    }

    #[test]
    fn deleted_or_unreadable_executable_is_unhealthy() {
        let t0 = Instant::now();
        let mut j = judge(Some(sample("active", "running", 100, 0)), t0);
        let mut s = sample("active", "running", 101, 0);
        s.exe = Some("/usr/bin/app (deleted)".into());
        assert!(matches!(j.observe(&s, t0), Verdict::Unhealthy(r) if r.contains("deleted")));
        let mut j = judge(None, t0);
        s.exe = None;
        assert!(matches!(j.observe(&s, t0), Verdict::Unhealthy(r) if r.contains("readable")));
    }

    #[test]
    fn oneshot_is_healthy_when_it_finished_successfully() {
        let t0 = Instant::now();
        let mut s = sample("inactive", "dead", 0, 0);
        s.service_type = "oneshot".into();
        assert_eq!(judge(None, t0).observe(&s, t0), Verdict::Healthy);
        s.result = "exit-code".into();
        let mut j = judge(None, t0);
        assert_eq!(j.observe(&s, t0), Verdict::Pending);
        s.active_state = "failed".into();
        assert!(matches!(j.observe(&s, t0), Verdict::Unhealthy(_)));
    }

    /// A judge with a 2 s ready gate and a 30 s probation.
    fn on_probation(t0: Instant) -> HealthJudge {
        judge(Some(sample("active", "running", 100, 0)), t0)
            .with_probation(Duration::from_secs(2), Duration::from_secs(30))
    }

    /// Up at t0 + 1 s, healthy (gate passed) at t0 + 3 s.
    fn through_the_gate(j: &mut HealthJudge, t0: Instant) {
        let s = sample("active", "running", 120, 0);
        let at = |secs| t0 + Duration::from_secs(secs);
        assert_eq!(
            j.observe(&sample("activating", "start", 120, 0), at(0)),
            Verdict::Pending
        );
        assert_eq!(j.observe(&s, at(1)), Verdict::Pending);
        assert!(!j.in_probation());
        assert_eq!(j.observe(&s, at(2)), Verdict::Pending);
        assert_eq!(j.observe(&s, at(3)), Verdict::Healthy);
        assert!(j.in_probation());
        assert_eq!(j.probation_until(), Some(at(33)));
    }

    #[test]
    fn notify_unit_passes_the_short_gate_then_the_probation() {
        let t0 = Instant::now();
        let mut j = on_probation(t0);
        through_the_gate(&mut j, t0);
        let s = sample("active", "running", 120, 0);
        assert_eq!(
            j.observe(&s, t0 + Duration::from_secs(20)),
            Verdict::Pending
        );
        assert_eq!(
            j.observe(&s, t0 + Duration::from_secs(33)),
            Verdict::Confirmed
        );
        assert!(!j.in_probation());
        // Final.
        let bad = sample("failed", "failed", 0, 1);
        assert_eq!(
            j.observe(&bad, t0 + Duration::from_secs(34)),
            Verdict::Confirmed
        );
    }

    #[test]
    fn other_unit_types_keep_the_full_window_as_their_gate() {
        let t0 = Instant::now();
        let mut j = on_probation(t0);
        let mut s = sample("active", "running", 120, 0);
        s.service_type = "simple".into();
        assert_eq!(j.observe(&s, t0), Verdict::Pending);
        assert_eq!(j.observe(&s, t0 + Duration::from_secs(3)), Verdict::Pending);
        assert_eq!(
            j.observe(&s, t0 + Duration::from_secs(10)),
            Verdict::Healthy
        );
        assert!(j.in_probation());
    }

    #[test]
    fn crash_during_probation_is_unhealthy() {
        let t0 = Instant::now();
        let mut j = on_probation(t0);
        through_the_gate(&mut j, t0);
        let mut s = sample("activating", "auto-restart", 0, 1);
        s.result = "exit-code".into();
        let v = j.observe(&s, t0 + Duration::from_secs(12));
        assert!(
            matches!(&v, Verdict::Unhealthy(r) if r.contains("left the active state") && r.contains("during the probation")),
            "{v:?}"
        );
        assert!(!j.in_probation());
        // A restart that happened between two samples shows as a new PID / restart count.
        let mut j = on_probation(t0);
        through_the_gate(&mut j, t0);
        let v = j.observe(
            &sample("active", "running", 180, 1),
            t0 + Duration::from_secs(5),
        );
        assert!(
            matches!(&v, Verdict::Unhealthy(r) if r.contains("restarted 1")),
            "{v:?}"
        );
    }

    #[test]
    fn missed_watchdog_during_probation_is_unhealthy() {
        let t0 = Instant::now();
        let mut j = on_probation(t0);
        through_the_gate(&mut j, t0);
        let mut s = sample("deactivating", "stop-watchdog", 120, 0);
        s.result = "watchdog".into();
        let v = j.observe(&s, t0 + Duration::from_secs(25));
        assert!(
            matches!(&v, Verdict::Unhealthy(r) if r.contains("missed its watchdog") && r.contains("probation")),
            "{v:?}"
        );
        // And within the gate.
        let mut j = on_probation(t0);
        assert_eq!(
            j.observe(&sample("active", "running", 120, 0), t0),
            Verdict::Pending
        );
        let v = j.observe(&s, t0 + Duration::from_secs(1));
        assert!(
            matches!(&v, Verdict::Unhealthy(r) if r.contains("watchdog")),
            "{v:?}"
        );
    }

    #[test]
    fn zero_window_is_healthy_at_first_good_sample() {
        let t0 = Instant::now();
        let mut j = HealthJudge::new("a", None, t0, Duration::from_secs(5), Duration::ZERO);
        assert_eq!(
            j.observe(&sample("active", "running", 5, 0), t0),
            Verdict::Healthy
        );
    }
}
