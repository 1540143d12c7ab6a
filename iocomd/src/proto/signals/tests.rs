//! Unit tests of [`super`].

use super::*;
use crate::proto::mblk::MBLK_DOWN;
use serde_json::{Value, json};

/// iocom `config/signals/device_conf_signals.json`, with the ring size as a parameter.
pub(crate) fn conf_json(ring: usize) -> Value {
    json!({"mblk": [
        {"name": "conf_exp", "groups": [{"name": "conf_transfer", "signals": [
            {"name": "tod_state", "type": "char"},
            {"name": "tod_err", "type": "uchar"},
            {"name": "tod_tail", "type": "int"},
            {"name": "frd_state", "type": "char"},
            {"name": "frd_err", "type": "uchar"},
            {"name": "frd_cs", "type": "ushort"},
            {"name": "frd_head", "type": "int"},
            {"name": "frd_buf", "type": "uchar", "array": 257}
        ]}]},
        {"name": "conf_imp", "groups": [{"name": "conf_transfer", "signals": [
            {"name": "tod_cmd", "type": "char"},
            {"name": "tod_select", "type": "char"},
            {"name": "tod_cs", "type": "ushort"},
            {"name": "tod_head", "type": "int"},
            {"name": "tod_buf", "type": "uchar", "array": ring},
            {"name": "frd_cmd", "type": "char"},
            {"name": "frd_select", "type": "uchar"},
            {"name": "frd_tail", "type": "int"}
        ]}]}
    ]})
}

fn addrs(l: &BlockLayout) -> Vec<(&str, usize)> {
    l.signals
        .iter()
        .map(|s| (s.name.as_str(), s.addr))
        .collect()
}

#[test]
fn reference_conf_layout_257() {
    let l = layout_from_json(&conf_json(257)).unwrap();
    assert_eq!(
        addrs(&l[1]),
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
    assert_eq!(l[1].size, 279);
    assert_eq!(
        addrs(&l[0]),
        [
            ("tod_state", 0),
            ("tod_err", 2),
            ("tod_tail", 4),
            ("frd_state", 9),
            ("frd_err", 11),
            ("frd_cs", 13),
            ("frd_head", 16),
            ("frd_buf", 21)
        ]
    );
    assert_eq!(l[0].size, 279);
}

#[test]
fn conf_layout_shifts_with_a_bigger_ring() {
    let l = layout_from_json(&conf_json(1025)).unwrap();
    assert_eq!(
        addrs(&l[1])[4..],
        [
            ("tod_buf", 12),
            ("frd_cmd", 1038),
            ("frd_select", 1040),
            ("frd_tail", 1042)
        ]
    );
    assert_eq!(l[1].size, 1047);
    let big = 256 * 1024 + 1;
    let l = layout_from_json(&conf_json(big)).unwrap();
    let imp = &l[1];
    assert_eq!(imp.signal("frd_cmd").unwrap().addr, 12 + 1 + big);
    assert_eq!(imp.size, 12 + 1 + big + 2 + 2 + 5);
    assert_eq!(l[0].size, 279, "conf_exp does not depend on tod_buf");
}

#[test]
fn type_sticks_default_is_ushort_and_addr_moves() {
    let doc = json!({"mblk":[{"name":"exp","groups":[{"signals":[
        {"name":"a"}, {"name":"b","type":"boolean","array":9}, {"name":"c"},
        {"name":"d","type":"str","array":6}, {"name":"e","addr":40,"type":"double"}
    ]}]}]});
    let l = &layout_from_json(&doc).unwrap()[0];
    assert_eq!(
        addrs(l),
        [("a", 0), ("b", 3), ("c", 6), ("d", 7), ("e", 40)]
    );
    assert_eq!(l.size, 49);
    let bad = json!({"mblk":[{"name":"x","groups":[{"signals":[{"name":"a","type":"nope"}]}]}]});
    assert!(matches!(
        layout_from_json(&bad),
        Err(LayoutError::UnknownType { .. })
    ));
    // From a peer: 1 byte, like the C controller.
    let bad = json!({"mblk":[{"name":"x","groups":[{"signals":[
        {"name":"a","type":"nope"},{"name":"b","type":"int"}]}]}]});
    let l = &layout_from_peer_json(&bad).unwrap()[0];
    assert_eq!(addrs(l), [("a", 0), ("b", 1)]);
}

#[test]
fn scalar_state_byte_rules() {
    let mut b = Mblk::new("imp", 8, MBLK_DOWN, 24);
    b.add_target(1, 9);
    let a = Signal::new("a", 0, 1, SignalType::UShort);
    a.set_int(&mut b, 0).unwrap();
    assert_eq!(&b.data()[..3], [2, 0, 0]);
    a.set_int(&mut b, 1000).unwrap();
    assert_eq!(&b.data()[..3], [3, 0xE8, 3]);
    assert_eq!(a.get_int(&b).unwrap(), (1000, 3));
    let c = Signal::new("c", 3, 1, SignalType::Char);
    c.set_int(&mut b, -3).unwrap();
    assert_eq!(c.get_int(&b).unwrap(), (-3, 3));
    let f = Signal::new("f", 5, 1, SignalType::Float);
    f.set_double_state(&mut b, 1.5, STATE_CONNECTED).unwrap();
    assert_eq!(&b.data()[5..10], [3, 0, 0, 0xC0, 0x3F]);
    assert_eq!(f.get_double(&b).unwrap(), (1.5, 3));
    let s = Signal::new("s", 10, 4, SignalType::Str);
    s.set_str(&mut b, "hello").unwrap();
    assert_eq!(&b.data()[10..15], b"\x02hell");
    s.set_str(&mut b, "o").unwrap();
    assert_eq!(&b.data()[10..15], b"\x02o\0ll");
    assert_eq!(s.get_str(&b).unwrap(), ("o".to_owned(), 2));
    let arr = Signal::new("arr", 16, 4, SignalType::UChar);
    arr.write_bytes(&mut b, 1, &[7, 8]).unwrap();
    assert_eq!(&b.data()[16..21], [2, 0, 7, 8, 0]);
    assert!(arr.write_bytes(&mut b, 3, &[1, 2]).is_err());
    assert_eq!(arr.read_bytes(&b, 1, 2).unwrap(), [7, 8]);
    let mut b = Mblk::new("imp", 8, MBLK_DOWN, 24);
    let ints = Signal::new("ints", 0, 3, SignalType::Short);
    ints.set_array_int(&mut b, 1, &[-2, 300]).unwrap();
    assert_eq!(&b.data()[..7], [2, 0, 0, 0xFE, 0xFF, 0x2C, 0x01]);
    assert_eq!(ints.get_array_int(&b, 0, 3).unwrap(), [0, -2, 300]);
    assert!(ints.set_array_int(&mut b, 2, &[1, 2]).is_err());
    let bools = Signal::new("bools", 0, 10, SignalType::Boolean);
    let v: Vec<bool> = (0..10).map(|k| k % 3 == 0).collect();
    bools.set_bools(&mut b, &v).unwrap();
    assert_eq!(&b.data()[..3], [3, 0b0100_1001, 0b10]);
    assert_eq!(bools.get_bools(&b).unwrap(), v);
    let past = Signal::new("past", 22, 1, SignalType::Int);
    assert!(matches!(
        past.set_int(&mut b, 1),
        Err(SignalError::OutOfBlock { .. })
    ));
}

#[test]
fn connected_is_cleared_without_a_target_buffer() {
    let mut b = Mblk::new("conf_imp", 8, MBLK_DOWN, 24);
    let a = Signal::new("tod_cmd", 0, 1, SignalType::Char);
    a.set_int(&mut b, 1).unwrap();
    assert_eq!(a.get_int(&b).unwrap(), (1, 1));
    assert_eq!(a.raw_state(&b).unwrap(), 3);
    b.add_target(4, 10);
    assert_eq!(a.get_int(&b).unwrap(), (1, 3));
}
