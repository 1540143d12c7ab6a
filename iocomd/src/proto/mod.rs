//! The IOCOM protocol core, byte-compatible with iocafe's C library.
//!
//! Nothing in here performs I/O or reads a clock: codecs and state machines take bytes and
//! the current time as arguments and return bytes to send and events. Decoders return errors
//! for any malformed input and never panic.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod compress;
pub mod crc;
pub mod info;
pub mod mblk;
pub mod pjson;
pub mod signals;
pub mod stream;
