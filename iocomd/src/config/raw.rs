//! The configuration file schema as serde reads it: every key optional (fragments set only
//! what they change), unknown keys rejected. [`super::validate`] turns the merged result into
//! [`super::Settings`].

use super::values::{ByteSize, DeviceNumber};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A whole file, or the merge of all fragments.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub device: Option<RawDevice>,
    pub endpoints: Option<RawEndpoints>,
    pub security: Option<RawSecurity>,
    pub accounts: Option<BTreeMap<String, RawAccount>>,
    pub spool: Option<RawSpool>,
    pub stream: Option<RawStream>,
    pub helper: Option<RawHelper>,
    pub log: Option<RawLog>,
    pub hawkbit: Option<super::hawkbit::RawHawkbit>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDevice {
    pub name: Option<String>,
    pub number: Option<DeviceNumber>,
    pub network: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEndpoints {
    pub listen: Option<Vec<RawEndpoint>>,
    pub connect: Option<Vec<RawEndpoint>>,
    pub serial: Option<Vec<RawSerialEndpoint>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawSerialSide {
    Client,
    Server,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSerialEndpoint {
    pub port: String,
    pub baud: Option<u32>,
    pub parity: Option<String>,
    pub stop_bits: Option<u8>,
    pub side: Option<RawSerialSide>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawTransport {
    Tcp,
    Tls,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEndpoint {
    pub transport: RawTransport,
    pub address: String,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    pub server_name: Option<String>,
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSecurity {
    pub allow_plain_tcp_push: Option<bool>,
    pub allow_serial_push: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAccount {
    pub password_hash: Option<String>,
    pub certificate_sha256: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSpool {
    pub dir: Option<PathBuf>,
    pub max_package_size: Option<ByteSize>,
    pub min_free_space: Option<ByteSize>,
    pub stream_to_helper: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStream {
    pub buffer_size: Option<ByteSize>,
    pub max_transfer_seconds: Option<u64>,
    pub min_rate: Option<ByteSize>,
    pub rate_window_seconds: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum RawHelperKind {
    SystemBus,
    Bus,
    Spawn,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHelper {
    pub connection: Option<RawHelperKind>,
    pub address: Option<String>,
    pub program: Option<PathBuf>,
    pub args: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawLogTarget {
    Auto,
    Journald,
    Stderr,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLog {
    pub level: Option<String>,
    pub target: Option<RawLogTarget>,
}
