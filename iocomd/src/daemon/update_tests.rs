//! Every transition of the update state machine, and every refusal leaving it unchanged.

use super::*;
use crate::spool::Spool;

fn writer(dir: &std::path::Path) -> Box<SpoolPipe> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    // The events of the writing thread are not looked at here.
    std::mem::forget(rx);
    let w = Spool::begin(dir, "t", 1 << 20, 0).unwrap();
    Box::new(SpoolPipe::start(w, 1, tx).unwrap())
}

fn files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

fn iocom(conn: u64) -> Origin {
    Origin::Iocom {
        conn: Some(conn),
        peer: crate::net::PeerAddr::Tcp("127.0.0.1:9".parse().unwrap()),
        user: Some("ctl".into()),
    }
}

#[test]
fn a_push_goes_through_every_phase() {
    let d = tempfile::tempdir().unwrap();
    let mut u = Update::default();
    assert_eq!((u.phase(), u.name()), (UpdState::Idle, "idle"));
    u.start(iocom(1), writer(d.path()), 1, Instant::now())
        .unwrap();
    assert_eq!(u.phase(), UpdState::Receiving);
    u.writer(1).unwrap().write(b"abc").unwrap();
    assert_eq!(u.bytes(), Some(3));
    assert!(u.writer(2).is_err());
    assert_eq!(u.received(2).unwrap_err(), Rejection::NotApplicable);
    let w = u.received(1).unwrap();
    w.abort();
    assert_eq!((u.phase(), u.bytes()), (UpdState::Verifying, Some(3)));
    assert_eq!(u.install_started("tx"), Err(Rejection::NotApplicable));
    u.spooled().unwrap();
    assert_eq!(u.spooled(), Err(Rejection::NotApplicable));
    assert_eq!(u.name(), "handing over");
    assert_eq!(u.finish(Some("x")), Err(Rejection::NotApplicable));
    // The helper's pass reports before `Install` answered: shown, the txid still unknown.
    u.progress("tx1", UpdState::Verifying, 30, "verifying".into())
        .unwrap();
    assert_eq!((u.txid(), u.name()), (None, "handing over"));
    u.install_started("tx1").unwrap();
    assert!(matches!(u, Update::Installing { percent: 30, .. }));
    assert_eq!(u.install_started("tx2"), Err(Rejection::NotApplicable));
    assert_eq!(u.txid(), Some("tx1"));
    u.progress("tx1", UpdState::HealthCheck, 80, "gate".into())
        .unwrap();
    assert_eq!(u.phase(), UpdState::HealthCheck);
    // Progress only moves forward.
    u.progress("tx1", UpdState::HealthCheck, 40, "gate".into())
        .unwrap();
    assert!(matches!(u, Update::Installing { percent: 80, .. }));
    assert_eq!(
        u.progress("tx9", UpdState::Installing, 90, String::new()),
        Err(Rejection::NotApplicable)
    );
    assert_eq!(u.finish(Some("tx9")), Err(Rejection::NotApplicable));
    assert_eq!(u.finish(None), Err(Rejection::NotApplicable));
    assert_eq!(u.detach(2), Err(Rejection::NotApplicable));
    u.detach(1).unwrap();
    assert_eq!(u.conn(), None);
    let origin = u.finish(Some("tx1")).unwrap();
    assert!(matches!(origin, Origin::Iocom { conn: None, .. }));
    assert_eq!(u.phase(), UpdState::Idle);
}

#[test]
fn a_second_update_is_refused_and_changes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let mut u = Update::default();
    u.start(iocom(1), writer(d.path()), 1, Instant::now())
        .unwrap();
    let (why, w2) = u
        .start(iocom(2), writer(d.path()), 2, Instant::now())
        .unwrap_err();
    assert_eq!(why, Rejection::Busy);
    w2.abort();
    assert_eq!(u.conn(), Some(1));
    assert_eq!(files(d.path()), 1);
    assert_eq!(
        u.resume("t".into(), UpdState::Installing, 3),
        Err(Rejection::Busy)
    );
    let fleet = Origin::Fleet { action: "7".into() };
    assert_eq!(u.submit(fleet, 10, 4), Err(Rejection::Busy));
    assert_eq!(u.push(), Some(1));
    // Receiving cannot be detached from (the transfer fails instead).
    assert_eq!(u.detach(1), Err(Rejection::NotApplicable));
    assert_eq!(u.finish_any(), Err(Rejection::NotApplicable));
    assert_eq!(u.phase(), UpdState::Receiving);
}

#[test]
fn a_failed_transfer_deletes_the_partial_file() {
    let d = tempfile::tempdir().unwrap();
    let mut u = Update::default();
    u.start(iocom(1), writer(d.path()), 1, Instant::now())
        .unwrap();
    u.writer(1).unwrap().write(b"12345").unwrap();
    assert_eq!(u.fail_receiving(2), Err(Rejection::NotApplicable));
    assert_eq!(files(d.path()), 1);
    assert_eq!(u.fail_receiving(1), Ok(5));
    assert_eq!(files(d.path()), 0);
    assert_eq!(u.phase(), UpdState::Idle);
    assert_eq!(u.finish(None), Err(Rejection::NotApplicable));
    assert_eq!(u.spooled(), Err(Rejection::NotApplicable));
    assert_eq!(u.fail_receiving(1), Err(Rejection::NotApplicable));
}

#[test]
fn a_spool_failure_ends_the_push_without_a_transaction() {
    let d = tempfile::tempdir().unwrap();
    let mut u = Update::default();
    u.start(iocom(4), writer(d.path()), 1, Instant::now())
        .unwrap();
    u.received(4).unwrap().abort();
    assert_eq!(u.finish(None).unwrap().conn(), Some(4));
    u.resume("tx".into(), UpdState::HealthCheck, 2).unwrap();
    assert_eq!(u.phase(), UpdState::HealthCheck);
    assert_eq!(u.origin(), Some(&Origin::Resumed));
    assert_eq!(u.finish(Some("tx")), Ok(Origin::Resumed));
}

#[test]
fn a_package_from_another_source_is_submitted_when_idle() {
    let mut u = Update::default();
    let fleet = Origin::Fleet {
        action: "42".into(),
    };
    u.submit(fleet.clone(), 1000, 1).unwrap();
    assert_eq!(
        (u.phase(), u.bytes(), u.conn()),
        (UpdState::Verifying, Some(1000), None)
    );
    assert_eq!(
        u.submit(fleet.clone(), 1, 2),
        Err(Rejection::Busy),
        "one update at a time across origins"
    );
    u.install_started("tx").unwrap();
    assert_eq!(u.finish_any(), Ok(fleet));
    assert!(fleet_describes_itself());
}

fn fleet_describes_itself() -> bool {
    Origin::Fleet {
        action: "42".into(),
    }
    .describe()
        == "fleet action 42"
        && iocom(1).describe() == "iocom 127.0.0.1:9 user ctl"
}

#[test]
fn a_transfer_that_is_too_slow_or_too_long_breaks_its_limits() {
    use crate::config::TransferLimits;
    use std::time::Duration;
    let d = tempfile::tempdir().unwrap();
    let limits = TransferLimits {
        max_time: Duration::from_secs(100),
        min_rate: 1000,
        rate_window: Duration::from_secs(10),
    };
    let t0 = Instant::now();
    let s = |n| t0 + Duration::from_secs(n);
    let mut u = Update::default();
    assert_eq!(u.check_limits(&limits, s(1000)), None, "idle has no limits");
    u.start(iocom(1), writer(d.path()), 1, t0).unwrap();
    // The first window is a grace period: nothing received in 10 s is still fine.
    assert_eq!(u.check_limits(&limits, s(5)), None);
    assert_eq!(u.check_limits(&limits, s(10)), None);
    // 15 000 bytes in the next 10 s: 1500 B/s.
    u.writer(1).unwrap().write(&[0; 15_000]).unwrap();
    assert_eq!(u.check_limits(&limits, s(20)), None);
    // 5 000 bytes in the next 10 s: 500 B/s, too slow.
    u.writer(1).unwrap().write(&[0; 5_000]).unwrap();
    let why = u.check_limits(&limits, s(30)).unwrap();
    assert!(why.contains("too slow: 500 B/s"), "{why}");
    assert_eq!(
        u.phase(),
        UpdState::Receiving,
        "the caller fails the transfer"
    );
    assert_eq!(u.fail_receiving(1), Ok(20_000));

    // Fast enough all along, but past the overall deadline.
    u.start(iocom(2), writer(d.path()), 2, t0).unwrap();
    for n in 1..=10 {
        u.writer(2).unwrap().write(&[0; 20_000]).unwrap();
        assert_eq!(u.check_limits(&limits, s(n * 10 - 1)), None, "at {n}");
    }
    let why = u.check_limits(&limits, s(100)).unwrap();
    assert!(why.contains("longer than 100 s"), "{why}");
    // No minimum rate: only the deadline.
    let lax = TransferLimits {
        min_rate: 0,
        ..limits
    };
    u.fail_receiving(2).unwrap();
    u.start(iocom(3), writer(d.path()), 3, t0).unwrap();
    assert_eq!(u.check_limits(&lax, s(20)), None);
    assert_eq!(u.check_limits(&lax, s(40)), None);
}

#[test]
fn a_fleet_action_holds_the_slot_across_its_files_and_releases_it() {
    let d = tempfile::tempdir().unwrap();
    let fleet = Origin::Fleet { action: "9".into() };
    let other = Origin::Fleet { action: "8".into() };
    let mut u = Update::default();
    assert_eq!(u.release(&fleet), Err(Rejection::NotApplicable));
    u.reserve(fleet.clone(), 5).unwrap();
    assert_eq!(
        (u.phase(), u.name(), u.push(), u.bytes()),
        (UpdState::Receiving, "reserved", Some(5), None)
    );
    // Nothing else gets the slot meanwhile: a push, another action, a resumed transaction.
    let (why, w) = u
        .start(iocom(1), writer(d.path()), 6, Instant::now())
        .unwrap_err();
    assert_eq!(why, Rejection::Busy);
    w.abort();
    assert_eq!(u.reserve(other.clone(), 6), Err(Rejection::Busy));
    assert_eq!(u.submit(other.clone(), 10, 6), Err(Rejection::Busy));
    assert_eq!(
        u.resume("t".into(), UpdState::Installing, 6),
        Err(Rejection::Busy)
    );
    assert_eq!(u.release(&other), Err(Rejection::NotApplicable));
    assert_eq!(u.finish(None), Err(Rejection::NotApplicable));
    assert_eq!(u.finish_any(), Err(Rejection::NotApplicable));
    // File 1: installed under the reservation, then back to it.
    u.submit(fleet.clone(), 100, 99).unwrap();
    assert_eq!(
        (u.push(), u.bytes()),
        (Some(5), Some(100)),
        "the reservation's number"
    );
    u.install_started("tx1").unwrap();
    assert_eq!(u.finish(Some("tx1")), Ok(fleet.clone()));
    assert_eq!(u.name(), "reserved");
    // File 2: the action ends (its reservation dropped) while it installs: Idle afterwards.
    u.submit(fleet.clone(), 200, 99).unwrap();
    assert_eq!(u.release(&other), Err(Rejection::NotApplicable));
    u.release(&fleet).unwrap();
    assert_eq!(
        u.release(&fleet),
        Err(Rejection::NotApplicable),
        "already released"
    );
    assert_eq!(u.finish_any(), Ok(fleet.clone()));
    assert_eq!(u.phase(), UpdState::Idle);
    // Released while reserved: Idle at once.
    u.reserve(fleet.clone(), 7).unwrap();
    u.release(&fleet).unwrap();
    assert!(matches!(u, Update::Idle));
    // A plain submit (not under a reservation) goes Idle when it finishes.
    u.submit(fleet.clone(), 1, 8).unwrap();
    assert_eq!(u.release(&fleet), Err(Rejection::NotApplicable));
    u.finish(None).unwrap();
    assert!(matches!(u, Update::Idle));
}

fn handing_over() -> Update {
    let mut u = Update::default();
    u.submit(Origin::Fleet { action: "a".into() }, 5 << 20, 1)
        .unwrap();
    assert_eq!((u.name(), u.txid()), ("handing over", None));
    u
}

fn shown(u: &Update) -> (UpdState, u8, &str, Option<&str>) {
    match u {
        Update::Installing {
            phase,
            percent,
            message,
            shown,
            ..
        } => (*phase, *percent, message.as_str(), shown.as_deref()),
        other => panic!("not installing: {}", other.name()),
    }
}

#[test]
fn progress_before_the_answer_is_shown_and_only_moves_forward() {
    let mut u = handing_over();
    for (pct, msg) in [
        (2, "0.0 of 5.0 MiB"),
        (12, "1.3 of 5.0 MiB"),
        (27, "3.3 of 5.0 MiB"),
    ] {
        u.progress("t1", UpdState::Verifying, pct, msg.into())
            .unwrap();
        assert_eq!(shown(&u), (UpdState::Verifying, pct, msg, Some("t1")));
    }
    // A report behind the one shown (percent or phase) is taken and changes nothing.
    u.progress("t1", UpdState::Verifying, 20, "late".into())
        .unwrap();
    u.progress("t1", UpdState::Installing, 50, "dpkg".into())
        .unwrap();
    u.progress("t1", UpdState::Verifying, 60, "back".into())
        .unwrap();
    assert_eq!(shown(&u), (UpdState::Installing, 50, "dpkg", Some("t1")));
    // Above 100 is 100.
    u.progress("t1", UpdState::Installing, 250, "x".into())
        .unwrap();
    assert_eq!(shown(&u).1, 100);
    // The txid comes only from the answer; then the shown progress stays.
    assert_eq!(u.txid(), None);
    u.install_started("t1").unwrap();
    assert_eq!(u.txid(), Some("t1"));
    assert_eq!(shown(&u), (UpdState::Installing, 100, "x", None));
}

#[test]
fn progress_of_another_transaction_is_refused_and_dropped_at_the_answer() {
    // Before the answer, one transaction is shown at a time.
    let mut u = handing_over();
    u.progress("other", UpdState::Installing, 60, "dpkg of another".into())
        .unwrap();
    assert_eq!(
        u.progress("t2", UpdState::Verifying, 5, "ours".into()),
        Err(Rejection::NotApplicable)
    );
    assert_eq!(shown(&u).3, Some("other"));
    // The answer names another transaction than the one shown: what was shown was not ours.
    u.install_started("t2").unwrap();
    assert_eq!(
        shown(&u),
        (
            UpdState::Verifying,
            0,
            "the installer took the package",
            None
        )
    );
    // Once the txid is known, only its progress is taken.
    assert_eq!(
        u.progress("other", UpdState::HealthCheck, 90, "x".into()),
        Err(Rejection::NotApplicable)
    );
    u.progress("t2", UpdState::Verifying, 10, "ours".into())
        .unwrap();
    assert_eq!(shown(&u).1, 10);
    // Not installing at all: refused.
    let mut idle = Update::default();
    assert_eq!(
        idle.progress("t2", UpdState::Verifying, 10, String::new()),
        Err(Rejection::NotApplicable)
    );
    // Another client's transaction ends ours with `busy` from `Install`: the update ends
    // whatever was shown (`finish` without a txid).
    let mut u = handing_over();
    u.progress("other", UpdState::Verifying, 20, "another".into())
        .unwrap();
    u.finish(None).unwrap();
    assert!(matches!(u, Update::Idle));
}
