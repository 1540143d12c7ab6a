//! CRC-16/MODBUS as eosal's `os_checksum` computes it: initial value 0xFFFF, reflected
//! polynomial 0xA001, no final XOR. IOCOM uses it for serial frames and for the stream
//! checksum (`tod_cs` / `frd_cs`).

use crc_fast::{CrcAlgorithm, Digest};

/// Incremental CRC-16/MODBUS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crc16 {
    value: u16,
}

impl Default for Crc16 {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
const POLY: u16 = 0xA001;

impl Crc16 {
    /// A checksum over no bytes yet (0xFFFF).
    pub const fn new() -> Self {
        Self { value: 0xFFFF }
    }

    /// Continues the checksum over `data`. The streams are checksummed on both ends of every
    /// transfer, so this uses `crc-fast` (carry-less multiply folding where the CPU has it,
    /// tables otherwise): several times faster than slicing-by-8.
    pub fn update(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let mut d = Digest::new_with_init_state(CrcAlgorithm::Crc16Modbus, u64::from(self.value));
        d.update(data);
        // CRC-16/MODBUS has no final XOR: the state is the checksum, and it fits 16 bits.
        self.value = d.get_state() as u16;
    }

    /// The checksum of everything passed to [`Crc16::update`] so far.
    pub const fn value(&self) -> u16 {
        self.value
    }
}

/// CRC-16/MODBUS of `data` in one call.
pub fn crc16(data: &[u8]) -> u16 {
    let mut c = Crc16::new();
    c.update(data);
    c.value()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_value_of_the_standard_test_string() {
        // The catalogue check value of CRC-16/MODBUS.
        assert_eq!(crc16(b"123456789"), 0x4B37);
    }

    #[test]
    fn update_equals_the_bitwise_definition() {
        fn bitwise(data: &[u8]) -> u16 {
            let mut crc = 0xFFFFu16;
            for &b in data {
                crc ^= u16::from(b);
                for _ in 0..8 {
                    crc = if crc & 1 != 0 {
                        (crc >> 1) ^ POLY
                    } else {
                        crc >> 1
                    };
                }
            }
            crc
        }
        let mut seed = 0x1234_5678u32;
        let data: Vec<u8> = (0..4099)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (seed >> 16) as u8
            })
            .collect();
        for len in [
            0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 127, 128, 129, 255, 256, 1000, 4099,
        ] {
            assert_eq!(crc16(&data[..len]), bitwise(&data[..len]), "length {len}");
        }
        // Continued in uneven pieces (short ones below the folding width, long ones above).
        let mut c = Crc16::new();
        let mut at = 0;
        for piece in [1, 15, 16, 17, 200, 3, 1392, 2000].iter().cycle() {
            let end = (at + piece).min(data.len());
            c.update(&data[at..end]);
            assert_eq!(c.value(), bitwise(&data[..end]), "after {end} bytes");
            at = end;
            if at == data.len() {
                break;
            }
        }
    }

    #[test]
    fn empty_input_is_the_initial_value() {
        assert_eq!(crc16(&[]), 0xFFFF);
    }

    #[test]
    fn incremental_equals_one_shot() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 256) as u8).collect();
        let mut c = Crc16::new();
        for chunk in data.chunks(37) {
            c.update(chunk);
        }
        assert_eq!(c.value(), crc16(&data));
    }

    #[test]
    fn appending_the_crc_little_endian_gives_zero() {
        let mut data = b"iocom stream".to_vec();
        let crc = crc16(&data);
        data.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(crc16(&data), 0);
    }
}
