//! The address of `--connect`: `HOST[:PORT]`, with IOCOM's default port when none is given
//! (6368 plain, 6369 TLS, the ports of [`crate::config::defaults`]). A malformed address is a
//! usage error, before anything connects.

use super::CtlError;
use crate::config::defaults::{TCP_PORT, TLS_PORT};

/// `HOST:PORT` for `s` (`HOST`, `HOST:PORT`, `[IPV6]`, `[IPV6]:PORT` or a bare IPv6 address),
/// the default port of the transport filled in.
pub fn connect_address(s: &str, tls: bool) -> Result<String, CtlError> {
    let bad = |why: &str| {
        CtlError::Usage(format!(
            "--connect {s:?}: {why} (give HOST or HOST:PORT, e.g. 127.0.0.1:{TCP_PORT})"
        ))
    };
    let default_port = if tls { TLS_PORT } else { TCP_PORT };
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (v6, after) = rest
            .split_once(']')
            .ok_or_else(|| bad("no ']' after the IPv6 address"))?;
        v6.parse::<std::net::Ipv6Addr>()
            .map_err(|_| bad("not an IPv6 address in brackets"))?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ']'"))?),
        };
        (format!("[{v6}]"), port)
    } else if s.parse::<std::net::Ipv6Addr>().is_ok() {
        (format!("[{s}]"), None)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (s.to_owned(), None),
        }
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.is_empty() {
        return Err(bad("no host"));
    }
    let host_ok = bare
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '%'));
    if !host_ok {
        return Err(bad("the host has characters no host name or address has"));
    }
    if !host.starts_with('[') && bare.contains(':') {
        return Err(bad(
            "an IPv6 address with a port goes in brackets: [ADDR]:PORT",
        ));
    }
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err(bad("the port is not a number from 1 to 65535")),
            Ok(n) => n,
        },
    };
    Ok(format!("{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_port_follows_the_transport() {
        let a = |s, tls| connect_address(s, tls).unwrap();
        assert_eq!(a("localhost", false), "localhost:6368");
        assert_eq!(a("localhost", true), "localhost:6369");
        assert_eq!(a("dev.example:7000", true), "dev.example:7000");
        assert_eq!(a("10.0.0.3", false), "10.0.0.3:6368");
        assert_eq!(a("::1", false), "[::1]:6368");
        assert_eq!(a("[::1]", true), "[::1]:6369");
        assert_eq!(a("[fe80::1]:16368", false), "[fe80::1]:16368");
    }

    #[test]
    fn malformed_addresses_are_usage_errors() {
        for s in [
            "",
            ":6368",
            "host:",
            "host:0",
            "host:70000",
            "host:port",
            "a b",
            "host/x:1",
            "[::1",
            "[::1]x",
            "[nope]:1",
            "a:b:1",
        ] {
            let e = connect_address(s, false).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{s:?}: {e}");
            assert!(e.to_string().contains("--connect"), "{e}");
        }
    }
}
