//! The authentication system frame (type 2, transport spec §2.5–2.10) and automatic device
//! numbers.
//!
//! Frame 0 of every connection, flags `0x20` (+ `0x08` when the id field needs two bytes); the
//! header's memory block id field carries the sender's receive frame size. Payload:
//! `02 auth_flags user_name device_nr(1/2/4) [unique_id(12)] network_name password`, strings as one
//! length byte plus the bytes.

use super::frame::{Frame, FrameFlags};
use super::sysframe::{
    MAX_NETWORK_NAME_LEN, Reader, SYSFRAME_AUTH, SysFrameError, push_string, push_uint,
    system_payload, uint_width,
};
use std::collections::HashMap;

/// Longest user name a C receiver accepts (buffer `IOC_DEVICE_ID_SZ` = 26).
pub const MAX_USER_NAME_LEN: usize = 25;
/// Longest password a C receiver accepts (buffer `OSAL_SECRET_STR_SZ` = 46).
pub const MAX_PASSWORD_LEN: usize = 45;
/// Length of the unique id.
pub const UNIQUE_ID_LEN: usize = 12;

/// Device number meaning "automatic, please assign" (sent in info frames by such a device).
pub const AUTO_DEVICE_NR: u32 = 9000;
/// Device number a controller writes in info frames sent back to an automatically numbered device.
pub const TO_AUTO_DEVICE_NR: u32 = 8999;
/// First number assigned to devices that sent a unique id.
pub const RESERVED_AUTO_DEVICE_NR_START: u32 = 9001;
/// Last number assigned to devices that sent a unique id.
pub const RESERVED_AUTO_DEVICE_NR_END: u32 = 39999;
/// First number assigned to devices without a unique id.
pub const AUTO_DEVICE_NR_START: u32 = 40001;

/// Auth flag bits. Bits `0x02`, `0x20` and `0x40` follow from the frame's values and are not
/// stored in [`AuthFrame::flags`].
pub mod auth_flags {
    /// Administrator (defined, never set by C senders).
    pub const ADMINISTRATOR: u8 = 0x01;
    /// A 12-byte unique id follows the device number.
    pub const UNIQUE_ID: u8 = 0x02;
    /// TLS client without a trusted certificate chain asks for one.
    pub const CERTIFICATE_REQUEST: u8 = 0x04;
    /// Cloud connection.
    pub const CLOUD_CON: u8 = 0x08;
    /// The sender's connection is `CONNECT_UP` (the sender is the lower node).
    pub const CONNECT_UP: u8 = 0x10;
    /// Device number has two bytes.
    pub const DEVICE_NR_2_BYTES: u8 = 0x20;
    /// Device number has four bytes.
    pub const DEVICE_NR_4_BYTES: u8 = 0x40;
    /// Bidirectional memory blocks requested.
    pub const BIDIRECTIONAL_COM: u8 = 0x80;
    /// The bits stored in [`super::AuthFrame::flags`].
    pub const SEMANTIC_MASK: u8 =
        ADMINISTRATOR | CERTIFICATE_REQUEST | CLOUD_CON | CONNECT_UP | BIDIRECTIONAL_COM;
}

/// A decoded or to-be-sent authentication frame.
///
/// `Debug` never prints the password.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthFrame {
    /// Sender's receive frame size (header id field).
    pub frame_size: u32,
    /// Auth flags, only the bits of [`auth_flags::SEMANTIC_MASK`].
    pub flags: u8,
    /// User / device name, e.g. `"gina"` (at most 25 bytes).
    pub user_name: String,
    /// Device number as sent; 0 for an automatically numbered device.
    pub device_nr: u32,
    /// The device's persistent unique id, if sent.
    pub unique_id: Option<[u8; UNIQUE_ID_LEN]>,
    /// IO network name, e.g. `"iocafenet"`, or `"*"` (at most 23 bytes).
    pub network_name: String,
    /// Clear-text password (only ever non-empty from a TLS client; at most 45 bytes).
    pub password: String,
}

impl std::fmt::Debug for AuthFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthFrame")
            .field("frame_size", &self.frame_size)
            .field("flags", &format_args!("{:#04x}", self.flags))
            .field("user_name", &self.user_name)
            .field("device_nr", &self.device_nr)
            .field("unique_id", &self.unique_id)
            .field("network_name", &self.network_name)
            .field(
                "password",
                &if self.password.is_empty() {
                    "(empty)"
                } else {
                    "(redacted)"
                },
            )
            .finish()
    }
}

impl AuthFrame {
    /// The sender is the lower node of the connection.
    pub fn connect_up(&self) -> bool {
        self.flags & auth_flags::CONNECT_UP != 0
    }

    /// The user name as the C account check sees it: a non-zero device number appended in
    /// decimal (`"gina"` + 3 → `"gina3"`).
    pub fn account_name(&self) -> String {
        if self.device_nr == 0 {
            self.user_name.clone()
        } else {
            format!("{}{}", self.user_name, self.device_nr)
        }
    }

    /// The system frame payload (type byte first).
    pub fn encode_payload(&self) -> Result<Vec<u8>, SysFrameError> {
        let mut flags = self.flags & auth_flags::SEMANTIC_MASK;
        match uint_width(self.device_nr) {
            1 => {}
            2 => flags |= auth_flags::DEVICE_NR_2_BYTES,
            _ => flags |= auth_flags::DEVICE_NR_4_BYTES,
        }
        if self.unique_id.is_some() {
            flags |= auth_flags::UNIQUE_ID;
        }
        let mut out = vec![SYSFRAME_AUTH, flags];
        push_string(&mut out, &self.user_name, MAX_USER_NAME_LEN, "user name")?;
        push_uint(&mut out, self.device_nr);
        if let Some(id) = &self.unique_id {
            out.extend_from_slice(id);
        }
        push_string(
            &mut out,
            &self.network_name,
            MAX_NETWORK_NAME_LEN,
            "network name",
        )?;
        push_string(&mut out, &self.password, MAX_PASSWORD_LEN, "password")?;
        Ok(out)
    }

    /// The complete frame (always frame number 0).
    pub fn to_frame(&self) -> Result<Frame, SysFrameError> {
        Ok(Frame {
            nr: 0,
            flags: FrameFlags::SYSTEM,
            mblk_id: self.frame_size,
            addr: 0,
            payload: self.encode_payload()?,
        })
    }

    /// Decodes an authentication frame, checking every field against the payload and the C
    /// receiver's limits.
    pub fn from_frame(frame: &Frame) -> Result<Self, SysFrameError> {
        let mut r: Reader<'_> = system_payload(frame, SYSFRAME_AUTH)?;
        let raw = r.u8("auth flags")?;
        let user_name = r.string(MAX_USER_NAME_LEN, "user name")?;
        let w = if raw & auth_flags::DEVICE_NR_4_BYTES != 0 {
            4
        } else if raw & auth_flags::DEVICE_NR_2_BYTES != 0 {
            2
        } else {
            1
        };
        let device_nr = r.uint(w, "device number")?;
        let unique_id = if raw & auth_flags::UNIQUE_ID != 0 {
            let b = r.bytes(UNIQUE_ID_LEN, "unique id")?;
            let mut id = [0u8; UNIQUE_ID_LEN];
            id.copy_from_slice(b);
            Some(id)
        } else {
            None
        };
        let network_name = r.string(MAX_NETWORK_NAME_LEN, "network name")?;
        let password = r.string(MAX_PASSWORD_LEN, "password")?;
        r.finish()?;
        Ok(Self {
            frame_size: frame.mblk_id,
            flags: raw & auth_flags::SEMANTIC_MASK,
            user_name,
            device_nr,
            unique_id,
            network_name,
            password,
        })
    }
}

/// The device number written into an authentication frame: numbers from 9000 up (automatic)
/// are sent as 0.
pub const fn wire_device_nr(device_nr: u32) -> u32 {
    if device_nr < AUTO_DEVICE_NR {
        device_nr
    } else {
        0
    }
}

/// The device number a device compares with its own when matching a received memory block
/// info: a controller writes 8999 ("to the automatically numbered device") for a device whose
/// own number is 9000 (spec §2.9).
pub const fn device_side_device_nr(received: u32) -> u32 {
    if received == TO_AUTO_DEVICE_NR {
        AUTO_DEVICE_NR
    } else {
        received
    }
}

/// True if `name` means "adopt the peer's network name" (`"*"` or empty, spec §2.10).
pub fn is_auto_network(name: &str) -> bool {
    name.is_empty() || name == "*"
}

/// Controller-side assignment of automatic device numbers (spec §2.9).
///
/// A device that sends device number 0 with a unique id gets a number from 9001..=39999 and the
/// same number again on every later connection (for the life of this allocator; persist
/// [`AutoDeviceNumbers::assignments`] to keep them across restarts). Devices without a unique id
/// get fresh numbers from 40001 up. (The C controller picks those at random because of a missing
/// `return`; a sequence is what its comment intends.)
#[derive(Debug, Clone)]
pub struct AutoDeviceNumbers {
    by_unique_id: HashMap<[u8; UNIQUE_ID_LEN], u32>,
    next_reserved: u32,
    next_anonymous: u32,
}

impl Default for AutoDeviceNumbers {
    fn default() -> Self {
        Self {
            by_unique_id: HashMap::new(),
            next_reserved: RESERVED_AUTO_DEVICE_NR_START,
            next_anonymous: AUTO_DEVICE_NR_START,
        }
    }
}

impl AutoDeviceNumbers {
    /// An allocator with no assignments.
    pub fn new() -> Self {
        Self::default()
    }

    /// Restores persisted assignments.
    pub fn with_assignments(pairs: impl IntoIterator<Item = ([u8; UNIQUE_ID_LEN], u32)>) -> Self {
        let mut s = Self::new();
        for (id, nr) in pairs {
            if (RESERVED_AUTO_DEVICE_NR_START..=RESERVED_AUTO_DEVICE_NR_END).contains(&nr) {
                s.by_unique_id.insert(id, nr);
                s.next_reserved = s.next_reserved.max(nr.saturating_add(1));
            }
        }
        s
    }

    /// The number for a device that authenticated with `unique_id` (or none). `None` when the
    /// range is exhausted.
    pub fn assign(&mut self, unique_id: Option<&[u8; UNIQUE_ID_LEN]>) -> Option<u32> {
        match unique_id {
            Some(id) => {
                if let Some(&nr) = self.by_unique_id.get(id) {
                    return Some(nr);
                }
                if self.next_reserved > RESERVED_AUTO_DEVICE_NR_END {
                    return None;
                }
                let nr = self.next_reserved;
                self.next_reserved += 1;
                self.by_unique_id.insert(*id, nr);
                Some(nr)
            }
            None => {
                let nr = self.next_anonymous;
                self.next_anonymous = nr.checked_add(1)?;
                Some(nr)
            }
        }
    }

    /// All unique id → number assignments, for persisting.
    pub fn assignments(&self) -> impl Iterator<Item = (&[u8; UNIQUE_ID_LEN], u32)> {
        self.by_unique_id.iter().map(|(k, &v)| (k, v))
    }
}

#[cfg(test)]
mod tests;
