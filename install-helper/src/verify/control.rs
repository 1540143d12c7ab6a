//! The control and data tarballs: decompression, the `control` file (one deb822 paragraph),
//! validation of Package/Version/Architecture and our own `X-Iocom-Units` field. The data
//! tarball is read by [`super::content`].

use std::collections::BTreeMap;
use std::io::{self, Read};

use super::ar::Compression;
use super::version::Version;

/// Largest decompressed control tarball we read.
pub const MAX_CONTROL_TAR: u64 = 64 << 20;
/// Largest `control` file we accept.
pub const MAX_CONTROL_FILE: u64 = 1 << 20;
/// Our own control field naming units to restart after install.
pub const UNITS_FIELD: &str = "X-Iocom-Units";

/// Why the control tarball was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// A tarball cannot be decompressed or read (maps to `bad-archive`).
    #[error("{member}: {reason}")]
    Archive {
        /// `control.tar*`.
        member: String,
        /// What went wrong.
        reason: String,
    },
    /// The control file is missing or invalid (maps to `bad-control`).
    #[error("{0}")]
    Control(String),
}

/// Wraps `r` in the decompressor for `c`.
pub fn decoder<'a, R: Read + 'a>(c: Compression, r: R) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match c {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Compression::Xz => Box::new(xz2::read::XzDecoder::new_multi_decoder(r)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(r)?),
        Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(r)),
    })
}

/// Normalizes a tar entry path: strips a leading `./` or `/`.
fn normalize(path: &str) -> &str {
    let p = path.strip_prefix("./").unwrap_or(path);
    p.strip_prefix('/').unwrap_or(p)
}

/// Extracts the `control` file from the (compressed) control tarball.
pub fn extract_control(member: &str, c: Compression, data: &[u8]) -> Result<String, ContentError> {
    let archive_err = |reason: String| ContentError::Archive {
        member: member.to_owned(),
        reason,
    };
    let dec = decoder(c, data).map_err(|e| archive_err(e.to_string()))?;
    let mut tar = tar::Archive::new(dec.take(MAX_CONTROL_TAR));
    let entries = tar.entries().map_err(|e| archive_err(e.to_string()))?;
    let mut control: Option<String> = None;
    for entry in entries {
        let mut entry = entry.map_err(|e| archive_err(e.to_string()))?;
        let path = entry.path().map_err(|e| archive_err(e.to_string()))?;
        if normalize(&path.to_string_lossy()) != "control" {
            continue;
        }
        if !entry.header().entry_type().is_file() {
            return Err(ContentError::Control(
                "control is not a regular file".into(),
            ));
        }
        if control.is_some() {
            return Err(ContentError::Control("control file appears twice".into()));
        }
        if entry.size() > MAX_CONTROL_FILE {
            return Err(ContentError::Control(format!(
                "control file is {} bytes, limit {MAX_CONTROL_FILE}",
                entry.size()
            )));
        }
        let mut buf = Vec::new();
        entry
            .read_to_end(&mut buf)
            .map_err(|e| archive_err(e.to_string()))?;
        let text = String::from_utf8(buf)
            .map_err(|_| ContentError::Control("control file is not UTF-8".into()))?;
        control = Some(text);
    }
    control.ok_or_else(|| ContentError::Control(format!("{member} has no control file")))
}

/// Parses one deb822 paragraph into fields (names as written, values with continuation lines
/// joined by `\n`). Field names are unique case-insensitively.
pub fn parse_paragraph(text: &str) -> Result<BTreeMap<String, String>, ContentError> {
    let bad = |m: String| ContentError::Control(m);
    let mut fields: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut ended = false;
    for (no, line) in text.lines().enumerate() {
        let no = no + 1;
        if line.trim().is_empty() {
            ended = !fields.is_empty();
            current = None;
            continue;
        }
        if ended {
            return Err(bad(format!("line {no}: more than one paragraph")));
        }
        if line.starts_with([' ', '\t']) {
            let Some(name) = &current else {
                return Err(bad(format!("line {no}: continuation line without a field")));
            };
            let v = fields.get_mut(name).ok_or_else(|| bad("internal".into()))?;
            v.push('\n');
            v.push_str(line.trim_end());
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(bad(format!("line {no}: expected 'Field: value'")));
        };
        if name.is_empty()
            || name.starts_with(['#', '-'])
            || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
        {
            return Err(bad(format!("line {no}: bad field name {name:?}")));
        }
        if fields.keys().any(|k| k.eq_ignore_ascii_case(name)) {
            return Err(bad(format!("line {no}: duplicate field {name}")));
        }
        fields.insert(name.to_owned(), value.trim().to_owned());
        current = Some(name.to_owned());
    }
    if fields.is_empty() {
        return Err(bad("control file is empty".into()));
    }
    Ok(fields)
}

/// Looks a field up case-insensitively.
pub fn field<'a>(fields: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Debian package name syntax: `[a-z0-9][a-z0-9+.-]+`.
pub fn valid_package_name(name: &str) -> bool {
    name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+.-".contains(&b))
}

/// Architecture name syntax: one token of `[a-z0-9-]`, not `any`.
pub fn valid_architecture(arch: &str) -> bool {
    !arch.is_empty()
        && arch != "any"
        && arch.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && arch
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// systemd unit name syntax (restartable units: no templates), with a known suffix.
pub fn valid_unit_name(unit: &str) -> bool {
    const SUFFIXES: [&str; 6] = [
        ".service", ".socket", ".timer", ".path", ".target", ".mount",
    ];
    let Some(stem) = SUFFIXES.iter().find_map(|s| unit.strip_suffix(s)) else {
        return false;
    };
    unit.len() <= 255
        && !stem.is_empty()
        && !stem.ends_with('@')
        && stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":_.\\@-".contains(&b))
}

/// The validated essentials of a control file.
#[derive(Debug, Clone)]
pub struct ControlInfo {
    /// `Package`
    pub package: String,
    /// `Version`
    pub version: Version,
    /// `Architecture`
    pub architecture: String,
    /// `Installed-Size` in KiB, if present.
    pub installed_size_kib: Option<u64>,
    /// Units named in `X-Iocom-Units`, in order, without duplicates.
    pub units: Vec<String>,
    /// All fields.
    pub fields: BTreeMap<String, String>,
}

/// Validates the required fields of a parsed control paragraph.
pub fn validate(fields: BTreeMap<String, String>) -> Result<ControlInfo, ContentError> {
    let bad = |m: String| ContentError::Control(m);
    let required = |name: &str| {
        field(&fields, name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| bad(format!("missing required field {name}")))
    };
    let package = required("Package")?.to_owned();
    if !valid_package_name(&package) {
        return Err(bad(format!("invalid package name {package:?}")));
    }
    let version_str = required("Version")?;
    let version = Version::parse(version_str).map_err(|e| bad(e.to_string()))?;
    let architecture = required("Architecture")?.to_owned();
    if !valid_architecture(&architecture) {
        return Err(bad(format!("invalid architecture {architecture:?}")));
    }
    let installed_size_kib = match field(&fields, "Installed-Size") {
        None => None,
        Some(s) => Some(
            s.parse::<u64>()
                .map_err(|_| bad(format!("invalid Installed-Size {s:?}")))?,
        ),
    };
    let mut units: Vec<String> = Vec::new();
    if let Some(list) = field(&fields, UNITS_FIELD) {
        for unit in list.split(|c: char| c == ',' || c.is_whitespace()) {
            if unit.is_empty() {
                continue;
            }
            if !valid_unit_name(unit) {
                return Err(bad(format!("invalid unit name {unit:?} in {UNITS_FIELD}")));
            }
            if !units.iter().any(|u| u == unit) {
                units.push(unit.to_owned());
            }
        }
    }
    Ok(ControlInfo {
        package,
        version,
        architecture,
        installed_size_kib,
        units,
        fields,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraph_parsing() {
        let f = parse_paragraph(
            "Package: iocom-app\nVersion: 1.0-1\nDescription: short\n long line\n .\n more\n\n",
        )
        .unwrap();
        assert_eq!(field(&f, "package"), Some("iocom-app"));
        assert_eq!(
            field(&f, "Description"),
            Some("short\n long line\n .\n more")
        );
        assert!(parse_paragraph("Package: a\npackage: b\n").is_err());
        assert!(parse_paragraph("Package: a\n\nVersion: 1\n").is_err());
        assert!(parse_paragraph(" cont\n").is_err());
        assert!(parse_paragraph("NoColon\n").is_err());
        assert!(parse_paragraph("\n\n").is_err());
    }

    #[test]
    fn validation() {
        let ok = parse_paragraph(
            "Package: iocom-app\nVersion: 1:2.0~rc1-3\nArchitecture: all\nInstalled-Size: 12\nX-Iocom-Units: a.service, b.service b.service\n",
        )
        .unwrap();
        let info = validate(ok).unwrap();
        assert_eq!(info.units, ["a.service", "b.service"]);
        assert_eq!(info.installed_size_kib, Some(12));
        for bad in [
            "Version: 1\nArchitecture: all\n",
            "Package: Foo\nVersion: 1\nArchitecture: all\n",
            "Package: foo\nVersion: x1\nArchitecture: all\n",
            "Package: foo\nVersion: 1\n",
            "Package: foo\nVersion: 1\nArchitecture: any\n",
            "Package: foo\nVersion: 1\nArchitecture: all\nInstalled-Size: lots\n",
            "Package: foo\nVersion: 1\nArchitecture: all\nX-Iocom-Units: a@.service\n",
            "Package: foo\nVersion: 1\nArchitecture: all\nX-Iocom-Units: ../x.service\n",
        ] {
            let f = parse_paragraph(bad).unwrap();
            assert!(validate(f).is_err(), "accepted {bad:?}");
        }
    }
}
