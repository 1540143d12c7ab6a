//! The progress of the one pass that copies and verifies a package ([`super::take`]): the
//! percentage of the bytes read (every byte the verifier reads goes to the copy's writer too,
//! and the writer and the verifier's consumers are fed over bounded queues, so the bytes read
//! are the bytes copied and verified, give or take a few queued chunks).
//!
//! The total is the size of a regular file (`fstat`), or for a pipe the caller's advisory
//! `size` (never trusted: the percentage stays below 100 until the pass is done, however many
//! bytes come). Without a total there is no percentage. Reports are rate-limited: only when
//! the integer percentage changed, and not more often than a minimum interval
//! ([`crate::paths::Settings::progress_interval`], about ten a second); the end of the pass
//! ([`Meter::done`]) is always reported.

use std::time::{Duration, Instant};

/// What the pass is measured against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Total {
    /// The size of the regular file read.
    Exact(u64),
    /// The caller's advisory size of a pipe.
    Advisory(u64),
    /// Nothing known: no percentage.
    Unknown,
}

/// One report: percent of the pass (0–100), bytes copied so far, the total if known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Percent of the pass (100 only once it is done).
    pub percent: u32,
    /// Bytes copied and verified so far.
    pub bytes: u64,
    /// The total the percentage is of.
    pub total: Total,
}

/// Turns bytes copied into rate-limited percentage reports.
pub struct Meter<'a> {
    total: Total,
    min_interval: Duration,
    shown: Option<u32>,
    last: Option<Instant>,
    report: &'a mut dyn FnMut(Report),
}

impl std::fmt::Debug for Meter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meter")
            .field("total", &self.total)
            .field("shown", &self.shown)
            .finish()
    }
}

impl<'a> Meter<'a> {
    /// A meter against `total`, reporting to `report` at most every `min_interval`.
    pub fn new(total: Total, min_interval: Duration, report: &'a mut dyn FnMut(Report)) -> Self {
        Meter {
            total,
            min_interval,
            shown: None,
            last: None,
            report,
        }
    }

    /// The percentage of the pass at `bytes` (below 100: the pass is not done yet).
    pub fn percent(&self, bytes: u64) -> Option<u32> {
        let total = match self.total {
            Total::Exact(t) | Total::Advisory(t) => t,
            Total::Unknown => return None,
        };
        let pct = if total == 0 {
            0
        } else {
            u128::from(bytes) * 100 / u128::from(total)
        };
        Some(u32::try_from(pct.min(99)).unwrap_or(99))
    }

    /// `bytes` have been copied by `now`: reports when the percentage changed and the last
    /// report is at least the interval old (the first report is made at once).
    pub fn advance(&mut self, bytes: u64, now: Instant) {
        let Some(pct) = self.percent(bytes) else {
            return;
        };
        if self.shown.is_some_and(|s| pct <= s) {
            return;
        }
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < self.min_interval)
        {
            return;
        }
        self.emit(pct, bytes, now);
    }

    /// The pass is done after `bytes`: 100 %, whatever the rate (nothing without a total).
    pub fn done(&mut self, bytes: u64, now: Instant) {
        if self.total != Total::Unknown && self.shown != Some(100) {
            self.emit(100, bytes, now);
        }
    }

    fn emit(&mut self, percent: u32, bytes: u64, now: Instant) {
        self.shown = Some(percent);
        self.last = Some(now);
        (self.report)(Report {
            percent,
            bytes,
            total: self.total,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::PROGRESS_INTERVAL as MIN_INTERVAL;

    fn run(total: Total, steps: &[(u64, u64)], done: Option<u64>) -> Vec<(u32, u64)> {
        let t0 = Instant::now();
        let mut seen = Vec::new();
        let mut report = |r: Report| seen.push((r.percent, r.bytes));
        let mut m = Meter::new(total, MIN_INTERVAL, &mut report);
        for &(ms, bytes) in steps {
            m.advance(bytes, t0 + Duration::from_millis(ms));
        }
        if let Some(b) = done {
            m.done(b, t0 + Duration::from_secs(60));
        }
        seen
    }

    #[test]
    fn reports_follow_the_bytes_at_most_ten_a_second() {
        // 1000 bytes; a read every 50 ms of 50 bytes: 5 % per read, reported every other.
        let steps: Vec<(u64, u64)> = (0..=20).map(|i| (i * 50, i * 50)).collect();
        let seen = run(Total::Exact(1000), &steps, Some(1000));
        let pcts: Vec<u32> = seen.iter().map(|s| s.0).collect();
        assert_eq!(
            pcts,
            [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 99, 100],
            "{seen:?}"
        );
        // Every report names the bytes it is about (the end: all of them, once more).
        assert!(seen.windows(2).all(|w| w[0].1 <= w[1].1), "{seen:?}");
        assert_eq!(seen[seen.len() - 2].1, 1000);
    }

    #[test]
    fn only_a_changed_integer_percent_is_reported() {
        // 1 MB read in 1 kB steps a second apart: 1000 reads, 100 percents.
        let steps: Vec<(u64, u64)> = (0..1000).map(|i| (i * 1000, i * 1000)).collect();
        let seen = run(Total::Exact(1_000_000), &steps, None);
        assert_eq!(seen.len(), 100, "{seen:?}");
        assert!(seen.windows(2).all(|w| w[1].0 == w[0].0 + 1));
    }

    #[test]
    fn an_advisory_size_never_reaches_100_before_the_end() {
        // The pipe brings twice what its size said.
        let steps: Vec<(u64, u64)> = (0..=20).map(|i| (i * 1000, i * 100)).collect();
        let seen = run(Total::Advisory(1000), &steps, Some(2000));
        let (last, end) = (seen[seen.len() - 2], seen[seen.len() - 1]);
        assert_eq!(last.0, 99, "{seen:?}");
        assert_eq!(end, (100, 2000));
        assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "{seen:?}");
    }

    #[test]
    fn without_a_total_nothing_is_reported() {
        let seen = run(Total::Unknown, &[(0, 0), (500, 10), (900, 20)], Some(30));
        assert!(seen.is_empty(), "{seen:?}");
        // An empty file: 0 then done.
        assert_eq!(run(Total::Exact(0), &[(0, 0)], Some(0)), [(0, 0), (100, 0)]);
    }
}
