//! Turns the merged raw configuration into [`Settings`], with defaults, checking every value.
//! Errors name the key and the file that set it.

use super::raw::{
    RawConfig, RawEndpoint, RawHelperKind, RawLogTarget, RawSerialEndpoint, RawSerialSide,
    RawTransport,
};
use super::sources::Merged;
use super::values::PasswordHash;
use super::*;
use std::net::SocketAddr;

pub(super) struct Ctx<'a> {
    merged: &'a Merged,
}

impl Ctx<'_> {
    pub(super) fn err(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        let key = key.into();
        ConfigError::Invalid {
            file: self.merged.origin(&key).map(Path::to_path_buf),
            key,
            message: message.into(),
        }
    }

    /// Relative paths are taken relative to the directory of the file that set them.
    pub(super) fn path(&self, key: &str, p: PathBuf) -> Result<PathBuf, ConfigError> {
        if p.as_os_str().is_empty() {
            return Err(self.err(key, "must not be empty"));
        }
        if p.is_absolute() {
            return Ok(p);
        }
        match self.merged.origin(key).and_then(Path::parent) {
            Some(dir) => Ok(dir.join(p)),
            None => Err(self.err(
                key,
                format!("must be an absolute path, not '{}'", p.display()),
            )),
        }
    }
}

fn raw_config(merged: &Merged) -> Result<RawConfig, ConfigError> {
    toml::Value::Table(merged.table.clone())
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Syntax {
            path: merged.files.last().cloned().unwrap_or_default(),
            message: format!("merged configuration: {}", e.message()),
        })
}

/// Validates only the `[hawkbit]` section of `merged` for a device with settings `base` (the
/// demo's `--hawkbit FILE`).
pub(crate) fn hawkbit_only(
    merged: &Merged,
    base: &Settings,
) -> Result<Option<super::HawkbitSettings>, ConfigError> {
    let raw = raw_config(merged)?;
    super::hawkbit::settings(&Ctx { merged }, raw.hawkbit, base)
}

pub(crate) fn settings(merged: &Merged, paths: &Paths) -> Result<Settings, ConfigError> {
    let raw = raw_config(merged)?;
    let cx = Ctx { merged };

    let dev = raw.device.unwrap_or_default();
    let device = DeviceIdentity {
        name: device_name(
            &cx,
            dev.name.unwrap_or_else(|| defaults::DEVICE_NAME.into()),
        )?,
        number: dev.number.unwrap_or(DeviceNumber::Auto),
        network: network_name(&cx, dev.network.unwrap_or_else(|| defaults::NETWORK.into()))?,
    };

    let ep = raw.endpoints.unwrap_or_default();
    let mut listen = Vec::new();
    for (i, e) in ep.listen.unwrap_or_default().into_iter().enumerate() {
        listen.push(listen_endpoint(&cx, &format!("endpoints.listen[{i}]"), e)?);
    }
    let mut connect = Vec::new();
    for (i, e) in ep.connect.unwrap_or_default().into_iter().enumerate() {
        connect.push(connect_endpoint(
            &cx,
            &format!("endpoints.connect[{i}]"),
            e,
        )?);
    }
    let mut serial = Vec::new();
    for (i, e) in ep.serial.unwrap_or_default().into_iter().enumerate() {
        let s = serial_endpoint(&cx, &format!("endpoints.serial[{i}]"), e)?;
        if serial
            .iter()
            .any(|o: &SerialEndpoint| o.params.path == s.params.path)
        {
            return Err(cx.err(
                format!("endpoints.serial[{i}].port"),
                format!("port {} is configured twice", s.params.path.display()),
            ));
        }
        serial.push(s);
    }
    if listen.is_empty() && connect.is_empty() && serial.is_empty() {
        return Err(cx.err(
            "endpoints",
            "no endpoint configured: add [[endpoints.listen]], [[endpoints.connect]] or \
             [[endpoints.serial]]",
        ));
    }

    let mut accounts = Vec::new();
    for (user, a) in raw.accounts.unwrap_or_default() {
        let key = format!("accounts.{user}");
        if user.is_empty()
            || user.chars().count() > 25
            || user
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '.')
        {
            return Err(cx.err(
                key,
                format!("invalid user name '{user}': 1 to 25 characters, no spaces or '.'"),
            ));
        }
        let password_hash = a
            .password_hash
            .map(|h| PasswordHash::parse(&h).map_err(|m| cx.err(format!("{key}.password_hash"), m)))
            .transpose()?;
        let certificate_sha256 = a
            .certificate_sha256
            .map(|f| {
                fingerprint(&f).ok_or_else(|| {
                    cx.err(
                        format!("{key}.certificate_sha256"),
                        "expected the SHA-256 of the certificate: 64 hex digits, colons allowed \
                         (`openssl x509 -noout -fingerprint -sha256 -in CERT`)",
                    )
                })
            })
            .transpose()?;
        if password_hash.is_none() && certificate_sha256.is_none() {
            return Err(cx.err(key, "needs password_hash, certificate_sha256 or both"));
        }
        let mtls = listen
            .iter()
            .any(|l| l.tls.as_ref().is_some_and(|t| t.client_ca.is_some()));
        if certificate_sha256.is_some() && !mtls {
            return Err(cx.err(
                format!("{key}.certificate_sha256"),
                "no listener asks for client certificates: add ca = \"…\" to a TLS \
                 [[endpoints.listen]]",
            ));
        }
        accounts.push(Account {
            user,
            password_hash,
            certificate_sha256,
        });
    }

    let sp = raw.spool.unwrap_or_default();
    let max_package_size = sp
        .max_package_size
        .map_or(defaults::MAX_PACKAGE_SIZE, |s| s.0);
    if max_package_size < defaults::MAX_PACKAGE_SIZE_MIN {
        return Err(cx.err(
            "spool.max_package_size",
            format!(
                "{} is too small (at least {})",
                ByteSize(max_package_size),
                ByteSize(defaults::MAX_PACKAGE_SIZE_MIN)
            ),
        ));
    }
    let spool = SpoolSettings {
        dir: match sp.dir {
            Some(d) => cx.path("spool.dir", d)?,
            None => paths.spool_dir.clone(),
        },
        max_package_size,
        min_free_space: sp.min_free_space.map_or(defaults::MIN_FREE_SPACE, |s| s.0),
        stream_to_helper: sp.stream_to_helper.unwrap_or(true),
    };

    let transfer = transfer_limits(&cx, raw.stream.as_ref())?;
    let stream_buffer_size = match raw.stream.and_then(|s| s.buffer_size) {
        None => defaults::STREAM_BUFFER_SIZE,
        Some(s) => u32::try_from(s.0)
            .ok()
            .filter(|n| (defaults::STREAM_BUFFER_MIN..=defaults::STREAM_BUFFER_MAX).contains(n))
            .ok_or_else(|| {
                cx.err(
                    "stream.buffer_size",
                    format!(
                        "{} is out of range ({} to {} bytes)",
                        s,
                        defaults::STREAM_BUFFER_MIN,
                        defaults::STREAM_BUFFER_MAX
                    ),
                )
            })?,
    };

    let h = raw.helper.unwrap_or_default();
    let helper = match h.connection.unwrap_or(RawHelperKind::SystemBus) {
        RawHelperKind::SystemBus => HelperConnection::SystemBus,
        RawHelperKind::Bus => {
            let address = h
                .address
                .ok_or_else(|| cx.err("helper.address", "required with connection = \"bus\""))?;
            if let Err(e) = zbus::Address::try_from(address.as_str()) {
                return Err(cx.err(
                    "helper.address",
                    format!("invalid D-Bus address '{address}': {e}"),
                ));
            }
            HelperConnection::Bus { address }
        }
        RawHelperKind::Spawn => {
            let program = h
                .program
                .ok_or_else(|| cx.err("helper.program", "required with connection = \"spawn\""))?;
            HelperConnection::Spawn {
                program: cx.path("helper.program", program)?,
                args: h.args.unwrap_or_default(),
            }
        }
    };

    let l = raw.log.unwrap_or_default();
    let level = l.level.unwrap_or_else(|| defaults::LOG_LEVEL.into());
    if let Err(e) = crate::logging::parse_filter(&level) {
        return Err(cx.err("log.level", format!("invalid filter '{level}': {e}")));
    }
    let log = LogSettings {
        level,
        target: match l.target.unwrap_or(RawLogTarget::Auto) {
            RawLogTarget::Auto => LogTarget::Auto,
            RawLogTarget::Journald => LogTarget::Journald,
            RawLogTarget::Stderr => LogTarget::Stderr,
        },
    };

    let security = raw.security.unwrap_or_default();
    let mut settings = Settings {
        device,
        listen,
        connect,
        serial,
        allow_plain_tcp_push: security.allow_plain_tcp_push.unwrap_or(false),
        allow_serial_push: security.allow_serial_push.unwrap_or(false),
        accounts,
        spool,
        stream_buffer_size,
        transfer,
        helper,
        log,
        hawkbit: None,
        state_dir: paths.state_dir.clone(),
        sources: merged.files.clone(),
    };
    settings.hawkbit = super::hawkbit::settings(&cx, raw.hawkbit, &settings)?;
    Ok(settings)
}

fn transfer_limits(
    cx: &Ctx<'_>,
    raw: Option<&super::raw::RawStream>,
) -> Result<super::TransferLimits, ConfigError> {
    use std::time::Duration;
    let mut t = super::TransferLimits::default();
    let Some(raw) = raw else { return Ok(t) };
    if let Some(s) = raw.max_transfer_seconds {
        if !(10..=7 * 24 * 3600).contains(&s) {
            return Err(cx.err("stream.max_transfer_seconds", "must be 10 s to 7 days"));
        }
        t.max_time = Duration::from_secs(s);
    }
    if let Some(s) = raw.rate_window_seconds {
        if !(5..=3600).contains(&s) {
            return Err(cx.err("stream.rate_window_seconds", "must be 5 to 3600 s"));
        }
        t.rate_window = Duration::from_secs(s);
    }
    if let Some(r) = raw.min_rate {
        t.min_rate = r.0;
    }
    Ok(t)
}

fn device_name(cx: &Ctx<'_>, name: String) -> Result<String, ConfigError> {
    let ok =
        (1..=15).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphabetic() || c == '_');
    if ok {
        Ok(name)
    } else {
        Err(cx.err(
            "device.name",
            format!(
                "invalid device name '{name}': 1 to 15 ASCII letters or '_' (the number goes in \
                 device.number)"
            ),
        ))
    }
}

fn network_name(cx: &Ctx<'_>, net: String) -> Result<String, ConfigError> {
    if net == "*" {
        return Err(cx.err(
            "device.network",
            "'*' (adopt the first peer's network) is not supported: name the network",
        ));
    }
    let ok = (1..=23).contains(&net.len())
        && net
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(net)
    } else {
        Err(cx.err(
            "device.network",
            format!("invalid network name '{net}': 1 to 23 ASCII letters, digits, '_' or '-'"),
        ))
    }
}

fn serial_endpoint(
    cx: &Ctx<'_>,
    key: &str,
    e: RawSerialEndpoint,
) -> Result<SerialEndpoint, ConfigError> {
    use crate::net::serial::SerialParams;
    if e.port.trim().is_empty() || e.port.contains(',') {
        return Err(cx.err(
            format!("{key}.port"),
            format!(
                "invalid port '{}' (a device such as /dev/ttyUSB0 or ttyS0)",
                e.port
            ),
        ));
    }
    let mut params = SerialParams::new(SerialParams::port_path(e.port.trim()));
    if let Some(b) = e.baud {
        params
            .set("baud", &b.to_string())
            .map_err(|m| cx.err(format!("{key}.baud"), m.to_string()))?;
    }
    if let Some(p) = &e.parity {
        params
            .set("parity", p)
            .map_err(|m| cx.err(format!("{key}.parity"), m.to_string()))?;
    }
    if let Some(s) = e.stop_bits {
        params
            .set("stopbits", &s.to_string())
            .map_err(|m| cx.err(format!("{key}.stop_bits"), m.to_string()))?;
    }
    let side = match e.side.unwrap_or(RawSerialSide::Client) {
        RawSerialSide::Client => SerialSide::Client,
        RawSerialSide::Server => SerialSide::Server,
    };
    Ok(SerialEndpoint { params, side })
}

/// Rejects keys that mean nothing for this endpoint kind.
fn reject(
    cx: &Ctx<'_>,
    key: &str,
    field: &str,
    present: bool,
    why: &str,
) -> Result<(), ConfigError> {
    if present {
        Err(cx.err(format!("{key}.{field}"), why.to_owned()))
    } else {
        Ok(())
    }
}

/// A SHA-256 fingerprint written as 64 hex digits, optionally separated by colons.
fn fingerprint(s: &str) -> Option<[u8; 32]> {
    let hex: String = s.chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn listen_endpoint(cx: &Ctx<'_>, key: &str, e: RawEndpoint) -> Result<ListenEndpoint, ConfigError> {
    let address: SocketAddr = e.address.parse().map_err(|_| {
        cx.err(
            format!("{key}.address"),
            format!(
                "invalid socket address '{}' (expected IP:PORT, e.g. 0.0.0.0:6369)",
                e.address
            ),
        )
    })?;
    reject(
        cx,
        key,
        "server_name",
        e.server_name.is_some(),
        "only valid for connect endpoints",
    )?;
    reject(
        cx,
        key,
        "password_file",
        e.password_file.is_some(),
        "only valid for connect endpoints",
    )?;
    let tls = match e.transport {
        RawTransport::Tcp => {
            let why = "only valid with transport = \"tls\"";
            reject(cx, key, "cert", e.cert.is_some(), why)?;
            reject(cx, key, "key", e.key.is_some(), why)?;
            reject(cx, key, "ca", e.ca.is_some(), why)?;
            None
        }
        RawTransport::Tls => {
            let need = |f: &str, v: Option<PathBuf>| {
                let k = format!("{key}.{f}");
                v.ok_or_else(|| cx.err(&k, "required with transport = \"tls\" (PEM file)"))
                    .and_then(|p| cx.path(&k, p))
            };
            Some(ServerTls {
                cert: need("cert", e.cert)?,
                key: need("key", e.key)?,
                client_ca: e.ca.map(|p| cx.path(&format!("{key}.ca"), p)).transpose()?,
            })
        }
    };
    Ok(ListenEndpoint { address, tls })
}

/// Splits `host:port` / `[v6]:port`.
fn host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let host = match host.strip_prefix('[') {
        Some(h) => h.strip_suffix(']')?,
        None if host.contains(':') => return None,
        None => host,
    };
    if host.is_empty()
        || host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '*')
    {
        return None;
    }
    Some((host.to_owned(), port))
}

fn connect_endpoint(
    cx: &Ctx<'_>,
    key: &str,
    e: RawEndpoint,
) -> Result<ConnectEndpoint, ConfigError> {
    // "*": the address comes from a lighthouse announcement (UDP multicast discovery).
    let lighthouse = e.address == "*";
    let (host, port) = if lighthouse {
        ("*".to_owned(), 0)
    } else {
        host_port(&e.address).ok_or_else(|| {
            cx.err(
                format!("{key}.address"),
                format!(
                    "invalid address '{}' (expected HOST:PORT, e.g. controller.example:6369, or * for lighthouse discovery)",
                    e.address
                ),
            )
        })?
    };
    let password_file = e
        .password_file
        .map(|p| cx.path(&format!("{key}.password_file"), p))
        .transpose()?;
    let tls = match e.transport {
        RawTransport::Tcp => {
            let why = "only valid with transport = \"tls\"";
            reject(cx, key, "cert", e.cert.is_some(), why)?;
            reject(cx, key, "key", e.key.is_some(), why)?;
            reject(cx, key, "ca", e.ca.is_some(), why)?;
            reject(cx, key, "server_name", e.server_name.is_some(), why)?;
            None
        }
        RawTransport::Tls => {
            let ca = e.ca.ok_or_else(|| {
                cx.err(
                    format!("{key}.ca"),
                    "required with transport = \"tls\" (PEM file of the CA)",
                )
            })?;
            let identity = match (e.cert, e.key) {
                (Some(c), Some(k)) => Some((
                    cx.path(&format!("{key}.cert"), c)?,
                    cx.path(&format!("{key}.key"), k)?,
                )),
                (None, None) => None,
                (Some(_), None) => {
                    return Err(cx.err(format!("{key}.key"), "required when cert is set"));
                }
                (None, Some(_)) => {
                    return Err(cx.err(format!("{key}.cert"), "required when key is set"));
                }
            };
            if lighthouse && e.server_name.is_none() {
                return Err(cx.err(
                    format!("{key}.server_name"),
                    "required with address = \"*\" and transport = \"tls\" (the name the discovered controller's certificate must carry)",
                ));
            }
            let server_name = e.server_name.unwrap_or_else(|| host.clone());
            if rustls_pki_types::ServerName::try_from(server_name.as_str()).is_err() {
                return Err(cx.err(
                    format!("{key}.server_name"),
                    format!("invalid TLS server name '{server_name}'"),
                ));
            }
            Some(ClientTls {
                ca: cx.path(&format!("{key}.ca"), ca)?,
                server_name,
                identity,
            })
        }
    };
    Ok(ConnectEndpoint {
        host,
        port,
        tls,
        password_file,
    })
}
