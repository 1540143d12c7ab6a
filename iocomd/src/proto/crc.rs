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

/// Byte-wise lookup table, built at compile time.
#[allow(clippy::indexing_slicing)] // const evaluation: an out-of-range index fails the build
const TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
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
        table[i] = crc;
        i += 1;
    }
    table
};

impl Crc16 {
    /// A checksum over no bytes yet (0xFFFF).
    pub const fn new() -> Self {
        Self { value: 0xFFFF }
    }

    /// Continues the checksum over `data`.
    pub fn update(&mut self, data: &[u8]) {
        let mut crc = self.value;
        for &b in data {
            let idx = usize::from((crc ^ u16::from(b)) & 0xFF);
            // idx < 256 by construction.
            #[allow(clippy::indexing_slicing)]
            let t = TABLE[idx];
            crc = (crc >> 8) ^ t;
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
