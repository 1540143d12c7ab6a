//! IOCOM device paths as the C controller understands them: `gina3.cafenet` (name, number,
//! network), `gina9001.iocafenet` (a number a controller or server assigned automatically),
//! `gina.cafenet` and `gina` (the name alone: whichever device of that name is reachable, as
//! long as only one is).

use crate::proto::auth::{AUTO_DEVICE_NR, TO_AUTO_DEVICE_NR};
use crate::proto::sysframe::{MAX_NAME_LEN, MAX_NETWORK_NAME_LEN};
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// The network a controller announces when the path names none (IOCOM's default network).
pub const DEFAULT_NETWORK: &str = "iocafenet";

/// Largest device number on the wire (C `os_int`; the reference assigns random automatic
/// numbers up to this).
pub const MAX_DEVICE_NR: u32 = 0x7FFF_FFFF;

/// A device path `NAME[NUMBER][.NETWORK]`, e.g. `gina3.cafenet` or `gina9001`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct DevicePath {
    /// Device name (`gina`): letters, digits and `_`, starting with a letter or `_`.
    pub name: String,
    /// Device number: 1..=8998 (configured) or 9001.. (assigned automatically by the
    /// controller or server the device connects to); `None`: any number.
    pub nr: Option<u32>,
    /// IO network name (`cafenet`); `None`: any network.
    pub network: Option<String>,
}

/// Why a device path is not valid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "invalid device path {path:?}: {why} (expected NAME[NUMBER][.NETWORK], e.g. gina3.cafenet, gina9001.iocafenet or gina)"
)]
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
            nr: self.nr,
            network: self.network.clone(),
        }
    }

    /// The network our authentication frame names for this device.
    pub fn network_or_default(&self) -> &str {
        self.network.as_deref().unwrap_or(DEFAULT_NETWORK)
    }

    /// The full path of a device that matched this one (`gina` + `gina9001` → `gina9001.cafenet`).
    pub fn resolved(&self, d: &crate::proto::node::DeviceId) -> String {
        format!("{}{}.{}", d.name, d.nr, d.network)
    }
}

impl fmt::Display for DevicePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name)?;
        if let Some(nr) = self.nr {
            write!(f, "{nr}")?;
        }
        if let Some(net) = &self.network {
            write!(f, ".{net}")?;
        }
        Ok(())
    }
}

impl FromStr for DevicePath {
    type Err = DevicePathError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why| DevicePathError {
            path: s.to_owned(),
            why,
        };
        let (dev, network) = match s.split_once('.') {
            Some((d, n)) => (d, Some(n)),
            None => (s, None),
        };
        let digits = dev.len() - dev.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let (name, nr) = dev.split_at(dev.len() - digits);
        if name.is_empty() {
            return Err(err("no device name"));
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
        let nr = if nr.is_empty() {
            None
        } else {
            if nr.len() > 1 && nr.starts_with('0') {
                return Err(err("device number has a leading zero"));
            }
            let nr: u32 = nr.parse().map_err(|_| err("device number too large"))?;
            if nr > MAX_DEVICE_NR {
                return Err(err("device number too large"));
            }
            if nr == 0 || nr == TO_AUTO_DEVICE_NR || nr == AUTO_DEVICE_NR {
                return Err(err(
                    "0, 8999 and 9000 mean \"automatic\" on the wire: use the number the controller or server assigned (9001, ...) or the name alone",
                ));
            }
            Some(nr)
        };
        let network = match network {
            None => None,
            Some("") => return Err(err("empty network name")),
            Some(n) if n.len() > MAX_NETWORK_NAME_LEN => {
                return Err(err("network name longer than 23 characters"));
            }
            Some(n)
                if !n
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
            {
                return Err(err("network name must be letters, digits, _ and -"));
            }
            Some(n) => Some(n.to_owned()),
        };
        Ok(Self {
            name: name.to_owned(),
            nr,
            network,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::node::DeviceId;

    #[test]
    fn parses_name_number_network() {
        let p: DevicePath = "gina3.cafenet".parse().unwrap();
        assert_eq!(
            (p.name.as_str(), p.nr, p.network.as_deref()),
            ("gina", Some(3), Some("cafenet"))
        );
        assert_eq!(p.to_string(), "gina3.cafenet");
        let p: DevicePath = "my_dev2x10.iocafe-net".parse().unwrap();
        assert_eq!((p.name.as_str(), p.nr), ("my_dev2x", Some(10)));
    }

    #[test]
    fn automatic_numbers_and_the_name_alone() {
        let p: DevicePath = "gina9001.iocafenet".parse().unwrap();
        assert_eq!(p.nr, Some(9001));
        let p: DevicePath = "frank1332562873.cafenet".parse().unwrap();
        assert_eq!(p.nr, Some(1_332_562_873));
        let p: DevicePath = "gina".parse().unwrap();
        assert_eq!((p.nr, p.network.as_deref()), (None, None));
        assert_eq!(p.to_string(), "gina");
        assert_eq!(p.network_or_default(), "iocafenet");
        let p: DevicePath = "gina.cafenet".parse().unwrap();
        assert_eq!((p.nr, p.network.as_deref()), (None, Some("cafenet")));
        assert_eq!(p.network_or_default(), "cafenet");
        // The name alone matches any number and network; a number or network narrows it.
        let g9001 = DeviceId::new("gina", 9001, "cafenet");
        let g7 = DeviceId::new("gina", 7, "cafenet");
        let any: DevicePath = "gina".parse().unwrap();
        assert!(any.to_proto().matches(&g9001) && any.to_proto().matches(&g7));
        let one: DevicePath = "gina7.cafenet".parse().unwrap();
        assert!(one.to_proto().matches(&g7) && !one.to_proto().matches(&g9001));
        assert_eq!(any.resolved(&g9001), "gina9001.cafenet");
    }

    #[test]
    fn rejects_bad_paths_with_a_reason() {
        let auto = "0, 8999 and 9000 mean \"automatic\" on the wire: use the number the controller or server assigned (9001, ...) or the name alone";
        for (bad, why) in [
            ("3.cafenet", "no device name"),
            ("gina3.", "empty network name"),
            ("gina03.cafenet", "device number has a leading zero"),
            ("gina0.cafenet", auto),
            ("gina9000.cafenet", auto),
            ("gina8999", auto),
            ("gina99999999999.cafenet", "device number too large"),
            ("gina2147483648", "device number too large"),
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
