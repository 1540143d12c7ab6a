//! Fuzz the authentication frame parser; accepted frames must round-trip.
#![no_main]

use iocomd::proto::auth::AuthFrame;
use iocomd::proto::frame::{Frame, FrameFlags};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut payload = vec![2u8];
    payload.extend_from_slice(data);
    let frame = Frame {
        nr: 0,
        flags: FrameFlags::SYSTEM,
        mblk_id: 1392,
        addr: 0,
        payload,
    };
    if let Ok(a) = AuthFrame::from_frame(&frame) {
        let f = a.to_frame().expect("accepted frames encode");
        assert_eq!(AuthFrame::from_frame(&f).expect("round trip"), a);
    }
});
