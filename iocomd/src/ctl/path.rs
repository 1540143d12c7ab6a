//! IOCOM device paths such as `gina3.cafenet`: device name, device number, network.

use crate::proto::sysframe::{MAX_NAME_LEN, MAX_NETWORK_NAME_LEN};
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// A device path `NAME` `NUMBER` `.` `NETWORK`, e.g. `gina3.cafenet`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct DevicePath {
    /// Device name (`gina`): letters, digits and `_`, starting with a letter or `_`.
    pub name: String,
    /// Device number (`3`), 1..=8999 (0 and automatic numbers cannot be addressed).
    pub nr: u32,
    /// IO network name (`cafenet`).
    pub network: String,
}

/// Why a device path is not valid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid device path {path:?}: {why} (expected NAME NUMBER.NETWORK, e.g. gina3.cafenet)")]
pub struct DevicePathError {
    /// The text given.
    pub path: String,
    /// What is wrong.
    pub why: &'static str,
}

impl DevicePath {
    /// The same path for the protocol core's block binding.
    pub fn to_proto(&self) -> crate::proto::node::DevicePath {
        crate::proto::node::DevicePath {
            name: self.name.clone(),
            nr: Some(self.nr),
            network: Some(self.network.clone()),
        }
    }

    /// The account name the device authenticates with (`gina3`).
    pub fn account_name(&self) -> String {
        format!("{}{}", self.name, self.nr)
    }
}

impl fmt::Display for DevicePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}.{}", self.name, self.nr, self.network)
    }
}

impl FromStr for DevicePath {
    type Err = DevicePathError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why| DevicePathError {
            path: s.to_owned(),
            why,
        };
        let (dev, network) = s.split_once('.').ok_or_else(|| err("no \".NETWORK\""))?;
        let digits = dev.len() - dev.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let (name, nr) = dev.split_at(dev.len() - digits);
        if name.is_empty() {
            return Err(err("no device name"));
        }
        if nr.is_empty() {
            return Err(err("no device number after the name"));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(err("device name longer than 15 characters"));
        }
        let first_ok = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if !first_ok || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(err(
                "device name must be letters, digits and _ and start with a letter",
            ));
        }
        if nr.len() > 1 && nr.starts_with('0') {
            return Err(err("device number has a leading zero"));
        }
        let nr: u32 = nr.parse().map_err(|_| err("device number too large"))?;
        if !(1..crate::proto::auth::TO_AUTO_DEVICE_NR).contains(&nr) {
            return Err(err("device number must be 1..=8998"));
        }
        if network.is_empty() {
            return Err(err("empty network name"));
        }
        if network.len() > MAX_NETWORK_NAME_LEN {
            return Err(err("network name longer than 23 characters"));
        }
        if !network
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(err("network name must be letters, digits, _ and -"));
        }
        Ok(Self {
            name: name.to_owned(),
            nr,
            network: network.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_name_number_network() {
        let p: DevicePath = "gina3.cafenet".parse().unwrap();
        assert_eq!(
            (p.name.as_str(), p.nr, p.network.as_str()),
            ("gina", 3, "cafenet")
        );
        assert_eq!(p.to_string(), "gina3.cafenet");
        assert_eq!(p.account_name(), "gina3");
        let p: DevicePath = "my_dev2x10.iocafe-net".parse().unwrap();
        assert_eq!((p.name.as_str(), p.nr), ("my_dev2x", 10));
    }

    #[test]
    fn rejects_bad_paths_with_a_reason() {
        for (bad, why) in [
            ("gina3", "no \".NETWORK\""),
            ("gina.cafenet", "no device number after the name"),
            ("3.cafenet", "no device name"),
            ("gina3.", "empty network name"),
            ("gina03.cafenet", "device number has a leading zero"),
            ("gina0.cafenet", "device number must be 1..=8998"),
            ("gina9000.cafenet", "device number must be 1..=8998"),
            ("gina99999999999.cafenet", "device number too large"),
            (
                "gi-na3.cafenet",
                "device name must be letters, digits and _ and start with a letter",
            ),
            (
                "sixteen_chars_ab3.cafenet",
                "device name longer than 15 characters",
            ),
            (
                "gina3.cafe.net",
                "network name must be letters, digits, _ and -",
            ),
            (
                "gina3.abcdefghijklmnopqrstuvwx",
                "network name longer than 23 characters",
            ),
        ] {
            let e = bad.parse::<DevicePath>().unwrap_err();
            assert_eq!(e.why, why, "{bad}");
            assert!(e.to_string().contains(bad));
        }
    }
}
