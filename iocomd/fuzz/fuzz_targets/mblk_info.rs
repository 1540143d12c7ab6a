//! Fuzz the memory block info and remove-request parsers; accepted frames must round-trip.
#![no_main]

use iocomd::proto::frame::{Frame, FrameFlags};
use iocomd::proto::sysframe::{MblkInfo, RemoveMblk};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&count, rest)) = data.split_first() else {
        return;
    };
    let mut payload = vec![1u8];
    payload.extend_from_slice(rest);
    let frame = Frame {
        nr: 1,
        flags: FrameFlags::SYSTEM,
        mblk_id: u32::from(count),
        addr: 0,
        payload,
    };
    if let Ok(info) = MblkInfo::from_frame(&frame) {
        let f = info.to_frame(1).expect("accepted info encodes");
        assert_eq!(MblkInfo::from_frame(&f).expect("round trip"), info);
    }
    let mut remove = frame;
    if let Some(t) = remove.payload.first_mut() {
        *t = 3;
    }
    if let Ok(r) = RemoveMblk::from_frame(&remove) {
        let f = r.to_frame(1).expect("accepted remove encodes");
        assert_eq!(RemoveMblk::from_frame(&f).expect("round trip"), r);
    }
});
