//! The reference traces in `tests/traces/` (captured between the C device `gina` and the Python
//! controller, see `tests/traces/README.md`) decode completely with our codecs, and every frame and
//! ACK re-encodes to the identical bytes.
//!
//! Plain traces (a, a2, b, c, d, e, f, h): the TCP client's direction starts with the socket
//! handshake, the rest of both directions is a sequence of ACKs and frames. Each direction is fed
//! to a [`FrameDecoder`] one TCP segment at a time, so frames split over segments (and segments
//! holding many frames) are exercised exactly as captured; the number of frames that span
//! segments is counted and checked against an independent count from the frame headers.
//!
//! Trace g is TLS 1.2: its IOCOM bytes are encrypted, so it is checked at the TLS record level
//! only: every record has a known content type, version 3.x and a length within the TLS limit,
//! and the records tile each direction's byte stream exactly (no gaps, no leftovers, including
//! records split over TCP segments).

use iocomd::proto::auth::{AuthFrame, auth_flags};
use iocomd::proto::conn::{ConnConfig, ConnEvent, Connection, LocalIdentity, Role, Side, State};
use iocomd::proto::frame::{Element, Frame, FrameDecoder, Framing, SOCKET_FRAME_SIZE, encode_ack};
use iocomd::proto::handshake::ClientHello;
use iocomd::proto::sysframe::{MblkInfo, SystemFrame};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    C2D,
    D2C,
}

struct Segment {
    secs: f64,
    dir: Dir,
    bytes: Vec<u8>,
}

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn load(name: &str) -> Vec<Segment> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/traces");
    let path = std::fs::read_dir(&dir)
        .expect("traces dir")
        .map(|e| e.expect("entry").path())
        .find(|p| {
            p.extension().is_some_and(|e| e == "txt")
                && p.file_name()
                    .and_then(|f| f.to_str())
                    .is_some_and(|f| f.starts_with(&format!("{name}-")))
        })
        .unwrap_or_else(|| panic!("trace {name} not found"));
    let text = std::fs::read_to_string(&path).expect("read trace");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut it = l.split_whitespace();
            let secs = it.next().expect("time").parse().expect("time");
            let dir = match it.next().expect("dir") {
                "C2D" => Dir::C2D,
                "D2C" => Dir::D2C,
                d => panic!("bad dir {d}"),
            };
            Segment {
                secs,
                dir,
                bytes: hex(it.next().expect("hex")),
            }
        })
        .collect()
}

const PLAIN: [&str; 8] = ["a", "a2", "b", "c", "d", "e", "f", "h"];

/// Everything decoded from one direction.
#[derive(Default)]
struct Decoded {
    hello: Option<ClientHello>,
    frames: Vec<Frame>,
    acks: Vec<u32>,
    spanning: usize,
    bytes: usize,
}

/// Decodes one direction segment by segment and checks byte-exact re-encoding.
fn decode_direction(segs: &[&Segment], client: bool) -> Decoded {
    let mut out = Decoded::default();
    let mut stream: Vec<u8> = Vec::new();
    let mut ends = Vec::new(); // cumulative segment ends
    for s in segs {
        stream.extend_from_slice(&s.bytes);
        ends.push(stream.len());
    }
    out.bytes = stream.len();
    let mut start = 0usize;
    let mut first_seg = 0usize;
    if client {
        let (hello, used) = ClientHello::decode(&stream)
            .expect("hello")
            .expect("complete");
        let mut re = Vec::new();
        hello.encode(&mut re).unwrap();
        assert_eq!(re, stream[..used], "hello re-encodes");
        out.hello = Some(hello);
        start = used;
        // The handshake is its own segment in every trace.
        assert_eq!(ends[0], used, "handshake fills the first segment");
        first_seg = 1;
    }
    let mut dec = FrameDecoder::new(Framing::Socket, SOCKET_FRAME_SIZE);
    let mut offset = start;
    let mut seg_start = start;
    for end in ends.iter().skip(first_seg) {
        dec.push(&stream[seg_start..*end]);
        while let Some((el, len)) = dec.next_element().expect("element decodes") {
            let wire = &stream[offset..offset + len];
            let mut re = Vec::new();
            match &el {
                Element::Ack(v) => {
                    encode_ack(Framing::Socket, *v, &mut re);
                    out.acks.push(*v);
                }
                Element::Frame(f) => {
                    f.encode(Framing::Socket, &mut re).unwrap();
                    out.frames.push(f.clone());
                }
            }
            assert_eq!(re, wire, "re-encoded element at offset {offset}");
            // The element started in an earlier segment than the one that completed it.
            if offset < seg_start {
                out.spanning += 1;
            }
            offset += len;
        }
        seg_start = *end;
    }
    assert_eq!(
        offset,
        stream.len(),
        "direction ends on an element boundary"
    );
    assert_eq!(dec.buffered(), 0);
    out
}

/// Independent count of elements spanning segments: walk the raw stream with header arithmetic.
fn count_spanning_by_headers(segs: &[&Segment], skip: usize) -> usize {
    let stream: Vec<u8> = segs.iter().flat_map(|s| s.bytes.iter().copied()).collect();
    let mut bounds = Vec::new();
    let mut acc = 0;
    for s in segs {
        bounds.push(acc);
        acc += s.bytes.len();
    }
    let seg_of = |pos: usize| bounds.partition_point(|&b| b <= pos) - 1;
    let mut pos = skip;
    let mut n = 0;
    while pos < stream.len() {
        let len = if stream[pos] == 0xFF {
            4
        } else {
            let fl = stream[pos + 1];
            let size = u16::from_le_bytes([stream[pos + 2], stream[pos + 3]]) as usize;
            let mut h = 4;
            let mut extra = 0;
            if fl & 0x80 != 0 {
                extra = stream[pos + 4];
                h += 1;
            }
            h += if extra & 2 != 0 {
                4
            } else if fl & 8 != 0 {
                2
            } else {
                1
            };
            h += if extra & 1 != 0 {
                4
            } else if fl & 4 != 0 {
                2
            } else {
                1
            };
            h + size
        };
        if seg_of(pos) != seg_of(pos + len - 1) {
            n += 1;
        }
        pos += len;
    }
    n
}

#[test]
fn every_plain_trace_decodes_and_reencodes_byte_exactly() {
    let mut total_frames = 0;
    for name in PLAIN {
        let segs = load(name);
        // The TCP client sends the first segment (the handshake).
        let client_dir = segs[0].dir;
        for dir in [Dir::C2D, Dir::D2C] {
            let mine: Vec<&Segment> = segs.iter().filter(|s| s.dir == dir).collect();
            let is_client = dir == client_dir;
            let d = decode_direction(&mine, is_client);
            let skip = d
                .hello
                .as_ref()
                .map(|h| {
                    let mut v = Vec::new();
                    h.encode(&mut v).unwrap();
                    v.len()
                })
                .unwrap_or(0);
            assert_eq!(
                d.spanning,
                count_spanning_by_headers(&mine, skip),
                "{name} {dir:?}"
            );
            eprintln!(
                "trace {name} {dir:?}: {} bytes, {} frames, {} ACKs, {} elements span segments",
                d.bytes,
                d.frames.len(),
                d.acks.len(),
                d.spanning
            );
            // Frame 0 is the authentication frame in every direction.
            let auth = AuthFrame::from_frame(&d.frames[0]).expect("auth frame");
            assert_eq!(auth.frame_size, 1392, "{name} {dir:?}");
            // Every system frame decodes.
            for f in d.frames.iter().filter(|f| f.flags.system()) {
                SystemFrame::from_frame(f).unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            total_frames += d.frames.len();
            if is_client {
                let net = &d.hello.as_ref().unwrap().network_name;
                assert!(net == "*" || net == "iocafenet", "{net}");
            }
        }
    }
    // The 20 KiB transfer alone needs well over 100 frames in each direction.
    assert!(total_frames > 1000, "{total_frames}");
}

/// In the captures no element spans two TCP segments (every C flush ends on an element
/// boundary; the test above counts 0 in every trace). So the same byte streams are cut at other
/// places here: 1-byte, 7-byte and 1000-byte chunks must give exactly the same elements.
#[test]
fn resegmented_traces_decode_identically() {
    for name in ["a", "d", "f"] {
        let segs = load(name);
        let client_dir = segs[0].dir;
        for dir in [Dir::C2D, Dir::D2C] {
            let mine: Vec<&Segment> = segs.iter().filter(|s| s.dir == dir).collect();
            let reference = decode_direction(&mine, dir == client_dir);
            let mut stream: Vec<u8> = mine.iter().flat_map(|s| s.bytes.clone()).collect();
            if dir == client_dir {
                let (_, used) = ClientHello::decode(&stream).unwrap().unwrap();
                stream.drain(..used);
            }
            for chunk in [1usize, 7, 1000] {
                let mut dec = FrameDecoder::new(Framing::Socket, SOCKET_FRAME_SIZE);
                let mut frames = Vec::new();
                let mut acks = Vec::new();
                let mut spanning = 0;
                let mut consumed = 0;
                for (k, part) in stream.chunks(chunk).enumerate() {
                    dec.push(part);
                    while let Some((el, len)) = dec.next_element().unwrap() {
                        if consumed < k * chunk {
                            spanning += 1;
                        }
                        consumed += len;
                        match el {
                            Element::Ack(v) => acks.push(v),
                            Element::Frame(f) => frames.push(f),
                        }
                    }
                }
                assert_eq!(frames, reference.frames, "{name} {dir:?} chunk {chunk}");
                assert_eq!(acks, reference.acks);
                if chunk < 1000 {
                    assert!(spanning > 0);
                }
            }
        }
    }
}

fn direction(name: &str, dir: Dir) -> Decoded {
    let segs = load(name);
    let client_dir = segs[0].dir;
    let mine: Vec<&Segment> = segs.iter().filter(|s| s.dir == dir).collect();
    decode_direction(&mine, dir == client_dir)
}

const BLOCKS: [(&str, u32, u32); 7] = [
    ("exp", 44, 8),
    ("imp", 24, 9),
    ("dexp", 8205, 10),
    ("dimp", 24, 11),
    ("conf_exp", 279, 12),
    ("conf_imp", 279, 13),
    ("info", 1060, 14),
];

#[test]
fn auth_and_mblk_info_fields_of_traces_a_and_b() {
    for name in ["a", "b"] {
        let d2c = direction(name, Dir::D2C);
        assert_eq!(d2c.hello, Some(ClientHello::client("*")));
        let dev = AuthFrame::from_frame(&d2c.frames[0]).unwrap();
        assert_eq!(dev.user_name, "gina");
        assert_eq!(dev.device_nr, 0);
        assert_eq!(
            dev.unique_id,
            Some(hex("7c1f90a2d5d3c8164cac0bae").try_into().unwrap())
        );
        assert_eq!(dev.network_name, "iocafenet");
        assert_eq!(dev.flags, auth_flags::CONNECT_UP);
        assert_eq!(dev.password, "");
        assert_eq!(dev.frame_size, 1392);

        let c2d = direction(name, Dir::C2D);
        assert_eq!(c2d.hello, None);
        let ctl = AuthFrame::from_frame(&c2d.frames[0]).unwrap();
        assert_eq!(
            (
                ctl.user_name.as_str(),
                ctl.device_nr,
                ctl.network_name.as_str()
            ),
            ("ctl", 0, "iocafenet")
        );
        assert_eq!((ctl.flags, ctl.unique_id, ctl.frame_size), (0, None, 1392));

        let dev_infos: Vec<MblkInfo> = d2c.frames[1..8]
            .iter()
            .map(|f| MblkInfo::from_frame(f).unwrap())
            .collect();
        for (info, (bname, size, id)) in dev_infos.iter().zip(BLOCKS) {
            assert_eq!(info.mblk_name, bname);
            assert_eq!(info.size, size, "{bname}");
            assert_eq!(info.mblk_id, id, "{bname}");
            assert_eq!(info.device_name, "gina");
            assert_eq!(info.device_nr, 9000);
            assert_eq!(info.network_name, "iocafenet");
        }
        // The controller answers every block with its own id and device number 8999.
        let replies: Vec<MblkInfo> = c2d.frames[1..8]
            .iter()
            .map(|f| MblkInfo::from_frame(f).unwrap())
            .collect();
        let mut names: Vec<&str> = replies.iter().map(|i| i.mblk_name.as_str()).collect();
        names.sort_unstable();
        let mut want: Vec<&str> = BLOCKS.iter().map(|b| b.0).collect();
        want.sort_unstable();
        assert_eq!(names, want);
        for r in &replies {
            assert_eq!(r.device_nr, 8999);
            let size = BLOCKS.iter().find(|b| b.0 == r.mblk_name).unwrap().1;
            assert_eq!(r.size, size);
        }
    }
}

/// Replays one side of a trace through our [`Connection`]: the peer's segments are fed in
/// capture order, and we transmit whenever the reference sent next. When the peer has
/// authenticated (and, for a controller, sent its 7 info frames), we queue the same system frames
/// the reference sent (and, for a controller, its first 3 data frames). Returns what we sent and
/// the number of data events.
fn replay(name: &str, us: Dir, role: Role, side: Side) -> (Vec<u8>, usize) {
    let segs = load(name);
    let ours = direction(name, us);
    let t0 = Instant::now();
    let ident = match role {
        Role::Controller => LocalIdentity {
            device_name: "ctl".into(),
            device_nr: 9000,
            network_name: "iocafenet".into(),
            unique_id: None,
            password: String::new(),
        },
        Role::Device => LocalIdentity {
            device_name: "gina".into(),
            device_nr: 9000,
            network_name: "*".into(),
            unique_id: Some(hex("7c1f90a2d5d3c8164cac0bae").try_into().unwrap()),
            password: String::new(),
        },
    };
    let mut conn = Connection::new(ConnConfig::new(role, side, ident), t0);
    let mut sent: Vec<u8> = Vec::new();
    let mut data_events = 0usize;
    let mut infos = 0usize;
    let mut authenticated = false;
    let mut queued = false;
    for (i, s) in segs.iter().enumerate() {
        let now = t0 + Duration::from_secs_f64(s.secs);
        if s.dir != us {
            conn.handle_input(&s.bytes, now)
                .unwrap_or_else(|e| panic!("{name} at {}: {e}", s.secs));
            while let Some(ev) = conn.poll_event() {
                match ev {
                    ConnEvent::Authenticated {
                        peer, network_name, ..
                    } => {
                        assert_eq!(network_name, "iocafenet");
                        assert_eq!(peer.network_name, "iocafenet");
                        authenticated = true;
                    }
                    ConnEvent::MblkInfo(_) => infos += 1,
                    ConnEvent::Data { .. } => data_events += 1,
                    ConnEvent::RemoveMblk(_) => panic!("no remove requests in {name}"),
                }
            }
            let ready = match role {
                Role::Device => authenticated,
                Role::Controller => infos == 7,
            };
            if ready && !queued {
                for f in &ours.frames[1..8] {
                    let info = MblkInfo::from_frame(f).unwrap();
                    conn.queue_system_frame(SystemFrame::MblkInfo(info))
                        .unwrap();
                }
                if role == Role::Controller {
                    for f in &ours.frames[8..11] {
                        assert!(!f.flags.system());
                        conn.queue_data_frame(f.mblk_id, f.addr, f.flags, f.payload.clone())
                            .unwrap();
                    }
                }
                queued = true;
            }
        }
        conn.handle_timeout(now);
        // Send when the reference sent next, so ACK values match its timing.
        if segs.get(i + 1).is_none_or(|n| n.dir == us) {
            conn.poll_transmit(now, &mut sent);
        }
    }
    assert_eq!(conn.state(), &State::Running, "{name}");
    assert_eq!(infos, 7, "{name}");
    (sent, data_events)
}

fn first_segments(name: &str, dir: Dir, n: usize) -> Vec<u8> {
    load(name)
        .iter()
        .filter(|s| s.dir == dir)
        .take(n)
        .flat_map(|s| s.bytes.clone())
        .collect()
}

/// Our controller, listening, fed the device's bytes from trace a: it accepts everything, and
/// what it sends up to the first data frames (ACK, authentication, 7 info replies, 3 key frames)
/// is the reference controller's first three segments byte for byte.
#[test]
fn controller_server_replays_trace_a() {
    let (sent, data) = replay("a", Dir::C2D, Role::Controller, Side::Server);
    let d2c = direction("a", Dir::D2C);
    assert_eq!(
        data,
        d2c.frames.iter().filter(|f| !f.flags.system()).count()
    );
    let reference = first_segments("a", Dir::C2D, 3);
    assert_eq!(&sent[..reference.len()], &reference[..]);
}

/// Our device connecting up (network `*`, automatic number, unique id) against the reference
/// controller of trace a: handshake `53 02 2a 00`, initial ACK, then authentication with the
/// adopted network name and the 7 info frames, byte for byte as the C device sent them.
#[test]
fn device_client_replays_trace_a() {
    let (sent, data) = replay("a", Dir::D2C, Role::Device, Side::Client);
    let c2d = direction("a", Dir::C2D);
    assert_eq!(
        data,
        c2d.frames.iter().filter(|f| !f.flags.system()).count()
    );
    let reference = first_segments("a", Dir::D2C, 3);
    assert_eq!(&sent[..reference.len()], &reference[..]);
}

/// Trace d has the roles reversed: the device listens and the controller connects down. Our
/// device as the TCP server answers `FF 1D 00 00` and then its authentication and info frames
/// exactly like the C device; our controller as the TCP client sends the reference's handshake,
/// ACK and authentication.
#[test]
fn reversed_roles_replay_trace_d() {
    let (sent, data) = replay("d", Dir::D2C, Role::Device, Side::Server);
    assert!(data > 0);
    let reference = first_segments("d", Dir::D2C, 2);
    assert_eq!(&sent[..reference.len()], &reference[..]);
    let (sent, _) = replay("d", Dir::C2D, Role::Controller, Side::Client);
    let reference = first_segments("d", Dir::C2D, 3);
    assert_eq!(&sent[..reference.len()], &reference[..]);
}

/// Trace g is TLS 1.2 (ECDHE-RSA-CHACHA20-POLY1305): the IOCOM bytes are encrypted, so only
/// the TLS record layer is verified. Each direction must be an exact sequence of records with
/// content type 20..=23, version 3.1–3.3 and 1..=16384+256 bytes of body; the device (TLS client)
/// opens with a handshake record, both directions end up carrying application data, and the
/// change-cipher-spec record comes before any application data.
#[test]
fn tls_trace_g_tiles_into_records() {
    let segs = load("g");
    assert_eq!(segs[0].dir, Dir::D2C, "the device is the TLS client");
    for dir in [Dir::D2C, Dir::C2D] {
        let stream: Vec<u8> = segs
            .iter()
            .filter(|s| s.dir == dir)
            .flat_map(|s| s.bytes.clone())
            .collect();
        let mut pos = 0;
        let mut types = Vec::new();
        while pos < stream.len() {
            let hdr = stream.get(pos..pos + 5).expect("complete record header");
            let (ty, major, minor) = (hdr[0], hdr[1], hdr[2]);
            let len = u16::from_be_bytes([hdr[3], hdr[4]]) as usize;
            assert!((20..=23).contains(&ty), "{dir:?} record type {ty} at {pos}");
            assert_eq!(major, 3, "{dir:?} at {pos}");
            assert!((1..=3).contains(&minor), "{dir:?} at {pos}");
            assert!(
                (1..=16384 + 256).contains(&len),
                "{dir:?} record length {len}"
            );
            pos += 5 + len;
            types.push(ty);
        }
        assert_eq!(
            pos,
            stream.len(),
            "{dir:?}: records tile the stream exactly"
        );
        assert_eq!(types[0], 22, "{dir:?} starts with a handshake record");
        let ccs = types
            .iter()
            .position(|&t| t == 20)
            .expect("change cipher spec");
        let first_app = types
            .iter()
            .position(|&t| t == 23)
            .expect("application data");
        assert!(ccs < first_app);
        assert!(types.iter().filter(|&&t| t == 23).count() > 10, "{dir:?}");
    }
}
