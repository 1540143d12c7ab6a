//! End to end without I/O: our controller core uploads 1 MiB of random bytes to select 1 of
//! our device core through two `Connection`s wired back to back (byte buffers). The device's
//! sink receives exactly the bytes sent; a byte corrupted on the wire is reported as a CRC
//! error (device: `Failed(Checksum)`, `tod_err` = 204 seen by the controller).

use iocomd::proto::conn::{ConnConfig, Connection, LocalIdentity, Role, Side};
use iocomd::proto::crc::crc16;
use iocomd::proto::endpoint::{
    BlockDef, ControllerEndpoint, DeviceConfig, DeviceEndpoint, StreamEvent,
};
use iocomd::proto::frame::FrameFlags;
use iocomd::proto::info::{DEFAULT_TOD_RING, REFERENCE_RING, signal_block};
use iocomd::proto::node::{DeviceId, device_flags};
use iocomd::proto::stream::controller::Progress;
use iocomd::proto::stream::device::DeviceEvent;
use iocomd::proto::stream::{ChunkSink, ChunkSource, Direction, SourceRead, StreamError, status};
use iocomd::proto::sysframe::SystemFrame;
use std::time::{Duration, Instant};

const DEV: u64 = 1;
const CTL: u64 = 2;

#[derive(Default)]
struct Sink {
    data: Vec<u8>,
    closed: Vec<bool>,
}

impl ChunkSink for Sink {
    fn open(&mut self, _select: i64) -> Result<(), iocomd::proto::stream::LocalError> {
        self.data.clear();
        Ok(())
    }
    fn write(&mut self, chunk: &[u8]) -> Result<(), iocomd::proto::stream::LocalError> {
        self.data.extend_from_slice(chunk);
        Ok(())
    }
    fn close(&mut self, ok: bool) {
        self.closed.push(ok);
    }
}

struct Source {
    data: Vec<u8>,
    pos: usize,
}

impl ChunkSource for Source {
    fn open(&mut self, _select: i64) -> Result<(), u8> {
        Ok(())
    }
    fn read(&mut self, buf: &mut [u8]) -> Result<SourceRead, u8> {
        let rest = &self.data[self.pos..];
        if rest.is_empty() {
            return Ok(SourceRead::End);
        }
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        Ok(SourceRead::Bytes(n))
    }
}

fn random_bytes(n: usize, mut seed: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

/// Flips one payload byte of the first data frame to `mblk_id` with a long payload.
fn corrupt_one_data_byte(bytes: &mut [u8], mblk_id: u32) -> bool {
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == 0xFF {
            i += 4;
            continue;
        }
        let flags = bytes[i + 1];
        let size = usize::from(u16::from_le_bytes([bytes[i + 2], bytes[i + 3]]));
        let mut p = i + 4;
        let extra = if flags & 0x80 != 0 {
            p += 1;
            bytes[i + 4]
        } else {
            0
        };
        let width = |four: bool, two: bool| {
            if four {
                4
            } else if two {
                2
            } else {
                1
            }
        };
        let id_len = width(extra & 0x02 != 0, flags & 0x08 != 0);
        let addr_len = width(extra & 0x01 != 0, flags & 0x04 != 0);
        let mut id_bytes = [0u8; 4];
        id_bytes[..id_len].copy_from_slice(&bytes[p..p + id_len]);
        p += id_len + addr_len;
        if flags & 0x20 == 0 && u32::from_le_bytes(id_bytes) == mblk_id && size > 400 {
            bytes[p + 200] ^= 0x5A;
            return true;
        }
        i = p + size;
    }
    false
}

struct Run {
    device_events: Vec<DeviceEvent>,
    progress: Progress,
    sink: Sink,
    tod_err_at_end: Option<u8>,
    elapsed: Duration,
}

/// Our device and our controller, each with its `Connection`, wired back to back.
struct Link {
    now: Instant,
    dconn: Connection,
    cconn: Connection,
    dev: DeviceEndpoint,
    ctl: ControllerEndpoint,
    sink: Sink,
    device_events: Vec<DeviceEvent>,
    wire: Vec<u8>,
}

impl Link {
    fn new(tod_ring: usize) -> Self {
        let now = Instant::now();
        let dev_id = LocalIdentity {
            device_name: "iocomd".into(),
            device_nr: 3,
            network_name: "*".into(),
            unique_id: None,
            password: String::new(),
        };
        let ctl_id = LocalIdentity {
            device_name: "ctl".into(),
            device_nr: 1,
            network_name: "cafenet".into(),
            unique_id: None,
            password: String::new(),
        };
        let status_block = BlockDef {
            name: "exp".into(),
            flags: device_flags::EXP,
            json: Some(signal_block(
                "exp",
                "up",
                "status",
                &[("result", "uchar", 1), ("package", "str", 40)],
            )),
            min_size: 0,
        };
        Self {
            now,
            dconn: Connection::new(ConnConfig::new(Role::Device, Side::Client, dev_id), now),
            cconn: Connection::new(ConnConfig::new(Role::Controller, Side::Server, ctl_id), now),
            dev: DeviceEndpoint::new(DeviceConfig {
                device: DeviceId::new("iocomd", 3, "*"),
                blocks: vec![status_block],
                tod_ring,
                frd_ring: REFERENCE_RING,
            })
            .unwrap(),
            ctl: ControllerEndpoint::new("iocomd"),
            sink: Sink::default(),
            device_events: Vec::new(),
            wire: Vec::new(),
        }
    }

    /// Device side: events, streams, frames out, bytes to the controller.
    fn device_turn(&mut self) {
        while let Some(ev) = self.dconn.poll_event() {
            let out = self.dev.handle(DEV, ev).unwrap();
            for i in out.infos {
                self.dconn
                    .queue_system_frame(SystemFrame::MblkInfo(i))
                    .unwrap();
            }
        }
        let mut no_data = Source {
            data: Vec::new(),
            pos: 0,
        };
        for StreamEvent { dir, event } in
            self.dev
                .poll_streams(self.now, &mut self.sink, &mut no_data)
        {
            assert_eq!(dir, Direction::ToDevice);
            self.device_events.push(event);
        }
        if self.dconn.queued_frames() < 64 {
            for (conn, f) in self.dev.transmit_all(256) {
                assert_eq!(conn, DEV);
                assert!(
                    f.payload.len() < self.dconn.send_frame_size() as usize,
                    "frame size from Authenticated"
                );
                self.dconn
                    .queue_data_frame(f.mblk_id, f.addr, FrameFlags::from_bits(f.flags), f.payload)
                    .unwrap();
            }
        }
        self.wire.clear();
        self.dconn.poll_transmit(self.now, &mut self.wire);
        self.cconn.handle_input(&self.wire, self.now).unwrap();
    }

    /// Controller side: events in.
    fn controller_events(&mut self) {
        while let Some(ev) = self.cconn.poll_event() {
            let out = self.ctl.handle(CTL, ev).unwrap();
            for i in out.infos {
                self.cconn
                    .queue_system_frame(SystemFrame::MblkInfo(i))
                    .unwrap();
            }
        }
    }

    /// Controller side: frames out, bytes to the device (optionally tampered with).
    fn controller_send(&mut self, tamper: &mut dyn FnMut(&mut Vec<u8>)) {
        if self.cconn.queued_frames() < 64 {
            for f in self
                .ctl
                .transmit(CTL, self.cconn.send_frame_size() as usize, 256)
            {
                self.cconn
                    .queue_data_frame(f.mblk_id, f.addr, FrameFlags::from_bits(f.flags), f.payload)
                    .unwrap();
            }
        }
        self.wire.clear();
        self.cconn.poll_transmit(self.now, &mut self.wire);
        tamper(&mut self.wire);
        self.dconn.handle_input(&self.wire, self.now).unwrap();
        self.now += Duration::from_millis(1);
    }

    fn round(&mut self) {
        self.device_turn();
        self.controller_events();
        self.controller_send(&mut |_| {});
    }
}

fn run_upload(file: &[u8], tod_ring: usize, corrupt: bool) -> Run {
    let t0 = Instant::now();
    let mut link = Link::new(tod_ring);
    let mut ctl_source = Source {
        data: file.to_vec(),
        pos: 0,
    };
    let mut ctl_sink = Sink::default();
    let mut started = false;
    let mut corrupted = false;
    for _ in 0..200_000 {
        link.device_turn();
        link.controller_events();
        if !started && link.ctl.ready() {
            link.ctl.start_upload(1).unwrap();
            started = true;
        }
        if started {
            let p = link
                .ctl
                .poll_transfer(link.now, &mut ctl_source, &mut ctl_sink)
                .unwrap();
            if p != Progress::Running {
                return Run {
                    device_events: link.device_events,
                    progress: p,
                    tod_err_at_end: link.ctl.device_status(),
                    sink: link.sink,
                    elapsed: t0.elapsed(),
                };
            }
        }
        let sending = started && ctl_source.pos > 0;
        link.controller_send(&mut |wire| {
            if corrupt && !corrupted && sending {
                // conf_imp on the device has id 10 (exp 8, conf_exp 9, conf_imp 10, info 11).
                corrupted = corrupt_one_data_byte(wire, 10);
            }
        });
    }
    panic!("upload did not finish");
}

#[test]
fn device_status_signals_reach_the_controller() {
    let mut link = Link::new(REFERENCE_RING);
    for _ in 0..50 {
        link.round();
    }
    assert!(link.ctl.ready());
    assert_eq!(link.ctl.poll_timeout(), None, "no transfer, no timer");
    let (exp, layout) = link.dev.block_mut("exp").unwrap();
    let (result, package) = (
        layout.signal("result").unwrap().clone(),
        layout.signal("package").unwrap().clone(),
    );
    result.set_int(exp, 168).unwrap();
    package.set_str(exp, "hello 2.0-1").unwrap();
    link.dev
        .report(status::PROGRAM_INSTALLATION_FAILED)
        .unwrap();
    for _ in 0..5 {
        link.round();
    }
    let (exp, layout) = link.ctl.device_block("exp").unwrap();
    assert_eq!(
        layout.signal("result").unwrap().get_int(exp).unwrap(),
        (168, 3)
    );
    assert_eq!(
        layout.signal("package").unwrap().get_str(exp).unwrap(),
        ("hello 2.0-1".to_owned(), 2)
    );
    assert_eq!(link.ctl.device_status(), Some(168));
}

#[test]
fn one_mib_upload_through_two_connections() {
    let file = random_bytes(1024 * 1024, 0x1234_5678_9abc_def1);
    let run = run_upload(&file, DEFAULT_TOD_RING, false);
    assert_eq!(
        run.progress,
        Progress::Completed {
            bytes: file.len() as u64,
            crc: crc16(&file),
            device_err: Some(status::PENDING)
        }
    );
    assert_eq!(run.sink.data.len(), file.len());
    assert!(run.sink.data == file, "device received different bytes");
    assert_eq!(run.sink.closed, [true]);
    assert_eq!(
        run.device_events.last(),
        Some(&DeviceEvent::Completed {
            select: 1,
            bytes: file.len() as u64,
            crc: crc16(&file)
        })
    );
    assert_eq!(run.tod_err_at_end, Some(status::PENDING));
    eprintln!(
        "1 MiB through the sans-I/O cores in {:?} (1 MiB ring)",
        run.elapsed
    );
}

#[test]
fn small_ring_upload_through_two_connections() {
    let file = random_bytes(40_000, 42);
    let run = run_upload(&file, 4097, false);
    assert!(matches!(
        run.progress,
        Progress::Completed { bytes: 40_000, .. }
    ));
    assert!(run.sink.data == file);
}

#[test]
fn corrupted_byte_on_the_wire_is_a_checksum_error() {
    let file = random_bytes(64 * 1024, 7);
    let run = run_upload(&file, 16 * 1024 + 1, true);
    // Like the C controller, ours completes; the device's verdict is in tod_err.
    assert!(
        matches!(run.progress, Progress::Completed { .. }),
        "{:?}",
        run.progress
    );
    assert_eq!(run.tod_err_at_end, Some(status::CHECKSUM_ERROR));
    assert!(matches!(
        run.device_events.last(),
        Some(DeviceEvent::Failed {
            error: StreamError::Checksum { .. },
            ..
        })
    ));
    assert_eq!(run.sink.closed, [false]);
    assert_ne!(run.sink.data, file);
}
