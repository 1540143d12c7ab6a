//! iocafe's lighthouse: UDP multicast discovery of a controller or server (iocom
//! `extensions/lighthouse`, the revision of the traces). A listening controller multicasts an
//! announcement to 239.63.68.63:6368 every few seconds; a device that was told to connect to
//! `*` picks the address from the newest announcement of its network and transport.
//!
//! The announcement is a 24-byte header and a "publish" string:
//!
//! ```text
//! tstamp(8, LE µs)  B3  18  crc_lo crc_hi  tls_port(2 LE) random(2 LE)
//! publish_sz  0  tcp_port(2 LE)  counter(2 LE)  0 0  publish[publish_sz]
//! publish = NICKNAME { "," MARKS ":" PROTOCOL ":" NETWORK }
//! MARKS   = { ("t"|"T") [port] | ("s"|"S") [port] }   t/T TLS, s/S plain, T/S IPv6
//! ```
//!
//! A mark without a port means the header's port of that transport; protocol `i` is IOCOM.
//! The CRC is CRC-16/MODBUS over header and publish bytes with the CRC bytes zero.
//!
//! Discovery is a hint only: it supplies an address to connect to, nothing else. Who the peer
//! is still comes from TLS (the configured CA and server name) and the account check.

use super::crc::crc16;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use thiserror::Error;

/// The multicast group (IPv4).
pub const LIGHTHOUSE_IPV4: Ipv4Addr = Ipv4Addr::new(239, 63, 68, 63);
/// The UDP port.
pub const LIGHTHOUSE_PORT: u16 = 6368;
/// Message id.
pub const MSG_ID: u8 = 0xB3;
/// Header size.
pub const HEADER_LEN: usize = 24;
/// Largest publish string a C receiver keeps (its buffer is 120 bytes with a NUL).
pub const MAX_PUBLISH: usize = 119;
/// How long an announcement is believed.
pub const MAX_AGE: Duration = Duration::from_secs(60);

/// Why a datagram is not a usable announcement.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LighthouseError {
    /// Shorter than its header and publish size say.
    #[error("lighthouse message too short ({0} bytes)")]
    Short(usize),
    /// Not a lighthouse message (id or header size).
    #[error("not a lighthouse message (id {id:#04x}, header size {hdr_sz})")]
    NotLighthouse {
        /// Message id found.
        id: u8,
        /// Header size found.
        hdr_sz: u8,
    },
    /// Empty or oversized publish string.
    #[error("bad publish size {0}")]
    PublishSize(usize),
    /// The checksum does not match.
    #[error("lighthouse checksum mismatch")]
    Checksum,
    /// Names that do not fit the message.
    #[error("lighthouse publish string too long ({0} bytes, at most 119)")]
    TooLong(usize),
}

/// One announced end point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnouncedEndpoint {
    /// TLS port, if TLS is offered.
    pub tls_port: Option<u16>,
    /// Plain TCP port, if offered.
    pub tcp_port: Option<u16>,
    /// IPv6 marks (`T`/`S`).
    pub ipv6: bool,
    /// `i` = IOCOM.
    pub protocol: String,
    /// IO network name.
    pub network: String,
}

/// A lighthouse announcement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// The announcer's name (the C process nickname).
    pub nickname: String,
    /// Header TLS port (0: none).
    pub tls_port: u16,
    /// Header plain TCP port (0: none).
    pub tcp_port: u16,
    /// Counter (the C server counts its announcements).
    pub counter: u16,
    /// A random number per message.
    pub random: u16,
    /// Microseconds since the epoch (0 when not known).
    pub timestamp: u64,
    /// The end points.
    pub endpoints: Vec<AnnouncedEndpoint>,
}

fn mark(out: &mut String, letter: char, port: Option<u16>, header: u16) {
    if let Some(p) = port {
        out.push(letter);
        if p != header {
            out.push_str(&p.to_string());
        }
    }
}

impl Announcement {
    /// An announcement of IOCOM end points for `networks` at `tls_port`/`tcp_port`.
    pub fn iocom(
        nickname: &str,
        networks: &[String],
        tls_port: Option<u16>,
        tcp_port: Option<u16>,
    ) -> Self {
        Self {
            nickname: nickname.to_owned(),
            tls_port: tls_port.unwrap_or(0),
            tcp_port: tcp_port.unwrap_or(0),
            counter: 0,
            random: 0,
            timestamp: 0,
            endpoints: networks
                .iter()
                .map(|n| AnnouncedEndpoint {
                    tls_port,
                    tcp_port,
                    ipv6: false,
                    protocol: "i".into(),
                    network: n.clone(),
                })
                .collect(),
        }
    }

    /// The publish string.
    pub fn publish(&self) -> String {
        let mut s = self.nickname.clone();
        for e in &self.endpoints {
            s.push(',');
            mark(
                &mut s,
                if e.ipv6 { 'T' } else { 't' },
                e.tls_port,
                self.tls_port,
            );
            mark(
                &mut s,
                if e.ipv6 { 'S' } else { 's' },
                e.tcp_port,
                self.tcp_port,
            );
            s.push(':');
            s.push_str(&e.protocol);
            s.push(':');
            s.push_str(&e.network);
        }
        s
    }

    /// The datagram.
    pub fn encode(&self) -> Result<Vec<u8>, LighthouseError> {
        let publish = self.publish();
        if publish.is_empty() || publish.len() > MAX_PUBLISH {
            return Err(LighthouseError::TooLong(publish.len()));
        }
        let mut out = Vec::with_capacity(HEADER_LEN + publish.len());
        out.extend_from_slice(&self.timestamp.to_le_bytes());
        out.extend_from_slice(&[MSG_ID, HEADER_LEN as u8, 0, 0]);
        out.extend_from_slice(&self.tls_port.to_le_bytes());
        out.extend_from_slice(&self.random.to_le_bytes());
        out.extend_from_slice(&[publish.len() as u8, 0]);
        out.extend_from_slice(&self.tcp_port.to_le_bytes());
        out.extend_from_slice(&self.counter.to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(publish.as_bytes());
        let crc = crc16(&out).to_le_bytes();
        if let Some(c) = out.get_mut(10..12) {
            c.copy_from_slice(&crc);
        }
        Ok(out)
    }

    /// Decodes and checks a datagram.
    pub fn decode(bytes: &[u8]) -> Result<Self, LighthouseError> {
        let b = |i: usize| bytes.get(i).copied().unwrap_or(0);
        let u16_at = |i: usize| u16::from_le_bytes([b(i), b(i + 1)]);
        if bytes.len() < HEADER_LEN {
            return Err(LighthouseError::Short(bytes.len()));
        }
        if b(8) != MSG_ID || usize::from(b(9)) != HEADER_LEN {
            return Err(LighthouseError::NotLighthouse {
                id: b(8),
                hdr_sz: b(9),
            });
        }
        let n = usize::from(b(16));
        if n == 0 || n > MAX_PUBLISH + 1 {
            return Err(LighthouseError::PublishSize(n));
        }
        let whole = bytes
            .get(..HEADER_LEN + n)
            .ok_or(LighthouseError::Short(bytes.len()))?;
        let mut zeroed = whole.to_vec();
        if let Some(c) = zeroed.get_mut(10..12) {
            c.fill(0);
        }
        if crc16(&zeroed) != u16_at(10) {
            return Err(LighthouseError::Checksum);
        }
        let publish = whole.get(HEADER_LEN..).unwrap_or_default();
        let publish = publish.split(|c| *c == 0).next().unwrap_or_default();
        let publish = String::from_utf8_lossy(publish);
        let mut timestamp = [0u8; 8];
        if let Some(t) = bytes.get(..8) {
            timestamp.copy_from_slice(t);
        }
        let (tls_port, tcp_port) = (u16_at(12), u16_at(18));
        let mut items = publish.split(',');
        let nickname = items.next().unwrap_or_default().to_owned();
        let endpoints = items
            .filter_map(|item| parse_item(item, tls_port, tcp_port))
            .collect();
        Ok(Self {
            nickname,
            tls_port,
            tcp_port,
            counter: u16_at(20),
            random: u16_at(14),
            timestamp: u64::from_le_bytes(timestamp),
            endpoints,
        })
    }
}

/// `MARKS:PROTOCOL:NETWORK[:…]`; `None` for an item the C client would skip.
fn parse_item(item: &str, tls_default: u16, tcp_default: u16) -> Option<AnnouncedEndpoint> {
    let mut parts = item.split(':');
    let marks = parts.next()?;
    let protocol = parts.next()?.to_owned();
    let network = parts.next()?.to_owned();
    let mut e = AnnouncedEndpoint {
        tls_port: None,
        tcp_port: None,
        ipv6: false,
        protocol,
        network,
    };
    let mut chars = marks.chars().peekable();
    while let Some(c) = chars.next() {
        let mut digits = String::new();
        while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
            digits.push(d);
            chars.next();
        }
        let port = if digits.is_empty() {
            None
        } else {
            Some(digits.parse::<u16>().ok()?)
        };
        match c {
            't' | 'T' => e.tls_port = Some(port.unwrap_or(tls_default)),
            's' | 'S' => e.tcp_port = Some(port.unwrap_or(tcp_default)),
            _ => return None,
        }
        e.ipv6 |= c.is_ascii_uppercase();
    }
    Some(e)
}

/// An IOCOM end point learnt from an announcement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    /// Where to connect (the datagram's source address and the announced port).
    pub addr: SocketAddr,
    /// TLS or plain.
    pub tls: bool,
    /// IO network name.
    pub network: String,
    /// The announcer's nickname.
    pub nickname: String,
    /// When it was last announced.
    pub seen: Instant,
}

/// What a device learnt from announcements (the C lighthouse client's table).
#[derive(Debug, Clone, Default)]
pub struct LighthouseClient {
    nets: Vec<Discovered>,
}

impl LighthouseClient {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes a datagram from `from`; returns how many IOCOM end points it announced.
    pub fn on_packet(
        &mut self,
        from: IpAddr,
        bytes: &[u8],
        now: Instant,
    ) -> Result<usize, LighthouseError> {
        let a = Announcement::decode(bytes)?;
        let mut n = 0;
        for e in a.endpoints.iter().filter(|e| e.protocol == "i") {
            for (tls, port) in [(true, e.tls_port), (false, e.tcp_port)] {
                let Some(port) = port.filter(|p| *p != 0) else {
                    continue;
                };
                let d = Discovered {
                    addr: SocketAddr::new(from, port),
                    tls,
                    network: e.network.clone(),
                    nickname: a.nickname.clone(),
                    seen: now,
                };
                self.nets
                    .retain(|x| !(x.tls == tls && x.network == d.network && x.addr == d.addr));
                self.nets.push(d);
                n += 1;
            }
        }
        self.nets
            .retain(|x| now.saturating_duration_since(x.seen) < MAX_AGE);
        Ok(n)
    }

    /// The newest end point of `network` (any network for `None`, `""` or `"*"`) and
    /// transport, announced within [`MAX_AGE`].
    pub fn select(&self, network: Option<&str>, tls: bool, now: Instant) -> Option<&Discovered> {
        let network = network.filter(|n| !n.is_empty() && *n != "*");
        self.nets
            .iter()
            .filter(|d| d.tls == tls && network.is_none_or(|n| n == d.network))
            .filter(|d| now.saturating_duration_since(d.seen) < MAX_AGE)
            .max_by_key(|d| d.seen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An announcement as the C server builds it: nickname "frank", TLS 6369 and TCP 6368
    /// as header ports, networks cafenet and asteroidnet, counter 3, random 0x1234.
    fn frank() -> Vec<u8> {
        let publish = b"frank,ts:i:cafenet,ts:i:asteroidnet";
        let mut m = vec![0x10, 0x27, 0, 0, 0, 0, 0, 0]; // 10000 µs
        m.extend([0xB3, 24, 0, 0, 0xE1, 0x18, 0x34, 0x12]);
        m.extend([publish.len() as u8, 0, 0xE0, 0x18, 3, 0, 0, 0]);
        m.extend(publish);
        let crc = crc16(&m);
        m[10] = crc as u8;
        m[11] = (crc >> 8) as u8;
        m
    }

    #[test]
    fn decodes_a_c_server_announcement() {
        let a = Announcement::decode(&frank()).unwrap();
        assert_eq!(a.nickname, "frank");
        assert_eq!(
            (a.tls_port, a.tcp_port, a.counter, a.random),
            (6369, 6368, 3, 0x1234)
        );
        assert_eq!(a.timestamp, 10_000);
        assert_eq!(a.endpoints.len(), 2);
        assert_eq!(
            a.endpoints[1],
            AnnouncedEndpoint {
                tls_port: Some(6369),
                tcp_port: Some(6368),
                ipv6: false,
                protocol: "i".into(),
                network: "asteroidnet".into()
            }
        );
        // Our encoder makes the same bytes from the same fields.
        assert_eq!(a.encode().unwrap(), frank());
    }

    #[test]
    fn ports_other_than_the_header_ones_are_written_out() {
        let mut a = Announcement::iocom("iocomctl", &["cafenet".into()], None, Some(16395));
        a.tcp_port = 6368;
        assert_eq!(a.publish(), "iocomctl,s16395:i:cafenet");
        let back = Announcement::decode(&a.encode().unwrap()).unwrap();
        assert_eq!(back.endpoints[0].tcp_port, Some(16395));
        assert_eq!(back.endpoints[0].tls_port, None);
    }

    #[test]
    fn rejects_bad_datagrams() {
        let good = frank();
        assert_eq!(
            Announcement::decode(&good[..20]),
            Err(LighthouseError::Short(20))
        );
        let mut m = good.clone();
        m[8] = 0xB4;
        assert!(matches!(
            Announcement::decode(&m),
            Err(LighthouseError::NotLighthouse { .. })
        ));
        let mut m = good.clone();
        m[9] = 16;
        assert!(matches!(
            Announcement::decode(&m),
            Err(LighthouseError::NotLighthouse { .. })
        ));
        let mut m = good.clone();
        m[16] = 0;
        assert_eq!(
            Announcement::decode(&m),
            Err(LighthouseError::PublishSize(0))
        );
        let mut m = good.clone();
        m[16] += 1;
        assert!(matches!(
            Announcement::decode(&m),
            Err(LighthouseError::Short(_))
        ));
        let mut m = good.clone();
        *m.last_mut().unwrap() ^= 1;
        assert_eq!(Announcement::decode(&m), Err(LighthouseError::Checksum));
        let long = vec!["n".repeat(23); 6];
        assert!(matches!(
            Announcement::iocom("x", &long, Some(6369), None).encode(),
            Err(LighthouseError::TooLong(_))
        ));
        // Items the C client skips: unknown mark, missing parts.
        assert_eq!(parse_item("x:i:net", 1, 2), None);
        assert_eq!(parse_item("t:i", 1, 2), None);
    }

    #[test]
    fn the_client_picks_the_newest_endpoint_of_its_network_and_transport() {
        let t0 = Instant::now();
        let mut c = LighthouseClient::new();
        let from: IpAddr = "10.0.0.5".parse().unwrap();
        assert_eq!(c.on_packet(from, &frank(), t0), Ok(4));
        let other = Announcement::iocom("ctl", &["cafenet".into()], None, Some(7000));
        let later = t0 + Duration::from_secs(1);
        c.on_packet("10.0.0.6".parse().unwrap(), &other.encode().unwrap(), later)
            .unwrap();
        let plain = c.select(Some("cafenet"), false, later).unwrap();
        assert_eq!(plain.addr, "10.0.0.6:7000".parse().unwrap());
        let tls = c.select(Some("cafenet"), true, later).unwrap();
        assert_eq!(
            (tls.addr, tls.nickname.as_str()),
            ("10.0.0.5:6369".parse().unwrap(), "frank")
        );
        assert_eq!(
            c.select(Some("asteroidnet"), false, later).unwrap().addr,
            "10.0.0.5:6368".parse().unwrap()
        );
        assert!(c.select(Some("othernet"), false, later).is_none());
        assert!(c.select(Some("*"), false, later).is_some());
        // Announcements expire.
        assert!(c.select(Some("asteroidnet"), false, t0 + MAX_AGE).is_none());
        assert!(c.on_packet(from, b"garbage", later).is_err());
    }
}
