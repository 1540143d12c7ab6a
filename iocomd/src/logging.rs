//! The `tracing` subscriber: journald when its socket exists and the layer can reach it,
//! standard error otherwise. The filter is `RUST_LOG` if set, else the configured level.

use crate::config::{LogSettings, LogTarget};
use std::path::Path;
use tracing_subscriber::Registry;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;

/// journald's native socket.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Where log records go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogBackend {
    /// The systemd journal (structured fields kept).
    Journald,
    /// Formatted lines on standard error.
    Stderr,
}

/// What [`init`] set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogInit {
    /// The backend chosen.
    pub backend: LogBackend,
    /// The filter in effect.
    pub filter: String,
    /// Why journald was not used although it was asked for or looked available.
    pub fallback_reason: Option<String>,
}

/// Logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// The filter does not parse.
    #[error("invalid log filter '{filter}' (from {source_name}): {message}")]
    Filter {
        /// The filter text.
        filter: String,
        /// `RUST_LOG` or `log.level`.
        source_name: &'static str,
        /// Parser message.
        message: String,
    },
    /// A global subscriber was already installed.
    #[error("a tracing subscriber is already installed")]
    AlreadySet,
}

type BoxedSubscriber = Box<dyn tracing::Subscriber + Send + Sync>;

/// Builds the subscriber without installing it. `journal_socket` is normally
/// [`JOURNAL_SOCKET`]; `rust_log` is the value of `RUST_LOG`.
pub fn build(
    settings: &LogSettings,
    journal_socket: &Path,
    rust_log: Option<&str>,
) -> Result<(BoxedSubscriber, LogInit), LoggingError> {
    let (text, source_name) = match rust_log.map(str::trim).filter(|s| !s.is_empty()) {
        Some(v) => (v.to_owned(), "RUST_LOG"),
        None => (settings.level.clone(), "log.level"),
    };
    let filter = parse_filter(&text).map_err(|message| LoggingError::Filter {
        filter: text.clone(),
        source_name,
        message,
    })?;

    let want_journal = match settings.target {
        LogTarget::Stderr => false,
        LogTarget::Journald => true,
        LogTarget::Auto => journal_socket.exists(),
    };
    let mut fallback_reason = None;
    if want_journal {
        if !journal_socket.exists() {
            fallback_reason = Some(format!("{} does not exist", journal_socket.display()));
        } else {
            match tracing_journald::layer() {
                Ok(layer) => {
                    let sub = Registry::default().with(filter).with(layer);
                    let init = LogInit {
                        backend: LogBackend::Journald,
                        filter: text,
                        fallback_reason: None,
                    };
                    return Ok((Box::new(sub), init));
                }
                Err(e) => fallback_reason = Some(format!("journald layer: {e}")),
            }
        }
    }
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let sub = Registry::default().with(filter).with(fmt);
    let init = LogInit {
        backend: LogBackend::Stderr,
        filter: text,
        fallback_reason,
    };
    Ok((Box::new(sub), init))
}

/// A filter in `RUST_LOG`'s target syntax: a default level and/or `target=level` pairs,
/// comma-separated (`info`, `warn,iocomd::net=debug`). Span and field filters (`[span]`,
/// `{field}`) are not supported and are refused (a target named `[span]` would never match).
pub fn parse_filter(text: &str) -> Result<Targets, String> {
    if text.contains(['[', ']', '{', '}']) {
        return Err("span and field filters ([span], {field}) are not supported".into());
    }
    text.parse::<Targets>().map_err(|e| e.to_string())
}

/// Installs the global subscriber for `settings` (reading `RUST_LOG`) and reports the choice.
/// A fallback from journald is also logged as a warning once the subscriber is in place.
pub fn init(settings: &LogSettings) -> Result<LogInit, LoggingError> {
    let rust_log = std::env::var("RUST_LOG").ok();
    let (sub, init) = build(settings, Path::new(JOURNAL_SOCKET), rust_log.as_deref())?;
    tracing::subscriber::set_global_default(sub).map_err(|_| LoggingError::AlreadySet)?;
    if let Some(why) = &init.fallback_reason {
        tracing::warn!(reason = %why, "logging to standard error instead of journald");
    }
    Ok(init)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(target: LogTarget) -> LogSettings {
        LogSettings {
            level: "info".into(),
            target,
        }
    }

    #[test]
    fn stderr_when_asked_or_when_there_is_no_journal() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("no-socket");
        let (_, i) = build(&settings(LogTarget::Stderr), &missing, None).unwrap();
        assert_eq!((i.backend, i.fallback_reason), (LogBackend::Stderr, None));
        let (_, i) = build(&settings(LogTarget::Auto), &missing, None).unwrap();
        assert_eq!((i.backend, i.fallback_reason), (LogBackend::Stderr, None));
        let (_, i) = build(&settings(LogTarget::Journald), &missing, None).unwrap();
        assert_eq!(i.backend, LogBackend::Stderr);
        assert_eq!(
            i.fallback_reason,
            Some(format!("{} does not exist", missing.display()))
        );
    }

    #[test]
    fn rust_log_overrides_the_configured_level() {
        let p = Path::new("/nonexistent");
        let (_, i) = build(&settings(LogTarget::Stderr), p, Some("iocomd=trace")).unwrap();
        assert_eq!(i.filter, "iocomd=trace");
        let (_, i) = build(&settings(LogTarget::Stderr), p, Some("  ")).unwrap();
        assert_eq!(i.filter, "info");
        let e = build(&settings(LogTarget::Stderr), p, Some("x=["))
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .starts_with("invalid log filter 'x=[' (from RUST_LOG)"),
            "{e}"
        );
    }

    #[test]
    fn the_built_subscriber_filters() {
        let (sub, _) = build(
            &settings(LogTarget::Stderr),
            Path::new("/nonexistent"),
            Some("warn"),
        )
        .unwrap();
        tracing::subscriber::with_default(sub, || {
            assert!(tracing::enabled!(tracing::Level::WARN));
            assert!(!tracing::enabled!(tracing::Level::INFO));
        });
    }

    #[test]
    fn target_filters_select_by_target_and_level() {
        let f = parse_filter("warn,iocomd::net=debug").unwrap();
        assert!(f.would_enable("iocomd::net::listen", &tracing::Level::DEBUG));
        assert!(!f.would_enable("iocomd::daemon", &tracing::Level::INFO));
        assert!(f.would_enable("zbus::connection", &tracing::Level::WARN));
        assert!(!f.would_enable("zbus::connection", &tracing::Level::INFO));
        for bad in ["iocomd=loud", "x=[", "[span]=info"] {
            assert!(parse_filter(bad).is_err(), "{bad}");
        }
    }
}
