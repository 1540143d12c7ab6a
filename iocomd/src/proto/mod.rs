//! The IOCOM protocol core, byte-compatible with iocafe's C library.
//!
//! Nothing in here performs I/O or reads a clock: codecs and state machines take bytes and
//! the current time as arguments and return bytes to send and events. Decoders return errors
//! for any malformed input and never panic.
//!
//! Transport layer (spec `transport.md`): [`frame`] (frame/ACK codec and stream decoder),
//! [`handshake`] (socket handshake), [`auth`] (authentication frame, automatic device numbers),
//! [`sysframe`] (memory block info [`sysframe::MblkInfo`], remove requests, our block ids),
//! [`password`] (hashes and accounts), [`serial`] (serial CRC and control characters) and
//! [`conn`] (the connection state machine the net driver and tests run).

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod auth;
pub mod compress;
pub mod conn;
pub mod crc;
pub mod endpoint;
pub mod frame;
pub mod handshake;
pub mod info;
pub mod lighthouse;
pub mod mblk;
pub mod node;
pub mod password;
pub mod pjson;
pub mod serial;
pub mod signals;
pub mod stream;
pub mod sysframe;
