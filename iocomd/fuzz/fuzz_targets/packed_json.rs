//! Fuzz the packed binary JSON decoder and the info-block decoder: no panics, and whatever
//! decodes re-encodes to something that decodes to the same document.
#![no_main]

use iocomd::proto::info::DeviceInfo;
use iocomd::proto::pjson;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Raw input, and the same input with a valid checksum so the structure decoder runs.
    let mut framed = data.to_vec();
    framed.extend_from_slice(&iocomd::proto::crc::crc16(data).to_le_bytes());
    for input in [data, framed.as_slice()] {
        let _ = DeviceInfo::decode(input);
        if let Ok(doc) = pjson::decode(input) {
            // The encoder writes the canonical form (like the C encoder, 0.0 and 1.0 become the
            // integer codes), so the invariant is that the canonical form is a fixed point.
            let canonical = pjson::encode(&doc, &[]);
            let again = pjson::decode(&canonical).expect("re-encoded document decodes");
            assert_eq!(pjson::encode(&again, &[]), canonical);
        }
    }
});
