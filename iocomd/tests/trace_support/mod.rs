//! Reading the reference traces in `tests/traces`: segments, and the frames each side sent.
#![allow(dead_code)]

use iocomd::proto::frame::{Element, Frame, FrameDecoder, Framing};
// Trace and file loading are the replay tests' own (one copy).
#[path = "../replay_support/mod.rs"]
mod replay_support;
pub use replay_support::{file, load};

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
