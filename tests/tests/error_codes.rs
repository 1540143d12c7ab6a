//! The helper's stable error codes as iocomd knows them (its copy decodes the helper's D-Bus
//! errors and results) are exactly the helper's own table.

use install_helper::error::ErrorCode;
use iocomd::daemon::helper::HELPER_CODES;

#[test]
fn iocomd_knows_every_helper_code_by_name_and_number() {
    let helper: Vec<(&str, u16)> = ErrorCode::ALL
        .iter()
        .map(|c| (c.as_str(), c.number()))
        .collect();
    assert_eq!(HELPER_CODES, helper.as_slice());
}

#[test]
fn every_helper_code_has_a_tod_err_and_an_iocomctl_class() {
    for c in ErrorCode::ALL {
        let t = iocomd::status::tod_err_for(c.number());
        if c == ErrorCode::Ok {
            assert_eq!(t, iocomd::status::tod_err::COMPLETED);
            continue;
        }
        assert_ne!(t, iocomd::status::tod_err::COMPLETED, "{c}");
        let class = iocomd::ctl::classify(c.as_str(), Some(c.number()));
        assert!(class.is_some(), "{c} has no failure class");
    }
}
