//! The reference device's `info` block, taken from trace b, decodes and gives the documented
//! stream-signal addresses; our encoder round-trips it.

use iocomd::proto::info::DeviceInfo;
use iocomd::proto::pjson;
use std::path::PathBuf;

/// The 1060-byte info block gina sent (frame 0x0b, flags 0x10, id 14) in trace b.
fn gina_info() -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/traces/b-listen-program-write-4k.txt");
    let text = std::fs::read_to_string(path).unwrap();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (_, dir, hex) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        if let (Some(at), "D2C") = (hex.find("0b1024040e00"), dir) {
            let start = at + 12;
            let bytes: Vec<u8> = (start..start + 2 * 1060)
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            return bytes;
        }
    }
    panic!("info frame not found in trace b");
}

#[test]
fn reference_info_block_decodes_to_the_documented_layout() {
    let info = DeviceInfo::decode(&gina_info()).unwrap();
    let names: Vec<&str> = info.blocks.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(
        names,
        ["exp", "imp", "conf_exp", "conf_imp", "dexp", "dimp"]
    );
    let imp = info.block("conf_imp").unwrap();
    let addrs: Vec<(&str, usize)> = imp
        .signals
        .iter()
        .map(|s| (s.name.as_str(), s.addr))
        .collect();
    assert_eq!(
        addrs,
        [
            ("tod_cmd", 0),
            ("tod_select", 2),
            ("tod_cs", 4),
            ("tod_head", 7),
            ("tod_buf", 12),
            ("frd_cmd", 270),
            ("frd_select", 272),
            ("frd_tail", 274)
        ]
    );
    assert_eq!(imp.signal("tod_buf").unwrap().n, 257);
    assert_eq!(imp.size, 279);
    let exp = info.block("conf_exp").unwrap();
    assert_eq!(exp.signal("frd_buf").unwrap().addr, 21);
    assert_eq!(exp.size, 279);
    assert_eq!(info.block("exp").unwrap().size, 44);
    assert_eq!(info.block("dexp").unwrap().size, 8205);
}

#[test]
fn reference_info_block_reencodes_to_an_equivalent_document() {
    let original = gina_info();
    let decoded = pjson::decode(&original).unwrap();
    let again = pjson::encode(&decoded, &[]);
    assert_eq!(pjson::decode(&again).unwrap(), decoded);
    // Same strings in the same first-use order, so the encoding is byte-identical.
    assert_eq!(again, original);
}
