//! The privileged install helper: verifies Debian packages handed over by iocomd and installs
//! them transactionally with dpkg, restarting their units, gating on health and rolling back.

pub mod error;
pub mod verify;
