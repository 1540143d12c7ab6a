//! CRC-16/MODBUS as eosal's `os_checksum` computes it: initial value 0xFFFF, reflected
//! polynomial 0xA001, no final XOR. IOCOM uses it for serial frames and for the stream
//! checksum (`tod_cs` / `frd_cs`).

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

const POLY: u16 = 0xA001;

/// Lookup tables for slicing-by-8, built at compile time: `TABLES[0]` is the classic byte-wise
/// table, `TABLES[k][i]` is the CRC contribution of byte `i` followed by `k` zero bytes.
#[allow(clippy::indexing_slicing)] // const evaluation: an out-of-range index fails the build
const TABLES: [[u16; 256]; 8] = {
    let mut t = [[0u16; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u16;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ POLY
            } else {
                crc >> 1
            };
            bit += 1;
        }
        t[0][i] = crc;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[k - 1][i];
            t[k][i] = (prev >> 8) ^ t[0][(prev & 0xFF) as usize];
            i += 1;
        }
        k += 1;
    }
    t
};

/// One byte through the classic table.
#[inline]
fn step(crc: u16, b: u8) -> u16 {
    // The index is a u8, so it is always inside the 256-entry table.
    #[allow(clippy::indexing_slicing)]
    let t = TABLES[0][usize::from((crc as u8) ^ b)];
    (crc >> 8) ^ t
}

impl Crc16 {
    /// A checksum over no bytes yet (0xFFFF).
    pub const fn new() -> Self {
        Self { value: 0xFFFF }
    }

    /// Continues the checksum over `data` (slicing-by-8: eight bytes per step, the streams
    /// are checksummed three times on their way into a spool file).
    pub fn update(&mut self, data: &[u8]) {
        let mut crc = self.value;
        let mut chunks = data.chunks_exact(8);
        for c in &mut chunks {
            let &[b0, b1, b2, b3, b4, b5, b6, b7] = c else {
                continue; // chunks_exact yields exactly 8 bytes
            };
            // Every index is a u8 into a 256-entry table; chunks_exact guarantees 8 bytes.
            #[allow(clippy::indexing_slicing)]
            {
                crc = TABLES[7][usize::from(b0 ^ crc as u8)]
                    ^ TABLES[6][usize::from(b1 ^ (crc >> 8) as u8)]
                    ^ TABLES[5][usize::from(b2)]
                    ^ TABLES[4][usize::from(b3)]
                    ^ TABLES[3][usize::from(b4)]
                    ^ TABLES[2][usize::from(b5)]
                    ^ TABLES[1][usize::from(b6)]
                    ^ TABLES[0][usize::from(b7)];
            }
        }
        for &b in chunks.remainder() {
            crc = step(crc, b);
        }
        self.value = crc;
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
    fn sliced_update_equals_the_bitwise_definition() {
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
        for len in [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1000, 4099] {
            assert_eq!(crc16(&data[..len]), bitwise(&data[..len]), "length {len}");
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
