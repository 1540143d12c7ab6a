//! The phases of an install transaction, in the order they run, each with its own range of the
//! transaction's overall progress (so progress only moves forward: a phase never reports a
//! percentage below where the previous one ended).
//!
//! | phase | overall % | what |
//! | --- | --- | --- |
//! | `staging` | 0–5 | copying the package fd into the helper's root-only staging |
//! | `verify` | 5–10 | structure, control fields, policy, content, signature |
//! | `lock` | 10–12 | taking the dpkg frontend lock |
//! | `repair` | 12–15 | `dpkg --configure -a` after an interrupted dpkg |
//! | `preflight` | 15–18 | dependencies (`apt-get --simulate`), free space |
//! | `rollback-source` | 18–25 | keeping the installed version for a rollback (`dpkg-repack`) |
//! | `install` | 25–70 | dpkg unpacks and configures |
//! | `restart` | 70–75 | restarting the package's units |
//! | `health` | 75–90 | the health gate |
//! | `rollback` | 90–99 | reinstalling the previous version |
//! | `finished` | 100 | the result is known |

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
            Phase::Staging => (0, 5),
            Phase::Verify => (5, 10),
            Phase::Lock => (10, 12),
            Phase::Repair => (12, 15),
            Phase::Preflight => (15, 18),
            Phase::RollbackSource => (18, 25),
            Phase::Install => (25, 70),
            Phase::Restart => (70, 75),
            Phase::Health => (75, 90),
            Phase::Rollback => (90, 99),
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
        assert_eq!(Phase::Install.overall(50), 47);
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
