//! State machine tests: every transition and rejection of [`Connection`], with injected time.

use super::*;
use crate::proto::frame::{Element, FrameDecoder, FrameError};
use crate::proto::password::{Account, hash_password};
use crate::proto::password::{Accounts, AuthRejection};
use crate::proto::sysframe::MblkInfo;
use crate::proto::sysframe::{RemoveMblk, mblk_flags};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn ident(name: &str, nr: u32, net: &str) -> LocalIdentity {
    LocalIdentity::new(name, nr, net)
}

fn device_client(now: Instant) -> Connection {
    Connection::new(
        ConnConfig::new(Role::Device, Side::Client, ident("gina", 3, "cafenet")),
        now,
    )
}

fn controller_server(now: Instant) -> Connection {
    Connection::new(
        ConnConfig::new(
            Role::Controller,
            Side::Server,
            ident("frank", 9000, "cafenet"),
        ),
        now,
    )
}

/// Moves bytes both ways until neither side has anything to send.
fn pump(a: &mut Connection, b: &mut Connection, now: Instant) {
    for _ in 0..1000 {
        let mut ab = Vec::new();
        let mut ba = Vec::new();
        let x = a.poll_transmit(now, &mut ab);
        let y = b.poll_transmit(now, &mut ba);
        if !x && !y {
            return;
        }
        if x {
            let _ = b.handle_input(&ab, now);
        }
        if y {
            let _ = a.handle_input(&ba, now);
        }
    }
    panic!("pump did not settle");
}

fn events(c: &mut Connection) -> Vec<ConnEvent> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn info(id: u32, name: &str, flags: u16) -> MblkInfo {
    MblkInfo {
        mblk_id: id,
        device_name: "gina".into(),
        device_nr: 3,
        network_name: "cafenet".into(),
        mblk_name: name.into(),
        size: 64,
        flags,
    }
}

/// Runs a device client and a controller server to `Running` and returns them.
fn running_pair(now: Instant) -> (Connection, Connection) {
    let mut d = device_client(now);
    let mut c = controller_server(now);
    pump(&mut d, &mut c, now);
    assert_eq!(d.state(), &State::Running);
    assert_eq!(c.state(), &State::Running);
    (d, c)
}

#[test]
fn device_client_speaks_the_spec_bytes() {
    let t = Instant::now();
    let mut d = device_client(t);
    assert_eq!(d.state(), &State::AwaitAuth);
    let mut out = Vec::new();
    assert!(d.poll_transmit(t, &mut out));
    // Handshake then the initial ACK, and nothing else: a device waits for the controller.
    assert_eq!(out, hex("53 08 63 61 66 65 6E 65 74 00 FF 00 00 00"));
    out.clear();
    assert!(!d.poll_transmit(t, &mut out));
    // Controller's ACK and authentication (spec 6.2 segments 3 and 4).
    d.handle_input(&hex("FF 04 00 00"), t).unwrap();
    d.handle_input(
        &hex("00 28 12 00 70 05 00 02 00 05 66 72 61 6E 6B 00 07 63 61 66 65 6E 65 74 00"),
        t,
    )
    .unwrap();
    assert_eq!(d.state(), &State::Running);
    let ev = events(&mut d);
    let [
        ConnEvent::Authenticated {
            peer,
            send_frame_size: 1392,
            framing: Framing::Socket,
            network_name,
        },
    ] = &ev[..]
    else {
        panic!("{ev:?}")
    };
    assert_eq!(peer.user_name, "frank");
    assert_eq!(network_name, "cafenet");
    // Own auth (spec 6.2 segment 5, first row) then the block announcement.
    d.queue_system_frame(SystemFrame::MblkInfo(info(8, "exp", 0x0A)))
        .unwrap();
    assert!(d.poll_transmit(t, &mut out));
    let mut want = hex("00 28 11 00 70 05 00 02 10 04 67 69 6E 61 03 07 63 61 66 65 6E 65 74 00");
    want.extend(hex(
        "01 20 16 00 08 00 01 C0 03 40 0A 04 67 69 6E 61 07 63 61 66 65 6E 65 74 03 65 78 70",
    ));
    assert_eq!(out, want);
}

#[test]
fn controller_server_answers_hello_with_ack_and_auth() {
    let t = Instant::now();
    let mut c = controller_server(t);
    assert_eq!(c.state(), &State::Handshake(HandshakeStep::AwaitHello));
    let mut out = Vec::new();
    assert!(
        !c.poll_transmit(t, &mut out),
        "server is silent before the hello"
    );
    // Hello split over two segments, the client's ACK glued to the second.
    c.handle_input(&hex("53 08 63 61 66"), t).unwrap();
    assert_eq!(c.state(), &State::Handshake(HandshakeStep::AwaitHello));
    c.handle_input(&hex("65 6E 65 74 00 FF 00 00 00"), t)
        .unwrap();
    assert_eq!(c.state(), &State::AwaitAuth);
    assert!(c.poll_transmit(t, &mut out));
    assert_eq!(
        out,
        hex(
            "FF 04 00 00 00 28 12 00 70 05 00 02 00 05 66 72 61 6E 6B 00 07 63 61 66 65 6E 65 74 00"
        )
    );
}

#[test]
fn tls_handshake_mark_and_password() {
    let t = Instant::now();
    let mut cfg = ConnConfig::new(Role::Device, Side::Client, ident("gina", 3, "cafenet"));
    cfg.secure = true;
    cfg.identity.password = "devpass".into();
    let mut d = Connection::new(cfg, t);
    assert_eq!(d.state(), &State::Handshake(HandshakeStep::AwaitTlsMark));
    let mut out = Vec::new();
    assert!(!d.poll_transmit(t, &mut out));

    let mut scfg = ConnConfig::new(Role::Controller, Side::Server, ident("frank", 0, "cafenet"));
    scfg.secure = true;
    scfg.peer_auth = PeerAuth::Accounts(Accounts {
        accounts: vec![Account {
            user: "gina*".into(),
            network: "cafenet".into(),
            password_hash: hash_password("devpass"),
            admin: false,
            certificate_sha256: None,
        }],
    });
    let mut c = Connection::new(scfg, t);
    assert!(c.poll_transmit(t, &mut out));
    assert_eq!(out, [TLS_MARK]);
    d.handle_input(&out, t).unwrap();
    assert_eq!(d.state(), &State::AwaitAuth);
    pump(&mut d, &mut c, t);
    let ev = events(&mut c);
    let ConnEvent::Authenticated { peer, .. } = &ev[0] else {
        panic!("{ev:?}")
    };
    assert_eq!(peer.account_name(), "gina3");
    assert_eq!(peer.password_hash, hash_password("devpass"));
    assert!(!format!("{ev:?}").contains("devpass"));
}

#[test]
fn wrong_password_is_rejected() {
    let t = Instant::now();
    let mut cfg = ConnConfig::new(Role::Device, Side::Client, ident("gina", 3, "cafenet"));
    cfg.secure = true;
    cfg.identity.password = "guess".into();
    let mut d = Connection::new(cfg, t);
    let mut scfg = ConnConfig::new(Role::Controller, Side::Server, ident("frank", 0, "cafenet"));
    scfg.secure = true;
    scfg.peer_auth = PeerAuth::Accounts(Accounts {
        accounts: vec![Account {
            user: "gina3".into(),
            network: "*".into(),
            password_hash: hash_password("devpass"),
            admin: false,
            certificate_sha256: None,
        }],
    });
    let mut c = Connection::new(scfg, t);
    pump(&mut d, &mut c, t);
    assert_eq!(
        c.close_reason(),
        Some(&CloseReason::Rejected(AuthRejection::WrongPassword {
            user: "gina3".into()
        }))
    );
    assert!(events(&mut c).is_empty());
    // A closed connection sends nothing and keeps its reason.
    let mut out = Vec::new();
    assert!(!c.poll_transmit(t, &mut out));
    assert!(c.handle_input(&[0xFF, 0, 0, 0], t).is_err());
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn bad_tls_mark_and_bad_hello_close() {
    let t = Instant::now();
    let mut cfg = ConnConfig::new(Role::Device, Side::Client, ident("gina", 3, "cafenet"));
    cfg.secure = true;
    let mut d = Connection::new(cfg, t);
    assert_eq!(
        d.handle_input(&[0x16, 0x03], t),
        Err(CloseReason::Handshake(HandshakeError::BadTlsMark(0x16)))
    );
    let mut c = controller_server(t);
    assert!(matches!(
        c.handle_input(b"GET / HTTP/1.1\r\n", t),
        Err(CloseReason::Handshake(HandshakeError::BadType(b'G')))
    ));
    let mut c = controller_server(t);
    assert!(matches!(
        c.handle_input(&[0x53, 200], t),
        Err(CloseReason::Handshake(HandshakeError::BadLength(200)))
    ));
}

#[test]
fn certificate_request_gets_an_empty_certificate() {
    let t = Instant::now();
    let mut c = controller_server(t);
    c.handle_input(&[0x93], t).unwrap();
    let mut out = Vec::new();
    c.poll_transmit(t, &mut out);
    assert_eq!(&out[..2], &NO_TRUST_CERTIFICATE);
    assert_eq!(&out[2..6], &hex("FF 00 00 00"));
}

#[test]
fn frames_before_authentication_are_rejected() {
    let t = Instant::now();
    // A data frame as frame 0.
    let mut d = device_client(t);
    assert_eq!(
        d.handle_input(&hex("00 12 02 00 09 00 00 30"), t),
        Err(CloseReason::UnexpectedFrame {
            state: "awaiting authentication",
            what: "data frame"
        })
    );
    // A memory block info frame as frame 0.
    let mut d = device_client(t);
    let f = info(8, "exp", 0x0A).to_frame(0).unwrap();
    assert!(matches!(
        d.handle_input(&f.to_bytes(Framing::Socket).unwrap(), t),
        Err(CloseReason::UnexpectedFrame {
            what: "system frame",
            ..
        })
    ));
    // Bytes after the hello on a server before... a frame that is not frame 0.
    let mut c = controller_server(t);
    assert!(matches!(
        c.handle_input(&hex("13 05 20 00 00 08 00"), t),
        Err(CloseReason::Frame(FrameError::FrameNr {
            expected: 0,
            got: 5
        }))
    ));
}

#[test]
fn second_authentication_is_rejected() {
    let t = Instant::now();
    let (mut d, mut c) = running_pair(t);
    let auth = AuthFrame {
        frame_size: 1392,
        flags: 0,
        user_name: "frank".into(),
        device_nr: 0,
        unique_id: None,
        network_name: "cafenet".into(),
        password: String::new(),
    };
    let mut f = auth.to_frame().unwrap();
    f.nr = d.decoder.expected_nr();
    assert!(matches!(
        d.handle_input(&f.to_bytes(Framing::Socket).unwrap(), t),
        Err(CloseReason::UnexpectedFrame {
            what: "authentication frame",
            ..
        })
    ));
    let _ = c.poll_event();
}

#[test]
fn binding_and_data_flow_between_two_connections() {
    let t = Instant::now();
    let (mut d, mut c) = running_pair(t);
    events(&mut d);
    events(&mut c);
    d.queue_system_frame(SystemFrame::MblkInfo(info(8, "exp", mblk_flags::UP)))
        .unwrap();
    d.queue_system_frame(SystemFrame::MblkInfo(info(9, "imp", mblk_flags::DOWN)))
        .unwrap();
    pump(&mut d, &mut c, t);
    let ev = events(&mut c);
    assert_eq!(
        ev,
        vec![
            ConnEvent::MblkInfo(info(8, "exp", mblk_flags::UP)),
            ConnEvent::MblkInfo(info(9, "imp", mblk_flags::DOWN))
        ]
    );
    // Controller replies with its own ids 10, 11 and sends data to the device's `imp` (9).
    c.queue_system_frame(SystemFrame::MblkInfo(info(10, "exp", mblk_flags::UP)))
        .unwrap();
    c.queue_system_frame(SystemFrame::MblkInfo(info(11, "imp", mblk_flags::DOWN)))
        .unwrap();
    c.queue_data_frame(9, 0, FrameFlags::data(false, true, true), vec![0, 0x30])
        .unwrap();
    pump(&mut d, &mut c, t);
    let ev = events(&mut d);
    assert_eq!(ev.len(), 3);
    assert_eq!(
        ev[2],
        ConnEvent::Data {
            mblk_id: 9,
            addr: 0,
            flags: FrameFlags::data(false, true, true),
            payload: vec![0, 0x30]
        }
    );
    // Device sends 300 frames to the controller's `exp` (10): numbering wraps past 200.
    for i in 0..300u32 {
        d.queue_data_frame(10, i, FrameFlags::NONE, vec![i as u8])
            .unwrap();
    }
    pump(&mut d, &mut c, t);
    let ev = events(&mut c);
    assert_eq!(ev.len(), 300);
    assert!(c.state() == &State::Running && d.state() == &State::Running);
    // Remove request.
    c.queue_system_frame(SystemFrame::RemoveMblk(RemoveMblk { ids: vec![9, 8] }))
        .unwrap();
    pump(&mut d, &mut c, t);
    assert_eq!(events(&mut d), vec![ConnEvent::RemoveMblk(vec![9, 8])]);
}

#[test]
fn data_for_an_unannounced_block_closes() {
    let t = Instant::now();
    let (mut d, mut c) = running_pair(t);
    c.queue_data_frame(77, 0, FrameFlags::NONE, vec![1])
        .unwrap();
    pump(&mut d, &mut c, t);
    assert_eq!(d.close_reason(), Some(&CloseReason::UnknownMblk(77)));
    // Withdrawn blocks are unknown too.
    let (mut d, mut c) = running_pair(t);
    d.queue_system_frame(SystemFrame::MblkInfo(info(8, "exp", 2)))
        .unwrap();
    pump(&mut d, &mut c, t);
    d.withdraw_mblk(8);
    c.queue_data_frame(8, 0, FrameFlags::NONE, vec![1]).unwrap();
    pump(&mut d, &mut c, t);
    assert_eq!(d.close_reason(), Some(&CloseReason::UnknownMblk(8)));
}

#[test]
fn queueing_rules() {
    let t = Instant::now();
    let mut d = device_client(t);
    assert_eq!(
        d.queue_data_frame(8, 0, FrameFlags::NONE, vec![]),
        Err(QueueError::NotRunning)
    );
    let (mut d, _c) = running_pair(t);
    assert_eq!(
        d.queue_data_frame(8, 0, FrameFlags::SYSTEM, vec![]),
        Err(QueueError::NotAllowed)
    );
    let max = d.max_data_payload(10, 0);
    assert_eq!(max, 1392 - 6);
    d.queue_data_frame(10, 0, FrameFlags::NONE, vec![0; max])
        .unwrap();
    assert_eq!(
        d.queue_data_frame(10, 0, FrameFlags::NONE, vec![0; max + 1]),
        Err(QueueError::TooLarge {
            len: 1393,
            max: 1392
        })
    );
    for bad in [0, 7, 32768] {
        assert_eq!(
            d.queue_system_frame(SystemFrame::MblkInfo(info(bad, "exp", 2))),
            Err(QueueError::BadMblkId(bad))
        );
    }
    assert_eq!(
        d.queue_system_frame(SystemFrame::Unknown(7)),
        Err(QueueError::NotAllowed)
    );
    assert!(matches!(
        d.queue_system_frame(SystemFrame::RemoveMblk(RemoveMblk { ids: vec![] })),
        Err(QueueError::SysFrame(_))
    ));
}

#[test]
fn smaller_peer_frame_size_is_adopted_and_bogus_ones_ignored() {
    let t = Instant::now();
    let mut d = device_client(t);
    let mut cfg = ConnConfig::new(Role::Controller, Side::Server, ident("esp", 5, "cafenet"));
    cfg.frame_size = 464;
    let mut c = Connection::new(cfg, t);
    pump(&mut d, &mut c, t);
    assert_eq!(d.send_frame_size(), 464);
    assert_eq!(d.max_in_air(), 20416);
    assert_eq!(c.send_frame_size(), 464);
    // A frame size below 96 is ignored.
    let mut d = device_client(t);
    let mut out = Vec::new();
    d.poll_transmit(t, &mut out);
    let auth = AuthFrame {
        frame_size: 50,
        flags: 0,
        user_name: "x".into(),
        device_nr: 0,
        unique_id: None,
        network_name: "cafenet".into(),
        password: String::new(),
    };
    d.handle_input(
        &auth.to_frame().unwrap().to_bytes(Framing::Socket).unwrap(),
        t,
    )
    .unwrap();
    assert_eq!(d.send_frame_size(), 1392);
}

#[test]
fn automatic_network_name_is_adopted_before_own_auth() {
    let t = Instant::now();
    let mut cfg = ConnConfig::new(Role::Device, Side::Client, ident("gina", 9000, "*"));
    cfg.identity.unique_id = Some([0x7C; 12]);
    let mut d = Connection::new(cfg, t);
    let mut c = Connection::new(
        ConnConfig::new(
            Role::Controller,
            Side::Server,
            ident("ctl", 9000, "iocafenet"),
        ),
        t,
    );
    let mut out = Vec::new();
    d.poll_transmit(t, &mut out);
    assert_eq!(&out[..4], &hex("53 02 2A 00"));
    c.handle_input(&out, t).unwrap();
    pump(&mut d, &mut c, t);
    let ev = events(&mut d);
    assert!(
        matches!(&ev[0], ConnEvent::Authenticated { network_name, .. } if network_name == "iocafenet")
    );
    let ev = events(&mut c);
    let ConnEvent::Authenticated { peer, .. } = &ev[0] else {
        panic!()
    };
    assert_eq!(peer.network_name, "iocafenet");
    assert_eq!(peer.device_nr, 0);
    assert_eq!(peer.unique_id, Some([0x7C; 12]));
    assert_eq!(peer.flags, auth_flags::CONNECT_UP);
}

#[test]
fn handshake_timeout_uses_injected_time() {
    let t = Instant::now();
    let mut c = controller_server(t);
    assert_eq!(c.poll_timeout(), Some(t + DEFAULT_HANDSHAKE_TIMEOUT));
    c.handle_timeout(t + Duration::from_millis(9_999));
    assert_eq!(c.state(), &State::Handshake(HandshakeStep::AwaitHello));
    // Partial hello does not extend the deadline.
    c.handle_input(&[0x53, 0x08, b'c'], t + Duration::from_secs(5))
        .unwrap();
    c.handle_timeout(t + Duration::from_secs(10));
    assert_eq!(
        c.close_reason(),
        Some(&CloseReason::HandshakeTimeout(DEFAULT_HANDSHAKE_TIMEOUT))
    );
}

#[test]
fn authentication_deadline_covers_a_silent_peer_that_keeps_acking() {
    let t = Instant::now();
    let mut cfg = ConnConfig::new(Role::Device, Side::Client, ident("gina", 3, "cafenet"));
    cfg.handshake_timeout = Duration::from_secs(3);
    let mut d = Connection::new(cfg, t);
    let mut out = Vec::new();
    d.poll_transmit(t, &mut out);
    // The peer only ever sends ACKs (as two C devices both waiting would).
    for s in 1..3 {
        d.handle_input(&hex("FF 00 00 00"), t + Duration::from_secs(s))
            .unwrap();
        d.handle_timeout(t + Duration::from_secs(s));
        assert_eq!(d.state(), &State::AwaitAuth);
    }
    assert_eq!(d.poll_timeout(), Some(t + Duration::from_secs(3)));
    d.handle_timeout(t + Duration::from_secs(3));
    assert!(matches!(
        d.close_reason(),
        Some(CloseReason::HandshakeTimeout(_))
    ));
}

#[test]
fn keepalive_after_idle_and_close_after_silence() {
    let t = Instant::now();
    let (mut d, mut c) = running_pair(t);
    let mut out = Vec::new();
    assert!(!d.poll_transmit(t + Duration::from_secs(9), &mut out));
    assert_eq!(d.poll_timeout(), Some(t + DEFAULT_KEEPALIVE));
    let t10 = t + DEFAULT_KEEPALIVE;
    d.handle_timeout(t10);
    assert!(d.poll_transmit(t10, &mut out));
    assert_eq!(out.len(), 4);
    assert_eq!(out[0], 0xFF);
    let count = u32::from_le_bytes([out[1], out[2], out[3], 0]);
    assert_eq!(count, d.bytes_received());
    // The controller hears the keep-alive; the device hears nothing for 20 s.
    c.handle_input(&out, t10).unwrap();
    let t20 = t + DEFAULT_SILENCE_TIMEOUT;
    d.handle_timeout(t20 - Duration::from_millis(1));
    assert_eq!(d.state(), &State::Running);
    d.handle_timeout(t20);
    assert_eq!(
        d.close_reason(),
        Some(&CloseReason::Silence(DEFAULT_SILENCE_TIMEOUT))
    );
    c.handle_timeout(t20);
    assert_eq!(c.state(), &State::Running, "the keep-alive reset its timer");
}

#[test]
fn a_frame_trickling_in_byte_by_byte_is_a_frame_timeout() {
    let t = Instant::now();
    let (mut d, mut c) = running_pair(t);
    let payload = vec![0xAB; 1000];
    d.queue_data_frame(10, 0, FrameFlags::NONE, payload)
        .unwrap();
    let mut out = Vec::new();
    assert!(d.poll_transmit(t, &mut out));
    // One byte every 4 s: the silence timeout (20 s) never fires, the frame timeout does.
    let mut now = t;
    for (i, b) in out.iter().take(10).enumerate() {
        now = t + Duration::from_secs(4 * i as u64);
        c.handle_timeout(now);
        if c.close_reason().is_some() {
            break;
        }
        c.handle_input(std::slice::from_ref(b), now).unwrap();
        assert!(c.poll_timeout().unwrap() <= t + DEFAULT_FRAME_TIMEOUT);
    }
    assert_eq!(
        c.close_reason(),
        Some(&CloseReason::FrameTimeout(DEFAULT_FRAME_TIMEOUT))
    );
    assert!(now < t + DEFAULT_SILENCE_TIMEOUT);
    // Whole frames reset it: a steady peer is never cut off.
    let (mut d, mut c) = running_pair(t);
    for i in 0..10u64 {
        let now = t + Duration::from_secs(4 * i);
        d.queue_system_frame(SystemFrame::MblkInfo(info(10 + i as u32, "exp", 0)))
            .unwrap();
        let mut out = Vec::new();
        d.poll_transmit(now, &mut out);
        c.handle_input(&out, now).unwrap();
        c.handle_timeout(now);
        assert_eq!(c.state(), &State::Running, "at {i}");
    }
}

#[test]
fn sending_window_blocks_until_acknowledged() {
    let t = Instant::now();
    let (mut d, mut c) = running_pair(t);
    let payload = vec![0xAB; d.max_data_payload(10, 0)];
    for _ in 0..60 {
        d.queue_data_frame(10, 0, FrameFlags::NONE, payload.clone())
            .unwrap();
    }
    let mut out = Vec::new();
    d.poll_transmit(t, &mut out);
    assert!(d.in_air() <= d.max_in_air());
    let sent_frames = 60 - d.queued_frames();
    assert!((43..=44).contains(&sent_frames), "{sent_frames}");
    out.clear();
    assert!(!d.poll_transmit(t, &mut out), "window full: nothing more");
    // The controller acknowledges: the rest goes out.
    let mut ack = Vec::new();
    encode_ack(Framing::Socket, d.bytes_sent, &mut ack);
    d.handle_input(&ack, t).unwrap();
    assert!(d.poll_transmit(t, &mut out));
    assert_eq!(d.queued_frames(), 0);
    let _ = c.poll_event();
}

#[test]
fn ack_after_500_unacknowledged_bytes() {
    let t = Instant::now();
    let (mut d, mut c) = running_pair(t);
    d.queue_system_frame(SystemFrame::MblkInfo(info(8, "exp", 2)))
        .unwrap();
    pump(&mut d, &mut c, t);
    let mut out = Vec::new();
    assert!(!d.poll_transmit(t, &mut out));
    let before = d.bytes_received();
    // 2 × 256-byte frames from the controller = 524 bytes.
    for _ in 0..2 {
        c.queue_data_frame(8, 0, FrameFlags::NONE, vec![1; 250])
            .unwrap();
    }
    c.poll_transmit(t, &mut out);
    d.handle_input(&out, t).unwrap();
    assert_eq!(d.bytes_received() - before, 512);
    let mut ack = Vec::new();
    assert!(d.poll_transmit(t, &mut ack));
    let mut dec = FrameDecoder::new(Framing::Socket, 1392);
    dec.push(&ack);
    assert_eq!(
        dec.next_element().unwrap().unwrap().0,
        Element::Ack(d.bytes_received())
    );
    // Fewer than 500 new bytes: no ACK.
    out.clear();
    c.queue_data_frame(8, 0, FrameFlags::NONE, vec![1; 10])
        .unwrap();
    c.poll_transmit(t, &mut out);
    d.handle_input(&out, t).unwrap();
    ack.clear();
    assert!(!d.poll_transmit(t, &mut ack));
}

#[test]
fn invalid_own_identity_closes_at_once() {
    let t = Instant::now();
    let c = Connection::new(
        ConnConfig::new(Role::Device, Side::Client, ident(&"x".repeat(30), 1, "n")),
        t,
    );
    assert!(matches!(c.close_reason(), Some(CloseReason::SysFrame(_))));
    let c = Connection::new(
        ConnConfig::new(Role::Device, Side::Client, ident("x", 1, &"n".repeat(24))),
        t,
    );
    assert!(c.is_closed());
}

#[test]
fn oversize_frame_closes() {
    let t = Instant::now();
    let mut d = device_client(t);
    assert_eq!(
        d.handle_input(&hex("00 20 FF FF 08 00"), t),
        Err(CloseReason::Frame(FrameError::TooLarge {
            len: 65541,
            max: 1392
        }))
    );
}

#[test]
fn eof_inside_a_frame_is_truncation() {
    let t = Instant::now();
    let (mut d, _c) = running_pair(t);
    d.handle_input(&[d.decoder.expected_nr(), 0x20, 0x10], t)
        .unwrap();
    d.handle_eof();
    assert_eq!(
        d.close_reason(),
        Some(&CloseReason::Truncated { buffered: 3 })
    );
    let (mut d, _c) = running_pair(t);
    d.handle_eof();
    assert_eq!(d.close_reason(), Some(&CloseReason::PeerClosed));
    let mut c = controller_server(t);
    c.handle_input(&[0x53, 0x08, b'c'], t).unwrap();
    c.handle_eof();
    assert_eq!(
        c.close_reason(),
        Some(&CloseReason::Truncated { buffered: 3 })
    );
}

/// A device client announcing 16 KiB frames, fed the controller's ACK and an authentication
/// frame whose id field (the frame size) is `size` (spec 6.2 segment 4 otherwise).
fn device_16k_authenticated_by(size_field: &str, t: Instant) -> Connection {
    let mut cfg = ConnConfig::new(Role::Device, Side::Client, ident("gina", 3, "cafenet"));
    cfg.frame_size = MAX_FRAME_SIZE;
    let mut d = Connection::new(cfg, t);
    let mut out = Vec::new();
    d.poll_transmit(t, &mut out);
    assert!(
        !d.streaming(),
        "nothing is known before the peer's authentication"
    );
    d.handle_input(&hex("FF 04 00 00"), t).unwrap();
    d.handle_input(
        &hex(&format!(
            "00 28 12 00 {size_field} 00 02 00 05 66 72 61 6E 6B 00 07 63 61 66 65 6E 65 74 00"
        )),
        t,
    )
    .unwrap();
    assert_eq!(d.state(), &State::Running);
    d
}

/// Bytes of data frames sent before the window closes (no ACK comes back).
fn sent_without_ack(d: &mut Connection, t: Instant) -> usize {
    let max = d.max_data_payload(10, 0);
    for _ in 0..400 {
        d.queue_data_frame(10, 0, FrameFlags::NONE, vec![0xAB; max])
            .unwrap();
    }
    let mut total = 0;
    loop {
        let mut out = Vec::new();
        if !d.poll_transmit(t, &mut out) {
            return total;
        }
        total += out.len();
    }
}

#[test]
fn two_peers_announcing_16k_frames_are_streaming_peers_with_the_wide_window() {
    let t = Instant::now();
    // 00 40 = 16384 in the authentication frame's id field.
    let mut d = device_16k_authenticated_by("00 40", t);
    let ev = events(&mut d);
    assert!(
        matches!(
            ev[..],
            [ConnEvent::Authenticated {
                send_frame_size: 16384,
                ..
            }]
        ),
        "{ev:?}"
    );
    assert!(d.streaming());
    assert_eq!(d.max_in_air(), STREAMING_MAX_IN_AIR);
    // Our own authentication frame announces 16384 too (id field 00 40, flags 0x28).
    let mut out = Vec::new();
    d.poll_transmit(t, &mut out);
    assert_eq!(
        out,
        hex("00 28 11 00 00 40 00 02 10 04 67 69 6E 61 03 07 63 61 66 65 6E 65 74 00")
    );
    let sent = sent_without_ack(&mut d, t) as u32;
    assert!(
        (STREAMING_MAX_IN_AIR - 16384..=STREAMING_MAX_IN_AIR).contains(&sent),
        "{sent}"
    );
    // An ACK for everything reopens the window (the peer had ACKed 4 bytes before).
    let all = d.in_air() + 4;
    let ack = [0xFF, all as u8, (all >> 8) as u8, (all >> 16) as u8];
    d.handle_input(&ack, t).unwrap();
    assert_eq!(d.in_air(), 0);
    let mut out = Vec::new();
    assert!(d.poll_transmit(t, &mut out));
}

#[test]
fn a_reference_controller_keeps_1392_frames_and_the_44_frame_window() {
    let t = Instant::now();
    // 70 05 = 1392, what every PC build of the C library announces.
    let mut d = device_16k_authenticated_by("70 05", t);
    assert!(!d.streaming());
    assert_eq!((d.send_frame_size(), d.max_in_air()), (1392, 61_248));
    let sent = sent_without_ack(&mut d, t);
    // Our auth frame (24 bytes) plus at most the 44-frame window of data.
    assert!((61_248 - 1392..=61_248).contains(&(sent - 24)), "{sent}");
    // A 16 KiB announcement over serial never makes a streaming peer (serial frames are 96).
    assert!(!is_streaming(Framing::Serial, MAX_FRAME_SIZE));
    assert!(is_streaming(Framing::Socket, MAX_FRAME_SIZE));
    assert!(!is_streaming(Framing::Socket, MAX_FRAME_SIZE - 1));
}
