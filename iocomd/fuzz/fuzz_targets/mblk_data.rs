//! Fuzz received data frames into a memory block: no panics, rejected frames change nothing,
//! accepted frames never grow the block.
#![no_main]

use iocomd::proto::mblk::{MBLK_DOWN, Mblk};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rx = Mblk::new("imp", 9, MBLK_DOWN, 300);
    rx.add_target(1, 8);
    let mut rest = data;
    while let [addr_lo, addr_hi, flags, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (payload, next) = tail.split_at(n);
        let before = rx.data().to_vec();
        let addr = usize::from(u16::from_le_bytes([*addr_lo, *addr_hi]));
        if rx.apply_frame(1, addr, *flags, payload).is_err() {
            assert_eq!(rx.data(), &before[..]);
        }
        assert_eq!(rx.size(), 300);
        rest = next;
    }
});
