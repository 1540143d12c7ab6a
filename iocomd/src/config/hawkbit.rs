//! The `[hawkbit]` section: iocomd as a hawkBit DDI device (see [`crate::ddi`]). Off unless the
//! section sets `enabled = true`; every key is validated even when it is off, so a fragment that
//! is switched on later cannot surprise.

use super::validate::Ctx;
use super::{ConfigError, Settings};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Default CA bundle for `https://` servers when `ca` is not set (Debian's `ca-certificates`).
pub const DEFAULT_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The validated `[hawkbit]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HawkbitSettings {
    /// Server base URL without a trailing `/`, e.g. `https://hawkbit.example.net` (a path
    /// prefix is kept, for servers behind a reverse proxy).
    pub server: String,
    /// Tenant (`DEFAULT` unless the server is multi-tenant).
    pub tenant: String,
    /// The controller id this device polls as (default: the IOCOM device path).
    pub controller_id: String,
    /// How the device authenticates.
    pub auth: HawkbitAuth,
    /// CA bundle (PEM) for an `https://` server; `None` for `http://`.
    pub ca: Option<PathBuf>,
    /// Client certificate chain and key (PEM), for mutual TLS at a reverse proxy.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// Device attributes sent as `configData` (merged with `pkg.<name>` = installed version).
    pub attributes: BTreeMap<String, String>,
    /// If set, the installed version of this package is also sent as `sw_version`.
    pub version_package: Option<String>,
    /// Poll interval when the server sends no `sleep` (and after a change of action).
    pub poll_interval: Duration,
    /// Floor for the server's `sleep`.
    pub min_poll_interval: Duration,
    /// Least time between two `proceeding` progress messages of one action.
    pub progress_interval: Duration,
    /// First wait after an error (doubled per failure up to [`Self::retry_max`]).
    pub retry_min: Duration,
    /// Longest wait after repeated errors.
    pub retry_max: Duration,
    /// Send the `Authorization` header with downloads on other hosts than the server (off:
    /// external storage such as S3 rejects it).
    pub download_auth_other_hosts: bool,
}

/// DDI authentication; the token is read from its file when the client starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HawkbitAuth {
    /// No `Authorization` header (servers with anonymous DDI, or mutual TLS only).
    None,
    /// `Authorization: TargetToken <token>` (per device).
    TargetToken(PathBuf),
    /// `Authorization: GatewayToken <token>` (per tenant; acts for any device).
    GatewayToken(PathBuf),
}

/// Defaults of the `[hawkbit]` keys.
pub mod defaults {
    /// `tenant`.
    pub const TENANT: &str = "DEFAULT";
    /// `poll_interval` in seconds.
    pub const POLL_INTERVAL: u64 = 300;
    /// `min_poll_interval` in seconds.
    pub const MIN_POLL_INTERVAL: u64 = 5;
    /// `progress_interval` in seconds.
    pub const PROGRESS_INTERVAL: u64 = 5;
    /// First retry wait in seconds.
    pub const RETRY_MIN: u64 = 2;
    /// Longest retry wait in seconds.
    pub const RETRY_MAX: u64 = 600;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum RawAuth {
    None,
    TargetToken,
    GatewayToken,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHawkbit {
    pub enabled: Option<bool>,
    pub server: Option<String>,
    pub tenant: Option<String>,
    pub controller_id: Option<String>,
    pub auth: Option<RawAuth>,
    pub token_file: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub allow_plain_http: Option<bool>,
    pub attributes: Option<BTreeMap<String, String>>,
    pub version_package: Option<String>,
    pub poll_interval: Option<u64>,
    pub min_poll_interval: Option<u64>,
    pub progress_interval: Option<u64>,
    pub download_auth_other_hosts: Option<bool>,
}

/// Characters allowed in tenant and controller ids (they go into URL paths unescaped).
fn id_ok(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
}

fn seconds(
    cx: &Ctx<'_>,
    key: &str,
    v: Option<u64>,
    default: u64,
    min: u64,
) -> Result<Duration, ConfigError> {
    let v = v.unwrap_or(default);
    if !(min..=86_400).contains(&v) {
        return Err(cx.err(key, format!("{v} is out of range ({min} to 86400 seconds)")));
    }
    Ok(Duration::from_secs(v))
}

/// Validates the section; `Ok(None)` when it is absent or `enabled` is not true.
pub(crate) fn settings(
    cx: &Ctx<'_>,
    raw: Option<RawHawkbit>,
    partial: &Settings,
) -> Result<Option<HawkbitSettings>, ConfigError> {
    let Some(h) = raw else { return Ok(None) };
    let enabled = h.enabled.unwrap_or(false);
    let server = match (h.server, enabled) {
        (Some(s), _) => s,
        (None, true) => return Err(cx.err("hawkbit.server", "required with enabled = true")),
        (None, false) => "https://hawkbit.invalid".to_owned(),
    };
    let uri: hyper::Uri = server
        .parse()
        .map_err(|e| cx.err("hawkbit.server", format!("invalid URL '{server}': {e}")))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => {
            return Err(cx.err(
                "hawkbit.server",
                format!("'{server}': the scheme must be https:// or http://"),
            ));
        }
    };
    if uri.authority().is_none() || uri.query().is_some() || server.contains('#') {
        return Err(cx.err(
            "hawkbit.server",
            format!("'{server}': expected scheme://host[:port][/prefix], no query"),
        ));
    }
    if !https && !h.allow_plain_http.unwrap_or(false) {
        return Err(cx.err(
            "hawkbit.server",
            "http:// sends the token and the packages' metadata in clear: use https://, or set \
             allow_plain_http = true (test servers on loopback)",
        ));
    }
    let tenant = h.tenant.unwrap_or_else(|| defaults::TENANT.into());
    if !id_ok(&tenant, 64) {
        return Err(cx.err(
            "hawkbit.tenant",
            format!("invalid tenant '{tenant}': 1 to 64 ASCII letters, digits, '.', '-', '_', ':'"),
        ));
    }
    let controller_id = h.controller_id.unwrap_or_else(|| partial.device_path());
    if !id_ok(&controller_id, 256) {
        return Err(cx.err(
            "hawkbit.controller_id",
            format!("invalid controller id '{controller_id}': 1 to 256 ASCII letters, digits, '.', '-', '_', ':'"),
        ));
    }
    let token = h
        .token_file
        .map(|p| cx.path("hawkbit.token_file", p))
        .transpose()?;
    let auth = match (h.auth.unwrap_or(RawAuth::TargetToken), token) {
        (RawAuth::None, None) => HawkbitAuth::None,
        (RawAuth::None, Some(_)) => {
            return Err(cx.err("hawkbit.token_file", "not used with auth = \"none\""));
        }
        (RawAuth::TargetToken, Some(t)) => HawkbitAuth::TargetToken(t),
        (RawAuth::GatewayToken, Some(t)) => HawkbitAuth::GatewayToken(t),
        (_, None) if !enabled => HawkbitAuth::None,
        (_, None) => {
            return Err(cx.err(
                "hawkbit.token_file",
                "required with a token auth (or set auth = \"none\")",
            ));
        }
    };
    let ca = match (h.ca, https) {
        (Some(p), true) => Some(cx.path("hawkbit.ca", p)?),
        (None, true) => Some(PathBuf::from(DEFAULT_CA_BUNDLE)),
        (Some(_), false) => return Err(cx.err("hawkbit.ca", "only valid with an https:// server")),
        (None, false) => None,
    };
    let identity = match (h.cert, h.key) {
        (Some(c), Some(k)) if https => {
            Some((cx.path("hawkbit.cert", c)?, cx.path("hawkbit.key", k)?))
        }
        (Some(_), Some(_)) => {
            return Err(cx.err("hawkbit.cert", "only valid with an https:// server"));
        }
        (None, None) => None,
        (Some(_), None) => return Err(cx.err("hawkbit.key", "required when cert is set")),
        (None, Some(_)) => return Err(cx.err("hawkbit.cert", "required when key is set")),
    };
    let attributes = h.attributes.unwrap_or_default();
    for (k, v) in &attributes {
        let key = format!("hawkbit.attributes.{k}");
        if k.is_empty() || k.len() > 128 || k.starts_with("pkg.") || k == "sw_version" {
            return Err(cx.err(key, "attribute names are 1 to 128 characters; 'pkg.*' and 'sw_version' are set by iocomd"));
        }
        if v.len() > 128 {
            return Err(cx.err(key, "attribute values are at most 128 characters"));
        }
    }
    if let Some(p) = &h.version_package
        && (p.is_empty()
            || !p
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c)))
    {
        return Err(cx.err(
            "hawkbit.version_package",
            format!("invalid package name '{p}'"),
        ));
    }
    let settings = HawkbitSettings {
        server: server.trim_end_matches('/').to_owned(),
        tenant,
        controller_id,
        auth,
        ca,
        identity,
        attributes,
        version_package: h.version_package,
        poll_interval: seconds(
            cx,
            "hawkbit.poll_interval",
            h.poll_interval,
            defaults::POLL_INTERVAL,
            1,
        )?,
        min_poll_interval: seconds(
            cx,
            "hawkbit.min_poll_interval",
            h.min_poll_interval,
            defaults::MIN_POLL_INTERVAL,
            1,
        )?,
        progress_interval: seconds(
            cx,
            "hawkbit.progress_interval",
            h.progress_interval,
            defaults::PROGRESS_INTERVAL,
            1,
        )?,
        retry_min: Duration::from_secs(defaults::RETRY_MIN),
        retry_max: Duration::from_secs(defaults::RETRY_MAX),
        download_auth_other_hosts: h.download_auth_other_hosts.unwrap_or(false),
    };
    Ok(enabled.then_some(settings))
}
