//! How often the status is written into the endpoints (and so sent to every controller).
//!
//! A change of state, result, message or any other field is published at once. While a
//! transfer runs, only `upd_bytes` moves, and it would move after every batch of received
//! frames: each time a status write, a snapshot of the `exp` block and a frame to every
//! connection, which between our own peers (16 KiB frames) costs about as much as the data
//! frames themselves. A change of `upd_bytes` alone is therefore published at most every
//! [`BYTES_EVERY`]; the core loop's tick (500 ms) flushes again, so the last count of a
//! stalled transfer still goes out.

use crate::status::UpdateStatus;
use std::time::{Duration, Instant};

/// Least time between two publications that differ only in `upd_bytes` (iocomctl shows
/// progress at the same pace).
pub(super) const BYTES_EVERY: Duration = Duration::from_millis(100);

/// The status last written into the endpoints, and when.
#[derive(Debug, Clone)]
pub(super) struct Published {
    pub(super) status: UpdateStatus,
    pub(super) at: Instant,
}

/// Whether `status` must be published now, given the last publication (`None`: nothing yet,
/// or a new connection needs the status).
pub(super) fn due(last: Option<&Published>, status: &UpdateStatus, now: Instant) -> bool {
    let Some(last) = last else {
        return true;
    };
    if last.status == *status {
        return false;
    }
    let only_bytes = last.status.bytes != status.bytes
        && UpdateStatus {
            bytes: status.bytes,
            ..last.status.clone()
        } == *status;
    !only_bytes || now.saturating_duration_since(last.at) >= BYTES_EVERY
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::UpdState;

    fn receiving(bytes: u32) -> UpdateStatus {
        UpdateStatus {
            state: UpdState::Receiving,
            bytes,
            msg: "receiving".into(),
            ..UpdateStatus::default()
        }
    }

    #[test]
    fn nothing_published_yet_is_due_and_an_unchanged_status_is_not() {
        let t0 = Instant::now();
        assert!(due(None, &receiving(0), t0));
        let last = Published {
            status: receiving(5),
            at: t0,
        };
        assert!(!due(
            Some(&last),
            &receiving(5),
            t0 + Duration::from_secs(60)
        ));
    }

    #[test]
    fn a_byte_count_alone_waits_for_the_cadence() {
        let t0 = Instant::now();
        let last = Published {
            status: receiving(1000),
            at: t0,
        };
        assert!(!due(Some(&last), &receiving(70_000), t0));
        assert!(!due(
            Some(&last),
            &receiving(70_000),
            t0 + BYTES_EVERY - Duration::from_millis(1)
        ));
        assert!(due(Some(&last), &receiving(70_000), t0 + BYTES_EVERY));
    }

    #[test]
    fn any_other_change_goes_out_at_once_even_with_new_bytes() {
        let t0 = Instant::now();
        let last = Published {
            status: receiving(1000),
            at: t0,
        };
        let spooling = UpdateStatus {
            state: UpdState::Verifying,
            msg: "checking the received file".into(),
            ..receiving(2000)
        };
        assert!(due(Some(&last), &spooling, t0));
        let refused = UpdateStatus {
            auth_fail: 1,
            ..receiving(1000)
        };
        assert!(due(Some(&last), &refused, t0));
    }
}
