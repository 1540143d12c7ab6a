//! Finding, reading and merging configuration fragments, remembering which file set which key
//! so that validation errors can name it.
//!
//! Order: for each base directory (lowest priority first) its `iocomd.toml`, then its
//! `conf.d/*.toml` sorted by file name. Later fragments win; tables merge key by key, any other
//! value (including arrays) is replaced as a whole.

use super::ConfigError;
use super::raw::RawConfig;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use toml::{Table, Value};

/// The merged configuration with the origin of every leaf key.
#[derive(Debug, Default)]
pub(crate) struct Merged {
    pub table: Table,
    /// Dotted key path (tables and leaves; arrays are leaves, no indices) → the file that set
    /// or last changed it.
    pub origins: BTreeMap<String, PathBuf>,
    /// Files read, in merge order.
    pub files: Vec<PathBuf>,
}

/// The fragment files below `dirs`, in merge order. Missing directories are skipped.
pub(crate) fn fragment_files(dirs: &[PathBuf]) -> Result<Vec<PathBuf>, ConfigError> {
    let mut files = Vec::new();
    for dir in dirs {
        let main = dir.join("iocomd.toml");
        if main.is_file() {
            files.push(main);
        }
        let confd = dir.join("conf.d");
        let entries = match std::fs::read_dir(&confd) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => continue,
            Err(source) => {
                return Err(ConfigError::Read {
                    path: confd,
                    source,
                });
            }
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| ConfigError::Read {
                path: confd.clone(),
                source,
            })?;
            let path = entry.path();
            let name = entry.file_name();
            let visible = !name.to_string_lossy().starts_with('.');
            if visible && path.extension().is_some_and(|e| e == "toml") && path.is_file() {
                names.push(name);
            }
        }
        names.sort();
        files.extend(names.into_iter().map(|n| confd.join(n)));
    }
    Ok(files)
}

/// Line and column (1-based) of byte offset `pos` in `text`.
fn line_col(text: &str, pos: usize) -> (usize, usize) {
    let before = text.get(..pos).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The dotted key whose value is at byte `pos` (`spool.max_package_size`), when the line
/// there is a `key = value` line.
fn key_at(text: &str, pos: usize) -> Option<String> {
    let before = text.get(..pos)?;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text.get(start..)?.lines().next()?;
    let key = line.split_once('=')?.0.trim();
    if key.is_empty() || key.starts_with('[') || key.starts_with('#') {
        return None;
    }
    let table = before
        .get(..start)?
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
    Some(match table {
        Some(t) if !t.is_empty() => format!("{t}.{key}"),
        _ => key.to_owned(),
    })
}

fn syntax_error(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let at = e
        .span()
        .map(|s| {
            let (l, c) = line_col(text, s.start);
            // The key, unless the message names it already ("unknown field `x`").
            match key_at(text, s.start) {
                Some(k)
                    if !e
                        .message()
                        .contains(&format!("`{}`", k.rsplit('.').next().unwrap_or(&k))) =>
                {
                    format!("line {l}, column {c}: {k}: ")
                }
                _ => format!("line {l}, column {c}: "),
            }
        })
        .unwrap_or_default();
    ConfigError::Syntax {
        path: path.to_path_buf(),
        message: format!("{at}{}", e.message().trim_end()),
    }
}

/// Parses one fragment and checks it against the schema (types, unknown keys).
pub(crate) fn parse_fragment(path: &Path, text: &str) -> Result<Table, ConfigError> {
    let table: Table = toml::from_str(text).map_err(|e| syntax_error(path, text, &e))?;
    toml::from_str::<RawConfig>(text).map_err(|e| syntax_error(path, text, &e))?;
    Ok(table)
}

impl Merged {
    /// Reads `files` in order and merges them.
    pub fn read(files: &[PathBuf]) -> Result<Self, ConfigError> {
        let mut merged = Merged::default();
        for path in files {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            merged.add(path, parse_fragment(path, &text)?);
        }
        Ok(merged)
    }

    /// Merges one parsed fragment on top.
    pub fn add(&mut self, file: &Path, fragment: Table) {
        merge_table(&mut self.table, fragment, "", file, &mut self.origins);
        self.files.push(file.to_path_buf());
    }

    /// The file that set `key` (e.g. `endpoints.listen[0].address`); for a table, the last file
    /// that set something in it; for a key nobody set, the file of its nearest ancestor.
    pub fn origin(&self, key: &str) -> Option<&Path> {
        let mut k: String = strip_indices(key);
        loop {
            if let Some(p) = self.origins.get(&k) {
                return Some(p);
            }
            match k.rfind('.') {
                Some(i) => k.truncate(i),
                None => return None,
            }
        }
    }
}

fn strip_indices(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut depth = 0u32;
    for c in key.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

fn merge_table(
    into: &mut Table,
    from: Table,
    prefix: &str,
    file: &Path,
    origins: &mut BTreeMap<String, PathBuf>,
) {
    for (k, v) in from {
        let path = join(prefix, &k);
        match (into.get_mut(&k), v) {
            (Some(Value::Table(dst)), Value::Table(src)) => {
                origins.insert(path.clone(), file.to_path_buf());
                merge_table(dst, src, &path, file, origins);
            }
            (_, v) => {
                let below = format!("{path}.");
                origins.retain(|o, _| o != &path && !o.starts_with(&below));
                record_leaves(&v, &path, file, origins);
                into.insert(k, v);
            }
        }
    }
}

fn record_leaves(v: &Value, path: &str, file: &Path, origins: &mut BTreeMap<String, PathBuf>) {
    origins.insert(path.to_owned(), file.to_path_buf());
    if let Value::Table(t) = v {
        for (k, v) in t {
            record_leaves(v, &join(path, k), file, origins);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(s: &str) -> Table {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn later_fragments_win_key_by_key_and_remember_their_file() {
        let mut m = Merged::default();
        m.add(
            Path::new("/a"),
            table("[device]\nname = \"a\"\nnetwork = \"n\"\n[spool]\ndir = \"/x\""),
        );
        m.add(Path::new("/b"), table("[device]\nname = \"b\""));
        assert_eq!(m.table["device"]["name"].as_str(), Some("b"));
        assert_eq!(m.table["device"]["network"].as_str(), Some("n"));
        assert_eq!(m.origin("device.name"), Some(Path::new("/b")));
        assert_eq!(m.origin("device.network"), Some(Path::new("/a")));
        assert_eq!(m.origin("device"), Some(Path::new("/b")));
        assert_eq!(m.origin("spool.dir"), Some(Path::new("/a")));
        assert_eq!(m.origin("log.level"), None);
    }

    #[test]
    fn arrays_are_replaced_whole() {
        let mut m = Merged::default();
        let a = "[[endpoints.listen]]\ntransport = \"tcp\"\naddress = \"1.2.3.4:1\"\n\
                 [[endpoints.listen]]\ntransport = \"tcp\"\naddress = \"1.2.3.4:2\"";
        m.add(Path::new("/a"), table(a));
        m.add(
            Path::new("/b"),
            table("[[endpoints.listen]]\ntransport = \"tcp\"\naddress = \"x\""),
        );
        assert_eq!(
            m.table["endpoints"]["listen"].as_array().map(Vec::len),
            Some(1)
        );
        assert_eq!(
            m.origin("endpoints.listen[0].address"),
            Some(Path::new("/b"))
        );
    }

    #[test]
    fn line_and_column_are_one_based() {
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("ab", 0), (1, 1));
    }
}
