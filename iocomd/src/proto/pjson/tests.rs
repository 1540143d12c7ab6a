//! Unit tests of [`super`].

use super::*;

fn o(m: &[(&str, Json)]) -> Json {
    Json::Object(
        m.iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    )
}
fn s(x: &str) -> Json {
    Json::Str(x.to_owned())
}

#[test]
fn intser_examples() {
    for (x, bytes) in [
        (200i64, vec![0x10, 0x19]),
        (9, vec![0x11, 0x01]),
        (257, vec![0x11, 0x20]),
        (-300, vec![0x1C, 0x25]),
        (5, vec![5]),
        (-7, vec![0x0F]),
    ] {
        let mut out = Vec::new();
        write_intser(&mut out, x);
        assert_eq!(out, bytes, "{x}");
        let mut pos = 0;
        assert_eq!(read_intser(&out, &mut pos), Ok(x));
        assert_eq!(pos, out.len());
    }
    let mut pos = 0;
    assert_eq!(read_intser(&[0x08], &mut pos), Ok(i64::MIN));
    assert_eq!(
        read_intser(&[0x21, 1], &mut 0),
        Err(PjsonError::Truncated(0))
    );
}

#[test]
fn spec_example_is_byte_identical() {
    let doc = vec![(
        "mblk".to_owned(),
        Json::Array(vec![o(&[
            ("name", s("conf_imp")),
            ("title", s("x")),
            (
                "groups",
                Json::Array(vec![o(&[
                    ("name", s("g")),
                    (
                        "signals",
                        Json::Array(vec![
                            o(&[("name", s("tod_cmd")), ("type", s("char"))]),
                            o(&[
                                ("name", s("tod_buf")),
                                ("type", s("uchar")),
                                ("array", Json::Int(257)),
                            ]),
                        ]),
                    ),
                ])]),
            ),
        ])]),
    )];
    let bytes = encode(&doc, &["title"]);
    let expected: Vec<u8> = "13 03 636F6E665F696D7000 6700 746F645F636D6400 746F645F62756600 \
         10 06 10 19 00 13 06 10 05 10 03 00 13 06 11 06 10 05 \
         00 13 06 13 06 13 0A 17 01 01 \
         00 13 06 13 07 13 0A 10 02 16 08 11 20 01 \
         11 01 01 11 01 01 11 01 D2 16"
        .split_whitespace()
        .flat_map(|w| {
            (0..w.len())
                .step_by(2)
                .map(move |i| u8::from_str_radix(&w[i..i + 2], 16).unwrap())
        })
        .collect();
    assert_eq!(bytes, expected);
    assert_eq!(bytes.len(), 81);
    let back = decode(&bytes).unwrap();
    let Json::Array(mb) = &back[0].1 else {
        panic!()
    };
    assert_eq!(mb[0].get("name"), Some(&s("conf_imp")));
    assert_eq!(mb[0].get("title"), None);
}

#[test]
fn floats_use_single_precision_mantissa_and_exponent() {
    assert_eq!(float_to_ints(1.5), (3, 0));
    assert_eq!(float_to_ints(-0.75), (-3, -1));
    assert_eq!(ints_to_float(3, 0), 1.5);
    let doc = vec![
        ("x".to_owned(), Json::Float(-2.625)),
        ("y".to_owned(), Json::Float(1.0)),
    ];
    let back = decode(&encode(&doc, &[])).unwrap();
    assert_eq!(back[0].1, Json::Float(-2.625));
    assert_eq!(back[1].1, Json::Int(1));
}

#[test]
fn bad_crc_and_truncation_are_rejected() {
    let mut bytes = encode(&[("name".to_owned(), s("gina"))], &[]);
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    assert!(matches!(decode(&bytes), Err(PjsonError::Checksum { .. })));
    assert!(decode(&[]).is_err());
    assert!(decode(&[0x00]).is_err());
    // Well-formed CRC over a content that ends inside an array.
    let mut body = vec![0x00, 0x02, 0x10, 0x19];
    let crc = crc16(&body);
    body.extend_from_slice(&crc.to_le_bytes());
    assert!(matches!(decode(&body), Err(PjsonError::Truncated(_))));
}
