//! `iocomd --check-config` (like `sshd -t`): the configuration as iocomd would run it — the
//! files read in merge order, the merged keys as TOML, and the effective values the defaults
//! fill in — or the first error, naming the file and the key. Secrets (password hashes,
//! tokens) are shown as `<redacted>`.

use super::{ConfigError, HelperConnection, Settings, sources};
use crate::paths::Paths;
use std::fmt::Write as _;
use std::path::Path;
use toml::{Table, Value};

/// Keys whose values are never printed.
const SECRET_KEYS: &[&str] = &["password_hash", "token", "security_token", "gateway_token"];

/// Loads and validates the configuration (`file` alone, or the merged fragments of `paths`)
/// and renders it.
pub fn check_config(paths: &Paths, file: Option<&Path>) -> Result<String, ConfigError> {
    let files = match file {
        Some(f) => vec![f.to_path_buf()],
        None => super::fragment_files(paths)?,
    };
    let merged = sources::Merged::read(&files)?;
    let settings = super::validate::settings(&merged, paths)?;
    Ok(render(&files, &merged.table, &settings))
}

fn redact(t: &Table) -> Table {
    t.iter()
        .map(|(k, v)| {
            let v = match v {
                _ if SECRET_KEYS.contains(&k.as_str()) => Value::String("<redacted>".into()),
                Value::Table(t) => Value::Table(redact(t)),
                Value::Array(a) => Value::Array(
                    a.iter()
                        .map(|v| match v {
                            Value::Table(t) => Value::Table(redact(t)),
                            v => v.clone(),
                        })
                        .collect(),
                ),
                v => v.clone(),
            };
            (k.clone(), v)
        })
        .collect()
}

fn render(files: &[std::path::PathBuf], table: &Table, s: &Settings) -> String {
    let mut out = String::from("# iocomd configuration: valid\n");
    if files.is_empty() {
        out.push_str("# no configuration file: built-in defaults only\n");
    } else {
        out.push_str("# files, in merge order (later ones win):\n");
        for f in files {
            let _ = writeln!(out, "#   {}", f.display());
        }
    }
    out.push_str("#\n# effective settings (defaults included):\n");
    let _ = writeln!(out, "#   device: {}", s.device_path());
    for l in &s.listen {
        let how = if l.tls.is_some() { "TLS" } else { "plain TCP" };
        let _ = writeln!(out, "#   listen: {} ({how})", l.address);
    }
    for c in &s.connect {
        let how = if c.tls.is_some() { "TLS" } else { "plain TCP" };
        let _ = writeln!(out, "#   connect up to: {}:{} ({how})", c.host, c.port);
    }
    for l in &s.serial {
        let _ = writeln!(out, "#   serial: {}", l.params);
    }
    let _ = writeln!(
        out,
        "#   pushes over plain TCP: {}, over serial: {}; accounts: {}",
        yes(s.allow_plain_tcp_push),
        yes(s.allow_serial_push),
        if s.accounts.is_empty() {
            "none".to_owned()
        } else {
            s.accounts
                .iter()
                .map(|a| a.user.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    let _ = writeln!(
        out,
        "#   spool: {} (packages up to {} bytes, keeping {} bytes free; {})",
        s.spool.dir.display(),
        s.spool.max_package_size,
        s.spool.min_free_space,
        if s.spool.stream_to_helper {
            "pushes streamed to the helper while received"
        } else {
            "pushes spooled before the hand-over"
        }
    );
    let _ = writeln!(
        out,
        "#   stream: ring {} bytes; a transfer ends within {} s, at least {} bytes/s over {} s",
        s.stream_buffer_size,
        s.transfer.max_time.as_secs(),
        s.transfer.min_rate,
        s.transfer.rate_window.as_secs()
    );
    let helper = match &s.helper {
        HelperConnection::SystemBus => "the system bus".to_owned(),
        HelperConnection::Bus { address } => format!("the bus at {address}"),
        HelperConnection::Spawn { program, .. } => format!("a child {}", program.display()),
    };
    let _ = writeln!(out, "#   install helper: {helper}");
    let _ = writeln!(out, "#   log: {} to {:?}", s.log.level, s.log.target);
    let _ = writeln!(
        out,
        "#   hawkbit: {}",
        s.hawkbit.as_ref().map_or("off", |_| "enabled")
    );
    out.push_str("\n# merged keys:\n");
    out.push_str(&toml::to_string(&redact(table)).unwrap_or_else(|e| format!("# ({e})\n")));
    out
}

fn yes(b: bool) -> &'static str {
    if b { "allowed" } else { "refused" }
}
