//! Shared by the trace replay tests: trace and file loading, a sink and a source for the
//! stream state machines, and our device configured with the reference block layout.

#![allow(dead_code)]

use iocomd::proto::endpoint::{BlockDef, DeviceConfig, DeviceEndpoint};
use iocomd::proto::node::{DeviceId, device_flags};
use iocomd::proto::stream::{ChunkSink, ChunkSource, SourceRead};
use std::path::PathBuf;

pub const CONN: u64 = 1;

pub fn traces() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/traces")
}

/// `(seconds, "C2D"|"D2C", bytes)` per TCP segment.
pub fn load(name: &str) -> Vec<(f64, String, Vec<u8>)> {
    let text = std::fs::read_to_string(traces().join(name)).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut p = l.split_whitespace();
            let t: f64 = p.next().unwrap().parse().unwrap();
            let dir = p.next().unwrap().to_owned();
            let hex = p.next().unwrap();
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            (t, dir, bytes)
        })
        .collect()
}

pub fn file(name: &str) -> Vec<u8> {
    std::fs::read(traces().join("files").join(name)).unwrap()
}

#[derive(Default)]
pub struct Sink {
    pub data: Vec<u8>,
    pub opened: Vec<i64>,
    pub closed: Vec<bool>,
}

impl ChunkSink for Sink {
    fn open(&mut self, select: i64) -> Result<(), iocomd::proto::stream::LocalError> {
        self.opened.push(select);
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

/// A source sending `data` for every read request (empty: nothing to send).
pub struct Source {
    pub data: Vec<u8>,
    pub pos: usize,
}

impl Source {
    pub fn new(data: Vec<u8>) -> Self {
        Self { data, pos: 0 }
    }
}

impl ChunkSource for Source {
    fn open(&mut self, _select: i64) -> Result<(), u8> {
        self.pos = 0;
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

pub fn reference_device() -> DeviceEndpoint {
    reference_device_nr(9000)
}

/// [`reference_device`] with device number `nr`.
pub fn reference_device_nr(nr: u32) -> DeviceEndpoint {
    let raw = |name: &str, flags, size| BlockDef {
        name: name.into(),
        flags,
        json: None,
        min_size: size,
    };
    DeviceEndpoint::new(DeviceConfig {
        device: DeviceId::new("gina", nr, "*"),
        blocks: vec![
            raw("exp", device_flags::EXP, 44),
            raw("imp", device_flags::IMP, 24),
            raw("dexp", device_flags::EXP, 8205),
            raw("dimp", device_flags::IMP, 24),
        ],
        tod_ring: 257,
        frd_ring: 257,
    })
    .unwrap()
}
