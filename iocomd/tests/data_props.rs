//! Property tests of the data layer: compression and packed JSON round-trip, decoders never
//! panic on arbitrary input, memory blocks reject out-of-range frames and stay in sync.

use iocomd::proto::compress::{self, COMPRESSED, DELTA_ENCODED, SYNC_COMPLETE, compress};
use iocomd::proto::info::DeviceInfo;
use iocomd::proto::mblk::{MBLK_DOWN, Mblk, MblkError};
use iocomd::proto::pjson::{self, Json};
use proptest::prelude::*;

/// Bytes with many zeros and zero runs, like delta data.
fn sparse_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(prop_oneof![4 => Just(0u8), 1 => any::<u8>()], 0..max)
}

fn text() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-z_0-9*é-]{0,12}").unwrap()
}

fn json_leaf() -> impl Strategy<Value = Json> {
    prop_oneof![
        any::<i64>().prop_map(Json::Int),
        text()
            .prop_filter("non-empty", |s| !s.is_empty())
            .prop_map(Json::Str),
        Just(Json::Empty),
        any::<f32>()
            .prop_filter("normal, not 0/1", |f| f.is_normal() && *f != 1.0)
            .prop_map(Json::Float),
    ]
}

fn json_tree() -> impl Strategy<Value = Json> {
    json_leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Json::Array),
            proptest::collection::vec((text(), inner), 0..6).prop_map(Json::Object),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn compression_round_trips(src in sparse_bytes(900), old in proptest::collection::vec(any::<u8>(), 900), cap in 2usize..1400) {
        if let Some(c) = compress(&src, cap) {
            prop_assert!(c.payload.len() <= cap);
            prop_assert!(c.payload.len() < c.consumed);
            prop_assert!(c.consumed <= src.len());
            // Stored: the receiver's bytes become the input.
            let mut dst = old[..c.consumed].to_vec();
            prop_assert_eq!(compress::decode_into(&c.payload, COMPRESSED, &mut dst), Ok(c.consumed));
            prop_assert_eq!(&dst[..], &src[..c.consumed]);
            // Delta: old + delta(new, old) = new.
            let new: Vec<u8> = old[..src.len()].iter().zip(&src).map(|(o, d)| o.wrapping_add(*d)).collect();
            let mut dst = old[..c.consumed].to_vec();
            prop_assert_eq!(compress::decode_into(&c.payload, COMPRESSED | DELTA_ENCODED, &mut dst), Ok(c.consumed));
            prop_assert_eq!(&dst[..], &new[..c.consumed]);
        } else if src.len() < 4 {
            prop_assert!(compress(&src, usize::MAX).is_none());
        }
    }

    #[test]
    fn compression_covers_everything_with_room(src in sparse_bytes(600)) {
        if let Some(c) = compress(&src, 4096) {
            prop_assert_eq!(c.consumed, src.len());
        }
    }

    #[test]
    fn payload_decoder_never_panics(payload in proptest::collection::vec(any::<u8>(), 0..300), flags in any::<u8>(), size in 0usize..300) {
        let mut dst = vec![0x55u8; size];
        let before = dst.clone();
        match compress::decode_into(&payload, flags, &mut dst) {
            Ok(n) => prop_assert!(n <= size),
            Err(_) => prop_assert_eq!(dst, before, "rejected payloads change nothing"),
        }
    }

    #[test]
    fn packed_json_round_trips(members in proptest::collection::vec((text(), json_tree()), 0..8)) {
        let bytes = pjson::encode(&members, &[]);
        prop_assert_eq!(pjson::decode(&bytes), Ok(members));
    }

    #[test]
    fn packed_json_decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = pjson::decode(&data);
        let _ = DeviceInfo::decode(&data);
        // With a valid checksum the structure decoder itself is exercised.
        let mut framed = data.clone();
        framed.extend_from_slice(&iocomd::proto::crc::crc16(&data).to_le_bytes());
        let _ = pjson::decode(&framed);
        let _ = DeviceInfo::decode(&framed);
    }

    #[test]
    fn mblk_rejects_frames_beyond_the_block(size in 24usize..600, addr in 0usize..1200, payload in proptest::collection::vec(any::<u8>(), 0..700), flags in any::<u8>()) {
        let mut rx = Mblk::new("imp", 9, MBLK_DOWN, size);
        rx.add_target(2, 8);
        let before = rx.data().to_vec();
        let res = rx.apply_frame(2, addr, flags | SYNC_COMPLETE, &payload);
        if addr > size {
            let beyond = matches!(res, Err(MblkError::AddressBeyondBlock { .. }));
            prop_assert!(beyond);
        }
        let covered = if flags & COMPRESSED != 0 { compress::decoded_len(&payload).ok() } else { Some(payload.len()) };
        if addr <= size && covered.is_some_and(|n| n > size - addr) {
            let rejected = matches!(res, Err(MblkError::Payload { .. }));
            prop_assert!(rejected);
        }
        if res.is_err() {
            prop_assert_eq!(rx.data(), &before[..]);
        }
    }

    #[test]
    fn mblk_sync_keeps_receiver_equal(writes in proptest::collection::vec((0usize..500, sparse_bytes(80)), 1..30), frame in 40usize..1400) {
        let mut tx = Mblk::new("imp", 8, MBLK_DOWN, 500);
        let mut rx = Mblk::new("imp", 9, MBLK_DOWN, 500);
        tx.add_source(1, 9);
        rx.add_target(2, 8);
        for (i, (addr, bytes)) in writes.iter().enumerate() {
            let n = bytes.len().min(500 - addr);
            tx.write(*addr, &bytes[..n]).unwrap();
            if i % 3 == 0 {
                tx.synchronize();
                while let Some(f) = tx.next_frame(1, frame) {
                    rx.apply_frame(2, f.addr as usize, f.flags, &f.payload).unwrap();
                }
            }
        }
        tx.synchronize();
        while let Some(f) = tx.next_frame(1, frame) {
            rx.apply_frame(2, f.addr as usize, f.flags, &f.payload).unwrap();
        }
        prop_assert_eq!(rx.data(), tx.data());
    }
}
