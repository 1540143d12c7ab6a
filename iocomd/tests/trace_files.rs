//! The files transferred in the reference traces have the CRC-16 the trace README states.

use iocomd::proto::crc::crc16;
use std::path::PathBuf;

fn trace_file(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/traces/files")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
fn reference_files_have_the_documented_crc() {
    for (name, len, crc) in [
        ("test4k.bin", 4096, 0x4C0B),
        ("test20k.bin", 20000, 0xA773),
        ("rand4k.bin", 4096, 0x0385),
        ("read-select3-result.bin", 228, 0x0000),
    ] {
        let data = trace_file(name);
        assert_eq!(data.len(), len, "{name} length");
        assert_eq!(crc16(&data), crc, "{name} CRC-16/MODBUS");
    }
}
