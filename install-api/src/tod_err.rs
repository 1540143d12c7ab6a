//! `tod_err` / `frd_err` values: eosal `osalStatus` numbers that the reference IOCOM
//! controller understands (it names the ones below 200), plus four of our own (210–213,
//! shown by ispy as "code = N"). The one table of these numbers in the workspace.

/// `OSAL_SUCCESS`: reset, no result yet.
pub const SUCCESS: u8 = 0;
/// `OSAL_PENDING`: transfer over, result (installation) not yet known.
pub const PENDING: u8 = 4;
/// `OSAL_COMPLETED`: installed and healthy.
pub const COMPLETED: u8 = 6;
/// `OSAL_STATUS_FAILED`: generic failure.
pub const FAILED: u8 = 100;
/// `OSAL_STATUS_TIMEOUT`: the stream stalled.
pub const TIMEOUT: u8 = 104;
/// `OSAL_STATUS_READING_FILE_FAILED`.
pub const READING_FILE_FAILED: u8 = 140;
/// `OSAL_STATUS_WRITING_FILE_FAILED`: writing the received data failed / no space.
pub const WRITING_FILE_FAILED: u8 = 142;
/// `OSAL_STATUS_DEVICE_PROGRAMMING_FAILED`.
pub const DEVICE_PROGRAMMING_FAILED: u8 = 166;
/// `OSAL_STATUS_PROGRAM_INSTALLATION_FAILED` ("program installation failed").
pub const PROGRAM_INSTALLATION_FAILED: u8 = 168;
/// `OSAL_STATUS_NO_ACCESS_RIGHT` ("no access rights").
pub const NO_ACCESS_RIGHT: u8 = 186;
/// `OSAL_STATUS_FAILED_TO_START_PROCESS` ("unable to start installer process").
pub const FAILED_TO_START_PROCESS: u8 = 188;
/// `OSAL_STATUS_CHECKSUM_ERROR` ("checksum error").
pub const CHECKSUM_ERROR: u8 = 204;
/// Ours: package refused by verification or policy ("code = 210").
pub const REJECTED: u8 = 210;
/// Ours: package too large ("code = 211").
pub const TOO_LARGE: u8 = 211;
/// Ours: device busy with another update ("code = 212").
pub const BUSY: u8 = 212;
/// Ours: transfer interrupted ("code = 213").
pub const INTERRUPTED: u8 = 213;
