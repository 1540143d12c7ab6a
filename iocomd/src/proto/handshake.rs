//! The socket handshake (transport spec §2.2) and the initial ACK (§2.3).
//!
//! On TLS the server first sends the mark byte `5B`. The TCP/TLS client then sends its type byte
//! (`13` client, `12` network service), with bit `40` followed by `L` and the network name
//! including its NUL (`53 0A "iocafenet\0"`), or the single byte `13` for an empty name. A server
//! answers a certificate request (bit `80`) with `00 00` (no certificate) and sends nothing else.
//! Handshake bytes are not counted by the ACK counters.

use thiserror::Error;

/// Client type: a device, tool or controller connecting to a service (the normal case).
pub const CLIENT: u8 = 0x13;
/// Client type: an IO network service publishing its end point at a switchbox.
pub const NETWORK_SERVICE: u8 = 0x12;
/// The type byte is followed by a network name.
pub const HAS_NET_NAME_BIT: u8 = 0x40;
/// The client asks for a trust certificate.
pub const REQUEST_TRUST_CERTIFICATE_BIT: u8 = 0x80;
/// Mask of the client type in the first byte.
pub const TYPE_MASK: u8 = 0x3F;
/// First byte a TLS server sends inside the tunnel.
pub const TLS_MARK: u8 = 0x5B;
/// Largest `L` (name length including NUL) a server accepts.
pub const MAX_NAME_FIELD: usize = 24;
/// The server's reply to a certificate request: length 0, no certificate.
pub const NO_TRUST_CERTIFICATE: [u8; 2] = [0, 0];

/// Why a handshake is rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HandshakeError {
    /// The client type byte is not 0x12 or 0x13 after masking.
    #[error("handshake type byte {0:#04x} is not a client type")]
    BadType(u8),
    /// The network name length is 0 or above 24.
    #[error("handshake network name length {0} (allowed 1..=24 including the NUL)")]
    BadLength(u8),
    /// The name to send is longer than 23 bytes or contains a NUL.
    #[error("network name {0:?} cannot be sent in a handshake (at most 23 bytes, no NUL)")]
    BadName(String),
    /// A TLS server's first byte was not `5B`.
    #[error("TLS mark byte {0:#04x}, expected 0x5b")]
    BadTlsMark(u8),
}

/// Client type of a handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientType {
    /// `0x13`: ordinary client.
    Client,
    /// `0x12`: network service connecting to a switchbox.
    NetworkService,
}

/// The client's handshake message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// Client type.
    pub client_type: ClientType,
    /// The client's network name; empty means the single-byte form.
    pub network_name: String,
    /// Bit `0x80`: the client wants a trust certificate.
    pub request_certificate: bool,
}

impl ClientHello {
    /// An ordinary client's hello with its network name.
    pub fn client(network_name: &str) -> Self {
        Self {
            client_type: ClientType::Client,
            network_name: network_name.to_owned(),
            request_certificate: false,
        }
    }

    /// Appends the encoded hello.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), HandshakeError> {
        let mut t = match self.client_type {
            ClientType::Client => CLIENT,
            ClientType::NetworkService => NETWORK_SERVICE,
        };
        if self.request_certificate {
            t |= REQUEST_TRUST_CERTIFICATE_BIT;
        }
        let name = self.network_name.as_bytes();
        if name.is_empty() {
            out.push(t);
            return Ok(());
        }
        if name.len() >= MAX_NAME_FIELD || name.contains(&0) {
            return Err(HandshakeError::BadName(self.network_name.clone()));
        }
        out.push(t | HAS_NET_NAME_BIT);
        // name.len() < 24.
        out.push(name.len() as u8 + 1);
        out.extend_from_slice(name);
        out.push(0);
        Ok(())
    }

    /// Decodes a hello from the start of `b`: `Ok(None)` if more bytes are needed, else the hello
    /// and the number of bytes it used. Fails as soon as a bad byte is seen.
    pub fn decode(b: &[u8]) -> Result<Option<(Self, usize)>, HandshakeError> {
        let Some(&t) = b.first() else {
            return Ok(None);
        };
        let client_type = match t & TYPE_MASK {
            CLIENT => ClientType::Client,
            NETWORK_SERVICE => ClientType::NetworkService,
            _ => return Err(HandshakeError::BadType(t)),
        };
        let request_certificate = t & REQUEST_TRUST_CERTIFICATE_BIT != 0;
        if t & HAS_NET_NAME_BIT == 0 {
            return Ok(Some((
                Self {
                    client_type,
                    network_name: String::new(),
                    request_certificate,
                },
                1,
            )));
        }
        let Some(&l) = b.get(1) else {
            return Ok(None);
        };
        if l == 0 || usize::from(l) > MAX_NAME_FIELD {
            return Err(HandshakeError::BadLength(l));
        }
        let Some(field) = b.get(2..2 + usize::from(l)) else {
            return Ok(None);
        };
        let name = field.split(|&c| c == 0).next().unwrap_or_default();
        Ok(Some((
            Self {
                client_type,
                network_name: String::from_utf8_lossy(name).into_owned(),
                request_certificate,
            },
            2 + usize::from(l),
        )))
    }
}

/// The receive-counter value a connection starts its "acknowledged" counter with, so that the
/// first send step always produces an ACK (spec §2.3).
pub const INITIAL_ACKNOWLEDGED: u32 = 0xA0_A000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_and_trace_hellos() {
        let mut v = Vec::new();
        ClientHello::client("cafenet").encode(&mut v).unwrap();
        assert_eq!(v, b"\x53\x08cafenet\x00");
        v.clear();
        ClientHello::client("*").encode(&mut v).unwrap();
        assert_eq!(v, [0x53, 0x02, 0x2A, 0x00]);
        v.clear();
        ClientHello::client("").encode(&mut v).unwrap();
        assert_eq!(v, [0x13]);
        let (h, n) = ClientHello::decode(b"\x53\x0aiocafenet\x00\xff")
            .unwrap()
            .unwrap();
        assert_eq!(n, 12);
        assert_eq!(h, ClientHello::client("iocafenet"));
        let (h, n) = ClientHello::decode(&[0x13, 0xFF]).unwrap().unwrap();
        assert_eq!((n, h.network_name.as_str()), (1, ""));
        let (h, _) = ClientHello::decode(&[0x92]).unwrap().unwrap();
        assert_eq!(h.client_type, ClientType::NetworkService);
        assert!(h.request_certificate);
    }

    #[test]
    fn partial_hellos_need_more() {
        let full = b"\x53\x0aiocafenet\x00";
        for cut in 0..full.len() {
            assert_eq!(ClientHello::decode(&full[..cut]), Ok(None), "cut {cut}");
        }
    }

    #[test]
    fn hello_rejections() {
        assert_eq!(
            ClientHello::decode(&[0x14]),
            Err(HandshakeError::BadType(0x14))
        );
        assert_eq!(
            ClientHello::decode(&[0x00]),
            Err(HandshakeError::BadType(0))
        );
        // A frame or ACK where a hello belongs.
        assert_eq!(
            ClientHello::decode(&[0xFF, 0, 0, 0]),
            Err(HandshakeError::BadType(0xFF))
        );
        assert_eq!(
            ClientHello::decode(&[0x53, 0]),
            Err(HandshakeError::BadLength(0))
        );
        assert_eq!(
            ClientHello::decode(&[0x53, 25]),
            Err(HandshakeError::BadLength(25))
        );
        let mut v = Vec::new();
        assert!(ClientHello::client(&"n".repeat(24)).encode(&mut v).is_err());
        assert!(ClientHello::client("a\0b").encode(&mut v).is_err());
        ClientHello::client(&"n".repeat(23)).encode(&mut v).unwrap();
        assert_eq!(v[1], 24);
        assert_eq!(ClientHello::decode(&v).unwrap().unwrap().1, 26);
    }
}
