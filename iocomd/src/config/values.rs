//! Small configuration value types with their own syntax: byte sizes (`"256 KiB"` or an
//! integer), device numbers (`"auto"` or an integer) and IOCOM password hashes.

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A byte count written as an integer or as a string with a unit: `B`, `KiB`, `MiB`, `GiB`,
/// `TiB` (powers of 1024) or `kB`, `MB`, `GB`, `TB` (powers of 1000); units ignore case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses `"256 KiB"`, `"1MB"`, `"4096"`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let bad = || {
            format!(
                "invalid size '{text}': expected an integer number of bytes or a number with a unit \
                 (B, KiB, MiB, GiB, TiB, kB, MB, GB, TB)"
            )
        };
        let n: u64 = num.parse().map_err(|_| bad())?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            "tib" => 1 << 40,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            _ => return Err(bad()),
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("size '{text}' is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 4] = [
            (1 << 40, "TiB"),
            (1 << 30, "GiB"),
            (1 << 20, "MiB"),
            (1 << 10, "KiB"),
        ];
        for (m, u) in UNITS {
            if self.0 >= m && self.0.is_multiple_of(m) {
                return write!(f, "{} {u}", self.0 / m);
            }
        }
        write!(f, "{} B", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size: an integer number of bytes or a string such as \"256 KiB\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("invalid size {v}: must not be negative")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// The device number: fixed, or `"auto"` (the controller assigns one; IOCOM sends 9000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceNumber {
    /// Let the controller assign a number.
    Auto,
    /// A fixed number, 1 to [`DeviceNumber::MAX_FIXED`].
    Fixed(u32),
}

impl DeviceNumber {
    /// Largest fixed number: 8999 and up are reserved for automatic numbering in IOCOM.
    pub const MAX_FIXED: u32 = 8998;
}

impl fmt::Display for DeviceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceNumber::Auto => f.write_str("auto"),
            DeviceNumber::Fixed(n) => write!(f, "{n}"),
        }
    }
}

impl<'de> Deserialize<'de> for DeviceNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DeviceNumber;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a device number (integer) or \"auto\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<DeviceNumber, E> {
                match u32::try_from(v) {
                    Ok(n) if (1..=DeviceNumber::MAX_FIXED).contains(&n) => {
                        Ok(DeviceNumber::Fixed(n))
                    }
                    _ => Err(E::custom(format!(
                        "invalid device number {v}: must be 1 to {} or \"auto\"",
                        DeviceNumber::MAX_FIXED
                    ))),
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<DeviceNumber, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(-1))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DeviceNumber, E> {
                if v == "auto" {
                    Ok(DeviceNumber::Auto)
                } else {
                    Err(E::custom(format!(
                        "invalid device number '{v}': must be an integer or \"auto\""
                    )))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// An IOCOM password hash as stored in account files (spec transport.md §7.3): `!` followed by
/// 43 characters of eosal's 6-bit alphabet, encoding SHA-256(password ‖ NUL).
///
/// `Debug` does not show the hash, so it never reaches a log by accident.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PasswordHash(String);

use crate::proto::password::{HASH_LEN, constant_time_eq, hash_password};

fn sixbit_value(c: char) -> Option<u8> {
    let b = u8::try_from(c).ok()?;
    Some(match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'z' => b - b'a' + 10,
        b'A'..=b'Z' => b - b'A' + 36,
        b'_' => 62,
        b'-' => 63,
        _ => return None,
    })
}

impl PasswordHash {
    /// Hashes a clear password the way IOCOM peers do (`osal_hash_password`).
    pub fn from_password(password: &str) -> Self {
        PasswordHash(hash_password(password))
    }

    /// Checks the shape of a stored hash: `!` plus 43 characters of the alphabet `0-9a-zA-Z_-`,
    /// the last of which encodes only 4 bits (`0`–`9`, `a`–`f`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "invalid password hash ({why}): expected '!' followed by 43 characters as made by \
                 IOCOM's osal_hash_password; clear passwords are not accepted"
            )
        };
        let Some(rest) = text.strip_prefix('!') else {
            return Err(bad("does not start with '!'"));
        };
        if rest.chars().count() != HASH_LEN - 1 {
            return Err(bad(&format!(
                "{} characters after '!'",
                rest.chars().count()
            )));
        }
        let mut last = 0;
        for c in rest.chars() {
            last =
                sixbit_value(c).ok_or_else(|| bad(&format!("character '{c}' is not allowed")))?;
        }
        if last > 15 {
            return Err(bad("the last character must be 0-9 or a-f"));
        }
        Ok(PasswordHash(text.to_owned()))
    }

    /// True if `password` (clear text, as received in an IOCOM authentication frame) hashes to
    /// this value. An empty password never matches. The comparison takes the same time
    /// wherever the strings differ.
    pub fn verify(&self, password: &str) -> bool {
        if password.is_empty() {
            return false;
        }
        constant_time_eq(self.0.as_bytes(), hash_password(password).as_bytes())
    }

    /// The encoded hash.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_hash_matches_the_spec_vector() {
        let h = PasswordHash::from_password("pass");
        assert_eq!(h.as_str(), "!WdjEE1b87DwXX81xJEtDpbQ_Y_ecFo6lPzSonKFoSz8");
        assert!(h.verify("pass"));
        assert!(!h.verify("pas"));
        assert!(!h.verify(""));
        assert_eq!(PasswordHash::parse(h.as_str()), Ok(h));
    }

    #[test]
    fn password_hash_shape_is_checked() {
        assert!(
            PasswordHash::parse("pass")
                .unwrap_err()
                .contains("does not start with '!'")
        );
        assert!(
            PasswordHash::parse("!abc")
                .unwrap_err()
                .contains("3 characters")
        );
        let bad_char = format!("!{}", "a".repeat(42) + "+");
        assert!(PasswordHash::parse(&bad_char).unwrap_err().contains("'+'"));
        let bad_last = format!("!{}", "a".repeat(42) + "g");
        assert!(
            PasswordHash::parse(&bad_last)
                .unwrap_err()
                .contains("last character")
        );
        assert!(PasswordHash::parse(&format!("!{}", "a".repeat(43))).is_ok());
        assert_eq!(
            format!("{:?}", PasswordHash::from_password("x")),
            "PasswordHash(<redacted>)"
        );
    }

    #[test]
    fn byte_sizes_parse_with_units() {
        assert_eq!(ByteSize::parse("4096"), Ok(ByteSize(4096)));
        assert_eq!(ByteSize::parse("256 KiB"), Ok(ByteSize(262_144)));
        assert_eq!(ByteSize::parse("1mb"), Ok(ByteSize(1_000_000)));
        assert_eq!(ByteSize::parse("2GiB"), Ok(ByteSize(2 << 30)));
        assert!(
            ByteSize::parse("12 parsecs")
                .unwrap_err()
                .contains("invalid size '12 parsecs'")
        );
        assert!(ByteSize::parse("-1").is_err());
        assert!(
            ByteSize::parse("99999999999 TiB")
                .unwrap_err()
                .contains("too large")
        );
        assert_eq!(ByteSize(262_144).to_string(), "256 KiB");
        assert_eq!(ByteSize(1000).to_string(), "1000 B");
    }
}
