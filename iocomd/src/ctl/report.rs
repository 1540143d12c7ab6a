//! The device's verdict: iocomd's status signals in the device's `exp` block (read by name
//! through the device's `info` block), `tod_err`, and the mapping of result codes onto
//! iocomctl's exit classes.

use crate::proto::info::DeviceInfo;
use crate::proto::mblk::Mblk;
use crate::proto::signals::{STATE_CONNECTED, Signal, SignalType};
use crate::proto::stream::status;
use install_api::{Class, ResultCode};
use serde::Serialize;

/// Names of iocomd's status signals (block `exp`), as defined by [`crate::status`].
pub mod names {
    pub use crate::status::{
        FLEET, INST_VER, STATUS_BLOCK as BLOCK, UPD_BYTES as BYTES, UPD_CODE as CODE,
        UPD_MSG as MSG, UPD_PKG as PKG, UPD_PKGS as PKGS, UPD_PROGRESS as PROGRESS,
        UPD_RESULT as RESULT, UPD_SEQ as SEQ, UPD_STATE as STATE, UPD_VER as VER,
    };
}

pub use crate::status::UpdState;

/// What the device publishes about updates, as read at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeviceReport {
    /// The device's full path as found (`gina` → `gina9001.cafenet`), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// True when the device publishes iocomd's status signals; false for a plain IOCOM device,
    /// whose only update state is `tod_state`/`tod_err`.
    pub iocomd: bool,
    /// `tod_state` (0 idle, 1 a stream is running), if connected.
    pub tod_state: Option<u8>,
    /// `tod_err` (the stream verdict: 4 pending, 6 completed, …), if connected.
    pub tod_err: Option<u8>,
    /// `upd_state`.
    pub state: Option<UpdState>,
    /// `upd_progress` (%).
    pub progress: Option<u8>,
    /// `upd_bytes`.
    pub bytes: Option<u64>,
    /// `upd_seq`.
    pub seq: Option<u64>,
    /// `upd_result`.
    pub result: Option<u16>,
    /// `upd_code`.
    pub code: Option<String>,
    /// `upd_msg`.
    pub message: Option<String>,
    /// `upd_pkg`.
    pub package: Option<String>,
    /// `upd_ver`.
    pub version: Option<String>,
    /// `inst_ver`.
    pub installed_version: Option<String>,
    /// `fleet`: the device's hawkBit link, when it has one (absent or empty otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet: Option<String>,
    /// `upd_pkgs`: every package the device manages (`None`: an iocomd that does not publish
    /// the list).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packages: Option<Vec<crate::status::PackageEntry>>,
}

/// The status signals located in the device's `info`.
#[derive(Debug, Clone, Default)]
pub(crate) struct StatusSignals {
    state: Option<Signal>,
    progress: Option<Signal>,
    bytes: Option<Signal>,
    seq: Option<Signal>,
    result: Option<Signal>,
    code: Option<Signal>,
    msg: Option<Signal>,
    pkg: Option<Signal>,
    ver: Option<Signal>,
    inst_ver: Option<Signal>,
    fleet: Option<Signal>,
    pkgs: Option<Signal>,
}

impl StatusSignals {
    /// Finds the signals by name in block `exp` of the device's info.
    pub(crate) fn locate(info: &DeviceInfo) -> Self {
        let s = |n| info.signal(names::BLOCK, n).cloned();
        Self {
            state: s(names::STATE),
            progress: s(names::PROGRESS),
            bytes: s(names::BYTES),
            seq: s(names::SEQ),
            result: s(names::RESULT),
            code: s(names::CODE),
            msg: s(names::MSG),
            pkg: s(names::PKG),
            ver: s(names::VER),
            inst_ver: s(names::INST_VER),
            fleet: s(names::FLEET),
            pkgs: s(names::PKGS),
        }
    }

    /// True when the device publishes iocomd's result signals (`upd_seq` and `upd_code`).
    pub(crate) fn present(&self) -> bool {
        self.seq.is_some() && self.code.is_some()
    }

    /// True when `upd_seq` has arrived (its state byte is CONNECTED).
    pub(crate) fn known(&self, exp: &Mblk) -> bool {
        self.seq.as_ref().is_some_and(|s| int(s, exp).is_some())
    }

    /// Reads everything that is connected.
    pub(crate) fn read(&self, exp: Option<&Mblk>, tod_err: Option<u8>) -> DeviceReport {
        let Some(exp) = exp else {
            return DeviceReport {
                tod_err,
                ..DeviceReport::default()
            };
        };
        let i = |s: &Option<Signal>| s.as_ref().and_then(|s| int(s, exp));
        let t = |s: &Option<Signal>| s.as_ref().and_then(|s| text(s, exp));
        DeviceReport {
            tod_err,
            state: i(&self.state).and_then(UpdState::from_value),
            progress: i(&self.progress).and_then(|v| u8::try_from(v).ok()),
            bytes: i(&self.bytes).and_then(|v| u64::try_from(v).ok()),
            seq: i(&self.seq).and_then(|v| u64::try_from(v).ok()),
            result: i(&self.result).and_then(|v| u16::try_from(v).ok()),
            code: t(&self.code),
            message: t(&self.msg),
            package: t(&self.pkg),
            version: t(&self.ver),
            installed_version: t(&self.inst_ver),
            fleet: t(&self.fleet).filter(|f| !f.is_empty()),
            packages: t(&self.pkgs)
                .map(|text| crate::status::PackageList::parse(&text).entries().to_vec()),
            ..DeviceReport::default()
        }
    }
}

fn int(s: &Signal, exp: &Mblk) -> Option<i64> {
    if s.ty == SignalType::Str {
        return None;
    }
    let (v, state) = s.get_int(exp).ok()?;
    (state & STATE_CONNECTED != 0).then_some(v)
}

fn text(s: &Signal, exp: &Mblk) -> Option<String> {
    let (v, state) = s.get_str(exp).ok()?;
    (state & STATE_CONNECTED != 0).then_some(v)
}

/// How a failed push is classified (each class has its own exit status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureClass {
    /// The device does not accept pushes from us (exit 4).
    Auth,
    /// The device is busy with another update (exit 5).
    Busy,
    /// The transfer failed: CRC mismatch, interrupted, too large, spool (exit 6).
    Transfer,
    /// The package was refused: signature, policy, version, archive (exit 7).
    Refused,
    /// Installation failed or was rolled back (exit 8).
    InstallFailed,
}

impl FailureClass {
    /// The failure class of a result class (`None` for success).
    pub fn of(class: Class) -> Option<Self> {
        Some(match class {
            Class::Ok => return None,
            Class::Auth => Self::Auth,
            Class::Busy => Self::Busy,
            Class::Transfer => Self::Transfer,
            Class::Refused => Self::Refused,
            Class::InstallFailed => Self::InstallFailed,
        })
    }

    /// The process exit status of this class.
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Auth => 4,
            Self::Busy => 5,
            Self::Transfer => 6,
            Self::Refused => 7,
            Self::InstallFailed => 8,
        }
    }
}

/// The class of a final result (`upd_code` string, `upd_result` number); `None` = success.
///
/// The code table (`install_api::code`) decides: by number where known, else by string
/// ([`ResultCode::from_parts`]); a code this reader does not know is classed by its number's
/// range ([`Class::of_unknown`]), and without a number it is an install failure.
pub fn classify(code: &str, number: Option<u16>) -> Option<FailureClass> {
    if code.is_empty() && number == Some(0) {
        return None;
    }
    let class = match ResultCode::from_parts(number, code) {
        // "ok" with a failure number is not a success: the number decides.
        Some(c) => c.class(),
        None => number.map_or(Class::InstallFailed, Class::of_unknown),
    };
    FailureClass::of(class)
}

/// The class of a final `tod_err` (for devices without iocomd's status signals, or a refusal
/// that did not produce a result); `None` is success (6).
pub fn classify_tod_err(tod_err: u8) -> Option<FailureClass> {
    use crate::status::tod_err as t;
    Some(match tod_err {
        t::COMPLETED => return None,
        t::CHECKSUM_ERROR
        | t::TIMEOUT
        | t::READING_FILE_FAILED
        | t::WRITING_FILE_FAILED
        | t::TOO_LARGE
        | t::INTERRUPTED => FailureClass::Transfer,
        t::NO_ACCESS_RIGHT | t::REJECTED => FailureClass::Refused,
        t::BUSY => FailureClass::Busy,
        _ => FailureClass::InstallFailed,
    })
}

/// True when `tod_err` is a final verdict (not "no result yet" 0 or pending 4).
pub fn tod_err_is_final(tod_err: u8) -> bool {
    !matches!(tod_err, status::SUCCESS | status::PENDING)
}

#[cfg(test)]
mod tests {
    use super::*;
    use FailureClass::*;

    #[test]
    fn codes_map_onto_classes() {
        assert_eq!(classify("ok", Some(0)), None);
        assert_eq!(classify("busy", Some(3)), Some(Busy));
        assert_eq!(classify("busy", Some(203)), Some(Busy));
        assert_eq!(classify("dpkg-locked", Some(42)), Some(Busy));
        assert_eq!(classify("no-rollback-source", Some(43)), Some(Refused));
        assert_eq!(classify("no-rollback-source", None), Some(Refused));
        assert_eq!(classify("crc-mismatch", Some(200)), Some(Transfer));
        assert_eq!(classify("too-large", Some(201)), Some(Transfer));
        assert_eq!(classify("interrupted", Some(204)), Some(Transfer));
        // The same string from the daemon (spool) and the helper (pre-flight).
        assert_eq!(classify("no-space", Some(202)), Some(Transfer));
        assert_eq!(classify("no-space", Some(41)), Some(Refused));
        assert_eq!(classify("not-authorized", Some(205)), Some(Auth));
        assert_eq!(classify("not-authorized", Some(1)), Some(InstallFailed));
        assert_eq!(classify("signature-invalid", Some(21)), Some(Refused));
        assert_eq!(classify("not-newer", Some(32)), Some(Refused));
        assert_eq!(classify("dpkg-failed", Some(50)), Some(InstallFailed));
        assert_eq!(
            classify("unhealthy-rolled-back", Some(60)),
            Some(InstallFailed)
        );
        assert_eq!(
            classify("helper-unavailable", Some(206)),
            Some(InstallFailed)
        );
        // Unknown numbers fall back to the string, then to install failed.
        assert_eq!(classify("signature-invalid", Some(150)), Some(Refused));
        assert_eq!(classify("new-policy-code", Some(33)), Some(Refused));
        assert_eq!(classify("something", Some(250)), Some(InstallFailed));
        assert_eq!(classify("something", None), Some(InstallFailed));
        // "ok" with a failure number is not a success.
        assert_eq!(classify("ok", Some(60)), Some(InstallFailed));
    }

    #[test]
    fn tod_err_alone() {
        assert_eq!(classify_tod_err(6), None);
        assert_eq!(classify_tod_err(204), Some(Transfer));
        assert_eq!(classify_tod_err(211), Some(Transfer));
        assert_eq!(classify_tod_err(186), Some(Refused));
        assert_eq!(classify_tod_err(210), Some(Refused));
        assert_eq!(classify_tod_err(212), Some(Busy));
        assert_eq!(classify_tod_err(168), Some(InstallFailed));
        assert!(!tod_err_is_final(4) && !tod_err_is_final(0) && tod_err_is_final(168));
    }

    #[test]
    fn exit_codes_are_distinct() {
        let codes: Vec<u8> = [Auth, Busy, Transfer, Refused, InstallFailed]
            .iter()
            .map(|c| c.exit_code())
            .collect();
        assert_eq!(codes, [4, 5, 6, 7, 8]);
    }
}
