//! Delta encoding and IOCOM's zero-run compression (spec data-and-streams.md §2.4–2.5).
//!
//! A data-frame payload is either raw bytes or a sequence of alternating *literal runs*
//! (`count`, `count` bytes) and *zero runs* (`count`), always starting with a literal run.
//! Either form may be delta encoded: the receiver adds the bytes (mod 256) to what it holds
//! instead of storing them. The encoder reproduces the C `ioc_compress` byte for byte,
//! including where it stops when the frame is full.

use thiserror::Error;

/// Payload flag: the bytes are added to the receiver's copy (mod 256), not stored.
pub const DELTA_ENCODED: u8 = 0x01;
/// Payload flag: the payload is zero-run compressed.
pub const COMPRESSED: u8 = 0x02;
/// Frame flag: the last frame of a snapshot.
pub const SYNC_COMPLETE: u8 = 0x10;

/// Why a received payload could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// A literal run announces more bytes than the payload has left.
    #[error(
        "compressed payload: literal run of {run} bytes at payload offset {offset} exceeds the payload"
    )]
    LiteralPastPayload { offset: usize, run: usize },
    /// The decoded data would extend past the end of the receiving block.
    #[error("payload covers {needed} bytes but only {room} fit before the block end")]
    PastBlockEnd { needed: usize, room: usize },
}

/// The result of compressing a range: the payload and how many input bytes it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compressed {
    /// The compressed payload.
    pub payload: Vec<u8>,
    /// Number of input bytes the payload covers (the rest goes in the next frame).
    pub consumed: usize,
}

/// Compresses `src` into at most `cap` bytes, exactly like the C `ioc_compress`.
///
/// Returns `None` when compression does not pay (fewer than 4 input bytes, or the output is
/// not shorter than the input it covers); the caller then sends raw bytes.
pub fn compress(src: &[u8], cap: usize) -> Option<Compressed> {
    if src.len() < 4 {
        return None;
    }
    // Fast path with the same result: only zero runs of two or more bytes make the output
    // shorter than its input, and without one the encoder stops (output full) before input
    // position `cap + 2`. Incompressible data (packages are compressed archives) is so
    // rejected by one scan instead of the run-by-run loop.
    let window = src
        .get(..src.len().min(cap.saturating_add(2)))
        .unwrap_or(src);
    if !has_zero_pair(window) {
        return None;
    }
    compress_runs(src, cap)
}

/// True if `data` holds two adjacent zero bytes: one vectorised substring search (in
/// incompressible data a lone zero byte comes every 256 bytes or so, and a search stopping
/// at each one showed in the controller's profile).
fn has_zero_pair(data: &[u8]) -> bool {
    memchr::memmem::find(data, &[0, 0]).is_some()
}

/// The run-by-run encoder behind [`compress`]. Runs are found with vectorised searches
/// (`memchr` for zeros in literals, word compares for zero runs) instead of byte by byte.
fn compress_runs(src: &[u8], cap: usize) -> Option<Compressed> {
    let mut out: Vec<u8> = Vec::with_capacity(cap.min(src.len()));
    let mut p = 0usize;
    while p < src.len() {
        // Literal run: up to 255 bytes, ended by a zero pair (or by a zero in its last slot).
        let window = src.get(p..p + (src.len() - p).min(255)).unwrap_or(&[]);
        let count = literal_len(window);
        if out.len() + count + 1 > cap {
            break;
        }
        out.push(count as u8); // count <= 255
        out.extend_from_slice(window.get(..count).unwrap_or(&[]));
        p += count;
        if p == src.len() {
            break;
        }
        // Zero run: up to 255 zero bytes.
        let window = src.get(p..p + (src.len() - p).min(255)).unwrap_or(&[]);
        let zeros = zero_len(window);
        if out.len() + 1 > cap {
            break;
        }
        out.push(zeros as u8); // zeros <= 255
        p += zeros;
    }
    if out.len() < p {
        Some(Compressed {
            payload: out,
            consumed: p,
        })
    } else {
        None
    }
}

/// Length of the literal run at the start of `w` (at most 255 bytes long): up to the first
/// zero that is followed by another zero or is the window's last byte.
fn literal_len(w: &[u8]) -> usize {
    for at in memchr::memchr_iter(0, w) {
        if at + 1 == w.len() || w.get(at + 1) == Some(&0) {
            return at;
        }
    }
    w.len()
}

/// Number of leading zero bytes of `w`, eight at a time.
fn zero_len(w: &[u8]) -> usize {
    let mut n = 0;
    let mut words = w.chunks_exact(8);
    for c in &mut words {
        if c.iter().fold(0u8, |acc, b| acc | b) != 0 {
            break;
        }
        n += 8;
    }
    n + w
        .get(n..)
        .unwrap_or(&[])
        .iter()
        .take_while(|&&b| b == 0)
        .count()
}

/// Applies a received payload to `dst` (the receiver's buffer from the frame's start address
/// to the block end) and returns the number of bytes it covers.
///
/// `flags` are the frame flags ([`DELTA_ENCODED`], [`COMPRESSED`]). Unlike the C receiver,
/// which silently clips data past the block end, this rejects it: a peer that has agreed on
/// the block size never sends it. `dst` is left unchanged on error.
pub fn decode_into(payload: &[u8], flags: u8, dst: &mut [u8]) -> Result<usize, DecodeError> {
    let delta = flags & DELTA_ENCODED != 0;
    if flags & COMPRESSED == 0 {
        if payload.len() > dst.len() {
            return Err(DecodeError::PastBlockEnd {
                needed: payload.len(),
                room: dst.len(),
            });
        }
        apply_run(dst, 0, payload, delta);
        return Ok(payload.len());
    }
    let needed = decoded_len(payload)?;
    if needed > dst.len() {
        return Err(DecodeError::PastBlockEnd {
            needed,
            room: dst.len(),
        });
    }
    // Second pass: validated above, so every slice below is in range.
    let mut src = 0usize;
    let mut at = 0usize;
    while src < payload.len() {
        let n = usize::from(payload.get(src).copied().unwrap_or(0));
        src += 1;
        let lit = payload.get(src..src + n).unwrap_or(&[]);
        apply_run(dst, at, lit, delta);
        src += n;
        at += n;
        let Some(&z) = payload.get(src) else { break };
        src += 1;
        let z = usize::from(z);
        if !delta && let Some(zs) = dst.get_mut(at..at + z) {
            zs.fill(0);
        }
        at += z;
    }
    Ok(at)
}

/// Number of bytes a compressed payload expands to, or an error if it is malformed.
pub fn decoded_len(payload: &[u8]) -> Result<usize, DecodeError> {
    let mut src = 0usize;
    let mut total = 0usize;
    while src < payload.len() {
        let n = usize::from(payload.get(src).copied().unwrap_or(0));
        if src + 1 + n > payload.len() {
            return Err(DecodeError::LiteralPastPayload {
                offset: src,
                run: n,
            });
        }
        src += 1 + n;
        total += n;
        let Some(&z) = payload.get(src) else { break };
        src += 1;
        total += usize::from(z);
    }
    Ok(total)
}

fn apply_run(dst: &mut [u8], at: usize, bytes: &[u8], delta: bool) {
    let Some(target) = dst.get_mut(at..at + bytes.len()) else {
        return;
    };
    if delta {
        for (d, s) in target.iter_mut().zip(bytes) {
            *d = d.wrapping_add(*s);
        }
    } else {
        target.copy_from_slice(bytes);
    }
}

/// Delta of `new` against `old` (byte-wise `new - old` mod 256); both must be equally long.
pub fn delta(new: &[u8], old: &[u8]) -> Vec<u8> {
    new.iter()
        .zip(old)
        .map(|(n, o)| n.wrapping_sub(*o))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte-by-byte encoder the C `ioc_compress` is (the reference for the fast one).
    fn reference(src: &[u8], cap: usize) -> Option<Compressed> {
        let mut out: Vec<u8> = Vec::with_capacity(cap.min(src.len()));
        let mut p = 0usize;
        let mut remaining = src.len();
        while remaining > 0 {
            // Literal run.
            let run_start = p;
            let max = remaining.min(255);
            let mut count = 0usize;
            while count < max {
                let here = src.get(p).copied().unwrap_or(0);
                let next = if count + 1 < max {
                    src.get(p + 1).copied().unwrap_or(0)
                } else {
                    here
                };
                if here == 0 && next == 0 {
                    break;
                }
                count += 1;
                p += 1;
            }
            if out.len() + count + 1 > cap {
                p = run_start;
                break;
            }
            out.push(count as u8); // count <= 255
            out.extend_from_slice(src.get(run_start..p).unwrap_or(&[]));
            remaining -= count;
            if remaining == 0 {
                break;
            }
            // Zero run.
            let zero_start = p;
            let max = remaining.min(255);
            let mut zeros = 0usize;
            while zeros < max && src.get(p).copied() == Some(0) {
                zeros += 1;
                p += 1;
            }
            if out.len() + 1 > cap {
                p = zero_start;
                break;
            }
            out.push(zeros as u8); // zeros <= 255
            remaining -= zeros;
        }
        if out.len() < p {
            Some(Compressed {
                payload: out,
                consumed: p,
            })
        } else {
            None
        }
    }

    /// A deterministic pseudo-random sequence (xorshift32).
    fn xorshift(mut seed: u32) -> impl FnMut() -> u32 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        }
    }

    #[test]
    fn fast_path_gives_the_same_result_as_the_run_encoder() {
        let mut next = xorshift(0x9e37_79b9u32);
        let (mut with_pair, mut without_pair) = (0, 0);
        for case in 0..2000 {
            let len = (next() % 700) as usize + 4;
            // Mostly non-zero bytes with lone zeros, sometimes a zero pair somewhere.
            let mut src: Vec<u8> = (0..len)
                .map(|_| {
                    if next().is_multiple_of(40) {
                        0
                    } else {
                        (next() % 255 + 1) as u8
                    }
                })
                .collect();
            if case % 3 == 0 {
                let at = next() as usize % (len - 1);
                src[at] = 0;
                src[at + 1] = 0;
            }
            let cap = (next() % 800) as usize + 1;
            let window = &src[..src.len().min(cap + 2)];
            let pair = window.windows(2).any(|w| w == [0, 0]);
            assert_eq!(has_zero_pair(window), pair, "case {case}");
            if pair {
                with_pair += 1;
            } else {
                without_pair += 1;
            }
            assert_eq!(compress(&src, cap), reference(&src, cap), "case {case}");
        }
        // Both sides of the fast path were exercised.
        assert!(
            with_pair > 200 && without_pair > 200,
            "{with_pair} / {without_pair}"
        );
    }

    #[test]
    fn run_encoder_equals_the_byte_by_byte_reference() {
        let mut next = xorshift(0x2545_f491u32);
        for case in 0..3000 {
            // Alternating literal and zero stretches of random lengths (0..600), the literals
            // sprinkled with lone zeros: runs longer than 255, zeros at the 255th slot, etc.
            let mut src = Vec::new();
            while src.len() < (next() % 2000) as usize + 1 {
                for _ in 0..next() % 600 {
                    src.push(if next().is_multiple_of(9) {
                        0
                    } else {
                        (next() % 255 + 1) as u8
                    });
                }
                src.extend(std::iter::repeat_n(0, (next() % 600) as usize));
            }
            let cap = (next() % 1500) as usize + 1;
            assert_eq!(
                compress_runs(&src, cap),
                reference(&src, cap),
                "case {case}"
            );
            assert_eq!(compress(&src, cap), reference(&src, cap), "case {case}");
        }
    }

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    fn c(src: &[u8], cap: usize) -> Option<Vec<u8>> {
        compress(src, cap).map(|r| {
            assert_eq!(r.consumed, src.len());
            r.payload
        })
    }

    #[test]
    fn spec_examples_from_the_compiled_c_function() {
        assert_eq!(compress(&[0, 0, 0], 100), None);
        assert_eq!(c(&[0; 4], 100), Some(hex("00 04")));
        assert_eq!(c(&[0; 24], 1000), Some(hex("00 18")));
        assert_eq!(c(&[0; 279], 1000), Some(hex("00 FF 00 18")));
        assert_eq!(c(&[0; 600], 1000), Some(hex("00 FF 00 FF 00 5A")));
        assert_eq!(
            c(&hex("00 00 00 05 00 00 00 00 07 00 00"), 100),
            Some(hex("00 03 01 05 04 01 07 02"))
        );
        let mut lone = hex("05 00 07");
        lone.extend([0; 10]);
        lone.push(9);
        assert_eq!(c(&lone, 100), Some(hex("03 05 00 07 0A 01 09")));
        assert_eq!(
            c(&hex("01 00 00 00 00 00 00 02 00"), 100),
            Some(hex("01 01 06 01 02 01"))
        );
        assert_eq!(compress(&hex("01 02 03 04 00"), 100), None);
        assert_eq!(compress(&[0x11; 300], 1000), None);
        let mut key = vec![2];
        key.extend([0; 8]);
        key.push(2);
        key.extend([0; 269]);
        assert_eq!(c(&key, 1000), Some(hex("01 02 08 01 02 FF 00 0E")));
    }

    #[test]
    fn stops_when_the_frame_is_full() {
        let mut src = vec![0u8; 10];
        src.extend([7u8; 10]);
        let r = compress(&src, 5).unwrap();
        assert_eq!(r.payload, hex("00 0A"));
        assert_eq!(r.consumed, 10);
    }

    #[test]
    fn decode_plain_and_delta() {
        let mut dst = [1u8, 2, 3, 4, 5, 6];
        assert_eq!(
            decode_into(&hex("01 01 03 01 06"), COMPRESSED, &mut dst),
            Ok(5)
        );
        assert_eq!(dst, [1, 0, 0, 0, 6, 6]);
        let mut dst = [1u8, 2, 3, 4, 5, 6];
        assert_eq!(
            decode_into(&hex("01 01 03 01 06"), COMPRESSED | DELTA_ENCODED, &mut dst),
            Ok(5)
        );
        assert_eq!(dst, [2, 2, 3, 4, 11, 6]);
        let mut dst = [250u8, 1];
        assert_eq!(decode_into(&[10, 1], DELTA_ENCODED, &mut dst), Ok(2));
        assert_eq!(dst, [4, 2]);
    }

    #[test]
    fn decode_rejects_malformed_and_overlong_payloads() {
        let mut dst = [9u8; 4];
        assert_eq!(
            decode_into(&[3, 1, 2], COMPRESSED, &mut dst),
            Err(DecodeError::LiteralPastPayload { offset: 0, run: 3 })
        );
        assert_eq!(
            decode_into(&[0, 5], COMPRESSED, &mut dst),
            Err(DecodeError::PastBlockEnd { needed: 5, room: 4 })
        );
        assert_eq!(
            decode_into(&[1, 2, 3, 4, 5], 0, &mut dst),
            Err(DecodeError::PastBlockEnd { needed: 5, room: 4 })
        );
        assert_eq!(dst, [9; 4], "a rejected payload changes nothing");
    }
}
