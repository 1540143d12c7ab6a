//! Property tests of the transport codecs: decode ∘ encode is the identity for frames, ACK
//! streams, authentication, memory block info and remove frames, and no decoder (nor the
//! connection state machine) panics on arbitrary bytes.

use iocomd::proto::auth::{AuthFrame, auth_flags};
use iocomd::proto::conn::{ConnConfig, Connection, LocalIdentity, Role, Side};
use iocomd::proto::frame::{
    Element, Frame, FrameDecoder, FrameFlags, Framing, MAX_FRAME_NR, decode_element, encode_ack,
    next_frame_nr,
};
use iocomd::proto::handshake::ClientHello;
use iocomd::proto::sysframe::{MblkInfo, RemoveMblk, SystemFrame};
use proptest::prelude::*;
use std::time::{Duration, Instant};

fn frame_strategy(max_payload: usize) -> impl Strategy<Value = Frame> {
    (
        0..=MAX_FRAME_NR,
        any::<u8>(),
        prop_oneof![0u32..=300, any::<u32>()],
        prop_oneof![0u32..=300, 0u32..=70000, any::<u32>()],
        proptest::collection::vec(any::<u8>(), 0..max_payload),
    )
        .prop_map(|(nr, flags, mblk_id, addr, payload)| Frame {
            nr,
            flags: FrameFlags::from_bits(flags),
            mblk_id,
            addr,
            payload,
        })
}

fn name(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[a-zA-Z0-9_*.é]{{0,{max}}}"))
        .unwrap()
        .prop_filter("byte length", move |s| s.len() <= max)
}

fn auth_strategy() -> impl Strategy<Value = AuthFrame> {
    (
        any::<u32>(),
        any::<u8>(),
        name(25),
        any::<u32>(),
        proptest::option::of(any::<[u8; 12]>()),
        name(23),
        name(45),
    )
        .prop_map(
            |(frame_size, flags, user_name, device_nr, unique_id, network_name, password)| {
                AuthFrame {
                    frame_size,
                    flags: flags & auth_flags::SEMANTIC_MASK,
                    user_name,
                    device_nr,
                    unique_id,
                    network_name,
                    password,
                }
            },
        )
}

fn info_strategy() -> impl Strategy<Value = MblkInfo> {
    (
        any::<u32>(),
        name(15),
        any::<u32>(),
        name(23),
        name(15),
        any::<u32>(),
        any::<u16>(),
    )
        .prop_map(
            |(mblk_id, device_name, device_nr, network_name, mblk_name, size, flags)| MblkInfo {
                mblk_id,
                network_name: if device_name.is_empty() {
                    String::new()
                } else {
                    network_name
                },
                device_name,
                device_nr,
                mblk_name,
                size,
                flags,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn socket_frames_round_trip(f in frame_strategy(2000)) {
        let bytes = f.to_bytes(Framing::Socket).unwrap();
        prop_assert_eq!(bytes.len(), f.encoded_len(Framing::Socket));
        let (el, len) = decode_element(Framing::Socket, &bytes, f.nr, usize::MAX).unwrap().unwrap();
        prop_assert_eq!(len, bytes.len());
        prop_assert_eq!(el, Element::Frame(f));
    }

    #[test]
    fn serial_frames_round_trip(f in frame_strategy(256)) {
        let bytes = f.to_bytes(Framing::Serial).unwrap();
        let (el, len) = decode_element(Framing::Serial, &bytes, f.nr, usize::MAX).unwrap().unwrap();
        prop_assert_eq!(len, bytes.len());
        prop_assert_eq!(el, Element::Frame(f));
    }

    #[test]
    fn element_streams_round_trip_in_any_chunking(
        items in proptest::collection::vec(prop_oneof![
            any::<u32>().prop_map(|v| Element::Ack(v & 0xFF_FFFF)),
            frame_strategy(300).prop_map(Element::Frame),
        ], 0..40),
        cuts in proptest::collection::vec(1usize..64, 1..20),
    ) {
        // Number the frames like a sender does.
        let mut nr = 0u8;
        let mut want = Vec::new();
        let mut stream = Vec::new();
        for mut el in items {
            match &mut el {
                Element::Ack(v) => encode_ack(Framing::Socket, *v, &mut stream),
                Element::Frame(f) => {
                    f.nr = nr;
                    nr = next_frame_nr(nr);
                    f.encode(Framing::Socket, &mut stream).unwrap();
                }
            }
            want.push(el);
        }
        let mut dec = FrameDecoder::new(Framing::Socket, 16384);
        let mut got = Vec::new();
        let mut pos = 0;
        let mut i = 0;
        while pos < stream.len() {
            let n = cuts[i % cuts.len()].min(stream.len() - pos);
            dec.push(&stream[pos..pos + n]);
            pos += n;
            i += 1;
            while let Some((el, _)) = dec.next_element().unwrap() {
                got.push(el);
            }
        }
        prop_assert_eq!(got, want);
        prop_assert_eq!(dec.buffered(), 0);
    }

    #[test]
    fn auth_frames_round_trip(a in auth_strategy()) {
        let f = a.to_frame().unwrap();
        let bytes = f.to_bytes(Framing::Socket).unwrap();
        let (el, _) = decode_element(Framing::Socket, &bytes, 0, usize::MAX).unwrap().unwrap();
        let Element::Frame(back) = el else { panic!("ack") };
        prop_assert_eq!(AuthFrame::from_frame(&back).unwrap(), a.clone());
        prop_assert_eq!(SystemFrame::from_frame(&back).unwrap(), SystemFrame::Auth(a));
    }

    #[test]
    fn mblk_info_frames_round_trip(info in info_strategy(), nr in 0..=MAX_FRAME_NR) {
        let f = info.to_frame(nr).unwrap();
        let bytes = f.to_bytes(Framing::Socket).unwrap();
        let (el, _) = decode_element(Framing::Socket, &bytes, nr, usize::MAX).unwrap().unwrap();
        let Element::Frame(back) = el else { panic!("ack") };
        prop_assert_eq!(MblkInfo::from_frame(&back).unwrap(), info);
    }

    #[test]
    fn remove_frames_round_trip(ids in proptest::collection::vec(any::<u32>(), 1..=16)) {
        let r = RemoveMblk { ids };
        let f = r.to_frame(3).unwrap();
        prop_assert_eq!(RemoveMblk::from_frame(&f).unwrap(), r);
    }

    #[test]
    fn hellos_round_trip(net in name(23), cert in any::<bool>()) {
        let h = ClientHello { request_certificate: cert, ..ClientHello::client(&net) };
        let mut v = Vec::new();
        h.encode(&mut v).unwrap();
        prop_assert_eq!(ClientHello::decode(&v).unwrap(), Some((h, v.len())));
    }

    #[test]
    fn decoders_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        max in 0usize..2000,
        nr in any::<u8>(),
    ) {
        for framing in [Framing::Socket, Framing::Serial] {
            let _ = decode_element(framing, &bytes, nr, max);
            let mut d = FrameDecoder::new(framing, max as u32);
            for c in bytes.chunks(5) {
                d.push(c);
                while let Ok(Some(_)) = d.next_element() {}
            }
        }
        let _ = ClientHello::decode(&bytes);
        let f = Frame { nr: 0, flags: FrameFlags::SYSTEM, mblk_id: u32::from(nr), addr: 0, payload: bytes.clone() };
        let _ = SystemFrame::from_frame(&f);
        let _ = AuthFrame::from_frame(&f);
        let _ = MblkInfo::from_frame(&f);
        let _ = RemoveMblk::from_frame(&f);
        let mut g = f.clone();
        if let Some(b) = g.payload.first_mut() { *b = 2; }
        let _ = AuthFrame::from_frame(&g);
        if let Some(b) = g.payload.first_mut() { *b = 1; }
        let _ = MblkInfo::from_frame(&g);
    }

    #[test]
    fn connections_never_panic_on_arbitrary_input(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..8),
        role in prop_oneof![Just(Role::Device), Just(Role::Controller)],
        side in prop_oneof![Just(Side::Client), Just(Side::Server)],
        secure in any::<bool>(),
    ) {
        let t = Instant::now();
        let ident = LocalIdentity {
            device_name: "gina".into(),
            device_nr: 3,
            network_name: "cafenet".into(),
            unique_id: None,
            password: "pw".into(),
        };
        let mut cfg = ConnConfig::new(role, side, ident);
        cfg.secure = secure;
        let mut c = Connection::new(cfg, t);
        let mut out = Vec::new();
        for (i, ch) in chunks.iter().enumerate() {
            let now = t + Duration::from_millis(i as u64 * 700);
            let _ = c.handle_input(ch, now);
            c.handle_timeout(now);
            c.poll_transmit(now, &mut out);
            while c.poll_event().is_some() {}
        }
    }
}
