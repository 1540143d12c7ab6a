//! The privileged install helper: verifies Debian packages handed over by iocomd and installs
//! them transactionally with dpkg, restarting their units, gating on health and rolling back.
//!
//! Without the `service` feature (on by default) the library is [`verify`] alone: the package
//! checks, for iocomctl's `check` and iocomd's early refusal, without D-Bus, dpkg or systemd.

#[cfg(feature = "service")]
pub mod auth;
#[cfg(feature = "service")]
pub mod cache;
#[cfg(feature = "service")]
pub mod dpkg;
#[cfg(feature = "service")]
pub mod fsutil;
#[cfg(feature = "service")]
pub mod health;
#[cfg(feature = "service")]
pub mod journal;
#[cfg(feature = "service")]
pub mod lock;
#[cfg(feature = "service")]
pub mod paths;
#[cfg(feature = "service")]
pub mod receipt;
#[cfg(feature = "service")]
pub mod recover;
#[cfg(feature = "service")]
pub mod repack;
#[cfg(feature = "service")]
pub mod sandbox;
#[cfg(feature = "service")]
pub mod service;
#[cfg(feature = "service")]
pub mod stage;
#[cfg(feature = "service")]
pub mod systemd1;
#[cfg(feature = "service")]
pub mod txn;
#[cfg(feature = "service")]
pub mod units;
#[cfg(feature = "service")]
pub mod verifier;
pub mod verify;
