//! iocomd: an IOCOM device daemon that receives Debian packages from IOCOM controllers
//! and hands them to the privileged install helper.
//!
//! The crate is split the same way the data flows:
//! - [`net`]: the tokio driver: TCP/TLS listen and connect, one task per connection.
//! - [`proto`]: the sans-I/O IOCOM protocol core (bytes and `now` in, bytes and events out).
//! - [`spool`]: received packages streamed to disk with bounded memory.
//! - [`helper_client`]: the D-Bus client of the install helper (system bus or peer-to-peer).
//! - [`config`] and [`paths`]: validated settings from TOML fragments; every system path.
//! - [`daemon`]: the core loop (connections, update state machine, helper) and `run`.
//! - [`ddi`]: the hawkBit DDI client (fleet rollouts), behind the [`ddi::Installer`] seam.
//! - [`status`]: the update status signals published in the `exp` block.
//! - [`systemd`] and [`logging`]: sd-notify contact; journald or stderr logging.
//! - [`ctl`]: the controller side used by `iocomctl` (push, status).
//! - [`demo`]: the embedded demo environment (signing key, policy, sample package).
//! - [`civil`]: UTC calendar dates from Unix seconds, for what iocomd and iocomctl print.

pub mod civil;
pub mod config;
pub mod ctl;
pub mod daemon;
pub mod ddi;
pub mod demo;
pub mod helper_client;
pub mod logging;
pub mod net;
pub mod paths;
pub mod proto;
pub mod spool;
pub mod status;
pub mod systemd;
