//! Every transition and rejection of the four stream machines, with literal inputs, over a
//! device/controller pair of real memory blocks.

use super::controller::{self, ControllerReader, ControllerWriter, Progress};
use super::device::{DeviceEvent, DeviceReader, DeviceWriter, ReaderState, WriterState};
use super::testutil::{Pair, VecSink, VecSource};
use super::{StreamError, cmd, status};
use crate::proto::crc::crc16;
use std::time::{Duration, Instant};

const TICK: Duration = Duration::from_millis(10);

fn get(sig: &crate::proto::signals::Signal, b: &crate::proto::mblk::Mblk) -> (i64, u8) {
    sig.get_int(b).unwrap()
}

/// Runs an upload until the controller finishes; returns the device events.
fn upload(
    p: &mut Pair,
    w: &mut ControllerWriter,
    r: &mut DeviceReader,
    src: &mut VecSource,
    sink: &mut VecSink,
    t: &mut Instant,
) -> (Progress, Vec<DeviceEvent>) {
    let mut events = Vec::new();
    for _ in 0..100_000 {
        let prog = w.poll(&p.ctl_exp, &mut p.ctl_imp, *t, src);
        p.sync();
        if let Some(ev) = r.poll(&mut p.dev_exp, &p.dev_imp, *t, sink) {
            events.push(ev);
        }
        p.sync();
        *t += TICK;
        if prog != Progress::Running {
            return (prog, events);
        }
    }
    panic!("upload did not finish");
}

fn device_pair(ring: usize) -> (Pair, DeviceReader, Instant) {
    let mut p = Pair::new(ring, 257);
    let r = DeviceReader::new(p.tod.clone());
    r.init(&mut p.dev_exp).unwrap();
    DeviceWriter::new(p.frd.clone())
        .init(&mut p.dev_exp)
        .unwrap();
    p.sync();
    (p, r, Instant::now())
}

#[test]
fn spec_section_7_upload_of_3000_bytes() {
    let (mut p, mut r, mut t) = device_pair(257);
    let file: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
    assert_eq!(crc16(&file), 0xB6E5);
    let mut w = ControllerWriter::new(p.tod.clone(), 1);
    let (mut src, mut sink) = (VecSource::new(file.clone()), VecSink::default());
    let (prog, events) = upload(&mut p, &mut w, &mut r, &mut src, &mut sink, &mut t);
    assert_eq!(
        prog,
        Progress::Completed {
            bytes: 3000,
            crc: 0xB6E5,
            device_err: Some(status::PENDING)
        }
    );
    assert_eq!(
        events,
        [
            DeviceEvent::Started { select: 1 },
            DeviceEvent::Completed {
                select: 1,
                bytes: 3000,
                crc: 0xB6E5
            }
        ]
    );
    assert_eq!(sink.data, file);
    assert_eq!(
        (sink.opened.as_slice(), sink.closed.as_slice()),
        (&[1][..], &[true][..])
    );
    // The frames of the spec's lock-step table (section 7), after the key frames.
    let log: Vec<(bool, Vec<u8>, u32, u8)> = p
        .log
        .iter()
        .skip_while(|(_, f)| f.flags & 0x12 == 0x12)
        .map(|(d, f)| (*d, f.payload.clone(), f.addr, f.flags))
        .collect();
    let row = |i: usize| &log[i];
    // 1 C: open + select 1 + cmd 1; 1 D: tod_err/tail reset, state RUNNING.
    assert_eq!(row(0), &(false, vec![3, 1, 3, 1, 2, 0, 0, 2], 0, 0x11));
    assert_eq!(row(1), &(true, vec![1, 1, 2, 0, 2], 0, 0x11));
    // 2 C: 256 bytes + head 256; 2 D: tail 256.
    assert_eq!((row(2).2, row(2).3, row(2).1.len()), (7, 0x11, 262));
    assert_eq!(&row(2).1[..8], [1, 0, 1, 0, 0, 2, 0, 1]);
    assert_eq!(row(3), &(true, vec![1, 0, 1], 4, 0x11));
    // 3 C: delta +1 everywhere, head 255 (raw, 260 bytes); 3 D: tail 255.
    assert_eq!((row(4).2, row(4).3, row(4).1.len()), (8, 0x11, 260));
    assert_eq!(&row(4).1[..6], [0xFF, 0xFF, 0, 0, 0, 1]);
    assert_eq!(row(5), &(true, vec![0xFF, 0xFF], 5, 0x11));
    // 13 C: the last 184 bytes, delta + compressed (a zero run of 73), head 173.
    let mut r13 = vec![0x01, 0xB7, 0x04, 0xAD];
    r13.extend([1; 173]);
    r13.extend([0x49, 0x0B]);
    r13.extend([1; 11]);
    assert_eq!(row(24), &(false, r13, 8, 0x13));
    assert_eq!(row(25), &(true, vec![0xB7], 5, 0x11));
    // 14 C: cs = 0xB6E5 and cmd 2 in their own snapshot.
    assert_eq!(row(26), &(false, vec![1, 0, 0, 1, 0xE5, 0xB6], 1, 0x11));
    // 15 D: idle, tail 0; tod_err = 4 (pending) where the C device leaves 0.
    assert_eq!(
        row(27),
        &(true, vec![0xFF, 0xFF, 1, 4, 0xFF, 0x53], 0, 0x11)
    );
    // 16 C: cmd back to 0.
    assert_eq!(row(28), &(false, vec![0xFF, 0xFE], 0, 0x11));
    assert_eq!(log.len(), 29);
    // PENDING went out with tod_state = IDLE; the final code follows.
    assert_eq!(get(&p.tod.state, &p.ctl_exp), (0, 2));
    assert_eq!(
        get(&p.tod.cmd, &p.dev_imp),
        (0, 2),
        "controller set cmd back to idle"
    );
    r.report(&mut p.dev_exp, status::COMPLETED).unwrap();
    p.sync();
    assert_eq!(w.device_status(&p.ctl_exp), Some(status::COMPLETED));
}

#[test]
fn big_ring_moves_a_file_in_one_step() {
    let (mut p, mut r, mut t) = device_pair(64 * 1024 + 1);
    let file: Vec<u8> = (0..50_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let mut w = ControllerWriter::new(p.tod.clone(), 1);
    let (mut src, mut sink) = (VecSource::new(file.clone()), VecSink::default());
    let (prog, _) = upload(&mut p, &mut w, &mut r, &mut src, &mut sink, &mut t);
    assert!(matches!(prog, Progress::Completed { bytes: 50_000, .. }));
    assert_eq!(sink.data, file);
}

/// Starts a transfer by hand: controller writes cmd = 1 (select 1) and the device opens.
fn manual_start(p: &mut Pair, r: &mut DeviceReader, sink: &mut VecSink, t: Instant) {
    p.tod.head.set_int(&mut p.ctl_imp, 0).unwrap();
    p.tod.cs.set_int(&mut p.ctl_imp, 0).unwrap();
    p.tod.select.set_int(&mut p.ctl_imp, 1).unwrap();
    p.tod.cmd.set_int(&mut p.ctl_imp, cmd::RUNNING).unwrap();
    p.sync();
    assert_eq!(
        r.poll(&mut p.dev_exp, &p.dev_imp, t, sink),
        Some(DeviceEvent::Started { select: 1 })
    );
    p.sync();
    assert_eq!(get(&p.tod.state, &p.ctl_exp), (1, 3));
}

fn put_ring(p: &mut Pair, at: usize, data: &[u8], head: i64) {
    p.tod.buf.write_bytes(&mut p.ctl_imp, at, data).unwrap();
    p.tod.head.set_int(&mut p.ctl_imp, head).unwrap();
}

#[test]
fn device_reader_reports_a_bad_crc() {
    let (mut p, mut r, t) = device_pair(257);
    let mut sink = VecSink::default();
    manual_start(&mut p, &mut r, &mut sink, t);
    put_ring(&mut p, 0, b"hello", 5);
    p.tod
        .cs
        .set_int(&mut p.ctl_imp, i64::from(crc16(b"hello") ^ 1))
        .unwrap();
    p.tod.cmd.set_int(&mut p.ctl_imp, cmd::COMPLETED).unwrap();
    p.sync();
    let ev = r.poll(&mut p.dev_exp, &p.dev_imp, t, &mut sink);
    let actual = crc16(b"hello");
    assert_eq!(
        ev,
        Some(DeviceEvent::Failed {
            select: 1,
            bytes: 5,
            error: StreamError::Checksum {
                expected: actual ^ 1,
                actual
            }
        })
    );
    assert_eq!(sink.closed, [false]);
    p.sync();
    assert_eq!(
        get(&p.tod.err, &p.ctl_exp).0,
        i64::from(status::CHECKSUM_ERROR)
    );
    assert_eq!(get(&p.tod.state, &p.ctl_exp).0, cmd::IDLE);
    assert_eq!(r.state(), &ReaderState::Idle { armed: false });
}

#[test]
fn device_reader_interrupt_then_release() {
    let (mut p, mut r, t) = device_pair(257);
    let mut sink = VecSink::default();
    manual_start(&mut p, &mut r, &mut sink, t);
    put_ring(&mut p, 0, &[7; 100], 100);
    p.sync();
    assert_eq!(r.poll(&mut p.dev_exp, &p.dev_imp, t, &mut sink), None);
    assert_eq!(sink.data.len(), 100);
    p.tod.cmd.set_int(&mut p.ctl_imp, cmd::INTERRUPT).unwrap();
    p.sync();
    assert_eq!(
        r.poll(&mut p.dev_exp, &p.dev_imp, t, &mut sink),
        Some(DeviceEvent::Failed {
            select: 1,
            bytes: 100,
            error: StreamError::Interrupted
        })
    );
    p.sync();
    assert_eq!(get(&p.tod.state, &p.ctl_exp).0, cmd::INTERRUPT);
    assert_eq!(sink.closed, [false]);
    // Still INTERRUPT, not RUNNING/COMPLETED: released on the next poll.
    assert_eq!(
        r.poll(&mut p.dev_exp, &p.dev_imp, t, &mut sink),
        Some(DeviceEvent::Released)
    );
    p.sync();
    assert_eq!(get(&p.tod.state, &p.ctl_exp).0, cmd::IDLE);
    assert_eq!(r.state(), &ReaderState::Idle { armed: true });
}

#[test]
fn device_reader_times_out_without_data_and_waits_for_release() {
    let (mut p, mut r, t) = device_pair(257);
    let mut sink = VecSink::default();
    manual_start(&mut p, &mut r, &mut sink, t);
    assert_eq!(
        r.poll(
            &mut p.dev_exp,
            &p.dev_imp,
            t + Duration::from_millis(4999),
            &mut sink
        ),
        None
    );
    let t5 = t + Duration::from_secs(5);
    assert_eq!(
        r.poll(&mut p.dev_exp, &p.dev_imp, t5, &mut sink),
        Some(DeviceEvent::Failed {
            select: 1,
            bytes: 0,
            error: StreamError::Timeout
        })
    );
    p.sync();
    assert_eq!(get(&p.tod.err, &p.ctl_exp).0, i64::from(status::TIMEOUT));
    assert_eq!(get(&p.tod.state, &p.ctl_exp).0, cmd::INTERRUPT);
    // The controller still says RUNNING: the device holds INTERRUPT for up to 5 s.
    assert_eq!(
        r.poll(
            &mut p.dev_exp,
            &p.dev_imp,
            t5 + Duration::from_secs(1),
            &mut sink
        ),
        None
    );
    assert_eq!(
        r.poll(
            &mut p.dev_exp,
            &p.dev_imp,
            t5 + Duration::from_secs(5),
            &mut sink
        ),
        Some(DeviceEvent::Released)
    );
    // cmd is still RUNNING: no re-open until it leaves RUNNING (no re-open race).
    assert_eq!(r.state(), &ReaderState::Idle { armed: false });
    assert_eq!(
        r.poll(
            &mut p.dev_exp,
            &p.dev_imp,
            t5 + Duration::from_secs(6),
            &mut sink
        ),
        None
    );
    assert_eq!(sink.opened, [1]);
    p.tod.cmd.set_int(&mut p.ctl_imp, cmd::IDLE).unwrap();
    p.sync();
    assert_eq!(r.poll(&mut p.dev_exp, &p.dev_imp, t5, &mut sink), None);
    assert_eq!(r.state(), &ReaderState::Idle { armed: true });
    p.sync();
    assert_eq!(
        get(&p.tod.err, &p.ctl_exp).0,
        i64::from(status::TIMEOUT),
        "code kept"
    );
}

#[test]
fn device_reader_refused_select_keeps_the_code_and_does_not_reopen() {
    let (mut p, mut r, t) = device_pair(257);
    let mut sink = VecSink {
        refuse: Some(status::NO_ACCESS_RIGHT),
        ..VecSink::default()
    };
    p.tod.select.set_int(&mut p.ctl_imp, 4).unwrap();
    p.tod.cmd.set_int(&mut p.ctl_imp, cmd::RUNNING).unwrap();
    p.sync();
    assert_eq!(
        r.poll(&mut p.dev_exp, &p.dev_imp, t, &mut sink),
        Some(DeviceEvent::Failed {
            select: 4,
            bytes: 0,
            error: StreamError::Local(status::NO_ACCESS_RIGHT.into())
        })
    );
    for _ in 0..3 {
        assert_eq!(r.poll(&mut p.dev_exp, &p.dev_imp, t, &mut sink), None);
    }
    assert_eq!(sink.opened, [4]);
    p.sync();
    assert_eq!(
        get(&p.tod.err, &p.ctl_exp).0,
        i64::from(status::NO_ACCESS_RIGHT)
    );
    assert_eq!(get(&p.tod.state, &p.ctl_exp).0, cmd::IDLE);
}

#[test]
fn device_reader_sink_failure_and_ring_violations() {
    // Sink fails mid-transfer: its code is published.
    let (mut p, mut r, t) = device_pair(257);
    let mut sink = VecSink {
        fail_after: Some((50, status::WRITING_FILE_FAILED)),
        ..VecSink::default()
    };
    manual_start(&mut p, &mut r, &mut sink, t);
    put_ring(&mut p, 0, &[1; 60], 60);
    p.sync();
    let ev = r.poll(&mut p.dev_exp, &p.dev_imp, t, &mut sink);
    assert!(matches!(
        ev,
        Some(DeviceEvent::Failed {
            error: StreamError::Local(super::LocalError { code: 142, .. }),
            ..
        })
    ));
    p.sync();
    assert_eq!(get(&p.tod.err, &p.ctl_exp).0, 142);

    // Head outside the ring.
    let (mut p, mut r, t) = device_pair(257);
    let mut sink = VecSink::default();
    manual_start(&mut p, &mut r, &mut sink, t);
    p.tod.head.set_int(&mut p.ctl_imp, 257).unwrap();
    p.sync();
    let ev = r.poll(&mut p.dev_exp, &p.dev_imp, t, &mut sink);
    assert!(matches!(
        ev,
        Some(DeviceEvent::Failed {
            error: StreamError::Ring(_),
            ..
        })
    ));
    p.sync();
    assert_eq!(get(&p.tod.err, &p.ctl_exp).0, i64::from(status::FAILED));

    // Ring data without the buffer's CONNECTED state byte.
    let (mut p, mut r, t) = device_pair(257);
    let mut sink = VecSink::default();
    manual_start(&mut p, &mut r, &mut sink, t);
    p.ctl_imp.write(p.tod.buf.addr + 1, &[9; 4]).unwrap();
    p.tod.head.set_int(&mut p.ctl_imp, 4).unwrap();
    p.sync();
    let ev = r.poll(&mut p.dev_exp, &p.dev_imp, t, &mut sink);
    assert!(matches!(
        ev,
        Some(DeviceEvent::Failed {
            error: StreamError::Ring(_),
            ..
        })
    ));
    assert!(sink.data.is_empty());
}

#[test]
fn device_reader_controller_disconnect_interrupts() {
    let (mut p, mut r, t) = device_pair(257);
    let mut sink = VecSink::default();
    manual_start(&mut p, &mut r, &mut sink, t);
    p.drop_controller_side();
    let ev = r.poll(&mut p.dev_exp, &p.dev_imp, t, &mut sink);
    assert!(matches!(
        ev,
        Some(DeviceEvent::Failed {
            error: StreamError::Interrupted,
            ..
        })
    ));
    assert_eq!(
        r.poll(&mut p.dev_exp, &p.dev_imp, t, &mut sink),
        Some(DeviceEvent::Released)
    );
}

#[test]
fn device_reader_wraps_the_ring() {
    let (mut p, mut r, t) = device_pair(8);
    let mut sink = VecSink::default();
    manual_start(&mut p, &mut r, &mut sink, t);
    put_ring(&mut p, 0, &[1, 2, 3, 4, 5, 6], 6);
    p.sync();
    r.poll(&mut p.dev_exp, &p.dev_imp, t, &mut sink);
    p.sync();
    assert_eq!(get(&p.tod.tail, &p.ctl_exp).0, 6);
    put_ring(&mut p, 6, &[7, 8], 0);
    put_ring(&mut p, 0, &[9, 10, 11], 3);
    p.sync();
    r.poll(&mut p.dev_exp, &p.dev_imp, t, &mut sink);
    assert_eq!(sink.data, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
}

#[test]
fn controller_writer_needs_a_connected_device() {
    let mut p = Pair::new(257, 257);
    let mut w = ControllerWriter::new(p.tod.clone(), 1);
    let mut src = VecSource::new(vec![1; 10]);
    let now = Instant::now();
    assert_eq!(
        w.poll(&p.ctl_exp, &mut p.ctl_imp, now, &mut src),
        Progress::Failed(StreamError::NotConnected)
    );
}

#[test]
fn controller_writer_times_out_when_the_device_never_runs() {
    let (mut p, _r, t) = device_pair(257);
    let mut w = ControllerWriter::new(p.tod.clone(), 1);
    let mut src = VecSource::new(vec![1; 10]);
    assert_eq!(
        w.poll(&p.ctl_exp, &mut p.ctl_imp, t, &mut src),
        Progress::Running
    );
    assert_eq!(get(&p.tod.cmd, &p.ctl_imp).0, cmd::RUNNING);
    assert_eq!(
        w.poll(
            &p.ctl_exp,
            &mut p.ctl_imp,
            t + Duration::from_millis(4990),
            &mut src
        ),
        Progress::Running
    );
    assert_eq!(
        w.poll(
            &p.ctl_exp,
            &mut p.ctl_imp,
            t + Duration::from_secs(5),
            &mut src
        ),
        Progress::Running
    );
    assert_eq!(get(&p.tod.cmd, &p.ctl_imp).0, cmd::INTERRUPT);
    assert!(matches!(
        w.state(),
        controller::WriterState::Failing {
            error: StreamError::Timeout,
            ..
        }
    ));
    // Device state is IDLE (not RUNNING): the failure completes at once.
    assert_eq!(
        w.poll(
            &p.ctl_exp,
            &mut p.ctl_imp,
            t + Duration::from_secs(5),
            &mut src
        ),
        Progress::Failed(StreamError::Timeout)
    );
    assert_eq!(get(&p.tod.cmd, &p.ctl_imp).0, cmd::IDLE);
}

#[test]
fn controller_writer_sees_the_device_interrupt() {
    let (mut p, mut r, mut t) = device_pair(257);
    let mut w = ControllerWriter::new(p.tod.clone(), 1);
    let mut src = VecSource::new(vec![5; 2000]);
    let mut sink = VecSink {
        fail_after: Some((300, status::DEVICE_PROGRAMMING_FAILED)),
        ..VecSink::default()
    };
    let (prog, events) = upload(&mut p, &mut w, &mut r, &mut src, &mut sink, &mut t);
    assert_eq!(prog, Progress::Failed(StreamError::Interrupted));
    assert!(matches!(
        events.as_slice(),
        [
            DeviceEvent::Started { .. },
            DeviceEvent::Failed {
                error: StreamError::Local(super::LocalError { code: 166, .. }),
                ..
            },
            DeviceEvent::Released
        ]
    ));
    assert_eq!(w.device_status(&p.ctl_exp), Some(166));
}

#[test]
fn controller_writer_abort_and_ring_full_timeout() {
    let (mut p, mut r, mut t) = device_pair(257);
    let mut w = ControllerWriter::new(p.tod.clone(), 1);
    let mut src = VecSource::new(vec![5; 2000]);
    let mut sink = VecSink::default();
    w.poll(&p.ctl_exp, &mut p.ctl_imp, t, &mut src);
    p.sync();
    r.poll(&mut p.dev_exp, &p.dev_imp, t, &mut sink);
    p.sync();
    w.abort();
    let (prog, events) = upload(&mut p, &mut w, &mut r, &mut src, &mut sink, &mut t);
    assert_eq!(prog, Progress::Failed(StreamError::Aborted));
    assert!(matches!(
        events[0],
        DeviceEvent::Failed {
            error: StreamError::Interrupted,
            ..
        }
    ));

    // The device stops reading (never polled): the ring fills and the writer gives up.
    let (mut p, mut r, t) = device_pair(257);
    let mut w = ControllerWriter::new(p.tod.clone(), 1);
    let mut src = VecSource::new(vec![5; 2000]);
    w.poll(&p.ctl_exp, &mut p.ctl_imp, t, &mut src);
    p.sync();
    r.poll(&mut p.dev_exp, &p.dev_imp, t, &mut sink);
    p.sync();
    assert_eq!(
        w.poll(&p.ctl_exp, &mut p.ctl_imp, t, &mut src),
        Progress::Running
    );
    assert_eq!(src.pos, 256);
    let later = t + controller::RING_FULL_TIMEOUT - Duration::from_millis(1);
    assert_eq!(
        w.poll(&p.ctl_exp, &mut p.ctl_imp, later, &mut src),
        Progress::Running
    );
    assert!(matches!(
        w.state(),
        controller::WriterState::Transfer {
            ring_full: true,
            ..
        }
    ));
    w.poll(
        &p.ctl_exp,
        &mut p.ctl_imp,
        t + controller::RING_FULL_TIMEOUT,
        &mut src,
    );
    assert!(matches!(
        w.state(),
        controller::WriterState::Failing {
            error: StreamError::Timeout,
            ..
        }
    ));
}

#[test]
fn controller_writer_source_stall_times_out() {
    let (mut p, mut r, t) = device_pair(257);
    let mut w = ControllerWriter::new(p.tod.clone(), 1);
    let mut src = VecSource::new(vec![5; 10]);
    src.stall = true;
    let mut sink = VecSink::default();
    w.poll(&p.ctl_exp, &mut p.ctl_imp, t, &mut src);
    p.sync();
    r.poll(&mut p.dev_exp, &p.dev_imp, t, &mut sink);
    p.sync();
    assert_eq!(
        w.poll(&p.ctl_exp, &mut p.ctl_imp, t, &mut src),
        Progress::Running
    );
    assert!(matches!(
        w.state(),
        controller::WriterState::Transfer { bytes: 0, .. }
    ));
    assert_eq!(
        w.poll(
            &p.ctl_exp,
            &mut p.ctl_imp,
            t + Duration::from_millis(4999),
            &mut src
        ),
        Progress::Running
    );
    w.poll(
        &p.ctl_exp,
        &mut p.ctl_imp,
        t + Duration::from_millis(5000),
        &mut src,
    );
    assert!(matches!(
        w.state(),
        controller::WriterState::Failing {
            error: StreamError::Timeout,
            ..
        }
    ));
}

/// Runs a download until the controller finishes.
fn download(
    p: &mut Pair,
    cr: &mut ControllerReader,
    dw: &mut DeviceWriter,
    src: &mut VecSource,
    sink: &mut VecSink,
    t: &mut Instant,
) -> (Progress, Vec<DeviceEvent>) {
    let mut events = Vec::new();
    for _ in 0..100_000 {
        let prog = cr.poll(&p.ctl_exp, &mut p.ctl_imp, *t, sink);
        p.sync();
        if let Some(ev) = dw.poll(&mut p.dev_exp, &p.dev_imp, *t, src) {
            events.push(ev);
        }
        p.sync();
        *t += TICK;
        if prog != Progress::Running {
            return (prog, events);
        }
    }
    panic!("download did not finish");
}

#[test]
fn download_end_to_end() {
    let (mut p, _, mut t) = device_pair(257);
    let mut dw = DeviceWriter::new(p.frd.clone());
    let mut cr = ControllerReader::new(p.frd.clone(), 3);
    let data: Vec<u8> = (0..1000u32).map(|i| (i % 7) as u8).collect();
    let (mut src, mut sink) = (VecSource::new(data.clone()), VecSink::default());
    let (prog, events) = download(&mut p, &mut cr, &mut dw, &mut src, &mut sink, &mut t);
    assert_eq!(
        prog,
        Progress::Completed {
            bytes: 1000,
            crc: crc16(&data),
            device_err: Some(status::COMPLETED)
        }
    );
    assert_eq!(sink.data, data);
    assert_eq!(sink.closed, [true]);
    assert_eq!(src.opened, [3]);
    assert_eq!(
        events,
        [
            DeviceEvent::Started { select: 3 },
            DeviceEvent::Completed {
                select: 3,
                bytes: 1000,
                crc: crc16(&data)
            }
        ]
    );
    assert_eq!(dw.state(), &WriterState::Idle { armed: true });
}

#[test]
fn download_refused_by_the_device() {
    let (mut p, _, mut t) = device_pair(257);
    let mut dw = DeviceWriter::new(p.frd.clone());
    let mut cr = ControllerReader::new(p.frd.clone(), 2);
    let mut src = VecSource {
        refuse: Some(status::READING_FILE_FAILED),
        ..VecSource::default()
    };
    let mut sink = VecSink::default();
    let (prog, events) = download(&mut p, &mut cr, &mut dw, &mut src, &mut sink, &mut t);
    assert_eq!(prog, Progress::Failed(StreamError::Timeout));
    assert!(matches!(
        events[0],
        DeviceEvent::Failed {
            error: StreamError::Local(super::LocalError { code: 140, .. }),
            ..
        }
    ));
    assert_eq!(get(&p.frd.err, &p.ctl_exp).0, 140);
    assert_eq!(sink.closed, [false]);
}

#[test]
fn download_with_a_bad_crc_is_an_error() {
    let (mut p, _, t) = device_pair(257);
    let mut cr = ControllerReader::new(p.frd.clone(), 3);
    let mut sink = VecSink::default();
    assert_eq!(
        cr.poll(&p.ctl_exp, &mut p.ctl_imp, t, &mut sink),
        Progress::Running
    );
    p.sync();
    // A hand-driven device: data, a wrong CRC and COMPLETED in one snapshot.
    p.frd.buf.write_bytes(&mut p.dev_exp, 0, b"abc").unwrap();
    p.frd.head.set_int(&mut p.dev_exp, 3).unwrap();
    p.frd.cs.set_int(&mut p.dev_exp, 0x1234).unwrap();
    p.frd.state.set_int(&mut p.dev_exp, cmd::COMPLETED).unwrap();
    p.sync();
    assert_eq!(
        cr.poll(&p.ctl_exp, &mut p.ctl_imp, t, &mut sink),
        Progress::Running
    );
    assert_eq!(sink.data, b"abc");
    p.frd.state.set_int(&mut p.dev_exp, cmd::IDLE).unwrap();
    p.sync();
    assert_eq!(
        cr.poll(&p.ctl_exp, &mut p.ctl_imp, t, &mut sink),
        Progress::Failed(StreamError::Checksum {
            expected: 0x1234,
            actual: crc16(b"abc")
        })
    );
    assert_eq!(sink.closed, [false]);
}

#[test]
fn download_timeouts_on_both_sides() {
    // The device's source stalls: the device gives up after 5 s without progress, with 104.
    let (mut p, _, mut t) = device_pair(257);
    let mut dw = DeviceWriter::new(p.frd.clone());
    let mut cr = ControllerReader::new(p.frd.clone(), 3);
    let mut src = VecSource::new(vec![1; 10]);
    src.stall = true;
    let mut sink = VecSink::default();
    let (prog, events) = download(&mut p, &mut cr, &mut dw, &mut src, &mut sink, &mut t);
    assert_eq!(prog, Progress::Failed(StreamError::Interrupted));
    assert!(matches!(
        events[1],
        DeviceEvent::Failed {
            error: StreamError::Timeout,
            ..
        }
    ));
    assert_eq!(get(&p.frd.err, &p.ctl_exp).0, i64::from(status::TIMEOUT));

    // The device starts but never sends: the controller gives up after 5 s without data.
    let (mut p, _, t) = device_pair(257);
    let mut cr = ControllerReader::new(p.frd.clone(), 3);
    cr.poll(&p.ctl_exp, &mut p.ctl_imp, t, &mut sink);
    p.frd.head.set_int(&mut p.dev_exp, 0).unwrap();
    p.frd.state.set_int(&mut p.dev_exp, cmd::RUNNING).unwrap();
    p.sync();
    assert_eq!(
        cr.poll(&p.ctl_exp, &mut p.ctl_imp, t, &mut sink),
        Progress::Running
    );
    let t5 = t + Duration::from_secs(5);
    assert_eq!(
        cr.poll(
            &p.ctl_exp,
            &mut p.ctl_imp,
            t5 - Duration::from_millis(1),
            &mut sink
        ),
        Progress::Running
    );
    assert_eq!(
        cr.poll(&p.ctl_exp, &mut p.ctl_imp, t5, &mut sink),
        Progress::Running
    );
    assert!(matches!(
        cr.state(),
        controller::ReaderState::Failing {
            error: StreamError::Timeout,
            ..
        }
    ));
    p.sync();
    assert_eq!(
        get(&p.frd.cmd, &p.dev_imp).0,
        cmd::IDLE,
        "reader failure sets cmd 0, not 3"
    );
    // The device keeps RUNNING: the reader waits up to 5 s more, then fails.
    assert_eq!(
        cr.poll(
            &p.ctl_exp,
            &mut p.ctl_imp,
            t5 + Duration::from_secs(1),
            &mut sink
        ),
        Progress::Running
    );
    assert_eq!(
        cr.poll(
            &p.ctl_exp,
            &mut p.ctl_imp,
            t5 + Duration::from_secs(5),
            &mut sink
        ),
        Progress::Failed(StreamError::Timeout)
    );

    // The controller never drains the ring: the device writer times out with 104.
    let (mut p, _, t) = device_pair(257);
    let mut dw = DeviceWriter::new(p.frd.clone());
    let mut src = VecSource::new(vec![1; 1000]);
    p.frd.tail.set_int(&mut p.ctl_imp, 0).unwrap();
    p.frd.select.set_int(&mut p.ctl_imp, 3).unwrap();
    p.frd.cmd.set_int(&mut p.ctl_imp, cmd::RUNNING).unwrap();
    p.sync();
    assert_eq!(
        dw.poll(&mut p.dev_exp, &p.dev_imp, t, &mut src),
        Some(DeviceEvent::Started { select: 3 })
    );
    assert_eq!(src.pos, 256);
    assert_eq!(
        dw.poll(
            &mut p.dev_exp,
            &p.dev_imp,
            t + Duration::from_millis(4999),
            &mut src
        ),
        None
    );
    let ev = dw.poll(
        &mut p.dev_exp,
        &p.dev_imp,
        t + Duration::from_secs(5),
        &mut src,
    );
    assert!(matches!(
        ev,
        Some(DeviceEvent::Failed {
            error: StreamError::Timeout,
            bytes: 256,
            ..
        })
    ));
    p.sync();
    assert_eq!(get(&p.frd.err, &p.ctl_exp).0, i64::from(status::TIMEOUT));
    assert_eq!(get(&p.frd.state, &p.ctl_exp).0, cmd::INTERRUPT);
    // The controller interrupts: the writer is released.
    p.frd.cmd.set_int(&mut p.ctl_imp, cmd::IDLE).unwrap();
    p.sync();
    assert_eq!(
        dw.poll(&mut p.dev_exp, &p.dev_imp, t, &mut src),
        Some(DeviceEvent::Released)
    );
}

#[test]
fn download_interrupted_by_the_controller() {
    let (mut p, _, mut t) = device_pair(257);
    let mut dw = DeviceWriter::new(p.frd.clone());
    let mut cr = ControllerReader::new(p.frd.clone(), 3);
    let mut src = VecSource::new(vec![1; 5000]);
    let mut sink = VecSink::default();
    for _ in 0..3 {
        cr.poll(&p.ctl_exp, &mut p.ctl_imp, t, &mut sink);
        p.sync();
        dw.poll(&mut p.dev_exp, &p.dev_imp, t, &mut src);
        p.sync();
    }
    cr.abort();
    let (prog, events) = download(&mut p, &mut cr, &mut dw, &mut src, &mut sink, &mut t);
    assert_eq!(prog, Progress::Failed(StreamError::Aborted));
    assert!(matches!(
        events.as_slice(),
        [
            DeviceEvent::Failed {
                error: StreamError::Interrupted,
                ..
            },
            ..
        ]
    ));
    t += Duration::from_secs(1);
    assert!(matches!(
        dw.poll(&mut p.dev_exp, &p.dev_imp, t, &mut src),
        Some(DeviceEvent::Released) | None
    ));
}

#[test]
fn signals_that_do_not_fit_their_blocks_are_refused() {
    // A hostile info claims a 1 GiB ring in a 279-byte conf_imp.
    let mut p = Pair::new(257, 257);
    let mut bad = p.tod.clone();
    bad.buf.n = 1 << 30;
    let t = Instant::now();
    let mut w = ControllerWriter::new(bad.clone(), 1);
    let mut src = VecSource::new(vec![1; 10]);
    assert!(matches!(
        w.poll(&p.ctl_exp, &mut p.ctl_imp, t, &mut src),
        Progress::Failed(StreamError::Ring(_))
    ));
    assert_eq!(src.pos, 0);
    let mut r = DeviceReader::new(bad);
    let mut sink = VecSink::default();
    assert!(matches!(
        r.poll(&mut p.dev_exp, &p.dev_imp, t, &mut sink),
        Some(DeviceEvent::Failed {
            error: StreamError::Ring(_),
            ..
        })
    ));
    let mut bad_frd = p.frd.clone();
    bad_frd.head.addr = usize::MAX - 2;
    let mut cr = ControllerReader::new(bad_frd, 3);
    assert!(matches!(
        cr.poll(&p.ctl_exp, &mut p.ctl_imp, t, &mut sink),
        Progress::Failed(StreamError::Ring(_))
    ));
}

#[test]
fn poll_timeouts_follow_the_states() {
    let (mut p, mut r, t) = device_pair(257);
    let mut sink = VecSink::default();
    assert_eq!(r.poll_timeout(), None);
    manual_start(&mut p, &mut r, &mut sink, t);
    assert_eq!(r.poll_timeout(), Some(t + Duration::from_secs(5)));
    p.tod.cmd.set_int(&mut p.ctl_imp, cmd::INTERRUPT).unwrap();
    p.sync();
    let t1 = t + Duration::from_secs(1);
    r.poll(&mut p.dev_exp, &p.dev_imp, t1, &mut sink);
    assert_eq!(r.poll_timeout(), Some(t1 + Duration::from_secs(5)));
    r.poll(&mut p.dev_exp, &p.dev_imp, t1, &mut sink);
    assert_eq!(r.poll_timeout(), None);

    let mut w = ControllerWriter::new(p.tod.clone(), 1);
    let mut src = VecSource::new(vec![1; 10]);
    assert_eq!(w.poll_timeout(), None);
    w.poll(&p.ctl_exp, &mut p.ctl_imp, t, &mut src);
    assert_eq!(w.poll_timeout(), Some(t + Duration::from_secs(5)));
    let mut cr = ControllerReader::new(p.frd.clone(), 3);
    cr.poll(&p.ctl_exp, &mut p.ctl_imp, t1, &mut sink);
    assert_eq!(cr.poll_timeout(), Some(t1 + Duration::from_secs(5)));
    let dw = DeviceWriter::new(p.frd.clone());
    assert_eq!(dw.poll_timeout(), None);
}

/// A source that hands out at most `chunk` bytes per read and is sometimes not ready.
struct ChoppySource {
    inner: VecSource,
    chunk: usize,
    pending_every: usize,
    calls: usize,
}

impl super::ChunkSource for ChoppySource {
    fn open(&mut self, select: i64) -> Result<(), u8> {
        self.inner.open(select)
    }
    fn read(&mut self, buf: &mut [u8]) -> Result<super::SourceRead, u8> {
        self.calls += 1;
        if self.pending_every > 0 && self.calls.is_multiple_of(self.pending_every) {
            return Ok(super::SourceRead::Pending);
        }
        let n = buf.len().min(self.chunk);
        self.inner.read(&mut buf[..n])
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    #[test]
    fn any_ring_and_chunking_delivers_the_file(
        ring in 2usize..700,
        len in 0usize..2500,
        chunk in 1usize..900,
        pending_every in proptest::sample::select(vec![0usize, 2, 3, 7]),
        seed in proptest::prelude::any::<u8>(),
    ) {
        let file: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(seed | 1).wrapping_add(seed)).collect();
        // Upload.
        let (mut p, mut r, mut t) = device_pair(ring);
        let mut w = ControllerWriter::new(p.tod.clone(), 1);
        let mut src = ChoppySource { inner: VecSource::new(file.clone()), chunk, pending_every, calls: 0 };
        let mut sink = VecSink::default();
        let mut done = None;
        for _ in 0..20_000 {
            let prog = w.poll(&p.ctl_exp, &mut p.ctl_imp, t, &mut src);
            p.sync();
            r.poll(&mut p.dev_exp, &p.dev_imp, t, &mut sink);
            p.sync();
            t += TICK;
            if prog != Progress::Running {
                done = Some(prog);
                break;
            }
        }
        proptest::prop_assert_eq!(done, Some(Progress::Completed { bytes: len as u64, crc: crc16(&file), device_err: Some(status::PENDING) }));
        proptest::prop_assert_eq!(&sink.data, &file);
        // Download of the same bytes through a ring of the same size.
        let mut p = Pair::new(257, ring);
        let mut dw = DeviceWriter::new(p.frd.clone());
        dw.init(&mut p.dev_exp).unwrap();
        p.sync();
        let mut cr = ControllerReader::new(p.frd.clone(), 3);
        let mut src = ChoppySource { inner: VecSource::new(file.clone()), chunk, pending_every, calls: 0 };
        let mut sink = VecSink::default();
        let mut done = None;
        for _ in 0..20_000 {
            let prog = cr.poll(&p.ctl_exp, &mut p.ctl_imp, t, &mut sink);
            p.sync();
            dw.poll(&mut p.dev_exp, &p.dev_imp, t, &mut src);
            p.sync();
            t += TICK;
            if prog != Progress::Running {
                done = Some(prog);
                break;
            }
        }
        proptest::prop_assert_eq!(done, Some(Progress::Completed { bytes: len as u64, crc: crc16(&file), device_err: Some(status::COMPLETED) }));
        proptest::prop_assert_eq!(&sink.data, &file);
    }
}

#[test]
fn device_reader_local_abort() {
    let (mut p, mut r, t) = device_pair(257);
    let mut sink = VecSink::default();
    assert_eq!(r.abort(&mut p.dev_exp, status::FAILED, t, &mut sink), None);
    manual_start(&mut p, &mut r, &mut sink, t);
    put_ring(&mut p, 0, &[3; 10], 10);
    p.sync();
    r.poll(&mut p.dev_exp, &p.dev_imp, t, &mut sink);
    assert_eq!(
        r.abort(&mut p.dev_exp, status::FAILED, t, &mut sink),
        Some(DeviceEvent::Failed {
            select: 1,
            bytes: 10,
            error: StreamError::Aborted
        })
    );
    assert_eq!(sink.closed, [false]);
    p.sync();
    assert_eq!(get(&p.tod.err, &p.ctl_exp).0, i64::from(status::FAILED));
    assert_eq!(get(&p.tod.state, &p.ctl_exp).0, cmd::INTERRUPT);
    // The controller keeps RUNNING: released after 5 s, no re-open while it stays 1.
    assert_eq!(
        r.poll(
            &mut p.dev_exp,
            &p.dev_imp,
            t + Duration::from_secs(5),
            &mut sink
        ),
        Some(DeviceEvent::Released)
    );
    assert_eq!(
        r.poll(
            &mut p.dev_exp,
            &p.dev_imp,
            t + Duration::from_secs(6),
            &mut sink
        ),
        None
    );
    assert_eq!(sink.opened, [1]);
}

#[test]
fn a_sink_short_of_room_leaves_the_rest_in_the_ring_and_completes_only_with_everything() {
    let (mut p, mut r, mut t) = device_pair(1000);
    let file: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
    let mut w = ControllerWriter::new(p.tod.clone(), 1);
    let mut src = VecSource::new(file.clone());
    let mut sink = VecSink {
        room_per_poll: Some(97),
        ..VecSink::default()
    };
    let mut events = Vec::new();
    let mut max_per_poll = 0;
    for _ in 0..10_000 {
        let prog = w.poll(&p.ctl_exp, &mut p.ctl_imp, t, &mut src);
        p.sync();
        let before = sink.data.len();
        if let Some(ev) = r.poll(&mut p.dev_exp, &p.dev_imp, t, &mut sink) {
            events.push(ev);
        }
        max_per_poll = max_per_poll.max(sink.data.len() - before);
        p.sync();
        t += TICK;
        if prog != Progress::Running {
            break;
        }
    }
    assert_eq!(max_per_poll, 97, "the sink's room bounds every poll");
    assert_eq!(sink.data, file);
    assert_eq!(
        events.last(),
        Some(&DeviceEvent::Completed {
            select: 1,
            bytes: 5000,
            crc: crc16(&file)
        })
    );
}

/// Runs an upload with an end hold until the device reports `Completed`.
fn upload_until_device_completed(
    hold: Duration,
) -> (Pair, ControllerWriter, DeviceReader, Instant, Vec<u8>) {
    let (mut p, mut r, mut t) = device_pair(257);
    r.set_end_hold(Some(hold));
    let file: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
    let mut w = ControllerWriter::new(p.tod.clone(), 1);
    let (mut src, mut sink) = (VecSource::new(file.clone()), VecSink::default());
    for _ in 0..10_000 {
        assert_eq!(
            w.poll(&p.ctl_exp, &mut p.ctl_imp, t, &mut src),
            Progress::Running
        );
        p.sync();
        let ev = r.poll(&mut p.dev_exp, &p.dev_imp, t, &mut sink);
        p.sync();
        t += TICK;
        if let Some(DeviceEvent::Completed { bytes, .. }) = ev {
            assert_eq!(bytes, 1000);
            assert_eq!(sink.data, file);
            assert_eq!(sink.closed, [true]);
            return (p, w, r, t, file);
        }
    }
    panic!("upload did not complete");
}

#[test]
fn end_hold_keeps_running_until_the_final_code_and_sends_both_together() {
    let (mut p, mut w, mut r, t, file) = upload_until_device_completed(Duration::from_secs(20));
    assert!(matches!(r.state(), ReaderState::Holding { .. }));
    assert_eq!(r.poll_timeout(), Some(t - TICK + Duration::from_secs(20)));
    // The controller sees RUNNING with PENDING: a poll-only reference controller keeps
    // waiting; our writer takes PENDING as "everything arrived" and completes (it reads the
    // result from the status signals, and must not mistake a device restarting during its
    // own update for a broken transfer).
    assert_eq!(get(&p.tod.state, &p.ctl_exp).0, cmd::RUNNING);
    assert_eq!(get(&p.tod.err, &p.ctl_exp).0, i64::from(status::PENDING));
    let mut src = VecSource::new(vec![]);
    assert_eq!(
        w.poll(&p.ctl_exp, &mut p.ctl_imp, t, &mut src),
        Progress::Completed {
            bytes: file.len() as u64,
            crc: crc16(&file),
            device_err: Some(status::PENDING)
        }
    );
    // The result: tod_err and tod_state = IDLE in one device frame.
    let before = p.log.len();
    r.report(&mut p.dev_exp, status::COMPLETED).unwrap();
    assert_eq!(r.state(), &ReaderState::Idle { armed: false });
    p.sync();
    let frames: Vec<_> = p.log[before..].iter().filter(|(d, _)| *d).collect();
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(get(&p.tod.state, &p.ctl_exp).0, cmd::IDLE);
    assert_eq!(get(&p.tod.err, &p.ctl_exp).0, i64::from(status::COMPLETED));
}

#[test]
fn end_hold_ends_at_its_time_or_when_the_controller_lets_go() {
    // No result within the hold: IDLE with PENDING, as without a hold.
    let (mut p, _w, mut r, t, _) = upload_until_device_completed(Duration::from_secs(20));
    let mut sink = VecSink::default();
    let almost = t + Duration::from_secs(19);
    assert_eq!(r.poll(&mut p.dev_exp, &p.dev_imp, almost, &mut sink), None);
    assert!(matches!(r.state(), ReaderState::Holding { .. }));
    let later = t + Duration::from_secs(20);
    assert_eq!(r.poll(&mut p.dev_exp, &p.dev_imp, later, &mut sink), None);
    assert_eq!(r.state(), &ReaderState::Idle { armed: false });
    p.sync();
    assert_eq!(get(&p.tod.state, &p.ctl_exp).0, cmd::IDLE);
    assert_eq!(get(&p.tod.err, &p.ctl_exp).0, i64::from(status::PENDING));
    // A late result still goes out.
    r.report(&mut p.dev_exp, 168).unwrap();
    p.sync();
    assert_eq!(get(&p.tod.err, &p.ctl_exp).0, 168);

    // The C controller gives up waiting after its stream timeout and sets tod_cmd = IDLE:
    // the hold ends at once (armed again: the command is not RUNNING).
    let (mut p, mut w, mut r, mut t, file) = upload_until_device_completed(Duration::from_secs(20));
    let mut src = VecSource::new(vec![]);
    let done = loop {
        let prog = w.poll(&p.ctl_exp, &mut p.ctl_imp, t, &mut src);
        p.sync();
        t += Duration::from_millis(500);
        if prog != Progress::Running {
            break prog;
        }
    };
    assert_eq!(
        done,
        Progress::Completed {
            bytes: file.len() as u64,
            crc: crc16(&file),
            device_err: Some(status::PENDING)
        }
    );
    assert_eq!(get(&p.tod.cmd, &p.dev_imp).0, cmd::IDLE);
    assert_eq!(r.poll(&mut p.dev_exp, &p.dev_imp, t, &mut sink), None);
    assert_eq!(r.state(), &ReaderState::Idle { armed: true });
    p.sync();
    assert_eq!(get(&p.tod.state, &p.ctl_exp).0, cmd::IDLE);
}

#[test]
fn end_hold_is_not_used_for_a_failed_checksum() {
    let (mut p, mut r, mut t) = device_pair(257);
    r.set_end_hold(Some(Duration::from_secs(20)));
    let mut w = ControllerWriter::new(p.tod.clone(), 1);
    let (mut src, mut sink) = (VecSource::new(vec![5; 300]), VecSink::default());
    // Run until the controller has written everything, then corrupt the CRC it sends.
    for _ in 0..1000 {
        let _ = w.poll(&p.ctl_exp, &mut p.ctl_imp, t, &mut src);
        if get(&p.tod.cmd, &p.ctl_imp).0 == cmd::COMPLETED {
            p.tod.cs.set_int(&mut p.ctl_imp, 0x1234).unwrap();
        }
        p.sync();
        let ev = r.poll(&mut p.dev_exp, &p.dev_imp, t, &mut sink);
        p.sync();
        t += TICK;
        if let Some(ev) = ev
            && !matches!(ev, DeviceEvent::Started { .. })
        {
            assert!(
                matches!(
                    ev,
                    DeviceEvent::Failed {
                        error: StreamError::Checksum { .. },
                        ..
                    }
                ),
                "{ev:?}"
            );
            assert_eq!(r.state(), &ReaderState::Idle { armed: false });
            assert_eq!(
                get(&p.tod.err, &p.ctl_exp).0,
                i64::from(status::CHECKSUM_ERROR)
            );
            return;
        }
    }
    panic!("no end");
}

/// Applies one hand-made frame of the controller's conf_imp to the device's copy.
fn frame_to_device(p: &mut Pair, addr: usize, flags: u8, payload: &[u8]) {
    p.dev_imp.apply_frame(1, addr, flags, payload).unwrap();
}

/// conf_imp bytes 7.. of a snapshot writing head = 200 and ring bytes 0..200 (`i as u8`), cut
/// after ring byte 50: head state (02 connected) + value (C8 00 00 00), tod_buf's state byte,
/// 50 ring bytes.
fn first_part() -> Vec<u8> {
    let mut v = vec![0x02, 0xC8, 0x00, 0x00, 0x00, 0x02];
    v.extend(0..50u8);
    v
}

#[test]
fn progressive_reader_takes_the_final_part_of_a_snapshot_still_arriving() {
    let (mut p, mut r, t) = device_pair(257);
    p.dev_imp.set_progressive(true);
    let mut sink = VecSink::default();
    manual_start(&mut p, &mut r, &mut sink, t);
    // First frame of the snapshot (no SYNC_COMPLETE): head and ring bytes 0..50.
    frame_to_device(&mut p, 7, 0x00, &first_part());
    assert_eq!(p.dev_imp.incomplete_from(), Some(63));
    assert_eq!(r.poll(&mut p.dev_exp, &p.dev_imp, t, &mut sink), None);
    assert_eq!(sink.data, (0..50u8).collect::<Vec<_>>());
    p.sync();
    assert_eq!(get(&p.tod.tail, &p.ctl_exp).0, 50);
    // The last frame (SYNC_COMPLETE 0x10) brings ring bytes 50..200.
    frame_to_device(&mut p, 63, 0x10, &(50..200u8).collect::<Vec<_>>());
    assert_eq!(p.dev_imp.incomplete_from(), None);
    r.poll(&mut p.dev_exp, &p.dev_imp, t, &mut sink);
    assert_eq!(sink.data, (0..200u8).collect::<Vec<_>>());
    p.sync();
    assert_eq!(get(&p.tod.tail, &p.ctl_exp).0, 200);
}

#[test]
fn without_progressive_receiving_the_reader_waits_for_the_whole_snapshot() {
    let (mut p, mut r, t) = device_pair(257);
    let mut sink = VecSink::default();
    manual_start(&mut p, &mut r, &mut sink, t);
    frame_to_device(&mut p, 7, 0x00, &first_part());
    assert_eq!(p.dev_imp.incomplete_from(), None);
    r.poll(&mut p.dev_exp, &p.dev_imp, t, &mut sink);
    assert!(sink.data.is_empty());
    frame_to_device(&mut p, 63, 0x10, &(50..200u8).collect::<Vec<_>>());
    r.poll(&mut p.dev_exp, &p.dev_imp, t, &mut sink);
    assert_eq!(sink.data, (0..200u8).collect::<Vec<_>>());
}

#[test]
fn progressive_reader_waits_while_a_frame_ends_inside_the_head_or_a_wrapped_segment() {
    let (mut p, mut r, t) = device_pair(257);
    p.dev_imp.set_progressive(true);
    let mut sink = VecSink::default();
    manual_start(&mut p, &mut r, &mut sink, t);
    // A frame ending inside tod_head (bytes 7..=9 of 7..12): head is half new; nothing is taken
    // and nothing fails.
    frame_to_device(&mut p, 7, 0x00, &[0x02, 0xC8, 0x00]);
    assert_eq!(p.dev_imp.incomplete_from(), Some(10));
    assert_eq!(r.poll(&mut p.dev_exp, &p.dev_imp, t, &mut sink), None);
    assert!(sink.data.is_empty());
    assert!(matches!(r.state(), ReaderState::Transfer { tail: 0, .. }));
    frame_to_device(&mut p, 10, 0x10, &[0x00, 0x00, 0x02]);
    // Head 200 with ring bytes never sent: the snapshot is complete, so they are taken as they
    // are (zeros), as the C device would.
    r.poll(&mut p.dev_exp, &p.dev_imp, t, &mut sink);
    assert_eq!(sink.data.len(), 200);

    // Wrapped data (tail 200 → head 10): positions 0..10 arrive first (lower addresses) but
    // come after 200..257 in ring order, so nothing is taken until those arrive.
    let mut v = vec![0x02, 0x0A, 0x00, 0x00, 0x00, 0x02];
    v.extend([7u8; 10]);
    frame_to_device(&mut p, 7, 0x00, &v);
    r.poll(&mut p.dev_exp, &p.dev_imp, t, &mut sink);
    assert_eq!(sink.data.len(), 200);
    frame_to_device(&mut p, 13 + 200, 0x10, &[9u8; 57]);
    r.poll(&mut p.dev_exp, &p.dev_imp, t, &mut sink);
    assert_eq!(sink.data.len(), 267);
    assert_eq!(
        &sink.data[200..],
        [[9u8; 57].as_slice(), &[7u8; 10]].concat()
    );
}
