//! Unit tests of [`super`] with literal bytes from the spec.

use super::*;
use crate::proto::frame::{Element, Framing, decode_element};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn frame(bytes: &[u8]) -> Frame {
    match decode_element(Framing::Socket, bytes, bytes[0], 16384)
        .unwrap()
        .unwrap()
        .0
    {
        Element::Frame(f) => f,
        Element::Ack(_) => panic!("ack"),
    }
}

#[test]
fn spec_info_frames_decode_and_reencode() {
    let b =
        hex("01 20 16 00 08 00 01 C0 03 40 0A 04 67 69 6E 61 07 63 61 66 65 6E 65 74 03 65 78 70");
    let info = MblkInfo::from_frame(&frame(&b)).unwrap();
    assert_eq!(
        info,
        MblkInfo {
            mblk_id: 8,
            device_name: "gina".into(),
            device_nr: 3,
            network_name: "cafenet".into(),
            mblk_name: "exp".into(),
            size: 64,
            flags: mblk_flags::UP | mblk_flags::BIDIRECTIONAL,
        }
    );
    assert_eq!(
        info.to_frame(1).unwrap().to_bytes(Framing::Socket).unwrap(),
        b
    );
    // `info`: two-byte size, static.
    let b = hex(
        "05 20 18 00 0C 00 01 C8 03 2C 01 42 04 67 69 6E 61 07 63 61 66 65 6E 65 74 04 69 6E 66 6F",
    );
    let info = MblkInfo::from_frame(&frame(&b)).unwrap();
    assert_eq!((info.size, info.flags, info.mblk_id), (300, 0x42, 12));
    assert_eq!(
        info.to_frame(5).unwrap().to_bytes(Framing::Socket).unwrap(),
        b
    );
    // Automatic number 8999 in a controller reply, two-byte device number.
    let b = hex(
        "01 20 17 00 0B 00 01 C2 27 23 30 39 04 67 69 6E 61 07 63 61 66 65 6E 65 74 03 69 6D 70",
    );
    let info = MblkInfo::from_frame(&frame(&b)).unwrap();
    assert_eq!((info.device_nr, info.flags, info.mblk_id), (8999, 0x39, 11));
    assert_eq!(
        info.to_frame(1).unwrap().to_bytes(Framing::Socket).unwrap(),
        b
    );
}

#[test]
fn two_byte_block_flags_and_missing_names() {
    let info = MblkInfo {
        mblk_id: 70000,
        device_name: String::new(),
        device_nr: 70000,
        network_name: String::new(),
        mblk_name: String::new(),
        size: 0x12345,
        flags: mblk_flags::FLOOR | mblk_flags::UP,
    };
    let f = info.to_frame(3).unwrap();
    assert_eq!(f.payload, hex("01 34 70 11 01 00 45 23 01 00 02 02"));
    assert_eq!(MblkInfo::from_frame(&f).unwrap(), info);
    // A network name with an empty device name travels behind the device-name flag as an
    // empty string; the decoder accepts that form, so the encoder must produce it (found by
    // fuzzing: the two used to disagree).
    let net_only = MblkInfo {
        network_name: "x".into(),
        ..info
    };
    let f = net_only.to_frame(3).unwrap();
    assert_eq!(MblkInfo::from_frame(&f).unwrap(), net_only);
}

#[test]
fn info_rejections() {
    let good = hex("01 C0 03 40 0A 04 67 69 6E 61 07 63 61 66 65 6E 65 74 03 65 78 70");
    let mk = |payload: Vec<u8>| Frame {
        nr: 1,
        flags: FrameFlags::SYSTEM,
        mblk_id: 8,
        addr: 0,
        payload,
    };
    assert!(MblkInfo::from_frame(&mk(good.clone())).is_ok());
    // Truncated anywhere.
    for cut in 1..good.len() {
        assert!(
            MblkInfo::from_frame(&mk(good[..cut].to_vec())).is_err(),
            "cut {cut}"
        );
    }
    // Trailing byte.
    let mut t = good.clone();
    t.push(0);
    assert_eq!(
        MblkInfo::from_frame(&mk(t)),
        Err(SysFrameError::TrailingBytes(1))
    );
    // Block name of 16 characters.
    let mut long = good[..18].to_vec();
    long.push(16);
    long.extend_from_slice(b"abcdefghijklmnop");
    assert!(matches!(
        MblkInfo::from_frame(&mk(long)),
        Err(SysFrameError::StringTooLong { max: 15, .. })
    ));
    // Not UTF-8.
    let mut nu = good[..18].to_vec();
    nu.extend_from_slice(&[1, 0xFF]);
    assert!(matches!(
        MblkInfo::from_frame(&mk(nu)),
        Err(SysFrameError::NotUtf8 { .. })
    ));
    // Data frame, wrong type.
    let mut data = mk(good.clone());
    data.flags = FrameFlags::NONE;
    assert_eq!(MblkInfo::from_frame(&data), Err(SysFrameError::NotSystem));
    let mut wrong = good;
    wrong[0] = 3;
    assert!(matches!(
        MblkInfo::from_frame(&mk(wrong)),
        Err(SysFrameError::WrongType { .. })
    ));
}

#[test]
fn intser_examples_from_the_spec() {
    for (v, bytes) in [
        (0i64, "00"),
        (7, "07"),
        (8, "10 01"),
        (9, "11 01"),
        (12, "14 01"),
        (300, "14 25"),
        (1392, "10 AE"),
        (-5, "0D"),
    ] {
        let mut out = Vec::new();
        write_intser(&mut out, v);
        assert_eq!(out, hex(bytes), "{v}");
        let mut r = Reader::new(&out);
        assert_eq!(read_intser(&mut r).unwrap(), v);
        r.finish().unwrap();
        assert_eq!(decode_intser(&out), Ok((v, out.len())));
    }
    for v in [i64::MAX, i64::MIN + 1, 1 << 40, -(1 << 33)] {
        let mut out = Vec::new();
        write_intser(&mut out, v);
        assert_eq!(read_intser(&mut Reader::new(&out)).unwrap(), v);
    }
    assert_eq!(
        read_intser(&mut Reader::new(&[0x90])),
        Err(SysFrameError::BadIntser)
    );
}

#[test]
fn spec_remove_request() {
    let b = hex("04 20 05 00 02 00 03 11 01 10 01");
    let f = frame(&b);
    let req = RemoveMblk::from_frame(&f).unwrap();
    assert_eq!(req.ids, vec![9, 8]);
    assert_eq!(
        req.to_frame(4).unwrap().to_bytes(Framing::Socket).unwrap(),
        b
    );
    assert!(matches!(
        SystemFrame::from_frame(&f),
        Ok(SystemFrame::RemoveMblk(_))
    ));
}

#[test]
fn remove_rejections() {
    let mk = |count: u32, payload: &str| Frame {
        nr: 1,
        flags: FrameFlags::SYSTEM,
        mblk_id: count,
        addr: 0,
        payload: hex(payload),
    };
    assert!(matches!(
        RemoveMblk::from_frame(&mk(0, "03")),
        Err(SysFrameError::BadRemoveCount { .. })
    ));
    assert!(matches!(
        RemoveMblk::from_frame(&mk(17, "03")),
        Err(SysFrameError::BadRemoveCount { .. })
    ));
    assert!(matches!(
        RemoveMblk::from_frame(&mk(2, "03 11 01")),
        Err(SysFrameError::Truncated { .. })
    ));
    assert_eq!(
        RemoveMblk::from_frame(&mk(1, "03 0D")),
        Err(SysFrameError::BadRemoveId(-5))
    );
    assert_eq!(
        RemoveMblk::from_frame(&mk(1, "03 11 01 00")),
        Err(SysFrameError::TrailingBytes(1))
    );
    assert!(RemoveMblk { ids: vec![] }.to_frame(1).is_err());
    assert!(RemoveMblk { ids: vec![8; 17] }.to_frame(1).is_err());
}

#[test]
fn unknown_system_frame_types_are_reported_not_rejected() {
    let f = Frame {
        nr: 1,
        flags: FrameFlags::SYSTEM,
        mblk_id: 0,
        addr: 0,
        payload: vec![9, 1, 2],
    };
    assert_eq!(SystemFrame::from_frame(&f), Ok(SystemFrame::Unknown(9)));
    let empty = Frame {
        payload: vec![],
        ..f
    };
    assert_eq!(
        SystemFrame::from_frame(&empty),
        Err(SysFrameError::NotSystem)
    );
}

#[test]
fn id_allocator_stays_in_range_and_reuses() {
    let mut a = MblkIdAllocator::new();
    assert_eq!(a.allocate(), Some(8));
    assert_eq!(a.allocate(), Some(9));
    assert_eq!(a.allocate(), Some(10));
    a.release(9);
    a.release(8);
    a.release(5000); // never handed out
    assert_eq!(a.allocate(), Some(8));
    assert_eq!(a.allocate(), Some(9));
    assert_eq!(a.allocate(), Some(11));
    let mut n = 4;
    while a.allocate().is_some() {
        n += 1;
    }
    assert_eq!(n, (MAX_MBLK_ID - MIN_MBLK_ID + 1) as usize);
}
