//! The phases of an install transaction, in the order they run, each with its own range of the
//! transaction's overall progress (so progress only moves forward: a phase never reports a
//! percentage below where the previous one ended).
//!
//! | phase | overall % | what |
//! | --- | --- | --- |
//! | `staging` | 0–2 | free space checked, the helper's root-only copy created |
//! | `verify` | 2–40 | the one pass that copies the package fd into staging and verifies the bytes it copies (structure, SHA-256, signature, control fields, policy, content); the percentage follows the bytes, then the version order |
//! | `lock` | 40–41 | taking the dpkg frontend lock |
//! | `repair` | 41–43 | `dpkg --configure -a` after an interrupted dpkg |
//! | `preflight` | 43–45 | dependencies (`apt-get --simulate`), free space |
//! | `rollback-source` | 45–50 | keeping the installed version for a rollback (`dpkg-repack`) |
//! | `install` | 50–80 | dpkg unpacks and configures |
//! | `restart` | 80–83 | restarting the package's units |
//! | `health` | 83–95 | the health gate |
//! | `rollback` | 95–99 | reinstalling the previous version |
//! | `finished` | 100 | the result is known |
//!
//! Copying and verifying are one pass over the package (the ranges were first made for a
//! `staging` that copied and a `verify` that read the copy again), so `verify` holds what was two steps: on a large
//! package it is, with dpkg's unpacking, where the time goes, and its span is the largest
//! but `install`'s. The helper reports it while `Install` has not returned yet (the caller
//! does not know the transaction id then; see the helper's `Install`).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A phase of an install transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// Copying the package into staging.
    Staging,
    /// Verifying the package.
    Verify,
    /// Taking the dpkg frontend lock.
    Lock,
    /// Repairing an interrupted dpkg.
    Repair,
    /// Dependencies and free space.
    Preflight,
    /// Keeping the installed version for a rollback.
    RollbackSource,
    /// dpkg runs.
    Install,
    /// Restarting units.
    Restart,
    /// The health gate.
    Health,
    /// Reinstalling the previous version.
    Rollback,
    /// The result is known.
    Finished,
}

impl Phase {
    /// Every phase, in order.
    pub const ALL: [Phase; 11] = [
        Phase::Staging,
        Phase::Verify,
        Phase::Lock,
        Phase::Repair,
        Phase::Preflight,
        Phase::RollbackSource,
        Phase::Install,
        Phase::Restart,
        Phase::Health,
        Phase::Rollback,
        Phase::Finished,
    ];

    /// The wire name, e.g. `"rollback-source"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Phase::Staging => "staging",
            Phase::Verify => "verify",
            Phase::Lock => "lock",
            Phase::Repair => "repair",
            Phase::Preflight => "preflight",
            Phase::RollbackSource => "rollback-source",
            Phase::Install => "install",
            Phase::Restart => "restart",
            Phase::Health => "health",
            Phase::Rollback => "rollback",
            Phase::Finished => "finished",
        }
    }

    /// Parses the wire name.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// The phase's range of overall progress, `(start, end)` in percent.
    pub const fn range(self) -> (u32, u32) {
        match self {
            Phase::Staging => (0, 2),
            Phase::Verify => (2, 40),
            Phase::Lock => (40, 41),
            Phase::Repair => (41, 43),
            Phase::Preflight => (43, 45),
            Phase::RollbackSource => (45, 50),
            Phase::Install => (50, 80),
            Phase::Restart => (80, 83),
            Phase::Health => (83, 95),
            Phase::Rollback => (95, 99),
            Phase::Finished => (100, 100),
        }
    }

    /// Overall progress at `within` percent (0–100, clamped) of this phase.
    pub const fn overall(self, within: u32) -> u32 {
        let (lo, hi) = self.range();
        let w = if within > 100 { 100 } else { within };
        lo + (hi - lo) * w / 100
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Phase {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Phase {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Phase::from_name(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown phase {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_ranges_only_move_forward() {
        let mut end = 0;
        for p in Phase::ALL {
            assert_eq!(Phase::from_name(p.as_str()), Some(p));
            let (lo, hi) = p.range();
            assert!(
                lo >= end,
                "{p} starts at {lo}, before the previous end {end}"
            );
            assert!(hi >= lo);
            assert_eq!(p.overall(0), lo);
            assert_eq!(p.overall(100), hi);
            assert_eq!(p.overall(1000), hi);
            end = hi;
        }
        assert_eq!(end, 100);
        assert_eq!(Phase::from_name("unpack"), None);
        assert_eq!(Phase::Install.overall(50), 65);
    }

    #[test]
    fn the_verifying_pass_has_a_meaningful_span() {
        // The one pass of copy and verification is a large share of a big package's time:
        // it spans more than a third of the overall progress, each of its percents moves the
        // overall progress, and only dpkg's unpacking spans more.
        let (lo, hi) = Phase::Verify.range();
        assert!(hi - lo >= 35, "verify spans {lo}–{hi}");
        assert!(Phase::Verify.overall(50) > Phase::Verify.overall(45));
        for p in Phase::ALL {
            if p != Phase::Verify && p != Phase::Install {
                let (a, b) = p.range();
                assert!(b - a < hi - lo, "{p} spans {a}–{b}");
            }
        }
        let (ia, ib) = Phase::Install.range();
        assert!(ib - ia <= hi - lo + 5);
    }

    #[test]
    fn phases_are_json_strings() {
        let j = serde_json::to_string(&Phase::RollbackSource).unwrap();
        assert_eq!(j, "\"rollback-source\"");
        assert_eq!(
            serde_json::from_str::<Phase>(&j).unwrap(),
            Phase::RollbackSource
        );
        assert!(serde_json::from_str::<Phase>("\"later\"").is_err());
    }
}
