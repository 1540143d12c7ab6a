//! iocomd: an IOCOM device daemon that receives Debian packages from IOCOM controllers
//! and hands them to the privileged install helper.
//!
//! The crate is split the same way the data flows:
//! - [`proto`]: the sans-I/O IOCOM protocol core (bytes and `now` in, bytes and events out).

pub mod config;
pub mod helper_client;
pub mod logging;
pub mod paths;
pub mod proto;
pub mod spool;
pub mod systemd;
