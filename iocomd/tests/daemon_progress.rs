//! The device's published progress while the real install helper copies and verifies a pushed
//! package of several MiB, as iocomctl renders it (`iocomd::ctl::push`'s progress events):
//! verifying with percentages that pass through the verify phase's range (the helper reports
//! its pass before `Install` answers), in order, then installing and the result. The push
//! is spooled first (`spool.stream_to_helper = false`): a streamed push has the helper's pass
//! run during the transfer, whose progress iocomctl shows instead.

mod daemon_support;

use daemon_support::{Daemon, build_package};
use install_api::Phase;
use iocomd::ctl::{
    self, ConnectOptions, Progress, PushOptions, Target, Timeouts, Transport, UpdState,
};
use std::time::Duration;

/// Big enough that the helper's pass reports many percentages, small enough for a quick test.
/// The pass of 48 MiB takes well under 100 ms on a quiet machine, so the helper reports at
/// every percent here (`--progress-interval-ms 0`) instead of ten times a second.
const PAYLOAD: usize = 48 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_package_shows_intermediate_verifying_percentages_in_order() {
    let d = Daemon::start_with_helper_args(&["--progress-interval-ms", "0"], |s| {
        s.spool.stream_to_helper = false
    })
    .await;
    let pkg = build_package(&d.env, "iocom-test-progress", "1.0", PAYLOAD);
    let target = Target {
        device: format!("gina3.{}", d.settings.device.network)
            .parse()
            .unwrap(),
        transport: Transport::Connect(d.addr.to_string()),
    };
    let options = ConnectOptions {
        timeouts: Timeouts {
            connect: Duration::from_secs(30),
            ready: Duration::from_secs(60),
            result: Duration::from_secs(120),
            ..Timeouts::default()
        },
        ..ConnectOptions::default()
    };
    let opts = PushOptions::new(target, options, pkg);
    let mut shown: Vec<(UpdState, Option<u8>)> = Vec::new();
    let out = ctl::push(&opts, |p| {
        if let Progress::Device { state, percent } = p {
            shown.push((state, percent));
        }
    })
    .await
    .unwrap();
    assert_eq!(out.report.code.as_deref(), Some("ok"), "{:?}", out.report);
    // In order: the state never goes back before the result, the percentage never falls.
    let running: Vec<(UpdState, u8)> = shown
        .iter()
        .filter(|(s, _)| *s != UpdState::Idle)
        .map(|(s, p)| (*s, p.unwrap_or(0)))
        .collect();
    assert!(
        running
            .windows(2)
            .all(|w| w[0].0 as u8 <= w[1].0 as u8 && w[0].1 <= w[1].1),
        "{shown:?}"
    );
    // Intermediate percentages of the verifying pass (the helper reports each percent; the
    // device may publish several of them at once, so at least one shows; before, none), then
    // installing.
    let (lo, hi) = Phase::Verify.range();
    let verifying = running
        .iter()
        .filter(|(s, p)| *s == UpdState::Verifying && u32::from(*p) > lo && u32::from(*p) < hi)
        .count();
    assert!(verifying >= 1, "{shown:?}");
    assert!(
        running.iter().any(|(s, _)| *s == UpdState::Installing),
        "{shown:?}"
    );
    d.stop().await;
}
