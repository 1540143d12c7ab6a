//! Tests of the helper's signals and `Install` answers on the update side.

use super::*;
use crate::daemon::update::{Origin, Update};
use install_api::Phase;

fn updates(dir: &std::path::Path) -> Updates {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    std::mem::forget(rx);
    Updates::new(crate::config::Settings::demo(dir), None, tx)
}

fn progress(txid: &str, phase: Phase, percent: u32) -> HelperSignal {
    HelperSignal::Progress {
        txid: txid.into(),
        phase: Some(phase),
        percent,
        message: format!("{phase} {percent}"),
    }
}

#[test]
fn the_verifying_pass_is_published_before_install_answers() {
    let d = tempfile::tempdir().unwrap();
    let mut u = updates(d.path());
    u.machine
        .submit(Origin::Fleet { action: "1".into() }, 5 << 20, 1)
        .unwrap();
    let push = u.machine.push().unwrap();
    for pct in [2, 9, 23, 40] {
        assert_eq!(u.on_helper(progress("t1", Phase::Verify, pct)), None);
        let st = u.status(0);
        assert_eq!(
            (st.state, u32::from(st.progress)),
            (UpdState::Verifying, pct)
        );
        assert_eq!(st.msg, format!("verify {pct}"));
    }
    // Another transaction's progress while t1 is shown changes nothing.
    u.on_helper(progress("t9", Phase::Install, 60));
    assert_eq!(u.status(0).progress, 40);
    // `Install` answers t1: the update goes on from where the pass ended.
    assert_eq!(u.on_install_call(push, Ok("t1".into())), None);
    assert!(matches!(u.machine, Update::Installing { percent: 40, .. }));
    u.on_helper(progress("t1", Phase::Install, 55));
    let st = u.status(0);
    assert_eq!((st.state, st.progress), (UpdState::Installing, 55));
    u.on_helper(progress("t9", Phase::Health, 90));
    assert_eq!(u.status(0).progress, 55);
}

#[test]
fn a_busy_answer_ends_an_update_that_showed_another_transaction() {
    let d = tempfile::tempdir().unwrap();
    let mut u = updates(d.path());
    u.machine
        .submit(Origin::Fleet { action: "1".into() }, 5 << 20, 1)
        .unwrap();
    let push = u.machine.push().unwrap();
    u.on_helper(progress("theirs", Phase::Verify, 12));
    assert_eq!(u.status(0).progress, 12);
    let busy = HelperError::Call {
        method: "Install",
        source: zbus::Error::MethodError(
            zbus::names::ErrorName::try_from("org.iocom.InstallHelper1.Error.Busy")
                .unwrap()
                .into(),
            Some("busy: transaction theirs is running (verify)".into()),
            zbus::Message::method_call("/", "Install")
                .build(&())
                .unwrap(),
        ),
    };
    assert!(u.on_install_call(push, Err(busy)).is_some());
    let st = u.status(0);
    assert_eq!((st.state, st.code.as_str()), (UpdState::Idle, "busy"));
}
