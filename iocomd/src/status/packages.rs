//! The packages a device manages, published in the `upd_pkgs` status signal so a controller
//! lists them (`iocomctl status`): one line per package, `NAME VERSION CODE TIME`, where
//! VERSION is the installed version (`-`: not installed any more), CODE the result code of the
//! last transaction about the package and TIME when it ended (seconds since the Unix epoch;
//! `-` when not known). Names, versions and codes never hold spaces (Debian's rules).
//!
//! The helper owns the data: its `Status()` lists the packages it manages with their last
//! results ([`install_api::PackageState`]); the daemon keeps the list it read and applies each
//! later final result to it ([`PackageList::record`]), so it is current without asking again.

use install_api::{Class, PackageState, ResultCode};
use serde::Serialize;

/// One managed package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackageEntry {
    /// Package name.
    pub name: String,
    /// Installed version (`None`: not installed).
    pub version: Option<String>,
    /// Result code of the last transaction about it (`ok`, `not-newer`, …).
    pub last_result: Option<String>,
    /// When that transaction ended, seconds since the Unix epoch.
    pub last_time: Option<u64>,
}

/// The list as the daemon publishes it, sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackageList(Vec<PackageEntry>);

fn field(s: &str) -> Option<String> {
    (!s.is_empty() && s != "-").then(|| s.to_owned())
}

fn word(s: &Option<String>) -> String {
    s.as_deref()
        .filter(|v| !v.is_empty() && !v.contains(char::is_whitespace))
        .unwrap_or("-")
        .to_owned()
}

impl PackageList {
    /// The list of the helper's `Status()`.
    pub fn from_helper(packages: &[PackageState]) -> Self {
        let mut v: Vec<PackageEntry> = packages
            .iter()
            .map(|p| PackageEntry {
                name: p.name.clone(),
                version: p.version.clone().filter(|v| !v.is_empty()),
                last_result: p.last_result.clone(),
                last_time: p.last_time,
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Self(v)
    }

    /// Applies a final result about package `name` (a helper transaction, or iocomd's early
    /// refusal from the package's head): its installed version afterwards, code and time. A
    /// refusal changed nothing, so the version stays; a package the device does not manage
    /// and did not install is not added.
    pub fn record(&mut self, name: &str, code: ResultCode, installed: Option<String>, time: u64) {
        let entry = match self.0.iter().position(|e| e.name == name) {
            Some(i) => self.0.get_mut(i),
            None if installed.is_some() => {
                let at = self.0.partition_point(|e| e.name.as_str() < name);
                self.0.insert(
                    at,
                    PackageEntry {
                        name: name.to_owned(),
                        version: None,
                        last_result: None,
                        last_time: None,
                    },
                );
                self.0.get_mut(at)
            }
            None => None,
        };
        if let Some(e) = entry {
            // An install, failed or rolled back, leaves what dpkg reports (`None`: purged).
            if matches!(code.class(), Class::Ok | Class::InstallFailed) {
                e.version = installed;
            }
            e.last_result = Some(code.as_str().to_owned());
            e.last_time = Some(time);
        }
    }

    /// The installed version of `name`, if the device manages it and it is installed.
    pub fn installed(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.version.clone())
    }

    /// The entries.
    pub fn entries(&self) -> &[PackageEntry] {
        &self.0
    }

    /// The signal text: whole lines only, at most `max` bytes (the packages that do not fit
    /// are counted in a last line `+N more`).
    pub fn render(&self, max: usize) -> String {
        let lines: Vec<String> = self
            .0
            .iter()
            .map(|e| {
                let time = e
                    .last_time
                    .map_or_else(|| "-".to_owned(), |t| t.to_string());
                let (v, r) = (word(&e.version), word(&e.last_result));
                format!("{} {v} {r} {time}\n", e.name)
            })
            .collect();
        let mut out = String::new();
        for (i, line) in lines.iter().enumerate() {
            // Keep room for the "+N more" line the next package may need.
            let after = lines.len() - i - 1;
            let reserve = if after > 0 {
                format!("+{after} more\n").len()
            } else {
                0
            };
            if out.len() + line.len() + reserve > max {
                let more = format!("+{} more\n", lines.len() - i);
                if out.len() + more.len() <= max {
                    out.push_str(&more);
                }
                break;
            }
            out.push_str(line);
        }
        out
    }

    /// Reads the signal text (lines that do not parse, and the `+N more` line, are skipped).
    pub fn parse(text: &str) -> Self {
        Self(
            text.lines()
                .filter_map(|l| {
                    let mut f = l.split(' ');
                    let name = f.next().filter(|n| !n.is_empty() && !n.starts_with('+'))?;
                    Some(PackageEntry {
                        name: name.to_owned(),
                        version: f.next().and_then(field),
                        last_result: f.next().and_then(field),
                        last_time: f.next().and_then(|t| t.parse().ok()),
                    })
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use install_api::ErrorCode;

    fn state(name: &str, version: Option<&str>) -> PackageState {
        PackageState {
            name: name.into(),
            status: version.map(|_| "install ok installed".into()),
            version: version.map(Into::into),
            last_result: Some("ok".into()),
            last_time: Some(100),
        }
    }

    #[test]
    fn the_list_round_trips_and_follows_results() {
        let mut l = PackageList::from_helper(&[state("zeta", Some("1.0")), state("app", None)]);
        assert_eq!(l.entries()[0].name, "app");
        let text = l.render(1024);
        assert_eq!(text, "app - ok 100\nzeta 1.0 ok 100\n");
        assert_eq!(PackageList::parse(&text), l);
        // A new package installed, then a refusal of a managed one keeps its version.
        l.record("mid", ResultCode::OK, Some("2:1.0-1".into()), 200);
        l.record("zeta", ResultCode::Helper(ErrorCode::NotNewer), None, 300);
        // A refused package the device does not manage is not listed.
        l.record(
            "other",
            ResultCode::Helper(ErrorCode::SignatureInvalid),
            None,
            400,
        );
        assert_eq!(
            l.render(1024),
            "app - ok 100\nmid 2:1.0-1 ok 200\nzeta 1.0 not-newer 300\n"
        );
    }

    #[test]
    fn a_long_list_is_cut_at_whole_lines_and_says_how_many_are_left_out() {
        let many: Vec<PackageState> = (0..100)
            .map(|i| state(&format!("package-{i:03}"), Some("1.0")))
            .collect();
        let l = PackageList::from_helper(&many);
        let text = l.render(200);
        assert!(text.len() <= 200, "{}", text.len());
        assert!(text.ends_with(" more\n"), "{text}");
        let shown = PackageList::parse(&text).entries().len();
        assert!(text.contains(&format!("+{} more", 100 - shown)), "{text}");
    }
}
