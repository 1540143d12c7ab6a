//! Debian version syntax and ordering, identical to `dpkg --compare-versions`.
//!
//! A version is `[epoch:]upstream[-revision]`. The epoch is a decimal number (0 when absent),
//! the revision is everything after the last hyphen ("" when absent, which compares equal to
//! "0"). Upstream and revision are compared with dpkg's `verrevcmp`: alternating non-digit and
//! digit runs; in non-digit runs `~` sorts before everything (even the end of the string),
//! letters sort before other characters; digit runs compare numerically.
//!
//! Syntax follows dpkg's `parseversion`, made strict: no whitespace, the upstream part must
//! start with a digit, only `[A-Za-z0-9.+~-:]` in upstream and `[A-Za-z0-9.+~]` in the revision.

use std::cmp::Ordering;
use std::fmt;

/// Why a version string is not a valid Debian version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Debian version {version:?}: {reason}")]
pub struct VersionError {
    /// The offending version string.
    pub version: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A parsed, valid Debian version. Ordering and equality follow dpkg (so `1.0` == `0:1.0-0`).
#[derive(Debug, Clone)]
pub struct Version {
    epoch: u32,
    upstream: String,
    revision: String,
    original: String,
}

impl Version {
    /// Parses and validates `s`.
    pub fn parse(s: &str) -> Result<Version, VersionError> {
        let err = |reason| VersionError {
            version: s.to_owned(),
            reason,
        };
        if s.is_empty() {
            return Err(err("version string is empty"));
        }
        if s.chars().any(char::is_whitespace) {
            return Err(err("version string has embedded spaces"));
        }
        let (epoch, rest) = match s.split_once(':') {
            Some((e, rest)) => {
                if e.is_empty() {
                    return Err(err("epoch in version is empty"));
                }
                if !e.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(err("epoch in version is not number"));
                }
                let epoch: u32 = e.parse().map_err(|_| err("epoch in version is too big"))?;
                if epoch > i32::MAX as u32 {
                    return Err(err("epoch in version is too big"));
                }
                (epoch, rest)
            }
            None => (0, s),
        };
        let (upstream, revision) = match rest.rsplit_once('-') {
            Some((u, r)) => {
                if r.is_empty() {
                    return Err(err("revision number is empty"));
                }
                (u, r)
            }
            None => (rest, ""),
        };
        if upstream.is_empty() {
            return Err(err("version number is empty"));
        }
        if !upstream.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(err("version number does not start with digit"));
        }
        if !upstream
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-+~:".contains(&b))
        {
            return Err(err("invalid character in version number"));
        }
        if !revision
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".+~".contains(&b))
        {
            return Err(err("invalid character in revision number"));
        }
        Ok(Version {
            epoch,
            upstream: upstream.to_owned(),
            revision: revision.to_owned(),
            original: s.to_owned(),
        })
    }

    /// The epoch (0 when absent).
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The upstream part.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// The Debian revision ("" when absent).
    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// The string this version was parsed from.
    pub fn as_str(&self) -> &str {
        &self.original
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| verrevcmp(&self.upstream, &other.upstream))
            .then_with(|| verrevcmp(&self.revision, &other.revision))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

/// Compares two Debian version strings like `dpkg --compare-versions`.
pub fn compare_versions(a: &str, b: &str) -> Result<Ordering, VersionError> {
    Ok(Version::parse(a)?.cmp(&Version::parse(b)?))
}

/// Weight of one character in a non-digit run; `None` is the end of the run.
fn weight(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

/// dpkg's `verrevcmp` on one version part.
fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0usize, 0usize);
    while i < a.len() || j < b.len() {
        // Non-digit run.
        loop {
            let ca = a.get(i).copied().filter(|c| !c.is_ascii_digit());
            let cb = b.get(j).copied().filter(|c| !c.is_ascii_digit());
            if ca.is_none() && cb.is_none() {
                break;
            }
            let (wa, wb) = (weight(ca), weight(cb));
            if wa != wb {
                return wa.cmp(&wb);
            }
            if ca.is_some() {
                i += 1;
            }
            if cb.is_some() {
                j += 1;
            }
        }
        // Digit run: skip leading zeros, then the longer number wins, else the first difference.
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        loop {
            let da = a.get(i).copied().filter(u8::is_ascii_digit);
            let db = b.get(j).copied().filter(u8::is_ascii_digit);
            match (da, db) {
                (Some(x), Some(y)) => {
                    if first_diff == Ordering::Equal {
                        first_diff = x.cmp(&y);
                    }
                    i += 1;
                    j += 1;
                }
                (Some(_), None) => return Ordering::Greater,
                (None, Some(_)) => return Ordering::Less,
                (None, None) => break,
            }
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn known_orderings() {
        let cases = [
            ("1.0", "1.0", Equal),
            ("1.0", "1.0-0", Equal),
            ("0:1.0", "1.0", Equal),
            ("1.0~rc1", "1.0", Less),
            ("1.0~~", "1.0~", Less),
            ("1.0", "1.0+b1", Less),
            ("1.0", "1.0.1", Less),
            ("1:0.1", "2.0", Greater),
            ("1.0a", "1.0+", Less),
            ("1.01", "1.1", Equal),
            ("1.10", "1.9", Greater),
            ("2.0-1", "2.0-1~bpo1", Greater),
            ("1.0-1", "1.0-10", Less),
        ];
        for (a, b, want) in cases {
            assert_eq!(compare_versions(a, b).unwrap(), want, "{a} vs {b}");
            assert_eq!(
                compare_versions(b, a).unwrap(),
                want.reverse(),
                "{b} vs {a}"
            );
        }
    }

    #[test]
    fn rejects_bad_syntax() {
        for bad in [
            "",
            "1.0 ",
            ":1.0",
            "a:1.0",
            "1.0-",
            "-1",
            "a1.0",
            "1.0_1",
            "1.0-1_2",
            "1:",
            "99999999999:1",
        ] {
            assert!(Version::parse(bad).is_err(), "{bad:?} accepted");
        }
        let v = Version::parse("2:1.0-beta-3").unwrap();
        assert_eq!(
            (v.epoch(), v.upstream(), v.revision()),
            (2, "1.0-beta", "3")
        );
    }
}
