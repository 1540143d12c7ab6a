//! Reading the reference traces in `tests/traces`: segments, and the frames each side sent.
#![allow(dead_code)]

use iocomd::proto::frame::{Element, Frame, FrameDecoder, Framing};
use std::path::PathBuf;

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

/// One decoded frame of a trace with the time of the segment that completed it.
#[derive(Debug, Clone)]
pub struct TimedFrame {
    pub t: f64,
    pub dir: String,
    pub frame: Frame,
}

/// Every frame of both directions in capture order (socket framing; a client's `53` hello
/// is skipped; acknowledgements are left out).
pub fn frames(name: &str) -> Vec<TimedFrame> {
    let mut decoders = [
        ("C2D", FrameDecoder::new(Framing::Socket, 16384), true),
        ("D2C", FrameDecoder::new(Framing::Socket, 16384), true),
    ];
    let mut out = Vec::new();
    for (t, dir, mut bytes) in load(name) {
        let Some((_, dec, first)) = decoders.iter_mut().find(|d| d.0 == dir) else {
            continue;
        };
        if *first {
            *first = false;
            if bytes.first() == Some(&0x53) {
                let len = 2 + usize::from(bytes[1]);
                bytes.drain(..len);
            }
        }
        dec.push(&bytes);
        while let Some((el, _)) = dec.next_element().unwrap() {
            if let Element::Frame(frame) = el {
                out.push(TimedFrame {
                    t,
                    dir: dir.clone(),
                    frame,
                });
            }
        }
    }
    out
}
