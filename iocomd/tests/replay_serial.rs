//! Replays the serial traces of the C reference (s1: connect and 12 s idle; s2: program write
//! of 4 KiB; `tests/traces/README.md`, "Serial traces") into our cores, on the device side (our
//! serial client and device endpoint take gina's place, fed the reference controller's bytes)
//! and on the controller side (our serial server and controller endpoint take iocompython's
//! place, fed gina's bytes).
//!
//! Byte for byte: the connect sequence, the first write after it (`FA`, the initial 3-byte ACK
//! and the authentication frame), every idle keep-alive ACK (sent when the reference sent one,
//! with the same counter), the stream's conf_imp / conf_exp frames cut to the 96-byte frame
//! size, and the silence timeout closing the link 250 ms after the controller went away.

mod replay_support;

use iocomd::proto::conn::{
    CloseReason, ConnConfig, Connection, LocalIdentity, Role, SERIAL_SILENCE_TIMEOUT, Side,
};
use iocomd::proto::crc::crc16;
use iocomd::proto::endpoint::{ControllerEndpoint, DeviceEndpoint};
use iocomd::proto::frame::{Element, FrameDecoder, FrameFlags, Framing};
use iocomd::proto::mblk::DataFrame;
use iocomd::proto::serial::SerialConnect;
use iocomd::proto::stream::Direction;
use iocomd::proto::stream::controller::Progress;
use iocomd::proto::stream::device::DeviceEvent;
use iocomd::proto::sysframe::SystemFrame;
use replay_support::*;
use std::time::{Duration, Instant};

const S1: &str = "s1-serial-connect-idle.txt";
const S2: &str = "s2-serial-program-write-4k.txt";

/// The leading control characters (`F9`..`FD`) of one direction and the rest of its bytes,
/// up to trace time `until`.
fn split_control(name: &str, dir: &str, until: f64) -> (Vec<u8>, Vec<u8>) {
    let all: Vec<u8> = load(name)
        .into_iter()
        .filter(|(t, d, _)| d == dir && *t <= until)
        .flat_map(|(_, _, b)| b)
        .collect();
    let n = all
        .iter()
        .take_while(|b| (0xF9..=0xFD).contains(*b))
        .count();
    (all[..n].to_vec(), all[n..].to_vec())
}

/// Trace time of gina's second `FD`: it restarts its connect sequence once the controller
/// went away (the end of the captured connection).
fn restart_time(name: &str) -> f64 {
    load(name)
        .into_iter()
        .filter(|(_, d, b)| d == "D2C" && b.first() == Some(&0xFD))
        .map(|l| l.0)
        .nth(1)
        .unwrap()
}

/// The elements of a serial byte stream (after the connect sequence), CRCs checked.
fn elements(bytes: &[u8]) -> Vec<(Element, usize)> {
    let mut d = FrameDecoder::new(Framing::Serial, 96);
    d.push(bytes);
    let mut v = Vec::new();
    while let Some(e) = d.next_element().unwrap() {
        v.push(e);
    }
    assert_eq!(d.buffered(), 0, "no partial element left");
    v
}

fn data_frames(bytes: &[u8], mblk_id: u32) -> Vec<DataFrame> {
    elements(bytes)
        .into_iter()
        .filter_map(|(e, _)| match e {
            Element::Frame(f) if !f.flags.system() && f.mblk_id == mblk_id => Some(DataFrame {
                mblk_id: f.mblk_id,
                addr: f.addr,
                flags: f.flags.bits(),
                payload: f.payload,
            }),
            _ => None,
        })
        .collect()
}

/// One side of a replay: our connect sequence, then our connection.
struct Link {
    seq: SerialConnect,
    conn: Option<Connection>,
    cfg: ConnConfig,
    /// Our connect-sequence characters.
    control: Vec<u8>,
    /// Everything we wrote after the sequence, per write, with its trace time.
    writes: Vec<(f64, Vec<u8>)>,
    pending: Vec<u8>,
}

impl Link {
    fn new(cfg: ConnConfig, now: Instant) -> Self {
        let mut seq = SerialConnect::new(cfg.side, now);
        let mut control = Vec::new();
        seq.poll_transmit(&mut control);
        Self {
            seq,
            conn: None,
            cfg,
            control,
            writes: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// Received bytes: the connect sequence first, then the connection.
    fn input(&mut self, bytes: &[u8], now: Instant) {
        let rest = match &mut self.conn {
            Some(_) => bytes,
            None => match self.seq.handle_input(bytes, now) {
                None => {
                    self.seq.poll_transmit(&mut self.control);
                    return;
                }
                Some(used) => {
                    self.seq.poll_transmit(&mut self.pending);
                    self.conn = Some(Connection::new(self.cfg.clone(), now));
                    &bytes[used..]
                }
            },
        };
        let conn = self.conn.as_mut().unwrap();
        conn.handle_input(rest, now)
            .unwrap_or_else(|e| panic!("connection closed: {e}"));
    }

    /// Our write at a moment the reference wrote.
    fn transmit(&mut self, t: f64, now: Instant) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        conn.handle_timeout(now);
        let mut out = std::mem::take(&mut self.pending);
        conn.poll_transmit(now, &mut out);
        if !out.is_empty() {
            self.writes.push((t, out));
        }
    }

    fn stream(&self) -> Vec<u8> {
        self.writes.iter().flat_map(|(_, b)| b.clone()).collect()
    }
}

fn pump_infos(conn: &mut Connection, infos: Vec<iocomd::proto::sysframe::MblkInfo>) {
    for i in infos {
        conn.queue_system_frame(SystemFrame::MblkInfo(i)).unwrap();
    }
}

struct DeviceRun {
    base: Instant,
    link: Link,
    sink: Sink,
    events: Vec<DeviceEvent>,
    sent: Vec<DataFrame>,
    last_c2d: f64,
}

/// Our device (serial client, connect up, gina's block layout) replayed against the reference
/// controller's bytes; it writes when gina wrote.
fn replay_device(name: &str, nr: u32, until: f64) -> DeviceRun {
    let base = Instant::now();
    let identity = LocalIdentity::new("gina", nr, "*");
    let mut link = Link::new(
        ConnConfig::serial(Role::Device, Side::Client, identity),
        base,
    );
    let mut ep: DeviceEndpoint = reference_device_nr(nr);
    let (mut sink, mut source) = (Sink::default(), Source::new(vec![]));
    let (mut events, mut sent, mut last_c2d) = (Vec::new(), Vec::new(), 0.0);
    for (t, dir, bytes) in load(name).into_iter().filter(|l| l.0 <= until) {
        let now = base + Duration::from_secs_f64(t);
        if dir == "D2C" {
            if let Some(conn) = link.conn.as_mut() {
                for f in ep.transmit(CONN, conn.send_frame_size() as usize, usize::MAX) {
                    sent.push(f.clone());
                    conn.queue_data_frame(
                        f.mblk_id,
                        f.addr,
                        FrameFlags::from_bits(f.flags),
                        f.payload,
                    )
                    .unwrap();
                }
            }
            link.transmit(t, now);
            continue;
        }
        last_c2d = t;
        link.input(&bytes, now);
        let Some(conn) = link.conn.as_mut() else {
            continue;
        };
        while let Some(ev) = conn.poll_event() {
            let out = ep.handle(CONN, ev).unwrap();
            pump_infos(conn, out.infos);
        }
        for ev in ep.poll_streams(now, &mut sink, &mut source) {
            if ev.dir == Direction::ToDevice {
                events.push(ev.event);
            }
        }
    }
    DeviceRun {
        base,
        link,
        sink,
        events,
        sent,
        last_c2d,
    }
}

#[test]
fn s1_device_side_connect_auth_keepalives_and_silence() {
    // Until just before gina restarts its connect sequence (its FD at 13.14 s).
    let until = restart_time(S1) - 0.001;
    let (theirs_ctl, theirs) = split_control(S1, "D2C", until);
    let run = replay_device(S1, 9000, until);
    let link = &run.link;
    assert_eq!(link.control, theirs_ctl, "FD, FB");
    assert_eq!(link.control, [0xFD, 0xFB]);
    let ours = link.stream();
    // gina's first write: ACK of the controller's ACK + auth frame (29), then its auth frame:
    // number 0, flags 0x10 (connect up, no unique id over serial), network adopted.
    let (_, auth) = elements(&theirs)[1].clone();
    assert_eq!(ours[..3 + auth], theirs[..3 + auth]);
    assert_eq!(&ours[..3], &[0xFF, 0x1D, 0x00]);
    // Every frame is at most 96 bytes with a valid CRC; every ACK is 3 bytes.
    for (e, len) in elements(&ours) {
        match e {
            Element::Ack(_) => assert_eq!(len, 3),
            Element::Frame(_) => assert!(len <= 96, "{len}"),
        }
    }
    // Idle (after the initial sync, before the controller left): gina's lone ACKs are
    // keep-alives; ours go out at the same moments with the same counter.
    let idle: Vec<(f64, Vec<u8>)> = load(S1)
        .into_iter()
        .filter(|(t, d, b)| d == "D2C" && *t > 1.0 && *t < 12.8 && b.len() == 3)
        .map(|(t, _, b)| (t, b))
        .collect();
    assert!(idle.len() > 70, "{} keep-alives", idle.len());
    // When both ends' keep-alives cross (< 1 ms apart), gina wrote before reading the
    // controller's: ours counts those 3 bytes more.
    let mut same = 0;
    for (t, b) in &idle {
        let (_, w) = link
            .writes
            .iter()
            .find(|(wt, _)| wt == t)
            .unwrap_or_else(|| panic!("no keep-alive from us at {t}"));
        assert_eq!((w.len(), w[0], b[0]), (3, 0xFF, 0xFF), "at {t}");
        let (ours, theirs) = (
            u16::from_le_bytes([w[1], w[2]]),
            u16::from_le_bytes([b[1], b[2]]),
        );
        assert!(
            ours == theirs || ours == theirs + 3,
            "at {t}: {ours} vs {theirs}"
        );
        same += usize::from(ours == theirs);
    }
    assert!(
        same * 3 > idle.len(),
        "{same} of {} counters equal",
        idle.len()
    );
    let gaps: Vec<f64> = idle.windows(2).map(|w| w[1].0 - w[0].0).collect();
    assert!(gaps.iter().all(|g| (0.150..0.160).contains(g)), "{gaps:?}");
    // The controller stopped; 250 ms after its last byte our link closes for silence, like
    // gina's (its new FD came 257 ms after).
    let last = run.base + Duration::from_secs_f64(run.last_c2d);
    let mut run = run;
    let conn = run.link.conn.as_mut().unwrap();
    assert!(!conn.is_closed(), "{:?}", conn.close_reason());
    conn.handle_timeout(last + SERIAL_SILENCE_TIMEOUT - Duration::from_millis(1));
    assert!(!conn.is_closed());
    conn.handle_timeout(last + SERIAL_SILENCE_TIMEOUT);
    assert_eq!(
        conn.close_reason(),
        Some(&CloseReason::Silence(SERIAL_SILENCE_TIMEOUT))
    );
}

#[test]
fn s2_device_side_receives_the_program_like_gina() {
    let expected = file("test4k.bin");
    let until = restart_time(S2) - 0.001;
    let run = replay_device(S2, 7, until);
    assert_eq!(run.link.control, [0xFD, 0xFB]);
    assert_eq!(run.sink.opened, [1]);
    assert_eq!(run.sink.closed, [true], "CRC accepted");
    assert!(run.sink.data == expected, "content differs from test4k.bin");
    assert_eq!(
        run.events,
        [
            DeviceEvent::Started { select: 1 },
            DeviceEvent::Completed {
                select: 1,
                bytes: 4096,
                crc: crc16(&expected)
            }
        ]
    );
    // Our conf_exp frames (the controller's id 12) equal gina's, except the final tod_err:
    // 4 (pending, we install first) where the neutralised reference published 6.
    let (_, theirs) = split_control(S2, "D2C", until);
    let theirs = data_frames(&theirs, 12);
    let ours: Vec<&DataFrame> = run.sent.iter().filter(|f| f.mblk_id == 12).collect();
    assert!(theirs.len() > 4096 / 256, "{}", theirs.len());
    assert_eq!(ours.len(), theirs.len());
    let mut differing = 0;
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        if *a == b {
            continue;
        }
        differing += 1;
        let mut patched = (*a).clone();
        assert_eq!(
            patched.payload.get(3),
            Some(&4),
            "frame {i}: {a:?} vs {b:?}"
        );
        patched.payload[3] = 6;
        assert_eq!(&patched, b, "frame {i}");
    }
    assert_eq!(differing, 1);
    for (e, len) in elements(&run.link.stream()) {
        if let Element::Frame(_) = e {
            assert!(len <= 96);
        }
    }
}

/// Our controller (serial server, like iocompython's serial `EndPoint`) replayed against
/// gina's bytes: it writes when the reference controller wrote; `upload` starts a program
/// write once the device is ready.
fn replay_controller(
    name: &str,
    upload: Option<&[u8]>,
) -> (Link, Vec<DataFrame>, Option<Progress>) {
    let until = restart_time(name) - 0.001;
    let base = Instant::now();
    let identity = LocalIdentity::new("ispy", 9000, "iocafenet");
    let mut link = Link::new(
        ConnConfig::serial(Role::Controller, Side::Server, identity),
        base,
    );
    let mut ep = ControllerEndpoint::new("gina");
    let data = upload.map(<[u8]>::to_vec).unwrap_or_default();
    let (mut sink, mut source) = (Sink::default(), Source::new(data));
    let (mut started, mut result, mut sent) = (false, None, Vec::new());
    for (t, dir, bytes) in load(name).into_iter().filter(|l| l.0 <= until) {
        let now = base + Duration::from_secs_f64(t);
        if dir == "D2C" {
            link.input(&bytes, now);
            if let Some(conn) = link.conn.as_mut() {
                while let Some(ev) = conn.poll_event() {
                    let out = ep.handle(CONN, ev).unwrap();
                    pump_infos(conn, out.infos);
                }
            }
            if upload.is_some() && !started && ep.ready() {
                ep.start_upload(1).unwrap();
                started = true;
            }
        } else {
            if let Some(conn) = link.conn.as_mut() {
                for f in ep.transmit(CONN, conn.send_frame_size() as usize, usize::MAX) {
                    sent.push(f.clone());
                    conn.queue_data_frame(
                        f.mblk_id,
                        f.addr,
                        FrameFlags::from_bits(f.flags),
                        f.payload,
                    )
                    .unwrap();
                }
            }
            link.transmit(t, now);
        }
        if started && result.is_none() {
            let p = ep.poll_transfer(now, &mut source, &mut sink).unwrap();
            if p != Progress::Running {
                result = Some(p);
            }
        }
    }
    (link, sent, result)
}

#[test]
fn s1_controller_side_connect_sequence_and_first_write_are_the_references() {
    let (link, _, _) = replay_controller(S1, None);
    let (ctl, theirs) = split_control(S1, "C2D", f64::MAX);
    // F9, FC; then FA, the initial ACK and the authentication frame in one write, exactly.
    assert_eq!(ctl, [0xF9, 0xFC, 0xFA]);
    assert_eq!(link.control, ctl[..2]);
    let auth_len = elements(&theirs)[1].1;
    let first = &link.writes[0].1;
    assert_eq!(
        first[..],
        [&[0xFA][..], &theirs[..3 + auth_len]].concat()[..]
    );
    assert_eq!(&first[1..4], &[0xFF, 0x00, 0x00]);
    for (e, len) in elements(&link.stream()[1..]) {
        match e {
            Element::Ack(_) => assert_eq!(len, 3),
            Element::Frame(_) => assert!(len <= 96),
        }
    }
    // gina's new FD (it restarts after the reference controller left) is a frame number error
    // for a link still connected: ours closes and would start its own sequence again.
    let mut conn = link.conn.unwrap();
    assert!(!conn.is_closed());
    let e = conn.handle_input(&[0xFD], Instant::now()).unwrap_err();
    assert!(
        matches!(
            e,
            CloseReason::Frame(iocomd::proto::frame::FrameError::FrameNr { got: 0xFD, .. })
        ),
        "{e}"
    );
}

#[test]
fn s2_controller_side_uploads_with_the_references_frames() {
    let data = file("test4k.bin");
    let (link, sent, result) = replay_controller(S2, Some(&data));
    assert!(!link.conn.as_ref().unwrap().is_closed());
    assert_eq!(
        result,
        Some(Progress::Completed {
            bytes: 4096,
            crc: crc16(&data),
            device_err: Some(6)
        })
    );
    // Our conf_imp frames (gina's id 13) equal the reference controller's, cut to the serial
    // frame size (89 payload bytes behind a 7-byte header fill a 96-byte frame).
    let (_, theirs) = split_control(S2, "C2D", f64::MAX);
    let theirs = data_frames(&theirs, 13);
    let ours: Vec<&DataFrame> = sent.iter().filter(|f| f.mblk_id == 13).collect();
    assert!(theirs.iter().filter(|f| f.payload.len() == 89).count() >= 4096 / 256);
    // Including the end: CRC (tod_cs) with the final tod_head, then tod_cmd back to idle.
    assert_eq!(ours.len(), theirs.len());
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert_eq!(*a, b, "conf_imp frame {i}");
    }
}
