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
    match decode_element(Framing::Socket, bytes, 0, 16384)
        .unwrap()
        .unwrap()
        .0
    {
        Element::Frame(f) => f,
        Element::Ack(_) => panic!("ack"),
    }
}

#[test]
fn spec_controller_and_device_auth_frames() {
    let b = hex("00 28 12 00 70 05 00 02 00 05 66 72 61 6E 6B 00 07 63 61 66 65 6E 65 74 00");
    let a = AuthFrame::from_frame(&frame(&b)).unwrap();
    assert_eq!(a.frame_size, 1392);
    assert_eq!(a.flags, 0);
    assert_eq!(a.user_name, "frank");
    assert_eq!(a.device_nr, 0);
    assert_eq!(a.unique_id, None);
    assert_eq!(a.network_name, "cafenet");
    assert_eq!(a.password, "");
    assert_eq!(a.to_frame().unwrap().to_bytes(Framing::Socket).unwrap(), b);

    let b = hex(
        "00 28 18 00 70 05 00 02 10 04 67 69 6E 61 03 07 63 61 66 65 6E 65 74 07 64 65 76 70 61 73 73",
    );
    let a = AuthFrame::from_frame(&frame(&b)).unwrap();
    assert!(a.connect_up());
    assert_eq!(a.account_name(), "gina3");
    assert_eq!(a.password, "devpass");
    assert!(!format!("{a:?}").contains("devpass"));
    assert_eq!(a.to_frame().unwrap().to_bytes(Framing::Socket).unwrap(), b);
}

#[test]
fn unique_id_and_wide_device_numbers() {
    let a = AuthFrame {
        frame_size: 464,
        flags: auth_flags::CONNECT_UP,
        user_name: "gina".into(),
        device_nr: 0,
        unique_id: Some([7; 12]),
        network_name: "*".into(),
        password: String::new(),
    };
    let f = a.to_frame().unwrap();
    assert_eq!(f.payload[1], 0x12);
    assert_eq!(AuthFrame::from_frame(&f).unwrap(), a);
    let wide = AuthFrame {
        device_nr: 70000,
        unique_id: None,
        ..a.clone()
    };
    let f = wide.to_frame().unwrap();
    assert_eq!(f.payload[1], 0x50);
    assert_eq!(AuthFrame::from_frame(&f).unwrap(), wide);
    let mid = AuthFrame {
        device_nr: 300,
        unique_id: None,
        ..a
    };
    assert_eq!(mid.to_frame().unwrap().payload[1], 0x30);
}

#[test]
fn auth_rejections() {
    let good = hex("02 10 04 67 69 6E 61 03 07 63 61 66 65 6E 65 74 07 64 65 76 70 61 73 73");
    let mk = |payload: Vec<u8>| Frame {
        nr: 0,
        flags: FrameFlags::SYSTEM,
        mblk_id: 1392,
        addr: 0,
        payload,
    };
    assert!(AuthFrame::from_frame(&mk(good.clone())).is_ok());
    for cut in 0..good.len() {
        assert!(
            AuthFrame::from_frame(&mk(good[..cut].to_vec())).is_err(),
            "cut {cut}"
        );
    }
    let mut extra = good.clone();
    extra.push(1);
    assert_eq!(
        AuthFrame::from_frame(&mk(extra)),
        Err(SysFrameError::TrailingBytes(1))
    );
    // User name of 26 characters.
    let mut long = vec![2, 0, 26];
    long.extend_from_slice(&[b'a'; 26]);
    long.extend_from_slice(&[0, 0, 0]);
    assert!(matches!(
        AuthFrame::from_frame(&mk(long)),
        Err(SysFrameError::StringTooLong {
            field: "user name",
            max: 25,
            ..
        })
    ));
    // Network name of 24 characters.
    let mut net = vec![2, 0, 1, b'a', 0, 24];
    net.extend_from_slice(&[b'n'; 24]);
    net.push(0);
    assert!(matches!(
        AuthFrame::from_frame(&mk(net)),
        Err(SysFrameError::StringTooLong {
            field: "network name",
            ..
        })
    ));
    // Unique id flag but too few bytes.
    assert!(AuthFrame::from_frame(&mk(hex("02 02 01 61 00 01 02 03"))).is_err());
    // Encoding refuses what a C peer would refuse.
    let a = AuthFrame {
        frame_size: 1392,
        flags: 0,
        user_name: "u".repeat(26),
        device_nr: 1,
        unique_id: None,
        network_name: "n".into(),
        password: String::new(),
    };
    assert!(a.to_frame().is_err());
}

#[test]
fn wire_device_numbers() {
    assert_eq!(wire_device_nr(3), 3);
    assert_eq!(wire_device_nr(8999), 8999);
    assert_eq!(wire_device_nr(9000), 0);
    assert_eq!(wire_device_nr(9001), 0);
    assert!(is_auto_network("*") && is_auto_network("") && !is_auto_network("cafenet"));
    assert_eq!(device_side_device_nr(8999), 9000);
    assert_eq!(device_side_device_nr(3), 3);
    assert_eq!(device_side_device_nr(9001), 9001);
}

#[test]
fn automatic_numbers_are_stable_per_unique_id() {
    let mut n = AutoDeviceNumbers::new();
    let a = [1u8; 12];
    let b = [2u8; 12];
    assert_eq!(n.assign(Some(&a)), Some(9001));
    assert_eq!(n.assign(Some(&b)), Some(9002));
    assert_eq!(n.assign(Some(&a)), Some(9001));
    assert_eq!(n.assign(None), Some(40001));
    assert_eq!(n.assign(None), Some(40002));
    let saved: Vec<_> = n.assignments().map(|(k, v)| (*k, v)).collect();
    let mut m = AutoDeviceNumbers::with_assignments(saved);
    assert_eq!(m.assign(Some(&b)), Some(9002));
    assert_eq!(m.assign(Some(&[3; 12])), Some(9003));
    // Out-of-range persisted numbers are dropped.
    let mut z = AutoDeviceNumbers::with_assignments([([4; 12], 5)]);
    assert_eq!(z.assign(Some(&[4; 12])), Some(9001));
}
