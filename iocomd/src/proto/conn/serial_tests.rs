//! Serial connections (spec §1.7, §3.3, §4; worked example §6.6): no socket handshake, CRC
//! frames, 3-byte ACKs, the 200-byte window, ACK every 40 bytes, keep-alive 150 ms, silence
//! 250 ms, no unique id in the authentication frame.

use super::*;
use crate::proto::frame::{FrameError, SERIAL_FRAME_SIZE};
use crate::proto::sysframe::{MblkInfo, mblk_flags};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn controller(now: Instant) -> Connection {
    let id = LocalIdentity::new("frank", 0, "cafenet");
    Connection::new(ConnConfig::serial(Role::Controller, Side::Server, id), now)
}

fn device(now: Instant) -> Connection {
    let mut id = LocalIdentity::new("gina", 3, "cafenet");
    id.unique_id = Some([7; 12]);
    Connection::new(ConnConfig::serial(Role::Device, Side::Client, id), now)
}

fn running(now: Instant) -> (Connection, Connection) {
    let (mut d, mut c) = (device(now), controller(now));
    for _ in 0..4 {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        c.poll_transmit(now, &mut a);
        d.handle_input(&a, now).unwrap();
        d.poll_transmit(now, &mut b);
        c.handle_input(&b, now).unwrap();
    }
    assert_eq!((d.state(), c.state()), (&State::Running, &State::Running));
    while d.poll_event().is_some() {}
    while c.poll_event().is_some() {}
    (d, c)
}

#[test]
fn spec_6_6_bytes_after_the_connect_sequence() {
    let t = Instant::now();
    let mut c = controller(t);
    assert_eq!(
        c.state(),
        &State::AwaitAuth,
        "no socket handshake on serial"
    );
    assert_eq!(c.framing(), Framing::Serial);
    let mut out = Vec::new();
    c.poll_transmit(t, &mut out);
    assert_eq!(
        out,
        hex("FF 00 00 00 55 30 20 12 60 00 02 00 05 66 72 61 6E 6B 00 07 63 61 66 65 6E 65 74 00")
    );
    let mut d = device(t);
    let mut none = Vec::new();
    assert!(!d.poll_transmit(t, &mut none) || none == hex("FF 00 00"));
    let mut d = device(t);
    d.handle_input(&out, t).unwrap();
    let mut reply = Vec::new();
    d.poll_transmit(t, &mut reply);
    // ACK of 28 bytes, then the device's authentication frame (number 3, no unique id even
    // though it has one: the C library sends it only on sockets).
    assert_eq!(
        reply,
        hex("FF 1C 00 00 73 E9 20 11 60 00 02 10 04 67 69 6E 61 03 07 63 61 66 65 6E 65 74 00")
    );
    let ev = std::iter::from_fn(|| d.poll_event()).collect::<Vec<_>>();
    assert!(matches!(
        &ev[..],
        [ConnEvent::Authenticated {
            send_frame_size: 96,
            framing: Framing::Serial,
            ..
        }]
    ));
}

#[test]
fn serial_window_is_200_bytes_and_acks_are_3_bytes() {
    let t = Instant::now();
    let (mut d, mut c) = running(t);
    assert_eq!(
        (d.max_in_air(), d.send_frame_size()),
        (200, SERIAL_FRAME_SIZE)
    );
    let info = MblkInfo {
        mblk_id: 10,
        device_name: "gina".into(),
        device_nr: 3,
        network_name: "cafenet".into(),
        mblk_name: "exp".into(),
        size: 4096,
        flags: mblk_flags::UP,
    };
    c.queue_system_frame(SystemFrame::MblkInfo(info)).unwrap();
    let mut out = Vec::new();
    c.poll_transmit(t, &mut out);
    d.handle_input(&out, t).unwrap();
    let payload = vec![0xAB; d.max_data_payload(10, 0)];
    assert_eq!(payload.len(), 89, "96 − 7-byte serial header");
    for _ in 0..10 {
        d.queue_data_frame(10, 0, FrameFlags::NONE, payload.clone())
            .unwrap();
    }
    let mut out = Vec::new();
    d.poll_transmit(t, &mut out);
    // The device's auth frame and ACKs are still in the air: frames go out while they fit.
    let sent = 10 - d.queued_frames();
    assert!(sent >= 1 && d.in_air() <= 200, "{sent} {}", d.in_air());
    assert!(d.in_air() + 96 > 200, "a further frame would have fitted");
    // Whole 96-byte frames with valid CRCs (no ACK: the info frame was below 40 bytes).
    assert_eq!(out.len(), 96 * sent);
    for f in out.chunks(96) {
        crate::proto::serial::check_crc(f).unwrap();
    }
    // The controller acknowledges once 40 bytes are unacknowledged: its ACK frees the window.
    c.handle_input(&out, t).unwrap();
    let mut ack = Vec::new();
    c.poll_transmit(t, &mut ack);
    assert_eq!(ack.len(), 3);
    d.handle_input(&ack, t).unwrap();
    let mut more = Vec::new();
    d.poll_transmit(t, &mut more);
    assert!(10 - d.queued_frames() > sent, "the ACK opened the window");
    assert!(d.in_air() <= 200);
}

#[test]
fn ack_after_40_unacknowledged_bytes() {
    let t = Instant::now();
    let (mut d, mut c) = running(t);
    let mut out = Vec::new();
    // 13 keep-alives from the controller (39 bytes) do not cause an ACK, the 14th does.
    for _ in 0..13 {
        d.handle_input(&[0xFF, 0, 0], t).unwrap();
    }
    assert!(!d.poll_transmit(t, &mut out));
    d.handle_input(&[0xFF, 0, 0], t).unwrap();
    assert!(d.poll_transmit(t, &mut out));
    assert_eq!(out.len(), 3);
    let _ = c.poll_event();
}

#[test]
fn keepalive_150_ms_and_silence_250_ms() {
    let t = Instant::now();
    let (mut d, _c) = running(t);
    let mut out = Vec::new();
    assert_eq!(d.poll_timeout(), Some(t + Duration::from_millis(150)));
    assert!(!d.poll_transmit(t + Duration::from_millis(149), &mut out));
    assert!(d.poll_transmit(t + Duration::from_millis(150), &mut out));
    assert_eq!(out[0], 0xFF);
    assert_eq!(out.len(), 3);
    d.handle_timeout(t + Duration::from_millis(249));
    assert_eq!(d.state(), &State::Running);
    d.handle_timeout(t + Duration::from_millis(250));
    assert_eq!(
        d.close_reason(),
        Some(&CloseReason::Silence(SERIAL_SILENCE_TIMEOUT))
    );
}

#[test]
fn a_corrupted_byte_is_a_crc_error() {
    let t = Instant::now();
    let mut c = controller(t);
    let mut out = Vec::new();
    c.poll_transmit(t, &mut out);
    out[10] ^= 0x01;
    let mut d = device(t);
    let e = d.handle_input(&out, t).unwrap_err();
    assert!(
        matches!(e, CloseReason::Frame(FrameError::Crc { .. })),
        "{e}"
    );
}
