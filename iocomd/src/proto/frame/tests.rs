//! Unit tests of [`super`] with literal bytes from the spec.

use super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn decode_all(framing: Framing, bytes: &[u8]) -> Vec<Element> {
    let mut d = FrameDecoder::new(framing, 16384);
    d.push(bytes);
    let mut v = Vec::new();
    while let Some((e, _)) = d.next_element().unwrap() {
        v.push(e);
    }
    assert_eq!(d.buffered(), 0);
    v
}

#[test]
fn frame_numbers_wrap_from_200_to_1() {
    assert_eq!(next_frame_nr(0), 1);
    assert_eq!(next_frame_nr(199), 200);
    assert_eq!(next_frame_nr(200), 1);
}

#[test]
fn spec_data_frame_decodes_and_reencodes() {
    // Spec 6.2: controller's first data frame `imp` key frame.
    let b = hex("06 12 02 00 09 00 00 30");
    let mut d = FrameDecoder::new(Framing::Socket, 1392);
    // Skip to frame 6 by decoding with a custom expected number.
    let (el, len) = decode_element(Framing::Socket, &b, 6, 1392)
        .unwrap()
        .unwrap();
    assert_eq!(len, 8);
    let Element::Frame(f) = el else {
        panic!("not a frame")
    };
    assert_eq!(f.nr, 6);
    assert!(f.flags.compressed() && f.flags.sync_complete() && !f.flags.delta());
    assert_eq!((f.mblk_id, f.addr), (9, 0));
    assert_eq!(f.payload, vec![0x00, 0x30]);
    assert_eq!(f.to_bytes(Framing::Socket).unwrap(), b);
    // A fresh decoder expects frame 0, so frame 6 is rejected.
    d.push(&b);
    assert_eq!(
        d.next_element(),
        Err(FrameError::FrameNr {
            expected: 0,
            got: 6
        })
    );
    // ... and stays failed.
    assert!(d.next_element().is_err());
}

#[test]
fn spec_auth_frame_with_two_byte_id() {
    let b = hex("00 28 12 00 70 05 00 02 00 05 66 72 61 6E 6B 00 07 63 61 66 65 6E 65 74 00");
    let els = decode_all(Framing::Socket, &b);
    let Element::Frame(f) = &els[0] else { panic!() };
    assert!(f.flags.system());
    assert_eq!(f.mblk_id, 1392);
    assert_eq!(f.payload.len(), 18);
    assert_eq!(f.raw_flags(), (0x28, None));
    assert_eq!(f.to_bytes(Framing::Socket).unwrap(), b);
}

#[test]
fn two_byte_address_and_four_byte_fields() {
    let f = Frame {
        nr: 11,
        flags: FrameFlags::data(false, false, true),
        mblk_id: 14,
        addr: 267,
        payload: vec![1, 2, 3],
    };
    assert_eq!(
        f.to_bytes(Framing::Socket).unwrap(),
        hex("0B 14 03 00 0E 0B 01 01 02 03")
    );
    let f4 = Frame {
        nr: 1,
        flags: FrameFlags::NONE,
        mblk_id: 0x12345,
        addr: 0x10000,
        payload: vec![],
    };
    let b = f4.to_bytes(Framing::Socket).unwrap();
    assert_eq!(b, hex("01 80 00 00 83 45 23 01 00 00 00 01 00"));
    assert_eq!(f4.header_len(Framing::Socket), 13);
    let f5 = Frame {
        addr: 300,
        ..f4.clone()
    };
    // Four-byte id, two-byte address: the two-byte bit sits in the main flags.
    assert_eq!(
        f5.to_bytes(Framing::Socket).unwrap(),
        hex("01 84 00 00 82 45 23 01 00 2C 01")
    );
}

#[test]
fn serial_frame_crc_matches_spec() {
    // Spec 3.8 / 6.6: controller's first serial data frame, CRC 0x6A58.
    let b = hex("06 58 6A 12 02 09 00 00 30");
    let f = Frame {
        nr: 6,
        flags: FrameFlags::data(false, true, true),
        mblk_id: 9,
        addr: 0,
        payload: vec![0, 0x30],
    };
    assert_eq!(f.to_bytes(Framing::Serial).unwrap(), b);
    let auth = hex("00 55 30 20 12 60 00 02 00 05 66 72 61 6E 6B 00 07 63 61 66 65 6E 65 74 00");
    let els = decode_all(Framing::Serial, &auth);
    let Element::Frame(af) = &els[0] else {
        panic!()
    };
    assert_eq!(af.mblk_id, 96);
    assert_eq!(af.to_bytes(Framing::Serial).unwrap(), auth);
    let mut bad = auth.clone();
    bad[10] ^= 1;
    assert!(matches!(
        decode_element(Framing::Serial, &bad, 0, 96),
        Err(FrameError::Crc { got: 0x3055, .. })
    ));
}

#[test]
fn acks_encode_and_decode() {
    let mut v = Vec::new();
    encode_ack(Framing::Socket, 506, &mut v);
    assert_eq!(v, hex("FF FA 01 00"));
    v.clear();
    encode_ack(Framing::Serial, 184, &mut v);
    assert_eq!(v, hex("FF B8 00"));
    assert_eq!(
        decode_all(Framing::Socket, &hex("FF FA 01 00")),
        vec![Element::Ack(506)]
    );
    assert_eq!(
        decode_all(Framing::Serial, &hex("FF 31 01")),
        vec![Element::Ack(0x131)]
    );
}

#[test]
fn byte_by_byte_feeding_gives_the_same_elements() {
    let stream = hex(
        "FF 00 00 00 00 28 12 00 70 05 00 02 00 05 66 72 61 6E 6B 00 07 63 61 66 65 6E 65 74 00 \
         01 12 02 00 09 00 00 30 FF FA 01 00",
    );
    let whole = decode_all(Framing::Socket, &stream);
    let mut d = FrameDecoder::new(Framing::Socket, 1392);
    let mut got = Vec::new();
    for b in &stream {
        d.push(std::slice::from_ref(b));
        while let Some((e, _)) = d.next_element().unwrap() {
            got.push(e);
        }
    }
    assert_eq!(got, whole);
    assert_eq!(got.len(), 4);
}

#[test]
fn decoding_out_of_the_input_gives_the_same_elements_for_every_split() {
    let stream = hex(
        "FF 00 00 00 00 28 12 00 70 05 00 02 00 05 66 72 61 6E 6B 00 07 63 61 66 65 6E 65 74 00 \
         01 12 02 00 09 00 00 30 FF FA 01 00",
    );
    let whole = decode_all(Framing::Socket, &stream);
    // Every cut into two reads, and the whole stream in one: partial elements are buffered,
    // complete ones are decoded from the input, and the results never differ.
    for cut in 0..=stream.len() {
        let mut d = FrameDecoder::new(Framing::Socket, 1392);
        let mut got = Vec::new();
        let (a, b) = stream.split_at(cut);
        for part in [a, b] {
            let mut input = part;
            while let Some((e, _)) = d.next_from(&mut input).unwrap() {
                got.push(e);
            }
            assert!(input.is_empty(), "input left over at cut {cut}");
        }
        assert_eq!(got, whole, "cut at {cut}");
        assert_eq!(d.buffered(), 0);
    }
}

#[test]
fn decoding_out_of_the_input_keeps_a_failure() {
    // Frame number 5 where 0 is expected, after one good ACK.
    let b = hex("FF 01 00 00 05 00 00 00 08 00");
    let mut d = FrameDecoder::new(Framing::Socket, 1392);
    let mut input = &b[..];
    assert_eq!(d.next_from(&mut input), Ok(Some((Element::Ack(1), 4))));
    let err = FrameError::FrameNr {
        expected: 0,
        got: 5,
    };
    assert_eq!(d.next_from(&mut input), Err(err.clone()));
    let mut more = &b[..];
    assert_eq!(d.next_from(&mut more), Err(err));
}

#[test]
fn oversize_frame_rejected_from_header_alone() {
    // Header says 2000 payload bytes; only the header is present.
    let b = hex("00 20 D0 07 08 00");
    assert_eq!(
        decode_element(Framing::Socket, &b, 0, 1392),
        Err(FrameError::TooLarge {
            len: 2006,
            max: 1392
        })
    );
    // Exactly at the limit is fine (and incomplete).
    let ok = hex("00 20 6A 05 08 00");
    assert_eq!(decode_element(Framing::Socket, &ok, 0, 1392), Ok(None));
}

#[test]
fn extra_flags_without_the_no_zero_bit_rejected() {
    let b = hex("00 80 00 00 02 45 23 01 00 00");
    assert_eq!(
        decode_element(Framing::Socket, &b, 0, 1392),
        Err(FrameError::BadExtraFlags(0x02))
    );
}

#[test]
fn non_shortest_encoding_is_accepted() {
    // Id 9 written with two bytes: the C receiver accepts it, so do we.
    let b = hex("00 08 00 00 09 00 00");
    let (el, len) = decode_element(Framing::Socket, &b, 0, 1392)
        .unwrap()
        .unwrap();
    assert_eq!(len, 7);
    assert!(matches!(el, Element::Frame(Frame { mblk_id: 9, .. })));
}

#[test]
fn encode_rejections() {
    let f = Frame {
        nr: 201,
        flags: FrameFlags::NONE,
        mblk_id: 8,
        addr: 0,
        payload: vec![],
    };
    assert_eq!(
        f.to_bytes(Framing::Socket),
        Err(EncodeError::BadFrameNr(201))
    );
    let big = Frame {
        nr: 1,
        payload: vec![0; 256],
        ..f
    };
    assert!(matches!(
        big.to_bytes(Framing::Serial),
        Err(EncodeError::PayloadTooLong { len: 256, .. })
    ));
}
