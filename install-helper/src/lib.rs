//! The privileged install helper: verifies Debian packages handed over by iocomd and installs
//! them transactionally with dpkg, restarting their units, gating on health and rolling back.

pub mod auth;
pub mod cache;
pub mod dpkg;
pub mod fsutil;
pub mod health;
pub mod journal;
pub mod lock;
pub mod paths;
pub mod receipt;
pub mod recover;
pub mod repack;
pub mod sandbox;
pub mod service;
pub mod stage;
pub mod txn;
pub mod units;
pub mod verifier;
pub mod verify;
