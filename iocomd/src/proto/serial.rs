//! Serial-line specifics of the IOCOM framing (transport spec §1.7, §3.3, §3.8): the CRC-16/MODBUS
//! carried in bytes 1–2 of every serial frame, and the connect-sequence control characters.
//!
//! The frame layout itself is shared with sockets: use [`super::frame::Frame::encode`] and
//! [`super::frame::FrameDecoder`] with [`super::frame::Framing::Serial`]; they call
//! [`seal_crc`] and [`check_crc`]. [`SerialConnect`] runs the connect sequence; after it a
//! [`super::conn::Connection`] made with [`super::conn::ConnConfig::serial`] carries the frames.
//! The port itself is `crate::net::serial`'s.

use super::crc::Crc16;
use super::frame::FrameError;

mod connect;
pub use connect::{CONFIRM_WAIT, CONNECT_PERIOD, ConnectStep, SerialConnect};

/// Serial client → server: connect request.
pub const CONNECT: u8 = 0xFD;
/// Serial server → client: reply to [`CONNECT`].
pub const CONNECT_REPLY: u8 = 0xFC;
/// Serial client → server: confirm.
pub const CONFIRM: u8 = 0xFB;
/// Serial server → client: reply to [`CONFIRM`]; both ends are connected after it.
pub const CONFIRM_REPLY: u8 = 0xFA;
/// Serial server: disconnect (first byte of its connect sequence).
pub const DISCONNECT: u8 = 0xF9;

/// Serial connect-sequence control characters. All are above the highest frame number, so a peer
/// that is still connected sees them as a frame-number error and restarts too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SerialCtrl {
    /// `FD`
    Connect,
    /// `FC`
    ConnectReply,
    /// `FB`
    Confirm,
    /// `FA`
    ConfirmReply,
    /// `F9`
    Disconnect,
}

impl SerialCtrl {
    /// The byte on the line.
    pub const fn byte(self) -> u8 {
        match self {
            SerialCtrl::Connect => CONNECT,
            SerialCtrl::ConnectReply => CONNECT_REPLY,
            SerialCtrl::Confirm => CONFIRM,
            SerialCtrl::ConfirmReply => CONFIRM_REPLY,
            SerialCtrl::Disconnect => DISCONNECT,
        }
    }

    /// The control character for `b`, if it is one.
    pub const fn from_byte(b: u8) -> Option<Self> {
        match b {
            CONNECT => Some(SerialCtrl::Connect),
            CONNECT_REPLY => Some(SerialCtrl::ConnectReply),
            CONFIRM => Some(SerialCtrl::Confirm),
            CONFIRM_REPLY => Some(SerialCtrl::ConfirmReply),
            DISCONNECT => Some(SerialCtrl::Disconnect),
            _ => None,
        }
    }
}

/// CRC of a complete serial frame, computed with bytes 1 and 2 taken as zero.
pub fn frame_crc(frame: &[u8]) -> u16 {
    let mut c = Crc16::new();
    c.update(frame.get(..1).unwrap_or_default());
    let zeros = frame.len().saturating_sub(1).min(2);
    c.update([0u8, 0].get(..zeros).unwrap_or_default());
    c.update(frame.get(3..).unwrap_or_default());
    c.value()
}

/// Writes the CRC into bytes 1–2 (low byte first) of a complete serial frame.
pub fn seal_crc(frame: &mut [u8]) {
    let crc = frame_crc(frame);
    if let Some(b) = frame.get_mut(1..3) {
        b.copy_from_slice(&crc.to_le_bytes());
    }
}

/// Checks the CRC in bytes 1–2 of a complete serial frame.
pub fn check_crc(frame: &[u8]) -> Result<(), FrameError> {
    let (Some(&lo), Some(&hi)) = (frame.get(1), frame.get(2)) else {
        return Ok(());
    };
    let got = u16::from_le_bytes([lo, hi]);
    let computed = frame_crc(frame);
    if got != computed {
        return Err(FrameError::Crc { got, computed });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::frame::{Element, FrameDecoder, Framing};

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn spec_serial_crcs() {
        // Spec 3.8 worked example and 6.6.
        assert_eq!(frame_crc(&hex("06 58 6A 12 02 09 00 00 30")), 0x6A58);
        assert_eq!(frame_crc(&hex("06 00 00 12 02 09 00 00 30")), 0x6A58);
        let dev_auth =
            hex("00 73 E9 20 11 60 00 02 10 04 67 69 6E 61 03 07 63 61 66 65 6E 65 74 00");
        assert_eq!(frame_crc(&dev_auth), 0xE973);
        check_crc(&dev_auth).unwrap();
        let mut z = dev_auth.clone();
        z[1] = 0;
        z[2] = 0;
        seal_crc(&mut z);
        assert_eq!(z, dev_auth);
    }

    #[test]
    fn serial_stream_from_the_spec_decodes() {
        // Controller → device in 6.6 after the connect sequence: ACK, auth frame, two data frames
        // (the info frames in between are omitted there, so the data frames get their own decoder).
        let mut d = FrameDecoder::new(Framing::Serial, 96);
        d.push(&hex(
            "FF 00 00 00 55 30 20 12 60 00 02 00 05 66 72 61 6E 6B 00 07 63 61 66 65 6E 65 74 00",
        ));
        assert_eq!(d.next_element().unwrap().unwrap().0, Element::Ack(0));
        let (el, len) = d.next_element().unwrap().unwrap();
        assert_eq!(len, 25);
        assert!(matches!(el, Element::Frame(f) if f.mblk_id == 96 && f.flags.system()));
        assert_eq!(d.next_element().unwrap(), None);
        // A control character where a frame is expected fails (frame number error).
        d.push(&[DISCONNECT]);
        assert!(matches!(
            d.next_element(),
            Err(FrameError::FrameNr { got: 0xF9, .. })
        ));
    }

    #[test]
    fn corrupted_serial_frame_is_rejected() {
        let mut b = hex("06 58 6A 12 02 09 00 00 30");
        b[7] = 1;
        assert!(matches!(
            check_crc(&b),
            Err(FrameError::Crc { got: 0x6A58, .. })
        ));
    }

    #[test]
    fn control_characters_round_trip() {
        for c in [
            SerialCtrl::Connect,
            SerialCtrl::ConnectReply,
            SerialCtrl::Confirm,
            SerialCtrl::ConfirmReply,
            SerialCtrl::Disconnect,
        ] {
            assert_eq!(SerialCtrl::from_byte(c.byte()), Some(c));
            assert!(c.byte() > crate::proto::frame::MAX_FRAME_NR);
        }
        assert_eq!(SerialCtrl::from_byte(0xFF), None);
    }
}
