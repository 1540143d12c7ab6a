//! Replays captured reference traces into our cores: the controller→device bytes of the
//! program-write traces b, d, e and f go into our device (P1's `Connection` in the device role,
//! our `DeviceEndpoint` and tod reader) and must yield exactly the transferred files; the
//! device→controller bytes of trace c go into our controller core and must yield the file the
//! reference controller read from select 3.
//!
//! Our device is configured with the reference block layout (exp 44, imp 24, dexp 8205,
//! dimp 24, conf_exp/conf_imp 279 with 257-byte rings) so that the reference controller's
//! frames (addressed with the reference device's ids 8..14) apply.

use iocomd::proto::conn::{ConnConfig, Connection, LocalIdentity, Role, Side};
use iocomd::proto::crc::crc16;
use iocomd::proto::endpoint::{ControllerEndpoint, DeviceEndpoint};
use iocomd::proto::frame::{Element, FrameDecoder, FrameFlags, Framing};
use iocomd::proto::mblk::DataFrame;
use iocomd::proto::stream::controller::Progress;
use iocomd::proto::stream::device::DeviceEvent;
use iocomd::proto::stream::{ChunkSource, Direction, SourceRead};
use iocomd::proto::sysframe::SystemFrame;
use std::time::{Duration, Instant};

mod replay_support;
use replay_support::*;

/// Drives a connection and a core through one received segment.
fn pump_device(conn: &mut Connection, ep: &mut DeviceEndpoint) {
    while let Some(ev) = conn.poll_event() {
        let out = ep.handle(CONN, ev).unwrap();
        for info in out.infos {
            conn.queue_system_frame(SystemFrame::MblkInfo(info))
                .unwrap();
        }
    }
}

fn transmit_device(
    conn: &mut Connection,
    ep: &mut DeviceEndpoint,
    now: Instant,
    sent: &mut Vec<DataFrame>,
) {
    for f in ep.transmit(CONN, conn.send_frame_size() as usize, usize::MAX) {
        sent.push(f.clone());
        conn.queue_data_frame(f.mblk_id, f.addr, FrameFlags::from_bits(f.flags), f.payload)
            .unwrap();
    }
    let mut out = Vec::new();
    conn.poll_transmit(now, &mut out);
}

/// The data frames one side (`"D2C"`: the reference device, `"C2D"`: the reference
/// controller) sent in a trace.
fn reference_frames(name: &str, side: &str) -> Vec<DataFrame> {
    let mut stream: Vec<u8> = load(name)
        .into_iter()
        .filter(|(_, dir, _)| dir == side)
        .flat_map(|(_, _, b)| b)
        .collect();
    // Device as client: `53 len "*\0"`; as server it sends no hello.
    if stream.first() == Some(&0x53) {
        let len = 2 + usize::from(stream[1]);
        stream.drain(..len);
    }
    let mut dec = FrameDecoder::new(Framing::Socket, 1392);
    dec.push(&stream);
    let mut out = Vec::new();
    while let Some((el, _)) = dec.next_element().unwrap() {
        if let Element::Frame(f) = el
            && !f.flags.system()
        {
            out.push(DataFrame {
                mblk_id: f.mblk_id,
                addr: f.addr,
                flags: f.flags.bits(),
                payload: f.payload,
            });
        }
    }
    out
}

struct DeviceReplay {
    sink: Sink,
    events: Vec<DeviceEvent>,
    sent: Vec<DataFrame>,
}

/// Replays a trace into our device; `frd_data` is what our device sends for a read.
fn replay_device_trace(name: &str, side: Side, frd_data: Vec<u8>) -> DeviceReplay {
    let base = Instant::now();
    let identity = LocalIdentity {
        device_name: "gina".into(),
        device_nr: 9000,
        network_name: "*".into(),
        unique_id: Some([7; 12]),
        password: String::new(),
    };
    let mut conn = Connection::new(ConnConfig::new(Role::Device, side, identity), base);
    let mut ep = reference_device();
    let (mut sink, mut source) = (Sink::default(), Source::new(frd_data));
    let mut events = Vec::new();
    let mut sent = Vec::new();
    for (t, dir, bytes) in load(name) {
        let now = base + Duration::from_secs_f64(t);
        if dir == "D2C" {
            // The reference device sent here: we send what has changed by now, so our
            // snapshots cover the same changes as its.
            transmit_device(&mut conn, &mut ep, now, &mut sent);
            continue;
        }
        conn.handle_input(&bytes, now)
            .unwrap_or_else(|e| panic!("{name} at {t}: connection closed: {e}"));
        pump_device(&mut conn, &mut ep);
        for ev in ep.poll_streams(now, &mut sink, &mut source) {
            if ev.dir == Direction::ToDevice {
                events.push(ev.event);
            }
        }
    }
    assert!(!conn.is_closed(), "{name}: {:?}", conn.close_reason());
    DeviceReplay { sink, events, sent }
}

fn assert_program_write(name: &str, side: Side, expected_file: &str, frd_data: Vec<u8>) {
    let expected = file(expected_file);
    let DeviceReplay { sink, events, sent } = replay_device_trace(name, side, frd_data);
    assert_eq!(sink.opened, [1], "{name}: one transfer to select 1");
    assert_eq!(sink.closed, [true], "{name}: CRC accepted");
    assert_eq!(sink.data.len(), expected.len(), "{name}: length");
    assert!(
        sink.data == expected,
        "{name}: content differs from {expected_file}"
    );
    assert_eq!(
        events,
        [
            DeviceEvent::Started { select: 1 },
            DeviceEvent::Completed {
                select: 1,
                bytes: expected.len() as u64,
                crc: crc16(&expected)
            }
        ],
        "{name}"
    );
    // Our conf_exp frames (the controller's id 12), sent when the reference device sent,
    // equal the reference device's byte for byte, except one: we publish tod_err = 4
    // (PENDING) with tod_state = 0 where the neutralised reference back end published 6.
    let ours: Vec<&DataFrame> = sent.iter().filter(|f| f.mblk_id == 12).collect();
    let reference = reference_frames(name, "D2C");
    let theirs: Vec<&DataFrame> = reference.iter().filter(|f| f.mblk_id == 12).collect();
    assert_eq!(
        ours.len(),
        theirs.len(),
        "{name}: number of conf_exp frames"
    );
    assert!(
        theirs.len() > expected.len() / 256,
        "{name}: one frame per ring step at least"
    );
    let mut differing = 0;
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        if a == b {
            continue;
        }
        differing += 1;
        // addr 0, payload: tod_state (2 bytes), tod_err state, tod_err value, ...
        let mut patched = (*a).clone();
        assert_eq!(
            patched.payload.get(3),
            Some(&4),
            "{name}: frame {i}: {a:?} vs {b:?}"
        );
        patched.payload[3] = 6;
        assert_eq!(&patched, *b, "{name}: frame {i}");
    }
    assert_eq!(differing, 1, "{name}: only the final tod_err differs");
}

#[test]
fn trace_b_program_write_4k() {
    assert_program_write(
        "b-listen-program-write-4k.txt",
        Side::Client,
        "test4k.bin",
        vec![],
    );
}

#[test]
fn trace_d_device_listens_program_write_4k() {
    // The trace also reads select 3: our device answers with the reference's defaults.
    let defaults = file("read-select3-result.bin");
    assert_program_write(
        "d-connect-idle-write-read.txt",
        Side::Server,
        "test4k.bin",
        defaults,
    );
}

#[test]
fn trace_e_program_write_random_4k() {
    assert_program_write(
        "e-listen-program-write-4k-random.txt",
        Side::Client,
        "rand4k.bin",
        vec![],
    );
}

#[test]
fn trace_f_program_write_20k() {
    assert_program_write(
        "f-listen-program-write-20k.txt",
        Side::Client,
        "test20k.bin",
        vec![],
    );
}

#[test]
fn trace_c_controller_reads_select_3() {
    let base = Instant::now();
    let identity = LocalIdentity {
        device_name: "ctl".into(),
        device_nr: 0,
        network_name: "iocafenet".into(),
        unique_id: None,
        password: String::new(),
    };
    let mut conn = Connection::new(
        ConnConfig::new(Role::Controller, Side::Server, identity),
        base,
    );
    let mut ep = ControllerEndpoint::new("gina");
    let (mut sink, mut source) = (Sink::default(), Source::new(vec![]));
    let mut started = false;
    let mut result = None;
    let mut sent = Vec::new();
    for (t, dir, bytes) in load("c-listen-read-select3.txt") {
        let now = base + Duration::from_secs_f64(t);
        if dir == "C2D" {
            // The reference controller sent here.
            for f in ep.transmit(CONN, conn.send_frame_size() as usize, usize::MAX) {
                sent.push(f.clone());
                conn.queue_data_frame(f.mblk_id, f.addr, FrameFlags::from_bits(f.flags), f.payload)
                    .unwrap();
            }
            let mut out = Vec::new();
            conn.poll_transmit(now, &mut out);
            continue;
        }
        conn.handle_input(&bytes, now)
            .unwrap_or_else(|e| panic!("trace c at {t}: connection closed: {e}"));
        while let Some(ev) = conn.poll_event() {
            let out = ep.handle(CONN, ev).unwrap();
            for info in out.infos {
                conn.queue_system_frame(SystemFrame::MblkInfo(info))
                    .unwrap();
            }
        }
        if !started && ep.ready() {
            ep.start_download(3).unwrap();
            started = true;
        }
        if started && result.is_none() {
            let p = ep.poll_transfer(now, &mut source, &mut sink).unwrap();
            if p != Progress::Running {
                result = Some(p);
            }
        }
    }
    // Our conf_imp frames (the device's id 13) equal the reference controller's.
    let ours: Vec<&DataFrame> = sent.iter().filter(|f| f.mblk_id == 13).collect();
    let reference = reference_frames("c-listen-read-select3.txt", "C2D");
    let theirs: Vec<&DataFrame> = reference.iter().filter(|f| f.mblk_id == 13).collect();
    assert_eq!(theirs.len(), 4, "key frame, start, tail + cmd 0, tail 0");
    assert_eq!(ours, theirs);
    let expected = file("read-select3-result.bin");
    let info = ep.peer_info().unwrap().as_ref().unwrap();
    assert_eq!(info.signal("conf_exp", "frd_buf").unwrap().n, 257);
    assert_eq!(sink.data, expected);
    assert_eq!(sink.opened, [3]);
    assert_eq!(sink.closed, [true]);
    assert_eq!(
        result,
        Some(Progress::Completed {
            bytes: 228,
            crc: crc16(&expected),
            device_err: Some(6)
        })
    );
}

/// Replays the device→controller side of an upload trace into our controller core, which
/// uploads the same file; our conf_imp frames must equal the reference controller's.
fn assert_controller_upload(name: &str, side: Side, upload: &str) {
    let base = Instant::now();
    let identity = LocalIdentity {
        device_name: "ctl".into(),
        device_nr: 0,
        network_name: "iocafenet".into(),
        unique_id: None,
        password: String::new(),
    };
    let mut conn = Connection::new(ConnConfig::new(Role::Controller, side, identity), base);
    let mut ep = ControllerEndpoint::new("gina");
    let data = file(upload);
    let (mut sink, mut source) = (Sink::default(), Source::new(data.clone()));
    let mut started = false;
    let mut result = None;
    let mut sent = Vec::new();
    for (t, dir, bytes) in load(name) {
        let now = base + Duration::from_secs_f64(t);
        if dir == "D2C" {
            conn.handle_input(&bytes, now)
                .unwrap_or_else(|e| panic!("{name} at {t}: connection closed: {e}"));
            while let Some(ev) = conn.poll_event() {
                let out = ep.handle(CONN, ev).unwrap();
                for info in out.infos {
                    conn.queue_system_frame(SystemFrame::MblkInfo(info))
                        .unwrap();
                }
            }
            if !started && ep.ready() {
                ep.start_upload(1).unwrap();
                started = true;
            }
        }
        if dir == "C2D" {
            // The reference controller sent here what its last stream call wrote.
            for f in ep.transmit(CONN, conn.send_frame_size() as usize, usize::MAX) {
                sent.push(f.clone());
                conn.queue_data_frame(f.mblk_id, f.addr, FrameFlags::from_bits(f.flags), f.payload)
                    .unwrap();
            }
            let mut out = Vec::new();
            conn.poll_transmit(now, &mut out);
        }
        // It ran its stream after received data and again after each send (on its timer).
        if started && result.is_none() {
            let p = ep.poll_transfer(now, &mut source, &mut sink).unwrap();
            if p != Progress::Running {
                result = Some(p);
            }
        }
    }
    assert!(!conn.is_closed(), "{name}: {:?}", conn.close_reason());
    assert_eq!(
        result,
        Some(Progress::Completed {
            bytes: data.len() as u64,
            crc: crc16(&data),
            device_err: Some(6)
        }),
        "{name}"
    );
    let ours: Vec<&DataFrame> = sent.iter().filter(|f| f.mblk_id == 13).collect();
    let reference = reference_frames(name, "C2D");
    let theirs: Vec<&DataFrame> = reference.iter().filter(|f| f.mblk_id == 13).collect();
    assert!(theirs.len() > data.len() / 256, "{name}");
    // The reference closed its stream 30 ms later, a last frame resetting tod_head to 0; we
    // leave tod_head for the next transfer's start.
    let (last, theirs) = theirs.split_last().unwrap();
    assert_eq!((last.addr, last.flags), (7, 0x11), "{name}: tod_head reset");
    assert_eq!(
        ours.len(),
        theirs.len(),
        "{name}: number of conf_imp frames"
    );
    for (i, (a, b)) in ours.iter().zip(theirs.iter()).enumerate() {
        assert_eq!(a, b, "{name}: conf_imp frame {i}");
    }
}

#[test]
fn trace_b_our_controller_uploads_like_the_reference() {
    assert_controller_upload("b-listen-program-write-4k.txt", Side::Server, "test4k.bin");
}

#[test]
fn trace_e_our_controller_uploads_like_the_reference() {
    assert_controller_upload(
        "e-listen-program-write-4k-random.txt",
        Side::Server,
        "rand4k.bin",
    );
}

#[test]
fn trace_f_our_controller_uploads_like_the_reference() {
    assert_controller_upload(
        "f-listen-program-write-20k.txt",
        Side::Server,
        "test20k.bin",
    );
}

/// A source that refuses every select with `code`.
struct Refuse(u8);

impl ChunkSource for Refuse {
    fn open(&mut self, _select: i64) -> Result<(), u8> {
        Err(self.0)
    }
    fn read(&mut self, _buf: &mut [u8]) -> Result<SourceRead, u8> {
        Err(self.0)
    }
}

#[test]
fn trace_h_device_refuses_a_missing_select_like_the_reference() {
    let name = "h-listen-read-select2-missing.txt";
    let base = Instant::now();
    let identity = LocalIdentity {
        device_name: "gina".into(),
        device_nr: 9000,
        network_name: "*".into(),
        unique_id: Some([7; 12]),
        password: String::new(),
    };
    let mut conn = Connection::new(ConnConfig::new(Role::Device, Side::Client, identity), base);
    let mut ep = reference_device();
    let (mut sink, mut source) = (Sink::default(), Refuse(140));
    let (mut events, mut sent) = (Vec::new(), Vec::new());
    for (t, dir, bytes) in load(name) {
        let now = base + Duration::from_secs_f64(t);
        if dir == "D2C" {
            transmit_device(&mut conn, &mut ep, now, &mut sent);
            continue;
        }
        conn.handle_input(&bytes, now).unwrap();
        pump_device(&mut conn, &mut ep);
        events.extend(ep.poll_streams(now, &mut sink, &mut source));
    }
    let frd: Vec<DeviceEvent> = events
        .into_iter()
        .filter(|e| e.dir == Direction::FromDevice)
        .map(|e| e.event)
        .collect();
    assert!(matches!(
        frd.as_slice(),
        [
            DeviceEvent::Failed {
                select: 2,
                error: iocomd::proto::stream::StreamError::Local(
                    iocomd::proto::stream::LocalError { code: 140, .. }
                ),
                ..
            },
            DeviceEvent::Released
        ]
    ));
    let ours: Vec<&DataFrame> = sent.iter().filter(|f| f.mblk_id == 12).collect();
    let reference = reference_frames(name, "D2C");
    let theirs: Vec<&DataFrame> = reference.iter().filter(|f| f.mblk_id == 12).collect();
    assert_eq!(theirs.len(), 3, "key frame, refusal, release");
    assert_eq!(ours, theirs);
}

#[test]
fn trace_h_controller_gives_up_like_the_reference() {
    let name = "h-listen-read-select2-missing.txt";
    let base = Instant::now();
    let identity = LocalIdentity {
        device_name: "ctl".into(),
        device_nr: 0,
        network_name: "iocafenet".into(),
        unique_id: None,
        password: String::new(),
    };
    let mut conn = Connection::new(
        ConnConfig::new(Role::Controller, Side::Server, identity),
        base,
    );
    let mut ep = ControllerEndpoint::new("gina");
    let (mut sink, mut source) = (Sink::default(), Source::new(vec![]));
    let (mut started, mut result, mut sent) = (false, None, Vec::new());
    let mut lines = load(name);
    // The reference started just before its first send at 0.351 s and gave up 5 s later.
    lines.push((0.349, "tick".into(), vec![]));
    lines.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (t, dir, bytes) in lines {
        let now = base + Duration::from_secs_f64(t);
        if dir == "D2C" {
            conn.handle_input(&bytes, now).unwrap();
            while let Some(ev) = conn.poll_event() {
                let out = ep.handle(CONN, ev).unwrap();
                for info in out.infos {
                    conn.queue_system_frame(SystemFrame::MblkInfo(info))
                        .unwrap();
                }
            }
        }
        if !started && ep.ready() && t >= 0.349 {
            ep.start_download(2).unwrap();
            started = true;
        }
        if started && result.is_none() {
            let p = ep.poll_transfer(now, &mut source, &mut sink).unwrap();
            if p != Progress::Running {
                result = Some(p);
            }
        }
        if dir == "C2D" {
            for f in ep.transmit(CONN, conn.send_frame_size() as usize, usize::MAX) {
                sent.push(f.clone());
                conn.queue_data_frame(f.mblk_id, f.addr, FrameFlags::from_bits(f.flags), f.payload)
                    .unwrap();
            }
            let mut out = Vec::new();
            conn.poll_transmit(now, &mut out);
        }
    }
    // Like the reference: the device's INTERRUPT (frd_err 140) is waited out, then failure.
    assert_eq!(
        result,
        Some(Progress::Failed(
            iocomd::proto::stream::StreamError::Timeout
        ))
    );
    assert_eq!(sink.closed, [false]);
    let ours: Vec<&DataFrame> = sent.iter().filter(|f| f.mblk_id == 13).collect();
    let reference = reference_frames(name, "C2D");
    let theirs: Vec<&DataFrame> = reference.iter().filter(|f| f.mblk_id == 13).collect();
    assert_eq!(theirs.len(), 3, "key frame, start, cmd 0");
    assert_eq!(ours, theirs);
}
