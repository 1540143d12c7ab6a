//! The update status iocomd publishes in its `exp` block: signal names, types and sizes
//! (the single definition used to build the block and its `info` entry), the phase and
//! daemon-side result codes, and [`UpdateStatus`] to write (device) or read (controller)
//! the whole set.
//!
//! Result codes are `install_api::ResultCode`s: numbers below 200 are the install helper's
//! `ErrorCode`s (e.g. 0 `ok`, 21 `signature-invalid`, 50 `dpkg-failed`), numbers from 200
//! iocomd's own ([`DaemonCode`]); the table, with the `tod_err` each maps to, is in
//! `install-api/src/code.rs`. `upd_seq` grows by one at every final result so a controller
//! tells a new result from the previous one.

mod packages;

pub use packages::{PackageEntry, PackageList};

use crate::proto::endpoint::BlockDef;
use crate::proto::info::{DeviceInfo, signal_block};
use crate::proto::mblk::Mblk;
use crate::proto::node::device_flags;
use crate::proto::pjson::Json;
use crate::proto::signals::{BlockLayout, STATE_CONNECTED, SignalError};

/// Name of the block that carries the status signals.
pub const STATUS_BLOCK: &str = "exp";
/// Signal group name in the `info` JSON.
pub const STATUS_GROUP: &str = "update";

/// Phase of the current push ([`UpdState`] number), `uchar`.
pub const UPD_STATE: &str = "upd_state";
/// Percent of the current phase, `uchar`.
pub const UPD_PROGRESS: &str = "upd_progress";
/// Bytes received of the current push, `uint`.
pub const UPD_BYTES: &str = "upd_bytes";
/// Incremented at every final result, `uint`.
pub const UPD_SEQ: &str = "upd_seq";
/// Result number of the last push (helper `ErrorCode` or [`DaemonCode`]), `ushort`.
pub const UPD_RESULT: &str = "upd_result";
/// Result code string of the last push (`"ok"`, `"signature-invalid"`, `"crc-mismatch"`…).
pub const UPD_CODE: &str = "upd_code";
/// Human message of the last result or the current phase.
pub const UPD_MSG: &str = "upd_msg";
/// Package being / last installed.
pub const UPD_PKG: &str = "upd_pkg";
/// Version being / last installed.
pub const UPD_VER: &str = "upd_ver";
/// Installed version of `upd_pkg` after the last result (empty: not installed).
pub const INST_VER: &str = "inst_ver";
/// Connections refused for a wrong password or account since iocomd started, `uint`.
pub const AUTH_FAIL: &str = "auth_fail";
/// The fleet (hawkBit DDI) link in one line, e.g. `hawkbit: downloading action 12 (40%), last
/// poll 2026-12-02T05:47:41Z`; empty when `[hawkbit]` is off.
pub const FLEET: &str = "fleet";
/// The packages the device manages, one line each ([`PackageList`]).
pub const UPD_PKGS: &str = "upd_pkgs";

/// Capacity of `upd_code` in bytes.
pub const CODE_LEN: usize = 32;
/// Capacity of `upd_msg` in bytes: room for a whole refusal or failure reason (the helper's
/// messages name no internal paths; dpkg's output stays in its receipt).
pub const MSG_LEN: usize = 1024;
/// Capacity of `upd_pkgs` in bytes (about 25 packages; more are counted in a `+N more` line).
pub const PKGS_LEN: usize = 1024;
/// Capacity of `upd_pkg`, `upd_ver` and `inst_ver` in bytes.
pub const NAME_LEN: usize = 64;
/// Capacity of `fleet` in bytes.
pub const FLEET_LEN: usize = 128;

/// The status signals: `(name, type, array size)`; strings hold up to `array` bytes.
pub const STATUS_SIGNALS: &[(&str, &str, usize)] = &[
    (UPD_STATE, "uchar", 1),
    (UPD_PROGRESS, "uchar", 1),
    (UPD_BYTES, "uint", 1),
    (UPD_SEQ, "uint", 1),
    (UPD_RESULT, "ushort", 1),
    (UPD_CODE, "str", CODE_LEN),
    (UPD_MSG, "str", MSG_LEN),
    (UPD_PKG, "str", NAME_LEN),
    (UPD_VER, "str", NAME_LEN),
    (INST_VER, "str", NAME_LEN),
    (AUTH_FAIL, "uint", 1),
    (FLEET, "str", FLEET_LEN),
    (UPD_PKGS, "str", PKGS_LEN),
];

/// The `exp` block entry for the `info` JSON.
pub fn status_block_json() -> Json {
    signal_block(STATUS_BLOCK, "up", STATUS_GROUP, STATUS_SIGNALS)
}

/// The `exp` block definition for [`crate::proto::endpoint::DeviceConfig::blocks`].
pub fn status_block_def() -> BlockDef {
    BlockDef {
        name: STATUS_BLOCK.to_owned(),
        flags: device_flags::EXP,
        json: Some(status_block_json()),
        min_size: 0,
    }
}

/// Phase of the update, the value of `upd_state` (the one definition, used by the daemon to
/// publish it and by iocomctl to read it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[repr(u8)]
pub enum UpdState {
    /// Nothing running.
    #[default]
    Idle = 0,
    /// A package is arriving.
    Receiving = 1,
    /// The helper verifies the package.
    Verifying = 2,
    /// dpkg runs.
    Installing = 3,
    /// Units restarted, waiting for health.
    HealthCheck = 4,
    /// Reinstalling the previous version.
    RollingBack = 5,
}

impl UpdState {
    /// From the signal value.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::Idle,
            1 => Self::Receiving,
            2 => Self::Verifying,
            3 => Self::Installing,
            4 => Self::HealthCheck,
            5 => Self::RollingBack,
            _ => return None,
        })
    }

    /// From the signal value as read (`None`: a value this reader does not know).
    pub fn from_value(v: i64) -> Option<Self> {
        u8::try_from(v).ok().and_then(Self::from_u8)
    }

    /// The state an install transaction in `phase` is in.
    pub fn of_phase(phase: install_api::Phase) -> Self {
        use install_api::Phase as P;
        match phase {
            P::Staging | P::Verify | P::Lock | P::Repair | P::Preflight | P::RollbackSource => {
                Self::Verifying
            }
            P::Install => Self::Installing,
            P::Restart | P::Health => Self::HealthCheck,
            P::Rollback => Self::RollingBack,
            P::Finished => Self::Idle,
        }
    }

    /// A short human name (`"health check"`).
    pub fn label(self) -> &'static str {
        match self {
            Self::HealthCheck => "health check",
            Self::RollingBack => "rolling back",
            other => other.name(),
        }
    }

    /// Lower-case name (`"idle"`, `"receiving"`, `"health-check"`…).
    pub fn name(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Receiving => "receiving",
            Self::Verifying => "verifying",
            Self::Installing => "installing",
            Self::HealthCheck => "health-check",
            Self::RollingBack => "rolling-back",
        }
    }
}

pub use install_api::{DaemonCode, ResultCode, tod_err};

/// The complete status as published.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateStatus {
    /// `upd_state`.
    pub state: UpdState,
    /// `upd_progress` (0–100).
    pub progress: u8,
    /// `upd_bytes`.
    pub bytes: u32,
    /// `upd_seq`.
    pub seq: u32,
    /// `upd_result`.
    pub result: u16,
    /// `upd_code`.
    pub code: String,
    /// `upd_msg`.
    pub msg: String,
    /// `upd_pkg`.
    pub pkg: String,
    /// `upd_ver`.
    pub ver: String,
    /// `inst_ver`.
    pub inst_ver: String,
    /// `auth_fail`.
    pub auth_fail: u32,
    /// `fleet`.
    pub fleet: String,
    /// `upd_pkgs`: the packages the device manages.
    pub packages: PackageList,
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("")
}

fn sig<'a>(
    layout: &'a BlockLayout,
    name: &str,
) -> Result<&'a crate::proto::signals::Signal, SignalError> {
    layout.signal(name).ok_or_else(|| SignalError::Unsupported {
        signal: name.to_owned(),
        what: "not in the status block",
    })
}

impl UpdateStatus {
    /// Writes every signal into `block` (laid out by `layout`); unchanged bytes stay clean,
    /// so only what changed is sent.
    pub fn write(&self, layout: &BlockLayout, block: &mut Mblk) -> Result<(), SignalError> {
        let ints: [(&str, i64); 6] = [
            (UPD_STATE, self.state as i64),
            (UPD_PROGRESS, i64::from(self.progress)),
            (UPD_BYTES, i64::from(self.bytes)),
            (UPD_SEQ, i64::from(self.seq)),
            (UPD_RESULT, i64::from(self.result)),
            (AUTH_FAIL, i64::from(self.auth_fail)),
        ];
        for (name, v) in ints {
            sig(layout, name)?.set_int(block, v)?;
        }
        let strs: [(&str, &str); 6] = [
            (UPD_CODE, &self.code),
            (UPD_MSG, &self.msg),
            (UPD_PKG, &self.pkg),
            (UPD_VER, &self.ver),
            (INST_VER, &self.inst_ver),
            (FLEET, &self.fleet),
        ];
        for (name, v) in strs {
            let s = sig(layout, name)?;
            s.set_str(block, truncate(v, s.n))?;
        }
        let s = sig(layout, UPD_PKGS)?;
        s.set_str(block, &self.packages.render(s.n))?;
        Ok(())
    }

    /// Reads the status from a device's `exp` block; `None` while the block is not connected
    /// (its `upd_seq` state lacks `CONNECTED`) or the signals are missing.
    pub fn read(layout: &BlockLayout, block: &Mblk) -> Option<Self> {
        let int = |name: &str| sig(layout, name).ok()?.get_int(block).ok();
        let (_, seq_state) = int(UPD_SEQ)?;
        if seq_state & STATE_CONNECTED == 0 {
            return None;
        }
        let num = |name: &str| int(name).map(|(v, _)| v);
        let text = |name: &str| {
            sig(layout, name)
                .ok()
                .and_then(|s| s.get_str(block).ok())
                .map(|(s, _)| s)
                .unwrap_or_default()
        };
        Some(Self {
            state: UpdState::from_u8(u8::try_from(num(UPD_STATE)?).ok()?)?,
            progress: u8::try_from(num(UPD_PROGRESS)?).ok()?,
            bytes: u32::try_from(num(UPD_BYTES)?).ok()?,
            seq: u32::try_from(num(UPD_SEQ)?).ok()?,
            result: u16::try_from(num(UPD_RESULT)?).ok()?,
            code: text(UPD_CODE),
            msg: text(UPD_MSG),
            pkg: text(UPD_PKG),
            ver: text(UPD_VER),
            inst_ver: text(INST_VER),
            auth_fail: num(AUTH_FAIL)
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(0),
            fleet: text(FLEET),
            packages: PackageList::parse(&text(UPD_PKGS)),
        })
    }

    /// Reads the status using a device's decoded `info` (controller side).
    pub fn read_with_info(info: &DeviceInfo, block: &Mblk) -> Option<Self> {
        Self::read(info.block(STATUS_BLOCK)?, block)
    }

    /// The status as JSON (for `iocomctl --json` and logs).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "state": self.state.name(),
            "progress": self.progress,
            "bytes": self.bytes,
            "seq": self.seq,
            "result": self.result,
            "code": self.code,
            "message": self.msg,
            "package": self.pkg,
            "version": self.ver,
            "installed_version": self.inst_ver,
            "auth_failures": self.auth_fail,
            "fleet": self.fleet,
            "packages": self.packages.entries(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::signals::layout_from_json;

    fn layout() -> BlockLayout {
        let doc = Json::Object(vec![(
            "mblk".to_owned(),
            Json::Array(vec![status_block_json()]),
        )]);
        layout_from_json(&doc.to_value())
            .unwrap()
            .into_iter()
            .next()
            .unwrap()
    }

    #[test]
    fn status_round_trips_through_the_block() {
        let l = layout();
        assert_eq!(l.name, "exp");
        let mut block = Mblk::new("exp", 8, device_flags::EXP, l.size);
        block.add_target(1, 8);
        let st = UpdateStatus {
            state: UpdState::Installing,
            progress: 42,
            bytes: 123_456,
            seq: 7,
            result: DaemonCode::CrcMismatch.number(),
            code: "crc-mismatch".into(),
            msg: "x".repeat(MSG_LEN + 100),
            pkg: "iocom-demo-hello".into(),
            ver: "1.0".into(),
            inst_ver: "0.9".into(),
            auth_fail: 3,
            fleet: "hawkbit: idle, last poll 2026-12-02T05:47:41Z".into(),
            packages: PackageList::parse("iocom-demo-hello 1.0 ok 1700000000\n"),
        };
        st.write(&l, &mut block).unwrap();
        let mut back = UpdateStatus::read(&l, &block).unwrap();
        assert_eq!(back.msg.len(), MSG_LEN);
        back.msg = st.msg.clone();
        assert_eq!(back, st);
    }

    #[test]
    fn an_unwritten_block_reads_as_unknown() {
        let l = layout();
        let mut block = Mblk::new("exp", 8, device_flags::EXP, l.size);
        block.add_target(1, 8);
        assert_eq!(UpdateStatus::read(&l, &block), None);
        // Written but no longer delivered by a connection: unknown again.
        UpdateStatus::default().write(&l, &mut block).unwrap();
        assert!(UpdateStatus::read(&l, &block).is_some());
        block.remove_connection(1);
        assert_eq!(UpdateStatus::read(&l, &block), None);
    }

    #[test]
    fn tod_err_mapping_uses_the_reference_codes() {
        use install_api::ErrorCode as E;
        let t = |c: E| ResultCode::Helper(c).tod_err();
        assert_eq!(t(E::Ok), 6);
        assert_eq!(t(E::DpkgFailed), 168);
        assert_eq!(t(E::UnhealthyRolledBack), 168);
        assert_eq!(t(E::RollbackFailed), 168);
        assert_eq!(t(E::SignatureInvalid), 186);
        // no-rollback-source: refused before anything changed, like not-newer.
        assert_eq!(t(E::NoRollbackSource), t(E::NotNewer));
        assert_eq!(DaemonCode::CrcMismatch.tod_err(), 204);
        assert_eq!(DaemonCode::NotAuthorized.tod_err(), 186);
        assert_eq!(DaemonCode::HelperUnavailable.tod_err(), 188);
        for c in DaemonCode::ALL {
            let t = c.tod_err();
            assert!(t != tod_err::COMPLETED && t != tod_err::PENDING && t != 0);
        }
    }

    #[test]
    fn every_phase_has_a_state_in_install_order() {
        let mut last = UpdState::Verifying as u8;
        for p in install_api::Phase::ALL {
            let st = UpdState::of_phase(p);
            if p != install_api::Phase::Finished {
                assert!(st as u8 >= last, "{p}");
                last = st as u8;
            }
        }
        assert_eq!(UpdState::from_value(4), Some(UpdState::HealthCheck));
        assert_eq!(UpdState::from_value(-1), None);
        assert_eq!(UpdState::HealthCheck.label(), "health check");
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("äää", 3), "ä");
        assert_eq!(truncate("abc", 5), "abc");
    }

    #[test]
    fn states_round_trip() {
        for v in 0..=5 {
            assert_eq!(UpdState::from_u8(v).unwrap() as u8, v);
        }
        assert_eq!(UpdState::from_u8(6), None);
    }
}
